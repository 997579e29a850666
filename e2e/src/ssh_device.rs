//! Shared steps of the SSH scenarios (`tests/ssh.rs`): this machine as the device behind a loopback
//! sshd, the operator, and the key Secret, DeviceBackend and VirtualNode applied with kubectl as a
//! user would; readers of what the device runs.

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use serde_json::{Value, json};

use crate::cluster::{Cluster, OPERATOR_NAMESPACE, unique};
use crate::fixtures::{SshBackendSpec, pod_on, ssh_backend, virtual_node_at};
use crate::observe::node_ready;
use crate::operator::Operator;
use crate::sshd::{Sshd, StateDir, whoami};
use crate::wait::eventually;

/// A virtual node whose device is this machine. Fields drop in order: the operator first (so nothing
/// restarts pods while their state is removed), then the pods' processes and state, sshd, the cluster.
pub struct Device {
    pub op: Operator,
    pub state: StateDir,
    pub sshd: Sshd,
    pub c: Cluster,
    pub node: String,
    pub backend: String,
    pub secret: String,
}

/// Which host key the DeviceBackend pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// The server's own key.
    ServerKey,
    /// A key the server does not have.
    OtherKey,
}

/// Starts sshd, a cluster and the operator, then applies the key Secret, an SSH DeviceBackend pinning
/// `pin` and a VirtualNode at 127.0.0.1. Does not wait for the node.
///
/// # Errors
/// When sshd is not installed (the message says how to install it) or something cannot start.
pub async fn device(pin: Pin, operator_args: &[&str]) -> anyhow::Result<Device> {
    let sshd = Sshd::start()?;
    let c = Cluster::start().await?;
    let op = Operator::start(&c, operator_args)?;
    let (backend, node, secret) = (unique("lab"), unique("dev"), unique("lab-key"));
    let key_path = sshd.user_key_path();
    let key_path = key_path.to_str().context("key path is not UTF-8")?;
    // Exactly what docs/backends.md tells users to run, as a manifest for `kubectl apply`.
    let secret_yaml = c
        .kubectl(&[
            "create",
            "secret",
            "generic",
            &secret,
            "-n",
            OPERATOR_NAMESPACE,
            "--type=kubernetes.io/ssh-auth",
            &format!("--from-file=ssh-privatekey={key_path}"),
            "--dry-run=client",
            "-o",
            "yaml",
        ])
        .await?;
    let state = StateDir::new();
    let user = whoami();
    let spec = SshBackendSpec {
        user: &user,
        port: sshd.port,
        key_secret: (OPERATOR_NAMESPACE, &secret),
        host_key: match pin {
            Pin::ServerKey => &sshd.host_key,
            Pin::OtherKey => &sshd.other_host_key,
        },
        state_dir: &state.0,
    };
    c.apply(&format!(
        "{secret_yaml}---\n{}---\n{}",
        ssh_backend(&backend, &spec),
        virtual_node_at(&node, &backend, "127.0.0.1")
    ))
    .await
    .map_err(anyhow::Error::msg)?;
    Ok(Device {
        op,
        state,
        sshd,
        c,
        node,
        backend,
        secret,
    })
}

impl Device {
    /// Waits until the Node is Ready.
    ///
    /// # Errors
    /// When it is not within 90 s.
    pub async fn ready_node(&self) -> anyhow::Result<Node> {
        let nodes: Api<Node> = Api::all(self.c.client.clone());
        eventually(Duration::from_secs(90), "SSH node Ready", || async {
            nodes
                .get_opt(&self.node)
                .await
                .ok()
                .flatten()
                .filter(node_ready)
        })
        .await
    }

    /// Deletes what the scenario applied (matters on a real cluster).
    pub async fn cleanup(&self) {
        for (kind, name, ns) in [
            ("virtualnode", &self.node, None),
            ("devicebackend", &self.backend, None),
            ("secret", &self.secret, Some(OPERATOR_NAMESPACE)),
        ] {
            let mut args = vec!["delete", kind, name, "--ignore-not-found", "--wait=false"];
            if let Some(ns) = ns {
                args.extend(["-n", ns]);
            }
            let _ = self.c.kubectl(&args).await;
        }
    }
}

/// A pod on `node` (nodeSelector and toleration) whose one container `main` runs `command`.
pub fn pod_running(ns: &str, name: &str, node: &str, command: &[&str]) -> Value {
    let mut pod = pod_on(ns, name, node);
    pod["spec"]["containers"][0]["command"] = json!(command);
    pod
}

/// The PID of the pod's first container, from its containerID (`ssh://<uid>/<name>/<pid>`).
pub fn container_pid(pod: &Pod) -> Option<u32> {
    let id = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .container_id
        .as_deref()?;
    id.strip_prefix("ssh://")?.rsplit('/').next()?.parse().ok()
}

/// The PID the device's state directory records for container `container` of pod `uid`.
pub fn recorded_pid(state: &StateDir, uid: &str, container: &str) -> Option<u32> {
    std::fs::read_to_string(state.pod(uid).join("c").join(container).join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether process `pid` is alive (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// Trimmed stdout of a command run on this machine (the device).
///
/// # Errors
/// When it cannot run or exits non-zero.
pub fn local(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(cmd).args(args).output()?;
    anyhow::ensure!(out.status.success(), "{cmd} {args:?}: {:?}", out.status);
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The restart count of the pod's first container.
pub fn restarts(p: &Pod) -> Option<i32> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()
        .map(|c| c.restart_count)
}
