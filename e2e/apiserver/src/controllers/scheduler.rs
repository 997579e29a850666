//! Scheduler: binds pending pods without `spec.nodeName` (and the default scheduler name) to a
//! Ready, schedulable node that matches their nodeSelector and whose NoSchedule/NoExecute taints
//! they tolerate (fewest pods first); otherwise sets PodScheduled=False, reason Unschedulable.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::http::reviews::{bind_pod, set_condition};
use crate::meta;
use crate::server::Inner;

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

pub fn pass(inner: &Inner) {
    let store = &inner.store;
    let (Some(pods_def), Some(nodes_def)) = (
        store.find_def("", "v1", "pods"),
        store.find_def("", "v1", "nodes"),
    ) else {
        return;
    };
    let (pods, _) = store.list(&pods_def, None);
    let (nodes, _) = store.list(&nodes_def, None);
    let mut load: HashMap<String, usize> = HashMap::new();
    for p in &pods {
        if let Some(n) = meta::str_at(p, &["spec", "nodeName"]) {
            *load.entry(n.to_string()).or_default() += 1;
        }
    }
    for pod in &pods {
        let pending = meta::str_at(pod, &["spec", "nodeName"])
            .unwrap_or("")
            .is_empty()
            && pod.pointer("/metadata/deletionTimestamp").is_none()
            && meta::str_at(pod, &["spec", "schedulerName"])
                .is_none_or(|s| s == "default-scheduler");
        if !pending {
            continue;
        }
        let (ns, name) = (meta::namespace(pod), meta::name(pod));
        let best = nodes
            .iter()
            .filter(|n| unfit(pod, n).is_none())
            .min_by_key(|n| {
                (
                    load.get(meta::name(n)).copied().unwrap_or(0),
                    meta::name(n).to_string(),
                )
            });
        if let Some(node) = best {
            let node_name = meta::name(node).to_string();
            match bind_pod(store, &pods_def, ns, name, &node_name) {
                Ok(_) => *load.entry(node_name).or_default() += 1,
                Err(e) => tracing::debug!(error = %e, pod = %name, "scheduler bind"),
            }
            continue;
        }
        let mut reasons: HashMap<&str, usize> = HashMap::new();
        for n in &nodes {
            if let Some(r) = unfit(pod, n) {
                *reasons.entry(r).or_default() += 1;
            }
        }
        let mut parts: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
        parts.sort();
        let message = format!(
            "0/{} nodes are available: {}.",
            nodes.len(),
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
            continue;
        }
        let res = store.mutate(&pods_def, ns, name, |old| {
            let mut new = old.clone();
            set_condition(&mut new, json!({"type": "PodScheduled", "status": "False", "lastProbeTime": null, "lastTransitionTime": meta::now(), "reason": "Unschedulable", "message": message}));
            Ok(new)
        });
        if let Err(e) = res {
            tracing::debug!(error = %e, pod = %name, "scheduler condition");
        }
    }
}
