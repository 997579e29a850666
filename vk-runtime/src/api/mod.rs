//! The kubelet HTTPS API of one virtual node: an axum router over rustls on the node's own
//! address:port, behind authentication/authorization. Routes: `/containerLogs`, `/exec`, `/attach`,
//! `/portForward`, `/stats/summary`, `/metrics/resource`, `/pods`, `/runningpods`, `/healthz`;
//! everything else is 404. Streaming protocols live in `crate::stream`.

pub mod auth;
pub mod errors;
pub mod kube_auth;
pub mod logs;
pub mod observe;
pub mod pods;
pub mod stats;
pub mod streaming;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Extension, Router};
use http::{StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use jiff::Timestamp;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::debug;

pub use auth::{Authorizer, ConnIdentity, Decision, RequestAttributes, UserInfo, attributes_for};
pub use errors::{ApiError, status_for};
pub use kube_auth::KubeAuthorizer;
pub use observe::{ObservedRequest, RequestObserver, SharedObserver};
pub use pods::PodLookup;
pub use tls::{CertResolver, ClientCa, TlsError};

use crate::provider::{DynProvider, PodRef};

/// How long a client gets to finish the TLS handshake and to send request headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything one virtual node's endpoint needs.
pub struct KubeletApi {
    /// The Node's name (SubjectAccessReview target, `/stats/summary` nodeName).
    pub node_name: String,
    pub provider: DynProvider,
    pub pods: Arc<dyn PodLookup>,
    pub auth: Arc<dyn Authorizer>,
    /// The serving certificate; swap it with [`CertResolver::set`] to rotate.
    pub tls: Arc<CertResolver>,
    /// The CA(s) that sign client certificates (the apiserver's kubelet-client certificate).
    /// `None`: only bearer tokens authenticate.
    pub client_ca: Option<tls::ClientCa>,
    /// Told about every answered request (metrics); `None`: nobody counts.
    pub observer: Option<SharedObserver>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// State shared by the route handlers.
#[derive(Clone)]
pub struct AppState {
    pub(crate) api: Arc<KubeletApi>,
    pub(crate) started: Timestamp,
    /// Cancelled at shutdown: ends upgraded (streaming) connections, which outlive their requests.
    pub(crate) cancel: CancellationToken,
}

impl AppState {
    /// The pod `namespace/name`, checking the UID when the path names one.
    pub(crate) fn pod(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<PodRef, ApiError> {
        let not_found = || ApiError::PodNotFound {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        let pod = self
            .api
            .pods
            .lookup(namespace, name)
            .ok_or_else(not_found)?;
        match uid {
            Some(uid) if uid != pod.uid => Err(not_found()),
            _ => Ok(pod),
        }
    }
}

async fn stats_summary(Extension(state): Extension<AppState>) -> Result<Response, ApiError> {
    let stats = state.api.provider.stats().await?;
    let summary = stats::summary(
        &state.api.node_name,
        &stats,
        state.started,
        Timestamp::now(),
    );
    Ok(axum::Json(summary).into_response())
}

async fn metrics_resource(Extension(state): Extension<AppState>) -> Response {
    let stats = state.api.provider.stats().await;
    if let Err(e) = &stats {
        debug!(error = %e, "provider stats failed for /metrics/resource");
    }
    let body = stats::resource_metrics(stats.as_ref().ok(), Timestamp::now());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "404 page not found").into_response()
}

/// The router every endpoint shares, authentication (and request observation) included: built once
/// (its route table is the same for every node), it finds the endpoint's [`AppState`] in the request
/// extensions, put there per connection.
pub fn router() -> Router {
    static ROUTER: std::sync::OnceLock<Router> = std::sync::OnceLock::new();
    ROUTER
        .get_or_init(|| {
            Router::new()
                .route(
                    "/containerLogs/{ns}/{pod}/{container}",
                    get(logs::container_logs),
                )
                .route("/exec/{ns}/{pod}/{container}", any(streaming::exec))
                .route(
                    "/exec/{ns}/{pod}/{uid}/{container}",
                    any(streaming::exec_uid),
                )
                .route("/attach/{ns}/{pod}/{container}", any(streaming::attach))
                .route(
                    "/attach/{ns}/{pod}/{uid}/{container}",
                    any(streaming::attach_uid),
                )
                .route("/portForward/{ns}/{pod}", any(streaming::port_forward))
                .route(
                    "/portForward/{ns}/{pod}/{uid}",
                    any(streaming::port_forward_uid),
                )
                .route("/stats/summary", get(stats_summary))
                .route("/metrics/resource", get(metrics_resource))
                .route("/pods", get(pods::pods))
                .route("/runningpods", get(pods::running_pods))
                .route("/healthz", get(pods::healthz))
                .fallback(not_found)
                .layer(axum::middleware::from_fn(auth::require_auth))
                // Outside authentication, so that 401 and 403 answers are observed too.
                .layer(axum::middleware::from_fn(observe::record))
        })
        .clone()
}

/// Serve `api` on `addr` until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    api: KubeletApi,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    serve_on(listener, api, shutdown).await
}

/// Serve `api` on an already bound listener until `shutdown` completes; then stop accepting and
/// end every open connection, streaming sessions included.
pub async fn serve_on(
    listener: TcpListener,
    api: KubeletApi,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(
        api.tls.clone(),
        api.client_ca.as_ref(),
    )?));
    let state = AppState {
        api: Arc::new(api),
        started: Timestamp::now(),
        cancel: CancellationToken::new(),
    };
    let app = router();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        debug!(error = %e, "accept failed");
                        continue;
                    }
                };
                connections.spawn(serve_connection(
                    tcp,
                    peer,
                    acceptor.clone(),
                    app.clone(),
                    state.clone(),
                ));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    state.cancel.cancel();
    connections.shutdown().await;
    Ok(())
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    state: AppState,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => return debug!(%peer, "TLS handshake timed out"),
    };
    let identity = ConnIdentity {
        client_cert_user: tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| tls::user_from_certificate(c)),
    };
    let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(identity.clone());
        req.extensions_mut().insert(state.clone());
        app.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        debug!(%peer, error = %e, "connection ended with an error");
    }
}
