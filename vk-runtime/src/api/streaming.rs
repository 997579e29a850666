//! `/exec`, `/attach` and `/portForward`: validate the request, find the pod, negotiate the
//! subprotocol, answer the upgrade (SPDY/3.1: 101 by hand, then the raw connection; WebSocket:
//! axum's upgrade) and hand the connection to `stream::remotecommand` / `stream::portforward`.

use std::sync::Arc;

use axum::Extension;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Path, Query, Request};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::AppState;
use super::errors::ApiError;
use crate::provider::PodRef;
use crate::stream::portforward::{self, Forwarder, ports_from_query};
use crate::stream::remotecommand::{
    self, NegotiationError, Runner, StreamOptions, command_from_query, negotiate_protocol,
    negotiate_spdy,
};
use crate::stream::spdy::{Session, SessionConfig, UPGRADE_TOKEN};
use crate::stream::websocket::{self, EXEC_PROTOCOLS, PORT_FORWARD_PROTOCOLS, WsProtocol};

const STREAM_PROTOCOL_HEADER: &str = "x-stream-protocol-version";
const ACCEPTED_PROTOCOLS_HEADER: &str = "x-accepted-stream-protocol-versions";

enum Transport {
    Spdy,
    WebSocket,
}

fn transport(headers: &HeaderMap) -> Option<Transport> {
    let upgrade = headers.get(header::UPGRADE)?.to_str().ok()?;
    if upgrade
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
    {
        Some(Transport::WebSocket)
    } else if upgrade
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(UPGRADE_TOKEN))
    {
        Some(Transport::Spdy)
    } else {
        None
    }
}

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

fn negotiation_failure(err: NegotiationError) -> Response {
    match err {
        NegotiationError::Missing => {
            (StatusCode::BAD_REQUEST, format!("unable to upgrade: {err}")).into_response()
        }
        NegotiationError::Unsupported { ref accepted, .. } => {
            let mut response =
                (StatusCode::FORBIDDEN, format!("unable to upgrade: {err}")).into_response();
            for a in accepted {
                response
                    .headers_mut()
                    .append(ACCEPTED_PROTOCOLS_HEADER, HeaderValue::from_static(a));
            }
            response
        }
    }
}

/// Answer a SPDY upgrade with 101 and run `serve` on the raw connection once hyper hands it over.
fn upgrade_spdy<F, Fut>(
    state: &AppState,
    mut req: Request,
    protocol: &'static str,
    serve: F,
) -> Response
where
    F: FnOnce(Session) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let on_upgrade = hyper::upgrade::on(&mut req);
    let cancel = state.cancel.clone();
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(e) => return debug!(error = %e, "SPDY upgrade failed"),
        };
        let session = Session::start(io, SessionConfig::default());
        tokio::select! {
            () = serve(session) => {}
            () = cancel.cancelled() => {}
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(UPGRADE_TOKEN));
    headers.insert(STREAM_PROTOCOL_HEADER, HeaderValue::from_static(protocol));
    response
}

/// Negotiate the WebSocket subprotocol and accept the upgrade, running `serve` on the socket.
async fn upgrade_ws<F, Fut>(
    state: &AppState,
    req: Request,
    supported: &[WsProtocol],
    serve: F,
) -> Response
where
    F: FnOnce(axum::extract::ws::WebSocket, WsProtocol) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let offered = header_values(req.headers(), header::SEC_WEBSOCKET_PROTOCOL.as_str());
    let chosen = match websocket::negotiate(offered, supported) {
        Ok(chosen) => chosen,
        Err(e) => return ApiError::BadRequest(e.to_string()).into_response(),
    };
    let (mut parts, _body) = req.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let ws = match chosen {
        Some(p) => ws.protocols([p.name()]),
        None => ws,
    };
    let cancel = state.cancel.clone();
    ws.on_upgrade(move |socket| async move {
        tokio::select! {
            () = serve(socket, chosen.unwrap_or(WsProtocol::V1)) => {}
            () = cancel.cancelled() => {}
        }
    })
}

fn upgrade_required() -> Response {
    (StatusCode::BAD_REQUEST, "Upgrade request required").into_response()
}

#[derive(Clone, Copy)]
enum Kind {
    Exec,
    Attach,
}

async fn remote_command(
    state: AppState,
    kind: Kind,
    (namespace, pod, uid, container): (String, String, Option<String>, String),
    query: Vec<(String, String)>,
    req: Request,
) -> Response {
    let opts = match StreamOptions::from_query(&query) {
        Ok(opts) => opts,
        Err(e) => return ApiError::BadRequest(e.to_string()).into_response(),
    };
    let command = match kind {
        Kind::Exec => match command_from_query(&query) {
            Ok(c) => c,
            Err(e) => return ApiError::BadRequest(e.to_string()).into_response(),
        },
        Kind::Attach => Vec::new(),
    };
    let pod_ref = match state.pod(&namespace, &pod, uid.as_deref()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let provider = state.api.provider.clone();
    let runner: Runner = Box::new(move |io| {
        async move {
            match kind {
                Kind::Exec => provider.exec(&pod_ref, &container, command, io).await,
                Kind::Attach => provider.attach(&pod_ref, &container, io).await,
            }
        }
        .boxed()
    });
    match transport(req.headers()) {
        Some(Transport::Spdy) => {
            let protocol =
                match negotiate_spdy(header_values(req.headers(), STREAM_PROTOCOL_HEADER)) {
                    Ok(p) => p,
                    Err(e) => return negotiation_failure(e),
                };
            upgrade_spdy(&state, req, protocol.name(), move |session| async move {
                remotecommand::serve_spdy(session, protocol, opts, runner).await;
            })
        }
        Some(Transport::WebSocket) => {
            upgrade_ws(
                &state,
                req,
                EXEC_PROTOCOLS,
                move |socket, protocol| async move {
                    remotecommand::serve_ws(socket, protocol, opts, runner).await;
                },
            )
            .await
        }
        None => upgrade_required(),
    }
}

type ExecPath = Path<(String, String, String)>;
type ExecUidPath = Path<(String, String, String, String)>;
type QueryPairs = Query<Vec<(String, String)>>;

pub async fn exec(
    Extension(s): Extension<AppState>,
    Path((ns, pod, c)): ExecPath,
    Query(q): QueryPairs,
    req: Request,
) -> Response {
    remote_command(s, Kind::Exec, (ns, pod, None, c), q, req).await
}

pub async fn exec_uid(
    Extension(s): Extension<AppState>,
    Path((ns, pod, uid, c)): ExecUidPath,
    Query(q): QueryPairs,
    req: Request,
) -> Response {
    remote_command(s, Kind::Exec, (ns, pod, Some(uid), c), q, req).await
}

pub async fn attach(
    Extension(s): Extension<AppState>,
    Path((ns, pod, c)): ExecPath,
    Query(q): QueryPairs,
    req: Request,
) -> Response {
    remote_command(s, Kind::Attach, (ns, pod, None, c), q, req).await
}

pub async fn attach_uid(
    Extension(s): Extension<AppState>,
    Path((ns, pod, uid, c)): ExecUidPath,
    Query(q): QueryPairs,
    req: Request,
) -> Response {
    remote_command(s, Kind::Attach, (ns, pod, Some(uid), c), q, req).await
}

async fn port_forward_impl(
    state: AppState,
    namespace: String,
    pod: String,
    uid: Option<String>,
    query: Vec<(String, String)>,
    req: Request,
) -> Response {
    let pod_ref: PodRef = match state.pod(&namespace, &pod, uid.as_deref()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let label = pod_ref.to_string();
    let provider = state.api.provider.clone();
    let forwarder: Forwarder = Arc::new(move |port, pipe| {
        let provider = provider.clone();
        let pod_ref = pod_ref.clone();
        async move { provider.port_forward(&pod_ref, port, pipe).await }.boxed()
    });
    match transport(req.headers()) {
        Some(Transport::Spdy) => {
            let offered = header_values(req.headers(), STREAM_PROTOCOL_HEADER);
            let protocol = match negotiate_protocol(offered, &[portforward::PROTOCOL_V1], |p| p) {
                Ok(p) => p,
                Err(e) => return negotiation_failure(e),
            };
            upgrade_spdy(&state, req, protocol, move |session| {
                portforward::serve_spdy(session, label, forwarder)
            })
        }
        Some(Transport::WebSocket) => {
            let ports = match ports_from_query(&query) {
                Ok(p) => p,
                Err(e) => return ApiError::BadRequest(e.to_string()).into_response(),
            };
            upgrade_ws(
                &state,
                req,
                PORT_FORWARD_PROTOCOLS,
                move |socket, protocol| {
                    portforward::serve_ws(socket, protocol, ports, label, forwarder)
                },
            )
            .await
        }
        None => upgrade_required(),
    }
}

pub async fn port_forward(
    Extension(s): Extension<AppState>,
    Path((ns, pod)): Path<(String, String)>,
    Query(q): QueryPairs,
    req: Request,
) -> Response {
    port_forward_impl(s, ns, pod, None, q, req).await
}

pub async fn port_forward_uid(
    Extension(s): Extension<AppState>,
    Path((ns, pod, uid)): Path<(String, String, String)>,
    Query(q): QueryPairs,
    req: Request,
) -> Response {
    port_forward_impl(s, ns, pod, Some(uid), q, req).await
}
