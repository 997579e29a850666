//! What a node remembers of its Node's status as the API last showed it, and whether a report would
//! change it: a digest of the reported fields and the conditions' transition times, not the status
//! itself (a cloned NodeStatus is kilobytes per node).

use k8s_openapi::api::core::v1::NodeStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::pod::env::scaled_ceil;

/// What a node keeps of its Node's status as the API last showed it: the conditions' transition times
/// and a digest of the fields a report would set, not the status itself (kilobytes per node).
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    digest: u64,
    /// (type, status, lastTransitionTime) of each condition.
    pub(super) transitions: Box<[(String, String, Option<Time>)]>,
}

impl Observed {
    pub fn of(status: &NodeStatus) -> Self {
        let transitions = status
            .conditions
            .iter()
            .flatten()
            .map(|c| {
                (
                    c.type_.clone(),
                    c.status.clone(),
                    c.last_transition_time.clone(),
                )
            })
            .collect();
        Self {
            digest: digest(status),
            transitions,
        }
    }
}

/// Whether `wanted` differs from `observed` in anything but heartbeat times: the trigger for an early
/// status report. Someone else flipping Ready (the node lifecycle controller) counts as a difference.
pub fn differs(wanted: &NodeStatus, observed: Option<&Observed>) -> bool {
    observed.is_none_or(|o| digest(wanted) != o.digest)
}

/// A digest of what `differs` compares: the fields a virtual node reports (images, volumes and config
/// never are), conditions without their times and in type order, nodeInfo without the boot ID.
fn digest(status: &NodeStatus) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut s = status.clone();
    for c in s.conditions.iter_mut().flatten() {
        c.last_heartbeat_time = None;
        c.last_transition_time = None;
    }
    if let Some(cs) = s.conditions.as_mut() {
        cs.sort_by(|a, b| a.type_.cmp(&b.type_))
    }
    // The API server stores quantities in canonical form ("1024Mi" comes back "1Gi", "1000m" as
    // "1"): compare values, or every report would look like a change.
    for q in [s.capacity.as_mut(), s.allocatable.as_mut()]
        .into_iter()
        .flatten()
        .flat_map(|m| m.values_mut())
    {
        if let Some(v) = scaled_ceil(q, 9) {
            q.0 = v.to_string();
        }
    }
    let owned = NodeStatus {
        addresses: s.addresses,
        allocatable: s.allocatable,
        capacity: s.capacity,
        conditions: s.conditions,
        daemon_endpoints: s.daemon_endpoints,
        node_info: s.node_info.map(|mut i| {
            i.boot_id.clear();
            i
        }),
        ..Default::default()
    };
    // Quantities and maps serialize canonically (BTreeMap order); a fixed-key hasher, so digests of
    // the same status agree within the process.
    let mut h = std::hash::DefaultHasher::new();
    serde_json::to_vec(&owned).unwrap_or_default().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_compare_by_value() {
        let n = |q: &str| {
            scaled_ceil(
                &k8s_openapi::apimachinery::pkg::api::resource::Quantity(q.into()),
                9,
            )
            .unwrap()
        };
        assert_eq!(n("1Gi"), n("1024Mi"));
        assert_eq!(n("1"), n("1000m"));
        assert_eq!(n("1.5k"), n("1500"));
        assert_eq!(n("2e3"), n("2k"));
        assert_eq!(n("100u"), n("0.1m"));
        assert_eq!(n("16303484Ki"), 16_303_484 * 1024 * 1_000_000_000);
        assert_ne!(n("1G"), n("1Gi"));
    }
}
