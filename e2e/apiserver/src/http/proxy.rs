//! The kubelet-backed endpoints: `pods/NAME/{log,exec,attach,portforward}` and
//! `nodes/NAME/proxy/PATH`. Authenticates and authorizes like every request, finds the pod and its node in the
//! store, works out the kubelet location (`crate::kubelet::location`) and hands the request to
//! `crate::kubelet::proxy`; records the request and what the kubelet answered.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};

use crate::authn::authenticate;
use crate::authz::{self, Attributes};
use crate::errors::ApiError;
use crate::kubelet::ProxyRecord;
use crate::kubelet::location::{self, Endpoint, PodAction};
use crate::kubelet::proxy::{self, Flavor};
use crate::server::{Inner, RequestRecord};

/// A request for a kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Pod {
        namespace: String,
        name: String,
        action: PodAction,
    },
    /// `nodes/NAME[:PORT]/proxy` + `path` (starting with `/`).
    Node { name: String, path: String },
}

/// Recognises the kubelet-backed paths.
pub fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", name, sub] => {
            PodAction::from_subresource(sub).map(|action| Route::Pod {
                namespace: ns.to_string(),
                name: name.to_string(),
                action,
            })
        }
        ["api", "v1", "nodes", name, "proxy", ..] => {
            let prefix = format!("/api/v1/nodes/{name}/proxy");
            let rest = path.strip_prefix(&prefix)?;
            if !rest.is_empty() && !rest.starts_with('/') {
                return None;
            }
            Some(Route::Node {
                name: name.to_string(),
                path: if rest.is_empty() {
                    "/".into()
                } else {
                    rest.into()
                },
            })
        }
        _ => None,
    }
}

fn verb(method: &Method) -> &'static str {
    match *method {
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "unknown",
    }
}

/// What the proxy needs after the store lookups.
struct Plan {
    node: String,
    endpoint: Endpoint,
    target: String,
    flavor: Flavor,
}

fn plan(inner: &Inner, route: &Route, query: Option<&str>) -> Result<Option<Plan>, ApiError> {
    let store = &inner.store;
    let node_def = store
        .find_def("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not served"))?;
    match route {
        Route::Pod {
            namespace,
            name,
            action,
        } => {
            let pod_def = store
                .find_def("", "v1", "pods")
                .ok_or_else(|| ApiError::internal("pods are not served"))?;
            let pod = store.get(&pod_def, namespace, name)?;
            let pairs: Vec<(String, String)> =
                form_urlencoded::parse(query.unwrap_or("").as_bytes())
                    .into_owned()
                    .collect();
            let Some((node, target)) = location::pod_location(*action, &pod, &pairs)? else {
                return Ok(None);
            };
            let endpoint = location::node_endpoint(&store.get(&node_def, "", &node)?)?;
            let flavor = match action {
                PodAction::Log => Flavor::Log,
                _ => Flavor::Stream,
            };
            Ok(Some(Plan {
                node,
                endpoint,
                target,
                flavor,
            }))
        }
        Route::Node { name, path } => {
            let (node, port) = match name.rsplit_once(':') {
                Some((n, p)) => {
                    let port = p.parse::<u16>().map_err(|_| {
                        ApiError::bad_request(format!("invalid node request {name:?}"))
                    })?;
                    (n.to_string(), Some(port))
                }
                None => (name.clone(), None),
            };
            let mut endpoint = location::node_endpoint(&store.get(&node_def, "", &node)?)?;
            if let Some(p) = port {
                endpoint.port = p;
            }
            let target = match query.filter(|q| !q.is_empty()) {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            Ok(Some(Plan {
                node,
                endpoint,
                target,
                flavor: Flavor::Node,
            }))
        }
    }
}

/// Serves a kubelet-backed request.
pub async fn handle(inner: Arc<Inner>, route: Route, req: Request) -> Response {
    let at = Instant::now();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(String::from);
    let method = req.method().clone();
    let user = authenticate(&inner, req.headers(), req.extensions());
    let (resource, namespace, name, subresource) = match &route {
        Route::Pod {
            namespace,
            name,
            action,
        } => (
            "pods",
            namespace.clone(),
            name.clone(),
            action.subresource(),
        ),
        Route::Node { name, .. } => ("nodes", String::new(), name.clone(), "proxy"),
    };
    let upgrade = proxy::upgrade_of(req.headers());
    let attrs = Attributes {
        verb: verb(&method).into(),
        resource: resource.into(),
        subresource: subresource.into(),
        namespace: namespace.clone(),
        name: name.clone(),
        path: path.clone(),
        ..Default::default()
    };
    let planned = match &user {
        Ok(u) => authz::authorize(&inner.store, u, &attrs)
            .and_then(|()| plan(&inner, &route, query.as_deref())),
        Err(e) => Err(e.clone()),
    };
    let resp = match planned {
        _ if inner.is_down() => ApiError::unavailable().into_response(),
        Err(e) => e.into_response(),
        // The logs of a pod not yet on a node: empty.
        Ok(None) => {
            let mut r = Response::new(Body::empty());
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        }
        Ok(Some(p)) => {
            let (resp, f) = proxy::forward(
                inner.kubelet.tls.clone(),
                p.flavor,
                &p.endpoint,
                &p.target,
                &name,
                req,
            )
            .await;
            inner.kubelet.record(ProxyRecord {
                subresource: subresource.to_string(),
                node: p.node,
                target: p.target,
                upgrade: upgrade.clone(),
                forwarded: f,
            });
            resp
        }
    };
    let code = if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        101
    } else {
        resp.status().as_u16()
    };
    inner.record(RequestRecord {
        verb: verb(&method).into(),
        group: String::new(),
        resource: resource.into(),
        subresource: subresource.into(),
        namespace,
        name,
        code,
        user: user
            .as_ref()
            .map(|u| u.username.clone())
            .unwrap_or_else(|_| "system:anonymous".into()),
        groups: user.map(|u| u.groups).unwrap_or_default(),
        at,
        path,
    });
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route("/api/v1/namespaces/default/pods/web/exec"),
            Some(Route::Pod {
                namespace: "default".into(),
                name: "web".into(),
                action: PodAction::Exec
            })
        );
        assert_eq!(route("/api/v1/namespaces/default/pods/web/status"), None);
        assert_eq!(route("/api/v1/namespaces/default/pods/web"), None);
        assert_eq!(
            route("/api/v1/nodes/n1/proxy/stats/summary"),
            Some(Route::Node {
                name: "n1".into(),
                path: "/stats/summary".into()
            })
        );
        assert_eq!(
            route("/api/v1/nodes/n1/proxy"),
            Some(Route::Node {
                name: "n1".into(),
                path: "/".into()
            })
        );
        assert_eq!(
            route("/api/v1/nodes/n1/proxy/"),
            Some(Route::Node {
                name: "n1".into(),
                path: "/".into()
            })
        );
        assert_eq!(route("/api/v1/nodes/n1/status"), None);
    }
}
