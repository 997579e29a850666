//! `managedFields` for the non-apply writes (create, PUT, merge/JSON/strategic patch), as kube-apiserver
//! records them: one entry per (manager, operation `Update`, apiVersion, subresource), whose `fieldsV1`
//! gathers the fields the manager set or changed; the entry's time moves only when that set grows. The
//! manager is the `fieldManager` parameter, else the User-Agent up to its first `/`. Approximations
//! (no schema here): a changed list is owned whole, only labels and annotations get the `.` of a map
//! owned as a whole, and fields an Update takes over stay in their previous owners' sets too (that
//! matters only for apply conflicts, which this server does not report).

use serde_json::{Map, Value, json};

use crate::meta;

/// The manager name for a write: `fieldManager`, else the User-Agent's product, else `unknown`.
pub fn manager(field_manager: Option<&str>, user_agent: &str) -> String {
    field_manager
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .or_else(|| {
            let product = user_agent.split('/').next().unwrap_or("").trim();
            (!product.is_empty()).then(|| product.to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Fields the server sets itself: never part of a manager's set.
const SERVER_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The `fieldsV1` set of what differs in `new` from `old` (everything in `new` when `old` is `None`).
fn changed(old: Option<&Value>, new: &Value, top: bool, in_meta: bool) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(m) = new.as_object() else {
        return out;
    };
    for (k, v) in m {
        if (top && matches!(k.as_str(), "apiVersion" | "kind"))
            || (in_meta && SERVER_META.contains(&k.as_str()))
        {
            continue;
        }
        let before = old.and_then(|o| o.get(k));
        if before == Some(v) {
            continue;
        }
        let sub = match v {
            Value::Object(_) => {
                let meta = top && k == "metadata";
                let inner = changed(before, v, false, meta);
                if inner.is_empty() && (before.is_some() || meta) {
                    continue;
                }
                let mut inner = inner;
                // A map (not a struct) created by this write is owned as a whole too: `.`.
                if before.is_none() && in_meta && matches!(k.as_str(), "labels" | "annotations") {
                    inner.insert(".".into(), json!({}));
                }
                Value::Object(inner)
            }
            _ => json!({}),
        };
        out.insert(format!("f:{k}"), sub);
    }
    out
}

/// `a` ∪ `b` for `fieldsV1` trees.
fn union(a: &mut Map<String, Value>, b: Map<String, Value>) -> bool {
    let mut grew = false;
    for (k, v) in b {
        match (a.get_mut(&k), v) {
            (Some(Value::Object(x)), Value::Object(y)) => grew |= union(x, y),
            (Some(_), _) => {}
            (None, v) => {
                a.insert(k, v);
                grew = true;
            }
        }
    }
    grew
}

/// Record in `new` (the object about to be stored) an Update by `manager` through `subresource` (""
/// for the main resource); `old` is the stored object (`None` for a create).
pub fn record(new: &mut Value, old: Option<&Value>, manager: &str, subresource: &str) {
    let fields = changed(old, new, true, false);
    let api_version = new.get("apiVersion").cloned().unwrap_or(Value::Null);
    let mut entries: Vec<Value> = old
        .and_then(|o| o.pointer("/metadata/managedFields"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mine = |e: &Value| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Update")
            && e.get("apiVersion") == Some(&api_version)
            && e.get("subresource").and_then(Value::as_str).unwrap_or("") == subresource
    };
    match entries.iter_mut().find(|e| mine(e)) {
        Some(e) => {
            let mut set = e
                .get("fieldsV1")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            if union(&mut set, fields) {
                e["fieldsV1"] = Value::Object(set);
                e["time"] = json!(meta::now());
            }
        }
        None if fields.is_empty() => {}
        None => {
            let mut entry = json!({
                "manager": manager,
                "operation": "Update",
                "apiVersion": api_version,
                "time": meta::now(),
                "fieldsType": "FieldsV1",
                "fieldsV1": fields,
            });
            if !subresource.is_empty() {
                entry["subresource"] = json!(subresource);
            }
            entries.push(entry);
        }
    }
    if !entries.is_empty() {
        meta::meta_mut(new).insert("managedFields".into(), Value::Array(entries));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn manager_names() {
        assert_eq!(manager(Some("fleetlet"), "kube-rs/1.0"), "fleetlet");
        assert_eq!(manager(None, "kubectl/v1.33.0 (linux/amd64)"), "kubectl");
        assert_eq!(manager(Some(""), ""), "unknown");
    }

    #[test]
    fn create_then_updates_grow_one_entry_per_manager_and_subresource() {
        // The shape kube-apiserver gave for a Lease create (transcripts/node-lease.json).
        let mut lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "n", "namespace": "kube-node-lease", "uid": "u", "resourceVersion": "1"},
            "spec": {"holderIdentity": "n", "leaseDurationSeconds": 40, "renewTime": "t0"}});
        record(&mut lease, None, "unknown", "");
        let mf = lease["metadata"]["managedFields"].clone();
        assert_eq!(mf.as_array().unwrap().len(), 1);
        assert_eq!(mf[0]["operation"], "Update");
        assert_eq!(mf[0]["apiVersion"], "coordination.k8s.io/v1");
        assert_eq!(
            mf[0]["fieldsV1"],
            json!({"f:spec": {"f:holderIdentity": {}, "f:leaseDurationSeconds": {}, "f:renewTime": {}}})
        );
        // A renewal by the same manager: same set, the time does not move.
        let mut renewed = lease.clone();
        renewed["spec"]["renewTime"] = json!("t1");
        record(&mut renewed, Some(&lease), "unknown", "");
        assert_eq!(renewed["metadata"]["managedFields"], mf);
        // Another manager adds a label; a status write is its own entry.
        let mut labelled = renewed.clone();
        labelled["metadata"]["labels"] = json!({"a": "b"});
        record(&mut labelled, Some(&renewed), "kubectl", "");
        let mut status = labelled.clone();
        status["status"] = json!({"x": 1});
        record(&mut status, Some(&labelled), "kubectl", "status");
        let mf = status["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(mf.len(), 3);
        assert_eq!(
            mf[1]["fieldsV1"],
            json!({"f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
        );
        assert_eq!(mf[2]["subresource"], "status");
        // A no-op write adds nothing.
        let mut same = status.clone();
        record(&mut same, Some(&status), "someone", "");
        assert_eq!(
            same["metadata"]["managedFields"].as_array().unwrap().len(),
            3
        );
    }
}
