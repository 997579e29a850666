//! The SSH backend against a real OpenSSH server on loopback: the provider conformance suite, adoption
//! after an operator restart (same PIDs, nothing runs twice), cleanup of pods deleted while the operator
//! was down, and the streams (previous logs, attach, exec with a TTY, port-forward, stats).

#![allow(clippy::unwrap_used)]

mod ssh_support;

use std::sync::Arc;
use std::time::Duration;

use fleetlet::backends::ssh::SshProvider;
use futures::StreamExt;
use ssh_support::{Sshd, StateDir, pids_with, unique, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use vk_runtime::provider::{ExecIo, output_channel};
use vk_runtime::testing::{ConformanceConfig, Harness, container};
use vk_runtime::{ContainerState, LogOptions, PodRef, Provider};

fn cfg() -> ConformanceConfig {
    ConformanceConfig {
        namespace: "ssh".into(),
        timeout: Duration::from_secs(30),
    }
}

fn running(s: &vk_runtime::BackendPodStatus) -> bool {
    s.containers
        .iter()
        .all(|c| matches!(c.state, ContainerState::Running { .. }))
}

fn pid_of(s: &vk_runtime::BackendPodStatus) -> String {
    s.containers[0].container_id.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let sshd = Sshd::start();
    let state = StateDir::new();
    let p = sshd.provider(&state.0);
    vk_runtime::testing::conformance(p, &cfg()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopted_after_restart_and_deleted_while_down() {
    let sshd = Sshd::start();
    let state = StateDir::new();
    let (keep_marker, gone_marker) = (unique("keep"), unique("gone"));
    let first = sshd.provider(&state.0);
    let mut h = Harness::new(first.clone(), cfg());
    let keep = h.pod(
        vec![],
        vec![container("main", &["sh", "-c", "sleep 3600", &keep_marker])],
        "Always",
    );
    let gone = h.pod(
        vec![],
        vec![container("main", &["sh", "-c", "sleep 3600", &gone_marker])],
        "Always",
    );
    first.create_pod(&keep).await.unwrap();
    first.create_pod(&gone).await.unwrap();
    let before = h
        .wait_for("adopt", &keep.pod_ref, "running", running)
        .await
        .unwrap();
    h.wait_for("adopt", &gone.pod_ref, "running", running)
        .await
        .unwrap();
    let gone_pid = pids_with(&gone_marker);
    assert_eq!(gone_pid.len(), 1);

    // The operator goes away (provider dropped: no SSH connection, no poll) and comes back.
    drop(h);
    drop(first);
    let second = sshd.provider(&state.0);
    let mut h = Harness::new(second.clone(), cfg());
    let mut listed = second.list_pods().await.unwrap();
    listed.sort();
    let mut want = vec![keep.pod_ref.clone(), gone.pod_ref.clone()];
    want.sort();
    assert_eq!(listed, want);
    let after = second.pod_status(&keep.pod_ref).await.unwrap().unwrap();
    assert!(running(&after));
    assert_eq!(pid_of(&after), pid_of(&before), "same process adopted");
    // A repeated create of a running pod starts nothing.
    second.create_pod(&keep).await.unwrap();
    let again = h
        .wait_for("adopt", &keep.pod_ref, "running", running)
        .await
        .unwrap();
    assert_eq!(pid_of(&again), pid_of(&before));
    assert_eq!(
        pids_with(&keep_marker).len(),
        1,
        "the container runs exactly once"
    );

    // `gone` was deleted from the API while the operator was down: the runtime deletes it at once.
    second
        .delete_pod(&gone.pod_ref, Duration::ZERO)
        .await
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || pids_with(
        &gone_marker
    )
    .is_empty()));
    assert_eq!(
        second.list_pods().await.unwrap(),
        vec![keep.pod_ref.clone()]
    );
    assert!(
        !state.path().join("pods").join(&gone.pod_ref.uid).exists(),
        "state cleaned"
    );

    // A re-created pod of the same name (new UID) starts exactly once.
    let mut recreated = h.pod(
        vec![],
        vec![container("main", &["sh", "-c", "sleep 3600", &gone_marker])],
        "Always",
    );
    recreated.pod_ref.name = gone.pod_ref.name.clone();
    second.create_pod(&recreated).await.unwrap();
    h.wait_for("recreate", &recreated.pod_ref, "running", running)
        .await
        .unwrap();
    assert_eq!(pids_with(&gone_marker).len(), 1);

    let grace = Duration::from_secs(2);
    second.delete_pod(&keep.pod_ref, grace).await.unwrap();
    second.delete_pod(&recreated.pod_ref, grace).await.unwrap();
    assert!(wait_until(Duration::from_secs(5), || pids_with(
        &keep_marker
    )
    .is_empty()));
    assert!(second.list_pods().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_then_sigkill_after_grace() {
    let sshd = Sshd::start();
    let state = StateDir::new();
    let p = sshd.provider(&state.0);
    let mut h = Harness::new(p.clone(), cfg());
    let marker = unique("stubborn");
    let pod = h.pod(
        vec![],
        vec![container(
            "main",
            &[
                "sh",
                "-c",
                "trap '' TERM; while :; do sleep 0.1; done",
                &marker,
            ],
        )],
        "Always",
    );
    p.create_pod(&pod).await.unwrap();
    h.wait_for("grace", &pod.pod_ref, "running", running)
        .await
        .unwrap();
    let start = std::time::Instant::now();
    p.delete_pod(&pod.pod_ref, Duration::from_secs(2))
        .await
        .unwrap();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert!(
        wait_until(Duration::from_secs(2), || pids_with(&marker).is_empty()),
        "killed after the grace period"
    );
}

async fn collect(p: &Arc<SshProvider>, r: &PodRef, opts: LogOptions) -> String {
    let mut s = p.logs(r, "main", &opts).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(20), s.next())
        .await
        .unwrap()
    {
        out.extend_from_slice(&chunk.unwrap());
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_previous_logs_attach_tty_port_forward_stats() {
    let sshd = Sshd::start();
    let state = StateDir::new();
    let p = sshd.provider(&state.0);
    let mut h = Harness::new(p.clone(), cfg());

    // --previous after a restart: each run prints its number (counted in a file in its working
    // directory); run 0 fails, run 1 keeps running, so previous and current logs must differ.
    let mut counting = container(
        "main",
        &[
            "sh",
            "-c",
            "n=$(cat n 2>/dev/null || echo 0); echo $((n + 1)) > n; echo run-$n; \
             [ \"$n\" = 0 ] && exit 1; exec sleep 3600",
        ],
    );
    counting.working_dir = Some(state.path().join(unique("wd")).display().to_string());
    let pod = h.pod(vec![], vec![counting], "Always");
    p.create_pod(&pod).await.unwrap();
    let r = pod.pod_ref.clone();
    h.wait_for("previous", &r, "running after a restart", |s| {
        s.containers[0].restart_count == 1 && running(s)
    })
    .await
    .unwrap();
    let previous = LogOptions {
        previous: true,
        ..Default::default()
    };
    assert_eq!(collect(&p, &r, previous).await, "run-0\n");
    let current = fleetlet_e2e::eventually(cfg().timeout, "run 1's output", || async {
        Some(collect(&p, &r, LogOptions::default()).await).filter(|l| !l.is_empty())
    })
    .await
    .unwrap();
    assert_eq!(current, "run-1\n");
    p.delete_pod(&r, Duration::ZERO).await.unwrap();

    // attach: output from now on, and the exit code.
    let pod = h.pod(
        vec![],
        vec![container(
            "main",
            &["sh", "-c", "sleep 1; echo attached; exit 5"],
        )],
        "Never",
    );
    p.create_pod(&pod).await.unwrap();
    let r = pod.pod_ref.clone();
    h.wait_for("attach", &r, "running", running).await.unwrap();
    let (tx, _, mut rx) = output_channel(16, true, false);
    let io = ExecIo {
        stdin: None,
        stdout: tx,
        stderr: None,
        resize: None,
        tty: false,
    };
    let code = p.attach(&r, "main", io).await.unwrap();
    let mut out = Vec::new();
    while let Ok((_, b)) = rx.try_recv() {
        out.extend_from_slice(&b);
    }
    assert_eq!(
        (code, String::from_utf8_lossy(&out).as_ref()),
        (5, "attached\n")
    );
    p.delete_pod(&r, Duration::ZERO).await.unwrap();

    let pod = h.pod(
        vec![],
        vec![container("main", &["sleep", "3600"])],
        "Always",
    );
    p.create_pod(&pod).await.unwrap();
    let r = pod.pod_ref.clone();
    h.wait_for("streams", &r, "running", running).await.unwrap();

    // exec -t: a terminal, resized.
    let (tx, _, mut rx) = output_channel(16, true, false);
    let (rs_tx, rs_rx) = mpsc::channel(4);
    rs_tx
        .send(vk_runtime::provider::TermSize {
            width: 100,
            height: 40,
        })
        .await
        .unwrap();
    let io = ExecIo {
        stdin: None,
        stdout: tx,
        stderr: None,
        resize: Some(rs_rx),
        tty: true,
    };
    let cmd = vec![
        "sh".into(),
        "-c".into(),
        "sleep 0.5; test -t 0 && stty size; exit 3".into(),
    ];
    let code = p.exec(&r, "main", cmd, io).await.unwrap();
    let mut out = Vec::new();
    while let Ok((_, b)) = rx.try_recv() {
        out.extend_from_slice(&b);
    }
    assert_eq!(code, 3);
    assert!(
        String::from_utf8_lossy(&out).contains("40 100"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );

    // port-forward: a direct-tcpip channel to 127.0.0.1:port on the device (this machine).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(&[b"echo:".as_slice(), &buf].concat())
            .await
            .unwrap();
    });
    let (mut ours, theirs) = tokio::io::duplex(1024);
    let fwd = {
        let (p, r) = (p.clone(), r.clone());
        tokio::spawn(async move { p.port_forward(&r, port, Box::new(theirs)).await })
    };
    ours.write_all(b"hello").await.unwrap();
    let mut got = vec![0u8; 10];
    ours.read_exact(&mut got).await.unwrap();
    assert_eq!(got, b"echo:hello");
    drop(ours);
    tokio::time::timeout(Duration::from_secs(10), fwd)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // stats: the device and the pod's container.
    let first = p.stats().await.unwrap();
    let second = p.stats().await.unwrap();
    assert!(first.node.memory_working_set_bytes > 0 && second.node.cpu_usage_core_nano_seconds > 0);
    let (_, containers) = second.pods.iter().find(|(pr, _)| *pr == r).unwrap();
    assert!(
        containers
            .iter()
            .any(|(n, u)| n == "main" && u.memory_working_set_bytes > 0)
    );

    // Node resources come from the device.
    let res = p.node_resources().await.unwrap();
    assert_eq!(res.operating_system, "linux");
    assert!(res.capacity.contains_key("cpu") && res.capacity.contains_key("memory"));
    assert!(!res.kernel_version.is_empty());

    p.delete_pod(&r, Duration::ZERO).await.unwrap();
}
