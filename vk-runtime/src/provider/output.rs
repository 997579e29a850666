//! The output side of an exec or attach session. A session's stdout and stderr share one queue, so
//! the transport writes output to the client in the order the command produced it: a diagnostic on
//! stderr is never overtaken by the stdout bytes written after it (clients such as `kubectl cp`
//! stop reading once stdout is complete, and lose whatever stderr is still behind it).

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendError;

/// Which output stream a chunk belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// One chunk of a session's output, tagged with its stream.
pub type OutputChunk = (OutputStream, Bytes);

/// Writes one output stream of a session; cheap to clone. The session's queue ends (the transport
/// sees EOF on every stream) once every sender of the session is dropped.
#[derive(Clone, Debug)]
pub struct OutputSender {
    stream: OutputStream,
    tx: mpsc::Sender<OutputChunk>,
}

/// Room for one chunk on a session's queue, for any of its streams.
pub struct OutputPermit<'a>(mpsc::Permit<'a, OutputChunk>);

impl OutputPermit<'_> {
    /// Queue `data` on `stream`.
    pub fn send(self, stream: OutputStream, data: Bytes) {
        self.0.send((stream, data));
    }
}

impl OutputSender {
    /// The stream this sender writes.
    pub fn stream(&self) -> OutputStream {
        self.stream
    }

    /// Queue `data`; waits while the queue is full. Fails (returning the data) once the transport
    /// stopped reading, i.e. the client went away.
    pub async fn send(&self, data: Bytes) -> Result<(), SendError<Bytes>> {
        self.tx
            .send((self.stream, data))
            .await
            .map_err(|SendError((_, data))| SendError(data))
    }

    /// Wait for room on the session's queue. Cancel-safe: nothing is queued until the permit is used.
    pub async fn reserve(&self) -> Result<OutputPermit<'_>, SendError<()>> {
        self.tx.reserve().await.map(OutputPermit)
    }

    /// Whether the transport stopped reading.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Completes once the transport stopped reading.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }
}

/// A session's output queue holding up to `capacity` chunks: a sender for each requested stream
/// (`None` for a stream the client did not ask for) and the receiving end for the transport.
pub fn output_channel(
    capacity: usize,
    stdout: bool,
    stderr: bool,
) -> (
    Option<OutputSender>,
    Option<OutputSender>,
    mpsc::Receiver<OutputChunk>,
) {
    let (tx, rx) = mpsc::channel(capacity);
    let sender = |wanted: bool, stream| {
        wanted.then(|| OutputSender {
            stream,
            tx: tx.clone(),
        })
    };
    (
        sender(stdout, OutputStream::Stdout),
        sender(stderr, OutputStream::Stderr),
        rx,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streams_share_one_ordered_queue() {
        let (out, err, mut rx) = output_channel(8, true, true);
        let (out, err) = (out.unwrap(), err.unwrap());
        err.send(Bytes::from_static(b"e1")).await.unwrap();
        out.send(Bytes::from_static(b"o1")).await.unwrap();
        err.send(Bytes::from_static(b"e2")).await.unwrap();
        drop((out, err));
        let mut got = Vec::new();
        while let Some(chunk) = rx.recv().await {
            got.push(chunk);
        }
        assert_eq!(
            got,
            vec![
                (OutputStream::Stderr, Bytes::from_static(b"e1")),
                (OutputStream::Stdout, Bytes::from_static(b"o1")),
                (OutputStream::Stderr, Bytes::from_static(b"e2")),
            ]
        );
    }

    #[tokio::test]
    async fn unrequested_streams_have_no_sender_and_a_gone_reader_fails_sends() {
        let (out, err, rx) = output_channel(1, true, false);
        assert!(err.is_none());
        let out = out.unwrap();
        assert!(!out.is_closed());
        drop(rx);
        assert!(out.is_closed());
        let SendError(back) = out.send(Bytes::from_static(b"x")).await.unwrap_err();
        assert_eq!(back, Bytes::from_static(b"x"));
    }
}
