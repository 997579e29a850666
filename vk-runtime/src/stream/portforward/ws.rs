//! Port-forward over a WebSocket channel protocol: one forwarded connection per requested port,
//! channel 2i its data and 2i+1 its errors, each opened by the server with the LE u16 port.

use axum::extract::ws::WebSocket;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{Forwarder, error_text, forward_one};
use crate::stream::remotecommand::LINGER;
use crate::stream::websocket::{WsProtocol, port_prefix};
use crate::stream::ws_conn::ChannelConn;

/// Serve port-forward of `ports` on an upgraded WebSocket until every connection ended or the
/// client went away.
pub async fn serve_ws(
    socket: WebSocket,
    protocol: WsProtocol,
    ports: Vec<u16>,
    pod: String,
    forwarder: Forwarder,
) {
    // Channel numbers are a byte: at most 128 ports per connection.
    let ports: Vec<u16> = ports.into_iter().take(128).collect();
    let readable: Vec<u8> = (0..ports.len())
        .filter_map(|i| u8::try_from(2 * i).ok())
        .collect();
    let mut conn = ChannelConn::start(socket, protocol, &readable);
    let mut running = JoinSet::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let (Ok(data_ch), Ok(error_ch)) = (u8::try_from(2 * i), u8::try_from(2 * i + 1)) else {
            break;
        };
        let sender = conn.sender.clone();
        let prefix = Bytes::copy_from_slice(&port_prefix(port));
        sender.send(data_ch, prefix.clone()).await;
        sender.send(error_ch, prefix).await;
        let inbound = conn.take_inbound(data_ch);
        let forwarder = forwarder.clone();
        let pod = pod.clone();
        running.spawn(async move {
            let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(16);
            let pump_sender = sender.clone();
            let pump = tokio::spawn(async move {
                while let Some(chunk) = out_rx.recv().await {
                    if !pump_sender.send(data_ch, chunk).await {
                        break;
                    }
                }
            });
            let result = forward_one(&forwarder, port, inbound, out_tx).await;
            let _ = pump.await;
            if let Err(e) = result {
                sender
                    .send(error_ch, Bytes::from(error_text(port, &pod, &e)))
                    .await;
            }
        });
    }
    // A forwarded connection whose pod side stays quiet would only learn of a vanished client when
    // it next writes: end them all (the provider's pipes close) as soon as the client is gone.
    let peer_gone = conn.peer_gone();
    loop {
        tokio::select! {
            next = running.join_next() => if next.is_none() { break },
            () = peer_gone.cancelled() => {
                running.shutdown().await;
                break;
            }
        }
    }
    conn.finish(LINGER).await;
}
