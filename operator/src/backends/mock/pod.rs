//! One simulated pod: its containers' states and outputs, and the task that drives them (start delay,
//! init containers in order, main containers, exits, restarts with back-off). The task lives only while
//! something is pending: a pod whose containers run forever holds no task.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fleetlet_crds::MockBackend;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vk_runtime::pod::env::expand;
use vk_runtime::{
    BackendPodStatus, ContainerState, ContainerStatus, PodNotifier, PodRef, ProviderError,
    ResolvedPod,
};

use super::logs::RunOutput;
use super::shell::{self, Io};

/// Back-off before the second restart; doubles per restart up to [`BACKOFF_CAP`]. The first restart is
/// immediate, as in the kubelet.
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);
pub const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// A run at least this long resets the back-off.
const BACKOFF_RESET: Duration = Duration::from_secs(10);

/// The live settings of a mock device, from its `MockBackend`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    pub start_delay: Duration,
    pub exit_after: Option<Duration>,
    pub exit_code: i32,
    pub capacity: Option<BTreeMap<String, Quantity>>,
    pub healthy: bool,
}

impl From<&MockBackend> for Settings {
    fn from(spec: &MockBackend) -> Self {
        Self {
            start_delay: Duration::from_millis(spec.start_delay_ms.unwrap_or(0).into()),
            exit_after: spec
                .exit_after_ms
                .map(|ms| Duration::from_millis(ms.into())),
            exit_code: spec.exit_code.unwrap_or(0),
            capacity: spec.capacity.clone(),
            healthy: spec.healthy.unwrap_or(true),
        }
    }
}

/// What every pod of one device shares.
pub struct Shared {
    pub settings: RwLock<Settings>,
    pub notifier: RwLock<Option<PodNotifier>>,
}

impl Shared {
    pub fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A container's definition as the mock runs it.
struct Spec {
    name: String,
    image: String,
    /// Command and args with `$(VAR)` expanded; empty: runs until stopped.
    argv: Vec<String>,
    stdin: bool,
    stdin_once: bool,
    tty: bool,
}

/// A container of the pod: init containers first, then main containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Init(usize),
    Main(usize),
}

struct CState {
    status: ContainerStatus,
    current: Option<Arc<RunOutput>>,
    previous: Option<Arc<RunOutput>>,
    /// The main process's stdin, while it runs and reads one.
    stdin: Option<mpsc::Sender<Bytes>>,
    runs: u32,
}

#[derive(Default)]
struct PodState {
    sandbox_ready: bool,
    started_at: Option<Timestamp>,
    finished: bool,
    init: Vec<CState>,
    main: Vec<CState>,
}

impl PodState {
    fn get(&mut self, which: Which) -> Option<&mut CState> {
        match which {
            Which::Init(i) => self.init.get_mut(i),
            Which::Main(i) => self.main.get_mut(i),
        }
    }
}

/// How a run of a container ended.
enum RunEnd {
    Exited(i32),
    /// Running with nothing pending (no process, no exit timer): no task needed.
    Forever,
    Cancelled,
}

pub struct MockPod {
    pub pod_ref: PodRef,
    pub ip: Ipv4Addr,
    pub cancel: CancellationToken,
    pub task: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
    restart_policy: String,
    init: Vec<Spec>,
    main: Vec<Spec>,
    env: BTreeMap<String, Vec<(String, String)>>,
    state: Mutex<PodState>,
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState::Waiting {
        reason: reason.into(),
        message,
    }
}

/// FNV-1a: a stable hash for IPs, container IDs and stats (std's hasher may change between releases).
pub fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0xff]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

impl MockPod {
    pub fn new(
        pod: &ResolvedPod,
        shared: Arc<Shared>,
        ip: Ipv4Addr,
    ) -> Result<Self, ProviderError> {
        let spec = pod.pod.spec.as_ref().ok_or_else(|| {
            ProviderError::InvalidInput(format!("pod {} has no spec", pod.pod_ref))
        })?;
        let env = pod.env.clone();
        let to_spec = |c: &Container| {
            let vars = env.get(&c.name).map(Vec::as_slice).unwrap_or_default();
            let lookup = |n: &str| {
                vars.iter()
                    .rev()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.clone())
            };
            let argv = c
                .command
                .iter()
                .flatten()
                .chain(c.args.iter().flatten())
                .map(|a| expand(a, lookup))
                .collect();
            Spec {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                argv,
                stdin: c.stdin.unwrap_or(false),
                stdin_once: c.stdin_once.unwrap_or(false),
                tty: c.tty.unwrap_or(false),
            }
        };
        let init: Vec<Spec> = spec.init_containers.iter().flatten().map(to_spec).collect();
        let main: Vec<Spec> = spec.containers.iter().map(to_spec).collect();
        let cstate = |s: &Spec| CState {
            status: ContainerStatus {
                name: s.name.clone(),
                state: waiting("ContainerCreating", None),
                last_termination: None,
                restart_count: 0,
                ready: false,
                image: s.image.clone(),
                container_id: None,
            },
            current: None,
            previous: None,
            stdin: None,
            runs: 0,
        };
        let state = PodState {
            init: init.iter().map(cstate).collect(),
            main: main.iter().map(cstate).collect(),
            ..Default::default()
        };
        Ok(Self {
            pod_ref: pod.pod_ref.clone(),
            ip,
            cancel: CancellationToken::new(),
            task: Mutex::new(None),
            shared,
            restart_policy: spec
                .restart_policy
                .clone()
                .unwrap_or_else(|| "Always".into()),
            init,
            main,
            env,
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> MutexGuard<'_, PodState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spec(&self, which: Which) -> Option<&Spec> {
        match which {
            Which::Init(i) => self.init.get(i),
            Which::Main(i) => self.main.get(i),
        }
    }

    /// The container named `name`.
    pub fn find(&self, name: &str) -> Option<Which> {
        let init = self
            .init
            .iter()
            .position(|s| s.name == name)
            .map(Which::Init);
        init.or_else(|| {
            self.main
                .iter()
                .position(|s| s.name == name)
                .map(Which::Main)
        })
    }

    /// The container's resolved environment.
    pub fn env_of(&self, name: &str) -> &[(String, String)] {
        self.env.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    pub fn status(&self) -> BackendPodStatus {
        let state = self.lock();
        BackendPodStatus {
            init_containers: state.init.iter().map(|c| c.status.clone()).collect(),
            containers: state.main.iter().map(|c| c.status.clone()).collect(),
            pod_ip: state.sandbox_ready.then(|| self.ip.to_string()),
            started_at: state.started_at,
            finished: state.finished,
            message: None,
            reason: None,
        }
    }

    /// Change the state and report the result.
    fn update(&self, f: impl FnOnce(&mut PodState)) {
        f(&mut self.lock());
        let notifier = self
            .shared
            .notifier
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(n) = notifier {
            n.notify(self.pod_ref.clone(), self.status());
        }
    }

    /// Report the current state (after creation).
    pub fn report(&self) {
        self.update(|_| {});
    }

    /// The container's current state, current run and previous run.
    pub fn runs(
        &self,
        which: Which,
    ) -> Option<(
        ContainerState,
        Option<Arc<RunOutput>>,
        Option<Arc<RunOutput>>,
    )> {
        let mut state = self.lock();
        let c = state.get(which)?;
        Some((
            c.status.state.clone(),
            c.current.clone(),
            c.previous.clone(),
        ))
    }

    /// A sender to the running main process's stdin, and whether the stream closes after one attach.
    pub fn stdin(&self, which: Which) -> (Option<mpsc::Sender<Bytes>>, bool) {
        let once = self.spec(which).is_some_and(|s| s.stdin_once);
        (self.lock().get(which).and_then(|c| c.stdin.clone()), once)
    }

    /// Close the main process's stdin (the end of a `stdinOnce` attach).
    pub fn close_stdin(&self, which: Which) {
        if let Some(c) = self.lock().get(which) {
            c.stdin = None;
        }
    }

    /// Running containers with their start time, for stats.
    pub fn running(&self) -> Vec<(String, Timestamp)> {
        let state = self.lock();
        let all = state.init.iter().chain(state.main.iter());
        all.filter_map(|c| match c.status.state {
            ContainerState::Running { started_at } => Some((c.status.name.clone(), started_at)),
            _ => None,
        })
        .collect()
    }

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
