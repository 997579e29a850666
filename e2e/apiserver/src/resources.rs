//! The resource registry entries: what a resource is called, where it lives (group, versions, scope),
//! which subresources and verbs it has, and — for custom resources — its CRD (schemas, printer columns).

use std::sync::Arc;

use serde_json::Value;

use crate::conversion::StorageAlias;

/// Verbs of an ordinary CRUD resource, as discovery lists them.
pub const CRUD_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Per-version data of a custom resource.
#[derive(Debug, Clone)]
pub struct CrdVersion {
    pub name: String,
    pub schema: Option<Value>,
    pub printer_columns: Vec<Value>,
}

/// A resource served by the test apiserver.
#[derive(Debug, Clone)]
pub struct ResourceDef {
    pub group: String,
    /// Served versions, preferred (storage) first.
    pub versions: Vec<String>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    /// Subresources served besides the main resource (`status`, `binding`, `approval`, and the
    /// kubelet-backed `log`, `exec`, `attach`, `portforward`, `proxy`).
    pub subresources: Vec<String>,
    pub verbs: Vec<String>,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Set for custom resources.
    pub crd: Option<Arc<Vec<CrdVersion>>>,
    /// Set when the objects are stored as another resource's (`events.k8s.io` Events are core Events).
    pub storage: Option<StorageAlias>,
}

impl ResourceDef {
    /// The storage key: `plural` for the core group, `plural.group` otherwise, or the aliased resource's.
    pub fn key(&self) -> String {
        match &self.storage {
            Some(alias) => alias.key.to_string(),
            None => self.qualified(),
        }
    }

    /// `pods`, `leases.coordination.k8s.io` — how kube-apiserver names a resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    pub fn preferred_version(&self) -> &str {
        self.versions.first().map(String::as_str).unwrap_or("v1")
    }

    pub fn has_status(&self) -> bool {
        self.subresources.iter().any(|s| s == "status")
    }

    pub fn is(&self, group: &str, plural: &str) -> bool {
        self.group == group && self.plural == plural
    }

    pub fn can(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    pub fn crd_version(&self, version: &str) -> Option<&CrdVersion> {
        self.crd
            .as_ref()
            .and_then(|vs| vs.iter().find(|v| v.name == version))
    }
}

struct B {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    subs: &'static [&'static str],
    short: &'static [&'static str],
    create_only: bool,
    storage: Option<StorageAlias>,
}

fn b(group: &'static str, plural: &'static str, kind: &'static str, namespaced: bool) -> B {
    B {
        group,
        version: "v1",
        plural,
        kind,
        namespaced,
        subs: &[],
        short: &[],
        create_only: false,
        storage: None,
    }
}

/// The built-in resources (a subset of kube-apiserver's that fleetlet uses).
pub fn builtins() -> Vec<ResourceDef> {
    let list = vec![
        B {
            subs: &["status", "finalize"],
            short: &["ns"],
            ..b("", "namespaces", "Namespace", false)
        },
        B {
            subs: &["status", "proxy"],
            short: &["no"],
            ..b("", "nodes", "Node", false)
        },
        B {
            subs: &["status", "binding", "attach", "exec", "log", "portforward"],
            short: &["po"],
            ..b("", "pods", "Pod", true)
        },
        B {
            short: &["cm"],
            ..b("", "configmaps", "ConfigMap", true)
        },
        b("", "secrets", "Secret", true),
        B {
            subs: &["status"],
            short: &["svc"],
            ..b("", "services", "Service", true)
        },
        B {
            short: &["sa"],
            ..b("", "serviceaccounts", "ServiceAccount", true)
        },
        B {
            short: &["ev"],
            ..b("", "events", "Event", true)
        },
        b("coordination.k8s.io", "leases", "Lease", true),
        B {
            short: &["ev"],
            storage: Some(crate::conversion::EVENTS_V1),
            ..b("events.k8s.io", "events", "Event", true)
        },
        B {
            subs: &["status", "approval"],
            short: &["csr"],
            ..b(
                "certificates.k8s.io",
                "certificatesigningrequests",
                "CertificateSigningRequest",
                false,
            )
        },
        B {
            subs: &["status"],
            short: &["crd", "crds"],
            ..b(
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
            )
        },
        B {
            create_only: true,
            ..b(
                "authentication.k8s.io",
                "tokenreviews",
                "TokenReview",
                false,
            )
        },
        B {
            create_only: true,
            ..b(
                "authorization.k8s.io",
                "subjectaccessreviews",
                "SubjectAccessReview",
                false,
            )
        },
    ];
    list.into_iter()
        .map(|x| ResourceDef {
            group: x.group.into(),
            versions: vec![x.version.into()],
            plural: x.plural.into(),
            singular: x.kind.to_lowercase(),
            kind: x.kind.into(),
            namespaced: x.namespaced,
            subresources: x.subs.iter().map(|s| s.to_string()).collect(),
            verbs: if x.create_only {
                vec!["create".into()]
            } else if x.plural == "namespaces" {
                CRUD_VERBS
                    .iter()
                    .filter(|v| **v != "deletecollection")
                    .map(|s| s.to_string())
                    .collect()
            } else {
                CRUD_VERBS.iter().map(|s| s.to_string()).collect()
            },
            short_names: x.short.iter().map(|s| s.to_string()).collect(),
            categories: if matches!(x.plural, "pods" | "services") {
                vec!["all".into()]
            } else {
                vec![]
            },
            crd: None,
            storage: x.storage,
        })
        .collect()
}

/// The kind discovery names for a subresource of `def`.
pub fn subresource_kind<'a>(def: &'a ResourceDef, sub: &str) -> &'a str {
    match (def.kind.as_str(), sub) {
        (_, "binding") => "Binding",
        ("Pod", "attach") => "PodAttachOptions",
        ("Pod", "exec") => "PodExecOptions",
        ("Pod", "portforward") => "PodPortForwardOptions",
        ("Node", "proxy") => "NodeProxyOptions",
        (kind, _) => kind,
    }
}

/// The subresource verbs discovery lists.
pub fn subresource_verbs(sub: &str) -> Vec<&'static str> {
    match sub {
        "binding" => vec!["create"],
        "attach" | "exec" | "portforward" => vec!["create", "get"],
        "log" => vec!["get"],
        "proxy" => vec!["create", "delete", "get", "patch", "update"],
        "finalize" => vec!["update"],
        _ => vec!["get", "patch", "update"],
    }
}
