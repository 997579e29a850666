//! Shared steps of the kubelet-API scenario (`tests/kubelet_api.rs`): a cluster with the operator
//! and one Ready virtual node whose kubelet endpoint answers, the transport a kubectl run really
//! used (from the test apiserver's proxy log), the endpoint's own authn/authz checks, and the
//! operator's metrics of that traffic.

use std::time::Duration;

use anyhow::Context as _;
use fleetlet_test_apiserver::UserInfo;
use fleetlet_test_apiserver::kubelet::ProxyRecord;
use fleetlet_test_apiserver::kubelet::client::{self, ClientError, Credentials};
use fleetlet_test_apiserver::kubelet::tls::DialError;
use fleetlet_test_apiserver::kubelet::{ClientCa, Identity};
use k8s_openapi::api::core::v1::Node;
use kube::Api;

use crate::cluster::{Cluster, unique};
use crate::kubelet::{Transport, kubectl};
use crate::operator::Operator;
use crate::wait::eventually;

/// A cluster, the operator, and a Ready virtual node serving its kubelet endpoint.
pub struct Setup {
    pub c: Cluster,
    pub node: String,
    /// Kept alive for the scenario; stopped on drop.
    pub _op: Operator,
}

/// The kubelet endpoint (`InternalIP`, port) a Node advertises.
pub fn endpoint(node: &Node) -> Option<(String, u16)> {
    let st = node.status.as_ref()?;
    let ip = st
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")?
        .address
        .clone();
    let port = st
        .daemon_endpoints
        .as_ref()?
        .kubelet_endpoint
        .as_ref()?
        .port;
    u16::try_from(port).ok().filter(|p| *p > 0).map(|p| (ip, p))
}

/// Starts everything and waits until the node is Ready and its endpoint accepts connections.
pub async fn setup() -> anyhow::Result<Setup> {
    let c = Cluster::start().await?;
    let (backend, node) = (unique("sim"), unique("kapi"));
    let op = Operator::start(&c, &[])?;
    c.apply_mock_node(&backend, &node).await?;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let (host, port) = eventually(
        Duration::from_secs(60),
        "Node Ready with a kubelet endpoint",
        || async {
            let n = nodes.get_opt(&node).await.ok().flatten()?;
            let ready = n
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then(|| endpoint(&n)).flatten()
        },
    )
    .await?;
    eventually(
        Duration::from_secs(30),
        "kubelet endpoint answering",
        || async {
            tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .ok()
        },
    )
    .await?;
    Ok(Setup { c, node, _op: op })
}

/// The latest request the test apiserver proxied for pod subresource `sub` (None on a real cluster).
pub fn last_record(c: &Cluster, sub: &str) -> Option<ProxyRecord> {
    c.apiserver
        .as_ref()?
        .kubelet_requests()
        .into_iter()
        .rev()
        .find(|r| r.subresource == sub)
}

/// Checks that kubectl `name` with `transport` reached the kubelet over the expected protocol:
/// WebSocket for kubectl >= 1.30 by default, SPDY/3.1 for 1.27 or when WebSockets are disabled.
pub fn exec_transport_ok(
    c: &Cluster,
    name: &str,
    transport: Transport,
    sub: &str,
) -> anyhow::Result<()> {
    let Some(r) = last_record(c, sub) else {
        return Ok(());
    };
    let want = if name == "kubectl.1.27" || transport == Transport::Spdy {
        "SPDY/3.1"
    } else {
        "websocket"
    };
    anyhow::ensure!(
        r.upgrade
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case(want))
            && r.forwarded.status == 101,
        "{name} {transport:?} {sub}: expected an accepted {want} upgrade, got {r:?}"
    );
    if want == "websocket" {
        anyhow::ensure!(
            r.forwarded.protocol.as_deref() == Some("v5.channel.k8s.io"),
            "{name} {sub}: expected v5.channel.k8s.io, got {r:?}"
        );
    }
    Ok(())
}

async fn code_of(host: &str, port: u16, path: &str, creds: Credentials<'_>) -> anyhow::Result<u16> {
    client::get(host, port, path, creds)
        .await
        .map(|(code, _)| code)
        .map_err(|e| anyhow::anyhow!("{path}: {e}"))
}

/// The kubelet endpoint itself: 401 without credentials or with an untrusted certificate (or that
/// certificate refused in the TLS handshake), 403 for
/// a user the authorizer denies, 200 for allowed users (certificate or bearer token). Needs the
/// test apiserver's client CA and token registry: skipped on a real cluster.
pub async fn endpoint_auth(c: &Cluster, node: &str) -> anyhow::Result<()> {
    let Some(api) = c.apiserver.as_ref() else {
        return Ok(());
    };
    let nodes: Api<Node> = Api::all(c.client.clone());
    let (host, port) = endpoint(&nodes.get(node).await?).context("node endpoint")?;
    let id = |(cert_pem, key_pem): (String, String)| Identity { cert_pem, key_pem };
    let nobody = Credentials::default();
    anyhow::ensure!(
        code_of(&host, port, "/pods", nobody).await? == 401,
        "no credentials: 401"
    );
    let stranger = ClientCa::generate("untrusted-ca")?.issue("admin", &["system:masters"])?;
    let untrusted = client::get(
        &host,
        port,
        "/pods",
        Credentials {
            client_cert: Some(&stranger),
            ..nobody
        },
    )
    .await;
    // A Go kubelet requests client certificates without requiring them, ignores one it cannot
    // verify and answers 401. vk-runtime's rustls verifier instead aborts the handshake when a
    // presented certificate does not verify. Both keep the caller out; accept either, nothing else.
    let refused_in_handshake = matches!(
        &untrusted,
        Err(ClientError::Http(_) | ClientError::Dial(DialError::Handshake { .. }))
    );
    anyhow::ensure!(
        matches!(untrusted, Ok((401, _))) || refused_in_handshake,
        "a certificate from an untrusted CA: want 401 (or a refused handshake), got {untrusted:?}"
    );
    let eve = id(api.client_cert("eve", &[]));
    let denied = code_of(
        &host,
        port,
        "/pods",
        Credentials {
            client_cert: Some(&eve),
            ..nobody
        },
    )
    .await?;
    anyhow::ensure!(denied == 403, "denied user: want 403, got {denied}");
    let alice = id(api.client_cert("alice", &["system:masters"]));
    for path in ["/pods", "/healthz", "/stats/summary", "/metrics/resource"] {
        let code = code_of(
            &host,
            port,
            path,
            Credentials {
                client_cert: Some(&alice),
                ..nobody
            },
        )
        .await?;
        anyhow::ensure!(code == 200, "allowed user on {path}: want 200, got {code}");
    }
    let apiserver = api.kubelet_client_identity();
    let code = code_of(
        &host,
        port,
        "/pods",
        Credentials {
            client_cert: Some(&apiserver),
            ..nobody
        },
    )
    .await?;
    anyhow::ensure!(
        code == 200,
        "the apiserver's kubelet-client cert: want 200, got {code}"
    );
    api.add_token(
        "kubelet-api-e2e-token",
        UserInfo {
            username: "bob".into(),
            uid: String::new(),
            groups: vec!["system:masters".into()],
        },
    );
    let token = |t: &'static str| Credentials {
        bearer_token: Some(t),
        ..nobody
    };
    let code = code_of(&host, port, "/pods", token("kubelet-api-e2e-token")).await?;
    anyhow::ensure!(code == 200, "valid bearer token: want 200, got {code}");
    let code = code_of(&host, port, "/pods", token("wrong-token")).await?;
    anyhow::ensure!(code == 401, "invalid bearer token: want 401, got {code}");
    sar_path_mapping(c, &host, port, node).await
}

/// The kubelet's path -> (verb, subresource) mapping, as SubjectAccessReviews see it: a user granted
/// only `get nodes/proxy` on this node reads `/pods` but may not exec (`create`, even over GET); a
/// user granted `create nodes/proxy` gets past authorization (the exec then fails for lacking an
/// upgrade, not with 403).
async fn sar_path_mapping(c: &Cluster, host: &str, port: u16, node: &str) -> anyhow::Result<()> {
    let Some(api) = c.apiserver.as_ref() else {
        return Ok(());
    };
    let fallback = fleetlet_test_apiserver::server::default_authorizer();
    let node_name = node.to_string();
    api.set_authorizer(std::sync::Arc::new(move |spec: &serde_json::Value| {
        let ra = &spec["resourceAttributes"];
        let on_proxy = ra["resource"] == "nodes"
            && ra["subresource"] == "proxy"
            && ra["name"] == node_name.as_str();
        match spec["user"].as_str() {
            Some("carol") => on_proxy && ra["verb"] == "get",
            Some("dave") => on_proxy && ra["verb"] == "create",
            _ => fallback(spec),
        }
    }));
    let id = |(cert_pem, key_pem): (String, String)| Identity { cert_pem, key_pem };
    let (carol, dave) = (
        id(api.client_cert("carol", &[])),
        id(api.client_cert("dave", &[])),
    );
    let as_user = |who| Credentials {
        client_cert: Some(who),
        ..Credentials::default()
    };
    let exec = "/exec/default/no-such-pod/main?command=true&output=1";
    let code = code_of(host, port, "/pods", as_user(&carol)).await?;
    anyhow::ensure!(
        code == 200,
        "get nodes/proxy on /pods: want 200, got {code}"
    );
    let code = code_of(host, port, exec, as_user(&carol)).await?;
    anyhow::ensure!(
        code == 403,
        "get nodes/proxy only, on /exec: want 403, got {code}"
    );
    let code = code_of(host, port, "/pods", as_user(&dave)).await?;
    anyhow::ensure!(
        code == 403,
        "create nodes/proxy only, on /pods: want 403, got {code}"
    );
    let code = code_of(host, port, exec, as_user(&dave)).await?;
    anyhow::ensure!(
        code != 403 && code != 401,
        "create nodes/proxy on /exec: want past authorization, got {code}"
    );
    Ok(())
}

/// `kubectl exec` and `kubectl logs` on `pod`, then the operator's `/metrics`: kubelet API requests
/// by route template (the exec's upgrade as 101, the earlier `/stats/summary` and unknown-path
/// answers; 401/403 too when the test apiserver drove [`endpoint_auth`]) and Mock backend latencies
/// per operation. No series of either family may carry the pod's name.
pub async fn kubelet_metrics(c: &Cluster, op: &Operator, pod: &str) -> anyhow::Result<()> {
    let url = op
        .metrics_url()
        .context("the harness chose no metrics address")?;
    let exec = kubectl(
        c,
        "kubectl",
        Transport::Default,
        &["exec", pod, "--", "echo", "m"],
        None,
    )
    .await?;
    anyhow::ensure!(exec.code == 0, "exec: {}", exec.stderr);
    let logs = kubectl(c, "kubectl", Transport::Default, &["logs", pod], None).await?;
    anyhow::ensure!(logs.code == 0, "logs: {}", logs.stderr);
    let family = |text: &str, name: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(name))
            .map(String::from)
            .collect()
    };
    let mut wanted = vec![
        r#"route="/exec/{namespace}/{pod}/{container}""#.to_string(),
        r#"route="/containerLogs/{namespace}/{pod}/{container}",method="GET",code="200""#.into(),
        r#"route="/stats/summary",method="GET",code="200""#.into(),
        r#"route="other",method="GET",code="404""#.into(),
    ];
    if c.apiserver.is_some() {
        wanted.extend([r#"code="401""#.to_string(), r#"code="403""#.into()]);
    }
    let (requests, backend) = eventually(
        Duration::from_secs(30),
        "kubelet API and backend metrics",
        || async {
            let (_, text) = crate::probe::get(&url).await.ok()?;
            let requests = family(&text, "fleetlet_kubelet_api_requests_total{");
            let backend = family(&text, "fleetlet_backend_operation_duration_seconds_count{");
            let exec_upgraded = requests
                .iter()
                .any(|l| l.contains(wanted[0].as_str()) && l.contains(r#"code="101""#));
            let all = wanted
                .iter()
                .all(|w| requests.iter().any(|l| l.contains(w.as_str())));
            let ops = ["create_pod", "exec", "logs", "stats"].iter().all(|op| {
                backend.iter().any(|l| {
                    l.contains(r#"backend="mock""#)
                        && l.contains(&format!(r#"operation="{op}",outcome="ok""#))
                })
            });
            (exec_upgraded && all && ops).then_some((requests, backend))
        },
    )
    .await?;
    anyhow::ensure!(
        !requests.iter().chain(&backend).any(|l| l.contains(pod)),
        "a pod name in a label: {requests:#?} {backend:#?}"
    );
    Ok(())
}
