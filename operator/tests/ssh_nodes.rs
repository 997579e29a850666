//! VirtualNodes sharing one device (one DeviceBackend, the same address and state directory) against
//! a real OpenSSH server on loopback: each node's provider sees, reports and stops only its own pods,
//! so one node's start-up clean-up never kills another node's containers.

#![allow(clippy::unwrap_used)]

mod ssh_support;

use std::sync::Arc;
use std::time::Duration;

use fleetlet::backends::ssh::SshProvider;
use ssh_support::{Sshd, StateDir, pids_with, unique, wait_until};
use vk_runtime::testing::{ConformanceConfig, Harness, container};
use vk_runtime::{ContainerState, Provider};

fn cfg() -> ConformanceConfig {
    ConformanceConfig {
        namespace: "ssh".into(),
        timeout: Duration::from_secs(30),
    }
}

fn provider(sshd: &Sshd, state: &StateDir, node: &str) -> Arc<SshProvider> {
    let settings = sshd.settings(&sshd.spec(&state.0), "127.0.0.1", sshd.port);
    Arc::new(SshProvider::new(settings.for_node(node)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_one_device_see_only_their_own_pods() {
    let sshd = Sshd::start();
    let state = StateDir::new();
    let (a, b) = (
        provider(&sshd, &state, "node-a"),
        provider(&sshd, &state, "node-b"),
    );
    let mut pods = Vec::new();
    for p in [&a, &b] {
        let marker = unique("shared");
        let mut h = Harness::new(p.clone(), cfg());
        let pod = h.pod(
            vec![],
            vec![container("main", &["sh", "-c", "sleep 3600", &marker])],
            "Always",
        );
        p.create_pod(&pod).await.unwrap();
        h.wait_for("shared", &pod.pod_ref, "running", |s| {
            matches!(s.containers[0].state, ContainerState::Running { .. })
        })
        .await
        .unwrap();
        pods.push((pod.pod_ref, marker));
    }
    let ((ra, ma), (rb, mb)) = (&pods[0], &pods[1]);
    assert_eq!(a.list_pods().await.unwrap(), vec![ra.clone()]);
    assert_eq!(b.list_pods().await.unwrap(), vec![rb.clone()]);
    assert!(a.pod_status(rb).await.unwrap().is_none());
    let stats = a.stats().await.unwrap();
    assert_eq!(
        stats.pods.iter().map(|(r, _)| r).collect::<Vec<_>>(),
        vec![ra],
        "node-a's stats hold only its pod"
    );

    // A node restarted with no pods in the API stops what it lists: only its own.
    for r in a.list_pods().await.unwrap() {
        a.delete_pod(&r, Duration::ZERO).await.unwrap();
    }
    assert!(wait_until(Duration::from_secs(5), || pids_with(ma).is_empty()));
    assert_eq!(pids_with(mb).len(), 1, "node-b's container still runs");
    b.delete_pod(rb, Duration::ZERO).await.unwrap();
}
