//! Node identities over HTTPS with the real `kube` client and `kubectl`: a certificate issued
//! through the CSR API authenticates as `system:node:<name>` (and is recorded so), may write its own
//! Node, Node status, Lease and the status of pods bound to it, and is refused (403, in
//! kube-apiserver's words) on another node's objects and on labels NodeRestriction forbids; an
//! untrusted client certificate gets 401.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use fleetlet_test_apiserver::TestApiServer;
use fleetlet_test_apiserver::kubelet::{ClientCa, Identity};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

async fn client_from(kubeconfig: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

/// A valid kubelet client CSR `name` for `node`, and its new key.
fn client_csr(name: &str, node: &str) -> (CertificateSigningRequest, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    let request = params.serialize_request(&key).unwrap().pem().unwrap();
    let csr = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"request": base64(request.as_bytes()),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "key encipherment", "client auth"]}
    }))
    .unwrap();
    (csr, key)
}

/// A node's client certificate as a kubelet gets it: new key, CSR for the kubelet client signer,
/// auto-approved and signed by the test apiserver.
async fn node_identity(admin: &kube::Client, node: &str) -> Identity {
    let (csr, key) = client_csr(&format!("csr-{node}"), node);
    let csrs: Api<CertificateSigningRequest> = Api::all(admin.clone());
    csrs.create(&PostParams::default(), &csr).await.unwrap();
    let cert = common::eventually(Duration::from_secs(10), || async {
        csrs.get(&format!("csr-{node}"))
            .await
            .ok()?
            .status?
            .certificate
    })
    .await
    .expect("the CSR is signed");
    Identity {
        cert_pem: String::from_utf8(cert.0).unwrap(),
        key_pem: key.serialize_pem(),
    }
}

fn base64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn node(name: &str, labels: Value) -> Node {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
        "spec": {"taints": [{"key": "fleetlet.dev/virtual-node", "value": "true", "effect": "NoSchedule"}]}}))
    .unwrap()
}

fn lease(name: &str) -> Lease {
    serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40}}),
    )
    .unwrap()
}

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox"}]}}))
    .unwrap()
}

/// The 403 message of a refused request.
fn forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> String {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => s.message.clone(),
        other => panic!("expected 403, got {other:?}"),
    }
}

fn status_patch() -> Patch<Value> {
    Patch::Merge(json!({"status": {"phase": "Running"}}))
}

#[tokio::test]
async fn csr_issued_node_identity_is_authenticated_and_confined() {
    let s = TestApiServer::start().await;
    let admin = client_from(&s.kubeconfig_yaml()).await;
    let id = node_identity(&admin, "edge-0").await;
    let me = client_from(&s.kubeconfig_for_identity(&id)).await;
    let pp = PostParams::default();

    // Own objects: allowed, and recorded as the node.
    let nodes: Api<Node> = Api::all(me.clone());
    let labels = json!({"kubernetes.io/hostname": "edge-0", "fleetlet.dev/virtual-node": "true"});
    nodes.create(&pp, &node("edge-0", labels)).await.unwrap();
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}});
    nodes
        .patch_status("edge-0", &PatchParams::default(), &Patch::Merge(ready))
        .await
        .unwrap();
    let leases: Api<Lease> = Api::namespaced(me.clone(), "kube-node-lease");
    leases.create(&pp, &lease("edge-0")).await.unwrap();
    let renew = json!({"spec": {"renewTime": "2030-01-01T00:00:00.000000Z"}});
    leases
        .patch(
            "edge-0",
            &PatchParams::default(),
            &Patch::Merge(renew.clone()),
        )
        .await
        .unwrap();
    let writes: Vec<_> = s
        .requests()
        .into_iter()
        .filter(|r| {
            matches!(r.verb.as_str(), "create" | "patch")
                && r.resource != "certificatesigningrequests"
        })
        .map(|r| (r.resource, r.subresource, r.user, r.groups, r.code))
        .collect();
    let node_groups = vec![
        "system:nodes".to_string(),
        "system:authenticated".to_string(),
    ];
    let by_node = |res: &str, sub: &str, code: u16| {
        (
            res.to_string(),
            sub.to_string(),
            "system:node:edge-0".to_string(),
            node_groups.clone(),
            code,
        )
    };
    assert_eq!(
        writes,
        [
            by_node("nodes", "", 201),
            by_node("nodes", "status", 200),
            by_node("leases", "", 201),
            by_node("leases", "", 200)
        ]
    );

    // The admin (client certificate from the kubeconfig) sets up another node and two pods.
    Api::<Node>::all(admin.clone())
        .create(&pp, &node("edge-1", json!({})))
        .await
        .unwrap();
    Api::<Lease>::namespaced(admin.clone(), "kube-node-lease")
        .create(&pp, &lease("edge-1"))
        .await
        .unwrap();
    let admin_pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    admin_pods
        .create(&pp, &pod("mine", "edge-0"))
        .await
        .unwrap();
    admin_pods
        .create(&pp, &pod("theirs", "edge-1"))
        .await
        .unwrap();
    assert!(
        s.requests()
            .iter()
            .any(|r| r.resource == "pods" && r.verb == "create" && r.user == "admin")
    );

    // Pods: status of its own pod, reads scoped to itself.
    let pods: Api<Pod> = Api::namespaced(me.clone(), "default");
    pods.patch_status("mine", &PatchParams::default(), &status_patch())
        .await
        .unwrap();
    assert_eq!(
        forbidden(
            pods.patch_status("theirs", &PatchParams::default(), &status_patch())
                .await
        ),
        "pods \"theirs\" is forbidden: node \"edge-0\" can only update pod status for pods with spec.nodeName set to itself"
    );
    let all_pods: Api<Pod> = Api::all(me.clone());
    let own = all_pods
        .list(&ListParams::default().fields("spec.nodeName=edge-0"))
        .await
        .unwrap();
    let names: Vec<_> = own
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, ["mine"]);
    assert_eq!(
        forbidden(all_pods.list(&ListParams::default()).await),
        "pods is forbidden: User \"system:node:edge-0\" cannot list resource \"pods\" in API group \"\" at the cluster scope: can only list/watch pods with spec.nodeName field selector"
    );
    assert!(pods.get("mine").await.is_ok());
    assert_eq!(
        forbidden(pods.get("theirs").await),
        "pods \"theirs\" is forbidden: User \"system:node:edge-0\" cannot get resource \"pods\" in API group \"\" in the namespace \"default\": no relationship found between node 'edge-0' and this object"
    );

    // Another node's Node and Lease.
    assert!(nodes.get("edge-1").await.is_ok(), "nodes are readable");
    let label = json!({"metadata": {"labels": {"fleetlet.dev/x": "1"}}});
    assert_eq!(
        forbidden(
            nodes
                .patch(
                    "edge-1",
                    &PatchParams::default(),
                    &Patch::Merge(label.clone())
                )
                .await
        ),
        "nodes \"edge-1\" is forbidden: node \"edge-0\" is not allowed to modify node \"edge-1\""
    );
    assert_eq!(
        forbidden(nodes.create(&pp, &node("edge-2", json!({}))).await),
        "nodes \"edge-2\" is forbidden: node \"edge-0\" is not allowed to modify node \"edge-2\""
    );
    assert_eq!(
        forbidden(
            leases
                .patch("edge-1", &PatchParams::default(), &Patch::Merge(renew))
                .await
        ),
        "leases.coordination.k8s.io \"edge-1\" is forbidden: User \"system:node:edge-0\" cannot patch resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"kube-node-lease\": can only access node lease with the same name as the requesting node"
    );
    assert_eq!(
        forbidden(leases.create(&pp, &lease("edge-2")).await),
        "leases.coordination.k8s.io \"edge-2\" is forbidden: can only access node lease with the same name as the requesting node"
    );

    // Labels: other domains are fine, kubernetes.io/role is not.
    nodes
        .patch("edge-0", &PatchParams::default(), &Patch::Merge(label))
        .await
        .unwrap();
    let role = json!({"metadata": {"labels": {"kubernetes.io/role": "agent"}}});
    assert_eq!(
        forbidden(
            nodes
                .patch("edge-0", &PatchParams::default(), &Patch::Merge(role))
                .await
        ),
        "nodes \"edge-0\" is forbidden: is not allowed to modify labels: kubernetes.io/role"
    );
    let refused = s
        .requests()
        .into_iter()
        .filter(|r| r.code == 403)
        .all(|r| r.user == "system:node:edge-0");
    assert!(refused);

    // Secrets only when a pod bound to the node references them.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(me, "default");
    assert!(
        forbidden(secrets.get("nope").await)
            .ends_with("no relationship found between node 'edge-0' and this object")
    );
}

#[tokio::test]
async fn untrusted_client_certificate_is_unauthorized() {
    let s = TestApiServer::start().await;
    let stranger = ClientCa::generate("untrusted-ca")
        .unwrap()
        .issue("system:node:edge-0", &["system:nodes"])
        .unwrap();
    let client = client_from(&s.kubeconfig_for_identity(&stranger)).await;
    match Api::<Node>::all(client).list(&ListParams::default()).await {
        Err(kube::Error::Api(st)) => {
            assert_eq!((st.code, st.reason.as_str()), (401, "Unauthorized"))
        }
        other => panic!("expected 401, got {other:?}"),
    }
    assert!(
        s.requests()
            .iter()
            .any(|r| r.code == 401 && r.user == "system:anonymous")
    );
    // Without credentials a request is still the admin (this server's convention).
    let (code, _) = common::get(&common::Api::of(&s), "/api/v1/nodes").await;
    assert_eq!(code, 200);
    assert_eq!(
        s.requests().last().map(|r| r.user.clone()).as_deref(),
        Some("admin")
    );
}

#[tokio::test]
async fn kubectl_as_a_node_over_https() {
    let s = TestApiServer::start().await;
    let admin = client_from(&s.kubeconfig_yaml()).await;
    let id = node_identity(&admin, "edge-0").await;
    let dir = std::env::temp_dir().join(format!("node-identity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, s.kubeconfig_for_identity(&id)).unwrap();
    let kubectl = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&kubeconfig).args(args);
        async move { cmd.output().await.unwrap() }
    };
    let yaml = serde_json::to_string(&node("edge-0", json!({"kubernetes.io/hostname": "edge-0"})))
        .unwrap();
    let manifest = dir.join("node.json");
    std::fs::write(&manifest, yaml).unwrap();
    let out = kubectl(&["create", "-f", manifest.to_str().unwrap()]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(&["label", "node", "edge-0", "kubernetes.io/role=agent"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("is not allowed to modify labels: kubernetes.io/role"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(&["get", "pods", "-A"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"));
    let records = s.requests();
    assert!(records.iter().any(|r| r.verb == "create"
        && r.resource == "nodes"
        && r.user == "system:node:edge-0"
        && r.code == 201));
    let _ = std::fs::remove_dir_all(&dir);
}

/// kube-controller-manager approves a kubelet client CSR only when its requester may create
/// `certificatesigningrequests/selfnodeclient` (for itself) or `/nodeclient`; a node identity holds
/// neither here, so neither its own renewal nor a certificate for another node is approved.
#[tokio::test]
async fn a_node_gets_no_client_csr_auto_approved() {
    let s = TestApiServer::start().await;
    let admin = client_from(&s.kubeconfig_yaml()).await;
    let id = node_identity(&admin, "edge-0").await;
    let me: Api<CertificateSigningRequest> =
        Api::all(client_from(&s.kubeconfig_for_identity(&id)).await);
    let asked = [("self-renewal", "edge-0"), ("for-another-node", "edge-1")];
    for (name, node) in asked {
        me.create(&PostParams::default(), &client_csr(name, node).0)
            .await
            .unwrap();
    }
    // The admin's request, made after them, is approved and signed: the approver has seen them all.
    node_identity(&admin, "edge-2").await;
    let csrs: Api<CertificateSigningRequest> = Api::all(admin);
    for (name, _) in asked {
        let csr = csrs.get(name).await.unwrap();
        assert_eq!(
            csr.spec.username.as_deref(),
            Some("system:node:edge-0"),
            "{name}"
        );
        let status = csr.status.unwrap_or_default();
        assert_eq!(status.conditions.unwrap_or_default(), [], "{name}");
        assert!(status.certificate.is_none(), "{name}");
    }
}
