//! Security and reachability of the SSH backend against a real sshd: pinned host keys (a changed key is
//! refused with HostKeyMismatch and nothing runs; a known_hosts Secret works as well), a refused user
//! key, an unreachable device (unhealthy with a reason, pods left running, back when it is reachable),
//! and keys kept out of debug output.

#![allow(clippy::unwrap_used)]

mod ssh_support;

use std::sync::Arc;
use std::time::Duration;

use fleetlet::backends::ssh::{Secrets, Settings, SshProvider};
use ssh_support::{Relay, Sshd, StateDir, pids_with, unique, wait_until};
use vk_runtime::testing::{ConformanceConfig, Harness, container};
use vk_runtime::{ContainerState, Health, Provider, ProviderError};

fn cfg() -> ConformanceConfig {
    ConformanceConfig {
        namespace: "ssh-sec".into(),
        timeout: Duration::from_secs(30),
    }
}

/// Poll health until `pred` holds (at most 30 s).
async fn health_until(p: &SshProvider, pred: impl Fn(&Health) -> bool) -> Health {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let h = p.health().await;
        if pred(&h) || tokio::time::Instant::now() > deadline {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_is_refused_and_nothing_runs() {
    let sshd = Sshd::start();
    let state = StateDir::new();
    let mut spec = sshd.spec(&state.0);
    spec.host_keys = vec![sshd.other_host_key.clone()];
    let p = Arc::new(SshProvider::new(sshd.settings(
        &spec,
        "127.0.0.1",
        sshd.port,
    )));
    let h = p.health().await;
    assert!(!h.ready);
    assert_eq!(h.reason, "HostKeyMismatch", "{h:?}");
    assert!(
        h.message.contains("SHA256:"),
        "names the offered key: {h:?}"
    );
    let mut harness = Harness::new(p.clone(), cfg());
    let pod = harness.pod(
        vec![],
        vec![container("main", &["sleep", "3600"])],
        "Always",
    );
    assert!(matches!(
        p.create_pod(&pod).await,
        Err(ProviderError::Unavailable(_))
    ));
    assert!(p.list_pods().await.is_err());
    assert!(!state.path().exists(), "nothing reached the device");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_hosts_secret_pins_the_key() {
    let sshd = Sshd::start();
    let state = StateDir::new();
    let mut spec = sshd.spec(&state.0);
    spec.host_keys = vec![];
    let known_hosts = format!(
        "# lab\nother.example {}\n[127.0.0.1]:{} {} lab\n",
        sshd.other_host_key, sshd.port, sshd.host_key
    );
    let secrets = Secrets {
        known_hosts: Some(known_hosts.into_bytes()),
        ..sshd.secrets()
    };
    let settings = Settings::new(&spec, Some("127.0.0.1"), &secrets).unwrap();
    assert_eq!(settings.host_keys.len(), 1);
    let p = SshProvider::new(settings);
    assert!(p.health().await.ready);

    // No entry for this host: refused before dialling.
    let err = Settings::new(&spec, Some("elsewhere"), &secrets)
        .err()
        .unwrap();
    assert!(err.to_string().contains("no pinned host key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_user_key_and_redacted_settings() {
    let sshd = Sshd::start();
    let state = StateDir::new();
    let spec = sshd.spec(&state.0);
    let secrets = Secrets {
        private_key: std::fs::read(sshd.dir.join("other")).unwrap(),
        ..sshd.secrets()
    };
    let settings = Settings::new(&spec, Some("127.0.0.1"), &secrets).unwrap();
    let debug = format!("{settings:?}");
    let key_text = String::from_utf8(secrets.private_key.clone()).unwrap();
    let body = key_text.lines().nth(1).unwrap();
    assert!(
        !debug.contains(body) && debug.contains("redacted"),
        "{debug}"
    );
    let p = SshProvider::new(settings);
    let h = p.health().await;
    assert_eq!(h.reason, "AuthenticationFailed", "{h:?}");
    assert!(!h.message.contains(body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_device_is_unhealthy_and_its_pods_keep_running() {
    let sshd = Sshd::start();
    let state = StateDir::new();
    let target = format!("127.0.0.1:{}", sshd.port).parse().unwrap();
    let relay = Relay::start(target).await.unwrap();
    let port = relay.port;
    let spec = sshd.spec(&state.0);
    let p = Arc::new(SshProvider::new(sshd.settings(&spec, "127.0.0.1", port)));
    let mut h = Harness::new(p.clone(), cfg());
    let marker = unique("survivor");
    let pod = h.pod(
        vec![],
        vec![container("main", &["sh", "-c", "sleep 3600", &marker])],
        "Always",
    );
    p.create_pod(&pod).await.unwrap();
    let running = |s: &vk_runtime::BackendPodStatus| {
        matches!(s.containers[0].state, ContainerState::Running { .. })
    };
    let before = h
        .wait_for("unreachable", &pod.pod_ref, "running", running)
        .await
        .unwrap();
    assert!(p.health().await.ready);

    relay.cut().await;
    let down = health_until(&p, |h| !h.ready).await;
    assert!(!down.ready, "{down:?}");
    assert!(
        ["HostUnreachable", "SshProtocolError", "Timeout"].contains(&down.reason.as_str()),
        "{down:?}"
    );
    assert!(matches!(
        p.list_pods().await,
        Err(ProviderError::Unavailable(_))
    ));
    assert_eq!(
        pids_with(&marker).len(),
        1,
        "the pod keeps running on the device"
    );

    // The device comes back: reconnect (backoff at most 2 s here), same process.
    let _back = Relay::start_at(port, target).await.unwrap();
    let up = health_until(&p, |h| h.ready).await;
    assert!(up.ready, "{up:?}");
    let after = p.pod_status(&pod.pod_ref).await.unwrap().unwrap();
    assert_eq!(
        after.containers[0].container_id,
        before.containers[0].container_id
    );
    p.delete_pod(&pod.pod_ref, Duration::ZERO).await.unwrap();
    assert!(wait_until(Duration::from_secs(5), || pids_with(&marker).is_empty()));
}
