//! A server-side SPDY/3.1 session over any `AsyncRead + AsyncWrite`.
//!
//! Two tasks own the connection: the reader parses frames, answers PING, accepts SYN_STREAMs (queuing
//! an empty SYN_REPLY) and routes DATA to streams; the writer owns the header deflater and writes
//! queued frames in order. No send windows are enforced (peers never send WINDOW_UPDATE). Everything
//! a peer controls is bounded: frame length, header blocks, concurrent streams, idle time.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::frame::{self, FLAG_FIN, FLAG_UNIDIRECTIONAL, Frame, FrameCodec, goaway, rst};
use super::headers::{HeaderDecoder, HeaderEncoder, HeaderLimits, Headers};
use super::stream::{Outgoing, SpdyStream, StreamReader, StreamState, StreamWriter};

/// Bounds and timeouts of one session.
#[derive(Clone, Copy, Debug)]
pub struct SessionConfig {
    /// Largest frame body accepted from the peer (and largest DATA payload sent).
    pub max_frame_len: usize,
    pub headers: HeaderLimits,
    /// Streams open at once; more are refused with RST_STREAM REFUSED_STREAM.
    pub max_streams: usize,
    /// The session ends after this long without DATA or new streams in either direction.
    pub idle_timeout: Duration,
    /// A write to the connection that takes longer ends the session.
    pub write_timeout: Duration,
    /// DATA chunks buffered per stream before the reader waits for the stream's consumer.
    pub stream_buffer: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_frame_len: 1 << 20,
            headers: HeaderLimits::default(),
            max_streams: 256,
            // The kubelet's default streaming-connection-idle-timeout.
            idle_timeout: Duration::from_secs(4 * 3600),
            write_timeout: Duration::from_secs(30),
            stream_buffer: 16,
        }
    }
}

/// A running session: accept the streams the peer opens, then [`Session::close`] it.
/// Dropping it ends the connection at once (queued frames are still written first).
pub struct Session {
    incoming: mpsc::Receiver<SpdyStream>,
    control: mpsc::Sender<Outgoing>,
    cancel: CancellationToken,
    peer_done: watch::Receiver<bool>,
    peer_gone: CancellationToken,
    writer: Option<tokio::task::JoinHandle<()>>,
}

struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    fn idle_deadline(&self, idle: Duration) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }
}

impl Session {
    /// Start serving SPDY on `io` (the connection after the HTTP upgrade).
    pub fn start<IO>(io: IO, config: SessionConfig) -> Self
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let (control, out_rx) = mpsc::channel(64);
        let (in_tx, incoming) = mpsc::channel(config.max_streams.max(1));
        let cancel = CancellationToken::new();
        let (done_tx, peer_done) = watch::channel(false);
        let peer_gone = CancellationToken::new();
        let activity = Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        });
        let reader = Reader {
            config,
            out: control.clone(),
            incoming: Some(in_tx),
            cancel: cancel.clone(),
            peer_gone: peer_gone.clone(),
            activity: activity.clone(),
            streams: HashMap::new(),
            last_id: 0,
        };
        let gone = peer_gone.clone();
        tokio::spawn(async move {
            reader.run(read).await;
            gone.cancel();
            let _ = done_tx.send(true);
        });
        let writer = tokio::spawn(write_loop(write, out_rx, cancel.clone(), config, activity));
        Self {
            incoming,
            control,
            cancel,
            peer_done,
            peer_gone,
            writer: Some(writer),
        }
    }

    /// Cancelled once the peer is gone: it closed the connection or sent GOAWAY, the connection
    /// failed or idled out, or the session was ended. Work done for the peer (a running exec) waits
    /// on it next to its own end, so an abandoned session releases what it holds at once instead of
    /// when it next writes.
    pub fn peer_gone(&self) -> CancellationToken {
        self.peer_gone.clone()
    }

    /// The next stream the peer opened; `None` once the peer went away or sent GOAWAY.
    pub async fn accept(&mut self) -> Option<SpdyStream> {
        self.incoming.recv().await
    }

    /// End the session politely: write everything queued, send GOAWAY, give the peer up to `linger`
    /// to close its side (so it reads all data before the connection goes), then shut down.
    pub async fn close(mut self, linger: Duration) {
        let _ = self
            .control
            .send(Outgoing::GoAway { status: goaway::OK })
            .await;
        let mut done = self.peer_done.clone();
        let _ = tokio::time::timeout(linger, done.wait_for(|d| *d)).await;
        self.cancel.cancel();
        if let Some(writer) = self.writer.take() {
            let _ = writer.await;
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

struct StreamEntry {
    data_tx: Option<mpsc::Sender<Bytes>>,
    state: Arc<StreamState>,
}

struct Reader {
    config: SessionConfig,
    out: mpsc::Sender<Outgoing>,
    incoming: Option<mpsc::Sender<SpdyStream>>,
    cancel: CancellationToken,
    /// GOAWAY from the peer: it is tearing the session down (client-go resets its streams, sends
    /// GOAWAY and closes), so nothing it opened is wanted any more.
    peer_gone: CancellationToken,
    activity: Arc<Activity>,
    streams: HashMap<u32, StreamEntry>,
    last_id: u32,
}

impl Reader {
    async fn run<IO: AsyncRead>(mut self, read: ReadHalf<IO>) {
        let mut frames = FramedRead::new(
            read,
            FrameCodec {
                max_len: self.config.max_frame_len,
            },
        );
        let mut decoder = HeaderDecoder::new(self.config.headers);
        loop {
            let deadline = self.activity.idle_deadline(self.config.idle_timeout);
            let next = tokio::select! {
                next = frames.next() => next,
                () = tokio::time::sleep_until(deadline) => {
                    if self.activity.idle_deadline(self.config.idle_timeout) <= Instant::now() {
                        debug!("spdy session idle, closing");
                        break;
                    }
                    continue;
                }
                () = self.cancel.cancelled() => break,
            };
            let result = match next {
                None => break,
                Some(Err(e)) => Err(e.to_string()),
                Some(Ok(frame)) => self.handle(frame, &mut decoder).await,
            };
            if let Err(reason) = result {
                debug!(%reason, "spdy protocol error, sending GOAWAY");
                let _ = self.out.try_send(Outgoing::GoAway {
                    status: goaway::PROTOCOL_ERROR,
                });
                break;
            }
        }
        for entry in self.streams.values() {
            entry.state.reset.store(true, Ordering::SeqCst);
        }
        // Dropping the data senders ends every reader; dropping `incoming` ends `accept`.
    }

    async fn handle(&mut self, frame: Frame, decoder: &mut HeaderDecoder) -> Result<(), String> {
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                header_block,
                ..
            } => {
                // Always inflate, even for refused streams: the zlib context spans the connection.
                let headers = decoder.decode(&header_block).map_err(|e| e.to_string())?;
                self.activity.touch();
                self.open_stream(stream_id, flags, headers);
            }
            Frame::SynReply { header_block, .. } | Frame::Headers { header_block, .. } => {
                decoder.decode(&header_block).map_err(|e| e.to_string())?;
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                self.activity.touch();
                self.deliver(stream_id, flags, data).await;
            }
            Frame::RstStream { stream_id, .. } => {
                if let Some(entry) = self.streams.remove(&stream_id) {
                    entry.state.reset.store(true, Ordering::SeqCst);
                }
            }
            Frame::Ping { id } => {
                // Odd ids are the peer's own pings; even ones would answer ours, and we send none.
                if id & 1 == 1 {
                    self.out
                        .send(Outgoing::Ping { id })
                        .await
                        .map_err(|_| "writer gone".to_string())?;
                }
            }
            Frame::GoAway { .. } => {
                self.incoming = None;
                self.peer_gone.cancel();
            }
            Frame::Settings { .. } | Frame::WindowUpdate { .. } | Frame::UnknownControl { .. } => {}
        }
        Ok(())
    }

    fn open_stream(&mut self, stream_id: u32, flags: u8, headers: Headers) {
        let refuse = |out: &mpsc::Sender<Outgoing>, status| {
            let _ = out.try_send(Outgoing::Rst { stream_id, status });
        };
        if stream_id == 0 || stream_id & 1 == 0 || stream_id <= self.last_id {
            return refuse(&self.out, rst::PROTOCOL_ERROR);
        }
        self.last_id = stream_id;
        self.streams.retain(|_, e| {
            let local_done =
                e.state.local_closed.load(Ordering::SeqCst) || e.state.reset.load(Ordering::SeqCst);
            !(local_done && e.data_tx.is_none())
        });
        let Some(incoming) = self.incoming.clone() else {
            return refuse(&self.out, rst::REFUSED_STREAM);
        };
        if self.streams.len() >= self.config.max_streams {
            return refuse(&self.out, rst::REFUSED_STREAM);
        }
        let state = Arc::new(StreamState::default());
        if flags & FLAG_UNIDIRECTIONAL != 0 {
            state.local_closed.store(true, Ordering::SeqCst);
        }
        let (data_tx, rx) = mpsc::channel(self.config.stream_buffer.max(1));
        let stream = SpdyStream {
            id: stream_id,
            headers,
            reader: StreamReader { rx },
            writer: StreamWriter {
                stream_id,
                tx: self.out.clone(),
                state: state.clone(),
                max_chunk: self.config.max_frame_len.min(frame::MAX_LEN_FIELD),
            },
        };
        if self.out.try_send(Outgoing::SynReply { stream_id }).is_err()
            || incoming.try_send(stream).is_err()
        {
            state.reset.store(true, Ordering::SeqCst);
            return refuse(&self.out, rst::REFUSED_STREAM);
        }
        let data_tx = (flags & FLAG_FIN == 0).then_some(data_tx);
        self.streams
            .insert(stream_id, StreamEntry { data_tx, state });
    }

    async fn deliver(&mut self, stream_id: u32, flags: u8, data: Bytes) {
        let Some(entry) = self.streams.get_mut(&stream_id) else {
            if stream_id > self.last_id {
                let _ = self.out.try_send(Outgoing::Rst {
                    stream_id,
                    status: rst::INVALID_STREAM,
                });
            }
            return;
        };
        if let Some(tx) = entry.data_tx.as_ref().filter(|_| !data.is_empty()) {
            // Backpressure: a slow consumer slows the connection (there is no flow control to use).
            let delivered = tokio::select! {
                sent = tx.send(data) => sent.is_ok(),
                () = self.cancel.cancelled() => false,
            };
            if !delivered {
                entry.data_tx = None;
            }
        }
        if flags & FLAG_FIN != 0 {
            entry.data_tx = None;
        }
    }
}

async fn write_loop<IO: AsyncWrite>(
    mut write: WriteHalf<IO>,
    mut rx: mpsc::Receiver<Outgoing>,
    cancel: CancellationToken,
    config: SessionConfig,
    activity: Arc<Activity>,
) {
    let mut encoder = HeaderEncoder::new();
    let mut buf = BytesMut::new();
    let mut closing = false;
    while !closing {
        let first = tokio::select! {
            biased;
            msg = rx.recv() => msg,
            () = cancel.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut next = Some(first);
        while let Some(msg) = next {
            closing |= encode(msg, &mut encoder, &mut buf, &activity);
            next = rx.try_recv().ok();
        }
        if !flush(&mut write, &mut buf, config.write_timeout).await {
            return;
        }
    }
    // Write whatever was queued before the end, then say goodbye once.
    while let Ok(msg) = rx.try_recv() {
        encode(msg, &mut encoder, &mut buf, &activity);
    }
    if !closing {
        frame::encode(
            &Frame::GoAway {
                last_good_stream_id: 0,
                status: goaway::OK,
            },
            &mut buf,
        );
    }
    if flush(&mut write, &mut buf, config.write_timeout).await {
        let _ = tokio::time::timeout(config.write_timeout, write.shutdown()).await;
    }
}

/// Encode one queued message; `true` when it was a GOAWAY (nothing follows it).
fn encode(
    msg: Outgoing,
    encoder: &mut HeaderEncoder,
    buf: &mut BytesMut,
    activity: &Activity,
) -> bool {
    let frame = match msg {
        Outgoing::SynReply { stream_id } => match encoder.encode(&Headers::new()) {
            Ok(header_block) => Frame::SynReply {
                stream_id,
                flags: 0,
                header_block,
            },
            Err(e) => {
                debug!(error = %e, "cannot compress SYN_REPLY headers");
                Frame::RstStream {
                    stream_id,
                    status: rst::INTERNAL_ERROR,
                }
            }
        },
        Outgoing::Data {
            stream_id,
            data,
            fin,
        } => {
            activity.touch();
            Frame::Data {
                stream_id,
                flags: if fin { FLAG_FIN } else { 0 },
                data,
            }
        }
        Outgoing::Rst { stream_id, status } => Frame::RstStream { stream_id, status },
        Outgoing::Ping { id } => Frame::Ping { id },
        Outgoing::GoAway { status } => {
            frame::encode(
                &Frame::GoAway {
                    last_good_stream_id: 0,
                    status,
                },
                buf,
            );
            return true;
        }
    };
    frame::encode(&frame, buf);
    false
}

async fn flush<W: AsyncWrite>(
    write: &mut WriteHalf<W>,
    buf: &mut BytesMut,
    timeout: Duration,
) -> bool {
    if buf.is_empty() {
        return true;
    }
    let result = tokio::time::timeout(timeout, async {
        write.write_all(buf).await?;
        write.flush().await
    })
    .await;
    buf.clear();
    matches!(result, Ok(Ok(())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "session_tests.rs"]
mod tests;
