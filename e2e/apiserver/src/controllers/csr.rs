//! CSR approver and signer: auto-approves `kubernetes.io/kube-apiserver-client-kubelet` CSRs
//! (Approved/AutoApproved), signs approved CSRs of the kubelet signers with the cluster CA
//! (`crate::pki`, status.certificate), and refuses kubelet-serving CSRs without DNS/IP SANs
//! (Failed/SignerValidationFailure), like kube-controller-manager.

use std::error::Error as _;
use std::time::{Duration, Instant};

use base64::Engine;
use rcgen::ExtendedKeyUsagePurpose;
use serde_json::{Value, json};

use crate::http::reviews::set_condition;
use crate::meta;
use crate::pki::{Ca, CertError};
use crate::server::Inner;
use crate::store::EventType;

const CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const SERVING: &str = "kubernetes.io/kubelet-serving";
const CLIENT: &str = "kubernetes.io/kube-apiserver-client";

/// Signs a PEM CSR for `signer` with the cluster CA, valid from now for `lifetime`; `Err` carries
/// the signer's refusal message.
pub fn sign(
    ca: &Ca,
    csr_pem: &str,
    signer: &str,
    lifetime: std::time::Duration,
) -> Result<String, String> {
    let unparsable = |e: CertError| {
        format!(
            "{e}: {}",
            e.source().map(ToString::to_string).unwrap_or_default()
        )
    };
    if signer == SERVING && !Ca::csr_has_sans(csr_pem).map_err(unparsable)? {
        return Err("DNS or IP subjectAltName is required".into());
    }
    let eku = if signer == SERVING {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    };
    ca.sign_csr(csr_pem, eku, lifetime).map_err(unparsable)
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

/// Whether a CSR still needs a decision (client-kubelet CSRs are auto-approved) or a certificate.
fn needs_work(csr: &Value) -> bool {
    let signer = meta::str_at(csr, &["spec", "signerName"]).unwrap_or("");
    let approved = has_condition(csr, "Approved");
    let undecided = !approved && !has_condition(csr, "Denied");
    (undecided && signer == CLIENT_KUBELET)
        || (approved
            && !has_condition(csr, "Failed")
            && csr.pointer("/status/certificate").is_none()
            && [CLIENT_KUBELET, SERVING, CLIENT].contains(&signer))
}

/// How often every CSR is looked at, whatever the change history says (a decision that failed to
/// store is retried then).
const FULL_SCAN_EVERY: Duration = Duration::from_secs(5);

/// The approver/signer, driven by the store's change history: a pass looks only at the CSRs changed
/// since the last one (scanning every CSR on every store change made a bring-up of a thousand nodes
/// quadratic), and at all of them after a history gap or every [`FULL_SCAN_EVERY`].
#[derive(Default)]
pub struct CsrController {
    synced: Option<u64>,
    last_full: Option<Instant>,
}

impl CsrController {
    pub fn pass(&mut self, inner: &Inner) {
        let store = &inner.store;
        let Some(def) = store.find_def("certificates.k8s.io", "v1", "certificatesigningrequests")
        else {
            return;
        };
        let full_due = self
            .last_full
            .is_none_or(|t| t.elapsed() >= FULL_SCAN_EVERY);
        let changes = self
            .synced
            .filter(|_| !full_due)
            .and_then(|rv| store.events_since(rv));
        let csrs: Vec<Value> = match changes {
            Some((events, rv)) => {
                self.synced = Some(rv);
                let key = def.key();
                let mut names: Vec<String> = events
                    .iter()
                    .filter(|e| e.resource == key && e.etype != EventType::Deleted)
                    .filter(|e| needs_work(&e.object))
                    .map(|e| meta::name(&e.object).to_string())
                    .collect();
                names.dedup();
                names
                    .iter()
                    .filter_map(|n| store.get(&def, "", n).ok())
                    .filter(needs_work)
                    .collect()
            }
            None => {
                self.synced = Some(store.list(&def, None).1);
                self.last_full = Some(Instant::now());
                store.list_where(&def, None, needs_work)
            }
        };
        decide(inner, &def, csrs);
    }
}

fn decide(inner: &Inner, def: &crate::resources::ResourceDef, csrs: Vec<Value>) {
    let store = &inner.store;
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
            match sign(&inner.ca, &pem, &signer, lifetime) {
                Ok(cert) => Some(
                    json!({"certificate": base64::engine::general_purpose::STANDARD.encode(cert)}),
                ),
                Err(msg) => Some(condition("Failed", "SignerValidationFailure", &msg)),
            }
        } else {
            None
        };
        let Some(update) = update else { continue };
        let res = store.mutate(def, "", &name, |old| {
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
