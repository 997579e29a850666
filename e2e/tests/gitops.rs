//! GitOps friendliness (issue 6): once the fleet is Ready, applying the same manifests again, with
//! kubectl's client-side apply or with server-side apply, changes nothing: no new generation, no
//! resourceVersion bump by a no-op apply, and no write by the operator (status never fights spec). The
//! operator's status is recorded under its one field manager as a server-side apply of the status
//! subresource. Runs against the test apiserver, or a real cluster with FLEETLET_E2E_KUBECONFIG (there
//! without the request-record checks).

use std::collections::BTreeSet;
use std::time::Duration;

use fleetlet_crds::consts::FIELD_MANAGER;
use fleetlet_crds::{DeviceBackend, VirtualNode};
use fleetlet_e2e::cluster::{OPERATOR_NAMESPACE, unique};
use fleetlet_e2e::fixtures::{mock_backend, virtual_node};
use fleetlet_e2e::observe::{node_ready, port_base, vnode_condition};
use fleetlet_e2e::{Cluster, Operator, consistently, eventually};
use fleetlet_test_apiserver::RequestRecord;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;

const T: Duration = Duration::from_secs(30);
/// How long the operator must stay silent about the objects after a re-apply.
const QUIET: Duration = Duration::from_secs(3);
const KINDS: [&str; 2] = ["virtualnodes", "devicebackends"];

/// Writes to the VirtualNode or DeviceBackend named in `names` among `records`.
fn writes<'a>(records: &'a [RequestRecord], names: &[&str]) -> Vec<&'a RequestRecord> {
    records
        .iter()
        .filter(|r| KINDS.contains(&r.resource.as_str()) && names.contains(&r.name.as_str()))
        .filter(|r| matches!(r.verb.as_str(), "create" | "update" | "patch" | "delete"))
        .collect()
}

/// (resourceVersion, generation) of both objects.
async fn versions(
    vnodes: &Api<VirtualNode>,
    backends: &Api<DeviceBackend>,
    node: &str,
    backend: &str,
) -> anyhow::Result<[(Option<String>, Option<i64>); 2]> {
    let at = |m: &ObjectMeta| (m.resource_version.clone(), m.generation);
    Ok([
        at(&vnodes.get(node).await?.metadata),
        at(&backends.get(backend).await?.metadata),
    ])
}

/// The operator's managedFields entry for status: an Apply of the status subresource owning status.
fn applies_status(meta: &ObjectMeta) -> bool {
    meta.managed_fields.iter().flatten().any(|e| {
        e.manager.as_deref() == Some(FIELD_MANAGER)
            && e.operation.as_deref() == Some("Apply")
            && e.subresource.as_deref() == Some("status")
            && e.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.get("f:status").is_some() && f.0.get("f:spec").is_none())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reapplying_the_manifests_changes_nothing() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let (backend, node) = (unique("sim"), unique("edge"));
    let base = port_base();
    let _op = Operator::start(&c, &["--kubelet-port-base", &base])?;
    let manifests = format!(
        "{}---\n{}",
        mock_backend(&backend),
        virtual_node(&node, &backend)
    );
    c.apply(&manifests).await.map_err(anyhow::Error::msg)?;

    let nodes: Api<Node> = Api::all(c.client.clone());
    let vnodes: Api<VirtualNode> = Api::all(c.client.clone());
    let backends: Api<DeviceBackend> = Api::all(c.client.clone());
    eventually(T, "Node Ready", || async {
        nodes.get_opt(&node).await.ok().flatten().filter(node_ready)
    })
    .await?;
    eventually(
        T,
        "VirtualNode Ready and DeviceBackend counting it",
        || async {
            let vn = vnodes.get(&node).await.ok()?;
            let b = backends.get(&backend).await.ok()?;
            let ready = ["Ready", "CertificatesReady"]
                .iter()
                .all(|t| vnode_condition(&vn, t).is_some_and(|c| c.0 == "True"));
            let counted = b.status.as_ref().and_then(|s| s.virtual_nodes) == Some(1);
            (ready && counted).then_some(())
        },
    )
    .await?;
    let names = [node.as_str(), backend.as_str()];
    if let Some(api) = &c.apiserver {
        // Settled: the operator's last write about the objects is a moment old.
        eventually(T, "the operator settled", || async {
            let recs = api.requests();
            let last = writes(&recs, &names).last().map(|r| r.at);
            last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
                .then_some(())
        })
        .await?;
    }
    for (meta, what) in [
        (vnodes.get(&node).await?.metadata, "VirtualNode"),
        (backends.get(&backend).await?.metadata, "DeviceBackend"),
    ] {
        assert!(
            applies_status(&meta),
            "{what} status is applied by {FIELD_MANAGER}: {:?}",
            meta.managed_fields
        );
    }
    // Every write of the operator names its one field manager: its own writes, the ones kube-rs makes
    // for it (the finalizer) and the nodes' writes with their own identities. Only kubectl's
    // client-side apply shares the VirtualNode and DeviceBackend, and on a real cluster
    // kube-controller-manager annotates the Node.
    let node_obj = nodes.get(&node).await?;
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let lease = leases.get(&node).await?;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), OPERATOR_NAMESPACE);
    let mut objects = vec![
        (
            "VirtualNode",
            vnodes.get(&node).await?.metadata,
            "kubectl-client-side-apply",
        ),
        (
            "DeviceBackend",
            backends.get(&backend).await?.metadata,
            "kubectl-client-side-apply",
        ),
        ("Node", node_obj.metadata, "kube-controller-manager"),
        ("Lease", lease.metadata, FIELD_MANAGER),
    ];
    for kind in ["client", "serving"] {
        let secret = secrets.get(&format!("{node}-{kind}-cert")).await?;
        objects.push(("Secret", secret.metadata, FIELD_MANAGER));
    }
    for (what, meta, user) in objects {
        let managers: BTreeSet<String> = meta
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|e| e.manager.clone())
            .collect();
        assert!(
            managers.contains(FIELD_MANAGER)
                && managers.iter().all(|m| m == FIELD_MANAGER || m == user),
            "{what} managers: {managers:?}"
        );
    }
    let seen = c.apiserver.as_ref().map_or(0, |a| a.requests().len());
    let before = versions(&vnodes, &backends, &node, &backend).await?;

    // Client-side apply of the same manifests: kubectl finds nothing to patch.
    let out = c.apply(&manifests).await.map_err(anyhow::Error::msg)?;
    assert_eq!(out.matches("unchanged").count(), 2, "{out}");
    assert_eq!(versions(&vnodes, &backends, &node, &backend).await?, before);

    // Server-side apply: the first records kubectl's new managedFields entry (same values, new
    // manager); the second is a no-op. Never a new generation.
    let ssa = ["apply", "--server-side", "-f", "-"];
    let mut after_first = None;
    for round in 0..2 {
        let out = c
            .kubectl_with("kubectl", &ssa, Some(&manifests), &[])
            .await?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let now = versions(&vnodes, &backends, &node, &backend).await?;
        for (n, b) in now.iter().zip(&before) {
            assert_eq!(n.1, b.1, "generation after server-side apply {round}");
        }
        match &after_first {
            None => {
                // Stored: kubectl's new managedFields entry (the operator sees a change, and
                // must not answer it with a write).
                for (n, b) in now.iter().zip(&before) {
                    assert_ne!(n.0, b.0, "the first server-side apply records its manager");
                }
                after_first = Some(now);
            }
            Some(first) => assert_eq!(&now, first, "a repeated server-side apply changes nothing"),
        }
    }

    // The operator does not answer with writes of its own.
    if let Some(api) = &c.apiserver {
        let kubectl_done = api.requests().len();
        let recs = api.requests();
        let status_writes: Vec<_> = writes(&recs[seen..], &names)
            .into_iter()
            .filter(|r| r.subresource == "status")
            .collect();
        assert!(
            status_writes.is_empty(),
            "status written after re-apply: {status_writes:?}"
        );
        consistently(QUIET, "no operator write after re-apply", || async {
            let recs = api.requests();
            let late = writes(&recs[kubectl_done..], &names);
            (!late.is_empty()).then(|| format!("{late:?}"))
        })
        .await?;
    }
    assert_eq!(
        Some(versions(&vnodes, &backends, &node, &backend).await?),
        after_first
    );
    Ok(())
}
