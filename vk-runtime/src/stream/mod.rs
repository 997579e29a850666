//! Wire protocols of the kubelet API: SPDY/3.1 ([`spdy`]), the Kubernetes WebSocket channel
//! protocols ([`websocket`], [`ws_conn`]), and on top of both transports the remote-command
//! protocol of exec/attach ([`remotecommand`]) and port-forward ([`portforward`]).
//!
//! Nothing here knows about HTTP routing or authentication; `api` upgrades the connection and
//! hands it over.

pub mod portforward;
pub mod remotecommand;
pub mod spdy;
pub mod websocket;
pub mod ws_conn;
