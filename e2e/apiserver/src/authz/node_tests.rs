//! Unit tests of the Node authorizer.
#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;

fn attrs(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
    Attributes {
        verb: verb.into(),
        group: group.into(),
        resource: resource.into(),
        subresource: sub.into(),
        namespace: ns.into(),
        name: name.into(),
        ..Default::default()
    }
}

#[test]
fn static_rules() {
    let store = Store::new(10);
    let allowed = |a: Attributes| authorize(&store, "a", "system:node:a", &a) == Decision::Allow;
    assert!(allowed(attrs("list", "", "nodes", "", "", "")));
    assert!(
        allowed(attrs("patch", "", "nodes", "status", "", "b")),
        "NodeRestriction decides"
    );
    assert!(allowed(attrs(
        "create",
        "events.k8s.io",
        "events",
        "",
        "default",
        ""
    )));
    assert!(allowed(attrs("create", "", "events", "", "default", "")));
    assert!(!allowed(attrs("delete", "", "events", "", "default", "e")));
    assert!(allowed(attrs(
        "create",
        "authentication.k8s.io",
        "tokenreviews",
        "",
        "",
        ""
    )));
    assert!(allowed(attrs(
        "watch",
        "certificates.k8s.io",
        "certificatesigningrequests",
        "",
        "",
        ""
    )));
    assert!(!allowed(attrs(
        "update",
        "certificates.k8s.io",
        "certificatesigningrequests",
        "approval",
        "",
        "x"
    )));
    assert!(!allowed(attrs("create", "", "nodes", "proxy", "", "a")));
    assert!(!allowed(attrs(
        "list",
        "fleetlet.dev",
        "virtualnodes",
        "",
        "",
        ""
    )));
    assert!(!allowed(attrs(
        "create", "", "pods", "exec", "default", "p"
    )));
    assert!(allowed(attrs("get", "", "", "", "", "")), "discovery");
    assert_eq!(
        authorize(
            &store,
            "",
            "system:node:",
            &attrs("get", "", "nodes", "", "", "x")
        ),
        Decision::deny("unknown node for user \"system:node:\"")
    );
}

#[test]
fn leases() {
    let store = Store::new(10);
    let d = |verb: &str, ns: &str, name: &str| {
        authorize(
            &store,
            "a",
            "system:node:a",
            &attrs(verb, "coordination.k8s.io", "leases", "", ns, name),
        )
    };
    assert_eq!(d("update", NODE_LEASE_NAMESPACE, "a"), Decision::Allow);
    assert_eq!(d("create", NODE_LEASE_NAMESPACE, ""), Decision::Allow);
    assert_eq!(
        d("get", NODE_LEASE_NAMESPACE, "b"),
        Decision::deny("can only access node lease with the same name as the requesting node")
    );
    assert!(matches!(d("get", "default", "a"), Decision::Deny(_)));
    assert!(matches!(
        d("list", NODE_LEASE_NAMESPACE, ""),
        Decision::Deny(_)
    ));
}

#[test]
fn references() {
    let pod = json!({"spec": {
        "volumes": [{"secret": {"secretName": "s1"}}, {"configMap": {"name": "c1"}},
            {"projected": {"sources": [{"secret": {"name": "s2"}}, {"configMap": {"name": "c2"}}]}},
            {"persistentVolumeClaim": {"claimName": "pvc"}}],
        "imagePullSecrets": [{"name": "pull"}],
        "containers": [{"env": [{"valueFrom": {"secretKeyRef": {"name": "s3"}}},
            {"valueFrom": {"configMapKeyRef": {"name": "c3"}}}],
            "envFrom": [{"secretRef": {"name": "s4"}}, {"configMapRef": {"name": "c4"}}]}],
        "initContainers": [{"envFrom": [{"secretRef": {"name": "s5"}}]}]}});
    let mut s = pod_references(&pod, "secrets");
    s.sort();
    assert_eq!(s, ["pull", "s1", "s2", "s3", "s4", "s5"]);
    let mut c = pod_references(&pod, "configmaps");
    c.sort();
    assert_eq!(c, ["c1", "c2", "c3", "c4"]);
    assert_eq!(pod_references(&pod, "persistentvolumeclaims"), ["pvc"]);
}

#[test]
fn pods_by_binding() {
    let store = Store::new(10);
    let def = store.find_def("", "v1", "pods").unwrap();
    for (name, node) in [("mine", "a"), ("theirs", "b")] {
        store
            .create(
                &def,
                json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}],
                    "volumes": [{"secret": {"secretName": format!("{name}-secret")}}]}}),
            )
            .unwrap();
    }
    let d = |a: Attributes| authorize(&store, "a", "system:node:a", &a);
    assert_eq!(
        d(attrs("get", "", "pods", "", "default", "mine")),
        Decision::Allow
    );
    assert_eq!(
        d(attrs("get", "", "pods", "", "default", "theirs")),
        no_relationship("a")
    );
    assert_eq!(
        d(attrs("get", "", "secrets", "", "default", "mine-secret")),
        Decision::Allow
    );
    assert_eq!(
        d(attrs("get", "", "secrets", "", "default", "theirs-secret")),
        no_relationship("a")
    );
    assert_eq!(
        d(attrs("list", "", "pods", "", "", "")),
        Decision::deny("can only list/watch pods with spec.nodeName field selector")
    );
    let mut scoped = attrs("watch", "", "pods", "", "", "");
    scoped.field_selector = "spec.nodeName=a".into();
    assert_eq!(d(scoped.clone()), Decision::Allow);
    scoped.field_selector = "spec.nodeName=b".into();
    assert!(matches!(d(scoped), Decision::Deny(_)));
    assert_eq!(
        d(attrs("patch", "", "pods", "status", "default", "theirs")),
        Decision::Allow,
        "NodeRestriction decides"
    );
    assert!(matches!(
        d(attrs("update", "", "pods", "", "default", "mine")),
        Decision::Deny(_)
    ));
}
