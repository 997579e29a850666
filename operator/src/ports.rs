//! Kubelet port allocation: each virtual node gets its own port from `[base, base + count)`, stable for
//! its lifetime. A restarted operator reuses the port a VirtualNode's status recorded when it is free.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

/// Why no port could be given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortError {
    #[error("all {0} kubelet ports are in use; raise --kubelet-port-count or run more shards")]
    Exhausted(u16),
}

/// Thread-safe allocator.
pub struct Ports {
    base: u16,
    count: u16,
    inner: Mutex<Alloc>,
}

#[derive(Default)]
struct Alloc {
    by_node: HashMap<String, u16>,
    used: BTreeSet<u16>,
}

impl Ports {
    pub fn new(base: u16, count: u16) -> Self {
        let count = count.min(u16::MAX - base + 1).max(1);
        Self {
            base,
            count,
            inner: Mutex::default(),
        }
    }

    /// The node's port: the one it has, else `preferred` when free and in range, else the lowest free one.
    pub fn allocate(&self, node: &str, preferred: Option<u16>) -> Result<u16, PortError> {
        let mut a = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = a.by_node.get(node) {
            return Ok(*p);
        }
        let in_range =
            |p: u16| p >= self.base && u32::from(p) < u32::from(self.base) + u32::from(self.count);
        let port = match preferred.filter(|p| in_range(*p) && !a.used.contains(p)) {
            Some(p) => p,
            None => (0..self.count)
                .map(|i| self.base + i)
                .find(|p| !a.used.contains(p))
                .ok_or(PortError::Exhausted(self.count))?,
        };
        a.used.insert(port);
        a.by_node.insert(node.to_string(), port);
        Ok(port)
    }

    /// Give the node's port back.
    pub fn release(&self, node: &str) {
        let mut a = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = a.by_node.remove(node) {
            a.used.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_preferred_and_exhausted() {
        let p = Ports::new(10250, 3);
        assert_eq!(p.allocate("a", None), Ok(10250));
        assert_eq!(
            p.allocate("a", Some(10252)),
            Ok(10250),
            "a node keeps its port"
        );
        assert_eq!(
            p.allocate("b", Some(10252)),
            Ok(10252),
            "preferred when free"
        );
        assert_eq!(
            p.allocate("c", Some(10252)),
            Ok(10251),
            "taken preferred falls back"
        );
        assert_eq!(p.allocate("d", None), Err(PortError::Exhausted(3)));
        p.release("b");
        assert_eq!(
            p.allocate("d", Some(9999)),
            Ok(10252),
            "out-of-range preferred ignored"
        );
    }
}
