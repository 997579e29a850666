//! HA (issue 6) with a partition: a leader cut off from the API while the standby is not is fenced at
//! its renew deadline (it writes nothing and keeps running), the standby takes over and keeps every node
//! Ready, and the old leader exits once it sees the new holder. Uses the test apiserver's per-user
//! fault injection: skipped on a real cluster.

use std::time::{Duration, Instant};

use fleetlet_e2e::cluster::{OPERATOR_NAMESPACE, unique};
use fleetlet_e2e::observe::node_condition;
use fleetlet_e2e::replicas::{ha_replica, node_writes, readyz, wait_leader};
use fleetlet_e2e::{Cluster, eventually};
use fleetlet_test_apiserver::Options;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;

const T: Duration = Duration::from_secs(30);
/// Node lifecycle grace: a node Lease older than this makes the node NotReady.
const GRACE: Duration = Duration::from_secs(10);
/// Leader election lease duration of the replicas (client-go's 15 s scaled down for a fast test).
const LEADER_LEASE: Duration = Duration::from_secs(4);

/// A leader cut off from the API while the standby is not: it is fenced at its renew deadline
/// (writes nothing, keeps running), the standby takes over after the lease duration and renews every
/// node in time, and when the partition heals the old leader sees the new holder and exits without
/// having written anything since it was cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_is_fenced_and_yields_to_the_standby() -> anyhow::Result<()> {
    let c = Cluster::start_with(Options {
        node_lifecycle: Some(GRACE),
        ..Options::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let Some(api) = c.apiserver.clone() else {
        return Ok(());
    };
    let election = unique("hap");
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), OPERATOR_NAMESPACE);
    let mut a = ha_replica(&c, "op-a", &election)?;
    wait_leader(&leases, &election, "op-a", T).await;
    let mut b = ha_replica(&c, "op-b", &election)?;
    let backend = unique("hap");
    let nodes: Vec<String> = (0..2).map(|i| format!("{}-{i}", unique("hapn"))).collect();
    c.apply_mock_nodes(&backend, &nodes).await?;
    let node_api: Api<Node> = Api::all(c.client.clone());
    let mut before = Vec::new();
    for n in &nodes {
        let ready = c.ready_node(n, T).await.unwrap_or_else(|e| panic!("{e:#}"));
        before.push(node_condition(&ready, "Ready").unwrap_or_default());
    }
    eventually(T, "op-b ready as standby", || async {
        (readyz(&b).await == Some(200)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));

    api.set_unavailable_for("ha:op-a", true);
    let cut = Instant::now();
    eventually(T, "op-a fenced", || async {
        let line = a.metric_line("fleetlet_leader_fenced ").await?;
        (line == "fleetlet_leader_fenced 1").then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    wait_leader(&leases, &election, "op-b", T).await;
    assert!(
        cut.elapsed() >= LEADER_LEASE - Duration::from_millis(500),
        "the standby waited for the lease to expire ({:?})",
        cut.elapsed()
    );
    assert!(a.is_running(), "a fenced leader keeps running");
    for n in &nodes {
        eventually(T, &format!("{n} renewed by op-b"), || async {
            api.requests()
                .iter()
                .any(|r| {
                    r.user == "ha:op-b"
                        && r.namespace == "kube-node-lease"
                        && r.name == *n
                        && r.verb == "update"
                        && r.code == 200
                })
                .then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    }

    // The partition heals: op-a sees op-b's Lease and gives up, writing nothing.
    api.set_unavailable_for("ha:op-a", false);
    let healed = Instant::now();
    while a.is_running() {
        assert!(healed.elapsed() < T, "op-a exits once it sees op-b's Lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reqs = api.requests();
    let a_writes_after_cut: Vec<_> = reqs
        .iter()
        .filter(|r| r.user == "ha:op-a" && r.at > cut && r.code != 503)
        .filter(|r| !matches!(r.verb.as_str(), "get" | "list" | "watch"))
        .map(|r| format!("{} {}", r.verb, r.path))
        .collect();
    assert!(
        a_writes_after_cut.is_empty(),
        "no write of the partitioned leader reached the API: {a_writes_after_cut:?}"
    );
    let a_last = node_writes(&reqs, "ha:op-a").filter(|at| *at < cut).max();
    let b_first = node_writes(&reqs, "ha:op-b").min();
    assert!(a_last < b_first, "op-a's node writes all precede op-b's");
    for (n, was) in nodes.iter().zip(&before) {
        let now = node_api
            .get(n)
            .await
            .ok()
            .and_then(|x| node_condition(&x, "Ready"));
        assert_eq!(
            now.as_ref(),
            Some(was),
            "{n}: Ready unchanged across the partition"
        );
    }
    b.terminate().await?;
    Ok(())
}
