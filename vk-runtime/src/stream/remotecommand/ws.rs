//! Exec/attach over a WebSocket channel protocol: stdin (0) and resize (4) in, stdout (1), stderr
//! (2) and error (3) out; an empty message on the lowest writable channel announces the session.

use axum::extract::ws::WebSocket;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

use super::resize::decode_message;
use super::status::error_payload;
use super::{DRAIN_TIMEOUT, LINGER, OUTPUT_QUEUE, Runner, StreamOptions};
use crate::provider::{ExecIo, OutputChunk, OutputStream, output_channel};
use crate::stream::websocket::{ERROR, RESIZE, STDERR, STDIN, STDOUT, WsProtocol};
use crate::stream::ws_conn::{ChannelConn, ChannelSender};

/// Forward the session's output, in the order the provider wrote it, to its channels.
fn pump_out(sender: ChannelSender, mut rx: mpsc::Receiver<OutputChunk>) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some((stream, chunk)) = rx.recv().await {
            let channel = match stream {
                OutputStream::Stdout => STDOUT,
                OutputStream::Stderr => STDERR,
            };
            if !sender.send(channel, chunk).await {
                break;
            }
        }
    })
}

/// Serve one exec/attach on an upgraded WebSocket. Returns the exit code, or `None` when the
/// provider failed or the client went away first (the command is then cancelled).
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
    let (stdout, stderr, output) = output_channel(OUTPUT_QUEUE, opts.stdout, opts.stderr);
    let pump = pump_out(sender.clone(), output);
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

    let peer_gone = conn.peer_gone();
    let running = run(ExecIo {
        stdin,
        stdout,
        stderr,
        resize,
        tty: opts.tty,
    });
    // A command that prints nothing would only learn of a vanished client when it next writes:
    // drop it (with its stdin) as soon as the client is gone, so the provider releases it.
    let outcome = tokio::select! {
        outcome = running => outcome,
        () = peer_gone.cancelled() => {
            debug!("client went away, cancelling the command");
            pump.abort();
            if let Some(task) = resize_task {
                task.abort();
            }
            drop(sender);
            conn.finish(LINGER).await;
            return None;
        }
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, pump).await.is_err() {
        debug!("output channels did not drain in time");
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
