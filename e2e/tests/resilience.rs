//! The operator under stress (issue 2): the control plane going away, heartbeats under bulk pod work,
//! graceful restart and crash recovery. Uses the test apiserver's fault injection, so these scenarios
//! are skipped on a real cluster.

use std::collections::HashMap;
use std::time::Duration;

use fleetlet_crds::VirtualNode;
use fleetlet_e2e::cluster::unique;
use fleetlet_e2e::fixtures::pod_on;
use fleetlet_e2e::observe::{node_condition, port_base, renew_time};
use fleetlet_e2e::{Cluster, Operator, eventually};
use fleetlet_test_apiserver::Options;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};

const T: Duration = Duration::from_secs(30);

fn vcond(vn: &VirtualNode) -> Option<(String, String)> {
    let c = vn
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.last_transition_time.0.to_string()))
}

async fn fleet(c: &Cluster, backend: &str, nodes: &[String]) -> anyhow::Result<()> {
    c.apply_mock_nodes(backend, nodes).await?;
    for n in nodes {
        c.ready_node(n, T).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_control_plane_outage_without_leaving_ready() -> anyhow::Result<()> {
    // Leases every 10 s, an outage longer than that (every node's beat fails, well before the end),
    // and a bound after the API returns (4 s: the heartbeat retry tops out at 2 s + 50 % jitter) that
    // the normal schedule would miss: "renewed as soon as the API answers" is told apart from
    // "renewed at the next scheduled beat" and from a renewal asleep in a client-side retry backoff.
    // The node lifecycle controller plays kube-controller-manager with a 30 s grace (> 16 s of
    // outage + the retry after it).
    const RENEW: &str = "10s";
    const OUTAGE: Duration = Duration::from_secs(16);
    const BOUND: Duration = Duration::from_secs(4);
    let c = Cluster::start_with(Options {
        node_lifecycle: Some(Duration::from_secs(30)),
        ..Options::default()
    })
    .await?;
    let Some(api) = c.apiserver.as_ref() else {
        return Ok(());
    };
    let backend = unique("sim");
    let nodes: Vec<String> = (0..4).map(|i| format!("{}-{i}", unique("out"))).collect();
    // Default leader election timing (15 s lease, 10 s renew deadline): the outage outlasts the
    // deadline, so the leader is fenced (holds its writes) instead of giving up, and renews first
    // thing when the API answers.
    let mut op = Operator::start(&c, &["--lease-renew-interval", RENEW])?;
    fleet(&c, &backend, &nodes).await?;
    let node_api: Api<Node> = Api::all(c.client.clone());
    let vn_api: Api<VirtualNode> = Api::all(c.client.clone());
    let vn_ready = eventually(T, "VirtualNode Ready", || async {
        vn_api
            .get(&nodes[0])
            .await
            .ok()
            .and_then(|v| vcond(&v))
            .filter(|r| r.0 == "True")
    })
    .await?;
    let before: Vec<_> = futures::future::join_all(nodes.iter().map(|n| node_api.get(n)))
        .await
        .into_iter()
        .map(|n| n.ok().and_then(|n| node_condition(&n, "Ready")))
        .collect();

    // Begin the outage right after every node renewed: each next beat falls near its end (about
    // 10 s in), so a failed beat that waited for the normal schedule would renew ~9 s after it.
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let mark = jiff::Timestamp::now();
    eventually(T, "every lease renewed once more", || async {
        for n in &nodes {
            renew_time(&leases, n).await.filter(|t| *t > mark)?;
        }
        Some(())
    })
    .await?;
    let outage_began = jiff::Timestamp::now();
    api.set_unavailable(true);
    tokio::time::sleep(OUTAGE).await; // the outage itself
    assert!(
        op.is_running(),
        "operator keeps running while the API is down"
    );
    assert_eq!(
        op.metric_line("fleetlet_leader_fenced ").await.as_deref(),
        Some("fleetlet_leader_fenced 1"),
        "the outage outlasted the renew deadline: the leader holds its writes"
    );
    api.set_unavailable(false);
    let restored = tokio::time::Instant::now();

    // No renewal can land during the outage: a renewTime after its start is one after it ended.
    for n in &nodes {
        let left = BOUND.saturating_sub(restored.elapsed());
        eventually(
            left,
            &format!("{n} lease renewed within {BOUND:?} of the API answering"),
            || async { renew_time(&leases, n).await.filter(|t| *t > outage_began) },
        )
        .await?;
    }
    assert!(
        restored.elapsed() < BOUND,
        "leases renewed as soon as the API answered, not at the next {RENEW} beat: {:?}",
        restored.elapsed()
    );
    // Give the lifecycle controller a chance to act on stale leases, then check nothing transitioned.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: Vec<_> = futures::future::join_all(nodes.iter().map(|n| node_api.get(n)))
        .await
        .into_iter()
        .map(|n| n.ok().and_then(|n| node_condition(&n, "Ready")))
        .collect();
    assert_eq!(
        before, after,
        "Node Ready and its lastTransitionTime unchanged"
    );
    assert_eq!(
        op.metric_line("fleetlet_leader_fenced ").await.as_deref(),
        Some("fleetlet_leader_fenced 0"),
        "the leader renewed and writes again"
    );
    assert!(op.is_running(), "still the leader after the outage");
    let vn_after = vn_api.get(&nodes[0]).await.ok().and_then(|v| vcond(&v));
    assert_eq!(
        Some(vn_ready),
        vn_after,
        "VirtualNode Ready lastTransitionTime unchanged"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_schedule_while_pods_are_created() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let Some(api) = c.apiserver.as_ref() else {
        return Ok(());
    };
    let backend = unique("sim");
    let nodes: Vec<String> = (0..20).map(|i| format!("{}-{i}", unique("hb"))).collect();
    let _op = Operator::start(&c, &["--lease-renew-interval", "1s"])?;
    fleet(&c, &backend, &nodes).await?;
    // Bulk work is slow: every pod request takes 1 s while 200 pods are created and started. Were
    // heartbeats queued behind the ~400 pod writes (64 at a time), their gaps would reach ~7 s.
    api.set_latency("pods", Duration::from_secs(1));
    api.clear_requests();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let creates = (0..200).map(|i| {
        let pods = pods.clone();
        let node = nodes[i % nodes.len()].clone();
        async move {
            let p: Pod = serde_json::from_value(pod_on("default", &format!("load-{i}"), &node))
                .expect("valid pod");
            pods.create(&PostParams::default(), &p).await
        }
    });
    futures::future::join_all(creates).await;
    eventually(Duration::from_secs(120), "200 pods Running", || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let running = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        (running == 200).then_some(())
    })
    .await?;
    api.set_latency("pods", Duration::ZERO);
    // Every node's lease kept its ~1 s schedule during the load.
    let mut by_node: HashMap<String, Vec<std::time::Instant>> = HashMap::new();
    for r in api.requests().into_iter().filter(|r| {
        r.namespace == "kube-node-lease"
            && r.resource == "leases"
            && r.verb == "update"
            && r.code == 200
    }) {
        by_node.entry(r.name).or_default().push(r.at);
    }
    assert_eq!(
        by_node.len(),
        nodes.len(),
        "every node renewed during the load"
    );
    for (node, times) in by_node {
        let worst = times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        assert!(
            worst < Duration::from_secs(4),
            "{node}: lease gap {worst:?} with a 1 s renew interval"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_nodes_ready_and_reconciles_pods() -> anyhow::Result<()> {
    let c = Cluster::start_with(Options {
        node_lifecycle: Some(Duration::from_secs(8)),
        ..Options::default()
    })
    .await?;
    let (backend, node) = (unique("sim"), unique("rs"));
    let base = port_base();
    let args = [
        "--kubelet-address",
        "127.0.0.1",
        "--kubelet-port-base",
        base.as_str(),
        "--lease-renew-interval",
        "1s",
    ];
    let mut op = Operator::start(&c, &args)?;
    fleet(&c, &backend, std::slice::from_ref(&node)).await?;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let name = unique("survivor");
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod_on("default", &name, &node))?,
    )
    .await?;
    eventually(T, "pod Running", || async {
        pods.get(&name)
            .await
            .ok()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await?;
    let node_api: Api<Node> = Api::all(c.client.clone());
    let before = node_api.get(&node).await?;

    // Planned restart: SIGTERM leaves the Node and Lease in place and Ready.
    assert!(op.terminate().await?, "clean exit on SIGTERM");
    let after = node_api.get(&node).await?;
    assert_eq!(
        node_condition(&after, "Ready"),
        node_condition(&before, "Ready"),
        "SIGTERM does not mark the node NotReady"
    );
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    assert!(leases.get_opt(&node).await?.is_some());

    // Crash-restart: the same port is reused; the mock backend lost its in-memory pod, so it fails.
    let mut op = Operator::start(&c, &args)?;
    let port = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.daemon_endpoints.as_ref())
            .and_then(|d| d.kubelet_endpoint.as_ref())
            .map(|e| e.port)
    };
    let lost = eventually(T, "lost pod marked Failed", || async {
        pods.get(&name)
            .await
            .ok()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
    })
    .await?;
    assert_eq!(
        lost.status.and_then(|s| s.reason).as_deref(),
        Some("ProviderLost")
    );
    let renewed = node_api.get(&node).await?;
    assert_eq!(
        port(&renewed),
        port(&before),
        "kubelet port kept across restarts"
    );
    assert_eq!(
        node_condition(&renewed, "Ready"),
        node_condition(&before, "Ready"),
        "never left Ready"
    );
    op.kill();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_heartbeat_is_lease_puts_only() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let Some(api) = c.apiserver.as_ref() else {
        return Ok(());
    };
    let (backend, nodes) = (
        unique("sim"),
        vec![unique("q0"), unique("q1"), unique("q2")],
    );
    let _op = Operator::start(&c, &["--lease-renew-interval", "1s"])?;
    fleet(&c, &backend, &nodes).await?;
    // Let registration settle (first status report, VirtualNode status), then watch a quiet window.
    let vn_api: Api<VirtualNode> = Api::all(c.client.clone());
    for n in &nodes {
        eventually(T, "VirtualNode Ready", || async {
            vn_api
                .get(n)
                .await
                .ok()
                .and_then(|v| vcond(&v))
                .filter(|r| r.0 == "True")
        })
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // settle: measuring a window, not waiting for state
    api.clear_requests();
    tokio::time::sleep(Duration::from_secs(5)).await; // the measured window
    let reqs = api.requests();
    let ours = |r: &&fleetlet_test_apiserver::RequestRecord| nodes.contains(&r.name);
    let puts: Vec<_> = reqs
        .iter()
        .filter(|r| r.resource == "leases" && r.verb == "update")
        .filter(ours)
        .collect();
    let gets = reqs
        .iter()
        .filter(|r| (r.resource == "leases" || r.resource == "nodes") && r.verb == "get")
        .filter(ours)
        .count();
    let status = reqs
        .iter()
        .filter(|r| r.resource == "nodes" && r.subresource == "status")
        .filter(ours)
        .count();
    for n in &nodes {
        let k = puts.iter().filter(|r| &r.name == n).count();
        assert!(
            (3..=7).contains(&k),
            "{n}: {k} lease renewals in 5 s at a 1 s interval"
        );
    }
    assert_eq!(gets, 0, "renewals never GET");
    assert_eq!(
        status, 0,
        "unchanged Node status is not re-sent within the report interval"
    );
    Ok(())
}
