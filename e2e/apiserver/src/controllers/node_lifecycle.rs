//! Node lifecycle: when a node's Lease in kube-node-lease has not been renewed for the grace
//! period, its conditions become Unknown with reason NodeStatusUnknown (kube-controller-manager's
//! behaviour). Renewal is judged by this controller's own clock when it sees `renewTime` change.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::meta;
use crate::server::Inner;

#[derive(Default)]
pub struct NodeLifecycle {
    /// node -> (last renewTime seen, when it was seen to change)
    seen: HashMap<String, (String, Instant)>,
}

impl NodeLifecycle {
    pub fn pass(&mut self, inner: &Inner, grace: Duration) {
        let store = &inner.store;
        let (Some(nodes_def), Some(lease_def)) = (
            store.find_def("", "v1", "nodes"),
            store.find_def("coordination.k8s.io", "v1", "leases"),
        ) else {
            return;
        };
        let (nodes, _) = store.list(&nodes_def, None);
        let now = Instant::now();
        self.seen
            .retain(|n, _| nodes.iter().any(|x| meta::name(x) == n));
        for node in nodes {
            let name = meta::name(&node).to_string();
            let renew = store
                .get(&lease_def, "kube-node-lease", &name)
                .ok()
                .and_then(|l| meta::str_at(&l, &["spec", "renewTime"]).map(String::from))
                .unwrap_or_default();
            let entry = self
                .seen
                .entry(name.clone())
                .or_insert_with(|| (renew.clone(), now));
            if entry.0 != renew {
                *entry = (renew, now);
            }
            if now.duration_since(entry.1) < grace || ready_status(&node) == Some("Unknown") {
                continue;
            }
            let res = store.mutate(&nodes_def, "", &name, |old| {
                let mut new = old.clone();
                let ts = meta::now();
                if let Some(conds) = new.pointer_mut("/status/conditions").and_then(Value::as_array_mut) {
                    for c in conds.iter_mut() {
                        c["status"] = json!("Unknown");
                        c["reason"] = json!("NodeStatusUnknown");
                        c["message"] = json!("Kubelet stopped posting node status.");
                        c["lastTransitionTime"] = json!(ts);
                    }
                }
                if ready_status(&new).is_none() {
                    crate::http::reviews::set_condition(&mut new, json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusNeverUpdated", "message": "Kubelet never posted node status.", "lastTransitionTime": ts, "lastHeartbeatTime": ts}));
                }
                Ok(new)
            });
            if let Err(e) = res {
                tracing::debug!(error = %e, node = %name, "node lifecycle update");
            }
        }
    }
}

fn ready_status(node: &Value) -> Option<&str> {
    node.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))?
        .get("status")?
        .as_str()
}
