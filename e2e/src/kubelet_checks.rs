//! Shared steps of the kubelet-API scenario (`tests/kubelet_api.rs`): a cluster with the operator
//! and one Ready virtual node whose kubelet endpoint answers, the transport a kubectl run really
//! used (from the test apiserver's proxy log), and the endpoint's own authn/authz checks.

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
use crate::fixtures::{mock_backend, virtual_node};
use crate::kubelet::Transport;
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
    c.apply(&format!(
        "{}---\n{}",
        mock_backend(&backend),
        virtual_node(&node, &backend)
    ))
    .await
    .map_err(anyhow::Error::msg)?;
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
    Ok(())
}
