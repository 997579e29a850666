//! Authentication and authorization of the kubelet endpoint, as the kubelet does it: a verified
//! client certificate or a bearer token names the user (no credentials: 401), then a
//! SubjectAccessReview-style check on `nodes/<subresource>` of this node decides (denied: 403).
//! [`attributes_for`] is the kubelet's path -> subresource and method -> verb mapping.

use std::collections::BTreeMap;

use async_trait::async_trait;
use axum::Extension;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{Method, header};
use tracing::debug;

use super::AppState;
use super::errors::ApiError;

/// An authenticated user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// What a request asks to do to the node, in SubjectAccessReview terms.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestAttributes {
    /// `get`, `create`, `update`, `patch`, `delete` (from the method; streaming paths: `create`).
    pub verb: &'static str,
    /// Always `nodes`.
    pub resource: &'static str,
    /// `stats`, `metrics`, `log` or `proxy`.
    pub subresource: &'static str,
}

/// An authorization answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny { reason: String },
}

fn under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The kubelet's mapping of a request to SubjectAccessReview attributes. `/exec`, `/attach`, `/run`
/// and `/portForward` need `create` whatever the method: a WebSocket exec starts as a GET.
pub fn attributes_for(method: &Method, path: &str) -> RequestAttributes {
    let streaming = ["/exec", "/attach", "/run", "/portForward"]
        .iter()
        .any(|p| under(path, p));
    let verb = if streaming {
        "create"
    } else {
        match *method {
            Method::GET | Method::HEAD => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
    };
    let subresource = if under(path, "/stats") {
        "stats"
    } else if under(path, "/metrics") {
        "metrics"
    } else if under(path, "/logs") {
        "log"
    } else {
        "proxy"
    };
    RequestAttributes {
        verb,
        resource: "nodes",
        subresource,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("authentication backend failed: {0}")]
    Backend(String),
}

/// Pluggable authentication of bearer tokens and authorization of users. Client certificates are
/// verified by TLS and turned into a [`UserInfo`] before this is asked.
#[async_trait]
pub trait Authorizer: Send + Sync + 'static {
    /// The user a bearer token belongs to; `Ok(None)` for an invalid token (401).
    async fn authenticate_token(&self, token: &str) -> Result<Option<UserInfo>, AuthError>;

    /// Whether `user` may do `attrs` on this node.
    async fn authorize(
        &self,
        user: &UserInfo,
        attrs: &RequestAttributes,
    ) -> Result<Decision, AuthError>;
}

/// The identity of a TLS connection: the user of its verified client certificate, if any.
#[derive(Clone, Debug, Default)]
pub struct ConnIdentity {
    pub client_cert_user: Option<UserInfo>,
}

fn bearer_token(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// Authenticate the request's user, from its connection's client certificate or bearer token.
/// Takes the credentials out of the request first: a borrowed request cannot cross an await.
async fn authenticate(
    auth: &dyn Authorizer,
    cert_user: Option<UserInfo>,
    token: Option<String>,
) -> Result<UserInfo, ApiError> {
    if let Some(user) = cert_user {
        return Ok(user);
    }
    let Some(token) = token else {
        return Err(ApiError::Unauthorized {
            message: "Unauthorized".into(),
        });
    };
    match auth.authenticate_token(&token).await {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(ApiError::Unauthorized {
            message: "Unauthorized".into(),
        }),
        Err(e) => Err(ApiError::AuthBackend(e.to_string())),
    }
}

/// axum middleware: 401 without valid credentials, 403 when the authorizer denies.
pub async fn require_auth(
    Extension(state): Extension<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let auth = &state.api.auth;
    let cert_user = req
        .extensions()
        .get::<ConnIdentity>()
        .and_then(|c| c.client_cert_user.clone());
    let token = bearer_token(&req).map(String::from);
    let user = match authenticate(auth.as_ref(), cert_user, token).await {
        Ok(user) => user,
        Err(e) => return e.into_response(),
    };
    let attrs = attributes_for(req.method(), req.uri().path());
    match auth.authorize(&user, &attrs).await {
        Ok(Decision::Allow) => next.run(req).await,
        Ok(Decision::Deny { reason }) => {
            debug!(user = %user.name, verb = attrs.verb, subresource = attrs.subresource, %reason, "forbidden");
            ApiError::Forbidden(format!(
                "Forbidden (user={}, verb={}, resource={}, subresource={})",
                user.name, attrs.verb, attrs.resource, attrs.subresource
            ))
            .into_response()
        }
        Err(e) => ApiError::AuthBackend(e.to_string()).into_response(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_path_mapping() {
        let a = |m: Method, p: &str| {
            let r = attributes_for(&m, p);
            (r.verb, r.subresource)
        };
        assert_eq!(a(Method::GET, "/stats/summary"), ("get", "stats"));
        assert_eq!(a(Method::GET, "/stats"), ("get", "stats"));
        assert_eq!(a(Method::GET, "/metrics/resource"), ("get", "metrics"));
        assert_eq!(a(Method::GET, "/metrics"), ("get", "metrics"));
        assert_eq!(a(Method::GET, "/logs/syslog"), ("get", "log"));
        assert_eq!(a(Method::GET, "/containerLogs/ns/p/c"), ("get", "proxy"));
        assert_eq!(a(Method::GET, "/pods"), ("get", "proxy"));
        assert_eq!(a(Method::GET, "/statsfoo"), ("get", "proxy"));
        assert_eq!(a(Method::POST, "/exec/ns/p/c"), ("create", "proxy"));
        assert_eq!(a(Method::GET, "/exec/ns/p/c"), ("create", "proxy"));
        assert_eq!(a(Method::GET, "/attach/ns/p/c"), ("create", "proxy"));
        assert_eq!(a(Method::GET, "/portForward/ns/p"), ("create", "proxy"));
        assert_eq!(a(Method::GET, "/run/ns/p/c"), ("create", "proxy"));
        assert_eq!(a(Method::DELETE, "/pods"), ("delete", "proxy"));
        assert_eq!(a(Method::PUT, "/x"), ("update", "proxy"));
        assert_eq!(a(Method::PATCH, "/x"), ("patch", "proxy"));
    }
}
