//! Node identities and certificates from the CSR API (issue 4): issuance with the exact signers and
//! usages, writes made as `system:node:<name>`, storage in Secrets owned by the VirtualNode (reused after
//! a crash, removed with it), rotation without flapping or dropping an open stream, a never-approved and
//! a denied CSR surfaced and retried, and a new serving certificate when the kubelet address changes. The
//! test apiserver signs with its CA, auto-approves valid kubelet client CSRs as kube-controller-manager
//! does, and (as with `--kubelet-certificate-authority`) verifies the kubelet endpoints' serving
//! certificates against that CA when it proxies `kubectl logs` and `kubectl exec`.

use std::time::Duration;

use fleetlet_crds::VirtualNode;
use fleetlet_e2e::cluster::{OPERATOR_NAMESPACE, unique};
use fleetlet_e2e::fixtures::{mock_backend, pod_on, virtual_node};
use fleetlet_e2e::follow::{Follow, ticker};
use fleetlet_e2e::observe::{node_condition, phase, port_base, renew_time, vnode_condition};
use fleetlet_e2e::{Cluster, Operator, eventually};
use fleetlet_test_apiserver::Options;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use vk_runtime::certs::pem::Issued;

const T: Duration = Duration::from_secs(30);

fn options(signing: Duration) -> Options {
    Options {
        signing_duration: signing,
        verify_kubelet_certificates: true,
        ..Options::default()
    }
}

/// Apply a mock backend and one VirtualNode; wait until it is Ready with CertificatesReady=True.
async fn node_with_certificates(c: &Cluster) -> anyhow::Result<String> {
    let (backend, node) = (unique("sim"), unique("crt"));
    c.apply(&format!(
        "{}---\n{}",
        mock_backend(&backend),
        virtual_node(&node, &backend)
    ))
    .await
    .map_err(anyhow::Error::msg)?;
    certificates_ready(c, &node).await?;
    Ok(node)
}

async fn certificates_ready(c: &Cluster, node: &str) -> anyhow::Result<VirtualNode> {
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
async fn stored(c: &Cluster, node: &str, kind: &str) -> anyhow::Result<(String, String)> {
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
async fn running_pod(
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
async fn logs_and_exec_work(c: &Cluster, node: &str) -> anyhow::Result<()> {
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

async fn secret_versions(secrets: &Api<Secret>, node: &str) -> anyhow::Result<Vec<Option<String>>> {
    let mut out = vec![];
    for kind in ["client", "serving"] {
        let s = secrets.get(&format!("{node}-{kind}-cert")).await?;
        out.push(s.metadata.resource_version);
    }
    Ok(out)
}

async fn csr_count(c: &Cluster, node: &str) -> anyhow::Result<usize> {
    let csrs: Api<CertificateSigningRequest> = Api::all(c.client.clone());
    Ok(csrs
        .list(&Default::default())
        .await?
        .items
        .iter()
        .filter(|r| r.metadata.name.as_deref().is_some_and(|n| n.contains(node)))
        .count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_issued_used_stored_reused_after_a_crash_and_removed_with_the_node()
-> anyhow::Result<()> {
    let c = Cluster::start_with(options(Duration::from_secs(365 * 24 * 3600))).await?;
    let base = port_base();
    let args = [
        "--kubelet-port-base",
        base.as_str(),
        "--lease-renew-interval",
        "1s",
        "--node-status-report-interval",
        "2s",
    ];
    let mut op = Operator::start(&c, &args)?;
    let node = node_with_certificates(&c).await?;
    let user = format!("system:node:{node}");

    // Both Secrets: type, labels, owner (this VirtualNode, by UID), and certificates for the node.
    let vnodes: Api<VirtualNode> = Api::all(c.client.clone());
    let vnode_uid = vnodes.get(&node).await?.metadata.uid;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), OPERATOR_NAMESPACE);
    for kind in ["client", "serving"] {
        let s = secrets.get(&format!("{node}-{kind}-cert")).await?;
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
        let labels = s.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("fleetlet.dev/virtual-node"), Some(&node));
        assert_eq!(
            labels.get("fleetlet.dev/certificate").map(String::as_str),
            Some(kind)
        );
        let owner = s.metadata.owner_references.clone().unwrap_or_default();
        assert!(
            owner.iter().any(|o| o.kind == "VirtualNode"
                && o.name == node
                && Some(&o.uid) == vnode_uid.as_ref()),
            "{owner:?} (VirtualNode uid {vnode_uid:?})"
        );
        let (_, cert) = stored(&c, &node, kind).await?;
        let issued = Issued::parse(cert.as_bytes())?;
        assert_eq!(issued.common_name, user);
        assert_eq!(issued.organizations, ["system:nodes"]);
    }
    let (_, serving) = stored(&c, &node, "serving").await?;
    let serving = Issued::parse(serving.as_bytes())?;
    assert_eq!(serving.ips, ["127.0.0.1".parse::<std::net::IpAddr>()?]);
    assert_eq!(serving.dns, std::slice::from_ref(&node));

    // The serving CSR was made by the node itself; its client CSR by the operator.
    let csrs: Api<CertificateSigningRequest> = Api::all(c.client.clone());
    let mine: Vec<_> = csrs
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|r| {
            r.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.contains(&node))
        })
        .collect();
    let serving_csr = mine
        .iter()
        .find(|r| r.spec.signer_name == "kubernetes.io/kubelet-serving")
        .ok_or_else(|| anyhow::anyhow!("no serving CSR"))?;
    assert_eq!(serving_csr.spec.username.as_deref(), Some(user.as_str()));
    assert_eq!(
        serving_csr.spec.usages.as_deref(),
        Some(&["digital signature", "key encipherment", "server auth"].map(String::from)[..])
    );
    // The client CSR asks for exactly what kube-controller-manager auto-approves, and was so approved.
    let client_csr = mine
        .iter()
        .find(|r| r.spec.signer_name == "kubernetes.io/kube-apiserver-client-kubelet")
        .ok_or_else(|| anyhow::anyhow!("no client CSR"))?;
    assert_eq!(
        client_csr.spec.usages.as_deref(),
        Some(&["digital signature", "key encipherment", "client auth"].map(String::from)[..])
    );
    let approval = client_csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Approved"));
    assert_eq!(
        approval.and_then(|c| c.reason.as_deref()),
        Some("AutoApproved"),
        "{approval:?}"
    );

    // Node-scoped writes arrive as the node, and succeed.
    logs_and_exec_work(&c, &node).await?;
    if let Some(api) = &c.apiserver {
        let by_node = |resource: &str, subresource: &str, verb: &str| {
            api.requests().iter().any(|r| {
                (r.resource.as_str(), r.subresource.as_str(), r.verb.as_str())
                    == (resource, subresource, verb)
                    && r.user == user
                    && (200..300).contains(&r.code)
            })
        };
        for (resource, subresource, verb, what) in [
            ("leases", "", "update", "a Lease renewal (PUT)"),
            ("nodes", "status", "patch", "a Node status report"),
            ("events", "", "create", "an Event about its pod"),
        ] {
            eventually(T, &format!("{what} as the node"), || async {
                by_node(resource, subresource, verb).then_some(())
            })
            .await?;
        }
        assert!(by_node("nodes", "", "create"), "registration as {user}");
        assert!(by_node("pods", "status", "patch"), "pod status as {user}");
        // Which certificate Secrets exist was listed once, not asked with a GET per node and kind.
        let missed: Vec<_> = api
            .requests()
            .into_iter()
            .filter(|r| r.resource == "secrets" && r.verb == "get" && r.code == 404)
            .map(|r| r.name)
            .collect();
        assert!(missed.is_empty(), "GETs of absent Secrets: {missed:?}");
    }

    // Crash and restart: the stored certificates are reused, no CSR is created.
    let before = csr_count(&c, &node).await?;
    let versions = secret_versions(&secrets, &node).await?;
    op.kill();
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let last = renew_time(&leases, &node).await;
    let _op = Operator::start(&c, &args)?;
    eventually(T, "lease renewed by the restarted operator", || async {
        renew_time(&leases, &node)
            .await
            .filter(|t| Some(*t) != last)
    })
    .await?;
    logs_and_exec_work(&c, &node).await?;
    assert_eq!(
        csr_count(&c, &node).await?,
        before,
        "no new CSR after a restart"
    );
    let after = secret_versions(&secrets, &node).await?;
    assert_eq!(versions, after, "certificate Secrets untouched");

    // Deleting the VirtualNode removes its certificate Secrets (garbage collection of owned objects).
    vnodes.delete(&node, &DeleteParams::default()).await?;
    eventually(T, "both certificate Secrets deleted", || async {
        let mut gone = true;
        for kind in ["client", "serving"] {
            gone &= secrets
                .get_opt(&format!("{node}-{kind}-cert"))
                .await
                .ok()?
                .is_none();
        }
        gone.then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_before_expiry_without_flapping() -> anyhow::Result<()> {
    // 30 s certificates: renewed 21-27 s after issuance.
    let c = Cluster::start_with(options(Duration::from_secs(30))).await?;
    let _op = Operator::start(&c, &["--lease-renew-interval", "1s"])?;
    let node = node_with_certificates(&c).await?;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let ready_since = |n: &Node| node_condition(n, "Ready");
    let first_ready = eventually(T, "Node Ready", || async {
        nodes
            .get(&node)
            .await
            .ok()
            .and_then(|n| ready_since(&n))
            .filter(|(s, _)| s == "True")
    })
    .await?;
    // A log stream opened before the rotation, through the verifying proxy.
    let script = ticker(300);
    let ticking = running_pod(&c, &node, "tick", &["sh", "-c", &script]).await?;
    eventually(T, "the first tick in the logs", || async {
        c.kubectl(&["logs", &ticking])
            .await
            .ok()
            .filter(|o| o.contains("tick"))
    })
    .await?;
    let mut follow = Follow::start(&c, &ticking)?;
    follow.tick_after(None, T).await?;
    let (client_key, client_cert) = stored(&c, &node, "client").await?;
    let (serving_key, serving_cert) = stored(&c, &node, "serving").await?;
    let rotated = eventually(
        Duration::from_secs(60),
        "both certificates rotated",
        || async {
            let (ck, cc) = stored(&c, &node, "client").await.ok()?;
            let (sk, sc) = stored(&c, &node, "serving").await.ok()?;
            (cc != client_cert && sc != serving_cert).then_some((ck, sk))
        },
    )
    .await?;
    assert!(
        rotated.0 != client_key && rotated.1 != serving_key,
        "a new key with each certificate"
    );
    // The kubelet endpoint serves the new certificate without dropping the stream opened before it.
    let at_rotation = follow.last_tick();
    follow
        .tick_after(at_rotation, Duration::from_secs(10))
        .await?;
    assert!(follow.streaming()?, "kubectl logs -f still streaming");
    // Writes keep working with the new client certificate, the new serving certificate verifies.
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let last = renew_time(&leases, &node).await;
    eventually(T, "lease renewed after rotation", || async {
        renew_time(&leases, &node)
            .await
            .filter(|t| Some(*t) != last)
    })
    .await?;
    logs_and_exec_work(&c, &node).await?;
    let now_ready = nodes.get(&node).await.ok().and_then(|n| ready_since(&n));
    assert_eq!(
        now_ready,
        Some(first_ready),
        "Ready never transitioned during rotation"
    );
    // Well after the swap, with new connections made meanwhile (lease, logs, exec), it still runs.
    follow
        .tick_after(follow.last_tick(), Duration::from_secs(10))
        .await?;
    assert!(follow.streaming()?, "kubectl logs -f still streaming");
    Ok(())
}

/// What an external approver (or `kubectl certificate approve|deny`) does: add the condition through the
/// `approval` subresource.
async fn decide(
    csrs: &Api<CertificateSigningRequest>,
    name: &str,
    type_: &str,
) -> anyhow::Result<()> {
    let mut csr = csrs.get(name).await?;
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    csr.status
        .get_or_insert_with(Default::default)
        .conditions
        .get_or_insert_with(Vec::new)
        .push(
            k8s_openapi::api::certificates::v1::CertificateSigningRequestCondition {
                type_: type_.into(),
                status: "True".into(),
                reason: Some("E2eApprover".into()),
                message: Some(format!("{type_} by the e2e external approver")),
                last_update_time: Some(now.clone()),
                last_transition_time: Some(now),
            },
        );
    csrs.replace_subresource("approval", name, &PostParams::default(), &csr)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_approved_and_denied_serving_csrs_are_reported_and_retried() -> anyhow::Result<()> {
    let c = Cluster::start_with(options(Duration::from_secs(365 * 24 * 3600))).await?;
    let _op = Operator::start(
        &c,
        &[
            "--approve-serving-csrs=false",
            "--csr-approval-timeout",
            "5s",
        ],
    )?;
    let (backend, node) = (unique("sim"), unique("deny"));
    c.apply(&format!(
        "{}---\n{}",
        mock_backend(&backend),
        virtual_node(&node, &backend)
    ))
    .await
    .map_err(anyhow::Error::msg)?;
    let csrs: Api<CertificateSigningRequest> = Api::all(c.client.clone());
    // An undecided serving CSR of the node, other than those in `seen`.
    let pending = |seen: Vec<String>| {
        let (csrs, node) = (&csrs, &node);
        async move {
            csrs.list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|r| {
                    r.spec.signer_name == "kubernetes.io/kubelet-serving"
                        && r.spec.username.as_deref() == Some(&format!("system:node:{node}"))
                        && r.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_none_or(|c| c.is_empty())
                })
                .filter_map(|r| r.metadata.name)
                .find(|n| !seen.contains(n))
        }
    };
    let vnodes: Api<VirtualNode> = Api::all(c.client.clone());
    // Nobody approves the first one: reported when the approval timeout passes, then retried.
    let unanswered = eventually(T, "a pending serving CSR", || pending(vec![])).await?;
    let vn = eventually(
        T,
        "CertificatesReady=False CertificateNotApproved",
        || async {
            vnodes.get(&node).await.ok().filter(|v| {
                vnode_condition(v, "CertificatesReady")
                    .is_some_and(|c| c.0 == "False" && c.1 == "CertificateNotApproved")
            })
        },
    )
    .await?;
    assert!(vnode_condition(&vn, "Ready").is_some_and(|c| c.0 == "True"));
    let events = eventually(T, "a CertificateNotApproved Event", || async {
        c.events_about(&node)
            .await
            .ok()
            .filter(|o| o.contains("CertificateNotApproved"))
    })
    .await?;
    assert!(
        events.contains(&unanswered),
        "the Event names the CSR: {events}"
    );
    // The retry is denied (within the approval timeout).
    let first = eventually(T, "a retried serving CSR", || {
        pending(vec![unanswered.clone()])
    })
    .await?;
    decide(&csrs, &first, "Denied").await?;
    let vn = eventually(T, "CertificatesReady=False CertificateDenied", || async {
        vnodes.get(&node).await.ok().filter(|v| {
            vnode_condition(v, "CertificatesReady")
                .is_some_and(|c| c.0 == "False" && c.1 == "CertificateDenied")
        })
    })
    .await?;
    // The client certificate is fine: the node runs (serving on its self-signed certificate meanwhile).
    assert!(vnode_condition(&vn, "Ready").is_some_and(|c| c.0 == "True"));
    let events = eventually(T, "a CertificateDenied Event", || async {
        c.events_about(&node)
            .await
            .ok()
            .filter(|o| o.contains("CertificateDenied"))
    })
    .await?;
    assert!(events.contains(&first), "the Event names the CSR: {events}");
    // Retried with backoff; an (external) approver approves the retry.
    let second = eventually(T, "a retried serving CSR", || {
        pending(vec![unanswered.clone(), first.clone()])
    })
    .await?;
    decide(&csrs, &second, "Approved").await?;
    certificates_ready(&c, &node).await?;
    logs_and_exec_work(&c, &node).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_kubelet_address_gets_a_new_serving_certificate() -> anyhow::Result<()> {
    let c = Cluster::start_with(options(Duration::from_secs(365 * 24 * 3600))).await?;
    let base = port_base();
    let mut op = Operator::start(&c, &["--kubelet-port-base", &base])?;
    let node = node_with_certificates(&c).await?;
    let (_, old) = stored(&c, &node, "serving").await?;
    anyhow::ensure!(op.terminate().await?, "clean shutdown");
    let _op = Operator::start(
        &c,
        &[
            "--kubelet-port-base",
            &base,
            "--kubelet-address",
            "127.0.0.2",
        ],
    )?;
    let renewed = eventually(T, "serving certificate for 127.0.0.2", || async {
        let (_, cert) = stored(&c, &node, "serving").await.ok()?;
        let issued = Issued::parse(cert.as_bytes()).ok()?;
        (cert != old && issued.ips == ["127.0.0.2".parse::<std::net::IpAddr>().ok()?])
            .then_some(issued)
    })
    .await?;
    assert_eq!(renewed.common_name, format!("system:node:{node}"));
    certificates_ready(&c, &node).await?;
    logs_and_exec_work(&c, &node).await?;
    Ok(())
}
