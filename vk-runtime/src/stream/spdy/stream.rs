//! One accepted SPDY stream as the protocol layer sees it: its SYN_STREAM headers, a reader of the
//! peer's DATA (ending at FIN, reset or session end) and a writer that queues DATA frames.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::frame::rst;
use super::headers::Headers;

/// What stream handles and the reader task ask the connection's writer task to send.
#[derive(Debug)]
pub(crate) enum Outgoing {
    SynReply {
        stream_id: u32,
    },
    Data {
        stream_id: u32,
        data: Bytes,
        fin: bool,
    },
    Rst {
        stream_id: u32,
        status: u32,
    },
    Ping {
        id: u32,
    },
    GoAway {
        status: u32,
    },
}

/// State shared by a stream's handles and the session.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    /// Reset by either side, or the session ended: writes fail.
    pub(crate) reset: AtomicBool,
    /// We sent FIN (or the stream is unidirectional): no more writes.
    pub(crate) local_closed: AtomicBool,
}

/// A stream the peer opened. The session already answered it with SYN_REPLY.
#[derive(Debug)]
pub struct SpdyStream {
    pub id: u32,
    pub headers: Headers,
    pub reader: StreamReader,
    pub writer: StreamWriter,
}

/// The peer's DATA on one stream, in order.
#[derive(Debug)]
pub struct StreamReader {
    pub(crate) rx: mpsc::Receiver<Bytes>,
}

impl StreamReader {
    /// The next chunk; `None` once the peer sent FIN, reset the stream or the session ended.
    pub async fn read_chunk(&mut self) -> Option<Bytes> {
        loop {
            match self.rx.recv().await {
                Some(chunk) if chunk.is_empty() => continue,
                other => return other,
            }
        }
    }
}

/// Sends DATA on one stream. Dropping it without [`StreamWriter::close`] still sends FIN.
#[derive(Debug)]
pub struct StreamWriter {
    pub(crate) stream_id: u32,
    pub(crate) tx: mpsc::Sender<Outgoing>,
    pub(crate) state: Arc<StreamState>,
    /// Largest DATA payload to send in one frame.
    pub(crate) max_chunk: usize,
}

fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "SPDY stream is closed")
}

impl StreamWriter {
    pub fn stream_id(&self) -> u32 {
        self.stream_id
    }

    /// Queue `data` as DATA frames (split to the frame size limit). Waits when the connection's
    /// send queue is full; fails once the stream was closed or reset, or the session ended.
    pub async fn write(&self, mut data: Bytes) -> io::Result<()> {
        while !data.is_empty() {
            self.check_open()?;
            let chunk = data.split_to(data.len().min(self.max_chunk));
            self.send(Outgoing::Data {
                stream_id: self.stream_id,
                data: chunk,
                fin: false,
            })
            .await?;
        }
        Ok(())
    }

    /// Half-close our side with an empty DATA frame carrying FIN. Idempotent.
    pub async fn close(&self) -> io::Result<()> {
        if self.state.local_closed.swap(true, Ordering::SeqCst)
            || self.state.reset.load(Ordering::SeqCst)
        {
            return Ok(());
        }
        self.send(Outgoing::Data {
            stream_id: self.stream_id,
            data: Bytes::new(),
            fin: true,
        })
        .await
    }

    /// Abort the stream with RST_STREAM `status` (see [`super::frame::rst`]).
    pub fn reset(&self, status: u32) {
        if !self.state.reset.swap(true, Ordering::SeqCst) {
            // A full queue or a finished session: the peer learns of the end from the session instead.
            let _ = self.tx.try_send(Outgoing::Rst {
                stream_id: self.stream_id,
                status,
            });
        }
    }

    /// Refuse a stream the protocol layer has no use for.
    pub fn refuse(&self) {
        self.reset(rst::REFUSED_STREAM);
    }

    fn check_open(&self) -> io::Result<()> {
        if self.state.reset.load(Ordering::SeqCst) || self.state.local_closed.load(Ordering::SeqCst)
        {
            return Err(closed_error());
        }
        Ok(())
    }

    async fn send(&self, msg: Outgoing) -> io::Result<()> {
        self.tx.send(msg).await.map_err(|_| closed_error())
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        let already = self.state.local_closed.swap(true, Ordering::SeqCst);
        if !already && !self.state.reset.load(Ordering::SeqCst) {
            // Best effort: a peer waiting for EOF gets it even on early-return paths.
            let _ = self.tx.try_send(Outgoing::Data {
                stream_id: self.stream_id,
                data: Bytes::new(),
                fin: true,
            });
        }
    }
}
