//! Small readers of API objects shared by the scenarios: conditions, phases, lease renewals, and the
//! random kubelet port base each operator under test gets.

use fleetlet_crds::VirtualNode;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;

/// A kubelet port base of its own (a block of [`PORT_BLOCK`] ports), so parallel operators never collide.
pub fn port_base() -> String {
    port_block().to_string()
}

/// Ports per block handed out by [`port_block`].
pub const PORT_BLOCK: u16 = 100;

/// The first port of a block no other caller in this process gets (until the pool wraps after 220 blocks).
///
/// Blocks lie in 10000-31999, below Linux's ephemeral range (32768-60999): ports the kernel hands to outgoing
/// connections and to `bind(0)` (the test apiserver, kubectl) never land in them. The pool starts at a random
/// block so that consecutive test binaries do not reuse the ports of the one before, which may linger in TIME_WAIT.
pub fn port_block() -> u16 {
    use rand::Rng;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU16, Ordering};
    const BLOCKS: u16 = 220;
    static NEXT: OnceLock<AtomicU16> = OnceLock::new();
    let next = NEXT.get_or_init(|| AtomicU16::new(rand::rng().random_range(0..BLOCKS)));
    10000 + PORT_BLOCK * (next.fetch_add(1, Ordering::Relaxed) % BLOCKS)
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
