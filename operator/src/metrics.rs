//! Prometheus metrics (prometheus-client), served on `--metrics-bind-address` at `/metrics`.
//!
//! What is counted where: reconcile outcomes from the controllers' result streams ([`Metrics::observe`]),
//! API requests and node-lease renewals from a tower layer on both kube clients ([`client`]), and the
//! fleet's state (virtual nodes by condition, pods by phase per node) read at scrape time from the
//! leader's caches ([`Metrics::set_sources`]), so nothing goes stale after a node is removed. The
//! virtual kubelets' endpoint requests and backend latencies are in [`kubelet`].
//! `docs/operations.md` lists every metric.

pub mod client;
pub mod kubelet;
pub mod node_transport;
pub mod stack;

use std::fmt::Write as _;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fleetlet_crds::VirtualNode;
use kube::runtime::controller;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use vk_runtime::fleet::Fleet;

/// Labels of `fleetlet_reconciles_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: String,
    pub result: String,
}

/// Labels of `fleetlet_reconcile_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub reason: String,
}

/// Labels of `fleetlet_api_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// `main` (controllers, pods) or `heartbeat` (node leases and status).
    pub client: String,
    pub verb: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    condition: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodLabels {
    node: String,
    phase: String,
}

/// What the scrape-time collector reads: present only while this process leads.
#[derive(Clone)]
pub struct Sources {
    pub virtual_nodes: Store<VirtualNode>,
    pub fleet: Fleet,
}

/// Handle to every metric; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    api_requests: Family<ApiLabels, Counter>,
    node_lease_renew_seconds: Histogram,
    node_lease_renew_failures: Counter,
    leader: Gauge,
    leader_fenced: Gauge,
    leader_renew_failures: Counter,
    shards_dropped: Counter,
    shards_held: Gauge,
    kubelet: kubelet::KubeletFamilies,
    sources: Arc<RwLock<Option<Sources>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fleetlet");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by controller and result (success, error)",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles by controller and stable error reason",
            reconcile_errors.clone(),
        );
        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Kubernetes API requests by client, verb and HTTP status code (0: no response)",
            api_requests.clone(),
        );
        let node_lease_renew_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register(
            "node_lease_renew_duration_seconds",
            "Latency of virtual nodes' Lease renewals in kube-node-lease",
            node_lease_renew_seconds.clone(),
        );
        let node_lease_renew_failures = Counter::default();
        registry.register(
            "node_lease_renew_failures",
            "Virtual node Lease renewals that failed (error status or no response)",
            node_lease_renew_failures.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process holds the leader Lease (or runs without leader election)",
            leader.clone(),
        );
        let leader_fenced = Gauge::default();
        registry.register(
            "leader_fenced",
            "1 while the leader holds every write because it could not renew its Lease for the renew deadline",
            leader_fenced.clone(),
        );
        let leader_renew_failures = Counter::default();
        registry.register(
            "leader_renew_failures",
            "Failed attempts to renew the leader Lease",
            leader_renew_failures.clone(),
        );
        let shards_dropped = Counter::default();
        registry.register(
            "shards_dropped",
            "Shards this process stopped serving because their Lease could not be renewed in time",
            shards_dropped.clone(),
        );
        let shards_held = Gauge::default();
        registry.register(
            "shards_held",
            "Shards whose Lease this process holds (with --shards > 1; 0 otherwise)",
            shards_held.clone(),
        );
        let kubelet = kubelet::KubeletFamilies::register(&mut registry);
        let sources = Arc::new(RwLock::new(None));
        registry.register_collector(Box::new(FleetCollector {
            sources: sources.clone(),
        }));
        Self {
            inner: Arc::new(Inner {
                registry,
                reconciles,
                reconcile_errors,
                api_requests,
                node_lease_renew_seconds,
                node_lease_renew_failures,
                leader,
                leader_fenced,
                leader_renew_failures,
                shards_dropped,
                shards_held,
                kubelet,
                sources,
            }),
        }
    }

    /// The text exposition format (OpenMetrics).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.inner.registry).is_err() {
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }

    /// Count one item of a controller's result stream.
    pub fn observe<K, E, Q>(&self, controller: &str, result: &Result<K, controller::Error<E, Q>>)
    where
        E: std::error::Error + HasReason,
        Q: std::error::Error,
    {
        let outcome = if result.is_ok() { "success" } else { "error" };
        self.inner
            .reconciles
            .get_or_create(&ReconcileLabels {
                controller: controller.into(),
                result: outcome.into(),
            })
            .inc();
        if let Err(e) = result {
            let reason = match e {
                controller::Error::ReconcilerFailed(e, _) => e.reason(),
                controller::Error::ObjectNotFound(_) => "ObjectNotFound",
                controller::Error::QueueError(_) => "WatchError",
                controller::Error::RunnerError(_) => "RunnerError",
            };
            self.inner
                .reconcile_errors
                .get_or_create(&ErrorLabels {
                    controller: controller.into(),
                    reason: reason.into(),
                })
                .inc();
        }
    }

    /// One API request finished (`code` 0: transport error, no response).
    pub fn api_request(&self, client: &str, verb: &str, code: u16) {
        self.inner
            .api_requests
            .get_or_create(&ApiLabels {
                client: client.into(),
                verb: verb.into(),
                code: code.to_string(),
            })
            .inc();
    }

    /// One node Lease renewal finished.
    pub fn node_lease_renewed(&self, took: Duration, ok: bool) {
        self.inner
            .node_lease_renew_seconds
            .observe(took.as_secs_f64());
        if !ok {
            self.inner.node_lease_renew_failures.inc();
        }
    }

    pub fn set_leader(&self, leading: bool) {
        self.inner.leader.set(i64::from(leading));
    }

    /// How many shards this process holds (sharding).
    pub fn set_shards_held(&self, n: usize) {
        self.inner
            .shards_held
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The leader closed (`true`) or opened its write gate.
    pub fn set_leader_fenced(&self, fenced: bool) {
        self.inner.leader_fenced.set(i64::from(fenced));
    }

    pub fn leader_renew_failed(&self) {
        self.inner.leader_renew_failures.inc();
    }

    /// A shard was dropped: its Lease was not renewed within the renew deadline.
    pub fn shard_dropped(&self) {
        self.inner.shards_dropped.inc();
    }

    /// Start (Some) or stop (None) reporting the fleet's state.
    pub fn set_sources(&self, sources: Option<Sources>) {
        if let Ok(mut s) = self.inner.sources.write() {
            *s = sources;
        }
    }
}

/// A stable reason for a reconcile error (metric label).
pub trait HasReason {
    fn reason(&self) -> &'static str;
}

impl HasReason for crate::reconcilers::Error {
    fn reason(&self) -> &'static str {
        crate::reconcilers::Error::reason(self)
    }
}

/// Reads the fleet's state at scrape time.
struct FleetCollector {
    sources: Arc<RwLock<Option<Sources>>>,
}

impl std::fmt::Debug for FleetCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetCollector")
    }
}

impl Collector for FleetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(sources) = self.sources.read().ok().and_then(|s| s.clone()) else {
            return Ok(());
        };
        let by_condition = Family::<ConditionLabels, Gauge>::default();
        let vnodes = sources.virtual_nodes.state();
        for vn in &vnodes {
            for c in vn.status.iter().flat_map(|s| s.conditions.iter()) {
                by_condition
                    .get_or_create(&ConditionLabels {
                        condition: c.type_.clone(),
                        status: c.status.clone(),
                    })
                    .inc();
            }
        }
        let total = Gauge::<i64>::default();
        total.set(i64::try_from(vnodes.len()).unwrap_or(i64::MAX));
        let m = encoder.encode_descriptor(
            "virtual_nodes_known",
            "VirtualNode objects known to the leader",
            None,
            total.metric_type(),
        )?;
        total.encode(m)?;
        let m = encoder.encode_descriptor(
            "virtual_nodes",
            "VirtualNodes by status condition type and status",
            None,
            by_condition.metric_type(),
        )?;
        by_condition.encode(m)?;

        let pods = Family::<PodLabels, Gauge>::default();
        for node in sources.fleet.node_names() {
            let Some(table) = sources.fleet.pods(&node) else {
                continue;
            };
            let Ok(table) = table.read() else { continue };
            for pod in table.values() {
                let phase = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_else(|| "Pending".into());
                pods.get_or_create(&PodLabels {
                    node: node.clone(),
                    phase,
                })
                .inc();
            }
        }
        let m = encoder.encode_descriptor(
            "pods",
            "Pods bound to the running virtual nodes, by node and phase",
            None,
            pods.metric_type(),
        )?;
        pods.encode(m)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_metrics() {
        let m = Metrics::new();
        m.api_request("main", "get", 200);
        m.node_lease_renewed(Duration::from_millis(3), false);
        m.set_leader(true);
        m.shard_dropped();
        let text = m.render();
        assert!(
            text.contains(r#"fleetlet_api_requests_total{client="main",verb="get",code="200"} 1"#)
        );
        assert!(text.contains("fleetlet_node_lease_renew_failures_total 1"));
        assert!(text.contains("fleetlet_leader 1"));
        assert!(text.contains("fleetlet_leader_fenced 0"));
        assert!(text.contains("fleetlet_shards_dropped_total 1"));
        assert!(text.contains("fleetlet_leader_renew_failures_total 0"));
        assert!(text.contains("fleetlet_node_lease_renew_duration_seconds_count 1"));
    }

    #[test]
    fn counts_reconcile_errors_by_reason() {
        let m = Metrics::new();
        let ok: Result<(), controller::Error<crate::reconcilers::Error, std::io::Error>> = Ok(());
        m.observe("virtualnode", &ok);
        let err: Result<(), controller::Error<crate::reconcilers::Error, std::io::Error>> =
            Err(controller::Error::ReconcilerFailed(
                crate::reconcilers::Error::NoName,
                Box::new(kube::runtime::reflector::ObjectRef::<VirtualNode>::new("x").erase()),
            ));
        m.observe("virtualnode", &err);
        let text = m.render();
        assert!(
            text.contains(
                r#"fleetlet_reconciles_total{controller="virtualnode",result="success"} 1"#
            )
        );
        assert!(text.contains(
            r#"fleetlet_reconcile_errors_total{controller="virtualnode",reason="InvalidObject"} 1"#
        ));
    }
}
