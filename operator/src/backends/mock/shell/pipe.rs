//! Pipelines (`a | b | c`): the stages run concurrently, each one's stdout feeding the next one's
//! stdin through a small channel (so a large output streams with back-pressure, never buffered
//! whole); stderr goes where the shell's goes; the exit code is the last stage's.

use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Io, Output, Stream, run_command};

/// A stage's output: stdout into the pipe, stderr through.
struct PipeOutput<'a> {
    tx: Mutex<Option<mpsc::Sender<Bytes>>>,
    stderr: &'a dyn Output,
}

impl PipeOutput<'_> {
    /// The stage ended: the next one sees end of input.
    fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

#[async_trait]
impl Output for PipeOutput<'_> {
    async fn write(&self, stream: Stream, data: Bytes) {
        if stream == Stream::Stderr {
            return self.stderr.write(stream, data).await;
        }
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(tx) = tx {
            // The reader ended early (as `head` may): what is left is discarded.
            let _ = tx.send(data).await;
        }
    }
}

/// A stage's standard input: the shell's (first stage) or the previous stage's pipe.
enum Input<'a> {
    Shell(Option<&'a mut mpsc::Receiver<Bytes>>),
    Pipe(mpsc::Receiver<Bytes>),
}

async fn stage(
    words: Vec<String>,
    input: Input<'_>,
    io: Io<'_>,
    pipe: Option<&PipeOutput<'_>>,
) -> i32 {
    let mut owned;
    let stdin = match input {
        Input::Shell(s) => s,
        Input::Pipe(rx) => {
            owned = rx;
            Some(&mut owned)
        }
    };
    let mut io = Io { stdin, ..io };
    let code = run_command(words, &mut io).await.code;
    if let Some(p) = pipe {
        p.close();
    }
    // The input (a pipe) is dropped here, so an earlier stage still writing sees a closed pipe.
    code
}

/// Run `stages` (each split into words) as a pipeline; the last stage's exit code.
pub(super) async fn run(stages: Vec<Vec<String>>, io: &mut Io<'_>) -> i32 {
    let n = stages.len();
    let mut pipes = Vec::with_capacity(n.saturating_sub(1));
    let mut readers = Vec::with_capacity(n.saturating_sub(1));
    for _ in 1..n {
        let (tx, rx) = mpsc::channel(16);
        pipes.push(PipeOutput {
            tx: Mutex::new(Some(tx)),
            stderr: io.out,
        });
        readers.push(rx);
    }
    let mut readers = readers.into_iter();
    let mut shell_stdin = Some(io.stdin.as_deref_mut());
    let mut runs = Vec::with_capacity(n);
    for (i, words) in stages.into_iter().enumerate() {
        let input = match shell_stdin.take() {
            Some(s) => Input::Shell(s),
            None => readers.next().map_or(Input::Shell(None), Input::Pipe),
        };
        let pipe = pipes.get(i);
        let sub = Io {
            stdin: None,
            out: pipe.map_or(io.out, |p| p as &dyn Output),
            env: io.env,
            cancel: io.cancel,
            tty: io.tty,
            fs: io.fs,
        };
        runs.push(stage(words, input, sub, pipe));
    }
    let codes = futures::future::join_all(runs).await;
    codes.last().copied().unwrap_or(0)
}
