//! The HTTP front: one axum fallback handler that authenticates (`crate::authn`), applies the
//! "down" switch, authorizes (`crate::authz`), applies injected latency, routes discovery and resource paths (`/api/v1/...`, `/apis/G/V/...`,
//! `namespaces/NS/...`, `NAME/SUBRESOURCE`), dispatches to [`handlers`] (kubelet-backed paths to
//! [`proxy`]), and records every request.

pub mod deletes;
pub mod handlers;
pub mod proxy;
pub mod reviews;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;

use crate::authn::authenticate;
use crate::authz::{self, Attributes};
use crate::discovery;
use crate::errors::ApiError;
use crate::resources::ResourceDef;
use crate::server::{Inner, RequestRecord, UserInfo};

/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;

pub fn router(inner: Arc<Inner>) -> Router {
    Router::new().fallback(handle).with_state(inner)
}

pub fn json_response(code: StatusCode, v: &Value) -> Response {
    let mut r = Response::new(Body::from(v.to_string()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// A stored object as served at `version`: converted from its storage shape, apiVersion and kind filled in.
pub fn present(def: &ResourceDef, version: &str, obj: Value) -> Value {
    match &def.storage {
        Some(alias) => typed(def, version, (alias.from_storage)(obj)),
        None => typed(def, version, obj),
    }
}

/// The stored shape of an object written as `def` (after [`typed`]).
pub fn to_storage(def: &ResourceDef, obj: Value) -> Value {
    match &def.storage {
        Some(alias) => (alias.to_storage)(obj),
        None => obj,
    }
}

/// A request body as `def` at `version`: apiVersion and kind filled in.
pub fn typed(def: &ResourceDef, version: &str, mut obj: Value) -> Value {
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(def.api_version(version)));
        m.insert("kind".into(), Value::String(def.kind.clone()));
    }
    obj
}

/// A resource request, parsed from the path.
pub struct Target {
    pub def: Arc<ResourceDef>,
    pub version: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: String,
}

/// Everything a handler needs about the request.
pub struct Ctx {
    pub inner: Arc<Inner>,
    pub method: Method,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    pub user: UserInfo,
}

impl Ctx {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }

    pub fn header(&self, k: http::HeaderName) -> &str {
        self.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// `Some(includeObject)` when the Accept header asks for a meta.k8s.io Table.
    pub fn wants_table(&self) -> Option<String> {
        let accept = self.header(http::header::ACCEPT);
        let table = accept
            .split(',')
            .any(|a| a.contains("as=Table") && a.contains("g=meta.k8s.io"));
        table.then(|| self.q("includeObject").unwrap_or("Metadata").to_string())
    }

    /// False when the Accept header allows no plain JSON answer (e.g. aggregated discovery only).
    pub fn accepts_json(&self) -> bool {
        let accept = self.header(http::header::ACCEPT);
        accept.is_empty()
            || accept.split(',').any(|a| {
                let params: Vec<&str> = a.split(';').map(str::trim).collect();
                let base = params.first().copied().unwrap_or("");
                matches!(base, "application/json" | "*/*" | "application/*")
                    && !params
                        .iter()
                        .any(|p| p.starts_with("as=") || p.starts_with("g="))
            })
            || self.wants_table().is_some()
    }
}

fn audit_verb(method: &Method, t: Option<&Target>, watch: bool) -> &'static str {
    let named = t.is_some_and(|t| t.name.is_some());
    match *method {
        Method::GET if watch => "watch",
        Method::GET if named || t.is_none() => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    if let Some(route) = proxy::route(req.uri().path()) {
        return proxy::handle(inner, route, req).await;
    }
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query: HashMap<String, String> =
        form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return ApiError::bad_request(format!("reading body: {e}")).into_response(),
    };
    let user = authenticate(&inner, &parts.headers, &parts.extensions);
    let (username, groups) = match &user {
        Ok(u) => (u.username.clone(), u.groups.clone()),
        Err(_) => ("system:anonymous".into(), Vec::new()),
    };
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let target = resolve(&inner, &segs);
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let mut record = RequestRecord {
        verb: audit_verb(
            &parts.method,
            target.as_ref().ok().and_then(|t| t.as_ref()),
            watch,
        )
        .into(),
        group: String::new(),
        resource: String::new(),
        subresource: String::new(),
        namespace: String::new(),
        name: String::new(),
        code: 0,
        user: username,
        groups,
        at,
        path: path.clone(),
    };
    if let Ok(Some(t)) = &target {
        record.group = t.def.group.clone();
        record.resource = t.def.plural.clone();
        record.subresource = t.subresource.clone();
        record.namespace = t.namespace.clone().unwrap_or_default();
        record.name = t.name.clone().unwrap_or_default();
    }
    let resp = match (user, target) {
        _ if inner.is_down_for(&record.user) => ApiError::unavailable().into_response(),
        (Err(e), _) | (_, Err(e)) => e.into_response(),
        (Ok(user), Ok(t)) => {
            match authz::authorize(&inner.store, &user, &attributes(&record, &query)) {
                Err(e) => e.into_response(),
                Ok(()) => {
                    let delay = inner.latency_for(&record.resource);
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let ctx = Ctx {
                        inner: inner.clone(),
                        method: parts.method,
                        query,
                        headers: parts.headers,
                        body,
                        user,
                    };
                    match t {
                        Some(t) => handlers::dispatch(&ctx, t, watch)
                            .await
                            .unwrap_or_else(IntoResponse::into_response),
                        None => {
                            non_resource(&ctx, &segs).unwrap_or_else(IntoResponse::into_response)
                        }
                    }
                }
            }
        }
    };
    record.code = resp.status().as_u16();
    inner.record(record);
    resp
}

/// The authorizer's view of a request (from its audit record and query).
fn attributes(r: &RequestRecord, query: &HashMap<String, String>) -> Attributes {
    let field_selector = query.get("fieldSelector").cloned().unwrap_or_default();
    let mut name = r.name.clone();
    if name.is_empty()
        && matches!(r.verb.as_str(), "list" | "watch")
        && let Some(n) = authz::selector_value(&field_selector, "metadata.name")
    {
        name = n.to_string();
    }
    Attributes {
        verb: r.verb.clone(),
        group: r.group.clone(),
        resource: r.resource.clone(),
        subresource: r.subresource.clone(),
        namespace: r.namespace.clone(),
        name,
        field_selector,
        path: r.path.clone(),
    }
}

/// Discovery and health endpoints.
fn non_resource(ctx: &Ctx, segs: &[&str]) -> Result<Response, ApiError> {
    if ctx.method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    let defs = ctx.inner.store.defs();
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    match segs {
        ["version"] => ok(discovery::version()),
        ["healthz" | "livez" | "readyz"] => Ok((StatusCode::OK, "ok").into_response()),
        ["openapi", "v3"] => ok(discovery::openapi_v3_index(&defs)),
        ["openapi", "v3", "api", v] => {
            discovery::openapi_v3_doc(&defs, "", v).map_or_else(|| Err(not_found_path()), ok)
        }
        ["openapi", "v3", "apis", g, v] => {
            discovery::openapi_v3_doc(&defs, g, v).map_or_else(|| Err(not_found_path()), ok)
        }
        ["openapi", ..] => Err(not_found_path()),
        _ if !ctx.accepts_json() => Err(ApiError::not_acceptable()),
        ["api"] => ok(discovery::api_versions(&ctx.inner.addr.to_string())),
        ["api", "v1"] => {
            discovery::resource_list(&defs, "", "v1").map_or_else(|| Err(not_found_path()), ok)
        }
        ["apis"] => ok(discovery::group_list(&defs)),
        ["apis", g] => discovery::group(&defs, g).map_or_else(|| Err(not_found_path()), ok),
        ["apis", g, v] => {
            discovery::resource_list(&defs, g, v).map_or_else(|| Err(not_found_path()), ok)
        }
        _ => Err(not_found_path()),
    }
}

fn not_found_path() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

/// Parses a resource path; `Ok(None)` for non-resource paths.
fn resolve(inner: &Inner, segs: &[&str]) -> Result<Option<Target>, ApiError> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return Ok(None),
    };
    let is_ns_sub =
        rest.len() == 3 && rest[0] == "namespaces" && matches!(rest[2], "status" | "finalize");
    let (namespace, rest) = if rest.len() >= 3 && rest[0] == "namespaces" && !is_ns_sub {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let def = inner
        .store
        .find_def(group, version, rest[0])
        .ok_or_else(not_found_path)?;
    if namespace.is_some() && !def.namespaced {
        return Err(not_found_path());
    }
    let subresource = rest.get(2).map(|s| s.to_string()).unwrap_or_default();
    if rest.len() > 3 || (!subresource.is_empty() && !def.subresources.contains(&subresource)) {
        return Err(not_found_path());
    }
    Ok(Some(Target {
        def,
        version: version.to_string(),
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        subresource,
    }))
}
