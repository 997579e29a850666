//! Pure steps of the VirtualNode reconcile: the Node configuration a VirtualNode asks for, and the
//! status conditions a node's runtime state means.

use std::collections::BTreeMap;

use fleetlet_crds::conditions::{Wanted, set_condition};
use fleetlet_crds::consts::{
    LABEL_BACKEND, LABEL_VIRTUAL_NODE, TAINT_VIRTUAL_NODE, condition, reason,
};
use fleetlet_crds::{VirtualNode, VirtualNodeStatus};
use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use vk_runtime::certs::{CertState, IdentityState};
use vk_runtime::fleet::NodeState;
use vk_runtime::node::NodeConfig;

/// The Node configuration for `vn`, whose kubelet endpoint is `address:port`.
pub fn node_config(name: &str, vn: &VirtualNode, address: &str, port: u16) -> NodeConfig {
    let mut labels: BTreeMap<String, String> = vn.spec.labels.clone().unwrap_or_default();
    labels.insert(LABEL_VIRTUAL_NODE.into(), "true".into());
    labels.insert(LABEL_BACKEND.into(), vn.spec.backend_ref.name.clone());
    let taints = vn.spec.taints.clone().unwrap_or_else(|| {
        vec![Taint {
            key: TAINT_VIRTUAL_NODE.into(),
            value: Some("true".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        }]
    });
    NodeConfig {
        name: name.to_string(),
        labels,
        taints,
        address: address.to_string(),
        kubelet_port: port,
        capacity_override: vn.spec.capacity.clone().unwrap_or_default(),
    }
}

/// Why a VirtualNode cannot run, for conditions and Events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub reason: &'static str,
    pub message: String,
}

/// The status for a VirtualNode: either running (with its runtime state) or blocked.
pub fn status(
    vn: &VirtualNode,
    outcome: Result<(&NodeState, &str), &Blocked>,
    now: &Time,
) -> VirtualNodeStatus {
    let generation = vn.metadata.generation;
    let mut st = vn.status.clone().unwrap_or_default();
    let conds: &mut Vec<Condition> = &mut st.conditions;
    match outcome {
        Err(b) => {
            set_condition(
                conds,
                Wanted::new(
                    condition::BACKEND_REACHABLE,
                    false,
                    b.reason,
                    b.message.clone(),
                ),
                generation,
                now,
            );
            set_condition(
                conds,
                Wanted::new(
                    condition::NODE_REGISTERED,
                    false,
                    b.reason,
                    "the virtual node is not running".to_string(),
                ),
                generation,
                now,
            );
            set_condition(
                conds,
                Wanted::new(condition::READY, false, b.reason, b.message.clone()),
                generation,
                now,
            );
            st.kubelet_endpoint = None;
        }
        Ok((state, endpoint)) => {
            let h = &state.health;
            set_condition(
                conds,
                Wanted::new(
                    condition::BACKEND_REACHABLE,
                    h.ready,
                    if h.ready {
                        reason::BACKEND_HEALTHY
                    } else {
                        &h.reason
                    },
                    h.message.clone(),
                ),
                generation,
                now,
            );
            let (reg_reason, reg_msg) = match (&state.registered, &state.error) {
                (true, None) => (
                    reason::REGISTERED,
                    "Node is registered and its lease is renewed".to_string(),
                ),
                (true, Some(e)) => (reason::REGISTERED, format!("Node is registered; {e}")),
                (false, Some(e)) => (reason::REGISTRATION_FAILED, e.clone()),
                (false, None) => (reason::PENDING, "registering the Node".to_string()),
            };
            set_condition(
                conds,
                Wanted::new(
                    condition::NODE_REGISTERED,
                    state.registered,
                    reg_reason,
                    reg_msg.clone(),
                ),
                generation,
                now,
            );
            let certs = state.identity.as_ref().map(certificates);
            if let Some((ok, why, msg)) = &certs {
                set_condition(
                    conds,
                    Wanted::new(condition::CERTIFICATES_READY, *ok, why, msg.clone()),
                    generation,
                    now,
                );
            }
            let client_missing = state.identity.as_ref().is_some_and(|i| !i.client.usable());
            let (ready, why, msg) = if !state.registered && client_missing {
                let (_, why, msg) =
                    certs.unwrap_or((false, reason::CERTIFICATE_PENDING, String::new()));
                (false, why, msg)
            } else if !state.registered && (state.error.is_none() || h.ready) {
                (false, reg_reason, reg_msg)
            } else if !h.ready {
                // Also a registration that failed because the backend is unreachable: say why
                // (HostKeyMismatch, HostUnreachable, ...), not just RegistrationFailed.
                (
                    false,
                    if h.reason.is_empty() {
                        reason::BACKEND_UNHEALTHY
                    } else {
                        h.reason.as_str()
                    },
                    h.message.clone(),
                )
            } else {
                (true, reason::RUNNING, "virtual node is running".to_string())
            };
            set_condition(
                conds,
                Wanted::new(condition::READY, ready, why, msg),
                generation,
                now,
            );
            st.kubelet_endpoint = Some(endpoint.to_string());
            st.pods = Some(i32::try_from(state.pods).unwrap_or(i32::MAX));
        }
    }
    st.node_name = vn.metadata.name.clone();
    st.observed_generation = generation;
    st.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    st
}

/// `(ok, reason, message)` of the CertificatesReady condition.
fn certificates(id: &IdentityState) -> (bool, &'static str, String) {
    let describe = |name: &str, s: &CertState| match s {
        CertState::Pending => {
            format!("{name} certificate: waiting for the CSR to be approved and signed")
        }
        CertState::Issued { not_after } => format!("{name} certificate valid until {not_after}"),
        CertState::Failing {
            message, current, ..
        } => match current {
            Some(t) => format!(
                "{name} certificate renewal failing (current one valid until {t}): {message}"
            ),
            None => format!("{name} certificate: {message}"),
        },
    };
    let msg = format!(
        "{}; {}",
        describe("client", &id.client),
        describe("serving", &id.serving)
    );
    let failing = [&id.client, &id.serving].into_iter().find_map(|s| match s {
        CertState::Failing { reason, .. } => Some(*reason),
        _ => None,
    });
    match failing {
        Some(r) => (false, r, msg),
        None if matches!(id.client, CertState::Issued { .. })
            && matches!(id.serving, CertState::Issued { .. }) =>
        {
            (true, reason::CERTIFICATES_ISSUED, msg)
        }
        None => (false, reason::CERTIFICATE_PENDING, msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetlet_crds::conditions::find;
    use vk_runtime::Health;

    fn vn() -> VirtualNode {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "fleetlet.dev/v1alpha1", "kind": "VirtualNode",
            "metadata": {"name": "edge-0", "generation": 2},
            "spec": {"backendRef": {"name": "sim"}}
        }))
        .unwrap()
    }

    fn t(s: i64) -> Time {
        Time(jiff::Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn default_labels_and_taint() {
        let c = node_config("edge-0", &vn(), "127.0.0.1", 10250);
        assert_eq!(c.labels[LABEL_VIRTUAL_NODE], "true");
        assert_eq!(c.labels[LABEL_BACKEND], "sim");
        assert_eq!(c.taints.len(), 1);
        assert_eq!(c.taints[0].effect, "NoSchedule");
        let mut untainted = vn();
        untainted.spec.taints = Some(vec![]);
        assert!(
            node_config("edge-0", &untainted, "127.0.0.1", 1)
                .taints
                .is_empty()
        );
    }

    #[test]
    fn blocked_then_running_moves_transition_time_once() {
        let mut v = vn();
        let blocked = Blocked {
            reason: reason::BACKEND_NOT_FOUND,
            message: "DeviceBackend sim not found".into(),
        };
        let s1 = status(&v, Err(&blocked), &t(1));
        let ready = find(&s1.conditions, condition::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reason::BACKEND_NOT_FOUND)
        );
        assert_eq!(ready.observed_generation, Some(2));
        v.status = Some(s1.clone());
        assert_eq!(
            status(&v, Err(&blocked), &t(2)),
            s1,
            "same input, same status"
        );
        let state = NodeState {
            registered: true,
            error: None,
            health: Health::healthy(),
            pods: 3,
            identity: None,
        };
        let s2 = status(&v, Ok((&state, "127.0.0.1:10250")), &t(3));
        let ready = find(&s2.conditions, condition::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.last_transition_time.clone()),
            ("True", t(3))
        );
        assert_eq!(s2.kubelet_endpoint.as_deref(), Some("127.0.0.1:10250"));
        assert_eq!(s2.pods, Some(3));
        v.status = Some(s2.clone());
        let s3 = status(&v, Ok((&state, "127.0.0.1:10250")), &t(9));
        assert_eq!(s3, s2, "no transition, no change");
    }

    #[test]
    fn unreachable_backend_at_registration_names_its_reason() {
        let state = NodeState {
            registered: false,
            error: Some("registration failed: backend unavailable: host key mismatch".into()),
            health: Health::unhealthy("HostKeyMismatch", "the device presented SHA256:x"),
            pods: 0,
            identity: None,
        };
        let s = status(&vn(), Ok((&state, "127.0.0.1:10250")), &t(1));
        let get = |type_| {
            let c = find(&s.conditions, type_).unwrap();
            (c.status.clone(), c.reason.clone())
        };
        let unreachable = ("False".to_string(), "HostKeyMismatch".to_string());
        assert_eq!(get(condition::BACKEND_REACHABLE), unreachable);
        assert_eq!(get(condition::READY), unreachable);
        assert_eq!(
            get(condition::NODE_REGISTERED),
            ("False".into(), reason::REGISTRATION_FAILED.into())
        );
        // Still pending (no failure yet): Pending, whatever the initial health says.
        let pending = NodeState {
            error: None,
            health: Health::unhealthy("Starting", "virtual node is starting"),
            ..state
        };
        let s = status(&vn(), Ok((&pending, "127.0.0.1:10250")), &t(1));
        let ready = find(&s.conditions, condition::READY).unwrap();
        assert_eq!(ready.reason, reason::PENDING);
    }

    #[test]
    fn certificate_trouble_is_a_condition_and_blocks_only_an_unregistered_node() {
        let v = vn();
        let issued = CertState::Issued {
            not_after: jiff::Timestamp::from_second(2_000_000_000).unwrap(),
        };
        let denied = CertState::Failing {
            reason: "CertificateDenied",
            message: "CSR x was denied: bad SANs".into(),
            current: None,
        };
        let mut state = NodeState {
            registered: false,
            error: None,
            health: Health::healthy(),
            pods: 0,
            identity: Some(IdentityState {
                client: denied.clone(),
                serving: CertState::Pending,
            }),
        };
        let s = status(&v, Ok((&state, "127.0.0.1:1")), &t(1));
        let certs = find(&s.conditions, condition::CERTIFICATES_READY).unwrap();
        assert_eq!(
            (certs.status.as_str(), certs.reason.as_str()),
            ("False", "CertificateDenied")
        );
        assert!(certs.message.contains("bad SANs"), "{}", certs.message);
        let ready = find(&s.conditions, condition::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "CertificateDenied")
        );
        // A registered node whose serving renewal fails keeps running on its current certificates.
        state.registered = true;
        state.error = None;
        state.identity = Some(IdentityState {
            client: issued.clone(),
            serving: CertState::Failing {
                reason: "CertificateNotApproved",
                message: "not approved".into(),
                current: Some(jiff::Timestamp::from_second(2_000_000_000).unwrap()),
            },
        });
        let s = status(&v, Ok((&state, "127.0.0.1:1")), &t(2));
        assert_eq!(
            find(&s.conditions, condition::READY).unwrap().status,
            "True"
        );
        assert_eq!(
            find(&s.conditions, condition::CERTIFICATES_READY)
                .unwrap()
                .reason,
            "CertificateNotApproved"
        );
        state.identity = Some(IdentityState {
            client: issued.clone(),
            serving: issued,
        });
        let s = status(&v, Ok((&state, "127.0.0.1:1")), &t(3));
        let certs = find(&s.conditions, condition::CERTIFICATES_READY).unwrap();
        assert_eq!(
            (certs.status.as_str(), certs.reason.as_str()),
            ("True", reason::CERTIFICATES_ISSUED)
        );
    }
}
