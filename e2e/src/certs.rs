//! Helpers of the certificate scenarios (`tests/certificates.rs`, `tests/certificate_lifecycle.rs`):
//! a cluster whose apiserver verifies kubelet certificates, a node with its certificates issued, the
//! stored Secrets, and `kubectl logs`/`exec` through the verifying proxy.

use std::time::Duration;

use fleetlet_crds::VirtualNode;
use fleetlet_test_apiserver::Options;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::PostParams;

use crate::cluster::{OPERATOR_NAMESPACE, unique};
use crate::fixtures::pod_on;
use crate::observe::{phase, vnode_condition};
use crate::{Cluster, eventually};

pub const T: Duration = Duration::from_secs(30);

/// Options for a test apiserver that signs for `signing` and verifies kubelet certificates.
pub fn options(signing: Duration) -> Options {
    Options {
        signing_duration: signing,
        verify_kubelet_certificates: true,
        ..Options::default()
    }
}

/// Apply a mock backend and one VirtualNode; wait until it is Ready with CertificatesReady=True.
pub async fn node_with_certificates(c: &Cluster) -> anyhow::Result<String> {
    let (backend, node) = (unique("sim"), unique("crt"));
    c.apply_mock_node(&backend, &node).await?;
    certificates_ready(c, &node).await?;
    Ok(node)
}

pub async fn certificates_ready(c: &Cluster, node: &str) -> anyhow::Result<VirtualNode> {
    let vnodes: Api<VirtualNode> = Api::all(c.client.clone());
    eventually(
        T,
        &format!("{node} Ready with CertificatesReady"),
        || async {
            vnodes.get(node).await.ok().filter(|v| {
                vnode_condition(v, "CertificatesReady").is_some_and(|c| c.0 == "True")
                    && vnode_condition(v, "Ready").is_some_and(|c| c.0 == "True")
            })
        },
    )
    .await
}

/// The `(key, certificate)` PEM of a node certificate Secret.
pub async fn stored(c: &Cluster, node: &str, kind: &str) -> anyhow::Result<(String, String)> {
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), OPERATOR_NAMESPACE);
    let s = secrets.get(&format!("{node}-{kind}-cert")).await?;
    let data = s.data.unwrap_or_default();
    let text = |k: &str| {
        data.get(k)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default()
    };
    Ok((text("tls.key"), text("tls.crt")))
}

/// Creates a pod on `node` running `command` and waits until it runs; returns its name.
pub async fn running_pod(
    c: &Cluster,
    node: &str,
    prefix: &str,
    command: &[&str],
) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let name = unique(prefix);
    let mut pod = pod_on("default", &name, node);
    pod["spec"]["containers"][0]["command"] = serde_json::json!(command);
    pods.create(&PostParams::default(), &serde_json::from_value(pod)?)
        .await?;
    eventually(T, "pod Running", || async {
        pods.get(&name)
            .await
            .ok()
            .filter(|p| phase(p) == Some("Running"))
    })
    .await?;
    Ok(name)
}

/// A running pod on `node` whose logs and exec work through the apiserver's (verifying) kubelet proxy.
pub async fn logs_and_exec_work(c: &Cluster, node: &str) -> anyhow::Result<()> {
    let name = running_pod(c, node, "logs", &["sh", "-c", "echo certified; sleep 3600"]).await?;
    let out = eventually(T, "kubectl logs through the verifying proxy", || async {
        c.kubectl(&["logs", &name])
            .await
            .ok()
            .filter(|o| o.contains("certified"))
    })
    .await?;
    anyhow::ensure!(out.contains("certified"), "{out}");
    let out = eventually(T, "kubectl exec through the verifying proxy", || async {
        c.kubectl(&["exec", &name, "--", "echo", "exec-verified"])
            .await
            .ok()
    })
    .await?;
    anyhow::ensure!(out == "exec-verified\n", "{out:?}");
    Ok(())
}

pub async fn secret_versions(
    secrets: &Api<Secret>,
    node: &str,
) -> anyhow::Result<Vec<Option<String>>> {
    let mut out = vec![];
    for kind in ["client", "serving"] {
        let s = secrets.get(&format!("{node}-{kind}-cert")).await?;
        out.push(s.metadata.resource_version);
    }
    Ok(out)
}

pub async fn csr_count(c: &Cluster, node: &str) -> anyhow::Result<usize> {
    let csrs: Api<CertificateSigningRequest> = Api::all(c.client.clone());
    Ok(csrs
        .list(&Default::default())
        .await?
        .items
        .iter()
        .filter(|r| r.metadata.name.as_deref().is_some_and(|n| n.contains(node)))
        .count())
}
