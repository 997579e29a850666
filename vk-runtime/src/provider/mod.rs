//! The Provider trait: what a device backend implements so that a virtual node can run pods on it.
//!
//! Lifecycle (create/update/delete/list) and status notification are separate: the pod controller calls
//! the lifecycle methods; the provider reports every later change of a pod's state through the
//! [`PodNotifier`] it was given, so nothing polls. Optional capabilities (logs, exec, attach,
//! port-forward, stats) have default methods answering [`ProviderError::NotImplemented`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

mod output;

pub use output::{OutputChunk, OutputPermit, OutputSender, OutputStream, output_channel};

/// Identity of a pod as a backend knows it. The UID tells a re-created pod of the same name apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl PodRef {
    /// The reference of an API pod; `None` when it lacks a namespace, name or UID.
    pub fn of(pod: &Pod) -> Option<Self> {
        Some(Self {
            namespace: pod.metadata.namespace.clone()?,
            name: pod.metadata.name.clone()?,
            uid: pod.metadata.uid.clone()?,
        })
    }
}

/// A pod as handed to a provider: the API object plus each container's fully resolved environment
/// (values from ConfigMaps, Secrets, fieldRefs and resourceFieldRefs already looked up).
#[derive(Clone, Debug)]
pub struct ResolvedPod {
    pub pod_ref: PodRef,
    pub pod: Pod,
    /// Container name -> ordered (name, value) pairs, init containers included.
    pub env: BTreeMap<String, Vec<(String, String)>>,
}

/// What a device offers, reported once at registration and again on [`Provider::node_resources`] changes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeResources {
    /// `capacity` of the Node; allocatable is the same unless the operator overrides it.
    pub capacity: BTreeMap<String, Quantity>,
    /// `linux`, `windows`, ...: the `kubernetes.io/os` label and nodeInfo.operatingSystem.
    pub operating_system: String,
    /// `amd64`, `arm64`, ...: the `kubernetes.io/arch` label and nodeInfo.architecture.
    pub architecture: String,
    pub kernel_version: String,
    pub os_image: String,
    pub machine_id: String,
    pub container_runtime_version: String,
}

/// Backend health as the node's Ready condition shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub ready: bool,
    /// CamelCase reason for the condition (`BackendHealthy`, `HostUnreachable`, ...).
    pub reason: String,
    pub message: String,
}

impl Health {
    pub fn healthy() -> Self {
        Self {
            ready: true,
            reason: "BackendHealthy".into(),
            message: "backend is reachable".into(),
        }
    }
    pub fn unhealthy(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            ready: false,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// State of one container, as the backend sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        message: Option<String>,
        started_at: Option<Timestamp>,
        finished_at: Timestamp,
    },
}

/// Status of one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerStatus {
    pub name: String,
    pub state: ContainerState,
    /// The previous run's termination, kept for `lastState` and `kubectl logs --previous`.
    pub last_termination: Option<ContainerState>,
    pub restart_count: i32,
    pub ready: bool,
    pub image: String,
    pub container_id: Option<String>,
}

/// A pod's state in the backend; the pod controller turns it into a Kubernetes `PodStatus`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BackendPodStatus {
    pub init_containers: Vec<ContainerStatus>,
    pub containers: Vec<ContainerStatus>,
    pub pod_ip: Option<String>,
    pub started_at: Option<Timestamp>,
    /// Set when the backend has given up on the pod (all containers terminated and not restarting).
    pub finished: bool,
    pub message: Option<String>,
    pub reason: Option<String>,
}

/// One report of a pod's new state, as the receiving side of a [`PodNotifier`] gets it. Boxed:
/// every node has such a queue, and an empty unbounded queue already holds room for 32 items.
pub type PodNote = Box<(PodRef, BackendPodStatus)>;

/// How a provider reports later changes of a pod's state. Cheap to clone; never blocks.
#[derive(Clone, Debug)]
pub struct PodNotifier {
    tx: mpsc::UnboundedSender<PodNote>,
}

impl PodNotifier {
    /// A notifier and the queue its reports arrive on.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<PodNote>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    /// Report the new state of a pod. Reports for a pod the controller no longer tracks are dropped.
    pub fn notify(&self, pod: PodRef, status: BackendPodStatus) {
        // The receiver only goes away when the node is being stopped: nothing left to report to.
        let _ = self.tx.send(Box::new((pod, status)));
    }
}

/// Options of a log request, as the kubelet's `/containerLogs` takes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub since: Option<Timestamp>,
    pub tail_lines: Option<u64>,
    pub limit_bytes: Option<u64>,
}

/// Terminal size for `exec -t` / `attach -t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TermSize {
    pub width: u16,
    pub height: u16,
}

/// The streams of an exec or attach session. Absent streams were not requested by the client.
/// Dropping `stdin`'s sender side (on the client) ends stdin: the provider sees `recv() == None`.
/// `stdout` and `stderr` share one ordered queue (see [`output_channel`]).
pub struct ExecIo {
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub stdout: Option<OutputSender>,
    pub stderr: Option<OutputSender>,
    pub resize: Option<mpsc::Receiver<TermSize>>,
    pub tty: bool,
}

/// A bidirectional byte pipe, for port-forward.
pub trait BytePipe: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> BytePipe for T {}

/// CPU and memory figures of the node or of one container.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    /// Cumulative CPU time in nanoseconds.
    pub cpu_usage_core_nano_seconds: u64,
    /// Current CPU use in nano-cores.
    pub cpu_usage_nano_cores: u64,
    pub memory_working_set_bytes: u64,
    pub timestamp: Option<Timestamp>,
}

/// Figures for `/stats/summary` and `/metrics/resource`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatsSummary {
    pub node: Usage,
    /// Per pod: its containers' figures, by container name.
    pub pods: Vec<(PodRef, Vec<(String, Usage)>)>,
}

/// Errors a provider returns. Mapped to HTTP status in one place (the kubelet API) and to condition
/// reasons by the operator.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("not implemented by this backend: {0}")]
    NotImplemented(&'static str),
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    #[error("backend error: {0}")]
    Internal(String),
}

impl ProviderError {
    /// Stable CamelCase reason for conditions, Events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "NotFound",
            Self::InvalidInput(_) => "InvalidInput",
            Self::NotImplemented(_) => "NotImplemented",
            Self::Unavailable(_) => "BackendUnavailable",
            Self::Internal(_) => "BackendError",
        }
    }
}

/// A device backend for one virtual node.
///
/// # Guarantees the runtime gives
/// - `create_pod` is called at most once per pod UID while the pod is tracked; `delete_pod` follows it
///   exactly once, also for pods found by [`Provider::list_pods`] whose API object is gone.
/// - Calls for one pod are never concurrent; calls for different pods may be.
///
/// # What a provider guarantees
/// - `create_pod` returns once the pod is accepted (not necessarily running); later state changes go
///   through the [`PodNotifier`] given to [`Provider::set_notifier`] before any pod is created.
/// - `delete_pod` returns once every container has stopped (killing them after `grace`).
///
/// # Example
/// ```
/// use std::time::Duration;
/// use vk_runtime::{Provider, ProviderError, ResolvedPod, PodRef, BackendPodStatus, Health, NodeResources, PodNotifier};
///
/// struct Nothing;
///
/// #[async_trait::async_trait]
/// impl Provider for Nothing {
///     async fn node_resources(&self) -> Result<NodeResources, ProviderError> { Ok(NodeResources::default()) }
///     async fn health(&self) -> Health { Health::healthy() }
///     fn set_notifier(&self, _: PodNotifier) {}
///     async fn create_pod(&self, pod: &ResolvedPod) -> Result<(), ProviderError> {
///         Err(ProviderError::InvalidInput(format!("{} cannot run anywhere", pod.pod_ref)))
///     }
///     async fn delete_pod(&self, _: &PodRef, _: Duration) -> Result<(), ProviderError> { Ok(()) }
///     async fn pod_status(&self, _: &PodRef) -> Result<Option<BackendPodStatus>, ProviderError> { Ok(None) }
///     async fn list_pods(&self) -> Result<Vec<PodRef>, ProviderError> { Ok(vec![]) }
/// }
/// let _: std::sync::Arc<dyn Provider> = std::sync::Arc::new(Nothing);
/// ```
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// What the device offers (capacity, OS, architecture, versions).
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] when the device cannot be asked now; registration retries.
    async fn node_resources(&self) -> Result<NodeResources, ProviderError>;

    /// Whether the device can run pods now. Called periodically; must be cheap and bounded in time.
    async fn health(&self) -> Health;

    /// Where to report pod state changes. Called once, before any pod is created.
    fn set_notifier(&self, notifier: PodNotifier);

    /// Start running a pod.
    ///
    /// # Errors
    /// [`ProviderError::InvalidInput`] for pods the backend can never run (the pod becomes Failed);
    /// anything else is retried with backoff.
    async fn create_pod(&self, pod: &ResolvedPod) -> Result<(), ProviderError>;

    /// Apply an update of a running pod (only fields a kubelet honours change: labels, annotations,
    /// activeDeadlineSeconds, image of a container). Default: nothing to do.
    async fn update_pod(&self, _pod: &ResolvedPod) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Stop a pod: ask its containers to stop, kill them after `grace`, forget it. Idempotent.
    async fn delete_pod(&self, pod: &PodRef, grace: Duration) -> Result<(), ProviderError>;

    /// The pod's current state, `None` when the backend does not know it.
    async fn pod_status(&self, pod: &PodRef) -> Result<Option<BackendPodStatus>, ProviderError>;

    /// Every pod the backend runs now, for reconciliation after a restart.
    async fn list_pods(&self) -> Result<Vec<PodRef>, ProviderError>;

    /// A container's log as a byte stream honouring `opts` (follow streams until the container ends).
    async fn logs(
        &self,
        _pod: &PodRef,
        _container: &str,
        _opts: &LogOptions,
    ) -> Result<BoxStream<'static, std::io::Result<Bytes>>, ProviderError> {
        Err(ProviderError::NotImplemented("logs"))
    }

    /// Run `command` in a container; returns its exit code once it ends.
    async fn exec(
        &self,
        _pod: &PodRef,
        _container: &str,
        _command: Vec<String>,
        _io: ExecIo,
    ) -> Result<i32, ProviderError> {
        Err(ProviderError::NotImplemented("exec"))
    }

    /// Attach to a container's main process; returns its exit code once it ends.
    async fn attach(
        &self,
        _pod: &PodRef,
        _container: &str,
        _io: ExecIo,
    ) -> Result<i32, ProviderError> {
        Err(ProviderError::NotImplemented("attach"))
    }

    /// Pipe `stream` to `port` of the pod's network namespace until either side closes.
    async fn port_forward(
        &self,
        _pod: &PodRef,
        _port: u16,
        _stream: Box<dyn BytePipe>,
    ) -> Result<(), ProviderError> {
        Err(ProviderError::NotImplemented("port-forward"))
    }

    /// CPU and memory of the node and its pods.
    async fn stats(&self) -> Result<StatsSummary, ProviderError> {
        Err(ProviderError::NotImplemented("stats"))
    }
}

/// Shared handle to a provider.
pub type DynProvider = Arc<dyn Provider>;

/// Convenience for building capacity maps.
pub fn quantity(s: &str) -> Quantity {
    Quantity(s.to_string())
}

/// How long a pod gets to stop when its deletion carries no grace period.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
