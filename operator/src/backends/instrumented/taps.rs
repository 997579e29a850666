//! How the decorator tells when a streaming operation is established without the backend's help.
//!
//! - exec/attach: the backend's stdout/stderr senders are replaced by a queue the decorator
//!   forwards from, inside the operation's own future (no task); the first forwarded chunk marks
//!   the session live. After the backend returns, whatever it left buffered is forwarded before the
//!   runtime's senders are dropped, so no output is lost and EOF still follows the last byte.
//! - port-forward: the byte pipe is wrapped; the backend's first read or write of it (it copies only
//!   once its connection to the port is open) marks the stream live.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use vk_runtime::provider::{BytePipe, ExecIo, OutputChunk, OutputSender, output_channel};

/// Capacity of the queue handed to the backend (the runtime's own holds 32 chunks).
const TAP_CAPACITY: usize = 16;

/// The output queue between backend (`from`) and runtime (`to`). Both streams go through one queue,
/// so the order the backend wrote them in is kept.
pub struct OutputTaps {
    from: Option<mpsc::Receiver<OutputChunk>>,
    /// Any one of the runtime's senders: a session's streams share one queue.
    to: Option<OutputSender>,
}

impl OutputTaps {
    /// Put a tap between the backend and the runtime's stdout/stderr.
    pub fn insert(mut io: ExecIo) -> (ExecIo, Self) {
        let (stdout, stderr) = (io.stdout.take(), io.stderr.take());
        let (tap_out, tap_err, from) =
            output_channel(TAP_CAPACITY, stdout.is_some(), stderr.is_some());
        io.stdout = tap_out;
        io.stderr = tap_err;
        let to = stdout.or(stderr);
        let taps = Self {
            from: to.is_some().then_some(from),
            to,
        };
        (io, taps)
    }

    /// Move one chunk (or notice one side ending). Never completes once either side ended.
    /// Cancel-safe: a chunk is taken from the backend only once the runtime has room for it.
    pub async fn step(&mut self) -> bool {
        let (Some(from), Some(to)) = (self.from.as_mut(), self.to.as_ref()) else {
            return std::future::pending().await;
        };
        let forwarded = match to.reserve().await {
            Ok(permit) => match from.recv().await {
                Some((stream, chunk)) => {
                    permit.send(stream, chunk);
                    true
                }
                // The backend dropped its senders: drop the runtime's so it sees EOF.
                None => false,
            },
            // The runtime stopped reading (client gone): drop ours so the backend's sends fail.
            Err(_) => false,
        };
        if !forwarded {
            self.from = None;
            self.to = None;
        }
        forwarded
    }

    /// After the backend returned: forward what it left, then let go of the runtime's senders.
    /// Bounded even if the backend leaked a sender somewhere: nothing new is accepted.
    pub async fn drain(mut self) {
        if let Some(from) = self.from.as_mut() {
            from.close();
        }
        while self.from.is_some() {
            self.step().await;
        }
    }
}

/// A port-forward pipe that runs a callback the first time the backend reads or writes it.
pub struct FirstUse {
    inner: Box<dyn BytePipe>,
    used: Arc<AtomicBool>,
    on_first: Option<Box<dyn FnOnce() + Send>>,
}

impl FirstUse {
    /// Wrap `inner`; `used` is set (and `on_first` run) on first use.
    pub fn new(
        inner: Box<dyn BytePipe>,
        used: Arc<AtomicBool>,
        on_first: Box<dyn FnOnce() + Send>,
    ) -> Self {
        Self {
            inner,
            used,
            on_first: Some(on_first),
        }
    }

    fn touch(&mut self) {
        if let Some(f) = self.on_first.take()
            && !self.used.swap(true, Ordering::SeqCst)
        {
            f();
        }
    }
}

impl AsyncRead for FirstUse {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.touch();
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FirstUse {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.touch();
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.touch();
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
