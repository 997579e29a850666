//! The task that keeps one node's two certificates issued: reuse a stored one that still fits, else
//! issue one through a CSR; install it (the node's writer client, the endpoint's serving certificate);
//! rotate it at its deadline; back off after failures and say why in the identity state.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::config::AuthInfo;
use tokio::sync::watch;
use tracing::{info, warn};

use super::csr::{self, CsrError, b64};
use super::pem::{self, CertKind, Issued, Wanted};
use super::store::KeyPairPem;
use super::{
    CertState, ClientSource, IdentityConfig, IdentityEvent, IdentityHook, IdentityState,
    NodeClient, NodeIdentitySpec,
};
use crate::api::CertResolver;
use crate::api::tls::certified_key_from_pem;

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

pub(super) struct Keeper {
    pub(super) cfg: Arc<IdentityConfig>,
    pub(super) spec: NodeIdentitySpec,
    pub(super) writer: NodeClient,
    pub(super) serving: Arc<CertResolver>,
    pub(super) state: watch::Sender<IdentityState>,
    pub(super) hook: IdentityHook,
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

    pub(super) async fn run(self) {
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
        // Only a node's first client certificate holds the fleet's serving CSRs back (registration);
        // a rotation does not.
        let _in_flight = (kind == CertKind::Client && reuse).then(|| self.cfg.order.client());
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
            CertKind::Serving => {
                // The fleet's client certificates (registration) go to the signer first.
                self.cfg.order.clients_done(self.cfg.approval_timeout).await;
                self.writer.get().ok_or(IssueError::NoClientIdentity)?
            }
        };
        let req = pem::request(&wanted).map_err(IssueError::Pem)?;
        let cert_pem = csr::issue(
            &requester,
            &self.cfg.csrs,
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
