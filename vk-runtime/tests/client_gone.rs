//! A client that goes away cancels what it started, over both transports: the provider's exec,
//! attach or port-forward is dropped (its streams with it) at once, not when it next writes. A quiet
//! command (`sleep 3600`) would otherwise hold the backend's resources until it printed or ended.
#![allow(clippy::unwrap_used)]

mod support;

use futures::{SinkExt, StreamExt};
use support::*;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use vk_runtime::stream::spdy::frame::{Frame, goaway};

type Tls = TlsStream<TcpStream>;

const STARTED: Quiet = Quiet {
    started: 1,
    dropped: 0,
};
const DROPPED: Quiet = Quiet {
    started: 1,
    dropped: 1,
};

/// Open a WebSocket on `path` with `protocol`; returns it once the server announced the session.
async fn websocket(server: &Server, path: &str, protocol: &str) -> WebSocketStream<Tls> {
    let io = connect(server).await;
    let mut request = format!("wss://localhost{path}")
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("Authorization", "Bearer good".parse().unwrap());
    headers.insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(request, io).await.unwrap();
    let first = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    assert!(matches!(first, Some(Ok(Message::Binary(_)))), "{first:?}");
    ws
}

/// Upgrade `path` to SPDY with `protocol` and open `streams` (`streamType`s, with `extra` headers).
async fn spdy(
    server: &Server,
    path: &str,
    protocol: &str,
    streams: &[&str],
    extra: &[(&str, &str)],
) -> SpdyClient<Tls> {
    let mut io = connect(server).await;
    let header = format!("X-Stream-Protocol-Version: {protocol}\r\n");
    let (status, head) = request_head(&mut io, &spdy_request(path, &header)).await;
    assert_eq!(status, 101, "{head}");
    let mut client = SpdyClient::new(io);
    for kind in streams {
        let mut headers = vec![("streamtype", *kind)];
        headers.extend_from_slice(extra);
        client.open(&headers).await;
    }
    client
}

#[tokio::test]
async fn websocket_exec_is_cancelled_when_the_connection_drops() {
    let server = start().await;
    let ws = websocket(
        &server,
        "/exec/default/web/app?command=sleep&input=1&output=1&error=1",
        "v5.channel.k8s.io",
    )
    .await;
    wait_quiet(&server, STARTED).await;
    drop(ws);
    wait_quiet(&server, DROPPED).await;
}

#[tokio::test]
async fn websocket_attach_is_cancelled_by_a_close_frame() {
    let server = start().await;
    let mut ws = websocket(
        &server,
        "/attach/default/web/app?output=1&error=1",
        "v4.channel.k8s.io",
    )
    .await;
    wait_quiet(&server, STARTED).await;
    // The TCP connection stays open: the close frame alone says the client is done.
    ws.send(Message::Close(None)).await.unwrap();
    wait_quiet(&server, DROPPED).await;
    drop(ws);
}

#[tokio::test]
async fn websocket_port_forward_is_cancelled_when_the_connection_drops() {
    let server = start().await;
    let ws = websocket(
        &server,
        &format!("/portForward/default/web?port={QUIET_PORT}"),
        "v4.channel.k8s.io",
    )
    .await;
    wait_quiet(&server, STARTED).await;
    drop(ws);
    wait_quiet(&server, DROPPED).await;
}

#[tokio::test]
async fn spdy_exec_is_cancelled_when_the_connection_drops() {
    let server = start().await;
    let client = spdy(
        &server,
        "/exec/default/web/app?command=sleep&input=1&output=1&error=1",
        "v4.channel.k8s.io",
        &["error", "stdin", "stdout", "stderr"],
        &[],
    )
    .await;
    wait_quiet(&server, STARTED).await;
    drop(client);
    wait_quiet(&server, DROPPED).await;
}

#[tokio::test]
async fn spdy_exec_outlives_stdin_eof_but_not_goaway() {
    let server = start().await;
    let mut client = spdy(
        &server,
        "/exec/default/web/app?command=sleep&input=1&output=1",
        "v4.channel.k8s.io",
        &["error", "stdin", "stdout"],
        &[],
    )
    .await;
    wait_quiet(&server, STARTED).await;
    // stdin (stream 3) ends: the command keeps running. A PING answered after the FIN shows the
    // server read it.
    client.data(3, b"", true).await;
    client.send(Frame::Ping { id: 1 }).await;
    loop {
        match client.next().await.expect("connection ended early") {
            Frame::Ping { id: 1 } => break,
            Frame::SynReply { .. } => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert_eq!(*server.quiet.borrow(), STARTED);
    // client-go ends a session by resetting its streams, GOAWAY, then closing the connection;
    // GOAWAY alone (the connection still open) ends the command.
    client
        .send(Frame::GoAway {
            last_good_stream_id: 0,
            status: goaway::OK,
        })
        .await;
    wait_quiet(&server, DROPPED).await;
}

#[tokio::test]
async fn spdy_attach_is_cancelled_when_the_connection_drops() {
    let server = start().await;
    let client = spdy(
        &server,
        "/attach/default/web/app?output=1&tty=1",
        "v4.channel.k8s.io",
        &["error", "stdout", "resize"],
        &[],
    )
    .await;
    wait_quiet(&server, STARTED).await;
    drop(client);
    wait_quiet(&server, DROPPED).await;
}

#[tokio::test]
async fn spdy_port_forward_is_cancelled_when_the_connection_drops() {
    let server = start().await;
    let port = QUIET_PORT.to_string();
    let client = spdy(
        &server,
        "/portForward/default/web",
        "portforward.k8s.io",
        &["error", "data"],
        &[("port", &port), ("requestid", "0")],
    )
    .await;
    wait_quiet(&server, STARTED).await;
    drop(client);
    wait_quiet(&server, DROPPED).await;
}
