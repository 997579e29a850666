//! Building the Node object and its status from configuration, provider resources and health: pure
//! functions, so what the API sees is decided in one testable place.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::NodeConfig;
pub use super::observed::{Observed, differs};
use crate::provider::{Health, NodeResources};

/// `nodeInfo.kubeletVersion` of every virtual node: names fleetlet and the Kubernetes minor it speaks.
pub const KUBELET_VERSION: &str = concat!("v1.33.0-fleetlet.", env!("CARGO_PKG_VERSION"));

/// The Node to create at registration: metadata (labels, taints) and spec; status is written separately.
pub fn node_object(cfg: &NodeConfig, res: &NodeResources) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(cfg.name.clone()),
            labels: Some(node_labels(cfg, res)),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: if cfg.taints.is_empty() {
                None
            } else {
                Some(cfg.taints.clone())
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// Taints a system controller manages on Nodes (e.g. `node.kubernetes.io/unreachable`): never ours to
/// remove.
const SYSTEM_TAINT_PREFIXES: &[&str] =
    &["node.kubernetes.io/", "node.cloudprovider.kubernetes.io/"];

/// The taints an existing Node should get at re-registration, or `None` when it already has them: the
/// configured ones, plus the system-managed ones it carries now. Taints from earlier configuration that
/// are no longer configured go away.
pub fn reconcile_taints(have: &[Taint], wanted: &[Taint]) -> Option<Vec<Taint>> {
    let same = |a: &Taint, b: &Taint| a.key == b.key && a.effect == b.effect;
    let mut next: Vec<Taint> = wanted.to_vec();
    for t in have {
        let system = SYSTEM_TAINT_PREFIXES.iter().any(|p| t.key.starts_with(p));
        if system && !next.iter().any(|n| same(n, t)) {
            next.push(t.clone());
        }
    }
    let unchanged = next.len() == have.len() && next.iter().all(|n| have.contains(n));
    (!unchanged).then_some(next)
}

/// Labels of the Node: the configured ones plus the well-known ones a kubelet sets.
pub fn node_labels(cfg: &NodeConfig, res: &NodeResources) -> BTreeMap<String, String> {
    let mut labels = cfg.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), cfg.name.clone());
    labels.insert("kubernetes.io/os".into(), res.operating_system.clone());
    labels.insert("kubernetes.io/arch".into(), res.architecture.clone());
    labels.insert("beta.kubernetes.io/os".into(), res.operating_system.clone());
    labels.insert("beta.kubernetes.io/arch".into(), res.architecture.clone());
    labels
}

/// The facts a status report carries, besides timestamps.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusInputs<'a> {
    pub cfg: &'a NodeConfig,
    pub resources: &'a NodeResources,
    pub health: &'a Health,
}

/// The Node status to report. `observed` is the Node as the API last showed it: conditions whose
/// status did not change keep their `lastTransitionTime`.
pub fn node_status(
    inputs: &StatusInputs<'_>,
    observed: Option<&Observed>,
    now: Timestamp,
) -> NodeStatus {
    let mut capacity = inputs.resources.capacity.clone();
    for (k, v) in &inputs.cfg.capacity_override {
        capacity.insert(k.clone(), v.clone());
    }
    let h = inputs.health;
    let conditions = vec![
        condition(
            "Ready",
            h.ready,
            if h.ready { "KubeletReady" } else { &h.reason },
            &h.message,
            observed,
            now,
        ),
        condition(
            "MemoryPressure",
            false,
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
            observed,
            now,
        ),
        condition(
            "DiskPressure",
            false,
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
            observed,
            now,
        ),
        condition(
            "PIDPressure",
            false,
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
            observed,
            now,
        ),
    ];
    let r = inputs.resources;
    NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: inputs.cfg.address.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: inputs.cfg.name.clone(),
            },
        ]),
        allocatable: Some(capacity.clone()),
        capacity: Some(capacity),
        conditions: Some(conditions),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(inputs.cfg.kubelet_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: r.architecture.clone(),
            operating_system: r.operating_system.clone(),
            kernel_version: r.kernel_version.clone(),
            os_image: r.os_image.clone(),
            machine_id: r.machine_id.clone(),
            system_uuid: r.machine_id.clone(),
            boot_id: String::new(),
            container_runtime_version: r.container_runtime_version.clone(),
            kubelet_version: KUBELET_VERSION.into(),
            kube_proxy_version: String::new(),
            swap: None,
        }),
        ..Default::default()
    }
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    observed: Option<&Observed>,
    now: Timestamp,
) -> NodeCondition {
    let status = if status { "True" } else { "False" };
    let previous = observed.and_then(|o| o.transitions.iter().find(|(t, _, _)| t == type_));
    let transition = match previous {
        Some((_, s, at)) if s == status => at.clone().unwrap_or(Time(now)),
        _ => Time(now),
    };
    NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(transition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::quantity;

    fn cfg() -> NodeConfig {
        NodeConfig {
            name: "edge-0".into(),
            labels: BTreeMap::from([("fleetlet.dev/virtual-node".into(), "true".into())]),
            taints: vec![],
            address: "10.0.0.1".into(),
            kubelet_port: 10250,
            capacity_override: BTreeMap::from([("cpu".into(), quantity("2"))]),
        }
    }

    fn res() -> NodeResources {
        NodeResources {
            capacity: BTreeMap::from([
                ("cpu".into(), quantity("16")),
                ("pods".into(), quantity("110")),
            ]),
            operating_system: "linux".into(),
            architecture: "arm64".into(),
            ..Default::default()
        }
    }

    #[test]
    fn status_has_endpoint_address_override_and_ready() {
        let (c, r, h) = (cfg(), res(), Health::healthy());
        let s = node_status(
            &StatusInputs {
                cfg: &c,
                resources: &r,
                health: &h,
            },
            None,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(
            s.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port,
            10250
        );
        assert_eq!(s.capacity.as_ref().unwrap()["cpu"], quantity("2"));
        assert_eq!(s.capacity.as_ref().unwrap()["pods"], quantity("110"));
        assert_eq!(s.addresses.unwrap()[0].address, "10.0.0.1");
        let ready = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert!(s.node_info.unwrap().kubelet_version.contains("fleetlet"));
        let labels = node_labels(&c, &r);
        assert_eq!(labels["kubernetes.io/arch"], "arm64");
        assert_eq!(labels["kubernetes.io/hostname"], "edge-0");
    }

    #[test]
    fn transition_time_kept_and_heartbeats_ignored() {
        let (c, r, h) = (cfg(), res(), Health::healthy());
        let inputs = StatusInputs {
            cfg: &c,
            resources: &r,
            health: &h,
        };
        let t0 = Timestamp::from_second(100).unwrap();
        let first = node_status(&inputs, None, t0);
        let second = node_status(
            &inputs,
            Some(&Observed::of(&first)),
            Timestamp::from_second(500).unwrap(),
        );
        assert!(
            !differs(&second, Some(&Observed::of(&first))),
            "only heartbeat times moved"
        );
        let ready = |s: &NodeStatus| {
            s.conditions
                .clone()
                .unwrap()
                .into_iter()
                .find(|c| c.type_ == "Ready")
                .unwrap()
        };
        assert_eq!(ready(&second).last_transition_time, Some(Time(t0)));
        let down = Health::unhealthy("HostUnreachable", "no route");
        let third = node_status(
            &StatusInputs {
                health: &down,
                ..inputs
            },
            Some(&Observed::of(&second)),
            Timestamp::from_second(900).unwrap(),
        );
        assert!(differs(&third, Some(&Observed::of(&second))));
        assert!(differs(&third, None), "nothing observed: report");
        let mut reordered = second.clone();
        if let Some(cs) = reordered.conditions.as_mut() {
            cs.reverse();
            cs[0].last_heartbeat_time = None;
        }
        assert!(
            !differs(&second, Some(&Observed::of(&reordered))),
            "condition order and heartbeat times do not count"
        );
        let mut images = second.clone();
        images.images = Some(vec![Default::default()]);
        assert!(
            !differs(&second, Some(&Observed::of(&images))),
            "fields a virtual node never reports do not count"
        );
        let mut capacity = second.clone();
        capacity
            .capacity
            .as_mut()
            .unwrap()
            .insert("cpu".into(), quantity("3"));
        assert!(differs(&second, Some(&Observed::of(&capacity))));
        let mut canonical = second.clone();
        let cpu = canonical.capacity.as_mut().unwrap().get_mut("cpu").unwrap();
        cpu.0 = format!("{}000m", cpu.0);
        assert!(
            !differs(&second, Some(&Observed::of(&canonical))),
            "the same quantity in another form (the API server's canonical one) is no change"
        );
        assert_eq!(ready(&third).status, "False");
        assert_eq!(ready(&third).reason.as_deref(), Some("HostUnreachable"));
        assert_eq!(
            ready(&third).last_transition_time,
            Some(Time(Timestamp::from_second(900).unwrap()))
        );
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    #[test]
    fn re_registration_replaces_our_taints_and_keeps_system_ones() {
        let ours = taint("fleetlet.dev/virtual-node", "NoSchedule");
        let unreachable = taint("node.kubernetes.io/unreachable", "NoExecute");
        let old = taint("example.com/old", "NoSchedule");
        let new = taint("example.com/new", "PreferNoSchedule");
        let only_ours = [ours.clone()];
        assert_eq!(reconcile_taints(&only_ours, &only_ours), None);
        assert_eq!(
            reconcile_taints(&[unreachable.clone(), ours.clone()], &only_ours),
            None,
            "order and system taints are no change"
        );
        assert_eq!(
            reconcile_taints(
                &[ours.clone(), old, unreachable.clone()],
                &[ours.clone(), new.clone()]
            ),
            Some(vec![ours.clone(), new, unreachable])
        );
        assert_eq!(reconcile_taints(&only_ours, &[]), Some(vec![]));
    }
}
