//! A command's stdout and stderr reach the client in the order it wrote them, over both
//! transports. Clients depend on it: `kubectl cp` stops once stdout's archive is complete, so a
//! stderr diagnostic queued behind it would never be shown.
#![allow(clippy::unwrap_used)]

mod support;

use futures::StreamExt;
use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use vk_runtime::stream::spdy::frame::{FLAG_FIN, Frame};

const PATH: &str = "/exec/default/web/app?command=interleave&output=1&error=1";

/// What `interleave` writes, as (stream, chunk) in order.
fn expected() -> Vec<(&'static str, String)> {
    (0..INTERLEAVED)
        .flat_map(|i| [("stderr", format!("e{i};")), ("stdout", format!("o{i};"))])
        .collect()
}

#[tokio::test]
async fn spdy_keeps_the_order_across_stdout_and_stderr() {
    let server = start().await;
    let mut io = connect(&server).await;
    let protocols = "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n";
    let (status, head) = request_head(&mut io, &spdy_request(PATH, protocols)).await;
    assert_eq!(status, 101, "{head}");
    let mut client = SpdyClient::new(io);
    let error = client.open(&[("streamType", "error")]).await;
    let stdout = client.open(&[("streamType", "stdout")]).await;
    let stderr = client.open(&[("streamType", "stderr")]).await;
    let mut seen = Vec::new();
    let mut finished = Vec::new();
    while ![error, stdout, stderr]
        .iter()
        .all(|id| finished.contains(id))
    {
        let frame = tokio::time::timeout(WAIT, client.next()).await.unwrap();
        let Frame::Data {
            stream_id,
            flags,
            data,
        } = frame.expect("connection ended early")
        else {
            continue;
        };
        if !data.is_empty() && stream_id != error {
            let name = if stream_id == stdout {
                "stdout"
            } else {
                "stderr"
            };
            seen.push((name, String::from_utf8(data.to_vec()).unwrap()));
        }
        if flags & FLAG_FIN != 0 {
            finished.push(stream_id);
        }
    }
    assert_eq!(seen, expected());
}

#[tokio::test]
async fn websocket_keeps_the_order_across_stdout_and_stderr() {
    let server = start().await;
    let io = connect(&server).await;
    let mut request = format!("wss://localhost{PATH}")
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("Authorization", "Bearer good".parse().unwrap());
    headers.insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::client_async(request, io).await.unwrap();
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Binary(b))) if b.len() > 1 && (b[0] == 1 || b[0] == 2) => {
                let name = if b[0] == 1 { "stdout" } else { "stderr" };
                seen.push((name, String::from_utf8(b[1..].to_vec()).unwrap()));
            }
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("websocket error {e}"),
        }
    }
    assert_eq!(seen, expected());
}
