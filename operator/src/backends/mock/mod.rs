//! The Mock backend: simulated devices whose containers run and report like real ones, cheap enough for
//! thousands of nodes in one process.
//!
//! A pod goes Waiting(ContainerCreating) -> (after `startDelayMs`) init containers one by one -> main
//! containers Running with a pod IP, every change reported through the [`PodNotifier`]. A container's
//! command and args run in a tiny interpreter ([`shell`]: `echo`, `cat`, `env`, `sleep`, `exit`,
//! `true`, `false`, `test`, `tar`, `tail`, `loggen`, `sh -c` with pipes) over a small in-memory
//! filesystem per container run ([`fs`], what `kubectl cp` needs); a container without a command
//! runs until deleted. With `exitAfterMs`
//! every run ends after that long with `exitCode`; the pod's restartPolicy then applies (restarts with
//! a small capped back-off). Logs, exec, attach, port-forward (an echo server on every port) and stats
//! (deterministic figures) work on these processes.
//!
//! Cost: an idle node is a few hundred bytes (no task, no timer); a pod holds a task only while it has
//! a pending transition (start delay, a running command, an exit timer, a back-off).

pub mod fs;
pub mod logs;
pub mod pod;
pub mod session;
pub mod settings;
pub mod shell;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_files;
#[cfg(test)]
mod tests_provider;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fleetlet_crds::MockBackend;
use futures::stream::BoxStream;
use jiff::Timestamp;
use vk_runtime::provider::{BytePipe, ExecIo, StatsSummary, Usage, quantity};
use vk_runtime::{
    BackendPodStatus, Health, LogOptions, NodeResources, PodNotifier, PodRef, Provider,
    ProviderError, ResolvedPod,
};

use pod::MockPod;
use settings::{Settings, Shared, fnv};

/// A simulated device backing one virtual node.
pub struct MockProvider {
    node: String,
    shared: Arc<Shared>,
    pods: Mutex<HashMap<PodRef, Arc<MockPod>>>,
    /// Host parts of the pod IPs in use (10.X.hi.lo, X from the node name).
    ips: Mutex<BTreeSet<u16>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The host's architecture in Go's terms (`GOARCH`), as Kubernetes labels nodes.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

impl MockProvider {
    pub fn new(spec: &MockBackend, node: &str) -> Self {
        let shared = Shared {
            settings: RwLock::new(Settings::from(spec)),
            notifier: RwLock::new(None),
        };
        Self {
            node: node.to_string(),
            shared: Arc::new(shared),
            pods: Mutex::default(),
            ips: Mutex::default(),
        }
    }

    /// Apply a changed `MockBackend`: health and capacity at once, delays and exits from the next run.
    pub fn update(&self, spec: &MockBackend) {
        *self
            .shared
            .settings
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Settings::from(spec);
    }

    fn pod(&self, pod: &PodRef) -> Result<Arc<MockPod>, ProviderError> {
        lock(&self.pods)
            .get(pod)
            .cloned()
            .ok_or_else(|| ProviderError::NotFound(format!("pod {pod}")))
    }

    fn allocate_ip(&self) -> Result<Ipv4Addr, ProviderError> {
        let mut used = lock(&self.ips);
        let host = (1..u16::MAX).find(|h| !used.contains(h)).ok_or_else(|| {
            ProviderError::Unavailable(format!("node {} has no pod IP left", self.node))
        })?;
        used.insert(host);
        let [hi, lo] = host.to_be_bytes();
        Ok(Ipv4Addr::new(10, (fnv(&[&self.node]) % 256) as u8, hi, lo))
    }

    fn release_ip(&self, ip: Ipv4Addr) {
        let [_, _, hi, lo] = ip.octets();
        lock(&self.ips).remove(&u16::from_be_bytes([hi, lo]));
    }
}

/// Deterministic figures for one running container: 1-49 millicores, 16-127 MiB.
fn container_usage(uid: &str, name: &str, started_at: Timestamp, now: Timestamp) -> Usage {
    let h = fnv(&[uid, name]);
    let nano_cores = (1 + h % 49) * 1_000_000;
    let secs = u64::try_from(now.duration_since(started_at).as_secs()).unwrap_or(0);
    Usage {
        cpu_usage_core_nano_seconds: nano_cores.saturating_mul(secs),
        cpu_usage_nano_cores: nano_cores,
        memory_working_set_bytes: (16 + (h >> 8) % 112) << 20,
        timestamp: Some(now),
    }
}

#[async_trait]
impl Provider for MockProvider {
    async fn node_resources(&self) -> Result<NodeResources, ProviderError> {
        let mut capacity: BTreeMap<String, _> = [
            ("cpu", "16"),
            ("memory", "64Gi"),
            ("pods", "110"),
            ("ephemeral-storage", "100Gi"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), quantity(v)))
        .collect();
        capacity.extend(self.shared.settings().capacity.unwrap_or_default());
        Ok(NodeResources {
            capacity,
            operating_system: "linux".into(),
            architecture: go_arch().into(),
            kernel_version: "fleetlet-mock".into(),
            os_image: "fleetlet mock device".into(),
            machine_id: format!(
                "{:016x}{:016x}",
                fnv(&[&self.node]),
                fnv(&[&self.node, "machine"])
            ),
            container_runtime_version: concat!("mock://", env!("CARGO_PKG_VERSION")).into(),
        })
    }

    async fn health(&self) -> Health {
        if self.shared.settings().healthy {
            Health::healthy()
        } else {
            Health::unhealthy(
                "BackendUnhealthy",
                "the mock backend is configured unhealthy (spec.mock.healthy: false)",
            )
        }
    }

    fn set_notifier(&self, notifier: PodNotifier) {
        *self
            .shared
            .notifier
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(notifier);
    }

    async fn create_pod(&self, pod: &ResolvedPod) -> Result<(), ProviderError> {
        if lock(&self.pods).contains_key(&pod.pod_ref) {
            return Ok(());
        }
        let ip = self.allocate_ip()?;
        let mock = match MockPod::new(pod, self.shared.clone(), ip) {
            Ok(m) => Arc::new(m),
            Err(e) => {
                self.release_ip(ip);
                return Err(e);
            }
        };
        lock(&self.pods).insert(pod.pod_ref.clone(), mock.clone());
        mock.report();
        let handle = tokio::spawn(mock.clone().run());
        *lock(&mock.task) = Some(handle);
        Ok(())
    }

    async fn delete_pod(&self, pod: &PodRef, grace: Duration) -> Result<(), ProviderError> {
        let Some(mock) = lock(&self.pods).get(pod).cloned() else {
            return Ok(());
        };
        mock.cancel.cancel();
        let task = lock(&mock.task).take();
        if let Some(mut task) = task {
            // Simulated processes stop at once; the grace period bounds a task that does not.
            if tokio::time::timeout(grace, &mut task).await.is_err() {
                task.abort();
            }
        }
        mock.stop();
        lock(&self.pods).remove(pod);
        self.release_ip(mock.ip);
        Ok(())
    }

    async fn pod_status(&self, pod: &PodRef) -> Result<Option<BackendPodStatus>, ProviderError> {
        Ok(lock(&self.pods).get(pod).map(|p| p.status()))
    }

    async fn list_pods(&self) -> Result<Vec<PodRef>, ProviderError> {
        Ok(lock(&self.pods).keys().cloned().collect())
    }

    async fn logs(
        &self,
        pod: &PodRef,
        container: &str,
        opts: &LogOptions,
    ) -> Result<BoxStream<'static, std::io::Result<Bytes>>, ProviderError> {
        let mock = self.pod(pod)?;
        let which = mock.find(container).ok_or_else(|| {
            ProviderError::NotFound(format!("container {container} in pod {pod}"))
        })?;
        let pod::Runs {
            state,
            current,
            previous,
        } = mock.runs(which).ok_or_else(|| {
            ProviderError::NotFound(format!("container {container} in pod {pod}"))
        })?;
        let run = if opts.previous {
            previous.ok_or_else(|| {
                ProviderError::InvalidInput(format!(
                    "previous terminated container \"{container}\" in pod \"{}\" not found",
                    pod.name
                ))
            })?
        } else {
            current.ok_or_else(|| {
                let reason = match state {
                    vk_runtime::ContainerState::Waiting { reason, .. } => reason,
                    _ => "ContainerCreating".into(),
                };
                ProviderError::InvalidInput(format!(
                    "container \"{container}\" in pod \"{}\" is waiting to start: {reason}",
                    pod.name
                ))
            })?
        };
        Ok(run.stream(opts))
    }

    async fn exec(
        &self,
        pod: &PodRef,
        container: &str,
        command: Vec<String>,
        io: ExecIo,
    ) -> Result<i32, ProviderError> {
        session::exec(self.pod(pod)?, container, command, io).await
    }

    async fn attach(
        &self,
        pod: &PodRef,
        container: &str,
        io: ExecIo,
    ) -> Result<i32, ProviderError> {
        session::attach(self.pod(pod)?, container, io).await
    }

    async fn port_forward(
        &self,
        pod: &PodRef,
        _port: u16,
        stream: Box<dyn BytePipe>,
    ) -> Result<(), ProviderError> {
        session::port_forward(self.pod(pod)?, stream).await
    }

    async fn stats(&self) -> Result<StatsSummary, ProviderError> {
        let now = Timestamp::now();
        let pods: Vec<Arc<MockPod>> = lock(&self.pods).values().cloned().collect();
        // The node itself: 20 millicores and 256 MiB of system overhead.
        let node = Usage {
            cpu_usage_nano_cores: 20_000_000,
            memory_working_set_bytes: 256 << 20,
            timestamp: Some(now),
            ..Usage::default()
        };
        let mut summary = StatsSummary {
            node,
            pods: Vec::new(),
        };
        for p in pods {
            let containers: Vec<(String, Usage)> = p
                .running()
                .into_iter()
                .map(|(name, started)| {
                    let usage = container_usage(&p.pod_ref.uid, &name, started, now);
                    (name, usage)
                })
                .collect();
            for (_, u) in &containers {
                summary.node.cpu_usage_nano_cores += u.cpu_usage_nano_cores;
                summary.node.cpu_usage_core_nano_seconds += u.cpu_usage_core_nano_seconds;
                summary.node.memory_working_set_bytes += u.memory_working_set_bytes;
            }
            summary.pods.push((p.pod_ref.clone(), containers));
        }
        summary.pods.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(summary)
    }
}
