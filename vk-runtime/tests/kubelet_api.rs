//! The kubelet HTTPS API end to end: a real server on 127.0.0.1 with a fake provider, driven over
//! TLS by raw HTTP, a minimal SPDY/3.1 client and tokio-tungstenite.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use vk_runtime::stream::spdy::frame::{FLAG_FIN, Frame};

/// Read frames until every stream in `ids` got FIN; returns the data per stream.
async fn collect_until_fin<S>(client: &mut SpdyClient<S>, ids: &[u32]) -> HashMap<u32, Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut data: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut finished = Vec::new();
    while !ids.iter().all(|id| finished.contains(id)) {
        match client
            .next()
            .await
            .expect("connection ended before every stream finished")
        {
            Frame::Data {
                stream_id,
                flags,
                data: chunk,
            } => {
                data.entry(stream_id).or_default().extend_from_slice(&chunk);
                if flags & FLAG_FIN != 0 {
                    finished.push(stream_id);
                }
            }
            Frame::RstStream { stream_id, status } => {
                panic!("stream {stream_id} reset with {status}")
            }
            _ => {}
        }
    }
    data
}

#[tokio::test]
async fn exec_over_spdy_streams_stdin_stdout_stderr_and_exit_code() {
    let server = start().await;
    let mut io = connect(&server).await;
    let path = "/exec/default/web/app?command=cat&input=1&output=1&error=1";
    let protocols = "X-Stream-Protocol-Version: v5.channel.k8s.io\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n";
    let (status, head) = request_head(&mut io, &spdy_request(path, protocols)).await;
    assert_eq!(status, 101, "{head}");
    assert!(
        head.contains("x-stream-protocol-version: v5.channel.k8s.io"),
        "{head}"
    );
    assert!(head.contains("upgrade: spdy/3.1"));

    let mut client = SpdyClient::new(io);
    let error = client.open(&[("streamType", "error")]).await;
    let stdin = client.open(&[("streamType", "stdin")]).await;
    let stdout = client.open(&[("streamType", "stdout")]).await;
    let stderr = client.open(&[("streamType", "stderr")]).await;
    // The server must answer pings while a session runs (the apiserver pings every 5 s).
    client.send(Frame::Ping { id: 1 }).await;
    client.data(stdin, b"hello ", false).await;
    client.data(stdin, b"world", false).await;
    client.data(stdin, b"", true).await;

    let mut replies = 0;
    let mut pong = false;
    let mut data: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut finished = Vec::new();
    while ![error, stdout, stderr]
        .iter()
        .all(|id| finished.contains(id))
    {
        match client.next().await.expect("connection ended early") {
            Frame::SynReply { .. } => replies += 1,
            Frame::Ping { id } => pong = id == 1,
            Frame::Data {
                stream_id,
                flags,
                data: chunk,
            } => {
                data.entry(stream_id).or_default().extend_from_slice(&chunk);
                if flags & FLAG_FIN != 0 {
                    finished.push(stream_id);
                }
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert_eq!(replies, 4);
    assert!(pong, "PING was not echoed");
    assert_eq!(data[&stdout], b"hello world");
    assert_eq!(data[&stderr], b"bye");
    let status: Value = serde_json::from_slice(&data[&error]).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "7");
}

#[tokio::test]
async fn exec_over_spdy_with_tty_resize() {
    let server = start().await;
    let mut io = connect(&server).await;
    let path = "/exec/default/web/uid-1/app?command=tty&output=1&tty=1";
    let (status, _) = request_head(
        &mut io,
        &spdy_request(path, "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"),
    )
    .await;
    assert_eq!(status, 101);
    let mut client = SpdyClient::new(io);
    let error = client.open(&[("streamtype", "error")]).await;
    let stdout = client.open(&[("streamtype", "stdout")]).await;
    let resize = client.open(&[("streamtype", "resize")]).await;
    // Split mid-object: the server decodes the JSON stream incrementally.
    client.data(resize, br#"{"Width":100,"#, false).await;
    client.data(resize, b"\"Height\":40}\n", false).await;
    let data = collect_until_fin(&mut client, &[error, stdout]).await;
    assert_eq!(data[&stdout], b"size 100x40 tty=true");
    assert_eq!(data[&error], br#"{"metadata":{},"status":"Success"}"#);
}

#[tokio::test]
async fn spdy_negotiation_failures() {
    let server = start().await;
    let path = "/exec/default/web/app?command=cat&input=1";
    let mut io = connect(&server).await;
    let (status, head) = request_head(
        &mut io,
        &spdy_request(path, "X-Stream-Protocol-Version: v9.channel.k8s.io\r\n"),
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        head.contains("x-accepted-stream-protocol-versions: v4.channel.k8s.io"),
        "{head}"
    );
    let mut io = connect(&server).await;
    let (status, _) = request_head(&mut io, &spdy_request(path, "")).await;
    assert_eq!(status, 400);
    let mut io = connect(&server).await;
    let (status, _) = request_head(
        &mut io,
        &spdy_request("/exec/default/web/app?command=cat", ""),
    )
    .await;
    assert_eq!(status, 400, "no stream requested");
    let mut io = connect(&server).await;
    let (status, _) = request_head(
        &mut io,
        &spdy_request("/exec/default/nope/app?command=cat&output=1", ""),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn port_forward_over_spdy_echoes_and_reports_errors() {
    let server = start().await;
    let mut io = connect(&server).await;
    let (status, _) = request_head(
        &mut io,
        &spdy_request(
            "/portForward/default/web",
            "X-Stream-Protocol-Version: portforward.k8s.io\r\n",
        ),
    )
    .await;
    assert_eq!(status, 101);
    let mut client = SpdyClient::new(io);
    let error = client
        .open(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")])
        .await;
    let data = client
        .open(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")])
        .await;
    client.data(data, b"ping", true).await;
    let got = collect_until_fin(&mut client, &[data, error]).await;
    assert_eq!(got[&data], b"ping");
    assert!(!got.contains_key(&error) || got[&error].is_empty());

    let error = client
        .open(&[("streamtype", "error"), ("port", "81"), ("requestid", "1")])
        .await;
    let data = client
        .open(&[("streamtype", "data"), ("port", "81"), ("requestid", "1")])
        .await;
    let got = collect_until_fin(&mut client, &[data, error]).await;
    let text = String::from_utf8(got[&error].clone()).unwrap();
    assert!(text.contains("nothing listens on 81"), "{text}");
}

#[tokio::test]
async fn exec_over_websocket_v5() {
    let server = start().await;
    let io = connect(&server).await;
    let mut request = "wss://localhost/exec/default/web/app?command=cat&input=1&output=1&error=1"
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Authorization", "Bearer good".parse().unwrap());
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io, v4.channel.k8s.io".parse().unwrap(),
    );
    let (mut ws, response) = tokio_tungstenite::client_async(request, io).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "v5.channel.k8s.io"
    );

    // The session opens with an empty message on the lowest writable channel (stdout).
    let first = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first, Message::Binary(Bytes::from_static(&[1])));
    ws.send(Message::Binary(Bytes::from_static(b"\x00hi there")))
        .await
        .unwrap();
    ws.send(Message::Binary(Bytes::from_static(&[255, 0])))
        .await
        .unwrap();

    let mut channels: HashMap<u8, Vec<u8>> = HashMap::new();
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Binary(b))) => {
                channels.entry(b[0]).or_default().extend_from_slice(&b[1..])
            }
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("websocket error {e}"),
        }
    }
    assert_eq!(channels[&1], b"hi there");
    assert_eq!(channels[&2], b"bye");
    let status: Value = serde_json::from_slice(&channels[&3]).unwrap();
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "7");
}

/// Port-forward over WebSocket as the kubelet speaks it (what kube-rs, the Python client and web
/// consoles use): `v4.channel.k8s.io`, per requested port a data channel 2i and an error channel
/// 2i+1, each opened by the server with the port as a little-endian u16.
#[tokio::test]
async fn port_forward_over_websocket_echoes_and_reports_errors() {
    let server = start().await;
    let io = connect(&server).await;
    let mut request = "wss://localhost/portForward/default/web?port=80&port=81"
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Authorization", "Bearer good".parse().unwrap());
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.channel.k8s.io".parse().unwrap(),
    );
    let (mut ws, response) = tokio_tungstenite::client_async(request, io).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "v4.channel.k8s.io"
    );

    // Every channel first carries its port; then port 80 echoes, port 81 reports its error.
    let mut first: HashMap<u8, Vec<u8>> = HashMap::new();
    let mut rest: HashMap<u8, Vec<u8>> = HashMap::new();
    let mut sent = false;
    while rest.get(&0).map(Vec::as_slice) != Some(b"ping".as_slice()) || !rest.contains_key(&3) {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Binary(b))) => {
                let (ch, payload) = (b[0], b[1..].to_vec());
                if let std::collections::hash_map::Entry::Vacant(e) = first.entry(ch) {
                    e.insert(payload);
                } else {
                    rest.entry(ch).or_default().extend_from_slice(&payload);
                }
            }
            other => panic!("unexpected before the echo: {other:?}"),
        }
        if !sent && first.contains_key(&0) {
            ws.send(Message::Binary(Bytes::from_static(b"\x00ping")))
                .await
                .unwrap();
            sent = true;
        }
    }
    assert_eq!(first[&0], [80, 0], "data channel of port 80");
    assert_eq!(first[&1], [80, 0], "error channel of port 80");
    assert_eq!(first[&2], [81, 0], "data channel of port 81");
    assert_eq!(first[&3], [81, 0], "error channel of port 81");
    let error = String::from_utf8(rest[&3].clone()).unwrap();
    assert!(error.contains("nothing listens on 81"), "{error}");
    assert!(
        rest.get(&1).is_none_or(Vec::is_empty),
        "no error on port 80: {rest:?}"
    );
    ws.close(None).await.unwrap();
}

/// `logs -f` ends when the client leaves: once the connection closes, the server drops the
/// provider's log stream (the producer side is released, no task keeps polling it).
#[tokio::test]
async fn follow_stream_is_released_when_the_client_leaves() {
    use std::sync::atomic::Ordering::SeqCst;
    let server = start().await;
    let mut io = connect(&server).await;
    let (status, head) = request_head(
        &mut io,
        "GET /containerLogs/default/web/follow?follow=true HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer good\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{head}");
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&got).contains("line1") {
        let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut io, &mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "stream ended early: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(FOLLOWERS.load(SeqCst), 1, "the follow stream is live");
    drop(io);
    let deadline = tokio::time::Instant::now() + WAIT;
    while FOLLOWERS.load(SeqCst) != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the provider's follow stream outlived its client"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn exec_over_websocket_base64_with_resize() {
    let server = start().await;
    let io = connect(&server).await;
    let mut request = "wss://localhost/exec/default/web/app?command=tty&output=1&tty=1"
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Authorization", "Bearer good".parse().unwrap());
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.base64.channel.k8s.io".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::client_async(request, io).await.unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    ws.send(Message::Text(
        format!("4{}", b64.encode(br#"{"Width":7,"Height":9}"#)).into(),
    ))
    .await
    .unwrap();
    let mut out = Vec::new();
    let mut error = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => {
                let decoded = b64.decode(&t.as_bytes()[1..]).unwrap();
                match t.as_bytes()[0] {
                    b'1' => out.extend(decoded),
                    b'3' => error.extend(decoded),
                    _ => {}
                }
            }
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("websocket error {e}"),
        }
    }
    assert_eq!(out, b"size 7x9 tty=true");
    assert_eq!(error, br#"{"metadata":{},"status":"Success"}"#);
}

#[tokio::test]
async fn authentication_authorization_and_routes() {
    let server = start().await;
    assert_eq!(get(&server, "/healthz", None).await.0, 401);
    assert_eq!(get(&server, "/healthz", Some("forged")).await.0, 401);
    assert_eq!(get(&server, "/healthz", Some("good")).await.0, 200);
    assert_eq!(get(&server, "/pods", Some("viewer")).await.0, 403);
    let (status, body) = get(&server, "/stats/summary", Some("viewer")).await;
    assert_eq!(status, 200);
    assert!(body.contains(r#""nodeName":"vn-1""#), "{body}");
    let (status, body) = get(&server, "/metrics/resource", Some("good")).await;
    assert_eq!(status, 200);
    assert!(body.contains("container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"web\"} 2 "), "{body}");
    let (status, body) = get(&server, "/pods", Some("good")).await;
    assert_eq!(status, 200);
    assert!(body.contains(r#""kind":"PodList""#));
    let (status, body) = get(&server, "/runningpods", Some("good")).await;
    assert_eq!(status, 200);
    assert!(body.contains("uid-1"));
    assert_eq!(get(&server, "/configz", Some("good")).await.0, 404);
    let (status, body) = get(
        &server,
        "/containerLogs/default/web/app?follow=true&tailLines=3",
        Some("good"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        body.contains("line1") && body.contains("tail=3 follow=true"),
        "{body}"
    );
    assert_eq!(
        get(&server, "/containerLogs/default/web/other", Some("good"))
            .await
            .0,
        404
    );
    assert_eq!(
        get(
            &server,
            "/containerLogs/default/web/app?sinceSeconds=x",
            Some("good")
        )
        .await
        .0,
        400
    );
    assert_eq!(
        get(
            &server,
            "/exec/default/web/app?command=ls&output=1",
            Some("good")
        )
        .await
        .0,
        400,
        "not an upgrade"
    );
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let mut server = start().await;
    let _ = server.stop.take().unwrap().send(());
    tokio::time::timeout(WAIT, &mut server.task)
        .await
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}
