//! A provider conformance suite, run against every backend (mock, ssh): the behaviour the pod
//! controller and the kubelet API rely on, checked through the [`Provider`] trait alone.
//!
//! The suite drives pods whose containers run portable shell commands (`echo`, `cat`, `sleep`, `exit`,
//! `true`, `false`, `sh -c`), so a backend with a real shell passes the same checks as the mock. It
//! waits on [`PodNotifier`] reports with a deadline, never on fixed sleeps. Give it a fresh provider:
//! it installs its own notifier.
//!
//! ```no_run
//! # async fn f(p: std::sync::Arc<dyn vk_runtime::Provider>) {
//! vk_runtime::testing::conformance(p, &Default::default()).await.expect("conformance");
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::sync::mpsc;

use crate::{
    BackendPodStatus, ContainerState, PodNote, PodNotifier, PodRef, Provider, ProviderError,
    ResolvedPod,
};

/// Knobs of the suite.
#[derive(Clone, Debug)]
pub struct ConformanceConfig {
    /// Namespace of the test pods.
    pub namespace: String,
    /// How long to wait for any expected state.
    pub timeout: Duration,
}

impl Default for ConformanceConfig {
    fn default() -> Self {
        Self {
            namespace: "conformance".into(),
            timeout: Duration::from_secs(20),
        }
    }
}

/// A failed check, naming the case and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    #[error("{case}: {message}")]
    Failed { case: &'static str, message: String },
    #[error("{case}: provider call failed")]
    Provider {
        case: &'static str,
        #[source]
        source: ProviderError,
    },
}

mod cases;

type Result<T> = std::result::Result<T, ConformanceError>;

/// Run every case in order; the first failure ends the run.
///
/// # Errors
/// The first [`ConformanceError`].
pub async fn conformance(p: Arc<dyn Provider>, cfg: &ConformanceConfig) -> Result<()> {
    let mut h = Harness::new(p, cfg.clone());
    h.create_run_delete().await?;
    h.init_order().await?;
    h.restart_policies().await?;
    h.logs().await?;
    h.exec().await?;
    Ok(())
}

/// The suite's state: the provider, its reports, and every status seen per pod.
pub struct Harness {
    p: Arc<dyn Provider>,
    cfg: ConformanceConfig,
    rx: mpsc::UnboundedReceiver<PodNote>,
    seen: HashMap<PodRef, Vec<BackendPodStatus>>,
    serial: u32,
}

/// A container running `argv`.
pub fn container(name: &str, argv: &[&str]) -> Container {
    Container {
        name: name.into(),
        image: Some("busybox".into()),
        command: Some(argv.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    }
}

fn state(s: &BackendPodStatus, name: &str) -> Option<ContainerState> {
    s.init_containers
        .iter()
        .chain(&s.containers)
        .find(|c| c.name == name)
        .map(|c| c.state.clone())
}

fn exited(s: &BackendPodStatus, name: &str) -> Option<i32> {
    match state(s, name)? {
        ContainerState::Terminated { exit_code, .. } => Some(exit_code),
        _ => None,
    }
}

fn running(s: &BackendPodStatus, name: &str) -> bool {
    matches!(state(s, name), Some(ContainerState::Running { .. }))
}

fn restarts(s: &BackendPodStatus, name: &str) -> i32 {
    s.containers
        .iter()
        .find(|c| c.name == name)
        .map_or(0, |c| c.restart_count)
}

fn fail(case: &'static str, message: impl Into<String>) -> ConformanceError {
    ConformanceError::Failed {
        case,
        message: message.into(),
    }
}

fn check(case: &'static str, ok: bool, message: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(fail(case, message()))
    }
}

impl Harness {
    /// Install a notifier on `p` and start.
    pub fn new(p: Arc<dyn Provider>, cfg: ConformanceConfig) -> Self {
        let (notifier, rx) = PodNotifier::channel();
        p.set_notifier(notifier);
        Self {
            p,
            cfg,
            rx,
            seen: HashMap::new(),
            serial: 0,
        }
    }

    /// A pod with unique name and UID.
    pub fn pod(
        &mut self,
        init: Vec<Container>,
        containers: Vec<Container>,
        restart_policy: &str,
    ) -> ResolvedPod {
        self.serial += 1;
        let name = format!("conf-{}", self.serial);
        let uid = format!("{name}-{}", jiff::Timestamp::now().as_nanosecond());
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.cfg.namespace.clone()),
                uid: Some(uid.clone()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                init_containers: (!init.is_empty()).then_some(init),
                containers,
                restart_policy: Some(restart_policy.into()),
                ..Default::default()
            }),
            status: None,
        };
        let env = BTreeMap::new();
        ResolvedPod {
            pod_ref: PodRef {
                namespace: self.cfg.namespace.clone(),
                name,
                uid,
            },
            pod,
            env,
        }
    }

    async fn call<T>(
        &self,
        case: &'static str,
        f: impl std::future::Future<Output = std::result::Result<T, ProviderError>>,
    ) -> Result<T> {
        f.await
            .map_err(|source| ConformanceError::Provider { case, source })
    }

    /// Wait until a report for `pod` satisfies `pred` (the latest report counts too).
    pub async fn wait_for(
        &mut self,
        case: &'static str,
        pod: &PodRef,
        what: &str,
        pred: impl Fn(&BackendPodStatus) -> bool,
    ) -> Result<BackendPodStatus> {
        if let Some(last) = self
            .seen
            .get(pod)
            .and_then(|v| v.last())
            .filter(|s| pred(s))
        {
            return Ok(last.clone());
        }
        let deadline = tokio::time::Instant::now() + self.cfg.timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.rx.recv()).await;
            let Ok(Some(note)) = next else {
                let last = self.seen.get(pod).and_then(|v| v.last());
                return Err(fail(
                    case,
                    format!("timed out waiting for {what}; last report: {last:?}"),
                ));
            };
            let (r, status) = *note;
            self.seen.entry(r.clone()).or_default().push(status.clone());
            if r == *pod && pred(&status) {
                return Ok(status);
            }
        }
    }

    async fn create(&mut self, case: &'static str, pod: &ResolvedPod) -> Result<()> {
        self.call(case, self.p.create_pod(pod)).await
    }
}
