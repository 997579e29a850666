//! Helpers for scenarios that reach virtual nodes' kubelet API through `kubectl` (logs, exec,
//! attach, port-forward, `get --raw .../proxy/...`): which kubectl binaries to use, how to force
//! each streaming transport, Mock-backend pods, and a port-forward echo round trip.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::cluster::Cluster;
use crate::wait::eventually;

/// The kubectl binaries every streaming check runs with: the default, the last SPDY-only one
/// (1.27) and one speaking WebSocket `v5.channel.k8s.io` (1.33).
pub const KUBECTLS: [&str; 3] = ["kubectl", "kubectl.1.27", "kubectl.1.33"];

/// How kubectl carries exec/attach/port-forward streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// kubectl's default: WebSocket first (>= 1.30), falling back to SPDY when the upgrade fails.
    Default,
    /// SPDY/3.1 only (`KUBECTL_*_WEBSOCKETS=false`).
    Spdy,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Default, Transport::Spdy];

    /// Environment variables that select this transport.
    pub fn envs(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Transport::Default => &[],
            Transport::Spdy => &[
                ("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false"),
                ("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false"),
            ],
        }
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The path of kubectl binary `name`: on PATH, else beside the real `kubectl` (versioned
/// binaries ship next to it, e.g. in the Cloud SDK's bin directory).
pub fn kubectl_binary(name: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = on_path(name) {
        return Ok(p);
    }
    let kubectl = on_path("kubectl").context("kubectl is not on PATH")?;
    let real = std::fs::canonicalize(&kubectl)?;
    real.parent()
        .map(|d| d.join(name))
        .filter(|p| p.is_file())
        .with_context(|| format!("{name} is neither on PATH nor beside {}", real.display()))
}

/// What a kubectl run gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs kubectl binary `name` with `transport`, feeding `stdin`.
pub async fn kubectl(
    c: &Cluster,
    name: &str,
    transport: Transport,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<Run> {
    let bin = kubectl_binary(name)?;
    let bin = bin.to_str().context("kubectl path is not UTF-8")?;
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        c.kubectl_with(bin, args, stdin, transport.envs()),
    )
    .await
    .with_context(|| format!("{name} {args:?} did not finish within 60 s"))??;
    Ok(Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A word `sh` reads back unchanged (for the command line script(1) runs).
fn sh_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs kubectl binary `name` with `transport` under script(1), so its stdin is a terminal (what
/// `exec -t` needs). The output is the terminal's: `\r\n` line ends, stdout and stderr mixed.
pub async fn kubectl_tty(
    c: &Cluster,
    name: &str,
    transport: Transport,
    args: &[&str],
) -> anyhow::Result<Run> {
    let bin = kubectl_binary(name)?;
    let kubeconfig = c
        .kubeconfig
        .to_str()
        .context("kubeconfig path is not UTF-8")?;
    let bin = bin.to_str().context("kubectl path is not UTF-8")?;
    let line = [bin, "--kubeconfig", kubeconfig]
        .iter()
        .chain(args)
        .map(|a| sh_word(a))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = tokio::process::Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"])
        .envs(transport.envs().iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .with_context(|| format!("{name} {args:?} under script(1) did not finish within 60 s"))??;
    Ok(Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// One container of a Mock pod: name and command.
pub type ContainerSpec<'a> = (&'a str, &'a [&'a str]);

/// A pod for `node` whose containers run Mock shell commands.
pub fn mock_pod(
    ns: &str,
    name: &str,
    node: &str,
    containers: &[ContainerSpec<'_>],
    restart_policy: &str,
) -> Value {
    let cs: Vec<Value> = containers
        .iter()
        .map(|(n, cmd)| json!({"name": n, "image": "busybox", "command": cmd}))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [{"key": "fleetlet.dev/virtual-node", "operator": "Exists", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 1,
            "restartPolicy": restart_policy,
            "containers": cs,
        }
    })
}

/// Creates `pod` and waits until `ready` accepts it.
pub async fn create_and_wait(
    c: &Cluster,
    pod: Value,
    what: &str,
    ready: impl Fn(&Pod) -> bool,
) -> anyhow::Result<Pod> {
    let pod: Pod = serde_json::from_value(pod)?;
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().context("pod without name")?;
    let api: Api<Pod> = Api::namespaced(c.client.clone(), &ns);
    api.create(&PostParams::default(), &pod).await?;
    eventually(Duration::from_secs(60), what, || async {
        api.get_opt(&name).await.ok().flatten().filter(|p| ready(p))
    })
    .await
}

/// Whether every container of the pod runs.
pub fn running(p: &Pod) -> bool {
    let st = p.status.as_ref();
    st.and_then(|s| s.phase.as_deref()) == Some("Running")
        && st
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .all(|c| c.state.as_ref().and_then(|s| s.running.as_ref()).is_some())
            })
}

/// Runs `kubectl port-forward pod/POD :PORT`, sends `payload` to the local port and returns what
/// came back once as many bytes arrived (the Mock echoes), or what arrived before the deadline.
pub async fn port_forward_echo(
    kubeconfig: &Path,
    name: &str,
    transport: Transport,
    ns: &str,
    pod: &str,
    port: u16,
    payload: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let mut child = tokio::process::Command::new(kubectl_binary(name)?)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "-n",
            ns,
            "port-forward",
            &format!("pod/{pod}"),
            &format!(":{port}"),
        ])
        .envs(transport.envs().iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let local: u16 = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            // "Forwarding from 127.0.0.1:41234 -> 80"
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:")
                && let Some((p, _)) = rest.split_once(' ')
            {
                return Ok::<u16, anyhow::Error>(p.parse()?);
            }
        }
        anyhow::bail!("kubectl port-forward ended without listening")
    })
    .await
    .context("kubectl port-forward did not start listening within 30 s")??;
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", local)).await?;
    conn.write_all(payload).await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while got.len() < payload.len() {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    drop(conn);
    let _ = child.start_kill();
    let out = child.wait_with_output().await?;
    if got.len() < payload.len() {
        anyhow::bail!(
            "port-forward echo incomplete ({} of {} bytes); kubectl stderr: {}",
            got.len(),
            payload.len(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(got)
}
