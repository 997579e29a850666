//! The Node authorizer and the `system:node` RBAC rules, for one node identity.
//!
//! Subdivided like kube-apiserver's Node authorizer: Secrets, ConfigMaps and PersistentVolumeClaims
//! only when a pod bound to the node references them (the authorizer's graph, computed from the
//! store on each request); Leases only `kube-node-lease/<node>`; Pods as with the
//! `AuthorizeNodeWithSelectors` feature (1.32+): get a pod bound to the node, list/watch only with
//! the field selector `spec.nodeName=<node>`, create/delete (NodeRestriction narrows them), update
//! or patch `pods/status`. Everything else goes through the static `system:node` rules, where Nodes
//! are readable (get/list/watch) by every node and writable (NodeRestriction narrows that to its own).
//! Not modelled: PersistentVolumes, VolumeAttachments, ServiceAccount tokens, CSINodes and
//! ResourceSlices (refused).

use serde_json::Value;

use super::{Attributes, Decision};
use crate::meta;
use crate::store::Store;

/// The namespace of node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

const READ: &[&str] = &["get", "list", "watch"];

/// One rule of the bootstrap `system:node` ClusterRole: groups, `resource[/subresource]`s, verbs.
type Rule = (
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

/// The `system:node` rules not subdivided by the Node authorizer.
const NODE_RULES: &[Rule] = &[
    (&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
    (
        &["authorization.k8s.io"],
        &["subjectaccessreviews", "localsubjectaccessreviews"],
        &["create"],
    ),
    (&[""], &["services"], READ),
    (
        &[""],
        &["nodes"],
        &[
            "create", "get", "list", "watch", "update", "patch", "delete",
        ],
    ),
    (&[""], &["nodes/status"], &["update", "patch"]),
    (
        &["", "events.k8s.io"],
        &["events"],
        &["create", "update", "patch"],
    ),
    (&[""], &["endpoints"], &["get"]),
    (
        &["certificates.k8s.io"],
        &["certificatesigningrequests"],
        &["create", "get", "list", "watch"],
    ),
    (&["node.k8s.io"], &["runtimeclasses"], READ),
    (&["storage.k8s.io"], &["csidrivers"], READ),
];

fn rules_allow(a: &Attributes) -> bool {
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    NODE_RULES.iter().any(|(groups, resources, verbs)| {
        groups.contains(&a.group.as_str())
            && resources.contains(&resource.as_str())
            && verbs.contains(&a.verb.as_str())
    })
}

/// Decides a request of node `node` (user `username`).
pub fn authorize(store: &Store, node: &str, username: &str, a: &Attributes) -> Decision {
    if node.is_empty() {
        return Decision::deny(format!("unknown node for user {username:?}"));
    }
    if a.resource.is_empty() {
        // Discovery, version, health and OpenAPI: system:discovery and system:public-info-viewer.
        return Decision::Allow;
    }
    match (a.group.as_str(), a.resource.as_str()) {
        ("", "secrets" | "configmaps") => read_namespaced(store, node, a),
        ("", "persistentvolumeclaims") => get_related(store, node, a),
        ("coordination.k8s.io", "leases") => lease(node, a),
        ("", "pods") => pod(store, node, a),
        _ if rules_allow(a) => Decision::Allow,
        _ => Decision::deny(""),
    }
}

fn no_relationship(node: &str) -> Decision {
    Decision::deny(format!(
        "no relationship found between node '{node}' and this object"
    ))
}

fn read_namespaced(store: &Store, node: &str, a: &Attributes) -> Decision {
    if !READ.contains(&a.verb.as_str()) {
        return Decision::deny("can only read resources of this type");
    }
    if !a.subresource.is_empty() {
        return Decision::deny("cannot read subresource");
    }
    if a.namespace.is_empty() {
        return Decision::deny("can only read namespaced object of this type");
    }
    related(store, node, a)
}

fn get_related(store: &Store, node: &str, a: &Attributes) -> Decision {
    if a.verb != "get" {
        return Decision::deny("can only get individual resources of this type");
    }
    if !a.subresource.is_empty() {
        return Decision::deny("cannot get subresource");
    }
    related(store, node, a)
}

/// Whether the named object is on a path to the node in the Node authorizer's graph.
fn related(store: &Store, node: &str, a: &Attributes) -> Decision {
    if a.name.is_empty() {
        return Decision::deny("No Object name found");
    }
    let found = bound_pods(store, node, Some(&a.namespace))
        .iter()
        .any(|pod| match a.resource.as_str() {
            "pods" => meta::name(pod) == a.name,
            kind => pod_references(pod, kind).iter().any(|n| *n == a.name),
        });
    if found {
        Decision::Allow
    } else {
        no_relationship(node)
    }
}

/// The pods bound to `node` (in `namespace`, when given).
fn bound_pods(store: &Store, node: &str, namespace: Option<&str>) -> Vec<Value> {
    let Some(def) = store.find_def("", "v1", "pods") else {
        return Vec::new();
    };
    let (pods, _) = store.list(&def, namespace);
    pods.into_iter()
        .filter(|p| meta::str_at(p, &["spec", "nodeName"]) == Some(node))
        .collect()
}

/// Names of the `kind` objects (`secrets`, `configmaps`, `persistentvolumeclaims`) a pod uses:
/// volumes (also projected), env and envFrom of every container, image pull secrets.
pub fn pod_references<'a>(pod: &'a Value, kind: &str) -> Vec<&'a str> {
    let spec = &pod["spec"];
    let mut out = Vec::new();
    let mut push = |v: &'a Value| {
        if let Some(n) = v.as_str().filter(|n| !n.is_empty()) {
            out.push(n);
        }
    };
    let (volume_key, volume_name, env_key) = match kind {
        "secrets" => ("secret", "secretName", "secretKeyRef"),
        "configmaps" => ("configMap", "name", "configMapKeyRef"),
        "persistentvolumeclaims" => ("persistentVolumeClaim", "claimName", ""),
        _ => return Vec::new(),
    };
    let items = |v: &'a Value| v.as_array().into_iter().flatten();
    for vol in items(&spec["volumes"]) {
        push(&vol[volume_key][volume_name]);
        for src in items(&vol["projected"]["sources"]) {
            push(&src[volume_key]["name"]);
        }
    }
    if kind == "secrets" {
        for s in items(&spec["imagePullSecrets"]) {
            push(&s["name"]);
        }
    }
    if !env_key.is_empty() {
        let env_from_key = if kind == "secrets" {
            "secretRef"
        } else {
            "configMapRef"
        };
        for list in ["initContainers", "containers", "ephemeralContainers"] {
            for c in items(&spec[list]) {
                for e in items(&c["env"]) {
                    push(&e["valueFrom"][env_key]["name"]);
                }
                for e in items(&c["envFrom"]) {
                    push(&e[env_from_key]["name"]);
                }
            }
        }
    }
    out
}

fn lease(node: &str, a: &Attributes) -> Decision {
    if !["get", "create", "update", "patch", "delete"].contains(&a.verb.as_str()) {
        return Decision::deny("can only get, create, update, patch, or delete a node lease");
    }
    if a.namespace != NODE_LEASE_NAMESPACE {
        return Decision::deny(format!(
            "can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"
        ));
    }
    // On create the name is not known here; NodeRestriction checks the object.
    if a.verb != "create" && a.name != node {
        return Decision::deny(
            "can only access node lease with the same name as the requesting node",
        );
    }
    Decision::Allow
}

fn pod(store: &Store, node: &str, a: &Attributes) -> Decision {
    match (a.subresource.as_str(), a.verb.as_str()) {
        ("", "get") => related(store, node, a),
        ("", "list" | "watch") if a.selects("spec.nodeName", node) => Decision::Allow,
        ("", "list" | "watch") if !a.name.is_empty() => related(store, node, a),
        ("", "list" | "watch") => {
            Decision::deny("can only list/watch pods with spec.nodeName field selector")
        }
        // NodeRestriction limits these to the node's own (mirror) pods.
        ("", "create" | "delete") | ("status", "update" | "patch") | ("eviction", "create") => {
            Decision::Allow
        }
        _ => Decision::deny(""),
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
