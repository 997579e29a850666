//! The task that drives a mock pod: start delay, init containers one at a time, then all main
//! containers, each run ending by its command finishing or by `exitAfterMs`, and restarts per the pod's
//! restartPolicy with a capped back-off. The task ends as soon as nothing is pending.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::mpsc;
use vk_runtime::ContainerState;

use super::{MockPod, Which, waiting};
use crate::backends::mock::fs;
use crate::backends::mock::logs::RunOutput;
use crate::backends::mock::settings::fnv;
use crate::backends::mock::shell::{self, Io};

/// Back-off before the second restart; doubles per restart up to [`BACKOFF_CAP`]. The first restart is
/// immediate, as in the kubelet.
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);
pub const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// A run at least this long resets the back-off.
const BACKOFF_RESET: Duration = Duration::from_secs(10);

/// How a run of a container ended.
enum RunEnd {
    Exited(i32),
    /// Running with nothing pending (no process, no exit timer): no task needed.
    Forever,
    Cancelled,
}

impl MockPod {
    /// The pod's task: start delay, init containers in order, then all main containers.
    pub async fn run(self: Arc<Self>) {
        let delay = self.shared.settings().start_delay;
        if !self.sleep(delay).await {
            return;
        }
        let has_init = !self.init.is_empty();
        self.update(|s| {
            s.sandbox_ready = true;
            s.started_at = Some(Timestamp::now());
            if has_init {
                for c in s.init.iter_mut().chain(s.main.iter_mut()) {
                    c.status.state = waiting("PodInitializing", None);
                }
            }
        });
        for i in 0..self.init.len() {
            match self.lifecycle(Which::Init(i)).await {
                Some(0) => {}
                // Failed for good (restartPolicy Never), or stopped.
                Some(_) => return self.update(|s| s.finished = true),
                None => return,
            }
        }
        let ends =
            futures::future::join_all((0..self.main.len()).map(|i| self.lifecycle(Which::Main(i))))
                .await;
        let running_forever = self
            .lock()
            .main
            .iter()
            .any(|c| matches!(c.status.state, ContainerState::Running { .. }));
        if !self.cancel.is_cancelled() && ends.iter().all(Option::is_some) && !running_forever {
            self.update(|s| s.finished = true);
        }
    }

    /// Sleep unless stopped first; `false` when stopped.
    async fn sleep(&self, d: Duration) -> bool {
        if d.is_zero() {
            return !self.cancel.is_cancelled();
        }
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            () = self.cancel.cancelled() => false,
        }
    }

    /// Run a container until it will not run again: its final exit code; `None` when stopped or still
    /// running with nothing pending.
    async fn lifecycle(&self, which: Which) -> Option<i32> {
        let mut restarts: u32 = 0;
        loop {
            let started = Instant::now();
            let code = match self.run_once(which).await {
                RunEnd::Exited(code) => code,
                RunEnd::Forever | RunEnd::Cancelled => return None,
            };
            let restart = match (which, self.restart_policy.as_str()) {
                (_, "Never") => false,
                (Which::Init(_), _) | (Which::Main(_), "OnFailure") => code != 0,
                (Which::Main(_), _) => true,
            };
            if !restart {
                return Some(code);
            }
            if started.elapsed() >= BACKOFF_RESET {
                restarts = 0;
            }
            let delay = match restarts {
                0 => Duration::ZERO,
                n => BACKOFF_BASE
                    .saturating_mul(1 << (n - 1).min(16))
                    .min(BACKOFF_CAP),
            };
            restarts += 1;
            if !delay.is_zero() {
                let name = self.spec(which).map(|s| s.name.clone()).unwrap_or_default();
                let message = format!(
                    "back-off {delay:?} restarting failed container={name} pod={}_{}({})",
                    self.pod_ref.name, self.pod_ref.namespace, self.pod_ref.uid
                );
                self.update(|s| {
                    if let Some(c) = s.get(which) {
                        c.status.last_termination = Some(c.status.state.clone());
                        c.status.state = waiting("CrashLoopBackOff", Some(message));
                    }
                });
            }
            if !self.sleep(delay).await {
                return None;
            }
        }
    }

    async fn run_once(&self, which: Which) -> RunEnd {
        let Some(spec) = self.spec(which) else {
            return RunEnd::Cancelled;
        };
        let settings = self.shared.settings();
        let run = Arc::new(RunOutput::default());
        let (tx, mut rx) = if spec.stdin {
            let (tx, rx) = mpsc::channel(16);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let started_at = Timestamp::now();
        let is_main = matches!(which, Which::Main(_));
        // A new run is a new container: a fresh filesystem, shared with its exec sessions.
        let fs = fs::shared();
        let id = |runs: u32| {
            format!(
                "mock://{:016x}",
                fnv(&[&self.pod_ref.uid, &spec.name, &runs.to_string()])
            )
        };
        self.update(|s| {
            if let Some(c) = s.get(which) {
                if c.runs > 0 {
                    c.status.restart_count += 1;
                    if let ContainerState::Terminated { .. } = c.status.state {
                        c.status.last_termination = Some(c.status.state.clone());
                    }
                }
                c.previous = c.current.replace(run.clone());
                c.runs += 1;
                c.status.state = ContainerState::Running { started_at };
                c.status.ready = is_main;
                c.status.container_id = Some(id(c.runs));
                c.stdin = tx;
                c.fs = Some(fs.clone());
            }
            if is_main {
                // Init containers are done once main containers run.
                for c in &mut s.init {
                    c.stdin = None;
                }
            }
        });
        let forever = spec.argv.is_empty()
            || spec
                .argv
                .iter()
                .map(String::as_str)
                .eq(["sleep", "infinity"]);
        let timer = async {
            match settings.exit_after {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let code = if forever {
            if settings.exit_after.is_none() {
                return RunEnd::Forever;
            }
            tokio::select! {
                () = timer => settings.exit_code,
                () = self.cancel.cancelled() => return RunEnd::Cancelled,
            }
        } else {
            let mut io = Io {
                stdin: rx.as_mut(),
                out: &*run,
                env: self.env_of(&spec.name),
                cancel: &self.cancel,
                tty: spec.tty,
                fs: &fs,
            };
            let code = tokio::select! {
                code = shell::run_argv(&spec.argv, &mut io) => code,
                () = timer => settings.exit_code,
            };
            if self.cancel.is_cancelled() {
                return RunEnd::Cancelled;
            }
            code
        };
        self.update(|s| {
            if let Some(c) = s.get(which) {
                let reason = if code == 0 { "Completed" } else { "Error" };
                c.status.state = ContainerState::Terminated {
                    exit_code: code,
                    reason: reason.into(),
                    message: None,
                    started_at: Some(started_at),
                    finished_at: Timestamp::now(),
                };
                c.status.ready = !is_main && code == 0;
                c.stdin = None;
            }
        });
        run.close(code);
        RunEnd::Exited(code)
    }

    /// After the task stopped: running containers end (simulated processes exit 0 on SIGTERM), outputs
    /// close, and the final state is reported.
    pub fn stop(&self) {
        let mut closing = Vec::new();
        self.update(|s| {
            for c in s.init.iter_mut().chain(s.main.iter_mut()) {
                if let ContainerState::Running { started_at } = c.status.state {
                    let finished_at = Timestamp::now();
                    c.status.state = ContainerState::Terminated {
                        exit_code: 0,
                        reason: "Completed".into(),
                        message: None,
                        started_at: Some(started_at),
                        finished_at,
                    };
                }
                c.status.ready = false;
                c.stdin = None;
                closing.extend(c.current.clone());
            }
            s.finished = true;
        });
        for run in closing {
            run.close(0);
        }
    }
}
