//! One scheduler for every node's heartbeat: a timer wheel (tokio-util's DelayQueue) instead of a task and
//! a timer per node. Each due node gets a short task that renews its Lease and, when needed, reports its
//! status; the next beat is scheduled when that task ends (jittered interval on success, short backoff on
//! failure, so leases are renewed as soon as the API answers again).
//!
//! Heartbeats use their own API client (connection pool) and never wait for pod work.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use rand::Rng;
use tokio::sync::mpsc;
use tokio_util::time::{DelayQueue, delay_queue};

/// Something that beats: a virtual node.
#[async_trait]
pub trait Beat: Send + Sync + 'static {
    /// Renew the lease and report status if due. `true` when the lease was renewed.
    async fn beat(&self) -> bool;
}

enum Cmd {
    Add(String, Arc<dyn Beat>),
    Remove(String),
    Kick(String),
}

/// Handle to the shared heartbeat scheduler.
#[derive(Clone)]
pub struct Heartbeats {
    tx: mpsc::UnboundedSender<Cmd>,
}

/// Retry schedule while the API does not answer: 250 ms doubling to 2 s, jittered.
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(2);

impl Heartbeats {
    /// Start the scheduler; it runs until every handle is dropped.
    pub fn start(interval: Duration, jitter: f64) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, interval, jitter));
        Self { tx }
    }

    /// Beat `target` now and then every interval, until removed.
    pub fn add(&self, name: &str, target: Arc<dyn Beat>) {
        let _ = self.tx.send(Cmd::Add(name.to_string(), target));
    }

    /// Stop beating `name`. A beat already running finishes.
    pub fn remove(&self, name: &str) {
        let _ = self.tx.send(Cmd::Remove(name.to_string()));
    }

    /// Beat `name` now instead of at its scheduled time (or, if a beat is running, as soon as it ends):
    /// something it waited for arrived, e.g. the node's client certificate. Unknown names are ignored.
    pub fn kick(&self, name: &str) {
        let _ = self.tx.send(Cmd::Kick(name.to_string()));
    }
}

struct Entry {
    target: Arc<dyn Beat>,
    key: Option<delay_queue::Key>,
    failures: u32,
    generation: u64,
    /// Kicked while its beat ran: beat again at once when it ends.
    kicked: bool,
}

async fn run(mut rx: mpsc::UnboundedReceiver<Cmd>, interval: Duration, jitter: f64) {
    let mut queue: DelayQueue<(String, u64)> = DelayQueue::new();
    let mut entries: HashMap<String, Entry> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, u64, bool)>();
    let mut next_generation = 0u64;
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => return,
                Some(Cmd::Add(name, target)) => {
                    if let Some(old) = entries.remove(&name)
                        && let Some(k) = old.key { queue.remove(&k); }
                    next_generation += 1;
                    let key = queue.insert((name.clone(), next_generation), Duration::ZERO);
                    entries.insert(name, Entry { target, key: Some(key), failures: 0, generation: next_generation, kicked: false });
                }
                Some(Cmd::Remove(name)) => {
                    if let Some(old) = entries.remove(&name)
                        && let Some(k) = old.key { queue.remove(&k); }
                }
                Some(Cmd::Kick(name)) => {
                    if let Some(entry) = entries.get_mut(&name) {
                        match &entry.key {
                            Some(k) => queue.reset(k, Duration::ZERO),
                            None => entry.kicked = true,
                        }
                    }
                }
            },
            Some(expired) = queue.next(), if !queue.is_empty() => {
                let (name, generation) = expired.into_inner();
                let Some(entry) = entries.get_mut(&name) else { continue };
                if entry.generation != generation { continue; }
                entry.key = None;
                let target = entry.target.clone();
                let done = done_tx.clone();
                tokio::spawn(async move {
                    let ok = target.beat().await;
                    let _ = done.send((name, generation, ok));
                });
            }
            Some((name, generation, ok)) = done_rx.recv() => {
                let Some(entry) = entries.get_mut(&name) else { continue };
                if entry.generation != generation || entry.key.is_some() { continue; }
                let delay = if std::mem::take(&mut entry.kicked) {
                    if ok { entry.failures = 0; }
                    Duration::ZERO
                } else if ok {
                    entry.failures = 0;
                    jittered(interval, jitter)
                } else {
                    entry.failures = entry.failures.saturating_add(1);
                    let backoff = RETRY_MIN.saturating_mul(1u32 << entry.failures.min(4)).min(RETRY_MAX);
                    jittered(backoff, 0.5)
                };
                entry.key = Some(queue.insert((name, generation), delay));
            }
        }
    }
}

/// `base` plus up to `fraction * base` of random jitter (never less than `base`).
pub fn jittered(base: Duration, fraction: f64) -> Duration {
    let extra = rand::rng().random_range(0.0..=fraction.max(0.0));
    base.mul_f64(1.0 + extra)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Counter(AtomicU32, bool);

    #[async_trait]
    impl Beat for Counter {
        async fn beat(&self) -> bool {
            self.0.fetch_add(1, Ordering::SeqCst);
            self.1
        }
    }

    #[tokio::test(start_paused = true)]
    async fn beats_on_schedule_and_stops_when_removed() {
        let hb = Heartbeats::start(Duration::from_secs(10), 0.0);
        let c = Arc::new(Counter(AtomicU32::new(0), true));
        hb.add("a", c.clone());
        // Paused time auto-advances while every task waits on a timer.
        tokio::time::sleep(Duration::from_millis(35_500)).await;
        assert_eq!(c.0.load(Ordering::SeqCst), 4, "beats at 0, 10, 20, 30 s");
        hb.remove("a");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(c.0.load(Ordering::SeqCst), 4);
    }

    /// Fails until told to succeed; counts beats.
    struct Waiting(AtomicU32, std::sync::atomic::AtomicBool);

    #[async_trait]
    impl Beat for Waiting {
        async fn beat(&self) -> bool {
            self.0.fetch_add(1, Ordering::SeqCst);
            self.1.load(Ordering::SeqCst)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_kick_beats_at_once_instead_of_after_the_backoff() {
        let hb = Heartbeats::start(Duration::from_secs(10), 0.0);
        let w = Arc::new(Waiting(AtomicU32::new(0), false.into()));
        hb.add("a", w.clone());
        // Failing beats back off to RETRY_MAX (2 s, up to 3 s jittered). Right after a failed beat the
        // next one is at least 2 s away.
        tokio::time::sleep(Duration::from_secs(8)).await;
        let seen = w.0.load(Ordering::SeqCst);
        while w.0.load(Ordering::SeqCst) == seen {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let before = w.0.load(Ordering::SeqCst);
        w.1.store(true, Ordering::SeqCst);
        hb.kick("a");
        hb.kick("unknown");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            w.0.load(Ordering::SeqCst),
            before + 1,
            "the kicked node beat within 10 ms, not after its backoff"
        );
        // Then the normal interval again: no beat in the next 9 s.
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert_eq!(w.0.load(Ordering::SeqCst), before + 1);
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let base = Duration::from_secs(10);
        let samples: Vec<Duration> = (0..1000).map(|_| jittered(base, 0.04)).collect();
        for d in &samples {
            assert!(
                *d >= base && *d <= base.mul_f64(1.04),
                "{d:?} outside [10 s, 10.4 s]"
            );
        }
        assert!(
            samples.iter().any(|d| *d != samples[0]),
            "jitter spreads renewals: every sample was {:?}",
            samples[0]
        );
        // No jitter, or a nonsensical negative fraction: exactly the base.
        assert_eq!(jittered(base, 0.0), base);
        assert_eq!(jittered(base, -0.5), base);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_retry_quickly() {
        let hb = Heartbeats::start(Duration::from_secs(10), 0.0);
        let c = Arc::new(Counter(AtomicU32::new(0), false));
        hb.add("a", c.clone());
        tokio::time::sleep(Duration::from_secs(10)).await;
        let n = c.0.load(Ordering::SeqCst);
        assert!(
            n >= 5,
            "a failing beat retries within seconds, got {n} in 10 s"
        );
    }
}
