//! A Fleet runs many virtual nodes in one process and shares what can be shared: one API client for bulk
//! work and one for heartbeats (separate connection pools, so leases never queue behind pod traffic),
//! one pod watch and one Node watch for every node, one heartbeat timer wheel.
//!
//! Per-node cost: a `NodeInstance` (config, a digest of the last observed Node status, the Lease as last
//! written, without managedFields), a pod-controller dispatcher task, and one worker task per pod. No
//! per-node watch, client, or timer.
//!
//! - this file: the [`Fleet`] handle, its settings and the state it reports per node;
//! - `lifecycle`: adding, stopping and removing nodes;
//! - `instance`: one running node and its heartbeat (registration, lease, status);
//! - `watches`: the shared pod and Node watches that feed every instance.

mod instance;
mod lifecycle;
mod watches;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::runtime::events::Reporter;
use tokio::sync::Semaphore;
use tracing::warn;

use crate::api::ClientCa;
use crate::certs::{IdentityConfig, IdentityState};
use crate::node::heartbeat::Heartbeats;
use crate::node::{NodeConfig, NodeTiming};
use crate::pod::controller::{PodShared, PodTable};
use crate::provider::Health;

use instance::NodeInstance;
use watches::{watch_nodes, watch_pods};

/// Settings shared by every node of a fleet.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    pub timing: NodeTiming,
    /// Label every fleet Node carries (`key=value`); the shared Node watch selects on it.
    pub node_selector: (String, String),
    /// Field manager of every write.
    pub field_manager: String,
    /// Name reported as the source of Events.
    pub component: String,
    /// Upper bound of concurrent pod API writes across the fleet.
    pub max_pod_writes: usize,
    /// Serve each node's kubelet HTTPS API on its `address:kubelet_port`.
    pub serve_kubelet_api: bool,
    /// CA bundle trusted for client certificates on the kubelet endpoints (the cluster's client CA,
    /// see [`crate::node::endpoint::cluster_client_ca`]); `None`: bearer tokens only.
    pub client_ca_pem: Option<Vec<u8>>,
    /// Give every node its own CSR-issued identity and serving certificate ([`crate::certs`]); `None`:
    /// nodes write with the fleet's heartbeat client and serve self-signed certificates.
    pub identity: Option<Arc<IdentityConfig>>,
    /// Told about every request the kubelet endpoints answer (metrics); `None`: nobody counts.
    pub kubelet_api_observer: Option<crate::api::SharedObserver>,
    /// Told about every change of a node's [`NodeState`]; `None`: only the channels returned by
    /// [`Fleet::add_node`] show them.
    pub state_listener: Option<SharedStateListener>,
}

/// Hears every change of every node's [`NodeState`], synchronously: one listener for the fleet rather
/// than a task per node waiting on its channel. It must not block.
pub trait StateListener: Send + Sync + std::fmt::Debug {
    fn changed(&self, node: &str, before: &NodeState, after: &NodeState);
}

pub type SharedStateListener = Arc<dyn StateListener>;

/// A node's state channel, telling the fleet's listener about each change.
#[derive(Clone)]
struct StateTx {
    tx: tokio::sync::watch::Sender<NodeState>,
    listener: Option<SharedStateListener>,
}

impl StateTx {
    /// Replace the state with what `next` returns for it, if anything and if different.
    fn update(&self, node: &str, next: impl FnOnce(&NodeState) -> Option<NodeState>) {
        let mut before = None;
        self.tx.send_if_modified(|s| match next(s) {
            Some(n) if n != *s => {
                before = Some(std::mem::replace(s, n));
                true
            }
            _ => false,
        });
        if let (Some(before), Some(l)) = (before, &self.listener) {
            let after = self.tx.borrow().clone();
            l.changed(node, &before, &after);
        }
    }
}

/// What one node looks like from outside: the operator turns it into VirtualNode conditions.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeState {
    /// The Node object exists and the last lease renewal succeeded.
    pub registered: bool,
    /// Why registration or the last heartbeat failed.
    pub error: Option<String>,
    /// Provider health as last checked.
    pub health: Health,
    /// Pods bound to the node.
    pub pods: usize,
    /// The node's certificates, when it has its own identity.
    pub identity: Option<IdentityState>,
}

/// A running fleet of virtual nodes.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

/// What the fleet's parts share: settings, clients, the heartbeat wheel and the running nodes.
struct Inner {
    cfg: FleetConfig,
    /// `cfg.client_ca_pem` parsed once for every endpoint, or why it cannot be used.
    client_ca: Option<Result<ClientCa, String>>,
    client: Client,
    heartbeat_client: Client,
    heartbeats: Heartbeats,
    pod_shared: PodShared,
    /// `cfg.field_manager`, shared by every node's writes.
    field_manager: Arc<str>,
    nodes: RwLock<HashMap<String, Arc<NodeInstance>>>,
    /// Pods seen before their node joined the fleet (or during a relist), by node name.
    pods_by_node: Mutex<HashMap<String, BTreeMap<String, Pod>>>,
    pods_synced: Mutex<bool>,
}

impl Fleet {
    /// Start the shared machinery: watches and the heartbeat wheel. `heartbeat_client` should be a
    /// separate `kube::Client` (its own connection pool) from `client`.
    pub fn start(client: Client, heartbeat_client: Client, cfg: FleetConfig) -> Self {
        let pod_shared = PodShared {
            client: client.clone(),
            reporter: Reporter {
                controller: cfg.component.clone(),
                instance: None,
            },
            writes: Arc::new(Semaphore::new(cfg.max_pod_writes.max(1))),
            field_manager: cfg.field_manager.clone(),
        };
        let heartbeats = Heartbeats::start(cfg.timing.renew_interval, cfg.timing.jitter);
        let client_ca = cfg.client_ca_pem.as_deref().map(|pem| {
            ClientCa::from_pem(pem).map_err(|e| {
                let mut msg = format!("client CA bundle: {e}");
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    msg.push_str(&format!(": {s}"));
                    source = s.source();
                }
                warn!(error = %msg, "kubelet endpoints cannot verify client certificates");
                msg
            })
        });
        let inner = Arc::new(Inner {
            field_manager: cfg.field_manager.as_str().into(),
            client_ca,
            cfg,
            client,
            heartbeat_client,
            heartbeats,
            pod_shared,
            nodes: RwLock::default(),
            pods_by_node: Mutex::default(),
            pods_synced: Mutex::new(false),
        });
        tokio::spawn(watch_pods(Arc::downgrade(&inner)));
        tokio::spawn(watch_nodes(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// The node's pods as its pod controller sees them (for the kubelet API).
    pub fn pods(&self, name: &str) -> Option<PodTable> {
        self.get(name).map(|i| i.pods.table())
    }

    /// The configuration of a running node (e.g. the addresses its serving certificate must name).
    pub fn node_config(&self, name: &str) -> Option<NodeConfig> {
        self.get(name).map(|i| i.cfg.clone())
    }

    /// Names of the running nodes.
    pub fn node_names(&self) -> Vec<String> {
        self.inner
            .nodes
            .read()
            .map(|n| n.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn get(&self, name: &str) -> Option<Arc<NodeInstance>> {
        self.inner
            .nodes
            .read()
            .ok()
            .and_then(|n| n.get(name).cloned())
    }
}
