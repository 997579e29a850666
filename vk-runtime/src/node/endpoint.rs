//! One virtual node's kubelet endpoint: binds `address:port` (retrying briefly, as a replaced node may
//! still hold the port), serves the kubelet API with the node's pods, provider and an authorizer backed
//! by TokenReview/SubjectAccessReview, and stops when the node's cancellation token fires.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{
    CertResolver, ClientCa, KubeAuthorizer, KubeletApi, PodLookup, SharedObserver, serve_on,
};
use crate::pod::controller::PodTable;
use crate::provider::{DynProvider, PodRef};

/// ConfigMap (in kube-system) where the apiserver publishes the CA of its client certificates.
pub const CLIENT_CA_CONFIGMAP: &str = "extension-apiserver-authentication";
/// Key of the client CA bundle in that ConfigMap.
pub const CLIENT_CA_KEY: &str = "client-ca-file";

/// The cluster's client CA bundle, as the apiserver publishes it; `None` when not published (then only
/// bearer tokens authenticate callers).
///
/// # Errors
/// API errors other than NotFound.
pub async fn cluster_client_ca(client: &Client) -> Result<Option<Vec<u8>>, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let cm = api.get_opt(CLIENT_CA_CONFIGMAP).await?;
    Ok(cm
        .and_then(|c| c.data)
        .and_then(|d| d.get(CLIENT_CA_KEY).cloned())
        .map(String::into_bytes))
}

/// The pod controller's table seen through the kubelet API's lookup trait.
struct TablePods(PodTable);

impl PodLookup for TablePods {
    fn lookup(&self, namespace: &str, name: &str) -> Option<PodRef> {
        let table = self.0.read().ok()?;
        table
            .get(&(namespace.to_string(), name.to_string()))
            .and_then(PodRef::of)
    }

    fn pods(&self) -> Vec<Pod> {
        self.0
            .read()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// What starting an endpoint needs.
pub struct EndpointSpec {
    pub node: String,
    pub address: IpAddr,
    pub port: u16,
    pub provider: DynProvider,
    pub pods: PodTable,
    pub client: Client,
    pub client_ca: Option<ClientCa>,
    /// The serving certificate (self-signed until a CSR-issued one is swapped in).
    pub tls: Arc<CertResolver>,
    /// Told about every answered request (see [`crate::api::observe`]).
    pub observer: Option<SharedObserver>,
}

/// Start serving; failures are written to `error` (shown in the node's state) and logged.
pub fn start(spec: EndpointSpec, cancel: CancellationToken, error: Arc<Mutex<Option<String>>>) {
    tokio::spawn(async move {
        let addr = SocketAddr::new(spec.address, spec.port);
        let set_error = |e: Option<String>| {
            if let Ok(mut g) = error.lock() {
                *g = e;
            }
        };
        let tls = spec.tls.clone();
        let listener = match bind(addr, &cancel).await {
            Ok(l) => l,
            Err(e) => {
                warn!(node = %spec.node, %addr, error = %e, "kubelet endpoint cannot listen");
                return set_error(Some(format!(
                    "kubelet endpoint cannot listen on {addr}: {e}"
                )));
            }
        };
        set_error(None);
        info!(node = %spec.node, %addr, "kubelet endpoint serving");
        let api = KubeletApi {
            node_name: spec.node.clone(),
            provider: spec.provider,
            pods: Arc::new(TablePods(spec.pods)),
            auth: Arc::new(KubeAuthorizer::new(spec.client, spec.node.clone())),
            tls,
            client_ca: spec.client_ca,
            observer: spec.observer,
        };
        if let Err(e) = serve_on(listener, api, cancel.cancelled_owned()).await {
            warn!(node = %spec.node, error = %e, "kubelet endpoint stopped");
            set_error(Some(format!("kubelet endpoint: {e}")));
        }
    });
}

/// Bind, retrying for a few seconds while the port is still held (a node being replaced).
async fn bind(addr: SocketAddr, cancel: &CancellationToken) -> std::io::Result<TcpListener> {
    let mut attempt = 0;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && attempt < 25
                    && !cancel.is_cancelled() =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
