//! A Fleet runs many virtual nodes in one process and shares what can be shared: one API client for bulk
//! work and one for heartbeats (separate connection pools, so leases never queue behind pod traffic),
//! one pod watch and one Node watch for every node, one heartbeat timer wheel.
//!
//! Per-node cost: a [`NodeInstance`] (config, last observed Node status, lease object), a pod-controller
//! dispatcher task, and one worker task per pod. No per-node watch, client, or timer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, NodeStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::events::Reporter;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Api, Client};
use std::net::{IpAddr, Ipv4Addr};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::api::CertResolver;
use crate::certs::{IdentityConfig, IdentityState, NodeClient, NodeIdentity, NodeIdentitySpec};
use crate::node::endpoint::{self, EndpointSpec};
use crate::node::heartbeat::{Beat, Heartbeats};
use crate::node::lease::{LeaseKeeper, is_status};
use crate::node::status::{StatusInputs, differs, node_object, node_status};
use crate::node::{NodeConfig, NodeTiming};
use crate::pod::controller::{PodShared, PodTable};
use crate::pod::{PodController, PodEvent};
use crate::provider::{DynProvider, Health, NodeResources};

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
    pub identity: Option<IdentityConfig>,
    /// Told about every request the kubelet endpoints answer (metrics); `None`: nobody counts.
    pub kubelet_api_observer: Option<crate::api::SharedObserver>,
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

struct Inner {
    cfg: FleetConfig,
    client: Client,
    heartbeat_client: Client,
    heartbeats: Heartbeats,
    pod_shared: PodShared,
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
        let inner = Arc::new(Inner {
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

    /// Start a virtual node (or replace the one of the same name when its config or provider changed).
    /// `owner` owns what the node stores about itself (its certificate Secrets).
    pub fn add_node(
        &self,
        cfg: NodeConfig,
        provider: DynProvider,
        owner: Option<OwnerReference>,
    ) -> watch::Receiver<NodeState> {
        let name = cfg.name.clone();
        if let Some(old) = self.get(&name) {
            if old.cfg == cfg && Arc::ptr_eq(&old.provider, &provider) {
                return old.state.subscribe();
            }
            self.stop_node(&name);
        }
        let address: IpAddr = cfg
            .address
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let names = vec![cfg.address.clone(), name.clone()];
        let tls = match CertResolver::self_signed(&names) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                warn!(node = %name, error = %e, "cannot generate a self-signed certificate");
                return watch::channel(NodeState {
                    registered: false,
                    error: Some(format!("kubelet endpoint certificate: {e}")),
                    health: Health::unhealthy("Starting", "virtual node is starting"),
                    pods: 0,
                    identity: None,
                })
                .1;
            }
        };
        let identity = self.inner.cfg.identity.clone().map(|id| {
            NodeIdentity::start(
                id,
                NodeIdentitySpec {
                    node: name.clone(),
                    address,
                    owner,
                },
                tls.clone(),
            )
        });
        let writer = identity.as_ref().map_or_else(
            || NodeClient::fixed(self.inner.heartbeat_client.clone()),
            |i| i.writer.clone(),
        );
        let pods = PodController::start(
            self.inner.pod_shared.clone(),
            writer.clone(),
            name.clone(),
            cfg.address.clone(),
            provider.clone(),
        );
        let (state, _) = watch::channel(NodeState {
            registered: false,
            error: None,
            health: Health::unhealthy("Starting", "virtual node is starting"),
            pods: 0,
            identity: identity.as_ref().map(NodeIdentity::state),
        });
        let instance = Arc::new(NodeInstance {
            lease: tokio::sync::Mutex::new(LeaseKeeper::new(
                &name,
                self.inner.cfg.timing.lease_duration,
            )),
            cfg,
            provider,
            client: writer,
            identity,
            timing: self.inner.cfg.timing.clone(),
            observed: Mutex::new(None),
            registration: Mutex::new(None),
            last_health_check: Mutex::new(None),
            state,
            pods,
            cancel: CancellationToken::new(),
            endpoint_error: Arc::default(),
        });
        if self.inner.cfg.serve_kubelet_api {
            match instance.cfg.address.parse() {
                Ok(address) => endpoint::start(
                    EndpointSpec {
                        node: name.clone(),
                        address,
                        port: instance.cfg.kubelet_port,
                        provider: instance.provider.clone(),
                        pods: instance.pods.table(),
                        client: self.inner.client.clone(),
                        client_ca_pem: self.inner.cfg.client_ca_pem.clone(),
                        tls,
                        observer: self.inner.cfg.kubelet_api_observer.clone(),
                    },
                    instance.cancel.clone(),
                    instance.endpoint_error.clone(),
                ),
                Err(_) => {
                    if let Ok(mut e) = instance.endpoint_error.lock() {
                        *e = Some(format!(
                            "kubelet address {:?} is not an IP address",
                            instance.cfg.address
                        ));
                    }
                }
            }
        }
        let rx = instance.state.subscribe();
        self.inner
            .nodes
            .write()
            .map(|mut n| n.insert(name.clone(), instance.clone()))
            .ok();
        // Pods already bound to this node (seen by the shared watch before it joined).
        if *self
            .inner
            .pods_synced
            .lock()
            .map(|g| *g)
            .as_ref()
            .unwrap_or(&false)
        {
            let pods: Vec<Pod> = self
                .inner
                .pods_by_node
                .lock()
                .ok()
                .and_then(|m| m.get(&name).map(|p| p.values().cloned().collect()))
                .unwrap_or_default();
            instance.pods.send(PodEvent::Resync(pods));
        }
        self.inner.heartbeats.add(&name, instance);
        rx
    }

    /// Stop a virtual node's heartbeats and pod handling, leaving its Node and Lease in place (a planned
    /// restart must not make nodes NotReady).
    pub fn stop_node(&self, name: &str) {
        self.inner.heartbeats.remove(name);
        let removed = self
            .inner
            .nodes
            .write()
            .ok()
            .and_then(|mut n| n.remove(name));
        if let Some(instance) = removed {
            instance.cancel.cancel();
        }
    }

    /// Stop a virtual node and delete its Node and Lease.
    pub async fn remove_node(&self, name: &str) -> Result<(), kube::Error> {
        let instance = self.get(name);
        self.stop_node(name);
        let client = &self.inner.heartbeat_client;
        if let Some(i) = instance {
            i.lease.lock().await.delete(client).await?;
        } else {
            LeaseKeeper::new(name, Duration::from_secs(40))
                .delete(client)
                .await?;
        }
        match Api::<Node>::all(self.inner.client.clone())
            .delete(name, &Default::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(e),
        }
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

/// One running virtual node.
struct NodeInstance {
    cfg: NodeConfig,
    provider: DynProvider,
    /// Writes the node's own objects: its identity, or the fleet's heartbeat client.
    client: NodeClient,
    /// Keeps the node's certificates issued (when it has its own identity); dropped with the instance.
    identity: Option<NodeIdentity>,
    timing: NodeTiming,
    lease: tokio::sync::Mutex<LeaseKeeper>,
    /// The Node status as the API last showed it (from the shared Node watch).
    observed: Mutex<Option<NodeStatus>>,
    /// Registration: resources reported and when status was last written.
    registration: Mutex<Option<Registered>>,
    last_health_check: Mutex<Option<(Instant, Health)>>,
    state: watch::Sender<NodeState>,
    pods: PodController,
    /// Stops the node's kubelet endpoint (and anything else tied to the instance's life).
    cancel: CancellationToken,
    /// Why the kubelet endpoint is not serving, if it is not.
    endpoint_error: Arc<Mutex<Option<String>>>,
}

impl Drop for NodeInstance {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[derive(Clone)]
struct Registered {
    resources: NodeResources,
    last_report: Option<Instant>,
}

#[async_trait]
impl Beat for NodeInstance {
    async fn beat(&self) -> bool {
        let registered = self
            .registration
            .lock()
            .map(|r| r.is_some())
            .unwrap_or(false);
        let Some(client) = self.client.get() else {
            let why = self
                .identity
                .as_ref()
                .map(|i| format!("{:?}", i.state().client))
                .unwrap_or_default();
            self.publish(
                false,
                Some(format!("waiting for the node's client certificate ({why})")),
            );
            return false;
        };
        if !registered && let Err(e) = self.register(&client).await {
            warn!(node = %self.cfg.name, error = %e, "registration failed");
            // Registration needs the backend (node resources): when it is unreachable, its health
            // check says why (e.g. a host key mismatch), for BackendReachable. Without this the state
            // kept the initial "Starting" forever for a device unreachable from the start.
            self.health().await;
            self.publish(false, Some(format!("registration failed: {e}")));
            return false;
        }
        let renewed = self.lease.lock().await.renew(&client).await;
        if let Err(e) = renewed {
            debug!(node = %self.cfg.name, error = %e, "lease renewal failed");
            self.publish(true, Some(format!("lease renewal failed: {e}")));
            return false;
        }
        let health = self.health().await;
        if let Err(e) = self.report_status(&client, &health).await {
            debug!(node = %self.cfg.name, error = %e, "status report failed");
        }
        self.publish(true, None);
        true
    }
}

impl NodeInstance {
    fn publish(&self, registered: bool, error: Option<String>) {
        let health = self
            .last_health_check
            .lock()
            .ok()
            .and_then(|h| h.as_ref().map(|(_, h)| h.clone()))
            .unwrap_or_else(|| Health::unhealthy("Starting", "virtual node is starting"));
        let endpoint_error = self.endpoint_error.lock().ok().and_then(|e| e.clone());
        let next = NodeState {
            registered,
            error: error.or(endpoint_error),
            health,
            pods: self.pods.len(),
            identity: self.identity.as_ref().map(NodeIdentity::state),
        };
        self.state.send_if_modified(|s| {
            if *s != next {
                *s = next;
                true
            } else {
                false
            }
        });
    }

    async fn health(&self) -> Health {
        if let Ok(g) = self.last_health_check.lock()
            && let Some((at, h)) = g.as_ref()
            && at.elapsed() < self.timing.health_interval.mul_f64(0.9)
        {
            return h.clone();
        }
        let h = match tokio::time::timeout(Duration::from_secs(5), self.provider.health()).await {
            Ok(h) => h,
            Err(_) => Health::unhealthy(
                "HealthCheckTimeout",
                "backend health check did not answer within 5s",
            ),
        };
        if let Ok(mut g) = self.last_health_check.lock() {
            *g = Some((Instant::now(), h.clone()));
        }
        h
    }

    /// Create the Node (or adopt an existing one), and point the Lease at it.
    async fn register(&self, client: &Client) -> Result<(), kube::Error> {
        let resources = self
            .provider
            .node_resources()
            .await
            .map_err(|e| kube::Error::Service(Box::new(e)))?;
        let nodes: Api<Node> = Api::all(client.clone());
        let wanted = node_object(&self.cfg, &resources);
        let node = match nodes.create(&PostParams::default(), &wanted).await {
            Ok(n) => n,
            Err(e) if is_status(&e, 409) => {
                // Re-registration (operator restart, takeover): bring labels and taints up to date.
                let patch = serde_json::json!({ "metadata": { "labels": wanted.metadata.labels }, "spec": { "taints": wanted.spec.as_ref().and_then(|s| s.taints.clone()) } });
                nodes
                    .patch(
                        &self.cfg.name,
                        &PatchParams::default(),
                        &Patch::Merge(patch),
                    )
                    .await?
            }
            Err(e) => return Err(e),
        };
        if let Some(uid) = node.metadata.uid.clone() {
            self.lease.lock().await.set_owner(OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: self.cfg.name.clone(),
                uid,
                ..Default::default()
            });
        }
        if let Ok(mut o) = self.observed.lock() {
            *o = node.status.clone();
        }
        info!(node = %self.cfg.name, "node registered");
        if let Ok(mut r) = self.registration.lock() {
            *r = Some(Registered {
                resources,
                last_report: None,
            });
        }
        Ok(())
    }

    /// Patch Node status when it differs from what the API shows, or when the report interval passed.
    async fn report_status(&self, client: &Client, health: &Health) -> Result<(), kube::Error> {
        let Some(reg) = self.registration.lock().ok().and_then(|r| r.clone()) else {
            return Ok(());
        };
        let observed = self.observed.lock().ok().and_then(|o| o.clone());
        let wanted = node_status(
            &StatusInputs {
                cfg: &self.cfg,
                resources: &reg.resources,
                health,
            },
            observed.as_ref(),
            Timestamp::now(),
        );
        let due = reg
            .last_report
            .is_none_or(|t| t.elapsed() >= self.timing.status_report_interval);
        if !due && !differs(&wanted, observed.as_ref()) {
            return Ok(());
        }
        let nodes: Api<Node> = Api::all(client.clone());
        let patch = serde_json::json!({ "status": wanted });
        match nodes
            .patch_status(
                &self.cfg.name,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
        {
            Ok(node) => {
                if let Ok(mut o) = self.observed.lock() {
                    *o = node.status;
                }
                if let Ok(mut r) = self.registration.lock()
                    && let Some(r) = r.as_mut()
                {
                    r.last_report = Some(Instant::now());
                }
                Ok(())
            }
            Err(e) if is_status(&e, 404) => {
                // Someone deleted our Node: register again on the next beat.
                warn!(node = %self.cfg.name, "node object vanished; re-registering");
                if let Ok(mut r) = self.registration.lock() {
                    *r = None;
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

/// The shared pod watch: every pod bound to some node, routed to the node's controller by name.
async fn watch_pods(inner: std::sync::Weak<Inner>) {
    let Some(client) = inner.upgrade().map(|i| i.client.clone()) else {
        return;
    };
    let cfg = watcher::Config::default().fields("spec.nodeName!=");
    let mut stream = watcher::watcher(Api::<Pod>::all(client), cfg)
        .default_backoff()
        .boxed();
    let mut buffer: HashMap<String, BTreeMap<String, Pod>> = HashMap::new();
    while let Some(ev) = stream.next().await {
        let Some(inner) = inner.upgrade() else { return };
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                debug!(error = %e, "pod watch error; retrying");
                continue;
            }
        };
        match ev {
            WatchEvent::Init => buffer.clear(),
            WatchEvent::InitApply(pod) => {
                if let (Some(node), Some(uid)) = (node_of(&pod), pod.metadata.uid.clone()) {
                    buffer.entry(node).or_default().insert(uid, pod);
                }
            }
            WatchEvent::InitDone => {
                let all = std::mem::take(&mut buffer);
                let nodes = inner.nodes.read().map(|n| n.clone()).unwrap_or_default();
                for (name, instance) in &nodes {
                    let pods = all
                        .get(name)
                        .map(|p| p.values().cloned().collect())
                        .unwrap_or_default();
                    instance.pods.send(PodEvent::Resync(pods));
                }
                if let Ok(mut m) = inner.pods_by_node.lock() {
                    *m = all;
                }
                if let Ok(mut s) = inner.pods_synced.lock() {
                    *s = true;
                }
            }
            WatchEvent::Apply(pod) => {
                let Some(node) = node_of(&pod) else { continue };
                if let (Ok(mut m), Some(uid)) =
                    (inner.pods_by_node.lock(), pod.metadata.uid.clone())
                {
                    m.entry(node.clone()).or_default().insert(uid, pod.clone());
                }
                if let Some(i) = inner.nodes.read().ok().and_then(|n| n.get(&node).cloned()) {
                    i.pods.send(PodEvent::Apply(Box::new(pod)));
                }
            }
            WatchEvent::Delete(pod) => {
                let Some(node) = node_of(&pod) else { continue };
                if let (Ok(mut m), Some(uid)) =
                    (inner.pods_by_node.lock(), pod.metadata.uid.as_ref())
                    && let Some(p) = m.get_mut(&node)
                {
                    p.remove(uid);
                }
                if let Some(i) = inner.nodes.read().ok().and_then(|n| n.get(&node).cloned()) {
                    i.pods.send(PodEvent::Delete(Box::new(pod)));
                }
            }
        }
    }
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
}

/// The shared Node watch (fleet Nodes only): keeps each instance's view of its Node current, so status
/// reports compare against the API without a GET.
async fn watch_nodes(inner: std::sync::Weak<Inner>) {
    let Some((client, (k, v))) = inner
        .upgrade()
        .map(|i| (i.client.clone(), i.cfg.node_selector.clone()))
    else {
        return;
    };
    let cfg = watcher::Config::default().labels(&format!("{k}={v}"));
    let mut stream = watcher::watcher(Api::<Node>::all(client), cfg)
        .default_backoff()
        .boxed();
    while let Some(ev) = stream.next().await {
        let Some(inner) = inner.upgrade() else { return };
        let (node, deleted) = match ev {
            Ok(WatchEvent::Apply(n) | WatchEvent::InitApply(n)) => (n, false),
            Ok(WatchEvent::Delete(n)) => (n, true),
            Ok(_) => continue,
            Err(e) => {
                debug!(error = %e, "node watch error; retrying");
                continue;
            }
        };
        let Some(name) = node.metadata.name.clone() else {
            continue;
        };
        if let Some(i) = inner.nodes.read().ok().and_then(|n| n.get(&name).cloned()) {
            if let Ok(mut o) = i.observed.lock() {
                *o = if deleted { None } else { node.status.clone() };
            }
            if deleted && let Ok(mut r) = i.registration.lock() {
                *r = None;
            }
        }
    }
}
