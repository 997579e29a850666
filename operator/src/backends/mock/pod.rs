//! One simulated pod: its containers' definitions, states and outputs, and how they are reported.
//! The task that drives them is in [`lifecycle`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Container;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vk_runtime::pod::env::expand;
use vk_runtime::{
    BackendPodStatus, ContainerState, ContainerStatus, PodRef, ProviderError, ResolvedPod,
};

use super::fs::SharedFs;
use super::logs::RunOutput;
use super::settings::Shared;

mod lifecycle;

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

/// A container's state with its current and previous run (for logs and attach).
pub struct Runs {
    pub state: ContainerState,
    pub current: Option<Arc<RunOutput>>,
    pub previous: Option<Arc<RunOutput>>,
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
    /// The current run's filesystem (none before the first run).
    fs: Option<SharedFs>,
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
            fs: None,
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
        self.build(&self.lock())
    }

    fn build(&self, state: &PodState) -> BackendPodStatus {
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

    /// Change the state and report the result (built under the same lock, so reports are consistent).
    fn update(&self, f: impl FnOnce(&mut PodState)) {
        let status = {
            let mut state = self.lock();
            f(&mut state);
            self.build(&state)
        };
        let notifier = self
            .shared
            .notifier
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(n) = notifier {
            n.notify(self.pod_ref.clone(), status);
        }
    }

    /// Report the current state (after creation).
    pub fn report(&self) {
        self.update(|_| {});
    }

    /// The container's current state, current run and previous run.
    pub fn runs(&self, which: Which) -> Option<Runs> {
        let mut state = self.lock();
        let c = state.get(which)?;
        Some(Runs {
            state: c.status.state.clone(),
            current: c.current.clone(),
            previous: c.previous.clone(),
        })
    }

    /// A sender to the running main process's stdin, and whether the stream closes after one attach.
    pub fn stdin(&self, which: Which) -> (Option<mpsc::Sender<Bytes>>, bool) {
        let once = self.spec(which).is_some_and(|s| s.stdin_once);
        (self.lock().get(which).and_then(|c| c.stdin.clone()), once)
    }

    /// The filesystem of the container's current (or last) run.
    pub fn fs(&self, which: Which) -> Option<SharedFs> {
        self.lock().get(which).and_then(|c| c.fs.clone())
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
}
