//! Forwarding one request to a kubelet, as kube-apiserver's proxy does (`LocationStreamer` for
//! logs, `UpgradeAwareHandler` for exec/attach/port-forward and `nodes/NAME/proxy`): dial the
//! kubelet with the apiserver's client certificate, send the request, and either stream the answer
//! back (logs flush as they arrive, so `follow` streams) or, for an upgrade the kubelet accepts
//! (101: SPDY/3.1 or WebSocket), splice both connections byte for byte until one side ends.
//! Errors take kube-apiserver's shapes (see `transcripts/kubelet-proxy-errors.json`).

use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use serde_json::json;

use super::location::Endpoint;
use super::tls::{DialError, dial, join_host_port};
use crate::errors::ApiError;

/// Most of a kubelet's error body kept (kube-apiserver's `maxReadLength`).
const MAX_ERROR_BODY: usize = 50_000;

/// Which of kube-apiserver's proxies a request goes through; they differ in errors and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `pods/log`: a fresh GET, the body streamed as text/plain, non-2xx turned into a Status.
    Log,
    /// `pods/{exec,attach,portforward}`: an upgrade is required and passed through.
    Stream,
    /// `nodes/NAME/proxy/...`: anything passed through, upgrades included.
    Node,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("{0}")]
    Http(#[source] hyper::Error),
}

/// What a proxied request came to, for tests to inspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The kubelet's status (0 when it was not reached).
    pub status: u16,
    /// The negotiated subprotocol of an accepted upgrade (`Sec-WebSocket-Protocol` or
    /// `X-Stream-Protocol-Version`).
    pub protocol: Option<String>,
}

/// The `Upgrade` token of an upgrade request (`Connection: Upgrade` + `Upgrade: X`).
pub fn upgrade_of(headers: &HeaderMap) -> Option<String> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let token = headers.get(header::UPGRADE)?.to_str().ok()?.trim();
    (connection_upgrade && !token.is_empty()).then(|| token.to_string())
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// The client's headers as the kubelet gets them: credentials and impersonation removed (the
/// apiserver authenticated them), hop-by-hop headers removed unless upgrading.
fn backend_headers(from: &HeaderMap, upgrading: bool) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in from {
        let n = name.as_str();
        if n == "host"
            || n == "authorization"
            || n.starts_with("impersonate-")
            || (!upgrading && is_hop_by_hop(name))
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

fn status_error(code: StatusCode, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "code": code.as_u16()});
    crate::http::json_response(code, &body)
}

/// kube-apiserver's answer when the kubelet could not be reached.
fn unreachable(flavor: Flavor, url: &str, err: &ProxyError) -> Response {
    match flavor {
        // A Go url.Error from the log streamer's http.Client: reason-less 500.
        Flavor::Log => status_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Get {url:?}: {err}"),
        ),
        Flavor::Stream => status_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("error dialing backend: {err}"),
        ),
        Flavor::Node => ApiError::new(
            503,
            "ServiceUnavailable",
            format!("error trying to reach service: {err}"),
        )
        .into_response(),
    }
}

/// A kubelet's non-2xx log answer as kube-apiserver's GenericHttpResponseChecker reports it.
pub fn log_error(code: u16, body: &str, pod: &str) -> ApiError {
    match code {
        500 => ApiError {
            code: 500,
            reason: "InternalError",
            message: format!("Internal error occurred: {body}"),
            details: Some(json!({"causes": [{"message": body}]})),
        },
        400 => ApiError::bad_request(body),
        _ => {
            let (reason, message) = match code {
                404 => (
                    "NotFound",
                    "the server could not find the requested resource".to_string(),
                ),
                401 => (
                    "Unauthorized",
                    "the server has asked for the client to provide credentials".into(),
                ),
                403 => ("Forbidden", body.to_string()),
                405 => (
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource".into(),
                ),
                503 => (
                    "ServiceUnavailable",
                    "the server is currently unable to handle the request".into(),
                ),
                c if c >= 500 => (
                    "InternalError",
                    format!(
                        "an error on the server ({body:?}) has prevented the request from succeeding"
                    ),
                ),
                c => (
                    "",
                    format!(
                        "the server responded with the status code {c} but did not return more information"
                    ),
                ),
            };
            ApiError {
                code,
                reason,
                message: format!("{message} ( pods/log {pod})"),
                details: Some(json!({"name": pod, "kind": "pods/log"})),
            }
        }
    }
}

fn response_head(status: StatusCode, headers: &HeaderMap, keep_hop_by_hop: bool) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    for (name, value) in headers {
        if keep_hop_by_hop || !is_hop_by_hop(name) {
            resp.headers_mut().append(name.clone(), value.clone());
        }
    }
    resp
}

fn negotiated(headers: &HeaderMap) -> Option<String> {
    [
        header::SEC_WEBSOCKET_PROTOCOL.as_str(),
        "x-stream-protocol-version",
    ]
    .iter()
    .find_map(|h| headers.get(*h)?.to_str().ok().map(String::from))
}

/// Forward `req` to `target` (path and query) on the kubelet at `endpoint`.
pub async fn forward(
    tls: Arc<ClientConfig>,
    flavor: Flavor,
    endpoint: &Endpoint,
    target: &str,
    pod: &str,
    mut req: Request<Body>,
) -> (Response, Forwarded) {
    let mut forwarded = Forwarded {
        status: 0,
        protocol: None,
    };
    let authority = join_host_port(&endpoint.host, endpoint.port);
    let url = format!("https://{authority}{target}");
    let upgrade = match flavor {
        Flavor::Log => None,
        _ => upgrade_of(req.headers()),
    };
    if flavor == Flavor::Stream && upgrade.is_none() {
        return (
            ApiError::bad_request("Upgrade request required").into_response(),
            forwarded,
        );
    }
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let backend_req = {
        let (method, headers, body) = match flavor {
            Flavor::Log => (Method::GET, HeaderMap::new(), Body::empty()),
            _ => {
                let (parts, body) = req.into_parts();
                let body = if upgrade.is_some() {
                    Body::empty()
                } else {
                    body
                };
                (
                    parts.method,
                    backend_headers(&parts.headers, upgrade.is_some()),
                    body,
                )
            }
        };
        let mut r = Request::new(body);
        *r.method_mut() = method;
        *r.uri_mut() = match target.parse() {
            Ok(u) => u,
            Err(e) => {
                return (
                    ApiError::bad_request(format!("invalid kubelet path: {e}")).into_response(),
                    forwarded,
                );
            }
        };
        *r.headers_mut() = headers;
        if let Ok(host) = HeaderValue::from_str(&authority) {
            r.headers_mut().insert(header::HOST, host);
        }
        r
    };
    let resp = match send(tls, endpoint, backend_req).await {
        Ok(resp) => resp,
        Err(e) => return (unreachable(flavor, &url, &e), forwarded),
    };
    forwarded.status = resp.status().as_u16();
    if let Flavor::Log = flavor {
        if !(200..=206).contains(&forwarded.status) {
            let body = Limited::new(resp.into_body(), MAX_ERROR_BODY)
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .unwrap_or_default();
            return (
                log_error(forwarded.status, &body, pod).into_response(),
                forwarded,
            );
        }
        let mut out = Response::new(Body::new(resp.into_body()));
        out.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return (out, forwarded);
    }
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        forwarded.protocol = negotiated(resp.headers());
        let head = response_head(resp.status(), resp.headers(), true);
        let backend_upgrade = hyper::upgrade::on(resp);
        tokio::spawn(async move {
            let (client, backend) = match tokio::join!(client_upgrade, backend_upgrade) {
                (Ok(c), Ok(b)) => (c, b),
                (c, b) => {
                    let e = c
                        .err()
                        .or(b.err())
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    return tracing::debug!(error = %e, "proxied upgrade failed");
                }
            };
            splice(TokioIo::new(client), TokioIo::new(backend)).await;
        });
        return (head, forwarded);
    }
    let (parts, body) = resp.into_parts();
    let mut out = response_head(parts.status, &parts.headers, false);
    *out.body_mut() = Body::new(body);
    (out, forwarded)
}

/// Dial the kubelet and send one request on a fresh HTTP/1.1 connection (upgrades enabled).
async fn send(
    tls: Arc<ClientConfig>,
    endpoint: &Endpoint,
    req: Request<Body>,
) -> Result<http::Response<hyper::body::Incoming>, ProxyError> {
    let stream = dial(tls, &endpoint.host, endpoint.port).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ProxyError::Http)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "kubelet connection ended with an error");
        }
    });
    sender.send_request(req).await.map_err(ProxyError::Http)
}

/// Copy bytes both ways until either direction ends, then close both (as upgradeaware does).
async fn splice<A, B>(client: A, backend: B)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut br, mut bw) = tokio::io::split(backend);
    tokio::select! {
        r = tokio::io::copy(&mut cr, &mut bw) => {
            if let Err(e) = r { tracing::debug!(error = %e, "client to kubelet copy ended"); }
        }
        r = tokio::io::copy(&mut br, &mut cw) => {
            if let Err(e) = r { tracing::debug!(error = %e, "kubelet to client copy ended"); }
        }
    }
    use tokio::io::AsyncWriteExt;
    let _ = cw.shutdown().await;
    let _ = bw.shutdown().await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_detection_and_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        h.insert("impersonate-user", HeaderValue::from_static("bob"));
        h.append(
            "x-stream-protocol-version",
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        h.append(
            "x-stream-protocol-version",
            HeaderValue::from_static("v3.channel.k8s.io"),
        );
        assert_eq!(upgrade_of(&h).as_deref(), Some("SPDY/3.1"));
        let up = backend_headers(&h, true);
        assert!(up.get(header::AUTHORIZATION).is_none());
        assert!(up.get("impersonate-user").is_none());
        assert_eq!(up.get_all("x-stream-protocol-version").iter().count(), 2);
        assert!(up.get(header::UPGRADE).is_some());
        let plain = backend_headers(&h, false);
        assert!(plain.get(header::UPGRADE).is_none() && plain.get(header::CONNECTION).is_none());
        h.remove(header::CONNECTION);
        assert_eq!(upgrade_of(&h), None);
    }

    #[test]
    fn log_errors_like_kube_apiserver() {
        let e = log_error(
            400,
            "previous terminated container \"main\" not found",
            "web",
        );
        assert_eq!((e.code, e.reason), (400, "BadRequest"));
        assert_eq!(
            e.message,
            "previous terminated container \"main\" not found"
        );
        let e = log_error(404, "pod not found", "web");
        assert_eq!(
            e.message,
            "the server could not find the requested resource ( pods/log web)"
        );
        assert_eq!(
            log_error(500, "boom", "web").message,
            "Internal error occurred: boom"
        );
        assert_eq!(
            log_error(403, "Forbidden (user=x)", "web").reason,
            "Forbidden"
        );
    }
}
