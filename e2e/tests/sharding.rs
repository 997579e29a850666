//! Sharding (issue 7): with `--shards 4` three replicas share the VirtualNodes through shard Leases.
//! Replicas joining take their share from the ones already running; when one is killed its shards move
//! to the others before the node lifecycle controller (playing kube-controller-manager) would mark a
//! node NotReady; on SIGTERM a replica hands its shards over at once. Each replica writes as its own
//! user, so the apiserver's request log proves every node had one writer at a time and that the writer
//! was the holder of the node's shard. Uses the test apiserver's lifecycle controller and request log:
//! skipped on a real cluster (the benchmark covers sharding there).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fleetlet_crds::shard::shard_of;
use fleetlet_e2e::cluster::{OPERATOR_NAMESPACE, unique};
use fleetlet_e2e::observe::node_condition;
use fleetlet_e2e::{Cluster, Operator, eventually};
use fleetlet_test_apiserver::{Options, RequestRecord};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;

const T: Duration = Duration::from_secs(40);
const SHARDS: u32 = 4;
/// Node lifecycle grace: a node Lease older than this makes the node NotReady.
const GRACE: Duration = Duration::from_secs(12);
/// Shard lease duration used here (the default 15 s scaled down for a fast test).
const SHARD_LEASE: Duration = Duration::from_secs(4);

/// A replica named `name` (its pod name, and its API user `shard:<name>`).
fn replica(c: &Cluster, name: &str, group: &str) -> anyhow::Result<Operator> {
    let shards = SHARDS.to_string();
    Operator::start_replica(
        c,
        &format!("shard:{name}"),
        name,
        group,
        &["--shards", &shards],
    )
}

/// Holder pod name (`op-a`, ...) of every shard Lease, by shard.
async fn holders(leases: &Api<Lease>, group: &str) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    for i in 0..SHARDS {
        let holder = leases
            .get_opt(&format!("{group}-shard-{i}"))
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
            .and_then(|h| h.split('_').next().map(str::to_string))
            .filter(|h| !h.is_empty());
        if let Some(h) = holder {
            out.insert(i, h);
        }
    }
    out
}

/// How many shards each replica holds, once every shard is held and the counts are `want` (sorted).
async fn balanced(
    leases: &Api<Lease>,
    group: &str,
    want: &[usize],
) -> Option<BTreeMap<u32, String>> {
    let h = holders(leases, group).await;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for holder in h.values() {
        *counts.entry(holder).or_default() += 1;
    }
    let mut got: Vec<usize> = counts.into_values().collect();
    got.sort_unstable();
    (h.len() == SHARDS as usize && got == want).then_some(h)
}

/// Writes by replicas to one node's objects (Node, its Lease, Node status), in time order.
fn writers(reqs: &[RequestRecord], node: &str) -> Vec<(Instant, String)> {
    let mut out: Vec<(Instant, String)> = reqs
        .iter()
        .filter(|r| r.user.starts_with("shard:") && r.name == node)
        .filter(|r| !matches!(r.verb.as_str(), "get" | "list" | "watch"))
        .filter(|r| r.resource == "nodes" || r.namespace == "kube-node-lease")
        .map(|r| (r.at, r.user.trim_start_matches("shard:").to_string()))
        .collect();
    out.sort();
    out
}

/// Every node was renewed after `since` by the replica holding its shard now.
async fn served_by_holders(
    api: &fleetlet_test_apiserver::TestApiServer,
    leases: &Api<Lease>,
    group: &str,
    nodes: &[String],
    since: Instant,
) -> Option<()> {
    let h = holders(leases, group).await;
    let reqs = api.requests();
    nodes
        .iter()
        .all(|n| {
            let Some(owner) = h.get(&shard_of(n, SHARDS)) else {
                return false;
            };
            reqs.iter().any(|r| {
                r.at > since
                    && r.user == format!("shard:{owner}")
                    && r.namespace == "kube-node-lease"
                    && r.name == *n
                    && r.verb == "update"
                    && r.code == 200
            })
        })
        .then_some(())
}

fn ready_conditions(nodes: &[String], all: &[Node]) -> Vec<Option<(String, String)>> {
    nodes
        .iter()
        .map(|n| {
            all.iter()
                .find(|x| x.metadata.name.as_deref() == Some(n))
                .and_then(|x| node_condition(x, "Ready"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_nodes_and_take_over_a_dead_replicas_shards_without_not_ready()
-> anyhow::Result<()> {
    let c = Cluster::start_with(Options {
        node_lifecycle: Some(GRACE),
        ..Options::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let Some(api) = c.apiserver.clone() else {
        return Ok(());
    };
    let group = unique("shard");
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), OPERATOR_NAMESPACE);
    let node_api: Api<Node> = Api::all(c.client.clone());
    let fail = |e: anyhow::Error| -> ! { panic!("{e:#}") };

    // One replica alone takes every shard and brings up 8 nodes (spread over all 4 shards).
    let a = replica(&c, "op-a", &group)?;
    eventually(T, "op-a holds all 4 shards", || {
        balanced(&leases, &group, &[4])
    })
    .await
    .unwrap_or_else(|e| fail(e));
    let backend = unique("sh");
    let prefix = unique("shn");
    let nodes: Vec<String> = (0..8).map(|i| format!("{prefix}-{i}")).collect();
    let spread: BTreeSet<u32> = nodes.iter().map(|n| shard_of(n, SHARDS)).collect();
    assert!(
        spread.len() >= 3,
        "the nodes hash to several shards: {spread:?}"
    );
    c.apply_mock_nodes(&backend, &nodes).await?;
    let all_ready = || async {
        let list = node_api.list(&Default::default()).await.ok()?;
        let conds = ready_conditions(&nodes, &list.items);
        conds
            .iter()
            .all(|c| c.as_ref().is_some_and(|c| c.0 == "True"))
            .then_some(conds)
    };
    eventually(T, "8 nodes Ready under op-a", all_ready)
        .await
        .unwrap_or_else(|e| fail(e));

    // Joining replicas take their share: 4 -> 2+2 -> 2+1+1; every node ends up with its shard's holder.
    let b = replica(&c, "op-b", &group)?;
    eventually(T, "op-a and op-b hold 2 shards each", || {
        balanced(&leases, &group, &[2, 2])
    })
    .await
    .unwrap_or_else(|e| fail(e));
    let c3 = replica(&c, "op-c", &group)?;
    eventually(T, "shards held 2+1+1", || {
        balanced(&leases, &group, &[1, 1, 2])
    })
    .await
    .unwrap_or_else(|e| fail(e));
    let joined = Instant::now();
    eventually(T, "every node renewed by its shard's holder", || {
        served_by_holders(&api, &leases, &group, &nodes, joined)
    })
    .await
    .unwrap_or_else(|e| fail(e));
    let before = eventually(T, "8 nodes Ready after rebalancing", all_ready)
        .await
        .unwrap_or_else(|e| fail(e));
    let mut ops = vec![("op-a", a), ("op-b", b), ("op-c", c3)];
    for (name, op) in &ops {
        let line = op.metric_line("fleetlet_shards_held ").await;
        assert!(
            line.as_deref()
                .is_some_and(|l| l != "fleetlet_shards_held 0"),
            "{name} reports its shards: {line:?}"
        );
    }

    // Crash: the replica holding two shards dies; the survivors take them over in time.
    let h = holders(&leases, &group).await;
    let victim = ops
        .iter()
        .position(|(name, _)| h.values().filter(|x| x == name).count() == 2)
        .unwrap_or(0);
    let (victim, mut dead) = ops.remove(victim);
    dead.kill();
    let killed = Instant::now();
    eventually(T, "the survivors hold 2 shards each", || {
        balanced(&leases, &group, &[2, 2])
    })
    .await
    .unwrap_or_else(|e| fail(e));
    assert!(
        killed.elapsed() >= SHARD_LEASE - Duration::from_millis(500),
        "the dead replica's shards were taken only after their Leases expired ({:?})",
        killed.elapsed()
    );
    let h = holders(&leases, &group).await;
    assert!(
        !h.values().any(|x| x == victim),
        "no shard left with {victim}: {h:?}"
    );
    eventually(T, "every node renewed by a survivor", || {
        served_by_holders(&api, &leases, &group, &nodes, killed)
    })
    .await
    .unwrap_or_else(|e| fail(e));
    // Let the lifecycle controller look at the leases past its grace, then check nothing transitioned.
    let settle = (GRACE + Duration::from_secs(1)).saturating_sub(killed.elapsed());
    tokio::time::sleep(settle).await; // measuring a window, not waiting for state
    let list = node_api.list(&Default::default()).await?;
    assert_eq!(
        ready_conditions(&nodes, &list.items),
        before,
        "Ready (status and lastTransitionTime) unchanged across the crash"
    );

    // Planned: SIGTERM to one survivor hands its shards to the last one at once.
    let (leaving_name, mut leaving) = ops.remove(0);
    let stopping = Instant::now();
    assert!(
        leaving.terminate().await?,
        "{leaving_name} exits cleanly on SIGTERM"
    );
    eventually(T, "the last replica holds every shard", || {
        balanced(&leases, &group, &[4])
    })
    .await
    .unwrap_or_else(|e| fail(e));
    assert!(
        stopping.elapsed() < SHARD_LEASE * 2,
        "released early: all shards held {:?} after SIGTERM",
        stopping.elapsed()
    );
    let handed = Instant::now();
    eventually(T, "every node renewed by the last replica", || {
        served_by_holders(&api, &leases, &group, &nodes, handed)
    })
    .await
    .unwrap_or_else(|e| fail(e));

    // Never two writers: per node, the replicas' write intervals never overlap.
    let reqs = api.requests();
    for n in &nodes {
        let w = writers(&reqs, n);
        let mut spans: BTreeMap<&str, (Instant, Instant)> = BTreeMap::new();
        for (at, who) in &w {
            let e = spans.entry(who.as_str()).or_insert((*at, *at));
            e.0 = e.0.min(*at);
            e.1 = e.1.max(*at);
        }
        let spans: Vec<_> = spans.into_iter().collect();
        for (i, (u, (u0, u1))) in spans.iter().enumerate() {
            for (v, (v0, v1)) in &spans[i + 1..] {
                assert!(
                    u1 < v0 || v1 < u0,
                    "{n}: {u} and {v} both wrote in overlapping periods"
                );
            }
        }
    }
    let list = node_api.list(&Default::default()).await?;
    assert_eq!(
        ready_conditions(&nodes, &list.items),
        before,
        "Ready unchanged across the handover"
    );
    drop(ops);
    Ok(())
}
