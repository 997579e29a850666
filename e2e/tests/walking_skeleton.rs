//! The walking-skeleton story (issue 2), end to end: manifests applied with kubectl, the real operator
//! binary, the real kube client. Runs against the test apiserver, or a real cluster with
//! FLEETLET_E2E_KUBECONFIG.

use std::time::Duration;

use fleetlet_crds::{DeviceBackend, VirtualNode};
use fleetlet_e2e::cluster::unique;
use fleetlet_e2e::fixtures::{mock_backend, pod_on, virtual_node};
use fleetlet_e2e::observe::{port_base, vnode_condition};
use fleetlet_e2e::{Cluster, Operator, eventually};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::PostParams;
use kube::{Api, ResourceExt};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_node_becomes_ready_node_that_runs_pods() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let (backend, node) = (unique("sim"), unique("edge"));
    let base = port_base();
    let mut op = Operator::start(&c, &["--kubelet-port-base", &base])?;
    c.apply_mock_node(&backend, &node).await?;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let n = c.ready_node(&node, T).await?;
    let labels = n.labels();
    assert_eq!(labels.get("kubernetes.io/hostname"), Some(&node));
    assert_eq!(
        labels.get("kubernetes.io/os").map(String::as_str),
        Some("linux")
    );
    assert!(labels.contains_key("kubernetes.io/arch"));
    assert_eq!(
        labels.get("fleetlet.dev/virtual-node").map(String::as_str),
        Some("true")
    );
    assert_eq!(labels.get("fleetlet.dev/backend"), Some(&backend));
    let taints = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    assert!(
        taints.iter().any(|t| t.key == "fleetlet.dev/virtual-node"
            && t.value.as_deref() == Some("true")
            && t.effect == "NoSchedule"),
        "{taints:?}"
    );
    let status = n.status.clone().unwrap_or_default();
    let addrs = status.addresses.unwrap_or_default();
    assert!(
        addrs
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == "127.0.0.1"),
        "{addrs:?}"
    );
    let port = status
        .daemon_endpoints
        .and_then(|d| d.kubelet_endpoint)
        .map(|e| e.port)
        .unwrap_or(0);
    assert_eq!(
        port.to_string(),
        base,
        "the first node's kubelet port is the port base"
    );
    let cap = status.capacity.unwrap_or_default();
    assert!(
        cap.contains_key("cpu") && cap.contains_key("memory") && cap.contains_key("pods"),
        "{cap:?}"
    );
    assert!(status.allocatable.is_some());
    let info = status.node_info.unwrap_or_default();
    assert!(
        info.kubelet_version.contains("fleetlet"),
        "{}",
        info.kubelet_version
    );
    assert_eq!(info.operating_system, "linux");

    // The Lease: owned by the Node, 40 s, renewed.
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let lease = eventually(T, "node Lease", || async {
        leases.get_opt(&node).await.ok().flatten()
    })
    .await?;
    let spec = lease.spec.clone().unwrap_or_default();
    assert_eq!(spec.lease_duration_seconds, Some(40));
    assert_eq!(spec.holder_identity.as_deref(), Some(node.as_str()));
    let owner = lease
        .owner_references()
        .first()
        .cloned()
        .expect("lease has an owner");
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.name.as_str(),
            Some(owner.uid.as_str())
        ),
        ("Node", node.as_str(), n.metadata.uid.as_deref())
    );

    // VirtualNode status and printer columns.
    let vnodes: Api<VirtualNode> = Api::all(c.client.clone());
    let vn = eventually(T, "VirtualNode Ready", || async {
        vnodes
            .get(&node)
            .await
            .ok()
            .filter(|v| vnode_condition(v, "Ready").is_some_and(|r| r.0 == "True"))
    })
    .await?;
    for t in ["Ready", "BackendReachable", "NodeRegistered"] {
        let cond = vn
            .status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .find(|c| c.type_ == t)
            .cloned()
            .unwrap_or_else(|| panic!("condition {t}"));
        assert_eq!(cond.status, "True", "{t}");
        assert!(
            !cond.reason.is_empty() && cond.observed_generation.is_some(),
            "{cond:?}"
        );
    }
    let st = vn.status.clone().unwrap();
    assert_eq!(st.node_name.as_deref(), Some(node.as_str()));
    assert_eq!(st.kubelet_endpoint, Some(format!("127.0.0.1:{port}")));
    let table = c.kubectl(&["get", "vnode", &node]).await?;
    assert!(
        table.contains("BACKEND")
            && table.contains("READY")
            && table.contains(&backend)
            && table.contains("True"),
        "{table}"
    );
    let both = c.kubectl(&["get", "fleetlet"]).await?;
    assert!(
        both.contains(&node) && both.contains(&backend),
        "category lists both kinds: {both}"
    );

    // DeviceBackend status: accepted, its kind, the VirtualNodes using it, the generation described.
    let backends: Api<DeviceBackend> = Api::all(c.client.clone());
    let uses = |n: i32| {
        let backends = &backends;
        let backend = &backend;
        async move {
            backends.get(backend).await.ok().filter(|b| {
                let st = b.status.as_ref();
                st.and_then(|s| s.virtual_nodes) == Some(n)
                    && st.and_then(|s| s.observed_generation) == b.metadata.generation
            })
        }
    };
    let db = eventually(T, "DeviceBackend status counts 1 VirtualNode", || uses(1)).await?;
    let st = db.status.unwrap_or_default();
    assert_eq!(st.type_.as_deref(), Some("mock"));
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Accepted" && c.status == "True" && !c.reason.is_empty()),
        "{:?}",
        st.conditions
    );

    // A pod placed by the scheduler reaches Running with full status.
    let ns = "default";
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    let pod_name = unique("pod");
    let pod: Pod = serde_json::from_value(pod_on(ns, &pod_name, &node))?;
    pods.create(&PostParams::default(), &pod).await?;
    let running = eventually(T, "pod Running", || async {
        pods.get(&pod_name)
            .await
            .ok()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await?;
    let s = running.status.clone().unwrap();
    assert_eq!(
        running.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(node.as_str())
    );
    for t in ["Ready", "ContainersReady", "Initialized", "PodScheduled"] {
        assert!(
            s.conditions
                .as_ref()
                .unwrap()
                .iter()
                .any(|c| c.type_ == t && c.status == "True"),
            "condition {t}: {:?}",
            s.conditions
        );
    }
    assert!(s.start_time.is_some() && s.pod_ip.is_some());
    // The operator's metrics count the pod on its node by phase, and drop it once it is gone.
    let running_metric = format!(r#"fleetlet_pods{{node="{node}",phase="Running"}}"#);
    eventually(T, "fleetlet_pods counts the Running pod", || async {
        let line = op.metric_line(&running_metric).await?;
        (line == format!("{running_metric} 1")).then_some(())
    })
    .await?;
    let cs = s.container_statuses.clone().unwrap_or_default();
    assert!(
        cs.len() == 1
            && cs[0].ready
            && cs[0]
                .state
                .as_ref()
                .and_then(|st| st.running.as_ref())
                .is_some(),
        "{cs:?}"
    );

    // kubectl delete pod completes gracefully (kubectl waits until the object is gone).
    let started = std::time::Instant::now();
    c.kubectl(&["delete", "pod", "-n", ns, &pod_name, "--timeout=30s"])
        .await?;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "pod deletion took {:?}",
        started.elapsed()
    );
    assert!(pods.get_opt(&pod_name).await?.is_none());
    eventually(T, "fleetlet_pods without the deleted pod", || async {
        let url = op.metrics_url()?;
        let (_, body) = fleetlet_e2e::probe::get(&url).await.ok()?;
        let counted = body
            .lines()
            .any(|l| l.starts_with(&running_metric) && !l.ends_with(" 0"));
        (!counted).then_some(())
    })
    .await?;
    if let Some(api) = &c.apiserver {
        let reqs = api.requests();
        let final_delete = reqs.iter().rev().find(|r| {
            r.resource == "pods" && r.verb == "delete" && r.name == pod_name && r.code == 200
        });
        // The virtual node removes the pod with its own CSR-issued identity, as a kubelet does.
        let node_user = format!("system:node:{node}");
        assert!(
            final_delete.is_some_and(|r| r.user == node_user),
            "the node removed the pod as {node_user}: {final_delete:?}"
        );
        assert!(
            reqs.iter().any(|r| r.resource == "pods"
                && r.subresource == "status"
                && r.name == pod_name
                && r.verb == "patch"),
            "final status reported"
        );
    }

    // Deleting the VirtualNode removes the Node and the Lease.
    c.kubectl(&["delete", "vnode", &node, "--timeout=30s"])
        .await?;
    eventually(T, "Node removed", || async {
        nodes
            .get_opt(&node)
            .await
            .ok()
            .and_then(|n| n.is_none().then_some(()))
    })
    .await?;
    eventually(T, "Lease removed", || async {
        leases
            .get_opt(&node)
            .await
            .ok()
            .and_then(|l| l.is_none().then_some(()))
    })
    .await?;
    eventually(T, "DeviceBackend status counts 0 VirtualNodes", || uses(0)).await?;
    assert!(op.is_running());
    c.delete_quietly(&[("devb", &backend)]).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_backend_is_reported_without_retry_storm() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let (backend, node) = (unique("absent"), unique("orphan"));
    let mut op = Operator::start(&c, &[])?;
    c.apply(&virtual_node(&node, &backend))
        .await
        .map_err(anyhow::Error::msg)?;
    let vnodes: Api<VirtualNode> = Api::all(c.client.clone());
    let vn = eventually(T, "Ready=False BackendNotFound", || async {
        vnodes.get(&node).await.ok().filter(|v| {
            vnode_condition(v, "Ready").is_some_and(|r| r.0 == "False" && r.1 == "BackendNotFound")
        })
    })
    .await?;
    let msg = vn
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .message;
    assert!(msg.contains(&backend), "message names the backend: {msg}");
    // The operator writes events.k8s.io/v1 Events; `kubectl get events` reads them as core/v1 Events.
    let events = eventually(T, "a BackendNotFound Event", || async {
        let out = c.events_about(&node).await.ok()?;
        out.contains("BackendNotFound").then_some(out)
    })
    .await?;
    assert!(events.contains("BackendNotFound"), "{events}");
    if let Some(api) = &c.apiserver {
        api.clear_requests();
        tokio::time::sleep(Duration::from_secs(3)).await; // observe quiet: counting writes over a window
        let writes = api
            .requests()
            .into_iter()
            .filter(|r| {
                (r.resource == "virtualnodes" || r.resource == "events")
                    && r.verb != "get"
                    && r.verb != "list"
                    && r.verb != "watch"
            })
            .count();
        assert!(
            writes == 0,
            "no retry storm: {writes} VirtualNode or Event writes in 3 s"
        );
    }
    assert!(op.is_running(), "operator survives bad input");
    // The backend appears: the node comes up without touching the VirtualNode.
    c.apply(&mock_backend(&backend))
        .await
        .map_err(anyhow::Error::msg)?;
    eventually(T, "VirtualNode Ready after backend appears", || async {
        vnodes
            .get(&node)
            .await
            .ok()
            .filter(|v| vnode_condition(v, "Ready").is_some_and(|r| r.0 == "True"))
    })
    .await?;
    c.delete_quietly(&[("vnode", &node), ("devb", &backend)])
        .await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_and_cel_reject_malformed_specs() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let both = format!(
        "apiVersion: fleetlet.dev/v1alpha1\nkind: DeviceBackend\nmetadata: {{name: {}}}\nspec: {{mock: {{}}, ssh: {{user: pi, privateKeySecretRef: {{namespace: keys, name: lab-key}}}}}}\n",
        unique("both")
    );
    let err = c.apply(&both).await.expect_err("both backends rejected");
    assert!(
        err.contains("exactly one of spec.mock or spec.ssh"),
        "{err}"
    );
    let none = format!(
        "apiVersion: fleetlet.dev/v1alpha1\nkind: DeviceBackend\nmetadata: {{name: {}}}\nspec: {{}}\n",
        unique("none")
    );
    assert!(c.apply(&none).await.is_err(), "no backend rejected");
    let no_ref = format!(
        "apiVersion: fleetlet.dev/v1alpha1\nkind: VirtualNode\nmetadata: {{name: {}}}\nspec: {{}}\n",
        unique("noref")
    );
    let err = c
        .apply(&no_ref)
        .await
        .expect_err("missing backendRef rejected");
    assert!(err.contains("backendRef"), "{err}");
    let bad_delay = format!(
        "apiVersion: fleetlet.dev/v1alpha1\nkind: DeviceBackend\nmetadata: {{name: {}}}\nspec: {{mock: {{startDelayMs: -1}}}}\n",
        unique("neg")
    );
    assert!(
        c.apply(&bad_delay).await.is_err(),
        "negative delay rejected"
    );
    // backendRef is immutable.
    let (b, n) = (unique("sim"), unique("imm"));
    c.apply_mock_node(&b, &n).await?;
    let err = c
        .apply(&virtual_node(&n, "other"))
        .await
        .expect_err("backendRef change rejected");
    assert!(err.contains("immutable"), "{err}");
    c.delete_quietly(&[("vnode", &n), ("devb", &b)]).await;
    Ok(())
}
