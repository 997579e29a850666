//! RBAC is provably sufficient and least privilege (issue 6): the operator runs the main scenarios under
//! its own identity against the test apiserver, which records every request; each request must be
//! covered by `charts/fleetlet/rbac/rules.yaml` (cluster rules, or a Role in the request's namespace),
//! and every (rule, group, resource, verb) of the rules file must have been used. `docs/rbac.md` must
//! match the rules file (`FLEETLET_BLESS=1` rewrites its generated section).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context as _;
use fleetlet_e2e::cluster::{OPERATOR_NAMESPACE, unique};
use fleetlet_e2e::fixtures::{mock_backend, virtual_node};
use fleetlet_e2e::observe::{node_ready, phase, renew_time};
use fleetlet_e2e::rbac::{Mode, Need, RulesFile, repo_root};
use fleetlet_e2e::{Cluster, Operator, eventually};
use fleetlet_test_apiserver::UserInfo;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, PostParams};

const T: Duration = Duration::from_secs(30);
const USER: &str = "system:serviceaccount:fleetlet-system:fleetlet";

#[test]
fn rules_file_has_no_wildcards_and_docs_match() -> anyhow::Result<()> {
    let rules = RulesFile::load()?;
    for r in rules.all_rules() {
        assert!(!r.has_wildcard(), "wildcard in {r:?}");
        assert!(
            !r.verbs.is_empty() && !r.resources.is_empty() && !r.api_groups.is_empty(),
            "empty list in {r:?}"
        );
    }
    let path = repo_root().join("docs/rbac.md");
    let doc = std::fs::read_to_string(&path)?;
    let (begin, end) = (
        "<!-- BEGIN GENERATED: rules -->\n",
        "<!-- END GENERATED: rules -->",
    );
    let start = doc.find(begin).map(|i| i + begin.len());
    let stop = doc.find(end);
    let (Some(start), Some(stop)) = (start, stop) else {
        anyhow::bail!("docs/rbac.md lacks the generated-section markers");
    };
    let want = rules.markdown();
    if doc[start..stop] != want {
        if std::env::var_os("FLEETLET_BLESS").is_some() {
            std::fs::write(&path, format!("{}{want}{}", &doc[..start], &doc[stop..]))?;
        } else {
            panic!(
                "docs/rbac.md is stale: run `FLEETLET_BLESS=1 cargo test -p fleetlet-e2e --test rbac`\n--- want ---\n{want}"
            );
        }
    }
    Ok(())
}

/// The operator's requests in `mode` (on a cluster of its own); `None` on a real cluster.
async fn requests_in(mode: Mode) -> anyhow::Result<Option<Vec<Need>>> {
    let c = Cluster::start().await?;
    let Some(api) = c.apiserver.clone() else {
        return Ok(None); // on a real cluster the chart's own RBAC is what gets exercised
    };
    // The operator gets its own identity: a ServiceAccount-like user, recorded on every request.
    let kubeconfig = c
        .kubeconfig_as(USER)?
        .ok_or_else(|| anyhow::anyhow!("test apiserver expected"))?;
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    let identity = if mode.node_identity {
        "node"
    } else {
        "operator"
    };
    let mut op = Operator::start_with_env(
        &c,
        &[
            "--lease-renew-interval",
            "1s",
            "--node-identity",
            identity,
            "--approve-serving-csrs",
            if mode.approver { "true" } else { "false" },
            "--shards",
            if mode.sharded { "2" } else { "1" },
        ],
        &[("KUBECONFIG", kubeconfig.as_str())],
    )?;
    if let Err(e) = scenario(&c, &mut op).await {
        let pods = c.kubectl(&["get", "pods", "-A", "-o", "yaml"]).await;
        panic!(
            "--node-identity={identity}: {e:#}\n--- pods ---\n{pods:?}\n--- operator log ---\n{}",
            op.logs()
        );
    }
    let requests: Vec<Need> = api
        .requests()
        .iter()
        .filter(|r| r.user == USER)
        .map(Need::from_record)
        .collect();
    anyhow::ensure!(
        !requests.is_empty(),
        "the operator's requests were recorded under its own user"
    );
    Ok(Some(requests))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_requests_match_the_chart_rules_both_ways() -> anyhow::Result<()> {
    let modes = [
        Mode {
            node_identity: true,
            approver: true,
            sharded: true,
        },
        Mode {
            node_identity: false,
            approver: false,
            sharded: false,
        },
    ];
    let (a, b) = tokio::join!(requests_in(modes[0]), requests_in(modes[1]));
    let (Some(a), Some(b)) = (a?, b?) else {
        return Ok(());
    };
    let rules = RulesFile::load()?;
    let mut uncovered = BTreeSet::new();
    let mut used = BTreeSet::new();
    let mut granted = BTreeSet::new();
    let mut all = BTreeSet::new();
    for (mode, requests) in modes.iter().zip([&a, &b]) {
        granted.extend(rules.grants(*mode));
        for need in requests {
            all.insert((
                mode.node_identity,
                need.verb.clone(),
                need.group.clone(),
                need.resource.clone(),
                need.namespace.clone(),
            ));
            match rules.cover(need, OPERATOR_NAMESPACE, *mode) {
                Some(grant) => {
                    used.insert(grant);
                }
                None => {
                    uncovered.insert((
                        mode.node_identity,
                        Need {
                            name: String::new(),
                            ..need.clone()
                        },
                    ));
                }
            }
        }
    }
    let unused: Vec<_> = granted.difference(&used).cloned().collect();
    let lines = |v: Vec<String>| v.join("\n  ");
    assert!(
        uncovered.is_empty() && unused.is_empty(),
        "RBAC mismatch.\nRequests not covered by rules.yaml (node identity?, verb group resource namespace):\n  {}\nGrants never used (set, rule index, group, resource, verb):\n  {}\nAll requests:\n  {}",
        lines(
            uncovered
                .iter()
                .map(|(m, n)| format!(
                    "{m} {} {:?} {} {:?}",
                    n.verb, n.group, n.resource, n.namespace
                ))
                .collect()
        ),
        lines(unused.iter().map(|g| format!("{g:?}")).collect()),
        lines(all.iter().map(|a| format!("{a:?}")).collect()),
    );
    Ok(())
}

/// The main scenarios: nodes, a pod with ConfigMap/Secret env, logs, deletion, node removal, shutdown.
async fn scenario(c: &Cluster, op: &mut Operator) -> anyhow::Result<()> {
    // A backend with two nodes, both Ready.
    let (backend, a, b) = (unique("sim"), unique("ra"), unique("rb"));
    let yaml = format!(
        "{}---\n{}---\n{}",
        mock_backend(&backend),
        virtual_node(&a, &backend),
        virtual_node(&b, &backend)
    );
    c.apply(&yaml).await.map_err(anyhow::Error::msg)?;
    let nodes: Api<Node> = Api::all(c.client.clone());
    for n in [&a, &b] {
        eventually(T, &format!("{n} Ready"), || async {
            nodes.get_opt(n).await.ok().flatten().filter(node_ready)
        })
        .await?;
    }

    // Heartbeats: every node's Lease is renewed at least once.
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    for n in [&a, &b] {
        let first = renew_time(&leases, n).await;
        eventually(T, &format!("{n} lease renewed"), || async {
            renew_time(&leases, n).await.filter(|t| Some(*t) != first)
        })
        .await?;
    }
    // The kubelet endpoint authenticates (client CA, TokenReview) and authorizes (SubjectAccessReview).
    if let Some(api) = c.apiserver.as_ref() {
        use fleetlet_test_apiserver::kubelet::client::{Credentials, get};
        let token = unique("viewer");
        api.add_token(
            &token,
            UserInfo {
                username: "viewer".into(),
                uid: String::new(),
                groups: vec!["system:masters".into()],
            },
        );
        let node = nodes.get(&a).await?;
        let port = node
            .status
            .as_ref()
            .and_then(|s| s.daemon_endpoints.as_ref()?.kubelet_endpoint.as_ref())
            .and_then(|e| u16::try_from(e.port).ok())
            .context("kubelet endpoint")?;
        let host = "127.0.0.1";
        let creds = Credentials {
            bearer_token: Some(&token),
            ..Credentials::default()
        };
        let (code, _) = get(host, port, "/pods", creds)
            .await
            .map_err(|e| anyhow::anyhow!("kubelet /pods: {e}"))?;
        anyhow::ensure!(code == 200, "bearer token on the kubelet endpoint: {code}");
    }

    // A taint added to the VirtualNode reaches its existing Node (re-registration: labels as the node,
    // taints with the operator's identity, since NodeRestriction forbids a node changing its taints).
    let taints = r#"{"spec":{"taints":[{"key":"fleetlet.dev/virtual-node","value":"true","effect":"NoSchedule"},{"key":"example.com/lab","value":"b","effect":"PreferNoSchedule"}]}}"#;
    c.kubectl(&["patch", "virtualnode", &b, "--type=merge", "-p", taints])
        .await?;
    eventually(T, &format!("{b} tainted example.com/lab"), || async {
        let node = nodes.get_opt(&b).await.ok().flatten()?;
        let spec = node.spec.as_ref()?;
        spec.taints
            .as_ref()?
            .iter()
            .any(|t| t.key == "example.com/lab")
            .then_some(())
    })
    .await?;
    eventually(T, &format!("{b} Ready after the taint change"), || async {
        nodes.get_opt(&b).await.ok().flatten().filter(node_ready)
    })
    .await?;

    // The backend turns unhealthy and recovers: NotReady and Ready Events (the repeat is a patch).
    for healthy in [false, true] {
        let yaml =
            mock_backend(&backend).replace("mock: {}", &format!("mock: {{healthy: {healthy}}}"));
        c.apply(&yaml).await.map_err(anyhow::Error::msg)?;
        eventually(T, &format!("{a} Ready={healthy}"), || async {
            nodes
                .get_opt(&a)
                .await
                .ok()
                .flatten()
                .filter(|n| node_ready(n) == healthy)
        })
        .await?;
    }
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    eventually(T, "a repeated NodeReady Event", || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("NodeReady") && e.series.is_some())
    })
    .await?;

    // A pod whose environment comes from a ConfigMap and a Secret runs, and is deleted.
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "rbac-cm", "namespace": "default"}, "data": {"greeting": "hello"}
    }))?;
    Api::<ConfigMap>::namespaced(c.client.clone(), "default")
        .create(&PostParams::default(), &cm)
        .await?;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "rbac-secret", "namespace": "default"}, "data": {"token": "czNjcmV0"}
    }))?;
    Api::<Secret>::namespaced(c.client.clone(), "default")
        .create(&PostParams::default(), &secret)
        .await?;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "rbac-pod", "namespace": "default"},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": a},
            "tolerations": [{"key": "fleetlet.dev/virtual-node", "operator": "Exists", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "echo $GREETING $TOKEN; sleep 3600"],
                "env": [
                    {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "rbac-cm", "key": "greeting"}}},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "rbac-secret", "key": "token"}}}
                ]}]
        }
    });
    pods.create(&PostParams::default(), &serde_json::from_value(pod)?)
        .await?;
    eventually(T, "pod Running", || async {
        pods.get("rbac-pod")
            .await
            .ok()
            .filter(|p| phase(p) == Some("Running"))
    })
    .await?;
    // Logs through the apiserver's kubelet proxy: the kubelet endpoint authenticates and authorizes the
    // apiserver with the operator's identity (TokenReview / SubjectAccessReview or the client CA).
    // The container echoes its ConfigMap- and Secret-resolved variables: the values arrived.
    eventually(
        T,
        "rbac-pod logs show the ConfigMap and Secret values",
        || async {
            c.kubectl(&["logs", "-n", "default", "rbac-pod"])
                .await
                .ok()
                .filter(|l| l == "hello s3cret\n")
        },
    )
    .await?;
    pods.delete("rbac-pod", &DeleteParams::default()).await?;
    eventually(T, "pod gone", || async {
        matches!(pods.get_opt("rbac-pod").await, Ok(None)).then_some(())
    })
    .await?;

    // Removing a VirtualNode removes its Node and Lease (finalizer).
    c.kubectl(&["delete", "virtualnode", &b, "--wait=false"])
        .await?;
    eventually(T, "Node of the deleted VirtualNode gone", || async {
        matches!(nodes.get_opt(&b).await, Ok(None)).then_some(())
    })
    .await?;

    // A planned shutdown releases the leader Lease.
    assert!(op.terminate().await?, "clean exit on SIGTERM");

    Ok(())
}
