//! The SSH backend: a device reachable over SSH becomes a node, and its pods run there as real
//! processes.
//!
//! One [`conn::Conn`] per device (pinned host keys, key from a Secret, keepalive, reconnect with
//! backoff, bounded channels). A pod is resolved ([`plan`]), installed with its own supervisor script
//! ([`runner`]) under `~/<stateDir>/pods/<uid>/` and started detached (`setsid`), so it survives SSH
//! disconnects and operator restarts. Its state lives in files there; one status poll per device
//! ([`poller`]) reads all of it and reports changes. After a restart the new provider finds the same
//! processes (same PIDs) in the same files: nothing runs twice. Logs, exec, attach, port-forward and
//! stats go over the same connection ([`session`], [`device`]).

pub mod conn;
pub mod device;
pub mod logs;
pub mod plan;
pub mod poller;
pub mod quote;
pub mod runner;
pub mod scripts;
pub mod session;
pub mod settings;
pub mod state;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use jiff::Timestamp;
use tokio_util::sync::{CancellationToken, DropGuard};
use vk_runtime::provider::{BytePipe, ExecIo, StatsSummary};
use vk_runtime::{
    BackendPodStatus, Health, LogOptions, NodeResources, PodNotifier, PodRef, Provider,
    ProviderError, ResolvedPod,
};

use conn::Conn;
use poller::Poller;
use scripts::LogRead;
use session::unavailable;
pub use settings::{Secrets, Settings, SettingsError};

/// How long [`Provider::health`] waits for a first connection before saying "connecting".
const HEALTH_WAIT: Duration = Duration::from_secs(4);

/// A device reached over SSH, backing one virtual node.
pub struct SshProvider {
    poller: Arc<Poller>,
    last_sample: Mutex<Option<device::Sample>>,
    _stop: DropGuard,
}

impl SshProvider {
    /// A provider for the device `settings` describe. Connects in the background (a tokio runtime must
    /// be running); stops polling when dropped. Running pods are never touched by dropping it.
    pub fn new(settings: Settings) -> Self {
        let poller = Arc::new(Poller::new(Arc::new(Conn::new(Arc::new(settings)))));
        let stop = CancellationToken::new();
        let interval = poller.conn.settings().poll_interval;
        tokio::spawn(poller.clone().run(interval, stop.clone()));
        Self {
            poller,
            last_sample: Mutex::new(None),
            _stop: stop.drop_guard(),
        }
    }

    /// The settings this provider was built with.
    pub fn settings(&self) -> &Settings {
        self.poller.conn.settings()
    }

    fn state_dir(&self) -> &str {
        &self.settings().state_dir
    }

    fn conn(&self) -> &Conn {
        &self.poller.conn
    }

    /// `script` noting its PID under a fresh name, and the commands that end or forget it.
    fn track(
        &self,
        pod: &PodRef,
        script: &str,
    ) -> Result<(String, session::Tracked), ProviderError> {
        let nonce = format!("{:016x}", rand::random::<u64>());
        let dir = self.state_dir();
        let tracked = session::Tracked {
            end: scripts::end_tracked(dir, &pod.uid, &nonce).map_err(internal)?,
            untrack: scripts::untrack(dir, &pod.uid, &nonce).map_err(internal)?,
        };
        let script = scripts::tracked(dir, &pod.uid, &nonce, script).map_err(internal)?;
        Ok((script, tracked))
    }

    /// The pod's state, polling when the cache does not know it.
    async fn known(&self, pod: &PodRef) -> Result<state::PodState, ProviderError> {
        if let Some(p) = self.poller.cached().pods.get(pod) {
            return Ok(p.clone());
        }
        self.poller
            .poll()
            .await?
            .pods
            .remove(pod)
            .ok_or_else(|| ProviderError::NotFound(format!("pod {pod}")))
    }

    async fn container(
        &self,
        pod: &PodRef,
        container: &str,
    ) -> Result<state::PodState, ProviderError> {
        let p = self.known(pod).await?;
        if p.init.iter().chain(&p.main).any(|c| c == container) {
            Ok(p)
        } else {
            Err(ProviderError::NotFound(format!(
                "container {container} in pod {pod}"
            )))
        }
    }
}

fn internal(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Internal(e.to_string())
}

#[async_trait]
impl Provider for SshProvider {
    async fn node_resources(&self) -> Result<NodeResources, ProviderError> {
        let out = self
            .conn()
            .run(scripts::RESOURCES, None, Duration::ZERO)
            .await
            .and_then(|o| o.success())
            .map_err(unavailable)?;
        Ok(device::resources(&String::from_utf8_lossy(&out.stdout)))
    }

    async fn health(&self) -> Health {
        // Cheap when connected (no round trip); during a reconnect backoff it answers the last error.
        match tokio::time::timeout(HEALTH_WAIT, self.conn().connect()).await {
            Ok(Ok(_)) => Health {
                ready: true,
                reason: "BackendHealthy".into(),
                message: format!(
                    "connected to {}:{}",
                    self.settings().host,
                    self.settings().port
                ),
            },
            Ok(Err(e)) => Health::unhealthy(e.reason(), e.to_string()),
            Err(_) => Health::unhealthy(
                "Connecting",
                format!(
                    "connecting to {}:{}",
                    self.settings().host,
                    self.settings().port
                ),
            ),
        }
    }

    fn set_notifier(&self, notifier: PodNotifier) {
        *self
            .poller
            .notifier
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(notifier);
    }

    async fn create_pod(&self, pod: &ResolvedPod) -> Result<(), ProviderError> {
        let plan = plan::plan(pod).map_err(|e| ProviderError::InvalidInput(e.to_string()))?;
        let run_sh =
            runner::run_sh(&plan).map_err(|e| ProviderError::InvalidInput(e.to_string()))?;
        let install =
            scripts::install(self.state_dir(), &self.settings().node, &plan).map_err(internal)?;
        let out = self
            .conn()
            .run(&install, Some(Bytes::from(run_sh)), Duration::ZERO)
            .await
            .map_err(unavailable)?;
        match out.code {
            0 => {}
            3 => {
                return Err(ProviderError::InvalidInput(
                    "the device has no `setsid` (util-linux or busybox): pods cannot be detached"
                        .into(),
                ));
            }
            _ => {
                return Err(unavailable(
                    out.success()
                        .err()
                        .unwrap_or(conn::SshError::Protocol("install".into())),
                ));
            }
        }
        self.poller.wake();
        Ok(())
    }

    async fn delete_pod(&self, pod: &PodRef, grace: Duration) -> Result<(), ProviderError> {
        if !plan::is_safe_uid(&pod.uid) {
            return Ok(());
        }
        let script = scripts::delete(self.state_dir(), &pod.uid, grace).map_err(internal)?;
        self.conn()
            .run(&script, None, grace)
            .await
            .and_then(|o| o.success())
            .map_err(unavailable)?;
        self.poller.forget(pod);
        self.poller.wake();
        Ok(())
    }

    async fn pod_status(&self, pod: &PodRef) -> Result<Option<BackendPodStatus>, ProviderError> {
        let snap = self.poller.poll().await?;
        let ip = self.conn().peer_ip().map(|ip| ip.to_string());
        Ok(snap.pods.get(pod).map(|p| p.status(ip)))
    }

    async fn list_pods(&self) -> Result<Vec<PodRef>, ProviderError> {
        Ok(self.poller.poll().await?.pods.into_keys().collect())
    }

    async fn logs(
        &self,
        pod: &PodRef,
        container: &str,
        opts: &LogOptions,
    ) -> Result<BoxStream<'static, std::io::Result<Bytes>>, ProviderError> {
        self.container(pod, container).await?;
        let what = LogRead {
            previous: opts.previous,
            tail_lines: opts.tail_lines,
            follow: opts.follow,
            exit_code: false,
        };
        let script = scripts::log(self.state_dir(), &pod.uid, container, what).map_err(internal)?;
        let missing = if opts.previous {
            ProviderError::InvalidInput(format!(
                "previous terminated container \"{container}\" in pod \"{}\" not found",
                pod.name
            ))
        } else {
            ProviderError::InvalidInput(format!(
                "container \"{container}\" in pod \"{}\" is waiting to start",
                pod.name
            ))
        };
        let (script, tracked) = if opts.follow {
            let (script, tracked) = self.track(pod, &script)?;
            (script, Some(tracked))
        } else {
            (script, None)
        };
        session::logs(&self.poller.conn, &script, opts, missing, tracked).await
    }

    async fn exec(
        &self,
        pod: &PodRef,
        container: &str,
        command: Vec<String>,
        io: ExecIo,
    ) -> Result<i32, ProviderError> {
        self.container(pod, container).await?;
        if command.is_empty() {
            return Err(ProviderError::InvalidInput("exec needs a command".into()));
        }
        let script = scripts::exec(self.state_dir(), &pod.uid, container, &command)
            .map_err(|e| ProviderError::InvalidInput(e.to_string()))?;
        let (script, tracked) = self.track(pod, &script)?;
        session::exec(&self.poller.conn, &script, io, tracked).await
    }

    async fn attach(
        &self,
        pod: &PodRef,
        container: &str,
        io: ExecIo,
    ) -> Result<i32, ProviderError> {
        self.container(pod, container).await?;
        let what = LogRead {
            previous: false,
            tail_lines: Some(0),
            follow: true,
            exit_code: true,
        };
        let script = scripts::log(self.state_dir(), &pod.uid, container, what).map_err(internal)?;
        // The container's stdin is /dev/null: attach shows its output from now until it exits.
        let io = ExecIo {
            stdin: None,
            resize: None,
            tty: false,
            ..io
        };
        let (script, tracked) = self.track(pod, &script)?;
        let code = session::exec(&self.poller.conn, &script, io, tracked).await?;
        Ok(code)
    }

    async fn port_forward(
        &self,
        pod: &PodRef,
        port: u16,
        stream: Box<dyn BytePipe>,
    ) -> Result<(), ProviderError> {
        self.known(pod).await?;
        session::port_forward(self.conn(), port, stream).await
    }

    async fn stats(&self) -> Result<StatsSummary, ProviderError> {
        let script = scripts::stats(self.state_dir()).map_err(internal)?;
        let out = self
            .conn()
            .run(&script, None, Duration::ZERO)
            .await
            .and_then(|o| o.success())
            .map_err(unavailable)?;
        let now = device::sample(&String::from_utf8_lossy(&out.stdout), Timestamp::now());
        let before = self
            .last_sample
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(now.clone());
        let snap = self.poller.cached();
        let node = device::usage(
            now.node_cpu_ns,
            now.node_memory_bytes,
            &now,
            before.as_ref().map(|b| (b.node_cpu_ns, b)),
        );
        let mut pods = Vec::new();
        for r in snap.pods.keys() {
            let containers = now
                .containers
                .iter()
                .filter(|((uid, _), _)| *uid == r.uid)
                .map(|((uid, name), (cpu, mem))| {
                    let prev = before.as_ref().and_then(|b| {
                        b.containers
                            .get(&(uid.clone(), name.clone()))
                            .map(|(c, _)| (*c, b))
                    });
                    (name.clone(), device::usage(*cpu, *mem, &now, prev))
                })
                .collect();
            pods.push((r.clone(), containers));
        }
        Ok(StatsSummary { node, pods })
    }
}
