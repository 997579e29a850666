//! Reconcilers: [`virtual_node`] (a VirtualNode becomes a running virtual kubelet) and
//! [`device_backend`] (validate and report on backends), plus the per-node [`providers`] registry.

pub mod csr_approver;
pub mod device_backend;
pub mod providers;
pub mod virtual_node;

/// Errors of a reconcile; `reason()` is stable and used for conditions, Events and metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("object has no name")]
    NoName,
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube(_) => "ApiError",
            Self::Finalizer(_) => "FinalizerError",
            Self::NoName => "InvalidObject",
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Self::Kube(e)
    }
}

/// The server-side apply configuration of an object's status: the kind, the name and the whole status
/// the operator wants. Fields it omits (a condition that no longer applies) are removed by the server,
/// which a merge patch never did; `spec` is absent, so status never touches what users apply.
pub fn status_apply<K>(name: &str, status: &impl serde::Serialize) -> serde_json::Value
where
    K: kube::Resource<DynamicType = ()>,
{
    serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": { "name": name },
        "status": status,
    })
}

/// Status is the operator's alone: apply it with the one field manager and force, taking over fields a
/// previous version wrote with a patch instead of failing on a conflict.
pub fn status_apply_params() -> kube::api::PatchParams {
    kube::api::PatchParams::apply(fleetlet_crds::consts::FIELD_MANAGER).force()
}

/// kubectl's client-side apply keeps a copy of the whole object in this annotation.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Trim what the operator's caches keep of an object: `managedFields` and kubectl's last-applied copy
/// of the object, which nothing here reads (at fleet scale, kilobytes per node on a real API server).
pub fn prune<K: kube::Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            meta.annotations = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetlet_crds::{VirtualNode, VirtualNodeSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    #[test]
    fn status_apply_names_the_kind_and_holds_no_spec() {
        let status = fleetlet_crds::VirtualNodeStatus::default();
        let applied = status_apply::<VirtualNode>("edge-0", &status);
        assert_eq!(applied["apiVersion"], "fleetlet.dev/v1alpha1");
        assert_eq!(applied["kind"], "VirtualNode");
        assert_eq!(applied["metadata"]["name"], "edge-0");
        assert!(applied.get("spec").is_none());
        let pp = status_apply_params();
        assert_eq!(pp.field_manager.as_deref(), Some("fleetlet"));
        assert!(pp.force);
    }

    #[test]
    fn prune_drops_managed_fields_and_the_last_applied_copy_only() {
        let mut vn = VirtualNode::new("edge-0", VirtualNodeSpec::default());
        vn.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        vn.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_string(), "{...}".to_string()),
                ("team".to_string(), "edge".to_string()),
            ]
            .into(),
        );
        prune(&mut vn);
        assert_eq!(vn.metadata.managed_fields, None);
        assert_eq!(
            vn.metadata.annotations,
            Some([("team".to_string(), "edge".to_string())].into())
        );
        vn.metadata.annotations = Some([(LAST_APPLIED.to_string(), String::new())].into());
        prune(&mut vn);
        assert_eq!(vn.metadata.annotations, None);
    }
}
