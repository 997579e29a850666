//! The operator under test: the real `fleetlet` binary, run as a child process with the scenario's
//! kubeconfig, stopped with SIGTERM (graceful) or SIGKILL (crash).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::cluster::Cluster;

/// A running `fleetlet run`.
pub struct Operator {
    child: Option<Child>,
    log: PathBuf,
    metrics: Option<SocketAddr>,
    health: Option<SocketAddr>,
    /// Print the log tail when dropped (tests: yes, so failures explain themselves).
    log_tail_on_drop: bool,
}

/// A free loopback port (bound and released: another process could take it first, which a test notices).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    // Not `bind(0)`: an ephemeral port may be taken by an outgoing connection before the operator binds it.
    let base = crate::observe::port_block();
    (base..base + crate::observe::PORT_BLOCK)
        .find_map(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok())
        .map(|l| l.local_addr())
        .ok_or_else(|| anyhow::anyhow!("no free port in {base}.."))?
        .map_err(Into::into)
}

/// Path of the `fleetlet` binary built alongside the tests or the benchmark (`FLEETLET_BIN` overrides).
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("FLEETLET_BIN") {
        return Ok(p.into());
    }
    // Test binaries live in target/<profile>/deps, binaries such as fleetlet-bench in target/<profile>;
    // the fleetlet binary in target/<profile>.
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("unexpected binary location")?;
    let candidates = [Some(dir), dir.parent()];
    candidates
        .into_iter()
        .flatten()
        .map(|d| d.join("fleetlet"))
        .find(|bin| bin.is_file())
        .with_context(|| {
            format!(
                "fleetlet not found beside {}: build it first (`cargo build -p fleetlet`, or run the whole suite with `cargo test --workspace`) or set FLEETLET_BIN",
                exe.display()
            )
        })
}

impl Operator {
    /// Start `fleetlet run ARGS` against `cluster`. Logs go to a file in the scenario directory.
    ///
    /// Unless ARGS set them: the kubelet endpoints listen on 127.0.0.1 from a port block of their own, metrics
    /// and probes on free loopback ports (see [`Operator::metrics_url`]), and the leader election Lease gets a
    /// unique name, so parallel scenarios never share a port or a leader.
    pub fn start(cluster: &Cluster, args: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_env(cluster, args, &[])
    }

    /// As [`Operator::start`], with extra environment variables (e.g. `KUBECONFIG` for another identity).
    pub fn start_with_env(
        cluster: &Cluster,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let has = |flag: &str| {
            args.iter()
                .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
        };
        let mut extra: Vec<String> = Vec::new();
        let (mut metrics, mut health) = (None, None);
        if !has("--kubelet-address") {
            extra.extend(["--kubelet-address".into(), "127.0.0.1".into()]);
        }
        if !has("--kubelet-port-base") {
            extra.extend(["--kubelet-port-base".into(), crate::observe::port_base()]);
        }
        if !has("--metrics-bind-address") {
            let addr = free_port()?;
            metrics = Some(addr);
            extra.extend(["--metrics-bind-address".into(), addr.to_string()]);
        }
        if !has("--health-probe-bind-address") {
            let addr = free_port()?;
            health = Some(addr);
            extra.extend(["--health-probe-bind-address".into(), addr.to_string()]);
        }
        if !has("--leader-election-id") {
            extra.extend([
                "--leader-election-id".into(),
                crate::cluster::unique("fleetlet-e2e"),
            ]);
        }
        let log = cluster
            .dir()
            .join(format!("operator-{}.log", crate::cluster::unique("log")));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(binary()?)
            .arg("run")
            .args(args)
            .args(&extra)
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("FLEETLET_E2E_LOG")
                    .unwrap_or_else(|_| "info,kube_runtime=warn".into()),
            )
            .env_remove("POD_IP")
            .env_remove("POD_NAMESPACE")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .context("starting fleetlet")?;
        Ok(Self {
            child: Some(child),
            log,
            metrics,
            health,
            log_tail_on_drop: true,
        })
    }

    /// The process id, while running (the benchmark reads its RSS and CPU time from `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether dropping this prints the log tail to stderr (default: yes). The benchmark turns it off on
    /// success so that its output stays readable; the log file stays in the scenario directory.
    pub fn set_log_tail_on_drop(&mut self, on: bool) {
        self.log_tail_on_drop = on;
    }

    /// One of several replicas of a test that tells writers apart: it authenticates to the test
    /// apiserver as `user` (so the request log names it), runs with pod name `name`, writes the nodes'
    /// objects with that identity (`--node-identity operator`), renews node Leases every second, and
    /// elects on `election` with a 4 s lease (client-go's 15 s scaled down). `extra` args come first.
    /// Needs the test apiserver (its tokens).
    ///
    /// # Errors
    /// Without the test apiserver, or when the process cannot start.
    pub fn start_replica(
        cluster: &Cluster,
        user: &str,
        name: &str,
        election: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_replica_with_identity(cluster, user, name, election, "operator", extra)
    }

    /// [`Operator::start_replica`] with `--node-identity identity`: `node` (the default a user runs)
    /// writes the nodes' objects with their CSR-issued identities, so only the operator's own
    /// requests carry `user`.
    ///
    /// # Errors
    /// Without the test apiserver, or when the process cannot start.
    pub fn start_replica_with_identity(
        cluster: &Cluster,
        user: &str,
        name: &str,
        election: &str,
        identity: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let kubeconfig = cluster
            .kubeconfig_as(user)?
            .ok_or_else(|| anyhow::anyhow!("test apiserver expected"))?;
        let kubeconfig = kubeconfig.to_string_lossy().into_owned();
        let mut args = extra.to_vec();
        args.extend([
            "--node-identity",
            identity,
            "--lease-renew-interval",
            "1s",
            "--leader-election-id",
            election,
            "--leader-elect-lease-duration",
            "4s",
            "--leader-elect-renew-deadline",
            "3s",
            "--leader-elect-retry-period",
            "500ms",
        ]);
        Self::start_with_env(
            cluster,
            &args,
            &[("KUBECONFIG", kubeconfig.as_str()), ("POD_NAME", name)],
        )
    }

    /// The first line of `/metrics` starting with `prefix`; `None` when the harness chose no metrics
    /// address, the endpoint does not answer, or no line matches.
    pub async fn metric_line(&self, prefix: &str) -> Option<String> {
        let (_, body) = crate::probe::get(&self.metrics_url()?).await.ok()?;
        body.lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_string)
    }

    /// Path of the operator's log file.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// `http://ADDR/metrics`, when the harness chose the address.
    pub fn metrics_url(&self) -> Option<String> {
        self.metrics.map(|a| format!("http://{a}/metrics"))
    }

    /// `http://ADDR` of the probes (`/healthz`, `/readyz`), when the harness chose the address.
    pub fn health_url(&self) -> Option<String> {
        self.health.map(|a| format!("http://{a}"))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The operator's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait (up to 20 s) for a clean exit; returns whether it exited successfully.
    pub async fn terminate(&mut self) -> anyhow::Result<bool> {
        let Some(mut child) = self.child.take() else {
            return Ok(true);
        };
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.success());
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                anyhow::bail!("fleetlet did not exit within 20 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        // Test output is captured and shown only for failing tests (panicked or returned Err), so the log
        // tail is always printed: a scenario that times out then explains itself.
        if !self.log_tail_on_drop {
            self.kill();
            return;
        }
        let logs = self.logs();
        let lines: Vec<&str> = logs.lines().collect();
        let tail = &lines[lines.len().saturating_sub(200)..];
        eprintln!(
            "---- fleetlet log ({}, last {} lines) ----\n{}",
            self.log.display(),
            tail.len(),
            tail.join("\n")
        );
        self.kill();
    }
}
