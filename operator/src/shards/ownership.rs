//! Which shards this process holds, as reconcilers see it. Taking and dropping shards and starting a
//! node happen under one lock, so a reconcile can never start a node of a shard that was just dropped
//! (the drop would miss it, and two replicas would write for it).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use super::shard_of;

/// Shared view of the held shards. Without sharding (`shards == 1`, [`Ownership::everything`]) the
/// single shard is always held.
#[derive(Clone)]
pub struct Ownership {
    inner: Arc<Inner>,
}

struct Inner {
    shards: u32,
    held: Mutex<BTreeSet<u32>>,
}

/// Held while a reconcile starts a node: the shard set cannot change meanwhile.
pub struct Held<'a> {
    guard: MutexGuard<'a, BTreeSet<u32>>,
    shards: u32,
}

impl Held<'_> {
    /// Whether the object `name` belongs to a held shard.
    pub fn owns(&self, name: &str) -> bool {
        self.guard.contains(&shard_of(name, self.shards))
    }
}

impl Ownership {
    /// Unsharded: one shard, always held.
    pub fn everything() -> Self {
        Self::sharded(1, [0].into())
    }

    /// `shards` shards, of which `held` are held at first (none, normally).
    pub fn sharded(shards: u32, held: BTreeSet<u32>) -> Self {
        Self {
            inner: Arc::new(Inner {
                shards: shards.max(1),
                held: Mutex::new(held),
            }),
        }
    }

    pub fn shards(&self) -> u32 {
        self.inner.shards
    }

    /// Lock the shard set (briefly: nothing async while it is held).
    pub fn lock(&self) -> Held<'_> {
        Held {
            guard: self.inner.held.lock().unwrap_or_else(|e| e.into_inner()),
            shards: self.inner.shards,
        }
    }

    /// Whether `name` belongs to a held shard right now.
    pub fn owns(&self, name: &str) -> bool {
        self.lock().owns(name)
    }

    /// The held shards.
    pub fn held(&self) -> BTreeSet<u32> {
        self.lock().guard.clone()
    }

    /// Start holding `shard`.
    pub fn gain(&self, shard: u32) {
        self.lock().guard.insert(shard);
    }

    /// Stop holding `shard`; `stop` runs under the lock, after the shard left the set, and must stop
    /// every node of that shard synchronously.
    pub fn drop_shard(&self, shard: u32, stop: impl FnOnce(u32)) {
        let mut held = self.lock();
        if held.guard.remove(&shard) {
            stop(shard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsharded_owns_everything() {
        let o = Ownership::everything();
        assert!(o.owns("a") && o.owns("edge-123"));
    }

    #[test]
    fn dropping_a_shard_stops_its_work_once() {
        let o = Ownership::sharded(4, BTreeSet::new());
        let name = "edge-1";
        let shard = shard_of(name, 4);
        assert!(!o.owns(name));
        o.gain(shard);
        assert!(o.owns(name));
        let mut stopped = Vec::new();
        o.drop_shard(shard, |s| stopped.push(s));
        o.drop_shard(shard, |s| stopped.push(s));
        assert_eq!(stopped, [shard]);
        assert!(!o.owns(name));
    }
}
