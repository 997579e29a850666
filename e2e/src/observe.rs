//! Small readers of API objects shared by the scenarios: conditions, phases, lease renewals, and the
//! random kubelet port base each operator under test gets.

use fleetlet_crds::VirtualNode;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;

/// A random kubelet port base (20000-59900, step 100), so parallel operators never collide.
pub fn port_base() -> String {
    use rand::Rng;
    (20000 + 100 * rand::rng().random_range(0..400u16)).to_string()
}

/// `(status, lastTransitionTime)` of the Node condition `type_`.
pub fn node_condition(node: &Node, type_: &str) -> Option<(String, String)> {
    let c = node
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((
        c.status.clone(),
        c.last_transition_time
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
    ))
}

/// Whether the Node is Ready.
pub fn node_ready(node: &Node) -> bool {
    node_condition(node, "Ready").is_some_and(|(status, _)| status == "True")
}

/// `(status, reason, lastTransitionTime)` of the VirtualNode condition `type_`.
pub fn vnode_condition(vn: &VirtualNode, type_: &str) -> Option<(String, String, String)> {
    let c = vn
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((
        c.status.clone(),
        c.reason.clone(),
        c.last_transition_time.0.to_string(),
    ))
}

/// The pod's phase.
pub fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

/// When the Lease `name` was last renewed.
pub async fn renew_time(leases: &Api<Lease>, name: &str) -> Option<jiff::Timestamp> {
    leases
        .get_opt(name)
        .await
        .ok()
        .flatten()?
        .spec?
        .renew_time
        .map(|t| t.0)
}
