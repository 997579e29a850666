//! The VirtualNode status this process last wrote, until its cache shows it.
//!
//! A node's state changes trigger reconciles directly (not through the watch), so a reconcile can run
//! on a cached VirtualNode that does not yet carry the status this process wrote a moment ago. Judged
//! against that stale status, the same status would be written again and the same transition Event
//! published twice (kube's recorder turns the second into an Event series patch): about 1.5 status
//! patches and 0.5 Event patches per node at bring-up. A reconcile therefore compares with the status
//! it wrote while the cache still shows the status it wrote over (the cached object may have moved on
//! meanwhile for another reason, e.g. the finalizer this process added). Decided by content, not by
//! ordering resourceVersions (they are opaque). Entries live only until the cache catches up: an idle
//! fleet holds none.

use std::collections::HashMap;
use std::sync::Mutex;

use fleetlet_crds::{VirtualNode, VirtualNodeStatus};

/// Statuses written and not yet seen in the cache, by VirtualNode name. Boxed, and the table is let go
/// whenever it empties: a bring-up of thousands of nodes must not leave its peak behind.
#[derive(Default)]
pub struct Written(Mutex<HashMap<String, Box<Entry>>>);

struct Entry {
    /// The status the cache showed when this one was written over it.
    over: Option<VirtualNodeStatus>,
    status: VirtualNodeStatus,
}

impl Written {
    /// The status the server holds as far as this process knows: the one it wrote, while `cached` still
    /// shows the status it wrote over; otherwise the cached one (and the entry is dropped: the cache
    /// has caught up, or someone else changed the status since).
    pub fn latest(&self, cached: &VirtualNode) -> Option<VirtualNodeStatus> {
        let name = cached.metadata.name.as_deref().unwrap_or_default();
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(name) {
            Some(e) if e.over == cached.status => Some(e.status.clone()),
            Some(_) => {
                remove(&mut map, name);
                cached.status.clone()
            }
            None => cached.status.clone(),
        }
    }

    /// `status` was written over the cached object `over` (the one the reconcile read).
    pub fn record(&self, over: &VirtualNode, status: VirtualNodeStatus) {
        let Some(name) = over.metadata.name.clone() else {
            return;
        };
        let entry = Entry {
            over: over.status.clone(),
            status,
        };
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, Box::new(entry));
    }

    /// Forget `name` (deleted, or no longer served here).
    pub fn forget(&self, name: &str) {
        remove(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()), name);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or_default()
    }
}

fn remove(map: &mut HashMap<String, Box<Entry>>, name: &str) {
    map.remove(name);
    if map.is_empty() {
        *map = HashMap::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetlet_crds::VirtualNodeSpec;

    fn vn(rv: &str, pods: Option<i32>) -> VirtualNode {
        let mut v = VirtualNode::new("edge-0", VirtualNodeSpec::default());
        v.metadata.resource_version = Some(rv.into());
        v.status = Some(VirtualNodeStatus {
            pods,
            ..Default::default()
        });
        v
    }

    #[test]
    fn stale_cache_shows_what_was_written_until_it_catches_up() {
        let w = Written::default();
        let read = vn("10", Some(0));
        assert_eq!(w.latest(&read), read.status, "nothing written: the cache");
        let wrote = VirtualNodeStatus {
            pods: Some(3),
            ..Default::default()
        };
        w.record(&read, wrote.clone());
        assert_eq!(w.latest(&read), Some(wrote.clone()), "cache still at rv 10");
        let finalizer_seen = vn("11", Some(0));
        assert_eq!(
            w.latest(&finalizer_seen),
            Some(wrote.clone()),
            "the cache moved on (a finalizer) but still shows the status written over"
        );
        assert_eq!(w.len(), 1);
        let caught_up = vn("12", Some(3));
        assert_eq!(w.latest(&caught_up), caught_up.status);
        assert_eq!(w.len(), 0, "dropped once the cache moved on");
        assert_eq!(w.latest(&read), read.status, "and not used again");
    }

    #[test]
    fn someone_elses_change_wins_and_forget_drops() {
        let w = Written::default();
        let read = vn("10", Some(0));
        w.record(&read, VirtualNodeStatus::default());
        let other = vn("11", Some(7));
        assert_eq!(w.latest(&other), other.status);
        w.record(&read, VirtualNodeStatus::default());
        w.forget("edge-0");
        assert_eq!(w.latest(&read), read.status);
    }
}
