//! Approver of the virtual nodes' serving CSRs (signer `kubernetes.io/kubelet-serving`), as
//! kube-controller-manager never approves those. One shared watch on that signer's CSRs; each pending one
//! is reviewed by a pure function:
//! - not a node identity, or a node this operator does not run: left alone (another approver's business);
//! - requester == CN == `system:node:<name>` in group `system:nodes`, O == `system:nodes`, SANs exactly the
//!   node's advertised addresses (its IP and, optionally, its hostname), server-auth usages only, a bounded
//!   lifetime: approved;
//! - a CSR that claims one of our nodes but does not match it: denied, with the mismatch as the message.
//!
//! Disabled with `--approve-serving-csrs=false`, leaving the CSRs to an external approver.

use std::net::IpAddr;
use std::time::Duration;

use fleetlet_crds::consts::reason;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use rcgen::{CertificateSigningRequestParams, DnType, DnValue, SanType};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vk_runtime::certs::pem::{CertKind, NODES_GROUP};
use vk_runtime::fleet::Fleet;

/// Longest lifetime approved when a CSR asks for one (`spec.expirationSeconds`).
pub const MAX_EXPIRATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// What to do with a CSR.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Deny(String),
    Ignore,
}

/// Review one CSR. `addresses(node)` gives the IP a node this operator runs advertises.
pub fn review(
    csr: &CertificateSigningRequest,
    addresses: impl Fn(&str) -> Option<IpAddr>,
) -> Verdict {
    let spec = &csr.spec;
    if spec.signer_name != CertKind::Serving.signer() || decided(csr) {
        return Verdict::Ignore;
    }
    let username = spec.username.as_deref().unwrap_or_default();
    let Some(node) = username.strip_prefix("system:node:") else {
        return Verdict::Ignore;
    };
    let Some(ip) = addresses(node) else {
        return Verdict::Ignore;
    };
    match check(csr, username, node, ip) {
        Ok(()) => Verdict::Approve,
        Err(why) => Verdict::Deny(why),
    }
}

fn check(
    csr: &CertificateSigningRequest,
    username: &str,
    node: &str,
    ip: IpAddr,
) -> Result<(), String> {
    let spec = &csr.spec;
    if !spec.groups.iter().flatten().any(|g| g == NODES_GROUP) {
        return Err(format!(
            "requester {username} is not in group {NODES_GROUP}"
        ));
    }
    let pem = String::from_utf8_lossy(&spec.request.0);
    let req = CertificateSigningRequestParams::from_pem(&pem)
        .map_err(|e| format!("the request cannot be parsed: {e}"))?;
    let dn = &req.params.distinguished_name;
    let cn = dn_text(dn.get(&DnType::CommonName));
    if cn.as_deref() != Some(username) {
        return Err(format!("subject CN {cn:?} is not the requester {username}"));
    }
    let org = dn_text(dn.get(&DnType::OrganizationName));
    if org.as_deref() != Some(NODES_GROUP) {
        return Err(format!("subject O {org:?} is not {NODES_GROUP}"));
    }
    let mut ips = vec![];
    for san in &req.params.subject_alt_names {
        match san {
            SanType::IpAddress(a) => ips.push(*a),
            SanType::DnsName(d) if d.as_str() == node => {}
            other => {
                return Err(format!(
                    "subjectAltName {other:?} is not an address of node {node}"
                ));
            }
        }
    }
    if ips != [ip] {
        return Err(format!(
            "IP subjectAltNames {ips:?} are not the node's address [{ip}]"
        ));
    }
    let allowed = CertKind::Serving.usages();
    let usages = spec.usages.clone().unwrap_or_default();
    if !usages.iter().any(|u| u == "server auth")
        || usages.iter().any(|u| !allowed.contains(&u.as_str()))
    {
        return Err(format!(
            "usages {usages:?} are not a subset of {allowed:?} with server auth"
        ));
    }
    if let Some(secs) = spec.expiration_seconds
        && u64::try_from(secs).map_or(true, |s| Duration::from_secs(s) > MAX_EXPIRATION)
    {
        return Err(format!(
            "requested lifetime {secs}s exceeds {}s",
            MAX_EXPIRATION.as_secs()
        ));
    }
    Ok(())
}

fn dn_text(v: Option<&DnValue>) -> Option<String> {
    match v? {
        DnValue::Utf8String(s) => Some(s.clone()),
        DnValue::PrintableString(s) => Some(s.as_str().to_string()),
        DnValue::Ia5String(s) => Some(s.as_str().to_string()),
        DnValue::TeletexString(s) => Some(s.as_str().to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// Whether the CSR already carries an Approved or Denied condition.
fn decided(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Approved" || c.type_ == "Denied")
        })
}

/// Watch serving CSRs and decide the pending ones, until `stop`.
pub async fn run(client: Client, fleet: Fleet, stop: CancellationToken) {
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let cfg = watcher::Config::default()
        .fields(&format!("spec.signerName={}", CertKind::Serving.signer()));
    let mut csrs = watcher(api.clone(), cfg)
        .default_backoff()
        .applied_objects()
        .boxed();
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return,
            n = csrs.next() => n,
        };
        let csr = match next {
            None => return,
            Some(Err(e)) => {
                warn!(error = %e, "watching serving CSRs failed");
                continue;
            }
            Some(Ok(csr)) => csr,
        };
        let verdict = review(&csr, |node| {
            fleet.node_config(node).and_then(|c| c.address.parse().ok())
        });
        if verdict == Verdict::Ignore {
            continue;
        }
        if let Err(e) = decide(&api, csr, &verdict).await {
            warn!(error = %e, "recording a CSR decision failed; the next watch event retries");
        }
    }
}

async fn decide(
    api: &Api<CertificateSigningRequest>,
    mut csr: CertificateSigningRequest,
    verdict: &Verdict,
) -> Result<(), kube::Error> {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let (type_, why, message) = match verdict {
        Verdict::Approve => (
            "Approved",
            reason::CSR_APPROVED,
            "serving certificate of a virtual node, addresses verified by fleetlet".to_string(),
        ),
        Verdict::Deny(m) => ("Denied", reason::CSR_DENIED, m.clone()),
        Verdict::Ignore => return Ok(()),
    };
    let now = Time(Timestamp::now());
    csr.status
        .get_or_insert_with(Default::default)
        .conditions
        .get_or_insert_with(Vec::new)
        .push(CertificateSigningRequestCondition {
            type_: type_.into(),
            status: "True".into(),
            reason: Some(why.into()),
            message: Some(message.clone()),
            last_update_time: Some(now.clone()),
            last_transition_time: Some(now),
        });
    api.replace_subresource("approval", &name, &PostParams::default(), &csr)
        .await?;
    match verdict {
        Verdict::Approve => info!(csr = %name, "serving CSR approved"),
        _ => warn!(csr = %name, %message, "serving CSR denied"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vk_runtime::certs::pem::{Wanted, request};

    fn csr(
        username: &str,
        wanted: &Wanted,
        usages: &[&str],
        expiration: Option<i64>,
    ) -> CertificateSigningRequest {
        let pem = request(wanted).unwrap().csr_pem;
        serde_json::from_value(json!({
            "metadata": {"name": "c"},
            "spec": {
                "request": vk_runtime::certs::csr::b64(pem.as_bytes()),
                "signerName": "kubernetes.io/kubelet-serving",
                "usages": usages, "username": username, "groups": ["system:nodes", "system:authenticated"],
                "expirationSeconds": expiration,
            }
        }))
        .unwrap()
    }

    fn ours(node: &str) -> Option<IpAddr> {
        (node == "edge-0").then(|| "10.0.0.7".parse().unwrap())
    }

    const USAGES: &[&str] = &["digital signature", "key encipherment", "server auth"];

    #[test]
    fn approves_a_matching_request_of_our_node() {
        let w = Wanted::serving(
            "edge-0",
            vec!["10.0.0.7".parse().unwrap()],
            vec!["edge-0".into()],
        );
        assert_eq!(
            review(&csr("system:node:edge-0", &w, USAGES, None), ours),
            Verdict::Approve
        );
        assert_eq!(
            review(
                &csr("system:node:edge-0", &w, &["server auth"], Some(3600)),
                ours
            ),
            Verdict::Approve
        );
    }

    #[test]
    fn ignores_what_is_not_ours() {
        let w = Wanted::serving("edge-9", vec!["10.0.0.7".parse().unwrap()], vec![]);
        assert_eq!(
            review(&csr("system:node:edge-9", &w, USAGES, None), ours),
            Verdict::Ignore
        );
        assert_eq!(
            review(&csr("alice", &w, USAGES, None), ours),
            Verdict::Ignore
        );
        let mut c = csr("system:node:edge-0", &w, USAGES, None);
        c.spec.signer_name = "kubernetes.io/kube-apiserver-client-kubelet".into();
        assert_eq!(review(&c, ours), Verdict::Ignore);
    }

    #[test]
    fn denies_mismatches() {
        let ip = || vec!["10.0.0.7".parse().unwrap()];
        let cases = [
            // another node's CN requested by edge-0
            csr(
                "system:node:edge-0",
                &Wanted::serving("edge-1", ip(), vec![]),
                USAGES,
                None,
            ),
            // wrong address
            csr(
                "system:node:edge-0",
                &Wanted::serving("edge-0", vec!["10.0.0.8".parse().unwrap()], vec![]),
                USAGES,
                None,
            ),
            // foreign DNS name
            csr(
                "system:node:edge-0",
                &Wanted::serving("edge-0", ip(), vec!["evil.example".into()]),
                USAGES,
                None,
            ),
            // client usage
            csr(
                "system:node:edge-0",
                &Wanted::serving("edge-0", ip(), vec![]),
                &["client auth"],
                None,
            ),
            // unbounded lifetime
            csr(
                "system:node:edge-0",
                &Wanted::serving("edge-0", ip(), vec![]),
                USAGES,
                Some(10 * 366 * 24 * 3600),
            ),
        ];
        for c in cases {
            assert!(
                matches!(review(&c, ours), Verdict::Deny(_)),
                "{:?}",
                c.spec.usages
            );
        }
        let mut c = csr(
            "system:node:edge-0",
            &Wanted::serving("edge-0", ip(), vec![]),
            USAGES,
            None,
        );
        c.spec.groups = Some(vec!["system:authenticated".into()]);
        assert!(matches!(review(&c, ours), Verdict::Deny(m) if m.contains("system:nodes")));
    }

    #[test]
    fn decided_requests_are_left_alone() {
        let w = Wanted::serving("edge-0", vec!["10.0.0.7".parse().unwrap()], vec![]);
        let mut c = csr("system:node:edge-0", &w, USAGES, None);
        c.status = Some(
            serde_json::from_value(json!({"conditions": [{"type": "Denied", "status": "True"}]}))
                .unwrap(),
        );
        assert_eq!(review(&c, ours), Verdict::Ignore);
    }
}
