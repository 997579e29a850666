//! Asking the cluster for a certificate: create a `certificates.k8s.io/v1` CertificateSigningRequest and
//! wait, through the fleet's shared CSR watch ([`CsrWaiter`]), until it is issued, denied or failed, or
//! the wait times out.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use super::pem::{KeyAndRequest, Wanted};
use super::waiter::CsrWaiter;

/// Why no certificate came back. The reasons are stable (conditions, Events, metrics).
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("CSR {name} was denied: {message}")]
    Denied { name: String, message: String },
    #[error("CSR {name} failed: {message}")]
    Failed { name: String, message: String },
    #[error("CSR {name} was not approved and signed within {timeout:?}")]
    NotApproved { name: String, timeout: Duration },
    #[error("creating or watching the CSR failed")]
    Kube(#[source] kube::Error),
}

impl CsrError {
    /// Condition reason: `CertificateDenied`, `CertificateFailed`, `CertificateNotApproved`, `CertificateError`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Denied { .. } => "CertificateDenied",
            Self::Failed { .. } => "CertificateFailed",
            Self::NotApproved { .. } => "CertificateNotApproved",
            Self::Kube(_) => "CertificateError",
        }
    }
}

/// Create the CSR (authenticated as whoever `client` is) and wait, through the shared `waiter`, for the
/// signed certificate (PEM).
///
/// `expiration` is requested as `spec.expirationSeconds` (the signer may issue shorter; the API rejects
/// less than 10 minutes).
///
/// # Errors
/// See [`CsrError`].
pub async fn issue(
    client: &Client,
    waiter: &CsrWaiter,
    wanted: &Wanted,
    req: &KeyAndRequest,
    expiration: Option<Duration>,
    timeout: Duration,
) -> Result<String, CsrError> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let name = csr_name(wanted.kind.as_str(), &wanted.node, &mut rand::rng());
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([(
                waiter.label().to_string(),
                label_value(&wanted.node),
            )])),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(req.csr_pem.clone().into_bytes()),
            signer_name: wanted.kind.signer().into(),
            usages: Some(wanted.kind.usages().iter().map(|u| u.to_string()).collect()),
            expiration_seconds: expiration.map(|e| i32::try_from(e.as_secs()).unwrap_or(i32::MAX)),
            ..Default::default()
        },
        status: None,
    };
    // Registered before the CSR exists: its decision cannot come before anyone listens.
    let decided = waiter.register(&name);
    let created = match api.create(&PostParams::default(), &csr).await {
        Ok(c) => c,
        Err(e) => {
            waiter.cancel(&name);
            return Err(CsrError::Kube(e));
        }
    };
    if let Some(done) = outcome(&name, &created) {
        waiter.cancel(&name);
        return done;
    }
    match tokio::time::timeout(timeout, decided).await {
        Ok(Ok(Some(csr))) => outcome(&name, &csr).unwrap_or_else(|| {
            Err(CsrError::Failed {
                name: name.clone(),
                message: "the CSR ended without a certificate".into(),
            })
        }),
        Ok(Ok(None)) => Err(CsrError::Failed {
            name,
            message: "the CSR was deleted before it was signed".into(),
        }),
        // The shared watch is gone (shutting down) or the wait timed out.
        Ok(Err(_)) | Err(_) => {
            waiter.cancel(&name);
            Err(CsrError::NotApproved { name, timeout })
        }
    }
}

/// `fleetlet-<kind>-<node>-<5 random characters>`, chosen before the CSR is created (so its waiter can
/// register first), with the node part shortened to keep the name readable and valid.
fn csr_name(kind: &str, node: &str, rng: &mut impl rand::Rng) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let node: String = node.chars().take(40).collect();
    let node = node.trim_end_matches(['-', '.']);
    let suffix: String = (0..5)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    format!("fleetlet-{kind}-{node}-{suffix}")
}

/// The node name as a label value (at most 63 characters, ending alphanumeric).
fn label_value(node: &str) -> String {
    let v: String = node.chars().take(63).collect();
    v.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// The end of a CSR's life, if it has reached one: the certificate, or why there is none.
fn outcome(name: &str, csr: &CertificateSigningRequest) -> Option<Result<String, CsrError>> {
    let status = csr.status.as_ref()?;
    for c in status.conditions.iter().flatten() {
        if c.status != "True" {
            continue;
        }
        let message = format!(
            "{}: {}",
            c.reason.as_deref().unwrap_or(""),
            c.message.as_deref().unwrap_or("")
        );
        match c.type_.as_str() {
            "Denied" => {
                return Some(Err(CsrError::Denied {
                    name: name.into(),
                    message,
                }));
            }
            "Failed" => {
                return Some(Err(CsrError::Failed {
                    name: name.into(),
                    message,
                }));
            }
            _ => {}
        }
    }
    let cert = status.certificate.as_ref().filter(|c| !c.0.is_empty())?;
    Some(Ok(String::from_utf8_lossy(&cert.0).into_owned()))
}

/// Base64 of `bytes` (Secret and kubeconfig data).
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn csr(status: serde_json::Value) -> CertificateSigningRequest {
        serde_json::from_value(json!({"metadata": {"name": "x"}, "spec": {"request": "", "signerName": "s"}, "status": status})).unwrap()
    }

    #[test]
    fn csr_names_and_label_values_are_valid() {
        let mut rng = rand::rng();
        let a = csr_name("client", "edge-0", &mut rng);
        assert!(
            a.starts_with("fleetlet-client-edge-0-") && a.len() == 28,
            "{a}"
        );
        assert_ne!(a, csr_name("client", "edge-0", &mut rng));
        let long = format!("{}.-x", "a".repeat(39));
        let b = csr_name("serving", &long, &mut rng);
        assert!(
            b.starts_with(&format!("fleetlet-serving-{}-", "a".repeat(39))),
            "{b}"
        );
        assert!(!b.contains(".-"), "{b}");
        assert_eq!(label_value("edge-0"), "edge-0");
        let v = label_value(&format!("{}.b", "a".repeat(62)));
        assert_eq!(
            v,
            "a".repeat(62),
            "at most 63 characters, ending alphanumeric"
        );
    }

    #[test]
    fn outcome_reads_conditions_and_certificate() {
        assert!(outcome("x", &csr(json!({}))).is_none());
        let approved = csr(json!({"conditions": [{"type": "Approved", "status": "True"}]}));
        assert!(
            outcome("x", &approved).is_none(),
            "approved but not yet signed"
        );
        let signed = csr(
            json!({"conditions": [{"type": "Approved", "status": "True"}], "certificate": b64(b"PEM")}),
        );
        assert_eq!(outcome("x", &signed).unwrap().unwrap(), "PEM");
        let denied = csr(
            json!({"conditions": [{"type": "Denied", "status": "True", "reason": "Nope", "message": "bad SANs"}]}),
        );
        let err = outcome("x", &denied).unwrap().unwrap_err();
        assert_eq!(err.reason(), "CertificateDenied");
        assert!(err.to_string().contains("bad SANs"));
        let failed = csr(
            json!({"conditions": [{"type": "Approved", "status": "True"}, {"type": "Failed", "status": "True", "reason": "SignerValidationFailure"}]}),
        );
        assert_eq!(
            outcome("x", &failed).unwrap().unwrap_err().reason(),
            "CertificateFailed"
        );
    }
}
