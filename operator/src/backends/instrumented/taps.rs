//! How the decorator tells when a streaming operation is established without the backend's help.
//!
//! - exec/attach: the backend's stdout/stderr senders are replaced by channels the decorator
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

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, select_all};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use vk_runtime::provider::{BytePipe, ExecIo};

/// Capacity of the channels handed to the backend (the runtime's own are 16 deep).
const TAP_CAPACITY: usize = 16;

/// The output channels between backend (`from`) and runtime (`to`).
pub struct OutputTaps {
    taps: Vec<(mpsc::Receiver<Bytes>, mpsc::Sender<Bytes>)>,
}

enum Step {
    Forwarded,
    /// The backend dropped its sender: drop the runtime's so it sees EOF.
    BackendDone,
    /// The runtime stopped reading (client gone): drop ours so the backend's sends fail as before.
    RuntimeGone,
}

impl OutputTaps {
    /// Put taps between the backend and the runtime's stdout/stderr.
    pub fn insert(mut io: ExecIo) -> (ExecIo, Self) {
        let mut taps = Vec::new();
        let mut tap = |runtime: Option<mpsc::Sender<Bytes>>| {
            runtime.map(|to| {
                let (tx, from) = mpsc::channel(TAP_CAPACITY);
                taps.push((from, to));
                tx
            })
        };
        io.stdout = tap(io.stdout.take());
        io.stderr = tap(io.stderr.take());
        (io, Self { taps })
    }

    /// Move one chunk (or notice one side ending). Never completes when no tap is left.
    /// Cancel-safe: a chunk is taken from the backend only once the runtime has room for it.
    pub async fn step(&mut self) -> bool {
        if self.taps.is_empty() {
            return std::future::pending().await;
        }
        let moves: Vec<BoxFuture<'_, Step>> = self
            .taps
            .iter_mut()
            .map(|(from, to)| {
                async move {
                    let Ok(permit) = to.reserve().await else {
                        return Step::RuntimeGone;
                    };
                    match from.recv().await {
                        Some(chunk) => {
                            permit.send(chunk);
                            Step::Forwarded
                        }
                        None => Step::BackendDone,
                    }
                }
                .boxed()
            })
            .collect();
        let (step, index, rest) = select_all(moves).await;
        drop(rest);
        match step {
            Step::Forwarded => true,
            Step::BackendDone | Step::RuntimeGone => {
                self.taps.swap_remove(index);
                false
            }
        }
    }

    /// After the backend returned: forward what it left, then let go of the runtime's senders.
    /// Bounded even if the backend leaked a sender somewhere: nothing new is accepted.
    pub async fn drain(mut self) {
        for (from, _) in &mut self.taps {
            from.close();
        }
        while !self.taps.is_empty() {
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
