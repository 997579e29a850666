//! Options users set and what they change, end to end: a VirtualNode's `spec.capacity` in the Node's
//! capacity and allocatable, `--node-status-report-interval` (status reported with nothing changing),
//! and `--log-format json`. Runs against the test apiserver, or a real cluster with
//! FLEETLET_E2E_KUBECONFIG (request-counting checks need the test apiserver).

use std::time::Duration;

use fleetlet_e2e::cluster::unique;
use fleetlet_e2e::fixtures::{mock_backend, virtual_node};
use fleetlet_e2e::observe::port_base;
use fleetlet_e2e::{Cluster, Operator, eventually};

const T: Duration = Duration::from_secs(30);

/// `spec.capacity` replaces what the backend reports (Mock default: cpu 16, memory 64Gi), in the
/// Node's capacity and allocatable alike; keys not given keep the backend's figure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_override_reaches_node_capacity_and_allocatable() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let (backend, node) = (unique("sim"), unique("sized"));
    let _op = Operator::start(&c, &["--kubelet-port-base", &port_base()])?;
    let vnode = virtual_node(&node, &backend).replace(
        "spec: {backendRef:",
        "spec: {capacity: {cpu: \"2\", memory: 3Gi}, backendRef:",
    );
    assert!(vnode.contains("capacity"), "{vnode}");
    c.apply(&format!("{}---\n{vnode}", mock_backend(&backend)))
        .await
        .map_err(anyhow::Error::msg)?;
    let n = c.ready_node(&node, T).await?;
    let status = n.status.unwrap_or_default();
    for (what, list) in [
        ("capacity", status.capacity.unwrap_or_default()),
        ("allocatable", status.allocatable.unwrap_or_default()),
    ] {
        let get = |k: &str| list.get(k).map(|q| q.0.clone()).unwrap_or_default();
        assert_eq!(get("cpu"), "2", "{what}: {list:?}");
        assert_eq!(get("memory"), "3Gi", "{what}: {list:?}");
        assert_eq!(get("pods"), "110", "{what}: backend default kept: {list:?}");
    }
    c.delete_quietly(&[("vnode", &node), ("devb", &backend)])
        .await;
    Ok(())
}

/// Node status is patched on change or when the report interval passed: with nothing changing and
/// a 3 s interval (leases every 1 s), status patches keep coming, about 3 s apart, not every beat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_status_is_reported_every_interval_without_changes() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let Some(api) = c.apiserver.clone() else {
        return Ok(()); // counts requests: needs the test apiserver
    };
    let (backend, node) = (unique("sim"), unique("quiet"));
    let _op = Operator::start(
        &c,
        &[
            "--kubelet-port-base",
            &port_base(),
            "--lease-renew-interval",
            "1s",
            "--node-status-report-interval",
            "3s",
        ],
    )?;
    c.apply_mock_node(&backend, &node).await?;
    c.ready_node(&node, T).await?;
    api.clear_requests();
    let status_patches = || {
        api.requests()
            .into_iter()
            .filter(|r| {
                r.resource == "nodes"
                    && r.subresource == "status"
                    && r.name == node
                    && r.verb == "patch"
                    && r.code == 200
            })
            .map(|r| r.at)
            .collect::<Vec<_>>()
    };
    let at = eventually(T, "three unprompted status patches", || async {
        Some(status_patches()).filter(|p| p.len() >= 3)
    })
    .await?;
    for pair in at.windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(
            gap >= Duration::from_millis(2500),
            "status patched {gap:?} after the previous one: the 3 s interval is not honoured"
        );
    }
    c.delete_quietly(&[("vnode", &node), ("devb", &backend)])
        .await;
    Ok(())
}

/// `--log-format json`: every line the operator writes, from start through a node's registration to a
/// clean shutdown, is one JSON object with a level and a timestamp (what log pipelines ingest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format_writes_one_object_per_line() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let (backend, node) = (unique("sim"), unique("json"));
    let mut op = Operator::start(&c, &["--log-format", "json"])?;
    c.apply_mock_node(&backend, &node).await?;
    c.ready_node(&node, T).await?;
    assert!(op.terminate().await?, "clean shutdown");
    let logs = op.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.iter().any(|l| l.contains("node registered")),
        "the registration is logged: {logs}"
    );
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "no level or timestamp: {line}"
        );
    }
    Ok(())
}
