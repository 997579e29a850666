//! CSR approver and signer: auto-approves `kubernetes.io/kube-apiserver-client-kubelet` CSRs
//! (Approved/AutoApproved), signs approved CSRs of the kubelet signers with a test CA generated at
//! start (status.certificate), and refuses kubelet-serving CSRs without DNS/IP SANs
//! (Failed/SignerValidationFailure), like kube-controller-manager.

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};

use crate::http::reviews::set_condition;
use crate::meta;
use crate::server::Inner;

const CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const SERVING: &str = "kubernetes.io/kubelet-serving";
const CLIENT: &str = "kubernetes.io/kube-apiserver-client";

/// The cluster CA of the test apiserver.
pub struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn generate() -> Result<TestCa, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "fleetlet-test-apiserver-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Signs a PEM CSR for `signer`, valid from now for `lifetime`; `Err` carries the signer's refusal
    /// message.
    pub fn sign(
        &self,
        csr_pem: &str,
        signer: &str,
        lifetime: std::time::Duration,
    ) -> Result<String, String> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| format!("unable to parse csr: {e}"))?;
        if signer == SERVING && csr.params.subject_alt_names.is_empty() {
            return Err("DNS or IP subjectAltName is required".into());
        }
        csr.params.is_ca = IsCa::NoCa;
        let now = time::OffsetDateTime::now_utc();
        csr.params.not_before = now;
        csr.params.not_after = now + lifetime;
        csr.params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        csr.params.extended_key_usages = vec![if signer == SERVING {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = csr
            .signed_by(&self.issuer)
            .map_err(|e| format!("signing: {e}"))?;
        Ok(cert.pem())
    }
}

fn has_condition(csr: &Value, ty: &str) -> bool {
    csr.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type") == Some(&json!(ty)) && c.get("status") != Some(&json!("False"))
            })
        })
}

fn condition(ty: &str, reason: &str, message: &str) -> Value {
    let now = meta::now();
    json!({"type": ty, "status": "True", "reason": reason, "message": message, "lastUpdateTime": now, "lastTransitionTime": now})
}

pub fn pass(inner: &Inner) {
    let store = &inner.store;
    let Some(def) = store.find_def("certificates.k8s.io", "v1", "certificatesigningrequests")
    else {
        return;
    };
    let (csrs, _) = store.list(&def, None);
    for csr in csrs {
        let signer = meta::str_at(&csr, &["spec", "signerName"])
            .unwrap_or("")
            .to_string();
        let name = meta::name(&csr).to_string();
        let decided = has_condition(&csr, "Approved") || has_condition(&csr, "Denied");
        let update = if !decided && signer == CLIENT_KUBELET {
            Some(condition(
                "Approved",
                "AutoApproved",
                "Auto approving kubelet client certificate after SubjectAccessReview.",
            ))
        } else if has_condition(&csr, "Approved")
            && !has_condition(&csr, "Failed")
            && csr.pointer("/status/certificate").is_none()
            && [CLIENT_KUBELET, SERVING, CLIENT].contains(&signer.as_str())
        {
            let request = meta::str_at(&csr, &["spec", "request"]).unwrap_or("");
            let pem = base64::engine::general_purpose::STANDARD
                .decode(request)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
            // As kube-controller-manager: the requested expirationSeconds, capped at the signing duration.
            let lifetime = csr
                .pointer("/spec/expirationSeconds")
                .and_then(Value::as_u64)
                .map(std::time::Duration::from_secs)
                .map_or(inner.signing_duration, |d| d.min(inner.signing_duration));
            match inner.ca.sign(&pem, &signer, lifetime) {
                Ok(cert) => Some(
                    json!({"certificate": base64::engine::general_purpose::STANDARD.encode(cert)}),
                ),
                Err(msg) => Some(condition("Failed", "SignerValidationFailure", &msg)),
            }
        } else {
            None
        };
        let Some(update) = update else { continue };
        let res = store.mutate(&def, "", &name, |old| {
            let mut new = old.clone();
            match update.get("certificate") {
                Some(c) => {
                    meta::obj_mut(&mut new, "status").insert("certificate".into(), c.clone());
                }
                None => set_condition(&mut new, update.clone()),
            }
            Ok(new)
        });
        if let Err(e) = res {
            tracing::debug!(error = %e, csr = %name, "csr controller");
        }
    }
}
