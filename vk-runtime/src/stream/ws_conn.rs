//! A channel-multiplexed connection over axum's WebSocket: one task reads messages and routes them
//! to per-channel queues, one task writes queued channel data in order. Exec/attach and port-forward
//! build on it; the framing itself is in [`super::websocket`].

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::websocket::{
    ChannelFrame, WireMessage, WsProtocol, decode_binary, decode_text, encode, encode_close,
};

/// Writes from the protocol layer, in order.
enum WsOut {
    Data(u8, Bytes),
    Close(u8),
}

/// Sends channel data; cheap to clone. The connection closes once every sender is gone.
#[derive(Clone)]
pub struct ChannelSender {
    tx: mpsc::Sender<WsOut>,
}

impl ChannelSender {
    /// Queue `data` on `channel`; `false` once the connection is gone.
    pub async fn send(&self, channel: u8, data: Bytes) -> bool {
        self.tx.send(WsOut::Data(channel, data)).await.is_ok()
    }

    /// v5: tell the peer nothing more comes on `channel` (ignored by older protocols).
    pub async fn close_channel(&self, channel: u8) -> bool {
        self.tx.send(WsOut::Close(channel)).await.is_ok()
    }
}

/// A running channel connection.
pub struct ChannelConn {
    pub sender: ChannelSender,
    /// Data the peer sends, per readable channel. A queue ends at the peer's v5 close message for its
    /// channel, or when the WebSocket closes.
    pub inbound: HashMap<u8, mpsc::Receiver<Bytes>>,
    peer_gone: CancellationToken,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl ChannelConn {
    /// Start the tasks on `socket`; `readable` lists the channels the peer may write to. Messages on
    /// other channels are dropped, as the kubelet does.
    pub fn start(socket: WebSocket, protocol: WsProtocol, readable: &[u8]) -> Self {
        let (sink, stream) = socket.split();
        let (tx, out_rx) = mpsc::channel(64);
        let mut routes = HashMap::new();
        let mut inbound = HashMap::new();
        for &channel in readable {
            let (tx, rx) = mpsc::channel(16);
            routes.insert(channel, tx);
            inbound.insert(channel, rx);
        }
        let peer_gone = CancellationToken::new();
        let reader = tokio::spawn(read_loop(stream, protocol, routes, peer_gone.clone()));
        let writer = tokio::spawn(write_loop(sink, protocol, out_rx));
        Self {
            sender: ChannelSender { tx },
            inbound,
            peer_gone,
            reader,
            writer,
        }
    }

    /// Take the queue of `channel` (an empty, ended one when the channel is not readable).
    pub fn take_inbound(&mut self, channel: u8) -> mpsc::Receiver<Bytes> {
        self.inbound
            .remove(&channel)
            .unwrap_or_else(|| mpsc::channel(1).1)
    }

    /// Cancelled once the peer is gone: it sent a close frame, the connection ended or failed. (A v5
    /// close of one channel, such as stdin's EOF, is not the peer going away.) Work done for the peer
    /// waits on it next to its own end, so an abandoned connection releases what it holds at once.
    pub fn peer_gone(&self) -> CancellationToken {
        self.peer_gone.clone()
    }

    /// Flush everything queued, send a normal close frame and stop reading. Callers drop their
    /// clones of [`ChannelConn::sender`] first; `timeout` bounds the wait for the writer.
    pub async fn finish(self, timeout: Duration) {
        let Self {
            sender,
            inbound,
            reader,
            writer,
            ..
        } = self;
        drop(sender);
        drop(inbound);
        if tokio::time::timeout(timeout, writer).await.is_err() {
            debug!("websocket writer did not finish in time");
        }
        reader.abort();
    }
}

async fn read_loop(
    mut stream: futures::stream::SplitStream<WebSocket>,
    protocol: WsProtocol,
    mut routes: HashMap<u8, mpsc::Sender<Bytes>>,
    peer_gone: CancellationToken,
) {
    let _gone = peer_gone.drop_guard();
    while let Some(msg) = stream.next().await {
        let decoded = match msg {
            Ok(Message::Binary(data)) => decode_binary(protocol, &data),
            Ok(Message::Text(text)) => decode_text(protocol, text.as_str()),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
        };
        match decoded {
            Ok(Some(ChannelFrame::Data { channel, payload })) => {
                if let Some(tx) = routes.get(&channel) {
                    if payload.is_empty() {
                        continue;
                    }
                    if tx.send(payload).await.is_err() {
                        routes.remove(&channel);
                    }
                }
            }
            Ok(Some(ChannelFrame::Close { channel })) => {
                routes.remove(&channel);
            }
            Ok(None) => {}
            Err(e) => debug!(error = %e, "dropping malformed websocket channel message"),
        }
    }
}

fn to_message(wire: WireMessage) -> Message {
    match wire {
        WireMessage::Binary(b) => Message::Binary(b),
        WireMessage::Text(t) => Message::Text(t.into()),
    }
}

async fn write_loop(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    protocol: WsProtocol,
    mut rx: mpsc::Receiver<WsOut>,
) {
    while let Some(out) = rx.recv().await {
        let msg = match out {
            WsOut::Data(channel, data) => Some(encode(protocol, channel, &data)),
            WsOut::Close(channel) => encode_close(protocol, channel),
        };
        let Some(msg) = msg else { continue };
        if sink.send(to_message(msg)).await.is_err() {
            return;
        }
    }
    let close = CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(close))).await;
    let _ = sink.close().await;
}
