//! Adding, stopping and removing the fleet's nodes: what a node gets when it starts (kubelet endpoint
//! certificate, identity, pod controller, heartbeat slot) and what is cleaned up when it goes.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::instance::NodeInstance;
use super::{Fleet, NodeState, StateTx};
use crate::api::CertResolver;
use crate::certs::{IdentityEvent, NodeClient, NodeIdentity, NodeIdentitySpec};
use crate::node::NodeConfig;
use crate::node::endpoint::{self, EndpointSpec};
use crate::node::lease::{LeaseKeeper, is_status};
use crate::pod::{PodController, PodEvent};
use crate::provider::{DynProvider, Health};

impl Fleet {
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
                return old.state.tx.subscribe();
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
        let state = StateTx {
            tx: watch::channel(NodeState {
                registered: false,
                error: None,
                health: Health::unhealthy("Starting", "virtual node is starting"),
                pods: 0,
                identity: None,
            })
            .0,
            listener: self.inner.cfg.state_listener.clone(),
        };
        let identity = self.inner.cfg.identity.clone().map(|id| {
            let (heartbeats, node, state) =
                (self.inner.heartbeats.clone(), name.clone(), state.clone());
            NodeIdentity::start(
                id,
                NodeIdentitySpec {
                    node: name.clone(),
                    address,
                    owner,
                },
                tls.clone(),
                Box::new(move |event| match event {
                    // Register as soon as the node can write, not at its next retry (up to 3 s later).
                    IdentityEvent::ClientReady => heartbeats.kick(&node),
                    // Certificates change between heartbeats: tell the owner now, not at the next beat.
                    IdentityEvent::Changed(id) => state.update(&node, |s| {
                        (s.identity.as_ref() != Some(id)).then(|| NodeState {
                            identity: Some(id.clone()),
                            ..s.clone()
                        })
                    }),
                }),
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
        if let Some(i) = &identity {
            let now = i.state();
            state.update(&name, |s| {
                Some(NodeState {
                    identity: Some(now),
                    ..s.clone()
                })
            });
        }
        let instance = Arc::new(NodeInstance {
            lease: tokio::sync::Mutex::new(LeaseKeeper::new(
                &name,
                self.inner.cfg.timing.lease_duration,
                self.inner.field_manager.clone(),
            )),
            field_manager: self.inner.field_manager.clone(),
            cfg,
            provider,
            client: writer,
            operator: self.inner.client.clone(),
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
        let client_ca = self.inner.client_ca.clone().transpose();
        if self.inner.cfg.serve_kubelet_api {
            match (instance.cfg.address.parse(), client_ca) {
                (Ok(address), Ok(client_ca)) => endpoint::start(
                    EndpointSpec {
                        node: name.clone(),
                        address,
                        port: instance.cfg.kubelet_port,
                        provider: instance.provider.clone(),
                        pods: instance.pods.table(),
                        client: self.inner.client.clone(),
                        client_ca,
                        tls,
                        observer: self.inner.cfg.kubelet_api_observer.clone(),
                    },
                    instance.cancel.clone(),
                    instance.endpoint_error.clone(),
                ),
                (Err(_), _) => {
                    if let Ok(mut e) = instance.endpoint_error.lock() {
                        *e = Some(format!(
                            "kubelet address {:?} is not an IP address",
                            instance.cfg.address
                        ));
                    }
                }
                (_, Err(ca)) => {
                    if let Ok(mut e) = instance.endpoint_error.lock() {
                        *e = Some(format!("kubelet endpoint: {ca}"));
                    }
                }
            }
        }
        let rx = instance.state.tx.subscribe();
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
            LeaseKeeper::new(
                name,
                Duration::from_secs(40),
                self.inner.field_manager.clone(),
            )
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
}
