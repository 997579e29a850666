//! The NodeRestriction admission plugin: what a node identity may write, judged on the objects
//! (after the Node authorizer let the request through). A node may create, update and delete only
//! its own Node, setting only kubelet labels in the kubernetes.io/k8s.io domains and no
//! `node-restriction.kubernetes.io/` label, and change taints only when it creates the Node; update
//! the status of pods bound to it (not their labels); delete pods bound to it; create only mirror
//! pods bound to itself; create only its own Lease in `kube-node-lease`. Refusals are 403s in the
//! plugin's words (`nodes "b" is forbidden: node "a" is not allowed to modify node "b"`).

use std::collections::BTreeSet;

use serde_json::Value;

use super::node::NODE_LEASE_NAMESPACE;
use super::node_identity;
use crate::errors::ApiError;
use crate::meta;
use crate::server::UserInfo;

/// The annotation that marks a mirror pod.
const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Labels a kubelet may set in the kubernetes.io/k8s.io domains (k8s.io/kubelet/pkg/apis).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// Label domains (and their subdomains) a kubelet may use freely.
const KUBELET_LABEL_DOMAINS: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

/// Labels in this domain (or its subdomains) are for administrators only.
const NODE_RESTRICTION_DOMAIN: &str = "node-restriction.kubernetes.io";

/// What is being written.
pub enum Operation<'a> {
    Create(&'a Value),
    Update { old: &'a Value, new: &'a Value },
    Delete(&'a Value),
}

/// The resource a write goes to.
pub struct Target<'a> {
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    /// From the path; for create, the object's name.
    pub name: &'a str,
}

/// Admits or refuses a write by `user`; users that are not nodes are always admitted.
pub fn admit(user: &UserInfo, t: &Target, op: &Operation) -> Result<(), ApiError> {
    let Some(node) = node_identity(user) else {
        return Ok(());
    };
    let forbidden = |msg: String| ApiError::forbidden(t.group, t.resource, t.name, msg);
    if node.is_empty() {
        return Err(forbidden(format!(
            "could not determine node from user {:?}",
            user.username
        )));
    }
    match (t.group, t.resource) {
        ("", "pods") => admit_pod(node, t, op).map_err(forbidden),
        ("", "nodes") => admit_node(node, t, op).map_err(forbidden),
        ("coordination.k8s.io", "leases") => admit_lease(node, t).map_err(forbidden),
        _ => Ok(()),
    }
}

fn node_name_of(pod: &Value) -> &str {
    meta::str_at(pod, &["spec", "nodeName"]).unwrap_or("")
}

fn admit_pod(node: &str, t: &Target, op: &Operation) -> Result<(), String> {
    match (t.subresource, op) {
        ("", Operation::Create(pod)) => admit_mirror_pod(node, pod),
        ("", Operation::Delete(pod)) if node_name_of(pod) != node => Err(format!(
            "node {node:?} can only delete pods with spec.nodeName set to itself"
        )),
        ("", Operation::Delete(_)) => Ok(()),
        ("", Operation::Update { .. }) => Err(format!(
            "unexpected operation \"UPDATE\", node {node:?} can only create and delete mirror pods"
        )),
        ("status", Operation::Update { old, new }) => {
            if node_name_of(old) != node {
                return Err(format!(
                    "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
                ));
            }
            if meta::labels(old) != meta::labels(new) {
                return Err(format!(
                    "node {node:?} cannot update labels through pod status"
                ));
            }
            Ok(())
        }
        ("status", _) => Err("unexpected operation".into()),
        ("eviction", _) => Ok(()),
        (sub, _) => Err(format!(
            "unexpected pod subresource {sub:?}, only 'status' and 'eviction' are allowed"
        )),
    }
}

fn admit_mirror_pod(node: &str, pod: &Value) -> Result<(), String> {
    let annotations = pod.pointer("/metadata/annotations");
    if annotations
        .and_then(|a| a.get(MIRROR_POD_ANNOTATION))
        .is_none()
    {
        return Err(format!(
            "pod does not have {MIRROR_POD_ANNOTATION:?} annotation, node {node:?} can only create mirror pods"
        ));
    }
    if node_name_of(pod) != node {
        return Err(format!(
            "node {node:?} can only create pods with spec.nodeName set to itself"
        ));
    }
    Ok(())
}

fn admit_lease(node: &str, t: &Target) -> Result<(), String> {
    if t.namespace != NODE_LEASE_NAMESPACE {
        return Err(format!(
            "can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"
        ));
    }
    if t.name != node {
        return Err("can only access node lease with the same name as the requesting node".into());
    }
    Ok(())
}

fn admit_node(node: &str, t: &Target, op: &Operation) -> Result<(), String> {
    if t.name != node {
        return Err(format!(
            "node {node:?} is not allowed to modify node {:?}",
            t.name
        ));
    }
    match op {
        Operation::Create(obj) => {
            if !obj
                .pointer("/spec/configSource")
                .unwrap_or(&Value::Null)
                .is_null()
            {
                return Err(format!(
                    "node {node:?} is not allowed to create pods with a non-nil configSource"
                ));
            }
            let forbidden = forbidden_labels(&modified_labels(obj, None));
            if !forbidden.is_empty() {
                return Err(format!(
                    "node {node:?} is not allowed to set the following labels: {}",
                    join(&forbidden)
                ));
            }
        }
        Operation::Update { old, new } => {
            let source = new.pointer("/spec/configSource").unwrap_or(&Value::Null);
            if !source.is_null() && Some(source) != old.pointer("/spec/configSource") {
                return Err(format!(
                    "node {node:?} is not allowed to update configSource to a new non-nil configSource"
                ));
            }
            if taints(old) != taints(new) {
                return Err(format!("node {node:?} is not allowed to modify taints"));
            }
            let forbidden = forbidden_labels(&modified_labels(new, Some(old)));
            if !forbidden.is_empty() {
                return Err(format!(
                    "is not allowed to modify labels: {}",
                    join(&forbidden)
                ));
            }
        }
        Operation::Delete(_) => {}
    }
    Ok(())
}

/// Taints, with an empty list the same as none (Go's semantic equality of nil and empty).
fn taints(node: &Value) -> &[Value] {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn join(labels: &BTreeSet<String>) -> String {
    labels.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// Keys added, removed or changed between `old` and `new`.
fn modified_labels(new: &Value, old: Option<&Value>) -> BTreeSet<String> {
    let new = meta::labels(new);
    let old = old.map(meta::labels).unwrap_or_default();
    let changed = |a: &serde_json::Map<String, Value>, b: &serde_json::Map<String, Value>| {
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>()
    };
    changed(&new, &old)
        .into_iter()
        .chain(changed(&old, &new))
        .collect()
}

fn label_domain(key: &str) -> &str {
    key.split_once('/').map_or("", |(d, _)| d)
}

fn in_domain(domain: &str, parent: &str) -> bool {
    domain == parent
        || domain
            .strip_suffix(parent)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// Whether a kubelet may set `key` (k8s.io/kubelet's `IsKubeletLabel`).
pub fn is_kubelet_label(key: &str) -> bool {
    KUBELET_LABELS.contains(&key)
        || KUBELET_LABEL_DOMAINS
            .iter()
            .any(|d| in_domain(label_domain(key), d))
}

/// The labels of `modified` a node may not set.
pub fn forbidden_labels(modified: &BTreeSet<String>) -> BTreeSet<String> {
    modified
        .iter()
        .filter(|key| {
            let domain = label_domain(key);
            let kubernetes = in_domain(domain, "kubernetes.io") || in_domain(domain, "k8s.io");
            in_domain(domain, NODE_RESTRICTION_DOMAIN) || (kubernetes && !is_kubelet_label(key))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn set(keys: &[&str]) -> BTreeSet<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn label_rules() {
        let allowed = [
            "kubernetes.io/hostname",
            "kubernetes.io/os",
            "kubernetes.io/arch",
            "beta.kubernetes.io/arch",
            "topology.kubernetes.io/zone",
            "node.kubernetes.io/instance-type",
            "node.kubernetes.io/anything",
            "x.kubelet.kubernetes.io/y",
            "fleetlet.dev/virtual-node",
            "plain",
            "example.com/kubernetes.io",
        ];
        assert!(forbidden_labels(&set(&allowed)).is_empty());
        let refused = [
            "kubernetes.io/role",
            "node-role.kubernetes.io/master",
            "node-restriction.kubernetes.io/x",
            "a.node-restriction.kubernetes.io/x",
            "k8s.io/x",
            "sub.k8s.io/x",
            "topology.kubernetes.io/rack",
        ];
        assert_eq!(forbidden_labels(&set(&refused)), set(&refused));
    }

    fn node(labels: Value, taints: Value) -> Value {
        json!({"metadata": {"name": "a", "labels": labels}, "spec": {"taints": taints}})
    }

    fn target<'a>(name: &'a str) -> Target<'a> {
        Target {
            group: "",
            resource: "nodes",
            subresource: "",
            namespace: "",
            name,
        }
    }

    #[test]
    fn nodes() {
        let user = UserInfo {
            username: "system:node:a".into(),
            uid: String::new(),
            groups: vec!["system:nodes".into()],
        };
        let taint = json!([{"key": "fleetlet.dev/virtual-node", "effect": "NoSchedule"}]);
        let own = node(
            json!({"kubernetes.io/hostname": "a", "fleetlet.dev/x": "1"}),
            taint.clone(),
        );
        assert!(admit(&user, &target("a"), &Operation::Create(&own)).is_ok());
        let e = admit(&user, &target("b"), &Operation::Create(&own)).unwrap_err();
        assert_eq!(
            e.message,
            "nodes \"b\" is forbidden: node \"a\" is not allowed to modify node \"b\""
        );
        let role = node(json!({"kubernetes.io/role": "agent"}), taint.clone());
        let e = admit(&user, &target("a"), &Operation::Create(&role)).unwrap_err();
        assert_eq!(
            e.message,
            "nodes \"a\" is forbidden: node \"a\" is not allowed to set the following labels: kubernetes.io/role"
        );
        let e = admit(
            &user,
            &target("a"),
            &Operation::Update {
                old: &own,
                new: &role,
            },
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "nodes \"a\" is forbidden: is not allowed to modify labels: kubernetes.io/role"
        );
        let untainted = node(
            json!({"kubernetes.io/hostname": "a", "fleetlet.dev/x": "1"}),
            json!([]),
        );
        let e = admit(
            &user,
            &target("a"),
            &Operation::Update {
                old: &own,
                new: &untainted,
            },
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "nodes \"a\" is forbidden: node \"a\" is not allowed to modify taints"
        );
        let untainted_old = node(json!({}), json!(null));
        let e = admit(
            &user,
            &target("a"),
            &Operation::Update {
                old: &untainted_old,
                new: &node(json!({"kubernetes.io/role": "x"}), json!([])),
            },
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "nodes \"a\" is forbidden: is not allowed to modify labels: kubernetes.io/role"
        );
        let admin = UserInfo::admin();
        assert!(admit(&admin, &target("b"), &Operation::Create(&role)).is_ok());
    }
}
