//! Builtins that work on streams and time: `sleep`, `loggen` and `tail -c` (what `kubectl cp
//! --retries` runs after `tar`).

use bytes::{Bytes, BytesMut};

use super::{Io, KILLED, SleepFor, Stream, parse_sleep};
use crate::backends::mock::fs;

pub(super) async fn sleep(args: &[String], io: &mut Io<'_>) -> i32 {
    let Some(arg) = args.first() else {
        io.eprint("sleep: missing operand\n").await;
        return 1;
    };
    match parse_sleep(arg) {
        None => {
            io.eprint(format!("sleep: invalid time interval '{arg}'\n"))
                .await;
            1
        }
        Some(SleepFor::Forever) => {
            io.cancel.cancelled().await;
            KILLED
        }
        Some(SleepFor::Duration(d)) => tokio::select! {
            () = tokio::time::sleep(d) => 0,
            () = io.cancel.cancelled() => KILLED,
        },
    }
}

/// `256M` -> bytes (K, M, G: powers of 1024; a plain number is bytes).
fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.char_indices().last()? {
        (i, 'K' | 'k') => (&s[..i], 1 << 10),
        (i, 'M' | 'm') => (&s[..i], 1 << 20),
        (i, 'G' | 'g') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// `loggen BYTES [LINE]`: exactly BYTES of output in LINE-byte lines (`x`s and a newline; the last line
/// may be short), written about 64 KiB at a time with a yield in between so readers keep up.
pub(super) async fn loggen(args: &[String], io: &mut Io<'_>) -> i32 {
    const MAX_LINE: usize = 1 << 20;
    let total = args.first().and_then(|a| parse_size(a));
    let line = args.get(1).map_or(Some(100), |a| a.parse::<usize>().ok());
    let (Some(total), Some(line @ 1..=MAX_LINE)) = (total, line) else {
        io.eprint("usage: loggen BYTES[K|M|G] [LINE_BYTES (1..1048576)]\n")
            .await;
        return 2;
    };
    let mut one = vec![b'x'; line];
    one[line - 1] = b'\n';
    let chunk = Bytes::from(one.repeat((64 * 1024 / line).max(1)));
    let mut left = total;
    while left > 0 {
        if io.cancel.is_cancelled() {
            return KILLED;
        }
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(chunk.len());
        io.out.write(Stream::Stdout, chunk.slice(..n)).await;
        left -= n as u64;
        tokio::task::yield_now().await;
    }
    0
}

/// Which bytes `tail -c` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailFrom {
    /// `-c +N`: from byte N on (1-based; `+0` is the whole input).
    Start(u64),
    /// `-c N`: the last N bytes.
    Last(u64),
}

/// `tail -c+N`, `-c +N`, `-c N`, `-cN` and an optional file; the error is the message to print.
pub fn parse_tail(args: &[String]) -> Result<(TailFrom, Option<String>), String> {
    let mut it = args.iter();
    let (mut from, mut file) = (None, None);
    while let Some(a) = it.next() {
        if let Some(rest) = a.strip_prefix("-c") {
            let v = if rest.is_empty() {
                it.next()
                    .ok_or("tail: option requires an argument -- 'c'")?
            } else {
                rest
            };
            let bad = || format!("tail: invalid number of bytes: '{v}'");
            from = Some(match v.strip_prefix('+') {
                Some(n) => TailFrom::Start(n.parse().map_err(|_| bad())?),
                None => TailFrom::Last(v.trim_start_matches('-').parse().map_err(|_| bad())?),
            });
        } else if a.starts_with('-') && a != "-" {
            return Err(format!("tail: the Mock's tail knows only -c (got '{a}')"));
        } else if file.replace(a.clone()).is_some() {
            return Err("tail: the Mock's tail reads one input".into());
        }
    }
    let from = from.ok_or("tail: the Mock's tail needs -c")?;
    Ok((from, file.filter(|f| f != "-")))
}

/// `tail -c` over chunks: [`TailFrom::Start`] streams, [`TailFrom::Last`] keeps at most N bytes.
pub struct Tail {
    from: TailFrom,
    seen: u64,
    kept: BytesMut,
}

impl Tail {
    pub fn new(from: TailFrom) -> Self {
        Self {
            from,
            seen: 0,
            kept: BytesMut::new(),
        }
    }

    /// What to print now for `chunk`.
    pub fn push(&mut self, chunk: Bytes) -> Option<Bytes> {
        let start = self.seen;
        self.seen += chunk.len() as u64;
        match self.from {
            TailFrom::Start(n) => {
                let skip = n.saturating_sub(1).saturating_sub(start);
                let skip = usize::try_from(skip).unwrap_or(usize::MAX).min(chunk.len());
                Some(chunk.slice(skip..)).filter(|b| !b.is_empty())
            }
            TailFrom::Last(n) => {
                self.kept.extend_from_slice(&chunk);
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if self.kept.len() > n {
                    let _ = self.kept.split_to(self.kept.len() - n);
                }
                None
            }
        }
    }

    /// What to print at the end of the input.
    pub fn finish(self) -> Option<Bytes> {
        Some(self.kept.freeze()).filter(|b| !b.is_empty())
    }
}

pub(super) async fn tail(args: &[String], io: &mut Io<'_>) -> i32 {
    let (from, file) = match parse_tail(args) {
        Ok(p) => p,
        Err(msg) => {
            io.eprint(format!("{msg}\n")).await;
            return 1;
        }
    };
    let mut t = Tail::new(from);
    if let Some(file) = file {
        let data = fs::lock(io.fs).read(&file);
        match data {
            Ok(data) => {
                if let Some(out) = t.push(data) {
                    io.out.write(Stream::Stdout, out).await;
                }
            }
            Err(e) => {
                io.eprint(format!("tail: cannot open '{file}' for reading: {e}\n"))
                    .await;
                return 1;
            }
        }
    } else {
        while let Some(chunk) = io.read().await {
            if let Some(out) = t.push(chunk) {
                io.out.write(Stream::Stdout, out).await;
            }
        }
        if io.cancel.is_cancelled() {
            return KILLED;
        }
    }
    if let Some(out) = t.finish() {
        io.out.write(Stream::Stdout, out).await;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(from: TailFrom, chunks: &[&'static [u8]]) -> Vec<u8> {
        let mut t = Tail::new(from);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(t.push(Bytes::from_static(c)).unwrap_or_default());
        }
        out.extend(t.finish().unwrap_or_default());
        out
    }

    #[test]
    fn tail_bytes() {
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_tail(&s(&["-c+5"])), Ok((TailFrom::Start(5), None)));
        assert_eq!(
            parse_tail(&s(&["-c", "+0", "/tmp/f"])),
            Ok((TailFrom::Start(0), Some("/tmp/f".into())))
        );
        assert_eq!(parse_tail(&s(&["-c3"])), Ok((TailFrom::Last(3), None)));
        assert!(parse_tail(&s(&["-n", "3"])).is_err());
        assert!(parse_tail(&s(&["-c", "x"])).is_err());
        assert!(parse_tail(&s(&[])).is_err());
        let chunks: &[&'static [u8]] = &[b"abc", b"def", b"g"];
        assert_eq!(tail_of(TailFrom::Start(0), chunks), b"abcdefg");
        assert_eq!(tail_of(TailFrom::Start(1), chunks), b"abcdefg");
        assert_eq!(tail_of(TailFrom::Start(5), chunks), b"efg");
        assert_eq!(tail_of(TailFrom::Start(99), chunks), b"");
        assert_eq!(tail_of(TailFrom::Last(4), chunks), b"defg");
        assert_eq!(tail_of(TailFrom::Last(0), chunks), b"");
    }
}
