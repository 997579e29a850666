//! Issue 2's container environment as a user sees it on a virtual node: values resolved from every
//! source, and a missing reference reported. Runs against the test apiserver, or a real cluster with
//! FLEETLET_E2E_KUBECONFIG.

use std::time::Duration;

use fleetlet_e2e::cluster::unique;
use fleetlet_e2e::kubelet::{Transport, create_and_wait, kubectl, mock_pod, running};
use fleetlet_e2e::kubelet_checks::{Setup, setup};

const NS: &str = "default";

/// Issue 2's env resolution as a user sees it: `kubectl exec POD -- env` on the Mock prints the
/// container's resolved environment (plain value, ConfigMap, Secret, fieldRef); a pod naming a
/// ConfigMap that does not exist waits with `CreateContainerConfigError` and gets an Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_is_resolved_and_a_missing_config_map_is_reported() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
    use kube::Api;
    use kube::api::PostParams;

    let Setup { c, node, _op } = setup().await?;
    let (cm, secret) = (unique("env-cm"), unique("env-secret"));
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), NS);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({
            "metadata": {"name": cm, "namespace": NS}, "data": {"greeting": "hello from cm"}
        }))?,
    )
    .await?;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), NS);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": secret, "namespace": NS}, "data": {"token": "czNjcmV0"}
            }))?,
        )
        .await?;
    let pod = unique("env");
    let mut spec = mock_pod(NS, &pod, &node, &[("main", &["sleep", "3600"])], "Always");
    spec["spec"]["containers"][0]["env"] = serde_json::json!([
        {"name": "PLAIN", "value": "plain value"},
        {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": cm, "key": "greeting"}}},
        {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]);
    create_and_wait(&c, spec, "env pod running", running).await?;
    let r = kubectl(
        &c,
        "kubectl",
        Transport::Default,
        &["exec", &pod, "--", "env"],
        None,
    )
    .await?;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let env: Vec<&str> = r.stdout.lines().collect();
    for want in [
        "PLAIN=plain value".to_string(),
        "FROM_CM=hello from cm".into(),
        "FROM_SECRET=s3cret".into(),
        format!("POD_NAME={pod}"),
        format!("NODE_NAME={node}"),
    ] {
        assert!(env.contains(&want.as_str()), "{want} in {env:?}");
    }

    let missing = unique("no-such-cm");
    let broken = unique("env-missing");
    let mut spec = mock_pod(
        NS,
        &broken,
        &node,
        &[("main", &["sleep", "3600"])],
        "Always",
    );
    spec["spec"]["containers"][0]["env"] = serde_json::json!([
        {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": missing, "key": "k"}}},
    ]);
    let waiting_reason = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.first())
            .and_then(|s| s.state.as_ref())
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.clone())
    };
    let p = create_and_wait(&c, spec, "CreateContainerConfigError", |p| {
        waiting_reason(p).as_deref() == Some("CreateContainerConfigError")
    })
    .await?;
    assert_ne!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );
    fleetlet_e2e::eventually(
        Duration::from_secs(30),
        "a Failed Event naming the missing ConfigMap",
        || async {
            let out = c.events_about(&broken).await.ok()?;
            let list: serde_json::Value = serde_json::from_str(&out).ok()?;
            list["items"]
                .as_array()?
                .iter()
                .any(|e| {
                    e["reason"] == "Failed"
                        && e["type"] == "Warning"
                        && e["message"].as_str().is_some_and(|m| m.contains(&missing))
                })
                .then_some(())
        },
    )
    .await?;
    Ok(())
}
