//! HA (issue 6): two operator replicas elect a leader on a Lease; only the leader runs virtual nodes.
//! When the leader is killed the standby takes over and renews every node before the node lifecycle
//! controller (playing kube-controller-manager) would mark it NotReady; on SIGTERM the leader releases
//! the Lease early. Each replica has its own identity, so the apiserver's request log proves there were
//! never two writers. In the default node-identity mode the standby, on another address, also moves the
//! nodes there and has their serving certificates re-issued. A partitioned leader: `ha_partition.rs`.
//! Uses the test apiserver's lifecycle controller and tokens: skipped on a real cluster.

use std::time::{Duration, Instant};

use fleetlet_crds::VirtualNode;
use fleetlet_e2e::cluster::{OPERATOR_NAMESPACE, unique};
use fleetlet_e2e::observe::{node_condition, port_base, vnode_condition};
use fleetlet_e2e::replicas::{ha_replica, holder, node_writes, readyz, wait_leader};
use fleetlet_e2e::{Cluster, Operator, consistently, eventually};
use fleetlet_test_apiserver::Options;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::Api;
use vk_runtime::certs::pem::Issued;

const T: Duration = Duration::from_secs(30);
/// Node lifecycle grace: a node Lease older than this makes the node NotReady.
const GRACE: Duration = Duration::from_secs(10);
/// Leader election lease duration used here (client-go's 15 s scaled down for a fast test).
const LEADER_LEASE: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_before_nodes_go_not_ready_and_never_two_writers() -> anyhow::Result<()>
{
    let c = Cluster::start_with(Options {
        node_lifecycle: Some(GRACE),
        ..Options::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let Some(api) = c.apiserver.clone() else {
        return Ok(());
    };
    let election = unique("ha");
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), OPERATOR_NAMESPACE);

    // Replica a starts first and leads; b stays a ready standby.
    let mut a = ha_replica(&c, "op-a", &election)?;
    wait_leader(&leases, &election, "op-a", T).await;
    let mut b = ha_replica(&c, "op-b", &election)?;
    eventually(T, "op-b ready as standby", || async {
        (readyz(&b).await == Some(200)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        b.metric_line("fleetlet_leader ").await.as_deref(),
        Some("fleetlet_leader 0")
    );

    let backend = unique("ha");
    let nodes: Vec<String> = (0..3).map(|i| format!("{}-{i}", unique("han"))).collect();
    c.apply_mock_nodes(&backend, &nodes).await?;
    let node_api: Api<Node> = Api::all(c.client.clone());
    let mut before = Vec::new();
    for n in &nodes {
        let ready = c.ready_node(n, T).await.unwrap_or_else(|e| panic!("{e:#}"));
        before.push(node_condition(&ready, "Ready").unwrap_or_default());
    }
    eventually(T, "op-a ready as leader", || async {
        (readyz(&a).await == Some(200)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    eventually(T, "3 Ready nodes in op-a's metrics", || async {
        let line = a
            .metric_line(r#"fleetlet_virtual_nodes{condition="Ready",status="True"}"#)
            .await?;
        line.ends_with(" 3").then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));

    // Crash: the standby takes over after the leader Lease expires and renews every node in time.
    a.kill();
    let killed = Instant::now();
    wait_leader(&leases, &election, "op-b", T).await;
    let took_over = killed.elapsed();
    assert!(
        took_over >= LEADER_LEASE - Duration::from_millis(500),
        "the standby waited for the lease to expire ({took_over:?})"
    );
    let node_leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    for n in &nodes {
        eventually(T, &format!("{n} renewed by op-b"), || async {
            let recs = api.requests();
            recs.iter()
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
        assert!(node_leases.get_opt(n).await?.is_some());
    }
    // Let the lifecycle controller look at the leases past its grace, then check nothing transitioned.
    let settle = (GRACE + Duration::from_secs(1)).saturating_sub(killed.elapsed());
    tokio::time::sleep(settle).await; // measuring a window, not waiting for state
    for (n, was) in nodes.iter().zip(&before) {
        let now = node_api
            .get(n)
            .await
            .ok()
            .and_then(|x| node_condition(&x, "Ready"));
        assert_eq!(
            now.as_ref(),
            Some(was),
            "{n}: Ready unchanged across failover"
        );
    }
    eventually(T, "op-b ready as leader", || async {
        (readyz(&b).await == Some(200)
            && b.metric_line("fleetlet_leader ").await.as_deref() == Some("fleetlet_leader 1"))
        .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));

    // Planned handover: a new standby c, then SIGTERM to b releases the Lease: c takes over without
    // waiting for expiry, and b's last write to node objects precedes c's first.
    let mut c2 = ha_replica(&c, "op-c", &election)?;
    eventually(T, "op-c ready as standby", || async {
        (readyz(&c2).await == Some(200)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let stopping = Instant::now();
    assert!(b.terminate().await?, "op-b exits cleanly on SIGTERM");
    wait_leader(&leases, &election, "op-c", T).await;
    assert!(
        stopping.elapsed() < LEADER_LEASE,
        "released early: op-c led {:?} after SIGTERM",
        stopping.elapsed()
    );
    for n in &nodes {
        eventually(T, &format!("{n} renewed by op-c"), || async {
            api.requests()
                .iter()
                .any(|r| r.user == "ha:op-c" && r.name == *n && r.verb == "update")
                .then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
    let reqs = api.requests();
    let (a_last, b_first, b_last, c_first) = (
        node_writes(&reqs, "ha:op-a").max(),
        node_writes(&reqs, "ha:op-b").min(),
        node_writes(&reqs, "ha:op-b").max(),
        node_writes(&reqs, "ha:op-c").min(),
    );
    let (Some(a_last), Some(b_first), Some(b_last), Some(c_first)) =
        (a_last, b_first, b_last, c_first)
    else {
        panic!("every leader wrote to its nodes");
    };
    assert!(a_last < b_first, "op-a's writes all precede op-b's");
    assert!(b_last < c_first, "op-b's writes all precede op-c's");
    for (n, was) in nodes.iter().zip(&before) {
        let now = node_api
            .get(n)
            .await
            .ok()
            .and_then(|x| node_condition(&x, "Ready"));
        assert_eq!(
            now.as_ref(),
            Some(was),
            "{n}: Ready unchanged across handover"
        );
    }
    c2.terminate().await?;
    Ok(())
}

/// The InternalIP a Node reports.
fn internal_ip(n: &Node) -> Option<String> {
    n.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone())
}

/// The serving certificate (PEM) stored for `node`.
async fn serving_cert(secrets: &Api<Secret>, node: &str) -> Option<String> {
    let s = secrets
        .get_opt(&format!("{node}-serving-cert"))
        .await
        .ok()??;
    let pem = s.data?.get("tls.crt")?.0.clone();
    Some(String::from_utf8_lossy(&pem).into_owned())
}

/// Failover in the default node-identity mode (nodes write with their own CSR-issued identities), the
/// replicas on different addresses as pods on different hosts are: the standby takes the nodes over
/// before any goes NotReady, moves their InternalIP to its own address and has their serving
/// certificates re-issued for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_with_node_identities_moves_nodes_to_the_new_address() -> anyhow::Result<()> {
    let c = Cluster::start_with(Options {
        node_lifecycle: Some(GRACE),
        ..Options::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    if c.apiserver.is_none() {
        return Ok(());
    }
    let election = unique("ha");
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), OPERATOR_NAMESPACE);
    let base = port_base();
    let start = |name: &str, address: &str| {
        let extra = ["--kubelet-address", address, "--kubelet-port-base", &base];
        let user = format!("ha:{name}");
        Operator::start_replica_with_identity(&c, &user, name, &election, "node", &extra)
    };
    let mut a = start("op-a", "127.0.0.1")?;
    wait_leader(&leases, &election, "op-a", T).await;
    let b = start("op-b", "127.0.0.2")?;
    eventually(T, "op-b ready as standby", || async {
        (readyz(&b).await == Some(200)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));

    let backend = unique("ha");
    let nodes: Vec<String> = (0..2).map(|i| format!("{}-{i}", unique("hai"))).collect();
    c.apply_mock_nodes(&backend, &nodes).await?;
    let node_api: Api<Node> = Api::all(c.client.clone());
    let vnodes: Api<VirtualNode> = Api::all(c.client.clone());
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), OPERATOR_NAMESPACE);
    let mut before = Vec::new();
    for n in &nodes {
        eventually(T, &format!("{n} with certificates"), || async {
            let vn = vnodes.get(n).await.ok()?;
            vnode_condition(&vn, "CertificatesReady")
                .filter(|c| c.0 == "True")
                .map(|_| ())
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        let (ready, cert) = eventually(T, &format!("{n} Ready at 127.0.0.1"), || async {
            let node = node_api.get_opt(n).await.ok()??;
            let ready = node_condition(&node, "Ready").filter(|r| r.0 == "True")?;
            let cert = serving_cert(&secrets, n).await?;
            (internal_ip(&node).as_deref() == Some("127.0.0.1")).then_some((ready, cert))
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        before.push((ready, cert));
    }

    // Crash: through the lease expiry, the takeover and the lifecycle controller's grace, every node
    // stays Ready (the same condition, never a transition).
    a.kill();
    let stays_ready = || async {
        for (n, (was, _)) in nodes.iter().zip(&before) {
            let now = node_api
                .get_opt(n)
                .await
                .ok()
                .flatten()
                .and_then(|x| node_condition(&x, "Ready"));
            if now.as_ref() != Some(was) {
                return Some(format!("{n}: Ready {now:?}, was {was:?}"));
            }
        }
        None
    };
    consistently(
        GRACE + Duration::from_secs(1),
        "nodes stay Ready",
        stays_ready,
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        holder(&leases, &election)
            .await
            .is_some_and(|h| h.starts_with("op-b_")),
        "op-b leads"
    );
    let new_ip: std::net::IpAddr = "127.0.0.2".parse()?;
    for (n, (_, old_cert)) in nodes.iter().zip(&before) {
        eventually(T, &format!("{n} at 127.0.0.2"), || async {
            let node = node_api.get_opt(n).await.ok()??;
            (internal_ip(&node).as_deref() == Some("127.0.0.2")).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        let issued = eventually(
            T,
            &format!("{n} serving certificate for 127.0.0.2"),
            || async {
                let cert = serving_cert(&secrets, n).await?;
                let issued = Issued::parse(cert.as_bytes()).ok()?;
                (cert != *old_cert && issued.ips == [new_ip]).then_some(issued)
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(issued.common_name, format!("system:node:{n}"));
    }
    if let Some(msg) = stays_ready().await {
        panic!("after the move: {msg}");
    }
    Ok(())
}
