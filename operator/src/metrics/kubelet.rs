//! What the virtual kubelets do, as metrics: requests their HTTPS endpoints answer (reported by
//! vk-runtime through its [`RequestObserver`] hook) and the latency of their backends' operations
//! (reported by the [`crate::backends::instrumented`] decorator). Every label value comes from a
//! fixed set (route templates, methods, status codes, operation names, error reasons), so the
//! number of series does not grow with nodes or pods.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use vk_runtime::api::{ObservedRequest, RequestObserver};

use super::Metrics;

/// Labels of `fleetlet_kubelet_api_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KubeletApiLabels {
    /// Route template (`/exec/{namespace}/{pod}/{container}`, ..., `other`): never a raw path.
    pub route: &'static str,
    pub method: &'static str,
    pub code: u16,
}

/// Labels of `fleetlet_backend_operation_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// `mock` or `ssh`.
    pub backend: &'static str,
    /// The Provider method (`create_pod`, `exec`, ...).
    pub operation: &'static str,
    /// `ok`, `unhealthy` (health checks) or the error's stable reason (`NotFound`, ...).
    pub outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn backend_histogram() -> Histogram {
    // 1 ms .. ~60 s: a mock answers in microseconds, an SSH round trip over a slow link in seconds.
    Histogram::new(exponential_buckets(0.001, 2.5, 13))
}

/// The two families, registered in the process registry.
pub struct KubeletFamilies {
    api_requests: Family<KubeletApiLabels, Counter>,
    backend_operations: HistogramFamily<BackendLabels>,
}

impl KubeletFamilies {
    pub fn register(registry: &mut Registry) -> Self {
        let api_requests = Family::<KubeletApiLabels, Counter>::default();
        registry.register(
            "kubelet_api_requests",
            "Requests answered by the virtual nodes' kubelet endpoints, by route template, method and status code (101: stream upgraded)",
            api_requests.clone(),
        );
        let backend_operations: HistogramFamily<BackendLabels> =
            Family::new_with_constructor(backend_histogram);
        registry.register(
            "backend_operation_duration_seconds",
            "Latency of backend (Provider) operations by backend kind, operation and outcome; for logs, exec, attach and port-forward the time to establish the stream",
            backend_operations.clone(),
        );
        Self {
            api_requests,
            backend_operations,
        }
    }
}

impl Metrics {
    /// Count one answered kubelet API request.
    pub fn kubelet_api_request(&self, request: &ObservedRequest) {
        self.inner
            .kubelet
            .api_requests
            .get_or_create(&KubeletApiLabels {
                route: request.route,
                method: request.method,
                code: request.status,
            })
            .inc();
    }

    /// Record one backend operation.
    pub fn backend_operation(&self, labels: BackendLabels, took: Duration) {
        self.inner
            .kubelet
            .backend_operations
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// The hook handed to vk-runtime's kubelet endpoints.
    pub fn kubelet_api_observer(&self) -> vk_runtime::api::SharedObserver {
        std::sync::Arc::new(KubeletApiObserver(self.clone()))
    }
}

/// Counts the kubelet endpoints' requests into [`Metrics`].
struct KubeletApiObserver(Metrics);

impl std::fmt::Debug for KubeletApiObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeletApiObserver")
    }
}

impl RequestObserver for KubeletApiObserver {
    fn observe(&self, request: &ObservedRequest) {
        self.0.kubelet_api_request(request);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_families() {
        let m = Metrics::new();
        let observer = m.kubelet_api_observer();
        observer.observe(&ObservedRequest {
            route: "/exec/{namespace}/{pod}/{container}",
            method: "POST",
            status: 101,
        });
        m.backend_operation(
            BackendLabels {
                backend: "mock",
                operation: "exec",
                outcome: "ok",
            },
            Duration::from_millis(2),
        );
        let text = m.render();
        assert!(
            text.contains(r#"fleetlet_kubelet_api_requests_total{route="/exec/{namespace}/{pod}/{container}",method="POST",code="101"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"fleetlet_backend_operation_duration_seconds_count{backend="mock",operation="exec",outcome="ok"} 1"#),
            "{text}"
        );
    }
}
