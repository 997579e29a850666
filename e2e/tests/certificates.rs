//! Node identities and certificates from the CSR API (issue 4): issuance with the exact signers and
//! usages, writes made as `system:node:<name>`, storage in Secrets owned by the VirtualNode (reused after
//! a crash, removed with it), and a new serving certificate when the kubelet address changes. The test
//! apiserver signs with its CA, auto-approves valid kubelet client CSRs as kube-controller-manager does,
//! and (as with `--kubelet-certificate-authority`) verifies the kubelet endpoints' serving certificates
//! against that CA when it proxies `kubectl logs` and `kubectl exec`. Rotation and failures:
//! `certificate_lifecycle.rs`.

use std::time::Duration;

use fleetlet_crds::VirtualNode;
use fleetlet_e2e::certs::{
    T, certificates_ready, csr_count, logs_and_exec_work, node_with_certificates, options,
    secret_versions, stored,
};
use fleetlet_e2e::cluster::OPERATOR_NAMESPACE;
use fleetlet_e2e::observe::{port_base, renew_time};
use fleetlet_e2e::{Cluster, Operator, eventually};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::DeleteParams;
use vk_runtime::certs::pem::Issued;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_issued_used_stored_reused_after_a_crash_and_removed_with_the_node()
-> anyhow::Result<()> {
    let c = Cluster::start_with(options(Duration::from_secs(365 * 24 * 3600))).await?;
    let base = port_base();
    let args = [
        "--kubelet-port-base",
        base.as_str(),
        "--lease-renew-interval",
        "1s",
        "--node-status-report-interval",
        "2s",
    ];
    let mut op = Operator::start(&c, &args)?;
    let node = node_with_certificates(&c).await?;
    let user = format!("system:node:{node}");

    // Both Secrets: type, labels, owner (this VirtualNode, by UID), and certificates for the node.
    let vnodes: Api<VirtualNode> = Api::all(c.client.clone());
    let vnode_uid = vnodes.get(&node).await?.metadata.uid;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), OPERATOR_NAMESPACE);
    for kind in ["client", "serving"] {
        let s = secrets.get(&format!("{node}-{kind}-cert")).await?;
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
        let labels = s.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("fleetlet.dev/virtual-node"), Some(&node));
        assert_eq!(
            labels.get("fleetlet.dev/certificate").map(String::as_str),
            Some(kind)
        );
        let owner = s.metadata.owner_references.clone().unwrap_or_default();
        assert!(
            owner.iter().any(|o| o.kind == "VirtualNode"
                && o.name == node
                && Some(&o.uid) == vnode_uid.as_ref()),
            "{owner:?} (VirtualNode uid {vnode_uid:?})"
        );
        let (_, cert) = stored(&c, &node, kind).await?;
        let issued = Issued::parse(cert.as_bytes())?;
        assert_eq!(issued.common_name, user);
        assert_eq!(issued.organizations, ["system:nodes"]);
    }
    let (_, serving) = stored(&c, &node, "serving").await?;
    let serving = Issued::parse(serving.as_bytes())?;
    assert_eq!(serving.ips, ["127.0.0.1".parse::<std::net::IpAddr>()?]);
    assert_eq!(serving.dns, std::slice::from_ref(&node));

    // The serving CSR was made by the node itself; its client CSR by the operator.
    let csrs: Api<CertificateSigningRequest> = Api::all(c.client.clone());
    let mine: Vec<_> = csrs
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|r| {
            r.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.contains(&node))
        })
        .collect();
    let serving_csr = mine
        .iter()
        .find(|r| r.spec.signer_name == "kubernetes.io/kubelet-serving")
        .ok_or_else(|| anyhow::anyhow!("no serving CSR"))?;
    assert_eq!(serving_csr.spec.username.as_deref(), Some(user.as_str()));
    assert_eq!(
        serving_csr.spec.usages.as_deref(),
        Some(&["digital signature", "key encipherment", "server auth"].map(String::from)[..])
    );
    // The client CSR asks for exactly what kube-controller-manager auto-approves, and was so approved.
    let client_csr = mine
        .iter()
        .find(|r| r.spec.signer_name == "kubernetes.io/kube-apiserver-client-kubelet")
        .ok_or_else(|| anyhow::anyhow!("no client CSR"))?;
    assert_eq!(
        client_csr.spec.usages.as_deref(),
        Some(&["digital signature", "key encipherment", "client auth"].map(String::from)[..])
    );
    let approval = client_csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Approved"));
    assert_eq!(
        approval.and_then(|c| c.reason.as_deref()),
        Some("AutoApproved"),
        "{approval:?}"
    );

    // Node-scoped writes arrive as the node, and succeed.
    logs_and_exec_work(&c, &node).await?;
    if let Some(api) = &c.apiserver {
        let by_node = |resource: &str, subresource: &str, verb: &str| {
            api.requests().iter().any(|r| {
                (r.resource.as_str(), r.subresource.as_str(), r.verb.as_str())
                    == (resource, subresource, verb)
                    && r.user == user
                    && (200..300).contains(&r.code)
            })
        };
        for (resource, subresource, verb, what) in [
            ("leases", "", "update", "a Lease renewal (PUT)"),
            ("nodes", "status", "patch", "a Node status report"),
            ("events", "", "create", "an Event about its pod"),
        ] {
            eventually(T, &format!("{what} as the node"), || async {
                by_node(resource, subresource, verb).then_some(())
            })
            .await?;
        }
        assert!(by_node("nodes", "", "create"), "registration as {user}");
        assert!(by_node("pods", "status", "patch"), "pod status as {user}");
        // Which certificate Secrets exist was listed once, not asked with a GET per node and kind.
        let missed: Vec<_> = api
            .requests()
            .into_iter()
            .filter(|r| r.resource == "secrets" && r.verb == "get" && r.code == 404)
            .map(|r| r.name)
            .collect();
        assert!(missed.is_empty(), "GETs of absent Secrets: {missed:?}");
    }

    // Crash and restart: the stored certificates are reused, no CSR is created.
    let before = csr_count(&c, &node).await?;
    let versions = secret_versions(&secrets, &node).await?;
    op.kill();
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let last = renew_time(&leases, &node).await;
    let _op = Operator::start(&c, &args)?;
    eventually(T, "lease renewed by the restarted operator", || async {
        renew_time(&leases, &node)
            .await
            .filter(|t| Some(*t) != last)
    })
    .await?;
    logs_and_exec_work(&c, &node).await?;
    assert_eq!(
        csr_count(&c, &node).await?,
        before,
        "no new CSR after a restart"
    );
    let after = secret_versions(&secrets, &node).await?;
    assert_eq!(versions, after, "certificate Secrets untouched");

    // Deleting the VirtualNode removes its certificate Secrets (garbage collection of owned objects).
    vnodes.delete(&node, &DeleteParams::default()).await?;
    eventually(T, "both certificate Secrets deleted", || async {
        let mut gone = true;
        for kind in ["client", "serving"] {
            gone &= secrets
                .get_opt(&format!("{node}-{kind}-cert"))
                .await
                .ok()?
                .is_none();
        }
        gone.then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_kubelet_address_gets_a_new_serving_certificate() -> anyhow::Result<()> {
    let c = Cluster::start_with(options(Duration::from_secs(365 * 24 * 3600))).await?;
    let base = port_base();
    let mut op = Operator::start(&c, &["--kubelet-port-base", &base])?;
    let node = node_with_certificates(&c).await?;
    let (_, old) = stored(&c, &node, "serving").await?;
    anyhow::ensure!(op.terminate().await?, "clean shutdown");
    let _op = Operator::start(
        &c,
        &[
            "--kubelet-port-base",
            &base,
            "--kubelet-address",
            "127.0.0.2",
        ],
    )?;
    let renewed = eventually(T, "serving certificate for 127.0.0.2", || async {
        let (_, cert) = stored(&c, &node, "serving").await.ok()?;
        let issued = Issued::parse(cert.as_bytes()).ok()?;
        (cert != old && issued.ips == ["127.0.0.2".parse::<std::net::IpAddr>().ok()?])
            .then_some(issued)
    })
    .await?;
    assert_eq!(renewed.common_name, format!("system:node:{node}"));
    certificates_ready(&c, &node).await?;
    logs_and_exec_work(&c, &node).await?;
    Ok(())
}
