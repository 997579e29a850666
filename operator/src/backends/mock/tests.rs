#![allow(clippy::unwrap_used)]
//! Unit tests of the mock: the command interpreter, log options, and the provider (the shared
//! conformance suite plus mock-only behaviour: exitAfterMs, live updates, attach, port-forward, stats).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetlet_crds::MockBackend;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vk_runtime::provider::{OutputChunk, OutputStream, output_channel};
use vk_runtime::testing::{ConformanceConfig, conformance};
use vk_runtime::{LogOptions, Provider};

use super::MockProvider;
use super::fs::{self, SharedFs};
use super::logs::{RunOutput, Stream, format_ts};
use super::shell::{
    Io, Join, SessionOutput, SleepFor, parse_sleep, run_argv, split_commands, split_pipeline,
    split_words,
};

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Run `a` with `stdin` (then EOF) in a fresh filesystem; (exit code, stdout, stderr).
async fn sh(a: &[&str], stdin: Option<&str>, env: &[(String, String)]) -> (i32, String, String) {
    let (code, out, err) = sh_in(&fs::shared(), a, stdin.map(str::as_bytes), env).await;
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (code, text(out), text(err))
}

/// Run `a` with `stdin` (then EOF) in filesystem `fs`; the exit code and the output in the order
/// it was written.
pub(super) async fn sh_ordered(
    fs: &SharedFs,
    a: &[&str],
    stdin: Option<&[u8]>,
    env: &[(String, String)],
) -> (i32, Vec<OutputChunk>) {
    let (stdout, stderr, mut output) = output_channel(64, true, true);
    let out = SessionOutput {
        stdout,
        stderr,
        tty: false,
    };
    let mut input = stdin.map(|s| {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Bytes::copy_from_slice(s)).unwrap();
        rx
    });
    let cancel = CancellationToken::new();
    // Output is collected while the command runs: a large one must not fill the queue.
    let run = async move {
        let mut io = Io {
            stdin: input.as_mut(),
            out: &out,
            env,
            cancel: &cancel,
            tty: false,
            fs,
        };
        run_argv(&argv(a), &mut io).await
    };
    let collect = async move {
        let mut chunks = Vec::new();
        while let Some(chunk) = output.recv().await {
            chunks.push(chunk);
        }
        chunks
    };
    tokio::join!(run, collect)
}

/// Run `a` with `stdin` (then EOF) in filesystem `fs`; (exit code, stdout, stderr) as bytes.
pub(super) async fn sh_in(
    fs: &SharedFs,
    a: &[&str],
    stdin: Option<&[u8]>,
    env: &[(String, String)],
) -> (i32, Vec<u8>, Vec<u8>) {
    let (code, chunks) = sh_ordered(fs, a, stdin, env).await;
    let (mut o, mut e) = (Vec::new(), Vec::new());
    for (stream, c) in chunks {
        match stream {
            OutputStream::Stdout => o.extend_from_slice(&c),
            OutputStream::Stderr => e.extend_from_slice(&c),
        }
    }
    (code, o, e)
}

/// `loggen 1K`: ten 100-byte lines and 24 bytes of an eleventh.
static LOGGEN_1K: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let line = format!("{}\n", "x".repeat(99));
    format!("{}{}", line.repeat(10), &line[..24])
});

#[tokio::test]
async fn interpreter_commands() {
    let env = vec![
        ("A".to_string(), "1".to_string()),
        ("B".to_string(), "two words".to_string()),
    ];
    // (argv, stdin, exit code, stdout, stderr)
    type Case<'a> = (&'a [&'a str], Option<&'a str>, i32, &'a str, &'a str);
    let cases: &[Case] = &[
        (&["echo", "hello", "world"], None, 0, "hello world\n", ""),
        (&["/bin/echo", "-n", "x"], None, 0, "x", ""),
        (&["cat"], Some("in\nput"), 0, "in\nput", ""),
        (&["cat"], None, 0, "", ""),
        (
            &["cat", "/etc/passwd"],
            None,
            1,
            "",
            "cat: /etc/passwd: No such file or directory\n",
        ),
        (&["env"], None, 0, "A=1\nB=two words\n", ""),
        (&["true"], None, 0, "", ""),
        (&["false"], None, 1, "", ""),
        (&["exit", "300"], None, 44, "", ""),
        (&["sleep", "0"], None, 0, "", ""),
        (
            &["sleep", "x"],
            None,
            1,
            "",
            "sleep: invalid time interval 'x'\n",
        ),
        (&["ls", "-l"], None, 127, "", "ls: command not found\n"),
        (&["loggen", "7", "4"], None, 0, "xxx\nxxx", ""),
        (&["loggen", "1K"], None, 0, LOGGEN_1K.as_str(), ""),
        (
            &["loggen", "1", "0"],
            None,
            2,
            "",
            "usage: loggen BYTES[K|M|G] [LINE_BYTES (1..1048576)]\n",
        ),
        (&["sh", "-c", "echo a; exit 4; echo b"], None, 4, "a\n", ""),
        (
            &["sh", "-c", "false && echo no || echo yes; echo $?"],
            None,
            0,
            "yes\n0\n",
            "",
        ),
        (
            &["sh", "-c", "echo \"$B\" '$A' ${A}x $NOPE."],
            None,
            0,
            "two words $A 1x .\n",
            "",
        ),
        (
            &["sh", "-c", "echo err >&2; sh -c 'exit 3'; echo $?"],
            None,
            0,
            "3\n",
            "err\n",
        ),
        (
            &["sh", "-c", "nope; echo after"],
            None,
            0,
            "after\n",
            "nope: command not found\n",
        ),
        (
            &["sh"],
            Some("echo one\nexit 5\necho never\n"),
            5,
            "one\n",
            "",
        ),
    ];
    for (a, stdin, code, out, err) in cases {
        let got = sh(a, *stdin, &env).await;
        assert_eq!(got, (*code, out.to_string(), err.to_string()), "{a:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn sleep_is_interrupted_by_cancel() {
    let out = SessionOutput {
        stdout: None,
        stderr: None,
        tty: false,
    };
    let cancel = CancellationToken::new();
    let fs = fs::shared();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        c2.cancel();
    });
    let mut io = Io {
        stdin: None,
        out: &out,
        env: &[],
        cancel: &cancel,
        tty: false,
        fs: &fs,
    };
    let start = tokio::time::Instant::now();
    assert_eq!(run_argv(&argv(&["sleep", "infinity"]), &mut io).await, 137);
    assert_eq!(start.elapsed(), Duration::from_secs(5));
}

#[test]
fn parsing() {
    let d = |d| Some(SleepFor::Duration(d));
    assert_eq!(parse_sleep("1.5"), d(Duration::from_millis(1500)));
    assert_eq!(parse_sleep("2m"), d(Duration::from_secs(120)));
    assert_eq!(parse_sleep("infinity"), Some(SleepFor::Forever));
    assert_eq!(parse_sleep("-1"), None);
    assert_eq!(parse_sleep("x"), None);
    let cmds = split_commands("a 'x;y'; b && c || d\ne");
    let joins: Vec<Join> = cmds.iter().map(|(j, _)| *j).collect();
    assert_eq!(
        joins,
        [
            Join::Always,
            Join::Always,
            Join::And,
            Join::Or,
            Join::Always
        ]
    );
    assert_eq!(cmds[0].1, "a 'x;y'");
    assert_eq!(
        split_words("a  'b c' \"\" d\\ e $X", &[], 0),
        ["a", "b c", "", "d e"]
    );
    assert_eq!(
        split_pipeline("tar cf - 'a|b' | tail -c+1 \\| x"),
        ["tar cf - 'a|b' ", " tail -c+1 \\| x"]
    );
    assert_eq!(split_pipeline("echo a"), ["echo a"]);
}

fn opts() -> LogOptions {
    LogOptions::default()
}

async fn read(run: &Arc<RunOutput>, o: LogOptions) -> String {
    let chunks: Vec<_> = run.stream(&o).collect().await;
    String::from_utf8(
        chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect(),
    )
    .unwrap()
}

#[tokio::test]
async fn log_options() {
    let run = Arc::new(RunOutput::default());
    run.write(Stream::Stdout, Bytes::from_static(b"one\ntwo\n"))
        .await;
    let mid = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_millis(2)).await;
    run.write(Stream::Stderr, Bytes::from_static(b"three\npart"))
        .await;
    run.close(0);
    assert_eq!(read(&run, opts()).await, "one\ntwo\nthree\npart");
    assert_eq!(
        read(
            &run,
            LogOptions {
                tail_lines: Some(2),
                ..opts()
            }
        )
        .await,
        "three\npart"
    );
    assert_eq!(
        read(
            &run,
            LogOptions {
                tail_lines: Some(0),
                ..opts()
            }
        )
        .await,
        ""
    );
    assert_eq!(
        read(
            &run,
            LogOptions {
                limit_bytes: Some(6),
                ..opts()
            }
        )
        .await,
        "one\ntw"
    );
    assert_eq!(
        read(
            &run,
            LogOptions {
                since: Some(mid),
                ..opts()
            }
        )
        .await,
        "three\npart"
    );
    let stamped = read(
        &run,
        LogOptions {
            timestamps: true,
            tail_lines: Some(1),
            ..opts()
        },
    )
    .await;
    let (ts, rest) = stamped.split_once(' ').unwrap();
    assert_eq!(rest, "part");
    assert_eq!(ts.len(), "2006-01-02T15:04:05.000000000Z".len(), "{ts}");
    assert!(ts.parse::<jiff::Timestamp>().is_ok());
    assert_eq!(
        format_ts("2024-01-02T03:04:05.5Z".parse().unwrap()),
        "2024-01-02T03:04:05.500000000Z"
    );
}

/// A client that leaves a `logs -f` drops its stream: nothing of it stays subscribed to the run.
#[tokio::test]
async fn a_dropped_follow_stream_releases_the_run() {
    let run = Arc::new(RunOutput::default());
    run.write(Stream::Stdout, Bytes::from_static(b"a\n")).await;
    let mut follow = run.stream(&LogOptions {
        follow: true,
        ..opts()
    });
    let first = tokio::time::timeout(Duration::from_secs(5), follow.next())
        .await
        .unwrap();
    assert_eq!(first.unwrap().unwrap(), Bytes::from_static(b"a\n"));
    assert_eq!((run.followers(), Arc::strong_count(&run)), (1, 2));
    drop(follow);
    assert_eq!(
        (run.followers(), Arc::strong_count(&run)),
        (0, 1),
        "the dropped follower left nothing behind"
    );
}

#[tokio::test]
async fn log_follow_streams_until_close_and_ring_is_bounded() {
    let run = Arc::new(RunOutput::default());
    run.write(Stream::Stdout, Bytes::from_static(b"a\n")).await;
    let follower = tokio::spawn({
        let run = run.clone();
        async move {
            read(
                &run,
                LogOptions {
                    follow: true,
                    ..opts()
                },
            )
            .await
        }
    });
    tokio::task::yield_now().await;
    run.write(Stream::Stdout, Bytes::from_static(b"b\n")).await;
    run.close(3);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .unwrap()
            .unwrap(),
        "a\nb\n"
    );
    assert_eq!(run.wait().await, 3);

    let big = Arc::new(RunOutput::default());
    let line = Bytes::from(
        vec![b'x'; 1023]
            .into_iter()
            .chain([b'\n'])
            .collect::<Vec<u8>>(),
    );
    for _ in 0..2000 {
        big.write(Stream::Stdout, line.clone()).await;
    }
    big.close(0);
    assert_eq!(read(&big, opts()).await.len(), super::logs::LOG_CAPACITY);
}

#[tokio::test]
async fn mock_passes_conformance() {
    let p: Arc<dyn Provider> = Arc::new(MockProvider::new(&MockBackend::default(), "node-a"));
    conformance(p, &ConformanceConfig::default()).await.unwrap();
}
