//! Whether a VirtualNode status is worth writing yet (pure).
//!
//! A node brought up normally passes through statuses that say only "still starting" (Ready=False,
//! reason Pending or CertificatePending; or Ready while its serving certificate is still being issued,
//! which follows registration as on a kubelet) for well under a second before it is Ready with its
//! certificates. Writing each of them costs an API write that is stale when it lands: at fleet scale,
//! most of a bring-up's writes. So for a VirtualNode created less than [`HOLD`] ago, such a status is
//! not written; the reconcile is requeued for when the hold ends, and any change of the node's state
//! reconciles sooner. A node that comes up within the hold has its first status written once, Ready;
//! one that does not shows where it is when the hold ends. Anything else (a failure, a blocked backend)
//! is written at once. The Node object is not held: it is Ready as soon as it is registered.
//!
//! The pod count (`status.pods`) changes with every heartbeat of a busy node; a change of it alone is
//! written at most every [`POD_COUNT_REFRESH`] (the forwarding of node state in the reconciler uses
//! [`only_pod_count_changed`]).

use std::time::Duration;

use fleetlet_crds::consts::{condition, reason};
use fleetlet_crds::{VirtualNode, VirtualNodeStatus};
use jiff::Timestamp;
use vk_runtime::fleet::NodeState;

/// How long after its creation a VirtualNode may go without a "still starting" status.
pub const HOLD: Duration = Duration::from_secs(5);

/// A change of the node's pod count alone reaches the VirtualNode status at most this often.
pub const POD_COUNT_REFRESH: Duration = Duration::from_secs(60);

/// Whether the only difference between two node states is the pod count.
pub fn only_pod_count_changed(before: &NodeState, after: &NodeState) -> bool {
    before.pods != after.pods
        && NodeState {
            pods: after.pods,
            ..before.clone()
        } == *after
}

/// Whether `status` says only that the node is still starting: not Ready because it is still being
/// registered or its client certificate issued, or Ready with its certificates still being issued.
pub fn starting(status: &VirtualNodeStatus) -> bool {
    let pending = |type_: &str| {
        fleetlet_crds::conditions::find(&status.conditions, type_).is_some_and(|c| {
            c.status == "False"
                && (c.reason == reason::PENDING || c.reason == reason::CERTIFICATE_PENDING)
        })
    };
    let ready = fleetlet_crds::conditions::find(&status.conditions, condition::READY)
        .is_some_and(|c| c.status == "True");
    pending(condition::READY) || (ready && pending(condition::CERTIFICATES_READY))
}

/// How long to wait before writing `status` for `vn`; `None`: write it now.
pub fn hold(vn: &VirtualNode, status: &VirtualNodeStatus, now: Timestamp) -> Option<Duration> {
    if !starting(status) {
        return None;
    }
    let created = vn.metadata.creation_timestamp.as_ref()?.0;
    let age = now.duration_since(created);
    let left = jiff::SignedDuration::try_from(HOLD).ok()? - age;
    // Never longer than HOLD, whatever the clocks of the API server and the operator say.
    Duration::try_from(left)
        .ok()
        .filter(|d| !d.is_zero())
        .map(|d| d.min(HOLD))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetlet_crds::conditions::{Wanted, set_condition};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn vn(created: i64) -> VirtualNode {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "fleetlet.dev/v1alpha1", "kind": "VirtualNode",
            "metadata": {"name": "edge-0", "generation": 1,
                "creationTimestamp": Timestamp::from_second(created).unwrap().to_string()},
            "spec": {"backendRef": {"name": "sim"}}
        }))
        .unwrap()
    }

    fn status(ready: bool, why: &str) -> VirtualNodeStatus {
        let mut st = VirtualNodeStatus::default();
        let now = Time(Timestamp::UNIX_EPOCH);
        set_condition(
            &mut st.conditions,
            Wanted::new(condition::READY, ready, why, "m"),
            Some(1),
            &now,
        );
        st
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn a_starting_status_of_a_new_node_waits_until_the_hold_ends() {
        let v = vn(1000);
        for why in [reason::PENDING, reason::CERTIFICATE_PENDING] {
            assert_eq!(
                hold(&v, &status(false, why), at(1002)),
                Some(HOLD - Duration::from_secs(2)),
                "{why}"
            );
        }
        assert_eq!(hold(&v, &status(false, reason::PENDING), at(1005)), None);
        assert_eq!(hold(&v, &status(false, reason::PENDING), at(2000)), None);
    }

    #[test]
    fn ready_with_certificates_still_pending_waits_too() {
        let v = vn(1000);
        let mut st = status(true, reason::RUNNING);
        let now = Time(Timestamp::UNIX_EPOCH);
        set_condition(
            &mut st.conditions,
            Wanted::new(
                condition::CERTIFICATES_READY,
                false,
                reason::CERTIFICATE_PENDING,
                "m",
            ),
            Some(1),
            &now,
        );
        assert_eq!(hold(&v, &st, at(1001)), Some(HOLD - Duration::from_secs(1)));
        assert_eq!(hold(&v, &st, at(1005)), None, "written when the hold ends");
        set_condition(
            &mut st.conditions,
            Wanted::new(
                condition::CERTIFICATES_READY,
                false,
                "CertificateDenied",
                "m",
            ),
            Some(1),
            &now,
        );
        assert_eq!(hold(&v, &st, at(1001)), None, "a failure is news");
    }

    #[test]
    fn ready_and_failures_are_written_at_once() {
        let v = vn(1000);
        assert_eq!(hold(&v, &status(true, reason::RUNNING), at(1000)), None);
        for why in [
            reason::REGISTRATION_FAILED,
            reason::BACKEND_NOT_FOUND,
            reason::BACKEND_UNHEALTHY,
        ] {
            assert_eq!(hold(&v, &status(false, why), at(1000)), None, "{why}");
        }
        assert_eq!(hold(&v, &VirtualNodeStatus::default(), at(1000)), None);
    }

    #[test]
    fn pod_count_changes_are_told_apart_from_other_changes() {
        let a = NodeState {
            registered: true,
            error: None,
            health: vk_runtime::Health::healthy(),
            pods: 1,
            identity: None,
        };
        let more = NodeState {
            pods: 2,
            ..a.clone()
        };
        assert!(only_pod_count_changed(&a, &more));
        assert!(!only_pod_count_changed(&a, &a.clone()));
        let failing = NodeState {
            error: Some("lease renewal failed".into()),
            ..more.clone()
        };
        assert!(!only_pod_count_changed(&a, &failing));
        assert!(!only_pod_count_changed(&more, &failing));
    }
}
