//! The SSH backend's connection discipline against a real OpenSSH server on loopback: one TCP
//! connection per device however many operations run at once, and a bounded number of sessions on it
//! (a stream waits for a free slot, then fails as busy; short commands keep their own slots; a slot is
//! given back when its stream's reader goes away, or when an exec is abandoned).

#![allow(clippy::unwrap_used)]

mod ssh_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetlet::backends::ssh::SshProvider;
use ssh_support::{Sshd, StateDir, pids_running, processes};
use vk_runtime::provider::{ExecIo, output_channel};
use vk_runtime::testing::{ConformanceConfig, Harness, container};
use vk_runtime::{ContainerState, LogOptions, PodRef, Provider, ProviderError};

fn cfg() -> ConformanceConfig {
    ConformanceConfig {
        namespace: "ssh".into(),
        timeout: Duration::from_secs(30),
    }
}

/// Established TCP connections of this machine to `127.0.0.1:port` (client ends, from /proc/net/tcp).
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(2) == Some(&remote.as_str()) && f.get(3) == Some(&"01")
        })
        .count()
}

/// Wait (bounded) until `f` holds.
async fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + cfg().timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a log follow loop of the backend with state in `state_dir` runs on the device.
fn following(state_dir: &str) -> bool {
    processes().iter().any(|(_, argv)| {
        argv.iter()
            .any(|a| a.contains(state_dir) && a.contains("while :"))
    })
}

/// A running pod whose one container prints nothing.
async fn quiet_pod(p: &Arc<SshProvider>) -> PodRef {
    let mut h = Harness::new(p.clone(), cfg());
    let pod = h.pod(
        vec![],
        vec![container("main", &["sleep", "3600"])],
        "Always",
    );
    p.create_pod(&pod).await.unwrap();
    h.wait_for("sessions", &pod.pod_ref, "running", |s| {
        matches!(s.containers[0].state, ContainerState::Running { .. })
    })
    .await
    .unwrap();
    pod.pod_ref
}

/// `sh -c script` in the container; its exit code and stdout.
async fn exec(p: &SshProvider, r: &PodRef, script: &str) -> Result<(i32, String), ProviderError> {
    let (tx, _, mut rx) = output_channel(16, true, false);
    let io = ExecIo {
        stdin: None,
        stdout: tx,
        stderr: None,
        resize: None,
        tty: false,
    };
    let cmd = vec!["sh".into(), "-c".into(), script.into()];
    let code = p.exec(r, "main", cmd, io).await?;
    let mut out = Vec::new();
    while let Ok((_, b)) = rx.try_recv() {
        out.extend_from_slice(&b);
    }
    Ok((code, String::from_utf8_lossy(&out).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_operations_share_one_connection() {
    let sshd = Sshd::start();
    let state = StateDir::new();
    let p = sshd.provider(&state.0);
    let r = quiet_pod(&p).await;
    assert_eq!(connections_to(sshd.port), 1);

    // Eight execs of one second each and status reads at the same time.
    let began = Instant::now();
    let mut ops = Vec::new();
    for i in 0..8 {
        let (p, r) = (p.clone(), r.clone());
        ops.push(tokio::spawn(async move {
            exec(&p, &r, &format!("sleep 1; echo {i}")).await
        }));
    }
    let mut seen = Vec::new();
    while !ops.iter().all(|t| t.is_finished()) {
        seen.push(connections_to(sshd.port));
        assert!(p.pod_status(&r).await.unwrap().is_some());
    }
    for (i, t) in ops.into_iter().enumerate() {
        assert_eq!(t.await.unwrap().unwrap(), (0, format!("{i}\n")));
    }
    assert!(
        began.elapsed() < Duration::from_secs(6),
        "the execs ran side by side: {:?}",
        began.elapsed()
    );
    assert!(!seen.is_empty() && seen.iter().all(|n| *n == 1), "{seen:?}");
    p.delete_pod(&r, Duration::ZERO).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_bounded_and_given_back() {
    let sshd = Sshd::start();
    let state = StateDir::new();
    let mut spec = sshd.spec(&state.0);
    // Two slots are kept for short commands: one is left for streams. A stream waits this long for it.
    spec.max_sessions = Some(3);
    spec.command_timeout_seconds = Some(2);
    let p = Arc::new(SshProvider::new(sshd.settings(
        &spec,
        "127.0.0.1",
        sshd.port,
    )));
    let r = quiet_pod(&p).await;

    // A follow of a container that prints nothing holds the stream slot.
    let follow = LogOptions {
        follow: true,
        ..Default::default()
    };
    let held = p.logs(&r, "main", &follow).await.unwrap();
    wait_for("the follow runs on the device", || following(&state.0)).await;
    let began = Instant::now();
    let busy = exec(&p, &r, "echo no").await;
    assert!(
        matches!(&busy, Err(ProviderError::Unavailable(m)) if m.contains("busy")),
        "{busy:?}"
    );
    assert!(
        began.elapsed() >= Duration::from_millis(1500),
        "waited for a slot first"
    );
    // Short commands have their own slots.
    assert!(p.pod_status(&r).await.unwrap().is_some());

    // The reader goes away (kubectl logs -f interrupted): the slot is free again, although the
    // container still prints nothing.
    drop(held);
    assert_eq!(exec(&p, &r, "echo yes").await.unwrap(), (0, "yes\n".into()));
    // ... and the follow ended on the device (sshd gives its session back).
    wait_for("the follow ends on the device", || !following(&state.0)).await;
    assert_eq!(connections_to(sshd.port), 1);
    p.delete_pod(&r, Duration::ZERO).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_exec_ends_on_the_device_and_gives_its_slot_back() {
    let sshd = Sshd::start();
    let state = StateDir::new();
    let mut spec = sshd.spec(&state.0);
    // One slot for streams, as in `sessions_are_bounded_and_given_back`.
    spec.max_sessions = Some(3);
    spec.command_timeout_seconds = Some(2);
    let p = Arc::new(SshProvider::new(sshd.settings(
        &spec,
        "127.0.0.1",
        sshd.port,
    )));
    let r = quiet_pod(&p).await;

    // `kubectl exec ... sleep | cat` that prints once, then nothing; its argv is unique to this test.
    // A pipeline: the `sleep` is not the process the exec started, so ending only that one would
    // leave it running.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let secs = format!("3600.{nanos:09}");
    let (tx, _, mut rx) = output_channel(16, true, false);
    let io = ExecIo {
        stdin: None,
        stdout: tx,
        stderr: None,
        resize: None,
        tty: false,
    };
    let cmd = vec![
        "sh".into(),
        "-c".into(),
        "echo started; sleep \"$0\" | cat".into(),
        secs.clone(),
    ];
    let mut quiet = Box::pin(p.exec(&r, "main", cmd, io));
    let started = tokio::time::timeout(cfg().timeout, async {
        tokio::select! {
            end = &mut quiet => panic!("the quiet exec ended: {end:?}"),
            chunk = rx.recv() => chunk,
        }
    })
    .await
    .unwrap();
    assert!(started.is_some_and(|(_, b)| b.starts_with(b"started")));
    let running = || !pids_running(&["sleep", &secs]).is_empty();
    wait_for("the command runs on the device", running).await;

    // The client went away: the kubelet API drops the exec. The command ends on the device (sshd
    // frees its session with it) and the stream slot is free again.
    drop(quiet);
    wait_for("the abandoned command ends on the device", || !running()).await;
    assert_eq!(exec(&p, &r, "echo yes").await.unwrap(), (0, "yes\n".into()));
    p.delete_pod(&r, Duration::ZERO).await.unwrap();
}
