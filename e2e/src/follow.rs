//! `kubectl logs -f` held open across something that happens meanwhile (a certificate rotation, a
//! restart): a pod that prints numbered ticks, and a reader that waits for ticks past a given one.

use std::time::Duration;

use anyhow::Context;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdout};

use crate::Cluster;
use crate::kubelet::kubectl_binary;

/// An `sh -c` script printing `tick <n>` every second for `seconds` seconds (spelled out: the mock
/// backend's shell has no loops).
pub fn ticker(seconds: u32) -> String {
    (0..seconds)
        .map(|i| format!("echo tick {i}; sleep 1"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A running `kubectl logs -f`; killed when dropped.
pub struct Follow {
    child: Child,
    out: ChildStdout,
    text: String,
}

impl Follow {
    /// Starts `kubectl logs -f <pod>` in the default namespace of `c`'s kubeconfig.
    ///
    /// # Errors
    /// When kubectl cannot be started.
    pub fn start(c: &Cluster, pod: &str) -> anyhow::Result<Follow> {
        let mut child = tokio::process::Command::new(kubectl_binary("kubectl")?)
            .arg("--kubeconfig")
            .arg(&c.kubeconfig)
            .args(["logs", "-f", pod])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting kubectl logs -f")?;
        let out = child.stdout.take().context("no stdout")?;
        Ok(Follow {
            child,
            out,
            text: String::new(),
        })
    }

    /// The highest tick in the complete lines streamed so far.
    pub fn last_tick(&self) -> Option<u64> {
        let complete = self.text.rfind('\n').map_or(0, |i| i + 1);
        self.text[..complete]
            .lines()
            .filter_map(|l| l.strip_prefix("tick ")?.trim().parse().ok())
            .max()
    }

    /// Reads the stream until it shows a tick above `after` (any tick for `None`); returns the highest.
    ///
    /// # Errors
    /// When the stream ends (kubectl exited: the connection was dropped) or `timeout` passes first.
    pub async fn tick_after(
        &mut self,
        after: Option<u64>,
        timeout: Duration,
    ) -> anyhow::Result<u64> {
        let mut buf = [0u8; 256];
        let read = async {
            loop {
                if let Some(t) = self.last_tick().filter(|t| after.is_none_or(|a| *t > a)) {
                    return Ok(t);
                }
                let n = self.out.read(&mut buf).await?;
                anyhow::ensure!(n > 0, "the log stream ended after {:?}", self.text);
                self.text.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .with_context(|| format!("no tick after {after:?} within {timeout:?}"))?
    }

    /// Whether kubectl is still running (its stream open).
    ///
    /// # Errors
    /// When its status cannot be read.
    pub fn streaming(&mut self) -> anyhow::Result<bool> {
        Ok(self.child.try_wait()?.is_none())
    }
}
