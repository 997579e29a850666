//! A [`Provider`] decorator that times every backend operation into
//! `fleetlet_backend_operation_duration_seconds{backend, operation, outcome}`, so the backends stay
//! unaware of metrics. The reconcilers wrap whatever they build ([`Instrumented::wrap`]).
//!
//! Request-response operations are timed from call to return. Streaming ones are timed to the
//! moment the stream is established, not over their whole life: `logs` until the backend returns
//! its byte stream; `exec`/`attach` until the backend's first output or its return, whichever comes
//! first (a command that reads stdin before printing anything is timed until it prints); and
//! `port_forward` until the backend first uses the pipe or returns (see [`taps`]).

mod taps;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use vk_runtime::provider::{
    BackendPodStatus, BytePipe, DynProvider, ExecIo, Health, LogOptions, NodeResources,
    PodNotifier, PodRef, Provider, ProviderError, ResolvedPod, StatsSummary,
};

use self::taps::{FirstUse, OutputTaps};
use crate::metrics::Metrics;
use crate::metrics::kubelet::BackendLabels;

/// Outcome label of a successful operation.
pub const OK: &str = "ok";
/// Outcome label of a health check that found the backend not ready.
pub const UNHEALTHY: &str = "unhealthy";

fn outcome<T>(result: &Result<T, ProviderError>) -> &'static str {
    match result {
        Ok(_) => OK,
        Err(e) => e.reason(),
    }
}

/// The decorator; see the module docs.
pub struct Instrumented {
    inner: DynProvider,
    backend: &'static str,
    metrics: Metrics,
}

impl Instrumented {
    /// `inner`, timed under backend kind `backend` (`mock`, `ssh`).
    pub fn wrap(inner: DynProvider, backend: &'static str, metrics: Metrics) -> DynProvider {
        Arc::new(Self {
            inner,
            backend,
            metrics,
        })
    }

    fn record(&self, operation: &'static str, outcome: &'static str, took: Duration) {
        record(&self.metrics, self.backend, operation, outcome, took);
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let started = Instant::now();
        let result = call.await;
        self.record(operation, outcome(&result), started.elapsed());
        result
    }

    /// exec/attach: timed to the first output, or to the return when nothing was printed.
    async fn session<F: Future<Output = Result<i32, ProviderError>>>(
        &self,
        operation: &'static str,
        io: ExecIo,
        call: impl FnOnce(ExecIo) -> F,
    ) -> Result<i32, ProviderError> {
        let started = Instant::now();
        let (io, mut taps) = OutputTaps::insert(io);
        let mut call = std::pin::pin!(call(io));
        let mut established = false;
        let result = loop {
            tokio::select! {
                result = &mut call => break result,
                forwarded = taps.step() => {
                    if forwarded && !established {
                        established = true;
                        self.record(operation, OK, started.elapsed());
                    }
                }
            }
        };
        taps.drain().await;
        if !established {
            self.record(operation, outcome(&result), started.elapsed());
        }
        result
    }
}

fn record(
    metrics: &Metrics,
    backend: &'static str,
    operation: &'static str,
    outcome: &'static str,
    took: Duration,
) {
    metrics.backend_operation(
        BackendLabels {
            backend,
            operation,
            outcome,
        },
        took,
    );
}

#[async_trait]
impl Provider for Instrumented {
    async fn node_resources(&self) -> Result<NodeResources, ProviderError> {
        self.timed("node_resources", self.inner.node_resources())
            .await
    }

    async fn health(&self) -> Health {
        let started = Instant::now();
        let health = self.inner.health().await;
        let outcome = if health.ready { OK } else { UNHEALTHY };
        self.record("health", outcome, started.elapsed());
        health
    }

    fn set_notifier(&self, notifier: PodNotifier) {
        self.inner.set_notifier(notifier);
    }

    async fn create_pod(&self, pod: &ResolvedPod) -> Result<(), ProviderError> {
        self.timed("create_pod", self.inner.create_pod(pod)).await
    }

    async fn update_pod(&self, pod: &ResolvedPod) -> Result<(), ProviderError> {
        self.timed("update_pod", self.inner.update_pod(pod)).await
    }

    async fn delete_pod(&self, pod: &PodRef, grace: Duration) -> Result<(), ProviderError> {
        self.timed("delete_pod", self.inner.delete_pod(pod, grace))
            .await
    }

    async fn pod_status(&self, pod: &PodRef) -> Result<Option<BackendPodStatus>, ProviderError> {
        self.timed("pod_status", self.inner.pod_status(pod)).await
    }

    async fn list_pods(&self) -> Result<Vec<PodRef>, ProviderError> {
        self.timed("list_pods", self.inner.list_pods()).await
    }

    async fn logs(
        &self,
        pod: &PodRef,
        container: &str,
        opts: &LogOptions,
    ) -> Result<BoxStream<'static, std::io::Result<Bytes>>, ProviderError> {
        self.timed("logs", self.inner.logs(pod, container, opts))
            .await
    }

    async fn exec(
        &self,
        pod: &PodRef,
        container: &str,
        command: Vec<String>,
        io: ExecIo,
    ) -> Result<i32, ProviderError> {
        self.session("exec", io, |io| {
            self.inner.exec(pod, container, command, io)
        })
        .await
    }

    async fn attach(
        &self,
        pod: &PodRef,
        container: &str,
        io: ExecIo,
    ) -> Result<i32, ProviderError> {
        self.session("attach", io, |io| self.inner.attach(pod, container, io))
            .await
    }

    async fn port_forward(
        &self,
        pod: &PodRef,
        port: u16,
        stream: Box<dyn BytePipe>,
    ) -> Result<(), ProviderError> {
        let started = Instant::now();
        let used = Arc::new(AtomicBool::new(false));
        let (metrics, backend) = (self.metrics.clone(), self.backend);
        let on_first = Box::new(move || {
            record(&metrics, backend, "port_forward", OK, started.elapsed());
        });
        let stream = Box::new(FirstUse::new(stream, used.clone(), on_first));
        let result = self.inner.port_forward(pod, port, stream).await;
        if !used.swap(true, Ordering::SeqCst) {
            self.record("port_forward", outcome(&result), started.elapsed());
        }
        result
    }

    async fn stats(&self) -> Result<StatsSummary, ProviderError> {
        self.timed("stats", self.inner.stats()).await
    }
}

#[cfg(test)]
mod tests;
