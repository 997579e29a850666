//! In-process controllers acting directly on the store, each switchable in `Options`: a scheduler,
//! a garbage collector, a node lifecycle controller and a CSR approver/signer.

pub mod csr;
pub mod gc;
pub mod kubelet_csr;
pub mod node_lifecycle;
pub mod scheduler;

use std::sync::Arc;
use std::time::Duration;

use crate::server::Inner;

/// Runs `pass` whenever the store changes, and at least every `every`.
pub async fn run_on_change(inner: Arc<Inner>, every: Duration, mut pass: impl FnMut(&Inner)) {
    let mut ticks = inner.store.subscribe();
    loop {
        pass(&inner);
        tokio::select! {
            r = ticks.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(every) => {}
        }
    }
}
