//! The fleet's two shared watches: every pod bound to some node (routed to that node's pod controller)
//! and every fleet Node (each instance's view of its own status).

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event as WatchEvent};
use tracing::debug;

use super::Inner;
use crate::pod::PodEvent;

/// The shared pod watch: every pod bound to some node, routed to the node's controller by name.
pub(super) async fn watch_pods(inner: std::sync::Weak<Inner>) {
    let Some(client) = inner.upgrade().map(|i| i.client.clone()) else {
        return;
    };
    let cfg = watcher::Config::default().fields("spec.nodeName!=");
    // Pods are kept (by node, and by each pod worker) without `managedFields`: nothing here reads them.
    let mut stream = watcher::watcher(Api::<Pod>::all(client), cfg)
        .default_backoff()
        .modify(|pod| pod.metadata.managed_fields = None)
        .boxed();
    let mut buffer: HashMap<String, BTreeMap<String, Pod>> = HashMap::new();
    while let Some(ev) = stream.next().await {
        let Some(inner) = inner.upgrade() else { return };
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                debug!(error = %e, "pod watch error; retrying");
                continue;
            }
        };
        match ev {
            WatchEvent::Init => buffer.clear(),
            WatchEvent::InitApply(pod) => {
                if let (Some(node), Some(uid)) = (node_of(&pod), pod.metadata.uid.clone()) {
                    buffer.entry(node).or_default().insert(uid, pod);
                }
            }
            WatchEvent::InitDone => {
                let all = std::mem::take(&mut buffer);
                let nodes = inner.nodes.read().map(|n| n.clone()).unwrap_or_default();
                for (name, instance) in &nodes {
                    let pods = all
                        .get(name)
                        .map(|p| p.values().cloned().collect())
                        .unwrap_or_default();
                    instance.pods.send(PodEvent::Resync(pods));
                }
                if let Ok(mut m) = inner.pods_by_node.lock() {
                    *m = all;
                }
                if let Ok(mut s) = inner.pods_synced.lock() {
                    *s = true;
                }
            }
            WatchEvent::Apply(pod) => {
                let Some(node) = node_of(&pod) else { continue };
                if let (Ok(mut m), Some(uid)) =
                    (inner.pods_by_node.lock(), pod.metadata.uid.clone())
                {
                    m.entry(node.clone()).or_default().insert(uid, pod.clone());
                }
                if let Some(i) = inner.nodes.read().ok().and_then(|n| n.get(&node).cloned()) {
                    i.pods.send(PodEvent::Apply(Box::new(pod)));
                }
            }
            WatchEvent::Delete(pod) => {
                let Some(node) = node_of(&pod) else { continue };
                if let (Ok(mut m), Some(uid)) =
                    (inner.pods_by_node.lock(), pod.metadata.uid.as_ref())
                    && let Some(p) = m.get_mut(&node)
                {
                    p.remove(uid);
                }
                if let Some(i) = inner.nodes.read().ok().and_then(|n| n.get(&node).cloned()) {
                    i.pods.send(PodEvent::Delete(Box::new(pod)));
                }
            }
        }
    }
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
}

/// The shared Node watch (fleet Nodes only): keeps each instance's view of its Node current, so status
/// reports compare against the API without a GET.
pub(super) async fn watch_nodes(inner: std::sync::Weak<Inner>) {
    let Some((client, (k, v))) = inner
        .upgrade()
        .map(|i| (i.client.clone(), i.cfg.node_selector.clone()))
    else {
        return;
    };
    let cfg = watcher::Config::default().labels(&format!("{k}={v}"));
    let mut stream = watcher::watcher(Api::<Node>::all(client), cfg)
        .default_backoff()
        .boxed();
    while let Some(ev) = stream.next().await {
        let Some(inner) = inner.upgrade() else { return };
        let (node, deleted) = match ev {
            Ok(WatchEvent::Apply(n) | WatchEvent::InitApply(n)) => (n, false),
            Ok(WatchEvent::Delete(n)) => (n, true),
            Ok(_) => continue,
            Err(e) => {
                debug!(error = %e, "node watch error; retrying");
                continue;
            }
        };
        let Some(name) = node.metadata.name.clone() else {
            continue;
        };
        if let Some(i) = inner.nodes.read().ok().and_then(|n| n.get(&name).cloned()) {
            if let Ok(mut o) = i.observed.lock() {
                *o = if deleted {
                    None
                } else {
                    node.status.as_ref().map(crate::node::status::Observed::of)
                };
            }
            if deleted && let Ok(mut r) = i.registration.lock() {
                *r = None;
            }
        }
    }
}
