//! The output of one run of a container's main process: a bounded ring of timestamped entries (stdout
//! and stderr interleaved, one entry per line or partial line), read as the kubelet reads container
//! logs (tail, since, timestamps, limit, follow), and forwarded live to attached clients.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};
use jiff::Timestamp;
use tokio::sync::watch;
use vk_runtime::LogOptions;
use vk_runtime::provider::OutputSender;

/// At most this many bytes of log are kept per run; older entries are dropped first.
pub const LOG_CAPACITY: usize = 1 << 20;

/// Which stream a piece of output was written to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Clone, Debug)]
struct Entry {
    ts: Timestamp,
    data: Bytes,
}

/// An attached client's (stdout, stderr).
type Subscriber = (Option<OutputSender>, Option<OutputSender>);

#[derive(Default)]
struct Ring {
    entries: VecDeque<Entry>,
    bytes: usize,
    /// Sequence number of `entries[0]`.
    first_seq: u64,
    /// The exit code once the run has ended.
    exit: Option<i32>,
    /// Attached clients: (stdout, stderr), output from now on.
    subscribers: Vec<Subscriber>,
}

/// Output of one run. Cheap while empty; shared between the process, log readers and attach sessions.
pub struct RunOutput {
    ring: Mutex<Ring>,
    /// Bumped on every append and on close; followers wait on it.
    changed: watch::Sender<()>,
}

impl Default for RunOutput {
    fn default() -> Self {
        Self {
            ring: Mutex::new(Ring::default()),
            changed: watch::Sender::new(()),
        }
    }
}

impl RunOutput {
    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record output (split into lines, each timestamped now) and forward it to attached clients.
    pub async fn write(&self, stream: Stream, data: Bytes) {
        if data.is_empty() {
            return;
        }
        let subscribers: Vec<OutputSender> = {
            let mut ring = self.lock();
            let ts = Timestamp::now();
            let mut rest = data.clone();
            while !rest.is_empty() {
                let end = rest
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(rest.len(), |i| i + 1);
                let line = rest.split_to(end);
                ring.bytes += line.len();
                ring.entries.push_back(Entry { ts, data: line });
            }
            while ring.bytes > LOG_CAPACITY {
                let Some(old) = ring.entries.pop_front() else {
                    break;
                };
                ring.bytes -= old.data.len();
                ring.first_seq += 1;
            }
            ring.subscribers.retain(|(o, e)| {
                o.as_ref().is_some_and(|s| !s.is_closed())
                    || e.as_ref().is_some_and(|s| !s.is_closed())
            });
            let pick = |(o, e): &Subscriber| match stream {
                Stream::Stdout => o.clone(),
                Stream::Stderr => e.clone(),
            };
            ring.subscribers.iter().filter_map(pick).collect()
        };
        self.changed.send_replace(());
        for s in subscribers {
            // A client that went away just stops receiving.
            let _ = s.send(data.clone()).await;
        }
    }

    /// Mark the run ended with `code`: followers finish, attach sessions return.
    pub fn close(&self, code: i32) {
        let mut ring = self.lock();
        if ring.exit.is_none() {
            ring.exit = Some(code);
            ring.subscribers.clear();
        }
        drop(ring);
        self.changed.send_replace(());
    }

    /// The exit code, once ended.
    pub fn exit_code(&self) -> Option<i32> {
        self.lock().exit
    }

    /// Wait until the run ends; its exit code.
    pub async fn wait(&self) -> i32 {
        let mut rx = self.changed.subscribe();
        loop {
            if let Some(code) = self.exit_code() {
                return code;
            }
            if rx.changed().await.is_err() {
                return self.exit_code().unwrap_or(0);
            }
        }
    }

    /// Readers following this run (log streams and waiters), for tests of their release.
    #[cfg(test)]
    pub fn followers(&self) -> usize {
        self.changed.receiver_count()
    }

    /// Forward later output to an attached client.
    pub fn subscribe(&self, stdout: Option<OutputSender>, stderr: Option<OutputSender>) {
        let mut ring = self.lock();
        if ring.exit.is_none() {
            ring.subscribers.push((stdout, stderr));
        }
    }

    /// Entries from sequence `from` on (clamped to what is kept), the next sequence and whether the run
    /// has ended.
    fn read_from(&self, from: u64) -> (Vec<Entry>, u64, bool) {
        let ring = self.lock();
        let skip = usize::try_from(from.saturating_sub(ring.first_seq)).unwrap_or(usize::MAX);
        let entries: Vec<Entry> = ring.entries.iter().skip(skip).cloned().collect();
        let next = ring.first_seq + ring.entries.len() as u64;
        (entries, next, ring.exit.is_some())
    }

    /// The log as the kubelet serves it: `tail_lines` of what is kept, then `since`, each entry with an
    /// RFC 3339 timestamp (nine fractional digits, as the kubelet prints them) when asked, cut at
    /// `limit_bytes`; with `follow`, streaming until the run ends.
    pub fn stream(
        self: &Arc<Self>,
        opts: &LogOptions,
    ) -> BoxStream<'static, std::io::Result<Bytes>> {
        let (mut entries, next, _) = self.read_from(0);
        if let Some(n) = opts.tail_lines {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            entries.drain(..entries.len().saturating_sub(n));
        }
        let state = Reader {
            run: self.clone(),
            rx: self.changed.subscribe(),
            pending: entries,
            next,
            remaining: opts
                .limit_bytes
                .map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
            opts: opts.clone(),
            done: false,
        };
        stream::unfold(state, Reader::next_chunk).boxed()
    }
}

struct Reader {
    run: Arc<RunOutput>,
    rx: watch::Receiver<()>,
    pending: Vec<Entry>,
    next: u64,
    remaining: Option<usize>,
    opts: LogOptions,
    done: bool,
}

impl Reader {
    async fn next_chunk(mut self) -> Option<(std::io::Result<Bytes>, Self)> {
        loop {
            if self.done || self.remaining == Some(0) {
                return None;
            }
            if !self.pending.is_empty() {
                let pending = std::mem::take(&mut self.pending);
                let chunk = self.render(pending);
                if !chunk.is_empty() {
                    return Some((Ok(chunk), self));
                }
                continue;
            }
            if !self.opts.follow {
                return None;
            }
            // Mark the current version seen before reading, so no append between the two is missed.
            self.rx.borrow_and_update();
            let (entries, next, ended) = self.run.read_from(self.next);
            self.next = next;
            if entries.is_empty() {
                // The sender lives in `run`, which this reader holds: `changed` only fails if it is gone.
                if ended || self.rx.changed().await.is_err() {
                    self.done = true;
                }
                continue;
            }
            self.pending = entries;
        }
    }

    fn render(&mut self, entries: Vec<Entry>) -> Bytes {
        let mut out = BytesMut::new();
        for e in entries {
            if self.opts.since.is_some_and(|since| e.ts < since) {
                continue;
            }
            if self.opts.timestamps {
                out.extend_from_slice(format_ts(e.ts).as_bytes());
                out.extend_from_slice(b" ");
            }
            out.extend_from_slice(&e.data);
        }
        if let Some(rem) = self.remaining.as_mut() {
            out.truncate(*rem);
            *rem -= out.len();
        }
        out.freeze()
    }
}

/// `2006-01-02T15:04:05.000000000Z`: RFC 3339 with nine fractional digits, the kubelet's log format.
pub fn format_ts(ts: Timestamp) -> String {
    format!(
        "{}.{:09}Z",
        ts.strftime("%Y-%m-%dT%H:%M:%S"),
        ts.subsec_nanosecond()
    )
}
