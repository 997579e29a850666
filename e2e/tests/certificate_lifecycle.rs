//! Certificates over their lifetime (issue 4): rotation before expiry without flapping or dropping an
//! open stream, and a never-approved and a denied serving CSR surfaced and retried. Issuance and
//! storage: `certificates.rs`.

use std::time::Duration;

use fleetlet_crds::VirtualNode;
use fleetlet_e2e::certs::{
    T, certificates_ready, logs_and_exec_work, node_with_certificates, options, running_pod, stored,
};
use fleetlet_e2e::cluster::unique;
use fleetlet_e2e::follow::{Follow, ticker};
use fleetlet_e2e::observe::{node_condition, renew_time, vnode_condition};
use fleetlet_e2e::{Cluster, Operator, eventually};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::PostParams;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_before_expiry_without_flapping() -> anyhow::Result<()> {
    // 30 s certificates: renewed 21-27 s after issuance.
    let c = Cluster::start_with(options(Duration::from_secs(30))).await?;
    let _op = Operator::start(&c, &["--lease-renew-interval", "1s"])?;
    let node = node_with_certificates(&c).await?;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let ready_since = |n: &Node| node_condition(n, "Ready");
    let first_ready = eventually(T, "Node Ready", || async {
        nodes
            .get(&node)
            .await
            .ok()
            .and_then(|n| ready_since(&n))
            .filter(|(s, _)| s == "True")
    })
    .await?;
    // A log stream opened before the rotation, through the verifying proxy.
    let script = ticker(300);
    let ticking = running_pod(&c, &node, "tick", &["sh", "-c", &script]).await?;
    eventually(T, "the first tick in the logs", || async {
        c.kubectl(&["logs", &ticking])
            .await
            .ok()
            .filter(|o| o.contains("tick"))
    })
    .await?;
    let mut follow = Follow::start(&c, &ticking)?;
    follow.tick_after(None, T).await?;
    let (client_key, client_cert) = stored(&c, &node, "client").await?;
    let (serving_key, serving_cert) = stored(&c, &node, "serving").await?;
    let rotated = eventually(
        Duration::from_secs(60),
        "both certificates rotated",
        || async {
            let (ck, cc) = stored(&c, &node, "client").await.ok()?;
            let (sk, sc) = stored(&c, &node, "serving").await.ok()?;
            (cc != client_cert && sc != serving_cert).then_some((ck, sk))
        },
    )
    .await?;
    assert!(
        rotated.0 != client_key && rotated.1 != serving_key,
        "a new key with each certificate"
    );
    // The kubelet endpoint serves the new certificate without dropping the stream opened before it.
    let at_rotation = follow.last_tick();
    follow
        .tick_after(at_rotation, Duration::from_secs(10))
        .await?;
    assert!(follow.streaming()?, "kubectl logs -f still streaming");
    // Writes keep working with the new client certificate, the new serving certificate verifies.
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let last = renew_time(&leases, &node).await;
    eventually(T, "lease renewed after rotation", || async {
        renew_time(&leases, &node)
            .await
            .filter(|t| Some(*t) != last)
    })
    .await?;
    logs_and_exec_work(&c, &node).await?;
    let now_ready = nodes.get(&node).await.ok().and_then(|n| ready_since(&n));
    assert_eq!(
        now_ready,
        Some(first_ready),
        "Ready never transitioned during rotation"
    );
    // Well after the swap, with new connections made meanwhile (lease, logs, exec), it still runs.
    follow
        .tick_after(follow.last_tick(), Duration::from_secs(10))
        .await?;
    assert!(follow.streaming()?, "kubectl logs -f still streaming");
    Ok(())
}

/// What an external approver (or `kubectl certificate approve|deny`) does: add the condition through the
/// `approval` subresource.
async fn decide(
    csrs: &Api<CertificateSigningRequest>,
    name: &str,
    type_: &str,
) -> anyhow::Result<()> {
    let mut csr = csrs.get(name).await?;
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    csr.status
        .get_or_insert_with(Default::default)
        .conditions
        .get_or_insert_with(Vec::new)
        .push(
            k8s_openapi::api::certificates::v1::CertificateSigningRequestCondition {
                type_: type_.into(),
                status: "True".into(),
                reason: Some("E2eApprover".into()),
                message: Some(format!("{type_} by the e2e external approver")),
                last_update_time: Some(now.clone()),
                last_transition_time: Some(now),
            },
        );
    csrs.replace_subresource("approval", name, &PostParams::default(), &csr)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_approved_and_denied_serving_csrs_are_reported_and_retried() -> anyhow::Result<()> {
    let c = Cluster::start_with(options(Duration::from_secs(365 * 24 * 3600))).await?;
    let _op = Operator::start(
        &c,
        &[
            "--approve-serving-csrs=false",
            "--csr-approval-timeout",
            "5s",
        ],
    )?;
    let (backend, node) = (unique("sim"), unique("deny"));
    c.apply_mock_node(&backend, &node).await?;
    let csrs: Api<CertificateSigningRequest> = Api::all(c.client.clone());
    // An undecided serving CSR of the node, other than those in `seen`.
    let pending = |seen: Vec<String>| {
        let (csrs, node) = (&csrs, &node);
        async move {
            csrs.list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|r| {
                    r.spec.signer_name == "kubernetes.io/kubelet-serving"
                        && r.spec.username.as_deref() == Some(&format!("system:node:{node}"))
                        && r.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_none_or(|c| c.is_empty())
                })
                .filter_map(|r| r.metadata.name)
                .find(|n| !seen.contains(n))
        }
    };
    let vnodes: Api<VirtualNode> = Api::all(c.client.clone());
    // Nobody approves the first one: reported when the approval timeout passes, then retried.
    let unanswered = eventually(T, "a pending serving CSR", || pending(vec![])).await?;
    let vn = eventually(
        T,
        "CertificatesReady=False CertificateNotApproved",
        || async {
            vnodes.get(&node).await.ok().filter(|v| {
                vnode_condition(v, "CertificatesReady")
                    .is_some_and(|c| c.0 == "False" && c.1 == "CertificateNotApproved")
            })
        },
    )
    .await?;
    assert!(vnode_condition(&vn, "Ready").is_some_and(|c| c.0 == "True"));
    let events = eventually(T, "a CertificateNotApproved Event", || async {
        c.events_about(&node)
            .await
            .ok()
            .filter(|o| o.contains("CertificateNotApproved"))
    })
    .await?;
    assert!(
        events.contains(&unanswered),
        "the Event names the CSR: {events}"
    );
    // The retry is denied (within the approval timeout).
    let first = eventually(T, "a retried serving CSR", || {
        pending(vec![unanswered.clone()])
    })
    .await?;
    decide(&csrs, &first, "Denied").await?;
    let vn = eventually(T, "CertificatesReady=False CertificateDenied", || async {
        vnodes.get(&node).await.ok().filter(|v| {
            vnode_condition(v, "CertificatesReady")
                .is_some_and(|c| c.0 == "False" && c.1 == "CertificateDenied")
        })
    })
    .await?;
    // The client certificate is fine: the node runs (serving on its self-signed certificate meanwhile).
    assert!(vnode_condition(&vn, "Ready").is_some_and(|c| c.0 == "True"));
    let events = eventually(T, "a CertificateDenied Event", || async {
        c.events_about(&node)
            .await
            .ok()
            .filter(|o| o.contains("CertificateDenied"))
    })
    .await?;
    assert!(events.contains(&first), "the Event names the CSR: {events}");
    // Retried with backoff; an (external) approver approves the retry.
    let second = eventually(T, "a retried serving CSR", || {
        pending(vec![unanswered.clone(), first.clone()])
    })
    .await?;
    decide(&csrs, &second, "Approved").await?;
    certificates_ready(&c, &node).await?;
    logs_and_exec_work(&c, &node).await?;
    Ok(())
}
