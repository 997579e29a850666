//! Turning a backend's view of a pod into the Kubernetes `PodStatus`: phase, conditions, container
//! statuses. Pure: the same inputs always give the same status, and unchanged conditions keep their
//! `lastTransitionTime`.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ContainerState as K8sState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus as K8sContainerStatus, HostIP, Pod, PodCondition, PodIP,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::provider::{BackendPodStatus, ContainerState, ContainerStatus};

/// The status to report for `pod`, given the backend's view and the node's address.
pub fn pod_status(
    pod: &Pod,
    backend: &BackendPodStatus,
    host_ip: &str,
    now: Timestamp,
) -> PodStatus {
    let previous = pod.status.as_ref();
    let phase = phase(backend);
    let init_done = !backend.init_containers.is_empty()
        && backend
            .init_containers
            .iter()
            .all(|c| terminated_ok(&c.state))
        || pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .is_none_or(|v| v.is_empty());
    let all_ready = !backend.containers.is_empty()
        && backend
            .containers
            .iter()
            .all(|c| c.ready && matches!(c.state, ContainerState::Running { .. }));
    let ready = all_ready && phase == "Running";
    let mut conditions = vec![
        cond(
            previous,
            "PodReadyToStartContainers",
            backend.pod_ip.is_some(),
            None,
            now,
        ),
        cond(
            previous,
            "Initialized",
            init_done || phase == "Succeeded",
            None,
            now,
        ),
        cond(
            previous,
            "Ready",
            ready,
            (!ready).then_some(not_ready_reason(phase)),
            now,
        ),
        cond(
            previous,
            "ContainersReady",
            ready,
            (!ready).then_some(not_ready_reason(phase)),
            now,
        ),
    ];
    if let Some(scheduled) = previous
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
    {
        conditions.push(scheduled.clone());
    } else {
        conditions.push(cond(previous, "PodScheduled", true, None, now));
    }
    let ips = |ip: &Option<String>| ip.as_ref().map(|ip| vec![PodIP { ip: ip.clone() }]);
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        host_ip: Some(host_ip.into()),
        host_ips: Some(vec![HostIP { ip: host_ip.into() }]),
        pod_ip: backend.pod_ip.clone(),
        pod_ips: ips(&backend.pod_ip),
        start_time: previous
            .and_then(|s| s.start_time.clone())
            .or_else(|| Some(Time(backend.started_at.unwrap_or(now)))),
        init_container_statuses: (!backend.init_containers.is_empty()).then(|| {
            backend
                .init_containers
                .iter()
                .map(container_status)
                .collect()
        }),
        container_statuses: Some(backend.containers.iter().map(container_status).collect()),
        message: backend.message.clone(),
        reason: backend.reason.clone(),
        qos_class: previous.and_then(|s| s.qos_class.clone()),
        ..Default::default()
    }
}

/// The final status of a pod whose containers were stopped for deletion.
pub fn terminated_status(
    pod: &Pod,
    backend: Option<&BackendPodStatus>,
    host_ip: &str,
    now: Timestamp,
) -> PodStatus {
    let mut backend = backend.cloned().unwrap_or_default();
    if backend.containers.is_empty() {
        backend.containers = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| ContainerStatus {
                name: c.name.clone(),
                state: ContainerState::Waiting {
                    reason: "ContainerCreating".into(),
                    message: None,
                },
                last_termination: None,
                restart_count: 0,
                ready: false,
                image: c.image.clone().unwrap_or_default(),
                container_id: None,
            })
            .collect();
    }
    for c in &mut backend.containers {
        if !matches!(c.state, ContainerState::Terminated { .. }) {
            let started_at = match &c.state {
                ContainerState::Running { started_at } => Some(*started_at),
                _ => None,
            };
            c.state = ContainerState::Terminated {
                exit_code: 137,
                reason: "Error".into(),
                message: None,
                started_at,
                finished_at: now,
            };
            c.ready = false;
        }
    }
    backend.finished = true;
    let mut status = pod_status(pod, &backend, host_ip, now);
    // A pod stopped for deletion ends Failed unless every container had already succeeded.
    let all_ok = backend.containers.iter().all(|c| terminated_ok(&c.state));
    status.phase = Some(if all_ok { "Succeeded" } else { "Failed" }.into());
    status
}

/// A status marking a pod the backend lost (e.g. after a restart the backend no longer runs it).
pub fn lost_status(pod: &Pod, host_ip: &str, now: Timestamp) -> PodStatus {
    let mut status = terminated_status(pod, None, host_ip, now);
    status.phase = Some("Failed".into());
    status.reason = Some("ProviderLost".into());
    status.message = Some("the device backend no longer runs this pod".into());
    status
}

/// Pod phase from container states, as the kubelet derives it.
pub fn phase(b: &BackendPodStatus) -> &'static str {
    let init_pending = b.init_containers.iter().any(|c| !terminated_ok(&c.state));
    if init_pending && !b.finished {
        return "Pending";
    }
    if b.finished {
        let all_ok = b.containers.iter().all(|c| terminated_ok(&c.state))
            && b.init_containers.iter().all(|c| terminated_ok(&c.state));
        return if all_ok { "Succeeded" } else { "Failed" };
    }
    let running = b
        .containers
        .iter()
        .any(|c| matches!(c.state, ContainerState::Running { .. }));
    let started = b
        .containers
        .iter()
        .any(|c| !matches!(c.state, ContainerState::Waiting { .. }) || c.restart_count > 0);
    if running || started {
        "Running"
    } else {
        "Pending"
    }
}

fn not_ready_reason(phase: &str) -> &'static str {
    match phase {
        "Succeeded" | "Failed" => "PodCompleted",
        _ => "ContainersNotReady",
    }
}

fn terminated_ok(s: &ContainerState) -> bool {
    matches!(s, ContainerState::Terminated { exit_code: 0, .. })
}

fn cond(
    previous: Option<&PodStatus>,
    type_: &str,
    status: bool,
    reason: Option<&str>,
    now: Timestamp,
) -> PodCondition {
    let status = if status { "True" } else { "False" };
    let prev = previous
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    let transition = match prev {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(Time(now)),
    };
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.map(str::to_string),
        last_transition_time: transition,
        ..Default::default()
    }
}

fn k8s_state(s: &ContainerState) -> K8sState {
    match s {
        ContainerState::Waiting { reason, message } => K8sState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        ContainerState::Running { started_at } => K8sState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*started_at)),
            }),
            ..Default::default()
        },
        ContainerState::Terminated {
            exit_code,
            reason,
            message,
            started_at,
            finished_at,
        } => K8sState {
            terminated: Some(ContainerStateTerminated {
                exit_code: *exit_code,
                reason: Some(reason.clone()),
                message: message.clone(),
                started_at: started_at.map(Time),
                finished_at: Some(Time(*finished_at)),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

fn container_status(c: &ContainerStatus) -> K8sContainerStatus {
    K8sContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: String::new(),
        container_id: c.container_id.clone(),
        ready: c.ready,
        restart_count: c.restart_count,
        started: Some(matches!(c.state, ContainerState::Running { .. })),
        state: Some(k8s_state(&c.state)),
        last_state: c.last_termination.as_ref().map(k8s_state),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(name: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: ContainerState::Running {
                started_at: Timestamp::UNIX_EPOCH,
            },
            last_termination: None,
            restart_count: 0,
            ready: true,
            image: "busybox".into(),
            container_id: Some("mock://1".into()),
        }
    }

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap()
    }

    #[test]
    fn running_pod_is_ready_with_conditions() {
        let b = BackendPodStatus {
            containers: vec![running("c")],
            pod_ip: Some("10.1.0.2".into()),
            ..Default::default()
        };
        let s = pod_status(&pod(), &b, "127.0.0.1", Timestamp::UNIX_EPOCH);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let conds = s.conditions.unwrap();
        for t in ["Ready", "ContainersReady", "Initialized", "PodScheduled"] {
            assert_eq!(
                conds.iter().find(|c| c.type_ == t).unwrap().status,
                "True",
                "{t}"
            );
        }
        let scheduled = conds.iter().find(|c| c.type_ == "PodScheduled").unwrap();
        assert_eq!(
            scheduled
                .last_transition_time
                .as_ref()
                .unwrap()
                .0
                .to_string(),
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(s.pod_ip.as_deref(), Some("10.1.0.2"));
        assert!(s.start_time.is_some());
        assert_eq!(s.container_statuses.unwrap()[0].started, Some(true));
    }

    #[test]
    fn phases() {
        let mut b = BackendPodStatus::default();
        b.containers.push(ContainerStatus {
            state: ContainerState::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            ready: false,
            ..running("c")
        });
        assert_eq!(phase(&b), "Pending");
        b.containers[0].state = ContainerState::Terminated {
            exit_code: 1,
            reason: "Error".into(),
            message: None,
            started_at: None,
            finished_at: Timestamp::UNIX_EPOCH,
        };
        b.finished = true;
        assert_eq!(phase(&b), "Failed");
        b.containers[0].state = ContainerState::Terminated {
            exit_code: 0,
            reason: "Completed".into(),
            message: None,
            started_at: None,
            finished_at: Timestamp::UNIX_EPOCH,
        };
        assert_eq!(phase(&b), "Succeeded");
    }

    #[test]
    fn terminated_status_after_stop_is_failed_137() {
        let b = BackendPodStatus {
            containers: vec![running("c")],
            ..Default::default()
        };
        let s = terminated_status(&pod(), Some(&b), "127.0.0.1", Timestamp::UNIX_EPOCH);
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        let st = s.container_statuses.unwrap()[0].state.clone().unwrap();
        assert_eq!(st.terminated.unwrap().exit_code, 137);
    }
}
