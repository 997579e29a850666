//! One running virtual node and its heartbeat: registration (create or adopt the Node), lease renewal,
//! provider health checks and Node status reports, and the [`NodeState`] it publishes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{NodeState, StateTx};
use crate::certs::{NodeClient, NodeIdentity};
use crate::node::heartbeat::Beat;
use crate::node::lease::{LeaseKeeper, is_status};
use crate::node::status::{
    Observed, StatusInputs, differs, node_object, node_status, reconcile_taints,
};
use crate::node::{NodeConfig, NodeTiming};
use crate::pod::PodController;
use crate::provider::{DynProvider, Health, NodeResources};

/// One running virtual node.
pub(super) struct NodeInstance {
    pub(super) cfg: NodeConfig,
    pub(super) provider: DynProvider,
    /// Writes the node's own objects: its identity, or the fleet's heartbeat client.
    pub(super) client: NodeClient,
    /// The operator's own client, for what a node may not write about itself (its taints).
    pub(super) operator: Client,
    /// Keeps the node's certificates issued (when it has its own identity); dropped with the instance.
    pub(super) identity: Option<NodeIdentity>,
    pub(super) timing: NodeTiming,
    /// Field manager of every write about the node (Node create and patches, Lease).
    pub(super) field_manager: Arc<str>,
    pub(super) lease: tokio::sync::Mutex<LeaseKeeper>,
    /// What the API last showed of the Node status (from the shared Node watch and write answers).
    pub(super) observed: Mutex<Option<Observed>>,
    /// Registration: resources reported and when status was last written.
    pub(super) registration: Mutex<Option<Registered>>,
    pub(super) last_health_check: Mutex<Option<(Instant, Health)>>,
    pub(super) state: StateTx,
    pub(super) pods: PodController,
    /// Stops the node's kubelet endpoint (and anything else tied to the instance's life).
    pub(super) cancel: CancellationToken,
    /// Why the kubelet endpoint is not serving, if it is not.
    pub(super) endpoint_error: Arc<Mutex<Option<String>>>,
}

impl Drop for NodeInstance {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[derive(Clone)]
pub(super) struct Registered {
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
            // Not an error of the node: its identity state says where the client certificate is
            // (and outlives this beat; an error here would stay stale until the next one).
            self.publish(false, None);
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
    /// Create parameters naming the fleet's field manager.
    fn post_params(&self) -> PostParams {
        PostParams {
            field_manager: Some(self.field_manager.to_string()),
            ..PostParams::default()
        }
    }

    /// Patch parameters naming the fleet's field manager. Node writes stay strategic-merge and merge
    /// patches, as a kubelet's are: the node lifecycle controller writes the same conditions and taints,
    /// and a forced apply would take them over instead of merging.
    fn patch_params(&self) -> PatchParams {
        PatchParams {
            field_manager: Some(self.field_manager.to_string()),
            ..PatchParams::default()
        }
    }

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
        self.state.update(&self.cfg.name, |_| Some(next));
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
        let mut wanted = node_object(&self.cfg, &resources);
        // A Node may be created with its status (kube-apiserver keeps status on Node create; a kubelet
        // registers that way too): Ready in the create, no status patch after it.
        let health = self.health().await;
        wanted.status = Some(node_status(
            &StatusInputs {
                cfg: &self.cfg,
                resources: &resources,
                health: &health,
            },
            None,
            Timestamp::now(),
        ));
        let (node, reported) = match nodes.create(&self.post_params(), &wanted).await {
            Ok(n) => {
                self.lease.lock().await.expect_absent();
                (n, Some(Instant::now()))
            }
            Err(e) if is_status(&e, 409) => (self.adopt(&nodes, &wanted).await?, None),
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
            *o = node.status.as_ref().map(Observed::of);
        }
        info!(node = %self.cfg.name, "node registered");
        if let Ok(mut r) = self.registration.lock() {
            *r = Some(Registered {
                resources,
                last_report: reported,
            });
        }
        Ok(())
    }

    /// Re-registration (operator restart, takeover, changed configuration): bring labels up to date as
    /// the node itself, then taints with the operator's identity when they differ. NodeRestriction
    /// refuses a node changing its own taints (a kubelet sets them only when it creates its Node).
    async fn adopt(&self, nodes: &Api<Node>, wanted: &Node) -> Result<Node, kube::Error> {
        let name = &self.cfg.name;
        let labels = serde_json::json!({ "metadata": { "labels": wanted.metadata.labels } });
        let pp = self.patch_params();
        let node = nodes.patch(name, &pp, &Patch::Merge(labels)).await?;
        let have = node.spec.as_ref().and_then(|s| s.taints.clone());
        let want = wanted.spec.as_ref().and_then(|s| s.taints.clone());
        let Some(taints) = reconcile_taints(&have.unwrap_or_default(), &want.unwrap_or_default())
        else {
            return Ok(node);
        };
        info!(node = %name, "updating the Node's taints");
        // Conditional on what was read: a taint another controller adds meanwhile is never lost.
        let rv = node.metadata.resource_version.clone();
        let patch = serde_json::json!({ "metadata": { "resourceVersion": rv }, "spec": { "taints": taints } });
        Api::<Node>::all(self.operator.clone())
            .patch(name, &pp, &Patch::Merge(patch))
            .await
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
                &self.patch_params(),
                &Patch::Strategic(patch),
            )
            .await
        {
            Ok(node) => {
                if let Ok(mut o) = self.observed.lock() {
                    *o = node.status.as_ref().map(Observed::of);
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
