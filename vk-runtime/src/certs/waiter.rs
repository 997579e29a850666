//! One watch of the fleet's CSRs, shared by every node waiting for a certificate, instead of a watch of
//! each CSR (a LIST and a WATCH per certificate: at a bring-up of a thousand nodes, two thousand watches
//! open at once, each woken by the API server on every CSR change).
//!
//! The CSRs carry the node label (key [`CsrWaiter::label`], value the node name) and a name chosen
//! before they are created, so a waiter registers before the CSR exists and cannot miss its outcome.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher::watcher};
use kube::{Api, Client};
use tokio::sync::oneshot;
use tracing::debug;

/// What a waiter hears: the CSR once it is decided (issued, denied or failed), or `None` when it was
/// deleted first.
pub type Decided = Option<CertificateSigningRequest>;

/// Handle to the shared CSR watch.
#[derive(Clone)]
pub struct CsrWaiter {
    label: String,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Decided>>>>,
}

impl std::fmt::Debug for CsrWaiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsrWaiter")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl CsrWaiter {
    /// Watch (with `client`) the CSRs that carry the label `label`, until every handle is dropped.
    pub fn start(client: Client, label: &str) -> Self {
        let waiter = Self {
            label: label.to_string(),
            waiting: Arc::default(),
        };
        let cfg = watcher::Config::default().labels(label);
        let stream = watcher(Api::<CertificateSigningRequest>::all(client), cfg).default_backoff();
        tokio::spawn(run(stream, Arc::downgrade(&waiter.waiting)));
        waiter
    }

    /// The label key the waited-for CSRs must carry (its value: the node name).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Wait for the CSR `name` (register before creating it).
    pub fn register(&self, name: &str) -> oneshot::Receiver<Decided> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(name.to_string(), tx);
        rx
    }

    /// Stop waiting for `name` (its creation failed, it was decided at once, or the wait timed out).
    pub fn cancel(&self, name: &str) {
        let mut map = self.lock();
        map.remove(name);
        if map.is_empty() {
            *map = HashMap::new();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Decided>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type Waiting = std::sync::Weak<Mutex<HashMap<String, oneshot::Sender<Decided>>>>;

async fn run(
    stream: impl futures::Stream<Item = Result<Event<CertificateSigningRequest>, watcher::Error>>,
    waiting: Waiting,
) {
    let mut stream = std::pin::pin!(stream);
    while let Some(ev) = stream.next().await {
        let Some(waiting) = waiting.upgrade() else {
            return;
        };
        let (csr, deleted) = match ev {
            Ok(Event::Apply(c) | Event::InitApply(c)) => (c, false),
            Ok(Event::Delete(c)) => (c, true),
            Ok(_) => continue,
            Err(e) => {
                debug!(error = %e, "CSR watch error; retrying");
                continue;
            }
        };
        let Some(name) = csr.metadata.name.clone() else {
            continue;
        };
        if !deleted && !decided(&csr) {
            continue;
        }
        let tx = waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name);
        if let Some(tx) = tx {
            let _ = tx.send((!deleted).then_some(csr));
        }
    }
}

/// Whether the CSR has reached the end of its life: a certificate, or a Denied/Failed condition.
fn decided(csr: &CertificateSigningRequest) -> bool {
    csr.status.as_ref().is_some_and(|s| {
        s.certificate.as_ref().is_some_and(|c| !c.0.is_empty())
            || s.conditions
                .iter()
                .flatten()
                .any(|c| c.status == "True" && (c.type_ == "Denied" || c.type_ == "Failed"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn csr(name: &str, status: serde_json::Value) -> CertificateSigningRequest {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"request": "", "signerName": "s"}, "status": status})).unwrap()
    }

    fn waiter() -> (
        CsrWaiter,
        futures::channel::mpsc::UnboundedSender<
            Result<Event<CertificateSigningRequest>, watcher::Error>,
        >,
    ) {
        let w = CsrWaiter {
            label: "l".into(),
            waiting: Arc::default(),
        };
        let (tx, rx) = futures::channel::mpsc::unbounded();
        tokio::spawn(run(rx, Arc::downgrade(&w.waiting)));
        (w, tx)
    }

    #[tokio::test]
    async fn waiters_hear_decisions_and_deletions_of_their_own_csr_only() {
        let (w, events) = waiter();
        let a = w.register("a");
        let b = w.register("b");
        let c = w.register("c");
        let approved = json!({"conditions": [{"type": "Approved", "status": "True"}]});
        events
            .unbounded_send(Ok(Event::Apply(csr("a", approved.clone()))))
            .unwrap();
        events
            .unbounded_send(Ok(Event::Apply(csr(
                "other",
                json!({"certificate": "UEVN"}),
            ))))
            .unwrap();
        events
            .unbounded_send(Ok(Event::Apply(csr("a", json!({"certificate": "UEVN"})))))
            .unwrap();
        let denied = json!({"conditions": [{"type": "Denied", "status": "True"}]});
        events
            .unbounded_send(Ok(Event::InitApply(csr("b", denied))))
            .unwrap();
        events
            .unbounded_send(Ok(Event::Delete(csr("c", approved))))
            .unwrap();
        let got = a.await.unwrap().unwrap();
        assert_eq!(
            got.status.unwrap().certificate.unwrap().0,
            b"PEM",
            "approved but unsigned is not the end; signed is"
        );
        assert!(b.await.unwrap().is_some(), "a denial ends the wait");
        assert!(
            c.await.unwrap().is_none(),
            "a deletion ends it with nothing"
        );
        assert!(w.lock().is_empty());
        let d = w.register("d");
        w.cancel("d");
        assert!(d.await.is_err(), "a cancelled wait hears nothing");
    }
}
