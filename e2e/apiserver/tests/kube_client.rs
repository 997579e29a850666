//! The real `kube` client and kube-runtime watcher against the test apiserver, plus the built-in
//! controllers (scheduler, garbage collector, node lifecycle, CSR signer).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use fleetlet_test_apiserver::{Options, TestApiServer};
use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

async fn client(s: &TestApiServer) -> kube::Client {
    let kc = kube::config::Kubeconfig::from_yaml(&s.kubeconfig_yaml()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

fn ready_node(name: &str, labels: serde_json::Value) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}
    }))
    .unwrap()
}

#[tokio::test]
async fn crud_conflict_and_selectors() {
    let s = TestApiServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&s).await, "default");
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "a", "labels": {"app": "x"}}, "data": {"k": "v"}}),
    )
    .unwrap();
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.resource_version.is_some());
    let err = cms.create(&PostParams::default(), &cm).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{err:?}"
    );
    let mut stale = created.clone();
    stale.metadata.resource_version = Some("1".into());
    let err = cms
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );
    let listed = cms
        .list(&ListParams::default().labels("app in (x,y)"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(
        cms.list(&ListParams::default().labels("app!=x"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let ns_err = Api::<ConfigMap>::namespaced(client(&s).await, "missing")
        .create(&PostParams::default(), &cm)
        .await
        .unwrap_err();
    assert!(
        matches!(ns_err, kube::Error::Api(ref s) if s.code == 404),
        "{ns_err:?}"
    );
    let applied = cms
        .patch("b", &PatchParams::apply("fleetlet").force(), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}, "data": {"x": "1"}})))
        .await
        .unwrap();
    assert_eq!(
        applied.metadata.managed_fields.unwrap()[0]
            .manager
            .as_deref(),
        Some("fleetlet")
    );
    let recs = s.requests();
    assert!(recs.iter().any(|r| r.verb == "patch"
        && r.resource == "configmaps"
        && r.name == "b"
        && r.code == 201
        && r.user == "admin"));
}

#[tokio::test]
async fn watcher_survives_control_plane_outage() {
    let s = TestApiServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&s).await, "default");
    let mut stream = watcher(cms.clone(), watcher::Config::default().labels("w=1")).boxed();
    let mk = |n: &str| {
        serde_json::from_value::<ConfigMap>(json!({"metadata": {"name": n, "labels": {"w": "1"}}}))
            .unwrap()
    };
    cms.create(&PostParams::default(), &mk("one"))
        .await
        .unwrap();
    assert!(seen(&mut stream, "one").await);
    s.set_unavailable(true);
    assert_eq!(
        common::get(&common::Api::of(&s), "/api/v1/namespaces")
            .await
            .0,
        503
    );
    s.set_unavailable(false);
    cms.create(&PostParams::default(), &mk("two"))
        .await
        .unwrap();
    assert!(seen(&mut stream, "two").await);
}

#[tokio::test]
async fn scheduler_binds_and_reports_unschedulable() {
    let s = TestApiServer::start().await;
    let c = client(&s).await;
    let nodes: Api<Node> = Api::all(c.clone());
    let pods: Api<Pod> = Api::namespaced(c, "default");
    nodes
        .create(
            &PostParams::default(),
            &ready_node("n1", json!({"zone": "a"})),
        )
        .await
        .unwrap();
    let pod = |name: &str, sel: serde_json::Value| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"nodeSelector": sel, "containers": [{"name": "c", "image": "i"}]}})).unwrap()
    };
    pods.create(&PostParams::default(), &pod("fits", json!({"zone": "a"})))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("nofit", json!({"zone": "b"})))
        .await
        .unwrap();
    let bound = common::eventually(Duration::from_secs(10), || async {
        pods.get("fits")
            .await
            .ok()
            .and_then(|p| p.spec.and_then(|s| s.node_name))
    })
    .await;
    assert_eq!(bound.as_deref(), Some("n1"));
    let reason = common::eventually(Duration::from_secs(10), || async {
        let p = pods.get("nofit").await.ok()?;
        p.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")?
            .reason
    })
    .await;
    assert_eq!(reason.as_deref(), Some("Unschedulable"));
    // Graceful deletion of the bound pod: it stays terminating until a grace-0 delete.
    let p = pods
        .delete("fits", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert!(p.metadata.deletion_timestamp.is_some());
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(30));
    let uid = p.metadata.uid.clone().unwrap();
    pods.delete(
        "fits",
        &DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(pods.get_opt("fits").await.unwrap().is_none());
}

#[tokio::test]
async fn garbage_collector_deletes_dependents() {
    let s = TestApiServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&s).await, "default");
    let owner = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let dep: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "dep", "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}]}})).unwrap();
    cms.create(&PostParams::default(), &dep).await.unwrap();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    let gone = common::eventually(Duration::from_secs(10), || async {
        cms.get_opt("dep").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(gone.is_some());
}

#[tokio::test]
async fn node_lifecycle_marks_stale_nodes_unknown() {
    let s = TestApiServer::start_with(Options {
        node_lifecycle: Some(Duration::from_millis(400)),
        scheduler: false,
        ..Default::default()
    })
    .await;
    let c = client(&s).await;
    let nodes: Api<Node> = Api::all(c.clone());
    let leases: Api<Lease> = Api::namespaced(c, "kube-node-lease");
    nodes
        .create(&PostParams::default(), &ready_node("stale", json!({})))
        .await
        .unwrap();
    leases.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "stale"}, "spec": {"holderIdentity": "stale", "renewTime": "2026-01-01T00:00:00.000000Z"}})).unwrap()).await.unwrap();
    let reason = common::eventually(Duration::from_secs(10), || async {
        let n = nodes.get("stale").await.ok()?;
        let c = n
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.status == "Unknown")?;
        c.reason
    })
    .await;
    assert_eq!(reason.as_deref(), Some("NodeStatusUnknown"));
}

/// A PEM certificate request with subject `cn`/`orgs` and DNS SANs `dns`, on a new key.
fn csr_pem(cn: &str, orgs: &[&str], dns: &[&str]) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let sans = dns.iter().map(|d| d.to_string()).collect::<Vec<_>>();
    let mut params = rcgen::CertificateParams::new(sans).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    for o in orgs {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, *o);
    }
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn kubelet_client_csr(name: &str, pem: &str, usages: &[&str]) -> CertificateSigningRequest {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"request": base64_encode(pem.as_bytes()), "signerName": "kubernetes.io/kube-apiserver-client-kubelet", "usages": usages}
    }))
    .unwrap()
}

#[tokio::test]
async fn csr_client_certificate_is_issued_by_the_test_ca() {
    let s = TestApiServer::start().await;
    let csrs: Api<CertificateSigningRequest> = Api::all(client(&s).await);
    let pem = csr_pem("system:node:n1", &["system:nodes"], &[]);
    // The non-RSA set is approved as well as the three usages fleetlet requests.
    let usages = ["digital signature", "client auth"];
    let csr = kubelet_client_csr("c1", &pem, &usages);
    csrs.create(&PostParams::default(), &csr).await.unwrap();
    let cert = common::eventually(Duration::from_secs(10), || async {
        csrs.get("c1").await.ok()?.status?.certificate
    })
    .await
    .unwrap();
    let pem = String::from_utf8(cert.0).unwrap();
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let issued = p.parse_x509().unwrap();
    let (_, ca) = x509_parser::pem::parse_x509_pem(s.ca_pem().as_bytes()).unwrap();
    assert_eq!(issued.issuer(), ca.parse_x509().unwrap().subject());
    assert!(issued.subject().to_string().contains("system:node:n1"));
}

#[tokio::test]
async fn invalid_kubelet_client_csrs_are_left_pending() {
    let s = TestApiServer::start().await;
    let csrs: Api<CertificateSigningRequest> = Api::all(client(&s).await);
    let full = ["digital signature", "key encipherment", "client auth"];
    let node = csr_pem("system:node:n1", &["system:nodes"], &[]);
    let invalid = [
        ("no-org", csr_pem("system:node:n1", &[], &[]), &full[..]),
        (
            "extra-org",
            csr_pem("system:node:n1", &["system:nodes", "system:masters"], &[]),
            &full[..],
        ),
        (
            "not-a-node",
            csr_pem("alice", &["system:nodes"], &[]),
            &full[..],
        ),
        (
            "dns-san",
            csr_pem("system:node:n1", &["system:nodes"], &["n1"]),
            &full[..],
        ),
        ("client-auth-only", node.clone(), &["client auth"][..]),
        (
            "server-auth",
            node.clone(),
            &[
                "digital signature",
                "key encipherment",
                "client auth",
                "server auth",
            ][..],
        ),
    ];
    let pp = PostParams::default();
    for (name, pem, usages) in &invalid {
        csrs.create(&pp, &kubelet_client_csr(name, pem, usages))
            .await
            .unwrap();
    }
    // A valid CSR created after them is approved and signed: the approver has looked at them all.
    csrs.create(&pp, &kubelet_client_csr("valid", &node, &full))
        .await
        .unwrap();
    common::eventually(Duration::from_secs(10), || async {
        csrs.get("valid").await.ok()?.status?.certificate
    })
    .await
    .unwrap();
    for (name, _, _) in &invalid {
        let status = csrs.get(name).await.unwrap().status.unwrap_or_default();
        // Neither approved nor denied (kube-controller-manager never denies), nor signed.
        assert_eq!(status.conditions.unwrap_or_default(), [], "{name}");
        assert!(status.certificate.is_none(), "{name}");
    }
}

/// An approved kubelet client CSR that is not valid for the signer fails as kube-controller-manager's
/// signer fails it.
#[tokio::test]
async fn an_approved_invalid_kubelet_client_csr_fails_signer_validation() {
    let s = TestApiServer::start().await;
    let csrs: Api<CertificateSigningRequest> = Api::all(client(&s).await);
    let pem = csr_pem("system:node:n1", &["system:nodes"], &["n1"]);
    let full = ["digital signature", "key encipherment", "client auth"];
    let mut csr = csrs
        .create(
            &PostParams::default(),
            &kubelet_client_csr("approved", &pem, &full),
        )
        .await
        .unwrap();
    csr.status.get_or_insert_with(Default::default).conditions = Some(vec![
        k8s_openapi::api::certificates::v1::CertificateSigningRequestCondition {
            type_: "Approved".into(),
            status: "True".into(),
            reason: Some("Manual".into()),
            ..Default::default()
        },
    ]);
    csrs.replace_subresource("approval", "approved", &PostParams::default(), &csr)
        .await
        .unwrap();
    let failed = common::eventually(Duration::from_secs(10), || async {
        csrs.get("approved")
            .await
            .ok()?
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Failed")
    })
    .await
    .unwrap();
    assert_eq!(failed.reason.as_deref(), Some("SignerValidationFailure"));
    assert_eq!(
        failed.message.as_deref(),
        Some("DNS subjectAltNames are not allowed")
    );
    assert!(
        csrs.get("approved")
            .await
            .unwrap()
            .status
            .unwrap()
            .certificate
            .is_none()
    );
}

type EventStream = futures::stream::BoxStream<'static, watcher::Result<watcher::Event<ConfigMap>>>;

/// Whether the watcher delivers an object named `name` within 30 s (errors are retried by the watcher).
async fn seen(stream: &mut EventStream, name: &str) -> bool {
    let fut = async {
        while let Some(ev) = stream.next().await {
            if let Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) = ev
                && o.metadata.name.as_deref() == Some(name)
            {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or(false)
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test]
async fn events_api_groups_share_storage() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event;
    let s = TestApiServer::start().await;
    let c = client(&s).await;
    let v1: Api<Event> = Api::namespaced(c.clone(), "default");
    let core: Api<CoreEvent> = Api::namespaced(c, "default");
    let ev: Event = serde_json::from_value(json!({
        "metadata": {"name": "edge-0.1"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "regarding": {"kind": "VirtualNode", "name": "edge-0"},
        "note": "DeviceBackend \"x\" does not exist", "reason": "BackendNotFound", "type": "Warning",
        "action": "Reconcile", "reportingController": "fleetlet", "reportingInstance": "fleetlet-0",
    }))
    .unwrap();
    v1.create(&PostParams::default(), &ev).await.unwrap();
    // What kubectl get events does: core v1 with a field selector on involvedObject.
    let listed = core
        .list(&ListParams::default().fields("involvedObject.name=edge-0"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let e = &listed.items[0];
    assert_eq!(e.message.as_deref(), ev.note.as_deref());
    assert_eq!(e.reporting_component.as_deref(), Some("fleetlet"));
    assert_eq!(e.involved_object.kind.as_deref(), Some("VirtualNode"));
    // A merge patch through events.k8s.io (as kube's Recorder does for a series) shows in both views.
    let patch = json!({"series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"}});
    v1.patch("edge-0.1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let seen = v1.get("edge-0.1").await.unwrap();
    assert_eq!(seen.series.map(|s| s.count), Some(2));
    assert_eq!(seen.note, ev.note);
    let e = core.get("edge-0.1").await.unwrap();
    assert_eq!(e.series.and_then(|s| s.count), Some(2));
    // One object, one name: a core Event of the same name already exists.
    let err = core
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "edge-0.1"}, "involvedObject": {}}),
            )
            .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err:?}"
    );
}

/// Server-side apply through the status subresource: the manager's entry names the subresource and
/// holds only status (spec is reset there, as kube-apiserver's `GetResetFields` says), it survives the
/// status strategy's copy of the stored object, and applying the same again changes nothing.
#[tokio::test]
async fn status_apply_records_the_manager_and_resets_spec() {
    let s = TestApiServer::start().await;
    let nodes: Api<Node> = Api::all(client(&s).await);
    nodes
        .create(&PostParams::default(), &ready_node("n1", json!({})))
        .await
        .unwrap();
    let applied = json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "spec": {"unschedulable": true},
        "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Down"}]}
    });
    let pp = PatchParams::apply("fleetlet").force();
    let node = nodes
        .patch_status("n1", &pp, &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(node.spec.as_ref().and_then(|s| s.unschedulable), None);
    let entry = node
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|e| e.manager.as_deref() == Some("fleetlet"))
        .cloned()
        .expect("an entry of the applying manager");
    assert_eq!(entry.operation.as_deref(), Some("Apply"));
    assert_eq!(entry.subresource.as_deref(), Some("status"));
    let fields = serde_json::to_value(entry.fields_v1.unwrap()).unwrap();
    assert!(fields.get("f:status").is_some(), "{fields}");
    assert!(fields.get("f:spec").is_none(), "{fields}");
    let again = nodes
        .patch_status("n1", &pp, &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        node.metadata.resource_version
    );
}

/// A server-side apply of the values already there: by a new manager it is stored (managedFields
/// changed, a new resourceVersion, as kube-apiserver does); repeated by the same manager it is a no-op.
#[tokio::test]
async fn apply_of_the_same_values_is_stored_only_when_ownership_changes() {
    let s = TestApiServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&s).await, "default");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "same"}, "data": {"x": "1"}});
    let apply = |manager: &'static str| {
        let cms = cms.clone();
        let cm = cm.clone();
        async move {
            cms.patch("same", &PatchParams::apply(manager), &Patch::Apply(&cm))
                .await
                .unwrap()
        }
    };
    let first = apply("a").await;
    let again = apply("a").await;
    assert_eq!(
        again.metadata.resource_version,
        first.metadata.resource_version
    );
    let other = apply("b").await;
    assert_ne!(
        other.metadata.resource_version,
        first.metadata.resource_version
    );
    let managers: Vec<_> = other
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|e| e.manager.clone())
        .collect();
    assert_eq!(managers.len(), 2, "{managers:?}");
    let other_again = apply("b").await;
    assert_eq!(
        other_again.metadata.resource_version,
        other.metadata.resource_version
    );
    let first_again = apply("a").await;
    assert_eq!(
        first_again.metadata.resource_version,
        other.metadata.resource_version
    );
}
