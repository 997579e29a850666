//! The apiserver side of the kubelet API: a client CA whose CA certificate is published in ConfigMap
//! `kube-system/extension-apiserver-authentication` (key `client-ca-file`), the apiserver's own
//! kubelet-client certificate signed by it, and the proxy that carries `pods/log`, `pods/exec`,
//! `pods/attach`, `pods/portforward` and `nodes/NAME/proxy/...` to a node's kubelet endpoint.
//! [`client`] is a small TLS client for tests that talk to a kubelet endpoint directly.

pub mod client;
pub mod location;
pub mod proxy;
pub mod tls;

use std::sync::{Arc, Mutex};

use rustls::ClientConfig;
use serde_json::json;

pub use crate::pki::{Ca as ClientCa, CertError, Identity};

use crate::server::lock;
use crate::store::Store;

/// The user the apiserver presents to kubelets.
pub const APISERVER_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
/// The group of [`APISERVER_CLIENT_USER`]: allowed everything by the default authorizer.
pub const APISERVER_CLIENT_GROUP: &str = "system:masters";

/// Namespace and name of the ConfigMap holding the client CA.
pub const AUTH_CONFIGMAP: (&str, &str) = ("kube-system", "extension-apiserver-authentication");
/// The key of the client CA bundle in [`AUTH_CONFIGMAP`].
pub const CLIENT_CA_KEY: &str = "client-ca-file";

#[derive(Debug, thiserror::Error)]
pub enum KubeletSetupError {
    #[error("generating certificates failed")]
    Rcgen(#[from] rcgen::Error),
    #[error(transparent)]
    Certs(#[from] CertError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// One request the apiserver proxied to a kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRecord {
    /// `log`, `exec`, `attach`, `portforward` (pods) or `proxy` (nodes).
    pub subresource: String,
    /// The node whose kubelet was asked.
    pub node: String,
    /// Path and query as sent to the kubelet.
    pub target: String,
    /// The `Upgrade` token the client asked for (`websocket`, `SPDY/3.1`), if any.
    pub upgrade: Option<String>,
    /// The kubelet's answer, and for an accepted upgrade the negotiated subprotocol.
    pub forwarded: proxy::Forwarded,
}

/// The apiserver's kubelet client: CA, identity, TLS configuration, and a log of what it proxied.
pub struct KubeletClient {
    pub ca: ClientCa,
    pub identity: Identity,
    pub tls: Arc<ClientConfig>,
    records: Mutex<Vec<ProxyRecord>>,
}

impl KubeletClient {
    /// A new client CA and kubelet-client certificate; kubelet serving certificates are verified
    /// against `kubelet_ca_pem` when given.
    pub fn generate(kubelet_ca_pem: Option<&str>) -> Result<KubeletClient, KubeletSetupError> {
        let ca = ClientCa::generate("fleetlet-test-apiserver-client-ca")?;
        let identity = ca.issue(APISERVER_CLIENT_USER, &[APISERVER_CLIENT_GROUP])?;
        let tls = Arc::new(tls::client_config(Some(&identity), kubelet_ca_pem)?);
        Ok(KubeletClient {
            ca,
            identity,
            tls,
            records: Mutex::new(Vec::new()),
        })
    }

    /// Publishes `client_ca_bundle` (the CAs the apiserver trusts for client certificates) as a
    /// real cluster does.
    pub fn publish(&self, store: &Store, client_ca_bundle: &str) {
        let Some(def) = store.find_def("", "v1", "configmaps") else {
            return;
        };
        let (ns, name) = AUTH_CONFIGMAP;
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns},
            "data": {CLIENT_CA_KEY: client_ca_bundle}});
        if let Err(e) = store.create(&def, cm) {
            tracing::error!(error = %e, "publishing the client CA");
        }
    }

    pub fn record(&self, r: ProxyRecord) {
        lock(&self.records).push(r);
    }

    pub fn records(&self) -> Vec<ProxyRecord> {
        lock(&self.records).clone()
    }
}
