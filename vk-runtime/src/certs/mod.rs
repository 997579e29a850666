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
pub mod pem;
pub mod store;

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::config::AuthInfo;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::CertResolver;
use crate::api::tls::certified_key_from_pem;
use csr::{CsrError, b64};
use pem::{CertKind, Issued, Wanted};
use store::{KeyPairPem, SecretStore};

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

/// A certificate obtained (stored or newly issued), before it is put to use.
struct Obtained {
    pair: KeyPairPem,
    issued: Issued,
    rotate_at: Timestamp,
}

/// A certificate in use: only when it expires and when to replace it. Its key and PEMs live where they
/// are used (the node's TLS client, the endpoint's resolver) and in the Secret, not here as well.
struct Current {
    not_after: Timestamp,
    rotate_at: Timestamp,
}

struct Keeper {
    cfg: Arc<IdentityConfig>,
    spec: NodeIdentitySpec,
    writer: NodeClient,
    serving: Arc<CertResolver>,
    state: watch::Sender<IdentityState>,
    hook: IdentityHook,
}

impl Keeper {
    fn wanted(&self, kind: CertKind) -> Wanted {
        match kind {
            CertKind::Client => Wanted::client(&self.spec.node),
            CertKind::Serving => Wanted::serving(
                &self.spec.node,
                vec![self.spec.address],
                vec![self.spec.node.clone()],
            ),
        }
    }

    async fn run(self) {
        let mut client: Option<Current> = None;
        let mut serving: Option<Current> = None;
        let mut failures = 0u32;
        loop {
            let now = Timestamp::now();
            let mut failed = false;
            for kind in [CertKind::Client, CertKind::Serving] {
                // The serving CSR is made as the node: it needs the client certificate first.
                if kind == CertKind::Serving && client.is_none() {
                    continue;
                }
                let slot = match kind {
                    CertKind::Client => &mut client,
                    CertKind::Serving => &mut serving,
                };
                let due = slot.as_ref().is_none_or(|c| c.rotate_at <= now);
                if !due {
                    continue;
                }
                // Boxed: issuance is rare and its future large (~8 KB); inline, every node's idle
                // task would hold that much between rotations.
                match Box::pin(self.obtain(kind, slot.is_none())).await {
                    Ok(obtained) => {
                        let first = slot.is_none();
                        self.install(kind, &obtained);
                        *slot = Some(Current {
                            not_after: obtained.issued.not_after,
                            rotate_at: obtained.rotate_at,
                        });
                        if first && kind == CertKind::Client {
                            (self.hook)(IdentityEvent::ClientReady);
                        }
                    }
                    Err(e) => {
                        failed = true;
                        let still = slot
                            .as_ref()
                            .filter(|c| c.not_after > Timestamp::now())
                            .map(|c| c.not_after);
                        warn!(node = %self.spec.node, kind = kind.as_str(), reason = e.reason(), error = %e, "certificate issuance failed");
                        self.publish(
                            kind,
                            CertState::Failing {
                                reason: e.reason(),
                                message: e.to_string(),
                                current: still,
                            },
                        );
                    }
                }
            }
            let wait = if failed {
                failures = failures.saturating_add(1);
                let (base, cap) = self.cfg.backoff;
                base.saturating_mul(1 << failures.min(16)).min(cap)
            } else {
                failures = 0;
                let next = [&client, &serving]
                    .into_iter()
                    .flatten()
                    .map(|c| c.rotate_at)
                    .min();
                next.map_or(Duration::from_secs(60), |t| {
                    Timestamp::now()
                        .duration_until(t)
                        .try_into()
                        .unwrap_or(Duration::ZERO)
                })
            };
            tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
        }
    }

    /// A certificate for `kind`: the stored one if it still fits and `reuse`, else a newly issued one.
    async fn obtain(&self, kind: CertKind, reuse: bool) -> Result<Obtained, IssueError> {
        let wanted = self.wanted(kind);
        if reuse
            && let Some(pair) = self
                .cfg
                .secrets
                .load(&self.spec.node, kind)
                .await
                .map_err(IssueError::Secret)?
            && let Ok(issued) = Issued::parse(pair.cert_pem.as_bytes())
            && issued.fits(&wanted, Timestamp::now())
        {
            let rotate_at = issued.rotation_deadline(&mut rand::rng());
            info!(node = %self.spec.node, kind = kind.as_str(), not_after = %issued.not_after, "reusing stored certificate");
            return Ok(Obtained {
                pair,
                issued,
                rotate_at,
            });
        }
        let requester = match kind {
            CertKind::Client => self.cfg.operator.clone(),
            CertKind::Serving => self.writer.get().ok_or(IssueError::NoClientIdentity)?,
        };
        let req = pem::request(&wanted).map_err(IssueError::Pem)?;
        let cert_pem = csr::issue(
            &requester,
            &wanted,
            &req,
            self.cfg.expiration,
            self.cfg.approval_timeout,
        )
        .await
        .map_err(IssueError::Csr)?;
        let issued = Issued::parse(cert_pem.as_bytes()).map_err(IssueError::Pem)?;
        if !issued.fits(&wanted, Timestamp::now()) {
            return Err(IssueError::Mismatch(format!(
                "the signer issued {} {:?} {:?} valid until {}",
                issued.common_name, issued.ips, issued.dns, issued.not_after
            )));
        }
        let pair = KeyPairPem {
            key_pem: req.key_pem,
            cert_pem,
        };
        self.cfg
            .secrets
            .save(&self.spec.node, kind, &pair, self.spec.owner.as_ref())
            .await
            .map_err(IssueError::Secret)?;
        let rotate_at = issued.rotation_deadline(&mut rand::rng());
        info!(node = %self.spec.node, kind = kind.as_str(), not_after = %issued.not_after, rotate_at = %rotate_at, "certificate issued");
        Ok(Obtained {
            pair,
            issued,
            rotate_at,
        })
    }

    /// Put a certificate to use: a new writer client, or the endpoint's serving certificate.
    fn install(&self, kind: CertKind, current: &Obtained) {
        let result = match kind {
            CertKind::Client => self.client_for(&current.pair).map(|c| self.writer.set(c)),
            CertKind::Serving => certified_key_from_pem(
                current.pair.cert_pem.as_bytes(),
                current.pair.key_pem.as_bytes(),
            )
            .map(|k| self.serving.set(Arc::new(k)))
            .map_err(|e| IssueError::Install(e.to_string())),
        };
        match result {
            Ok(()) => self.publish(
                kind,
                CertState::Issued {
                    not_after: current.issued.not_after,
                },
            ),
            Err(e) => self.publish(
                kind,
                CertState::Failing {
                    reason: e.reason(),
                    message: e.to_string(),
                    current: None,
                },
            ),
        }
    }

    fn client_for(&self, pair: &KeyPairPem) -> Result<ClientSource, IssueError> {
        let mut config = self.cfg.base.clone();
        config.auth_info = AuthInfo {
            client_certificate_data: Some(b64(pair.cert_pem.as_bytes())),
            client_key_data: Some(b64(pair.key_pem.as_bytes()).into()),
            ..AuthInfo::default()
        };
        (self.cfg.make_client)(config).map_err(|e| IssueError::Install(e.to_string()))
    }

    fn publish(&self, kind: CertKind, state: CertState) {
        let changed = self.state.send_if_modified(|s| {
            let slot = match kind {
                CertKind::Client => &mut s.client,
                CertKind::Serving => &mut s.serving,
            };
            if *slot == state {
                return false;
            }
            *slot = state;
            true
        });
        if changed {
            let now = self.state.borrow().clone();
            (self.hook)(IdentityEvent::Changed(&now));
        }
    }
}

/// Why a certificate could not be obtained.
#[derive(Debug, thiserror::Error)]
enum IssueError {
    #[error(transparent)]
    Csr(CsrError),
    #[error("key or certificate handling failed")]
    Pem(#[source] pem::PemError),
    #[error("reading or writing the certificate Secret failed")]
    Secret(#[source] kube::Error),
    #[error("the serving CSR is made as the node, which has no client certificate yet")]
    NoClientIdentity,
    #[error("issued certificate does not match the request: {0}")]
    Mismatch(String),
    #[error("the issued certificate cannot be used: {0}")]
    Install(String),
}

impl IssueError {
    fn reason(&self) -> &'static str {
        match self {
            Self::Csr(e) => e.reason(),
            _ => "CertificateError",
        }
    }
}
