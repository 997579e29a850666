//! The client stack of a node identity (`--node-identity=node`): one per virtual node, so its fixed
//! cost is paid a thousand times in a large fleet. It speaks to the apiserver exactly as kube-rs's
//! default client does (same URL handling, auth, headers, timeouts, retries and TLS verification, the
//! node's client certificate) and differs only where the default sizes itself for one client per
//! process:
//! - rustls's client session cache holds a few sessions instead of 256 (a node talks to one server);
//! - the connection pool keeps one idle connection (the one its Lease renewals reuse) instead of one per
//!   request that ever ran concurrently, each with its buffers, until the 90 s idle timeout.
//!
//! Configs this stack does not handle (a proxy) get kube-rs's default client.

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt as _;
use kube::client::retry::RetryPolicy;
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

use super::Metrics;
use super::client::MeteredLayer;

/// TLS sessions a node client keeps for resumption (rustls's default: 256).
const TLS_SESSIONS: usize = 4;
/// How long an idle connection stays open: longer than the Lease renewal interval, so renewals reuse it.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A kube client for one node identity with the metrics layer; `name` labels its requests.
///
/// # Errors
/// When the config cannot produce a client (TLS material, auth plugin).
pub fn node_client(
    config: kube::Config,
    name: &'static str,
    metrics: &Metrics,
) -> Result<kube::Client, kube::Error> {
    let layer = MeteredLayer::new(name, metrics.clone());
    if config.proxy_url.is_some() {
        return super::client::client(config, name, metrics);
    }
    let mut tls = config.rustls_client_config()?;
    tls.resumption = rustls::client::Resumption::in_memory_sessions(TLS_SESSIONS);
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
    let http_client = hyper_util::client::legacy::Builder::new(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build::<_, kube::client::Body>(connector);
    // kube-rs's order, outermost first; the metrics layer wraps it all, as `with_layer` does there.
    let service = ServiceBuilder::new()
        .layer(layer)
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(http_client);
    Ok(kube::Client::new(service, config.default_namespace))
}
