//! Exec/attach over a WebSocket channel protocol: stdin (0) and resize (4) in, stdout (1), stderr
//! (2) and error (3) out; an empty message on the lowest writable channel announces the session.

use axum::extract::ws::WebSocket;
use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::debug;

use super::resize::decode_message;
use super::status::error_payload;
use super::{DRAIN_TIMEOUT, LINGER, Runner, StreamOptions};
use crate::provider::ExecIo;
use crate::stream::websocket::{ERROR, RESIZE, STDERR, STDIN, STDOUT, WsProtocol};
use crate::stream::ws_conn::{ChannelConn, ChannelSender};

fn pump_out(
    channel: u8,
    sender: ChannelSender,
    mut rx: mpsc::Receiver<Bytes>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            if !sender.send(channel, chunk).await {
                break;
            }
        }
    })
}

/// Serve one exec/attach on an upgraded WebSocket. Returns the exit code, or `None` when the
/// provider failed.
pub async fn serve_ws(
    socket: WebSocket,
    protocol: WsProtocol,
    opts: StreamOptions,
    run: Runner,
) -> Option<i32> {
    let mut readable = Vec::new();
    if opts.stdin {
        readable.push(STDIN);
    }
    if opts.tty {
        readable.push(RESIZE);
    }
    let mut conn = ChannelConn::start(socket, protocol, &readable);
    let sender = conn.sender.clone();
    let first_writable = if opts.stdout {
        STDOUT
    } else if opts.stderr {
        STDERR
    } else {
        ERROR
    };
    sender.send(first_writable, Bytes::new()).await;

    let stdin = opts.stdin.then(|| conn.take_inbound(STDIN));
    let mut outputs = Vec::new();
    let mut output = |wanted: bool, channel: u8| {
        wanted.then(|| {
            let (tx, rx) = mpsc::channel(16);
            outputs.push(pump_out(channel, sender.clone(), rx));
            tx
        })
    };
    let stdout = output(opts.stdout, STDOUT);
    let stderr = output(opts.stderr, STDERR);
    let mut resize_task = None;
    let resize = opts.tty.then(|| {
        let mut inbound = conn.take_inbound(RESIZE);
        let (tx, rx) = mpsc::channel(4);
        resize_task = Some(tokio::spawn(async move {
            while let Some(msg) = inbound.recv().await {
                let Some(size) = decode_message(&msg) else {
                    continue;
                };
                if tx.send(size).await.is_err() {
                    return;
                }
            }
        }));
        rx
    });

    let outcome = run(ExecIo {
        stdin,
        stdout,
        stderr,
        resize,
        tty: opts.tty,
    })
    .await;
    for pump in outputs {
        if tokio::time::timeout(DRAIN_TIMEOUT, pump).await.is_err() {
            debug!("output channel did not drain in time");
        }
    }
    if let Some(payload) = error_payload(protocol.status_errors(), &outcome) {
        sender.send(ERROR, Bytes::from(payload)).await;
    }
    if let Some(task) = resize_task {
        task.abort();
    }
    drop(sender);
    conn.finish(LINGER).await;
    outcome.map_err(|e| debug!(error = %e, "exec failed")).ok()
}
