#![allow(clippy::unwrap_used)]
//! Mock-only provider behaviour beyond the shared conformance suite: `exitAfterMs` with restart
//! policies, start delay, live updates, pod IPs, attach, port-forward, stats, idle pods holding no task.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetlet_crds::MockBackend;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Container;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use vk_runtime::provider::{ExecIo, output_channel, quantity};
use vk_runtime::testing::{ConformanceConfig, Harness, container};
use vk_runtime::{BackendPodStatus, ContainerState, LogOptions, Provider};

use super::{MockProvider, go_arch};

const CASE: &str = "mock";

fn setup(spec: MockBackend) -> (Arc<MockProvider>, Harness) {
    let p = Arc::new(MockProvider::new(&spec, "node-a"));
    let cfg = ConformanceConfig {
        timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let h = Harness::new(p.clone(), cfg);
    (p, h)
}

fn idle(name: &str) -> Container {
    Container {
        name: name.into(),
        ..Default::default()
    }
}

fn main_state(s: &BackendPodStatus) -> &ContainerState {
    &s.containers[0].state
}

#[tokio::test]
async fn exit_after_with_restart_policies() {
    let spec = MockBackend {
        exit_after_ms: Some(20),
        exit_code: Some(2),
        ..Default::default()
    };
    let (p, mut h) = setup(spec);
    let never = h.pod(vec![], vec![idle("main")], "Never");
    p.create_pod(&never).await.unwrap();
    let s = h
        .wait_for(CASE, &never.pod_ref, "finished", |s| s.finished)
        .await
        .unwrap();
    assert!(
        matches!(main_state(&s), ContainerState::Terminated { exit_code: 2, reason, .. } if reason == "Error"),
        "{s:?}"
    );

    let always = h.pod(vec![], vec![idle("main")], "Always");
    p.create_pod(&always).await.unwrap();
    let s = h
        .wait_for(CASE, &always.pod_ref, "CrashLoopBackOff", |s| matches!(main_state(s), ContainerState::Waiting { reason, .. } if reason == "CrashLoopBackOff"))
        .await
        .unwrap();
    assert!(s.containers[0].restart_count >= 1 && !s.finished, "{s:?}");
    assert!(
        matches!(
            s.containers[0].last_termination,
            Some(ContainerState::Terminated { exit_code: 2, .. })
        ),
        "{s:?}"
    );
    let s = h
        .wait_for(CASE, &always.pod_ref, "restart 2", |s| {
            s.containers[0].restart_count >= 2
        })
        .await
        .unwrap();
    assert!(!s.finished);
}

#[tokio::test]
async fn start_delay_then_running_with_unique_ips() {
    let (p, mut h) = setup(MockBackend {
        start_delay_ms: Some(100),
        ..Default::default()
    });
    let pods: Vec<_> = (0..3)
        .map(|_| h.pod(vec![], vec![idle("main")], "Always"))
        .collect();
    for pod in &pods {
        p.create_pod(pod).await.unwrap();
        let s = p.pod_status(&pod.pod_ref).await.unwrap().unwrap();
        assert!(
            matches!(main_state(&s), ContainerState::Waiting { reason, .. } if reason == "ContainerCreating")
        );
        assert_eq!(s.pod_ip, None);
    }
    let mut ips = Vec::new();
    for pod in &pods {
        let s = h
            .wait_for(CASE, &pod.pod_ref, "running", |s| {
                matches!(main_state(s), ContainerState::Running { .. })
            })
            .await
            .unwrap();
        assert!(s.containers[0].ready && s.started_at.is_some());
        ips.push(s.pod_ip.unwrap());
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3);
    assert!(ips.iter().all(|ip| ip.starts_with("10.")));
    // Pods running forever with nothing pending hold no task.
    let mock = p
        .pods
        .lock()
        .unwrap()
        .get(&pods[0].pod_ref)
        .cloned()
        .unwrap();
    let task = mock.task.lock().unwrap().take().unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn delete_during_start_delay_and_init_failure() {
    let (p, mut h) = setup(MockBackend {
        start_delay_ms: Some(60_000),
        ..Default::default()
    });
    let pod = h.pod(vec![], vec![idle("main")], "Always");
    p.create_pod(&pod).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(2),
        p.delete_pod(&pod.pod_ref, Duration::from_secs(30)),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(p.list_pods().await.unwrap().is_empty());

    let (p, mut h) = setup(MockBackend::default());
    let pod = h.pod(
        vec![container("init", &["sh", "-c", "exit 1"])],
        vec![idle("main")],
        "Never",
    );
    p.create_pod(&pod).await.unwrap();
    let s = h
        .wait_for(CASE, &pod.pod_ref, "finished", |s| s.finished)
        .await
        .unwrap();
    assert!(matches!(
        s.init_containers[0].state,
        ContainerState::Terminated { exit_code: 1, .. }
    ));
    assert!(
        matches!(main_state(&s), ContainerState::Waiting { reason, .. } if reason == "PodInitializing")
    );
}

#[test]
fn an_idle_node_costs_a_few_hundred_bytes() {
    // Inline parts plus the shared settings; the node name and empty maps add nothing else.
    let inline =
        std::mem::size_of::<MockProvider>() + std::mem::size_of::<super::settings::Shared>();
    assert!(inline < 400, "{inline} bytes");
}

#[tokio::test]
async fn node_resources_health_and_live_update() {
    let (p, _h) = setup(MockBackend::default());
    let r = p.node_resources().await.unwrap();
    assert_eq!(r.capacity["cpu"], quantity("16"));
    assert_eq!(r.capacity["memory"], quantity("64Gi"));
    assert_eq!(r.capacity["pods"], quantity("110"));
    assert_eq!(r.capacity["ephemeral-storage"], quantity("100Gi"));
    assert_eq!(
        (r.operating_system.as_str(), r.architecture.as_str()),
        ("linux", go_arch())
    );
    assert!(r.kernel_version.contains("mock") && r.os_image.contains("mock"));
    assert!(p.health().await.ready);
    let capacity = Some([("cpu".to_string(), quantity("4"))].into());
    p.update(&MockBackend {
        healthy: Some(false),
        capacity,
        ..Default::default()
    });
    let health = p.health().await;
    assert!(!health.ready && health.reason == "BackendUnhealthy");
    let r = p.node_resources().await.unwrap();
    assert_eq!(
        (r.capacity["cpu"].clone(), r.capacity["pods"].clone()),
        (quantity("4"), quantity("110"))
    );
}

#[tokio::test]
async fn previous_logs_after_restart() {
    let (p, mut h) = setup(MockBackend::default());
    let pod = h.pod(
        vec![],
        vec![container("main", &["sh", "-c", "echo run $RUN; exit 1"])],
        "OnFailure",
    );
    p.create_pod(&pod).await.unwrap();
    h.wait_for(CASE, &pod.pod_ref, "a restart", |s| {
        s.containers[0].restart_count >= 1
    })
    .await
    .unwrap();
    let opts = LogOptions {
        previous: true,
        ..Default::default()
    };
    let chunks: Vec<_> = p
        .logs(&pod.pod_ref, "main", &opts)
        .await
        .unwrap()
        .collect()
        .await;
    let text: Vec<u8> = chunks
        .into_iter()
        .flat_map(|c| c.unwrap().to_vec())
        .collect();
    // `$RUN` is unset: the empty unquoted word disappears, as in sh.
    assert_eq!(text, b"run\n");
    assert!(
        p.logs(&pod.pod_ref, "ghost", &LogOptions::default())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn attach_to_cat_and_port_forward_echo() {
    let (p, mut h) = setup(MockBackend::default());
    let mut cat = container("main", &["cat"]);
    (cat.stdin, cat.stdin_once) = (Some(true), Some(true));
    let pod = h.pod(vec![], vec![cat], "Never");
    p.create_pod(&pod).await.unwrap();
    h.wait_for(CASE, &pod.pod_ref, "running", |s| {
        matches!(main_state(s), ContainerState::Running { .. })
    })
    .await
    .unwrap();
    let (in_tx, in_rx) = mpsc::channel(4);
    let (out_tx, _, mut out_rx) = output_channel(4, true, false);
    let io = ExecIo {
        stdin: Some(in_rx),
        stdout: out_tx,
        stderr: None,
        resize: None,
        tty: false,
    };
    let attach = tokio::spawn({
        let (p, r) = (p.clone(), pod.pod_ref.clone());
        async move { p.attach(&r, "main", io).await }
    });
    in_tx.send(Bytes::from_static(b"hello")).await.unwrap();
    assert_eq!(out_rx.recv().await.unwrap().1, Bytes::from_static(b"hello"));
    drop(in_tx);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), attach)
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        0
    );
    h.wait_for(CASE, &pod.pod_ref, "finished", |s| s.finished)
        .await
        .unwrap();

    let (mut client, server) = tokio::io::duplex(64);
    let forward = tokio::spawn({
        let (p, r) = (p.clone(), pod.pod_ref.clone());
        async move { p.port_forward(&r, 8080, Box::new(server)).await }
    });
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    forward.await.unwrap().unwrap();
}

#[tokio::test]
async fn stats_are_deterministic() {
    let (p, mut h) = setup(MockBackend::default());
    let pod = h.pod(vec![], vec![idle("a"), idle("b")], "Always");
    p.create_pod(&pod).await.unwrap();
    h.wait_for(CASE, &pod.pod_ref, "running", |s| {
        s.containers.iter().all(|c| c.ready)
    })
    .await
    .unwrap();
    let first = p.stats().await.unwrap();
    let second = p.stats().await.unwrap();
    assert_eq!(first.pods.len(), 1);
    let figures = |s: &vk_runtime::provider::StatsSummary| -> Vec<(String, u64, u64)> {
        s.pods[0]
            .1
            .iter()
            .map(|(n, u)| {
                (
                    n.clone(),
                    u.cpu_usage_nano_cores,
                    u.memory_working_set_bytes,
                )
            })
            .collect()
    };
    assert_eq!(figures(&first), figures(&second));
    for (_, cpu, mem) in figures(&first) {
        assert!((1_000_000..50_000_000).contains(&cpu) && (16 << 20..128 << 20).contains(&mem));
    }
    let sum: u64 = figures(&first).iter().map(|f| f.2).sum();
    assert_eq!(first.node.memory_working_set_bytes, sum + (256 << 20));
}
