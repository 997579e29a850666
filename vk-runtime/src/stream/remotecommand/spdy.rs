//! Exec/attach over SPDY: wait (bounded) for the error stream and every requested stream, pump
//! them into an [`ExecIo`], run the provider, then write the outcome on the error stream and close.

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

use super::resize::ResizeDecoder;
use super::status::error_payload;
use super::{
    DRAIN_TIMEOUT, LINGER, OUTPUT_QUEUE, Runner, STREAM_CREATION_TIMEOUT, SpdyProtocol,
    StreamOptions,
};
use crate::provider::{ExecIo, OutputChunk, OutputStream, output_channel};
use crate::stream::spdy::{Session, SpdyStream, StreamReader, StreamWriter};

/// The streams of one exec session, by `streamType`.
#[derive(Default)]
struct Streams {
    error: Option<SpdyStream>,
    stdin: Option<SpdyStream>,
    stdout: Option<SpdyStream>,
    stderr: Option<SpdyStream>,
    resize: Option<SpdyStream>,
}

impl Streams {
    fn slot(&mut self, kind: &str) -> Option<&mut Option<SpdyStream>> {
        match kind {
            "error" => Some(&mut self.error),
            "stdin" => Some(&mut self.stdin),
            "stdout" => Some(&mut self.stdout),
            "stderr" => Some(&mut self.stderr),
            "resize" => Some(&mut self.resize),
            _ => None,
        }
    }

    fn complete(&self, opts: &StreamOptions, resize: bool) -> bool {
        self.error.is_some()
            && (!opts.stdin || self.stdin.is_some())
            && (!opts.stdout || self.stdout.is_some())
            && (!opts.stderr || self.stderr.is_some())
            && (!resize || self.resize.is_some())
    }
}

async fn collect(session: &mut Session, opts: &StreamOptions, resize: bool) -> Option<Streams> {
    let deadline = Instant::now() + STREAM_CREATION_TIMEOUT;
    let mut streams = Streams::default();
    while !streams.complete(opts, resize) {
        let stream = match tokio::time::timeout_at(deadline, session.accept()).await {
            Ok(Some(stream)) => stream,
            Ok(None) => return None,
            Err(_) => {
                debug!("timed out waiting for the client to create streams");
                return None;
            }
        };
        let kind = stream
            .headers
            .get("streamtype")
            .unwrap_or_default()
            .to_ascii_lowercase();
        match streams.slot(&kind) {
            Some(slot) if slot.is_none() => *slot = Some(stream),
            _ => {
                debug!(stream_type = %kind, "refusing unexpected or duplicate stream");
                stream.writer.refuse();
            }
        }
    }
    Some(streams)
}

fn pump_in(mut reader: StreamReader, tx: mpsc::Sender<Bytes>) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(chunk) = reader.read_chunk().await {
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    })
}

/// Forward the session's output, in the order the provider wrote it, to its streams; a stream the
/// client reset drops its output, and the pump stops once no stream is left. Closes the streams at
/// the end.
fn pump_out(
    mut rx: mpsc::Receiver<OutputChunk>,
    mut stdout: Option<StreamWriter>,
    mut stderr: Option<StreamWriter>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while stdout.is_some() || stderr.is_some() {
            let Some((stream, chunk)) = rx.recv().await else {
                break;
            };
            let slot = match stream {
                OutputStream::Stdout => &mut stdout,
                OutputStream::Stderr => &mut stderr,
            };
            if let Some(writer) = slot.as_ref()
                && writer.write(chunk).await.is_err()
            {
                *slot = None;
            }
        }
        for writer in [stdout, stderr].into_iter().flatten() {
            let _ = writer.close().await;
        }
    })
}

/// Serve one exec/attach on an upgraded SPDY connection. Returns the command's exit code, or
/// `None` when the client never opened its streams, the provider failed or the client went away
/// first (the command is then cancelled).
pub async fn serve_spdy(
    mut session: Session,
    protocol: SpdyProtocol,
    opts: StreamOptions,
    run: Runner,
) -> Option<i32> {
    let want_resize = opts.tty && protocol.has_resize();
    let Some(streams) = collect(&mut session, &opts, want_resize).await else {
        session.close(LINGER).await;
        return None;
    };
    let mut background = Vec::new();
    // The stdin stream's write side stays open until the command ends: a server FIN on stdin tells
    // client-go the session is over, and it then resets stdin, racing (and losing) its own copy.
    let mut stdin_writer = None;
    let stdin = streams.stdin.map(|s| {
        let (tx, rx) = mpsc::channel(16);
        background.push(pump_in(s.reader, tx));
        stdin_writer = Some(s.writer);
        rx
    });
    let (stdout, stderr, output) = output_channel(
        OUTPUT_QUEUE,
        streams.stdout.is_some(),
        streams.stderr.is_some(),
    );
    let pump = pump_out(
        output,
        streams.stdout.map(|s| s.writer),
        streams.stderr.map(|s| s.writer),
    );
    let resize = streams.resize.map(|mut s| {
        let (tx, rx) = mpsc::channel(4);
        background.push(tokio::spawn(async move {
            let mut decoder = ResizeDecoder::default();
            while let Some(chunk) = s.reader.read_chunk().await {
                for size in decoder.push(&chunk) {
                    if tx.send(size).await.is_err() {
                        return;
                    }
                }
            }
        }));
        rx
    });
    let peer_gone = session.peer_gone();
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
            for task in background {
                task.abort();
            }
            session.close(LINGER).await;
            return None;
        }
    };
    // The provider dropped its senders; let the output pumps drain what it wrote.
    if tokio::time::timeout(DRAIN_TIMEOUT, pump).await.is_err() {
        debug!("output streams did not drain in time");
    }
    if let Some(error) = streams.error {
        if let Some(payload) = error_payload(protocol.status_errors(), &outcome) {
            let _ = error.writer.write(Bytes::from(payload)).await;
        }
        let _ = error.writer.close().await;
    }
    drop(stdin_writer);
    for task in background {
        task.abort();
    }
    session.close(LINGER).await;
    outcome.map_err(|e| debug!(error = %e, "exec failed")).ok()
}
