//! The operator's kube client stack: every client the operator makes is built here, the shared ones
//! and one per node identity (`--node-identity=node`), so its fixed cost is paid a thousand times in
//! a large fleet. It speaks to the apiserver exactly as kube-rs's default client does (same URL
//! handling, auth, headers, timeouts, retries and TLS verification) and differs only where the
//! default sizes itself for one client per process ([`Sizing`]) and in how long heartbeat-path
//! clients retry ([`Retries`]):
//! - rustls's client session cache holds a few sessions instead of 256 (a node talks to one server;
//!   with its connection kept, none);
//! - the connection pool keeps a bounded number of idle connections (a node: the one its Lease renewals
//!   reuse) instead of every connection a burst of concurrent requests opened, each
//!   with its buffers, until it has idled 90 s;
//! - a node's kept connection reads into a 4 KiB buffer instead of hyper's adaptive one, which starts
//!   at 8 KiB and keeps what it grew to (a Lease answer is well under 1 KiB; larger answers take more
//!   reads).
//!
//! Configs this stack does not handle (a proxy) get kube-rs's default client.
//!
//! Every client sends `User-Agent: fleetlet/<version>`: kube-apiserver names the field manager of a
//! write without a `fieldManager` after the User-Agent's product, so the writes made inside kube-rs
//! (finalizers, Events) are recorded under the same manager as the operator's own.
//!
//! Every client but the leader election's holds its writes at the process's [`WriteGate`] (see
//! [`crate::fence`]): a leader that could not renew its election Lease writes nothing until it has.

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt as _;
use kube::client::retry::RetryPolicy;
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

use std::sync::Arc;

use tower::util::BoxCloneSyncService;
use vk_runtime::certs::ClientSource;

use fleetlet_crds::consts::FIELD_MANAGER;

use super::Metrics;
use super::client::MeteredLayer;
use super::node_transport::{Limits, NodeTransport};
use crate::fence::{GateLayer, WriteGate};

/// The `client` label of the node identities' requests.
pub const NODE_CLIENT: &str = "node";

/// How long an idle connection stays open: longer than the Lease renewal interval, so renewals reuse it.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The read buffer of a node identity's connections.
const NODE_READ_BUF: usize = 4096;

/// The most an adaptive read buffer grows to. hyper's default (~400 KB) is reached by a long-lived
/// watch after one large list or event burst and then kept for the connection's life: ~1.5 MB over
/// the operator's watches at 100 nodes. A watch decodes its body in pieces; 64 KiB reads are plenty.
const MAX_READ_BUF: usize = 64 * 1024;

/// How a client sizes its connection pool, TLS session cache and read buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizing {
    /// Idle connections kept for reuse; busier moments open more and close them when done.
    pub max_idle: usize,
    /// TLS sessions kept for resumption; 0: no resumption (a full handshake per new connection).
    pub tls_sessions: usize,
    /// A fixed HTTP/1 read buffer size; `None`: hyper's adaptive buffer.
    pub read_buf: Option<usize>,
}

impl Sizing {
    /// The process-wide clients (main, heartbeat): their steady concurrency stays well under this;
    /// a bring-up burst opens more connections, closed once idle instead of after 90 s.
    pub const SHARED: Self = Self {
        max_idle: 16,
        tls_sessions: 16,
        read_buf: None,
    };
    /// A node identity: the Lease renewals reuse one kept-alive connection (as a kubelet's). New
    /// connections are rare, so no session tickets are kept for them: each ticket carries a copy of
    /// the server's certificate chain, ~3.5 KB per node for a handshake saved now and then.
    pub const NODE: Self = Self {
        max_idle: 1,
        tls_sessions: 0,
        read_buf: Some(NODE_READ_BUF),
    };
    /// A client that keeps nothing between requests: a TLS handshake, resumed when the server allows,
    /// per request (tests: the no-reuse path).
    #[cfg(test)]
    pub const UNKEPT: Self = Self {
        max_idle: 0,
        tls_sessions: 4,
        read_buf: Some(NODE_READ_BUF),
    };
}

fn resumption(sizing: Sizing) -> rustls::client::Resumption {
    match sizing.tls_sessions {
        0 => rustls::client::Resumption::disabled(),
        n => rustls::client::Resumption::in_memory_sessions(n),
    }
}

/// `config` with the operator's User-Agent, whose product is the field manager ([`FIELD_MANAGER`]).
fn with_user_agent(mut config: kube::Config) -> kube::Config {
    let agent = format!("{FIELD_MANAGER}/{}", env!("CARGO_PKG_VERSION"));
    if let Ok(value) = http::HeaderValue::from_str(&agent) {
        config
            .headers
            .retain(|(n, _)| n != http::header::USER_AGENT);
        config.headers.push((http::header::USER_AGENT, value));
    }
    config
}

/// How a client retries 429/503/504 answers (when the config asks for retries at all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retries {
    /// kube-rs's `server_retry`: 15 attempts, backoff doubling from 5 ms (minutes in all). For the
    /// main client, whose callers (reconcilers, watches) have no faster retry of their own.
    Server,
    /// Three attempts within about a second, then the error: for the heartbeat path (Lease renewals,
    /// node status, a node's pod writes), whose callers retry on their own short schedule. Under
    /// kube-rs's policy a renewal sent during a control-plane outage sat in its backoff for seconds
    /// to minutes after the API answered again, and nodes went NotReady after the outage.
    Brief,
}

/// kube-rs's retry of 429/503/504 answers, when the config asks for it.
fn retry_layer(config: &kube::Config, retries: Retries) -> Option<RetryLayer<RetryPolicy>> {
    if !config.default_retry {
        return None;
    }
    let policy = match retries {
        Retries::Server => RetryPolicy::server_retry(),
        Retries::Brief => RetryPolicy::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
            3,
            false,
        )
        .ok()?,
    };
    Some(RetryLayer::new(policy))
}

/// A kube client sized by `sizing`, with the metrics layer; `name` labels its requests. Its writes
/// wait at `gate` while it is closed; `None` only for the leader election's own client.
///
/// # Errors
/// When the config cannot produce a client (TLS material, auth plugin).
pub fn client(
    config: kube::Config,
    name: &'static str,
    metrics: &Metrics,
    sizing: Sizing,
    retries: Retries,
    gate: Option<&WriteGate>,
) -> Result<kube::Client, kube::Error> {
    let config = with_user_agent(config);
    let layer = MeteredLayer::new(name, metrics.clone());
    let gate = gate.cloned().map(GateLayer::new);
    if config.proxy_url.is_some() {
        let builder = kube::client::ClientBuilder::try_from(config)?;
        // kube-rs's stack is not Clone, which a held write needs: a buffer in front of it is.
        let gate = tower::util::option_layer(gate);
        let buffer = tower::buffer::BufferLayer::new(1024);
        let builder = builder.with_layer(&layer).with_layer(&buffer);
        return Ok(builder.with_layer(&gate).build());
    }
    let mut tls = config.rustls_client_config()?;
    tls.resumption = resumption(sizing);
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let mut https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    if let Some(name) = &config.tls_server_name {
        let name = rustls_pki_types::ServerName::try_from(name.clone()).map_err(|e| {
            kube::Error::RustlsTls(kube::client::RustlsTlsError::InvalidServerName(e))
        })?;
        https = https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    let mut connector =
        hyper_timeout::TimeoutConnector::new(https.enable_http1().wrap_connector(http));
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let mut builder = hyper_util::client::legacy::Builder::new(TokioExecutor::new());
    builder
        .pool_max_idle_per_host(sizing.max_idle)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT);
    match sizing.read_buf {
        Some(size) => builder.http1_read_buf_exact_size(size),
        None => builder.http1_max_buf_size(MAX_READ_BUF),
    };
    let http_client = builder.build::<_, kube::client::Body>(connector);
    // kube-rs's order, outermost first; the metrics layer wraps it all, as `with_layer` does there.
    // The gate is outside it: time held at a closed gate is not request latency.
    let service = ServiceBuilder::new()
        .option_layer(gate)
        .layer(layer)
        .layer(config.base_uri_layer())
        .option_layer(retry_layer(&config, retries))
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(http_client);
    Ok(kube::Client::new(service, config.default_namespace))
}

/// The client source of a node identity, sized by `sizing`: a kube client made per use over a
/// [`NodeTransport`] (one kept connection, nothing else between requests), with the same layers as
/// [`client`] and [`Retries::Brief`], writes held at `gate`. Configs the transport does not handle (a
/// proxy, token or exec auth) get a fixed [`client`].
///
/// # Errors
/// When the config cannot produce a client (TLS material, URL).
pub fn node_client_source(
    config: kube::Config,
    metrics: &Metrics,
    sizing: Sizing,
    gate: &WriteGate,
) -> Result<ClientSource, kube::Error> {
    let config = with_user_agent(config);
    if config.proxy_url.is_some() || config.auth_layer()?.is_some() {
        let client = client(
            config,
            NODE_CLIENT,
            metrics,
            sizing,
            Retries::Brief,
            Some(gate),
        )?;
        return Ok(Arc::new(move || client.clone()));
    }
    let mut tls = config.rustls_client_config()?;
    tls.resumption = resumption(sizing);
    let limits = Limits {
        connect_timeout: config.connect_timeout,
        read_timeout: config.read_timeout,
        read_buf: sizing.read_buf.unwrap_or(NODE_READ_BUF),
        keep: sizing.max_idle > 0,
    };
    let transport = NodeTransport::new(
        &config.cluster_url,
        tls,
        config.tls_server_name.as_deref(),
        limits,
    )
    .map_err(kube::Error::Service)?;
    let service = ServiceBuilder::new()
        .layer(GateLayer::new(gate.clone()))
        .layer(MeteredLayer::new(NODE_CLIENT, metrics.clone()))
        .layer(config.base_uri_layer())
        .option_layer(retry_layer(&config, Retries::Brief))
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(transport);
    let service = BoxCloneSyncService::new(service);
    let namespace = config.default_namespace;
    Ok(Arc::new(move || {
        kube::Client::new(service.clone(), namespace.clone())
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashSet;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::ConnectInfo;
    use axum::routing::get;

    use super::*;

    /// Connections the client opened for `requests` sequential GETs (distinct peer addresses seen by a
    /// real HTTP server).
    async fn connections_for(sizing: Sizing, requests: usize) -> usize {
        let peers = Arc::new(Mutex::new(HashSet::new()));
        let seen = peers.clone();
        let app = Router::new().route(
            "/version",
            get(move |ConnectInfo(peer): ConnectInfo<SocketAddr>| {
                seen.lock().unwrap().insert(peer);
                async { "{}" }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let metrics = Metrics::new();
        let client = client(config, "test", &metrics, sizing, Retries::Server, None).unwrap();
        for _ in 0..requests {
            let req = http::Request::get("/version").body(Vec::new()).unwrap();
            assert_eq!(client.request_text(req).await.unwrap(), "{}");
        }
        assert!(metrics.render().contains(&format!(
            r#"fleetlet_api_requests_total{{client="test",verb="get",code="200"}} {requests}"#
        )));
        peers.lock().unwrap().len()
    }

    #[tokio::test]
    async fn a_node_reuses_one_connection_and_unkept_keeps_none() {
        assert_eq!(connections_for(Sizing::NODE, 3).await, 1);
        assert_eq!(connections_for(Sizing::SHARED, 3).await, 1);
        assert_eq!(connections_for(Sizing::UNKEPT, 3).await, 3);
    }

    /// A heartbeat-path client gives up on an apiserver answering 503 within about a second, so its
    /// caller's own retry (a Lease renewal's 250 ms..2 s) decides when to try again; kube-rs's
    /// server policy would keep one request asleep in its backoff for minutes.
    #[tokio::test]
    async fn brief_retries_give_up_quickly_on_503() {
        let hits = Arc::new(Mutex::new(0usize));
        let seen = hits.clone();
        let app = Router::new().route(
            "/version",
            get(move || {
                *seen.lock().unwrap() += 1;
                async { (http::StatusCode::SERVICE_UNAVAILABLE, "{}") }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        assert!(config.default_retry);
        let metrics = Metrics::new();
        let client = client(
            config,
            "test",
            &metrics,
            Sizing::SHARED,
            Retries::Brief,
            None,
        )
        .unwrap();
        let req = http::Request::get("/version").body(Vec::new()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(3), client.request_text(req)).await;
        assert!(
            matches!(result, Ok(Err(_))),
            "a 503 surfaces within 3 s: {result:?}"
        );
        assert_eq!(*hits.lock().unwrap(), 4, "one request and three retries");
    }

    /// Through the real stack: while the gate is closed the main client's write waits and its read
    /// passes, and the election's client (built without the gate) writes at once.
    #[tokio::test]
    async fn a_closed_gate_holds_gated_writes_but_not_the_elections() {
        use axum::routing::put;
        let puts = Arc::new(Mutex::new(0usize));
        let seen = puts.clone();
        let app = Router::new().route(
            "/x",
            put(move || {
                *seen.lock().unwrap() += 1;
                async { "{}" }
            })
            .get(|| async { "{}" }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let metrics = Metrics::new();
        let gate = WriteGate::new();
        let (s, r) = (Sizing::SHARED, Retries::Brief);
        let main = client(config.clone(), "main", &metrics, s, r, Some(&gate)).unwrap();
        let election = client(config, "election", &metrics, s, r, None).unwrap();
        let write = |c: kube::Client| async move {
            let req = http::Request::put("/x").body(Vec::new()).unwrap();
            c.request_text(req).await
        };
        gate.close();
        let held = tokio::spawn(write(main.clone()));
        let req = http::Request::get("/x").body(Vec::new()).unwrap();
        assert_eq!(main.request_text(req).await.unwrap(), "{}", "reads pass");
        assert_eq!(write(election).await.unwrap(), "{}", "the election writes");
        assert_eq!(
            *puts.lock().unwrap(),
            1,
            "only the election's write arrived"
        );
        assert!(!held.is_finished());
        gate.open();
        let done = tokio::time::timeout(Duration::from_secs(3), held).await;
        assert_eq!(done.unwrap().unwrap().unwrap(), "{}");
        assert_eq!(
            *puts.lock().unwrap(),
            2,
            "the held write went out once opened"
        );
    }
}
