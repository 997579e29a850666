//! The operator under test: the real `fleetlet` binary, run as a child process with the scenario's
//! kubeconfig, stopped with SIGTERM (graceful) or SIGKILL (crash).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::cluster::Cluster;

/// A running `fleetlet run`.
pub struct Operator {
    child: Option<Child>,
    log: PathBuf,
}

/// Path of the `fleetlet` binary built alongside the tests (`FLEETLET_BIN` overrides).
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("FLEETLET_BIN") {
        return Ok(p.into());
    }
    // Test binaries live in target/<profile>/deps; the fleetlet binary in target/<profile>.
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .context("unexpected test binary location")?;
    let bin = profile_dir.join("fleetlet");
    anyhow::ensure!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p fleetlet`, or run the whole suite with `cargo test --workspace`)",
        bin.display()
    );
    Ok(bin)
}

impl Operator {
    /// Start `fleetlet run ARGS` against `cluster`. Logs go to a file in the scenario directory.
    pub fn start(cluster: &Cluster, args: &[&str]) -> anyhow::Result<Self> {
        let log = cluster
            .dir()
            .join(format!("operator-{}.log", crate::cluster::unique("log")));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(binary()?)
            .arg("run")
            .args(args)
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("FLEETLET_E2E_LOG")
                    .unwrap_or_else(|_| "info,kube_runtime=warn".into()),
            )
            .env_remove("POD_IP")
            .env_remove("POD_NAMESPACE")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .context("starting fleetlet")?;
        Ok(Self {
            child: Some(child),
            log,
        })
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
        if std::thread::panicking() {
            eprintln!("---- fleetlet log ----\n{}", self.logs());
        }
        self.kill();
    }
}
