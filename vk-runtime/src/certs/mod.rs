//! Node identities from the cluster's CSR API, with rotation.
//!
//! Per virtual node, a [`NodeIdentity`] keeps two certificates, each with its own ECDSA P-256 key:
//! - a client certificate (`CN=system:node:<name>, O=system:nodes`, signer
//!   `kubernetes.io/kube-apiserver-client-kubelet`), requested with the operator's identity (which
//!   kube-controller-manager auto-approves when that identity may create `certificatesigningrequests/nodeclient`);
//!   the node's writes (Node, Node status, Lease, pod status, pod Events) go through a client built on it;
//! - a serving certificate for the kubelet endpoint (signer `kubernetes.io/kubelet-serving`, SANs = the
//!   addresses the Node advertises), requested *as the node*, so an approver can check requester == CN.
//!
//! Both are stored in Secrets ([`store`]) and reused after a restart while they still fit; each is rotated
//! at a random point in 70-90% of its lifetime, or at once when it no longer fits (the node's address
//! changed). A failed issuance (denied, failed, never approved, API error) is retried with capped
//! exponential backoff; until a replacement arrives the current certificate keeps serving, so rotation
//! trouble never takes a node down before its certificate actually expires.

pub mod csr;
mod keeper;
pub mod order;
pub mod pem;
pub mod store;
pub mod waiter;

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::CertResolver;
use keeper::Keeper;
use store::SecretStore;

/// Makes the clients of one identity on demand. A node's client is made for each use and dropped
/// after it, so an idle node keeps only what its source holds (its transport and kept connection),
/// not a client's request queue and worker task.
pub type ClientSource = Arc<dyn Fn() -> Client + Send + Sync>;

/// Builds the client source for a config (the operator adds its transport and metrics layer).
pub type ClientFactory =
    Arc<dyn Fn(kube::Config) -> Result<ClientSource, kube::Error> + Send + Sync>;

/// Settings shared by every node identity of a fleet.
#[derive(Clone)]
pub struct IdentityConfig {
    /// The operator's connection settings (URL, CA); the auth part is replaced by the node's certificate.
    pub base: kube::Config,
    pub make_client: ClientFactory,
    /// The operator's client: creates client CSRs, reads and writes the Secrets.
    pub operator: Client,
    pub secrets: SecretStore,
    /// The shared watch every node's CSR waits on (its label key goes on every CSR).
    pub csrs: waiter::CsrWaiter,
    /// Client certificates before serving ones, fleet-wide ([`order`]).
    pub order: order::IssueOrder,
    /// Requested certificate lifetime (`expirationSeconds`); `None`: the signer's default.
    pub expiration: Option<Duration>,
    /// How long to wait for a CSR to be approved and signed before retrying.
    pub approval_timeout: Duration,
    /// Backoff after a failed issuance: starts at `.0`, doubles, capped at `.1`.
    pub backoff: (Duration, Duration),
}

impl std::fmt::Debug for IdentityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityConfig")
            .field("cluster_url", &self.base.cluster_url)
            .field("namespace", &self.secrets.namespace)
            .field("expiration", &self.expiration)
            .field("approval_timeout", &self.approval_timeout)
            .finish_non_exhaustive()
    }
}

/// The client a node writes with: the node's own identity (replaced on rotation), or a shared one.
#[derive(Clone)]
pub struct NodeClient(Arc<RwLock<Option<ClientSource>>>);

impl NodeClient {
    /// A fixed client (the operator's identity).
    pub fn fixed(client: Client) -> Self {
        Self(Arc::new(RwLock::new(Some(Arc::new(move || {
            client.clone()
        })))))
    }

    fn pending() -> Self {
        Self(Arc::new(RwLock::new(None)))
    }

    /// A client with the current identity; `None` until the node's client certificate is issued.
    pub fn get(&self) -> Option<Client> {
        let source = match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        source.map(|make| make())
    }

    fn set(&self, client: ClientSource) {
        match self.0.write() {
            Ok(mut g) => *g = Some(client),
            Err(p) => *p.into_inner() = Some(client),
        }
    }
}

/// The state of one certificate, for conditions and Events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertState {
    /// Not issued yet (first issuance in progress).
    Pending,
    /// Valid until the given time.
    Issued { not_after: Timestamp },
    /// The last issuance attempt failed (an older certificate may still be in use: `current`).
    Failing {
        reason: &'static str,
        message: String,
        current: Option<Timestamp>,
    },
}

impl CertState {
    /// Whether a usable certificate is in place.
    pub fn usable(&self) -> bool {
        matches!(
            self,
            Self::Issued { .. }
                | Self::Failing {
                    current: Some(_),
                    ..
                }
        )
    }
}

/// Both certificates of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityState {
    pub client: CertState,
    pub serving: CertState,
}

/// What a node's identity tells its owner as it goes.
pub enum IdentityEvent<'a> {
    /// The state changed (a certificate issued, failing, ...).
    Changed(&'a IdentityState),
    /// The node's first client certificate is in place: it can write (register) now.
    ClientReady,
}

/// Receives [`IdentityEvent`]s; called from the identity's task, so it must not block.
pub type IdentityHook = Box<dyn Fn(IdentityEvent<'_>) + Send + Sync>;

/// One node's identity: its writer client and serving certificate, kept issued and rotated by a task
/// that lives until the handle is dropped.
pub struct NodeIdentity {
    pub writer: NodeClient,
    pub serving: Arc<CertResolver>,
    state: watch::Receiver<IdentityState>,
    cancel: CancellationToken,
}

impl Drop for NodeIdentity {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// What identifies one node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeIdentitySpec {
    pub node: String,
    /// The IP address the Node advertises (InternalIP); the serving certificate's IP SAN.
    pub address: IpAddr,
    /// Owner of the Secrets (deleting it deletes them).
    pub owner: Option<OwnerReference>,
}

impl NodeIdentity {
    /// Start keeping `spec`'s certificates. `serving` is the endpoint's resolver; it serves a self-signed
    /// certificate until the issued one arrives. `hook` hears of every state change and of the first
    /// client certificate (so the node can register at once, not at its next retry).
    /// `cfg` is shared by every node (it holds a `kube::Config` and clients: kilobytes per copy).
    pub fn start(
        cfg: Arc<IdentityConfig>,
        spec: NodeIdentitySpec,
        serving: Arc<CertResolver>,
        hook: IdentityHook,
    ) -> Self {
        let writer = NodeClient::pending();
        let (tx, rx) = watch::channel(IdentityState {
            client: CertState::Pending,
            serving: CertState::Pending,
        });
        let cancel = CancellationToken::new();
        let keeper = Keeper {
            cfg,
            spec,
            writer: writer.clone(),
            serving: serving.clone(),
            state: tx,
            hook,
        };
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = keeper.run() => {}
                () = stop.cancelled() => {}
            }
        });
        Self {
            writer,
            serving,
            state: rx,
            cancel,
        }
    }

    pub fn state(&self) -> IdentityState {
        self.state.borrow().clone()
    }

    /// Changes of [`NodeIdentity::state`].
    pub fn subscribe(&self) -> watch::Receiver<IdentityState> {
        self.state.clone()
    }
}
