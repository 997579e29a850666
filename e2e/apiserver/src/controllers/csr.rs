//! CSR approver and signer, like kube-controller-manager: auto-approves valid
//! `kubernetes.io/kube-apiserver-client-kubelet` CSRs whose requester is authorized for it
//! (Approved/AutoApproved) and leaves the others pending (it never denies), signs approved CSRs of the kubelet signers with the cluster CA
//! (`crate::pki`, status.certificate), and refuses approved kubelet CSRs that are not valid for their
//! signer (Failed/SignerValidationFailure). The rules are in [`super::kubelet_csr`].

use std::error::Error as _;
use std::time::{Duration, Instant};

use base64::Engine;
use rcgen::ExtendedKeyUsagePurpose;
use serde_json::{Value, json};

use super::kubelet_csr;
use crate::authz::{self, Attributes};
use crate::http::reviews::set_condition;
use crate::meta;
use crate::pki::{Ca, CertError};
use crate::server::{Inner, UserInfo};
use crate::store::EventType;

const CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const SERVING: &str = "kubernetes.io/kubelet-serving";
const CLIENT: &str = "kubernetes.io/kube-apiserver-client";

/// Signs a PEM CSR for `signer` with the cluster CA, valid from now for `lifetime`; `Err` carries
/// the signer's refusal message (a kubelet CSR not valid for its signer, an unparsable one).
pub fn sign(
    ca: &Ca,
    csr_pem: &str,
    signer: &str,
    usages: &[&str],
    lifetime: std::time::Duration,
) -> Result<String, String> {
    let unparsable = |e: CertError| {
        format!(
            "{e}: {}",
            e.source().map(ToString::to_string).unwrap_or_default()
        )
    };
    validate(signer, csr_pem.as_bytes(), usages)?;
    let eku = if signer == SERVING {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    };
    ca.sign_csr(csr_pem, eku, lifetime).map_err(unparsable)
}

/// Whether the request is valid for a kubelet signer (other signers: not checked here).
fn validate(signer: &str, pem: &[u8], usages: &[&str]) -> Result<(), String> {
    match signer {
        CLIENT_KUBELET => kubelet_csr::validate_client(&kubelet_csr::parse(pem)?, usages),
        SERVING => kubelet_csr::validate_serving(&kubelet_csr::parse(pem)?, usages),
        _ => Ok(()),
    }
}

/// The decoded PEM of `spec.request` (empty when it is not base64 of UTF-8).
fn request_pem(csr: &Value) -> String {
    let request = meta::str_at(csr, &["spec", "request"]).unwrap_or("");
    base64::engine::general_purpose::STANDARD
        .decode(request)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default()
}

fn usages(csr: &Value) -> Vec<&str> {
    csr.pointer("/spec/usages")
        .and_then(Value::as_array)
        .map(|us| us.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
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

/// kube-controller-manager's csrapproving controller on an undecided kubelet client CSR: the Approved
/// condition when it is a valid node client request whose requester may create
/// `certificatesigningrequests/selfnodeclient` (a node asking for itself) or `/nodeclient`, as this
/// server's authorizer decides (no RBAC: every non-node user may; node identities have no such rule,
/// like a cluster without kubeadm's selfnodeclient binding). Otherwise `None`: left pending for
/// another approver, never denied.
fn auto_approval(inner: &Inner, csr: &Value) -> Option<Value> {
    let name = meta::name(csr);
    let valid = kubelet_csr::parse(request_pem(csr).as_bytes())
        .and_then(|c| kubelet_csr::validate_client(&c, &usages(csr)).map(|()| c));
    let contents = match valid {
        Ok(c) => c,
        Err(why) => {
            tracing::debug!(csr = %name, %why, "not a kubelet client CSR: left pending");
            return None;
        }
    };
    let requester = UserInfo {
        username: meta::str_at(csr, &["spec", "username"])
            .unwrap_or("")
            .to_string(),
        uid: meta::str_at(csr, &["spec", "uid"])
            .unwrap_or("")
            .to_string(),
        groups: csr
            .pointer("/spec/groups")
            .and_then(Value::as_array)
            .map(|gs| {
                gs.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    };
    let may = |subresource: &str| {
        let attrs = Attributes {
            verb: "create".into(),
            group: "certificates.k8s.io".into(),
            resource: "certificatesigningrequests".into(),
            subresource: subresource.into(),
            ..Attributes::default()
        };
        authz::authorize(&inner.store, &requester, &attrs).is_ok()
    };
    let message = if requester.username == contents.common_name && may("selfnodeclient") {
        "Auto approving self kubelet client certificate after SubjectAccessReview."
    } else if may("nodeclient") {
        "Auto approving kubelet client certificate after SubjectAccessReview."
    } else {
        tracing::debug!(csr = %name, user = %requester.username, "kubelet client CSR: requester may not have it approved");
        return None;
    };
    Some(condition("Approved", "AutoApproved", message))
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
            auto_approval(inner, &csr)
        } else if has_condition(&csr, "Approved")
            && !has_condition(&csr, "Failed")
            && csr.pointer("/status/certificate").is_none()
            && [CLIENT_KUBELET, SERVING, CLIENT].contains(&signer.as_str())
        {
            let pem = request_pem(&csr);
            // As kube-controller-manager: the requested expirationSeconds, capped at the signing duration.
            let lifetime = csr
                .pointer("/spec/expirationSeconds")
                .and_then(Value::as_u64)
                .map(std::time::Duration::from_secs)
                .map_or(inner.signing_duration, |d| d.min(inner.signing_duration));
            match sign(&inner.ca, &pem, &signer, &usages(&csr), lifetime) {
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
