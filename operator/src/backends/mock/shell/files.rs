//! Builtins on the container's filesystem ([`crate::backends::mock::fs`]): `cat [FILE|-]...`,
//! `test`/`[` (`-d`, `-f`, `-e`, `-s`, `-n`, `-z`, `=`, `!=`, `!`) and `tar` (see [`tar`]).

use bytes::Bytes;

use super::tar::{self as tarball, MAX_ARCHIVE, Op, TarError};
use super::{Io, KILLED, Stream};
use crate::backends::mock::fs::{self, MemFs, Node};

/// `cat`: each FILE in turn, `-` (or no argument) for standard input.
pub(super) async fn cat(args: &[String], io: &mut Io<'_>) -> i32 {
    let stdin = ["-".to_string()];
    let files = if args.is_empty() { &stdin[..] } else { args };
    let mut code = 0;
    for file in files {
        if file == "-" {
            while let Some(chunk) = io.read().await {
                io.out.write(Stream::Stdout, chunk).await;
            }
            if io.cancel.is_cancelled() {
                return KILLED;
            }
            continue;
        }
        let data = fs::lock(io.fs).read(file);
        match data {
            Ok(data) => io.out.write(Stream::Stdout, data).await,
            Err(e) => {
                io.eprint(format!("cat: {file}: {e}\n")).await;
                code = 1;
            }
        }
    }
    code
}

/// `test ARGS` (or `[ ARGS ]`): `Ok(true)` exits 0, `Ok(false)` 1, `Err` 2 with the message.
pub fn test(args: &[String], fs: &MemFs) -> Result<bool, String> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["!", rest @ ..] => {
            test(&rest.iter().map(|s| s.to_string()).collect::<Vec<_>>(), fs).map(|b| !b)
        }
        [] => Ok(false),
        [s] => Ok(!s.is_empty()),
        ["-n", s] => Ok(!s.is_empty()),
        ["-z", s] => Ok(s.is_empty()),
        ["-e", p] => Ok(fs.get(p).is_some()),
        ["-d", p] => Ok(fs.get(p).is_some_and(Node::is_dir)),
        ["-f", p] => Ok(fs.get(p).is_some_and(|n| !n.is_dir())),
        ["-s", p] => Ok(matches!(fs.get(p), Some(Node::File { data, .. }) if !data.is_empty())),
        [x, "=", y] => Ok(x == y),
        [x, "!=", y] => Ok(x != y),
        _ => Err(format!(
            "test: the Mock's test does not know the expression '{}'",
            a.join(" ")
        )),
    }
}

pub(super) async fn test_builtin(name: &str, args: &[String], io: &mut Io<'_>) -> i32 {
    let args = match (name, args.split_last()) {
        ("[", Some((last, rest))) if last == "]" => rest,
        ("[", _) => {
            io.eprint("[: missing ]\n").await;
            return 2;
        }
        _ => args,
    };
    let result = test(args, &fs::lock(io.fs));
    match result {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(msg) => {
            io.eprint(format!("{msg}\n")).await;
            2
        }
    }
}

fn now() -> u64 {
    u64::try_from(jiff::Timestamp::now().as_second()).unwrap_or(0)
}

/// Standard input up to [`MAX_ARCHIVE`] bytes.
async fn read_archive(io: &mut Io<'_>) -> Result<Vec<u8>, TarError> {
    let mut archive = Vec::new();
    while let Some(chunk) = io.read().await {
        if (archive.len() + chunk.len()) as u64 > MAX_ARCHIVE {
            return Err(TarError::TooLarge);
        }
        archive.extend_from_slice(&chunk);
    }
    if archive.is_empty() {
        return Err(TarError::Corrupt("empty input".into()));
    }
    Ok(archive)
}

fn complaints(errors: &[String]) -> String {
    errors.iter().map(|e| format!("tar: {e}\n")).collect()
}

/// `tar`: parse, then create (archive to stdout) or extract/list (archive from stdin). Exits 2 on
/// any error, after doing what it could, like GNU tar. Like GNU tar, creation reports a member it
/// cannot read before the archive goes out (tar buffers its output and writes it at the end), and
/// the final "Exiting with failure status" after it.
pub(super) async fn tar(args: &[String], io: &mut Io<'_>) -> i32 {
    let args = match tarball::parse(args) {
        Ok(a) => a,
        Err(e) => {
            io.eprint(format!("tar: {e}\n")).await;
            return 2;
        }
    };
    let (names, errors) = if args.op == Op::Create {
        let made = tarball::create(&fs::lock(io.fs), &args);
        if args.verbose {
            io.eprint(
                made.names
                    .iter()
                    .map(|n| format!("{n}\n"))
                    .collect::<String>(),
            )
            .await;
        }
        if !made.errors.is_empty() {
            io.eprint(complaints(&made.errors)).await;
        }
        let archive = Bytes::from(made.archive);
        for start in (0..archive.len()).step_by(64 * 1024) {
            let end = (start + 64 * 1024).min(archive.len());
            io.out
                .write(Stream::Stdout, archive.slice(start..end))
                .await;
        }
        (Vec::new(), made.errors)
    } else {
        let read = read_archive(io).await;
        if io.cancel.is_cancelled() {
            return KILLED;
        }
        let done = read.and_then(|ar| tarball::extract(&mut fs::lock(io.fs), &ar, &args, now()));
        match done {
            Ok(x) => (x.names, x.errors),
            Err(e) => {
                io.eprint(format!("tar: {e}\n")).await;
                return 2;
            }
        }
    };
    if args.op == Op::List || args.verbose {
        io.print(names.iter().map(|n| format!("{n}\n")).collect::<String>())
            .await;
    }
    if errors.is_empty() {
        return 0;
    }
    // Creation reported its complaints as they happened.
    let mut msg = if args.op == Op::Create {
        String::new()
    } else {
        complaints(&errors)
    };
    msg.push_str("tar: Exiting with failure status due to previous errors\n");
    io.eprint(msg).await;
    2
}
