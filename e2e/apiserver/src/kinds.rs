//! Per-kind strategies, as kube-apiserver's registry strategies: name validation, defaults and
//! dropped fields on create, what an update of the main resource vs a subresource may change, and
//! how a delete proceeds (finalizers, pod graceful deletion).

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Value, json};

use crate::errors::{ApiError, Cause};
use crate::meta;
use crate::resources::ResourceDef;
use crate::store::DeleteOpts;

const SUBDOMAIN: &str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const LABEL: &str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?";

static SUBDOMAIN_RE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(&format!("^{SUBDOMAIN}$")).ok());
static LABEL_RE: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(&format!("^{LABEL}$")).ok());

/// 422 unless `name` is a valid object name for this resource.
pub fn validate_name(def: &ResourceDef, name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        let cause = Cause {
            reason: "FieldValueRequired",
            field: "metadata.name".into(),
            message: "Required value: name or generateName is required".into(),
        };
        return Err(ApiError::invalid(def, name, vec![cause]));
    }
    let label = matches!(def.plural.as_str(), "namespaces" | "services") && def.group.is_empty();
    let (re, msg) = if label {
        (
            &*LABEL_RE,
            format!(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '{LABEL}')"
            ),
        )
    } else {
        (
            &*SUBDOMAIN_RE,
            format!(
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '{SUBDOMAIN}')"
            ),
        )
    };
    let ok =
        re.as_ref().is_some_and(|r| r.is_match(name)) && name.len() <= if label { 63 } else { 253 };
    if ok {
        return Ok(());
    }
    let cause = Cause {
        reason: "FieldValueInvalid",
        field: "metadata.name".into(),
        message: format!("Invalid value: {}: {msg}", json!(name)),
    };
    Err(ApiError::invalid(def, name, vec![cause]))
}

fn set_default(obj: &mut Value, path: &[&str], v: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for p in parents {
        let Some(m) = cur.as_object_mut() else { return };
        let child = m.entry(p.to_string()).or_insert_with(|| json!({}));
        if !child.is_object() {
            *child = json!({});
        }
        cur = child;
    }
    if let Some(m) = cur.as_object_mut() {
        m.entry(last.to_string()).or_insert(v);
    }
}

/// Defaults and dropped fields on create.
pub fn prepare_create(def: &ResourceDef, obj: &mut Value) {
    match (def.group.as_str(), def.plural.as_str()) {
        ("", "pods") => {
            if let Some(m) = obj.as_object_mut() {
                m.insert(
                    "status".into(),
                    json!({"phase": "Pending", "qosClass": "BestEffort"}),
                );
            }
            set_default(obj, &["spec", "terminationGracePeriodSeconds"], json!(30));
            set_default(obj, &["spec", "restartPolicy"], json!("Always"));
            set_default(obj, &["spec", "dnsPolicy"], json!("ClusterFirst"));
            set_default(obj, &["spec", "schedulerName"], json!("default-scheduler"));
            set_default(obj, &["spec", "serviceAccountName"], json!("default"));
            set_default(obj, &["spec", "enableServiceLinks"], json!(true));
            set_default(obj, &["spec", "priority"], json!(0));
            if let Some(cs) = obj
                .pointer_mut("/spec/containers")
                .and_then(Value::as_array_mut)
            {
                for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                    c.entry("terminationMessagePath")
                        .or_insert(json!("/dev/termination-log"));
                    c.entry("terminationMessagePolicy").or_insert(json!("File"));
                    c.entry("resources").or_insert(json!({}));
                    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
                    let tag = image.rsplit('/').next().unwrap_or("");
                    let policy = if !tag.contains(':') || tag.ends_with(":latest") {
                        "Always"
                    } else {
                        "IfNotPresent"
                    };
                    c.entry("imagePullPolicy").or_insert(json!(policy));
                }
            }
        }
        ("", "namespaces") => {
            set_default(obj, &["spec", "finalizers"], json!(["kubernetes"]));
            if let Some(m) = obj.as_object_mut() {
                m.insert("status".into(), json!({"phase": "Active"}));
            }
        }
        ("", "nodes") => {
            set_default(
                obj,
                &["status", "daemonEndpoints", "kubeletEndpoint", "Port"],
                json!(0),
            );
            set_default(
                obj,
                &["status", "nodeInfo"],
                json!({"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "", "containerRuntimeVersion": "", "kubeletVersion": "", "kubeProxyVersion": "", "operatingSystem": "", "architecture": ""}),
            );
        }
        ("", "secrets") => set_default(obj, &["type"], json!("Opaque")),
        ("", "services") => {
            set_default(obj, &["spec", "type"], json!("ClusterIP"));
            set_default(obj, &["spec", "sessionAffinity"], json!("None"));
            let ip = format!(
                "10.96.{}.{}",
                rand::random_range(0..255u8),
                rand::random_range(1..255u8)
            );
            set_default(obj, &["spec", "clusterIP"], json!(ip));
            if let Some(m) = obj.as_object_mut() {
                m.insert("status".into(), json!({"loadBalancer": {}}));
            }
        }
        ("certificates.k8s.io", "certificatesigningrequests") => {
            if let Some(m) = obj.as_object_mut() {
                m.insert("status".into(), json!({}));
            }
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            crate::crd::registry::prepare_crd(obj)
        }
        _ if def.crd.is_some() && def.has_status() => {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        _ => {}
    }
}

/// What an update through `sub` ("" = main resource) may change: returns the object to store.
pub fn prepare_update(def: &ResourceDef, sub: &str, old: &Value, mut new: Value) -> Value {
    let rv = new.pointer("/metadata/resourceVersion").cloned();
    let mut out = match sub {
        "status" => {
            let mut o = old.clone();
            set_or_remove(&mut o, "status", new.get("status").cloned());
            // As kube-apiserver's status strategies do: managedFields were already updated for this
            // write (a server-side apply records its own entry) and must survive the copy of `old`.
            if let Some(mf) = new.pointer("/metadata/managedFields").cloned() {
                meta::meta_mut(&mut o).insert("managedFields".into(), mf);
            }
            o
        }
        "approval" => {
            let mut o = old.clone();
            let conds = new.pointer("/status/conditions").cloned();
            let st = meta::obj_mut(&mut o, "status");
            match conds {
                Some(c) => st.insert("conditions".into(), c),
                None => st.remove("conditions"),
            };
            o
        }
        _ => {
            if def.has_status() {
                set_or_remove(&mut new, "status", old.get("status").cloned());
            }
            new
        }
    };
    if let Some(m) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        match rv {
            Some(v) => m.insert("resourceVersion".into(), v),
            None => m.remove("resourceVersion"),
        };
    }
    out
}

fn set_or_remove(o: &mut Value, key: &str, v: Option<Value>) {
    if let Some(m) = o.as_object_mut() {
        match v {
            Some(v) => m.insert(key.into(), v),
            None => m.remove(key),
        };
    }
}

/// How a delete proceeds.
pub enum DeletionPlan {
    /// The object stays, updated to this (deletionTimestamp set).
    Keep(Value),
    /// The object goes; `Some` is a last update (MODIFIED) committed before the DELETED event.
    Remove(Option<Value>),
}

fn is_pod(def: &ResourceDef) -> bool {
    def.is("", "pods")
}

fn bump_generation(v: &mut Value) {
    let g = v
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    meta::meta_mut(v).insert("generation".into(), json!(g + 1));
}

fn mark_deleting(old: &Value, grace: i64) -> Value {
    let mut v = old.clone();
    let first = old.pointer("/metadata/deletionTimestamp").is_none();
    let m = meta::meta_mut(&mut v);
    m.insert("deletionTimestamp".into(), json!(meta::now_plus(grace)));
    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
    if first {
        bump_generation(&mut v);
    }
    v
}

/// Whether a pod's graceful deletion is still pending (the kubelet has not confirmed it).
pub fn graceful_pending(def: &ResourceDef, obj: &Value) -> bool {
    is_pod(def)
        && obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            > 0
}

pub fn deletion_plan(def: &ResourceDef, old: &Value, opts: &DeleteOpts) -> DeletionPlan {
    let has_fin = !meta::finalizers(old).is_empty();
    let terminating = old.pointer("/metadata/deletionTimestamp").is_some();
    if is_pod(def) {
        let bound = meta::str_at(old, &["spec", "nodeName"]).is_some_and(|n| !n.is_empty());
        let phase = meta::str_at(old, &["status", "phase"]).unwrap_or("");
        let terminal = matches!(phase, "Succeeded" | "Failed");
        let old_grace = old
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64);
        let spec_grace = old
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64);
        if bound && !terminal {
            let grace = opts.grace.or(old_grace).or(spec_grace).unwrap_or(30).max(0);
            if grace > 0 {
                if terminating && old_grace.is_some_and(|g| g <= grace) {
                    return DeletionPlan::Keep(old.clone());
                }
                return DeletionPlan::Keep(mark_deleting(old, grace));
            }
            if terminating || has_fin {
                let last = mark_deleting(old, 0);
                return if has_fin {
                    DeletionPlan::Keep(last)
                } else {
                    DeletionPlan::Remove(Some(last))
                };
            }
            return DeletionPlan::Remove(None);
        }
    }
    if has_fin {
        if terminating {
            return DeletionPlan::Keep(old.clone());
        }
        return DeletionPlan::Keep(mark_deleting(old, 0));
    }
    DeletionPlan::Remove(None)
}
