//! Scheduler: binds pending pods without `spec.nodeName` (and the default scheduler name) to a
//! Ready, schedulable node that matches their nodeSelector and whose NoSchedule/NoExecute taints
//! they tolerate (fewest pods first); otherwise sets PodScheduled=False, reason Unschedulable.
//! Like kube-scheduler it works from a cache kept current by changes, not from a re-list per change.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use crate::http::reviews::{bind_pod, set_condition};
use crate::meta;
use crate::resources::ResourceDef;
use crate::server::Inner;
use crate::store::{EventType, Store};

fn node_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type") == Some(&json!("Ready")) && c.get("status") == Some(&json!("True"))
            })
        })
}

fn tolerates(tolerations: &[Value], taint: &Value) -> bool {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    tolerations.iter().any(|t| {
        let effect_ok = s(t, "effect").is_empty() || s(t, "effect") == s(taint, "effect");
        let key_ok = match s(t, "operator").as_str() {
            "Exists" => s(t, "key").is_empty() || s(t, "key") == s(taint, "key"),
            _ => s(t, "key") == s(taint, "key") && s(t, "value") == s(taint, "value"),
        };
        effect_ok && key_ok
    })
}

/// Why `node` cannot run `pod`, or `None` when it fits.
pub fn unfit(pod: &Value, node: &Value) -> Option<&'static str> {
    if !node_ready(node) {
        return Some("node(s) were not ready");
    }
    if node.pointer("/spec/unschedulable") == Some(&json!(true)) {
        return Some("node(s) were unschedulable");
    }
    let labels = meta::labels(node);
    if let Some(sel) = pod.pointer("/spec/nodeSelector").and_then(Value::as_object)
        && sel.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return Some("node(s) didn't match Pod's node affinity/selector");
    }
    let tolerations = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let taints = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let blocked = taints.iter().any(|t| {
        matches!(
            t.get("effect").and_then(Value::as_str),
            Some("NoSchedule" | "NoExecute")
        ) && !tolerates(&tolerations, t)
    });
    blocked.then_some("node(s) had untolerated taint")
}

/// Whether the default scheduler should place `pod`: unbound, not being deleted, ours.
fn wants_scheduling(pod: &Value) -> bool {
    meta::str_at(pod, &["spec", "nodeName"])
        .unwrap_or("")
        .is_empty()
        && pod.pointer("/metadata/deletionTimestamp").is_none()
        && meta::str_at(pod, &["spec", "schedulerName"]).is_none_or(|s| s == "default-scheduler")
}

type Key = (String, String);

fn key_of(obj: &Value) -> Key {
    (
        meta::namespace(obj).to_string(),
        meta::name(obj).to_string(),
    )
}

/// The scheduler with its informer-like cache: nodes, which node each bound pod is on (for the
/// fewest-pods choice) and the pods waiting to be placed, kept current from the store's change
/// history. A pass costs O(changes since the last pass) plus placing the waiting pods, instead of
/// re-reading every pod and node on every write (a full re-list happens only when the history no longer
/// reaches back to the last pass, as a real informer re-lists after a 410).
#[derive(Default)]
pub struct Scheduler {
    /// Store resourceVersion the cache is complete up to; `None` until the first list.
    synced: Option<u64>,
    nodes: BTreeMap<String, Value>,
    bound: HashMap<Key, String>,
    load: HashMap<String, usize>,
    waiting: BTreeMap<Key, Value>,
    /// Something that can change a placement happened since the last attempt.
    dirty: bool,
}

impl Scheduler {
    pub fn pass(&mut self, inner: &Inner) {
        let store = &inner.store;
        let (Some(pods_def), Some(nodes_def)) = (
            store.find_def("", "v1", "pods"),
            store.find_def("", "v1", "nodes"),
        ) else {
            return;
        };
        let changes = self.synced.and_then(|rv| store.events_since(rv));
        match changes {
            Some((events, rv)) => {
                let (pods_key, nodes_key) = (pods_def.key(), nodes_def.key());
                for ev in events {
                    let gone = ev.etype == EventType::Deleted;
                    if ev.resource == pods_key {
                        self.pod_changed(&ev.object, gone);
                    } else if ev.resource == nodes_key {
                        self.node_changed(&ev.object, gone);
                    }
                }
                self.synced = Some(rv);
            }
            None => {
                let (pods, rv) = store.list(&pods_def, None);
                let (nodes, _) = store.list(&nodes_def, None);
                *self = Scheduler::default();
                for n in &nodes {
                    self.node_changed(n, false);
                }
                for p in &pods {
                    self.pod_changed(p, false);
                }
                // Nodes read after pods may be newer than `rv`: replaying their events is harmless.
                self.synced = Some(rv);
            }
        }
        if std::mem::take(&mut self.dirty) {
            self.place_waiting(store, &pods_def);
        }
    }

    fn node_changed(&mut self, node: &Value, gone: bool) {
        let name = meta::name(node).to_string();
        if gone {
            self.nodes.remove(&name);
        } else {
            self.nodes.insert(name, node.clone());
        }
        self.dirty = true;
    }

    fn pod_changed(&mut self, pod: &Value, gone: bool) {
        let key = key_of(pod);
        if let Some(node) = self.bound.remove(&key)
            && let Some(n) = self.load.get_mut(&node)
        {
            *n = n.saturating_sub(1);
        }
        self.waiting.remove(&key);
        if gone {
            return;
        }
        if let Some(node) = meta::str_at(pod, &["spec", "nodeName"]).filter(|n| !n.is_empty()) {
            *self.load.entry(node.to_string()).or_default() += 1;
            self.bound.insert(key, node.to_string());
        } else if wants_scheduling(pod) {
            self.waiting.insert(key, pod.clone());
            self.dirty = true;
        }
    }

    fn place_waiting(&mut self, store: &Store, pods_def: &ResourceDef) {
        let waiting: Vec<(Key, Value)> = self
            .waiting
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, pod) in waiting {
            let best = self
                .nodes
                .values()
                .filter(|n| unfit(&pod, n).is_none())
                .min_by_key(|n| {
                    (
                        self.load.get(meta::name(n)).copied().unwrap_or(0),
                        meta::name(n),
                    )
                })
                .map(|n| meta::name(n).to_string());
            match best {
                Some(node) => match bind_pod(store, pods_def, &key.0, &key.1, &node) {
                    Ok(bound) => self.pod_changed(&bound, false),
                    Err(e) => tracing::debug!(error = %e, pod = %key.1, "scheduler bind"),
                },
                None => self.unschedulable(store, pods_def, &pod),
            }
        }
    }

    /// PodScheduled=False with the reasons per node, written only when the message changes.
    fn unschedulable(&self, store: &Store, pods_def: &ResourceDef, pod: &Value) {
        let (ns, name) = (meta::namespace(pod), meta::name(pod));
        let mut reasons: HashMap<&str, usize> = HashMap::new();
        for n in self.nodes.values() {
            if let Some(r) = unfit(pod, n) {
                *reasons.entry(r).or_default() += 1;
            }
        }
        let mut parts: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
        parts.sort();
        let message = format!(
            "0/{} nodes are available: {}.",
            self.nodes.len(),
            parts.join(", ")
        );
        let already = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.get("type") == Some(&json!("PodScheduled"))
                        && c.get("message") == Some(&json!(message))
                })
            });
        if already {
            return;
        }
        let res = store.mutate(pods_def, ns, name, |old| {
            let mut new = old.clone();
            set_condition(&mut new, json!({"type": "PodScheduled", "status": "False", "lastProbeTime": null, "lastTransitionTime": meta::now(), "reason": "Unschedulable", "message": message}));
            Ok(new)
        });
        if let Err(e) = res {
            tracing::debug!(error = %e, pod = %name, "scheduler condition");
        }
    }
}
