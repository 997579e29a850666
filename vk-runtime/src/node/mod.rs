//! The Node side of a virtual kubelet: what the Node object says ([`status`]), the Lease heartbeat
//! ([`lease`]) and the shared scheduler that drives heartbeats and status reports for every node of a
//! fleet ([`heartbeat`]).

pub mod endpoint;
pub mod heartbeat;
pub mod lease;
pub mod observed;
pub mod status;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Everything the runtime needs to register one virtual node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    /// Node name (also the Lease name and the `kubernetes.io/hostname` label).
    pub name: String,
    /// Labels besides the well-known `kubernetes.io/{hostname,os,arch}` ones the runtime sets.
    pub labels: BTreeMap<String, String>,
    /// Taints the Node is registered with.
    pub taints: Vec<Taint>,
    /// InternalIP of the Node: where the apiserver dials the kubelet endpoint.
    pub address: String,
    /// Port of this node's kubelet endpoint (`status.daemonEndpoints.kubeletEndpoint.Port`).
    pub kubelet_port: u16,
    /// Capacity keys that replace what the provider reports.
    pub capacity_override: BTreeMap<String, Quantity>,
}

/// Timing of heartbeats and status reports; defaults are a real kubelet's.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeTiming {
    /// `spec.leaseDurationSeconds` of the Lease. Default 40 s.
    pub lease_duration: Duration,
    /// How often the Lease is renewed (jittered by up to `jitter`). Default 10 s.
    pub renew_interval: Duration,
    /// Fraction of `renew_interval` used as random jitter. Default 0.04 (as the kubelet).
    pub jitter: f64,
    /// Node status is patched on change, and at least this often. Default 5 min.
    pub status_report_interval: Duration,
    /// How often provider health is checked. Default 10 s.
    pub health_interval: Duration,
}

impl Default for NodeTiming {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(40),
            renew_interval: Duration::from_secs(10),
            jitter: 0.04,
            status_report_interval: Duration::from_secs(300),
            health_interval: Duration::from_secs(10),
        }
    }
}
