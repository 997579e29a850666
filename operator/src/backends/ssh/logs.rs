//! Container logs read over SSH, shaped to the kubelet's log options.
//!
//! The device prints a header (the log's size, where the requested part starts, the log's `idx` of
//! sizes over time and the run's finish time) and then the bytes; with `follow` it keeps printing
//! what is appended until the run ends. [`Shaper`] turns that into what `kubectl logs` expects:
//! `sinceTime` filtering and `timestamps` prefixes per line (a line's time is when the status poll first
//! saw it, so accurate to the poll interval; bytes that arrive while following are stamped on arrival),
//! and `limitBytes`.

use jiff::Timestamp;
use vk_runtime::LogOptions;

/// The header the device prints before the log bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Log size when the read started.
    pub size: u64,
    /// Offset of the first byte that follows.
    pub start: u64,
    /// (milliseconds since the epoch, log size then), ascending.
    pub idx: Vec<(i64, u64)>,
    /// When the run ended, in seconds, if it has.
    pub fin: Option<i64>,
}

impl Header {
    /// Split `buf` into the header and the bytes after it, once the `--` line has arrived.
    pub fn split(buf: &[u8]) -> Option<(Header, &[u8])> {
        let end = if buf.starts_with(b"--\n") {
            0
        } else {
            buf.windows(4).position(|w| w == b"\n--\n")? + 1
        };
        let text = String::from_utf8_lossy(&buf[..end]);
        let mut h = Header::default();
        for line in text.lines() {
            let mut w = line.split(' ');
            let kind = w.next();
            let a = w.next().and_then(|v| v.parse::<i64>().ok());
            let b = w.next().and_then(|v| v.parse::<u64>().ok());
            match (kind, a, b) {
                (Some("size"), Some(v), _) => h.size = u64::try_from(v).unwrap_or(0),
                (Some("start"), Some(v), _) => h.start = u64::try_from(v).unwrap_or(0),
                (Some("idx"), Some(ms), Some(sz)) => h.idx.push((ms, sz)),
                (Some("fin"), Some(s), _) => h.fin = Some(s),
                _ => {}
            }
        }
        Some((h, &buf[end + 3..]))
    }

    /// When the byte just before offset `end` was first seen (None: not yet indexed).
    fn time_of(&self, end: u64) -> Option<Timestamp> {
        let at = self
            .idx
            .iter()
            .find(|(_, sz)| *sz >= end)
            .map(|(ms, _)| *ms);
        at.and_then(|ms| Timestamp::from_millisecond(ms).ok())
            .or_else(|| self.fin.and_then(|s| Timestamp::from_second(s).ok()))
    }
}

/// Applies `sinceTime`, `timestamps` and `limitBytes` to a log's bytes as they arrive.
pub struct Shaper {
    header: Header,
    since: Option<Timestamp>,
    timestamps: bool,
    remaining: Option<u64>,
    offset: u64,
    line: Vec<u8>,
}

impl Shaper {
    pub fn new(header: Header, opts: &LogOptions) -> Self {
        Self {
            offset: header.start,
            header,
            since: opts.since,
            timestamps: opts.timestamps,
            remaining: opts.limit_bytes,
            line: Vec::new(),
        }
    }

    /// Whether `limitBytes` is used up: nothing more will be emitted.
    pub fn exhausted(&self) -> bool {
        self.remaining == Some(0)
    }

    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        let take = self.remaining.map_or(bytes.len(), |r| {
            bytes.len().min(usize::try_from(r).unwrap_or(usize::MAX))
        });
        out.extend_from_slice(&bytes[..take]);
        if let Some(r) = self.remaining.as_mut() {
            *r -= take as u64;
        }
    }

    fn line_time(&self, now: Timestamp) -> Timestamp {
        if self.offset > self.header.size {
            now
        } else {
            self.header.time_of(self.offset).unwrap_or(now)
        }
    }

    fn complete_line(&mut self, out: &mut Vec<u8>, now: Timestamp) {
        let line = std::mem::take(&mut self.line);
        let t = self.line_time(now);
        if self.since.is_some_and(|s| t < s) {
            return;
        }
        if self.timestamps {
            let stamp = format!("{} ", t.strftime("%Y-%m-%dT%H:%M:%S.%NZ"));
            self.emit(out, stamp.as_bytes());
        }
        self.emit(out, &line);
    }

    /// Shape the next bytes of the log.
    pub fn push(&mut self, data: &[u8], now: Timestamp) -> Vec<u8> {
        let mut out = Vec::new();
        if self.since.is_none() && !self.timestamps {
            self.offset += data.len() as u64;
            self.emit(&mut out, data);
            return out;
        }
        for &b in data {
            self.line.push(b);
            self.offset += 1;
            if b == b'\n' {
                self.complete_line(&mut out, now);
            }
        }
        out
    }

    /// The log ended: shape an unterminated last line.
    pub fn finish(&mut self, now: Timestamp) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            self.complete_line(&mut out, now);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> (Header, Vec<u8>) {
        let raw = b"size 14\nstart 0\nidx 1000 4\nidx 3000 14\nfin 5\n--\none\ntwo\nthree\n";
        let (h, rest) = Header::split(raw).unwrap();
        (h, rest.to_vec())
    }

    #[test]
    fn header_split() {
        let (h, rest) = header();
        assert_eq!(h.size, 14);
        assert_eq!(h.idx, vec![(1000, 4), (3000, 14)]);
        assert_eq!(h.fin, Some(5));
        assert_eq!(rest, b"one\ntwo\nthree\n");
        assert!(Header::split(b"size 3\n").is_none());
        assert_eq!(Header::split(b"--\nab").unwrap().1, b"ab");
    }

    #[test]
    fn timestamps_since_and_limit() {
        let (h, body) = header();
        let now = Timestamp::from_second(100).unwrap();
        let mut s = Shaper::new(
            h.clone(),
            &LogOptions {
                timestamps: true,
                ..Default::default()
            },
        );
        let out = String::from_utf8(s.push(&body, now)).unwrap();
        assert_eq!(
            out,
            "1970-01-01T00:00:01.000000000Z one\n1970-01-01T00:00:03.000000000Z two\n1970-01-01T00:00:03.000000000Z three\n"
        );
        let since = Some(Timestamp::from_second(2).unwrap());
        let mut s = Shaper::new(
            h.clone(),
            &LogOptions {
                since,
                ..Default::default()
            },
        );
        assert_eq!(s.push(&body, now), b"two\nthree\n");
        let mut s = Shaper::new(
            h.clone(),
            &LogOptions {
                limit_bytes: Some(5),
                ..Default::default()
            },
        );
        assert_eq!(s.push(&body[..2], now), b"on");
        assert_eq!(s.push(&body[2..], now), b"e\nt");
        assert!(s.exhausted());
        let mut s = Shaper::new(
            h,
            &LogOptions {
                timestamps: true,
                ..Default::default()
            },
        );
        let out = s.push(b"one\nfollowed", now);
        assert!(out.starts_with(b"1970-01-01T00:00:01"));
        let tail = String::from_utf8(s.finish(now)).unwrap();
        assert!(
            tail.starts_with("1970-01-01T00:00:03") && tail.ends_with(" followed"),
            "{tail}"
        );
        let mut beyond = Shaper::new(
            Header {
                size: 2,
                ..Default::default()
            },
            &LogOptions {
                timestamps: true,
                ..Default::default()
            },
        );
        let out = String::from_utf8(beyond.push(b"new\n", now)).unwrap();
        assert!(out.starts_with("1970-01-01T00:01:40"), "{out}");
    }
}
