//! A hook for whoever embeds the runtime to count kubelet API requests (the operator turns them into
//! Prometheus metrics; vk-runtime stays free of any metrics library). Every answered request is
//! reported once, when its response head is ready: a streaming request (`/exec` upgrade: 101,
//! `/containerLogs?follow`: 200) is reported when it is answered, not when its stream ends, so
//! nothing is held per connection. Requests are labelled by route *template* ([`route_template`]),
//! never by the raw path, so pod names never become label values and the label set stays bounded.
//! Connections that fail before a request (TLS handshake, header timeout) are not reported.

use std::fmt;
use std::sync::Arc;

use axum::Extension;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::Method;

use super::AppState;

/// One answered kubelet API request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObservedRequest {
    /// The route template ([`route_template`]).
    pub route: &'static str,
    /// The method, or `OTHER` ([`method_label`]).
    pub method: &'static str,
    /// The status code answered (101 for an accepted upgrade).
    pub status: u16,
}

/// Receives every answered request of every kubelet endpoint of a fleet. Called on the request's
/// task: must be cheap and must not block.
pub trait RequestObserver: fmt::Debug + Send + Sync + 'static {
    fn observe(&self, request: &ObservedRequest);
}

/// Shared handle to an observer.
pub type SharedObserver = Arc<dyn RequestObserver>;

/// Label of a request whose path matches no kubelet route.
pub const OTHER_ROUTE: &str = "other";

/// The route template of a request path: the served routes (`/exec/{namespace}/{pod}/{container}`,
/// ...), the kubelet paths a scraper commonly asks for but this endpoint answers 404
/// (`/metrics`, `/metrics/cadvisor`, `/metrics/probes`, `/run/...`), and [`OTHER_ROUTE`] for
/// everything else. Path parameters are single non-empty segments, as the router matches them.
pub fn route_template(path: &str) -> &'static str {
    let Some(rest) = path.strip_prefix('/') else {
        return OTHER_ROUTE;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return OTHER_ROUTE;
    }
    match segments.as_slice() {
        ["containerLogs", _, _, _] => "/containerLogs/{namespace}/{pod}/{container}",
        ["exec", _, _, _] => "/exec/{namespace}/{pod}/{container}",
        ["exec", _, _, _, _] => "/exec/{namespace}/{pod}/{uid}/{container}",
        ["attach", _, _, _] => "/attach/{namespace}/{pod}/{container}",
        ["attach", _, _, _, _] => "/attach/{namespace}/{pod}/{uid}/{container}",
        ["run", _, _, _] => "/run/{namespace}/{pod}/{container}",
        ["run", _, _, _, _] => "/run/{namespace}/{pod}/{uid}/{container}",
        ["portForward", _, _] => "/portForward/{namespace}/{pod}",
        ["portForward", _, _, _] => "/portForward/{namespace}/{pod}/{uid}",
        ["stats", "summary"] => "/stats/summary",
        ["metrics", "resource"] => "/metrics/resource",
        ["metrics"] => "/metrics",
        ["metrics", "cadvisor"] => "/metrics/cadvisor",
        ["metrics", "probes"] => "/metrics/probes",
        ["pods"] => "/pods",
        ["runningpods"] => "/runningpods",
        ["healthz"] => "/healthz",
        _ => OTHER_ROUTE,
    }
}

/// The method as a label value; extension methods become `OTHER` (any token is a valid method).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// axum middleware (outermost, so 401/403 and 404 answers are seen too): reports each request to
/// the observer once its response is ready.
pub async fn record(Extension(state): Extension<AppState>, req: Request, next: Next) -> Response {
    let Some(observer) = state.api.observer.clone() else {
        return next.run(req).await;
    };
    let route = route_template(req.uri().path());
    let method = method_label(req.method());
    let response = next.run(req).await;
    observer.observe(&ObservedRequest {
        route,
        method,
        status: response.status().as_u16(),
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_their_templates() {
        let cases = [
            (
                "/containerLogs/default/web-1/main",
                "/containerLogs/{namespace}/{pod}/{container}",
            ),
            ("/exec/ns/p/c", "/exec/{namespace}/{pod}/{container}"),
            (
                "/exec/ns/p/uid-1/c",
                "/exec/{namespace}/{pod}/{uid}/{container}",
            ),
            ("/attach/ns/p/c", "/attach/{namespace}/{pod}/{container}"),
            (
                "/attach/ns/p/u/c",
                "/attach/{namespace}/{pod}/{uid}/{container}",
            ),
            ("/run/ns/p/c", "/run/{namespace}/{pod}/{container}"),
            ("/portForward/ns/p", "/portForward/{namespace}/{pod}"),
            (
                "/portForward/ns/p/u",
                "/portForward/{namespace}/{pod}/{uid}",
            ),
            ("/stats/summary", "/stats/summary"),
            ("/metrics/resource", "/metrics/resource"),
            ("/metrics/cadvisor", "/metrics/cadvisor"),
            ("/metrics", "/metrics"),
            ("/pods", "/pods"),
            ("/runningpods", "/runningpods"),
            ("/healthz", "/healthz"),
        ];
        for (path, template) in cases {
            assert_eq!(route_template(path), template, "{path}");
        }
    }

    #[test]
    fn unknown_or_malformed_paths_are_other() {
        for path in [
            "",
            "/",
            "pods",
            "/pods/",
            "/no/such/path",
            "/containerLogs/ns/p",
            "/containerLogs/ns/p/c/extra",
            "/exec//p/c",
            "/exec/ns/p/u/c/x",
            "/stats",
            "/configz",
            "/debug/pprof/heap",
            "/logs/syslog",
        ] {
            assert_eq!(route_template(path), OTHER_ROUTE, "{path}");
        }
    }

    #[test]
    fn pod_names_never_reach_a_label() {
        for path in [
            "/exec/kube-system/secret-pod/c",
            "/portForward/a/secret-pod",
        ] {
            assert!(!route_template(path).contains("secret-pod"));
        }
    }

    #[test]
    fn extension_methods_are_bounded() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::POST), "POST");
        let odd = Method::from_bytes(b"BREW").map(|m| method_label(&m));
        assert_eq!(odd.ok(), Some("OTHER"));
    }
}
