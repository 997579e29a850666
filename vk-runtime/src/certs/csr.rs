//! Asking the cluster for a certificate: create a `certificates.k8s.io/v1` CertificateSigningRequest and
//! wait, on a watch of that one object, until it is issued, denied or failed, or the wait times out.

use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};

use super::pem::{KeyAndRequest, Wanted};

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

/// Create the CSR (authenticated as whoever `client` is) and wait for the signed certificate (PEM).
///
/// `expiration` is requested as `spec.expirationSeconds` (the signer may issue shorter; the API rejects
/// less than 10 minutes).
///
/// # Errors
/// See [`CsrError`].
pub async fn issue(
    client: &Client,
    wanted: &Wanted,
    req: &KeyAndRequest,
    expiration: Option<Duration>,
    timeout: Duration,
) -> Result<String, CsrError> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "fleetlet-{}-{}-",
                wanted.kind.as_str(),
                wanted.node
            )),
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
    let created = api
        .create(&PostParams::default(), &csr)
        .await
        .map_err(CsrError::Kube)?;
    let name = created.metadata.name.clone().unwrap_or_default();
    if let Some(done) = outcome(&name, &created) {
        return done;
    }
    let wait = async {
        let mut stream = watcher::watch_object(api.clone(), &name).boxed();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(Some(csr)) => {
                    if let Some(done) = outcome(&name, &csr) {
                        return done;
                    }
                }
                Ok(None) => {
                    return Err(CsrError::Failed {
                        name: name.clone(),
                        message: "the CSR was deleted before it was signed".into(),
                    });
                }
                // The watcher re-lists on its next poll; pace it (the overall wait is bounded).
                Err(source) => {
                    tracing::debug!(csr = %name, error = %source, "watching the CSR failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        Err(CsrError::NotApproved {
            name: name.clone(),
            timeout,
        })
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(r) => r,
        Err(_) => Err(CsrError::NotApproved { name, timeout }),
    }
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
