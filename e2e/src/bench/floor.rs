//! The raw API floor: what N nodes cost the API with nothing built on it. Per node, exactly the three
//! writes a kubelet's registration needs: create the Node, create its Lease, patch the Node's status to
//! Ready, `concurrency` nodes at a time over one client built like the operator's (kube-rs defaults,
//! keep-alive connections, no client-side rate limit).

use std::time::Instant;

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::cluster::{Cluster, client_for, unique};

/// Seconds to create, lease and mark Ready `n` Nodes; the Nodes and Leases are deleted afterwards (not
/// timed) so that they do not load the API during the measurement that follows.
pub async fn measure(c: &Cluster, n: usize, concurrency: usize) -> anyhow::Result<f64> {
    c.ensure_namespace("kube-node-lease").await?;
    let client = client_for(&c.kubeconfig).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let prefix = unique("floor");
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:04}")).collect();
    let started = Instant::now();
    stream::iter(names.iter().map(|name| {
        let (nodes, leases) = (nodes.clone(), leases.clone());
        async move { register(&nodes, &leases, name).await }
    }))
    .buffer_unordered(concurrency.max(1))
    .try_collect::<Vec<()>>()
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    stream::iter(names.iter().map(|name| {
        let (nodes, leases) = (nodes.clone(), leases.clone());
        async move {
            let _ = leases.delete(name, &DeleteParams::default()).await;
            let _ = nodes.delete(name, &DeleteParams::default()).await;
        }
    }))
    .buffer_unordered(concurrency.max(1))
    .collect::<Vec<()>>()
    .await;
    Ok(seconds)
}

async fn register(nodes: &Api<Node>, leases: &Api<Lease>, name: &str) -> anyhow::Result<()> {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "fleetlet.dev/floor": "true"}},
        "spec": {"taints": [{"key": "fleetlet.dev/floor", "value": "true", "effect": "NoSchedule"}]}
    }))?;
    let node = nodes.create(&PostParams::default(), &node).await?;
    let uid = node.metadata.uid.unwrap_or_default();
    let ts = jiff::Timestamp::now();
    // MicroTime (six fractional digits) for the Lease, Time (seconds) for conditions, as the API stores them.
    let micro = format!(
        "{}.{:06}Z",
        ts.strftime("%Y-%m-%dT%H:%M:%S"),
        ts.subsec_microsecond()
    );
    let now = ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]
        },
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": micro}
    }))?;
    leases.create(&PostParams::default(), &lease).await?;
    let status = json!({"status": {
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady", "message": "floor",
            "lastHeartbeatTime": now, "lastTransitionTime": now
        }],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
        "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
        "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}
