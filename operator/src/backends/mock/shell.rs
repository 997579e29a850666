//! The mock's tiny command interpreter: what a simulated container's main process and `exec` run.
//!
//! Commands: `echo [-n] ARGS`, `cat [FILE|-]...` (files of the container's filesystem; standard
//! input without arguments), `env` (the container's environment as `NAME=value` lines), `sleep N`
//! (seconds, `s`/`m`/`h` suffixes, `infinity`), `exit [N]`, `true`, `false`, `test`/`[` (`-d`, `-f`,
//! `-e`, `-s` on the filesystem, string tests), `tar` (what `kubectl cp` runs: [`tar`]), `tail -c`,
//! `loggen BYTES [LINE]` (BYTES of `x` lines of LINE bytes each, default 100, newline
//! included; K/M/G suffixes: a large log produced fast, for log throughput benchmarks), and
//! `sh -c "..."` running such commands joined by `;`, newlines, `&&`, `||` and pipes `|` with
//! quoting, `$NAME`, `${NAME}`, `$?` expansion and `>&2`. `sh` without `-c` reads command lines from
//! stdin (with a `$ ` prompt and echo when a terminal is attached). Anything else prints `<cmd>:
//! command not found` on stderr and exits 127. Commands interrupted by the container stopping exit
//! 137. Each container has its own in-memory filesystem ([`crate::backends::mock::fs`]).

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vk_runtime::provider::OutputSender;

use super::fs::SharedFs;
use super::logs::RunOutput;
pub use super::logs::Stream;

mod builtins;
mod files;
mod pipe;
mod syntax;
pub mod tar;
pub use builtins::{Tail, TailFrom, parse_tail};
pub use files::test;
pub use syntax::{Join, SleepFor, parse_sleep, split_commands, split_pipeline, split_words};

/// Exit code of a command killed because its container stopped.
pub const KILLED: i32 = 137;

/// Where a command's output goes.
#[async_trait]
pub trait Output: Send + Sync {
    async fn write(&self, stream: Stream, data: Bytes);
}

#[async_trait]
impl Output for RunOutput {
    async fn write(&self, stream: Stream, data: Bytes) {
        RunOutput::write(self, stream, data).await;
    }
}

/// Output of an exec session. With a terminal there is one stream and newlines become CRLF.
pub struct SessionOutput {
    pub stdout: Option<OutputSender>,
    pub stderr: Option<OutputSender>,
    pub tty: bool,
}

#[async_trait]
impl Output for SessionOutput {
    async fn write(&self, stream: Stream, data: Bytes) {
        let (target, data) = if self.tty {
            let mut crlf = BytesMut::with_capacity(data.len() + 8);
            for &b in data.iter() {
                if b == b'\n' {
                    crlf.extend_from_slice(b"\r");
                }
                crlf.extend_from_slice(&[b]);
            }
            (self.stdout.as_ref(), crlf.freeze())
        } else {
            (
                if stream == Stream::Stdout {
                    self.stdout.as_ref()
                } else {
                    self.stderr.as_ref()
                },
                data,
            )
        };
        if let Some(tx) = target {
            // The client went away: output is discarded, the command goes on.
            let _ = tx.send(data).await;
        }
    }
}

/// `>&2`: a command's stdout goes to stderr.
struct ToStderr<'a>(&'a dyn Output);

#[async_trait]
impl Output for ToStderr<'_> {
    async fn write(&self, _stream: Stream, data: Bytes) {
        self.0.write(Stream::Stderr, data).await;
    }
}

/// What a command runs with.
pub struct Io<'a> {
    /// `None`: stdin is at EOF.
    pub stdin: Option<&'a mut mpsc::Receiver<Bytes>>,
    pub out: &'a dyn Output,
    pub env: &'a [(String, String)],
    pub cancel: &'a CancellationToken,
    pub tty: bool,
    /// The container's filesystem.
    pub fs: &'a SharedFs,
}

impl Io<'_> {
    async fn print(&self, s: impl Into<String>) {
        self.out.write(Stream::Stdout, Bytes::from(s.into())).await;
    }
    async fn eprint(&self, s: impl Into<String>) {
        self.out.write(Stream::Stderr, Bytes::from(s.into())).await;
    }
    /// The next stdin chunk; `None` at EOF or when cancelled.
    async fn read(&mut self) -> Option<Bytes> {
        let rx = self.stdin.as_deref_mut()?;
        tokio::select! {
            chunk = rx.recv() => chunk,
            () = self.cancel.cancelled() => None,
        }
    }
}

/// Result of one command: its exit code and whether it was `exit` (ends the enclosing shell).
struct Flow {
    code: i32,
    exit: bool,
}

impl Flow {
    fn code(code: i32) -> Self {
        Self { code, exit: false }
    }
}

/// Run `argv` (a process: no shell expansion) and return its exit code.
pub async fn run_argv(argv: &[String], io: &mut Io<'_>) -> i32 {
    run_words(argv.to_vec(), io).await.code
}

fn run_words<'a, 'b: 'a>(words: Vec<String>, io: &'a mut Io<'b>) -> BoxFuture<'a, Flow> {
    Box::pin(async move {
        let Some(first) = words.first() else {
            return Flow::code(0);
        };
        let name = first.rsplit('/').next().unwrap_or(first).to_string();
        let args = &words[1..];
        match name.as_str() {
            "echo" => {
                let (newline, args) = match args.first().map(String::as_str) {
                    Some("-n") => (false, &args[1..]),
                    _ => (true, args),
                };
                let mut line = args.join(" ");
                if newline {
                    line.push('\n');
                }
                io.print(line).await;
                Flow::code(0)
            }
            "cat" => Flow::code(files::cat(args, io).await),
            "env" => {
                let text: String = io.env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
                io.print(text).await;
                Flow::code(0)
            }
            "sleep" => Flow::code(builtins::sleep(args, io).await),
            "exit" => {
                let code = args.first().map_or(Some(0), |a| {
                    a.parse::<i64>().ok().map(|n| n.rem_euclid(256) as i32)
                });
                match code {
                    Some(code) => Flow { code, exit: true },
                    None => {
                        io.eprint(format!("sh: exit: Illegal number: {}\n", args[0]))
                            .await;
                        Flow {
                            code: 2,
                            exit: true,
                        }
                    }
                }
            }
            "true" => Flow::code(0),
            "false" => Flow::code(1),
            "loggen" => Flow::code(builtins::loggen(args, io).await),
            "tail" => Flow::code(builtins::tail(args, io).await),
            "test" | "[" => Flow::code(files::test_builtin(&name, args, io).await),
            "tar" => Flow::code(files::tar(args, io).await),
            "sh" | "bash" | "ash" | "dash" => match args {
                [flag, body, ..] if flag == "-c" => Flow::code(run_body(body, io).await),
                [flag] if flag == "-c" => {
                    io.eprint("sh: -c requires an argument\n").await;
                    Flow::code(2)
                }
                [] => Flow::code(interactive(io).await),
                [other, ..] => {
                    io.eprint(format!(
                        "sh: can't open '{other}': No such file or directory\n"
                    ))
                    .await;
                    Flow::code(2)
                }
            },
            _ => {
                io.eprint(format!("{first}: command not found\n")).await;
                Flow::code(127)
            }
        }
    })
}

/// Run a shell body (`sh -c BODY`); its exit code.
pub async fn run_body(body: &str, io: &mut Io<'_>) -> i32 {
    run_body_flow(body, io, 0).await.code
}

/// `sh` reading command lines from stdin until EOF or `exit`.
async fn interactive(io: &mut Io<'_>) -> i32 {
    let mut last = 0;
    let mut line = Vec::new();
    if io.tty {
        io.print("$ ").await;
    }
    while let Some(chunk) = io.read().await {
        for &b in chunk.iter() {
            match b {
                b'\r' | b'\n' => {
                    if io.tty {
                        io.print("\n").await;
                    }
                    let cmd = String::from_utf8_lossy(&std::mem::take(&mut line)).into_owned();
                    let mut sub = Io {
                        stdin: None,
                        out: io.out,
                        env: io.env,
                        cancel: io.cancel,
                        tty: io.tty,
                        fs: io.fs,
                    };
                    let flow = run_body_flow(&cmd, &mut sub, last).await;
                    last = flow.code;
                    if flow.exit {
                        return last;
                    }
                    if io.tty {
                        io.print("$ ").await;
                    }
                }
                0x7f | 0x08 if io.tty => {
                    if line.pop().is_some() {
                        io.print("\x08 \x08").await;
                    }
                }
                0x04 if io.tty && line.is_empty() => return last,
                0x03 if io.tty => {
                    line.clear();
                    io.print("^C\n$ ").await;
                }
                _ => {
                    line.push(b);
                    if io.tty {
                        io.out
                            .write(Stream::Stdout, Bytes::copy_from_slice(&[b]))
                            .await;
                    }
                }
            }
        }
    }
    if io.cancel.is_cancelled() {
        KILLED
    } else {
        last
    }
}

/// Like [`run_body`], but reports `exit` so that an interactive shell ends.
async fn run_body_flow(body: &str, io: &mut Io<'_>, mut last: i32) -> Flow {
    for (join, cmd) in split_commands(body) {
        if io.cancel.is_cancelled() {
            return Flow::code(KILLED);
        }
        let run = match join {
            Join::Always => true,
            Join::And => last == 0,
            Join::Or => last != 0,
        };
        if run {
            let stages = split_pipeline(&cmd);
            let flow = if stages.len() > 1 {
                let stages = stages
                    .iter()
                    .map(|st| split_words(st, io.env, last))
                    .collect();
                Flow::code(pipe::run(stages, io).await)
            } else {
                run_command(split_words(&cmd, io.env, last), io).await
            };
            if flow.exit {
                return flow;
            }
            last = flow.code;
        }
    }
    Flow::code(last)
}

/// Run one command's words, honouring `>&2` (its stdout goes to stderr).
async fn run_command(mut words: Vec<String>, io: &mut Io<'_>) -> Flow {
    let before = words.len();
    words.retain(|w| w != ">&2" && w != "1>&2");
    if words.len() == before {
        return run_words(words, io).await;
    }
    let to_stderr = ToStderr(io.out);
    let mut sub = Io {
        stdin: io.stdin.as_deref_mut(),
        out: &to_stderr,
        env: io.env,
        cancel: io.cancel,
        tty: io.tty,
        fs: io.fs,
    };
    run_words(words, &mut sub).await
}
