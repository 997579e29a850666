//! Resource verbs: get, list (selectors, limit/continue, Table), watch, create, update (main
//! resource vs subresources), the four patch types; delete and deletecollection are in [`super::deletes`]. Custom resources are validated against their CRD on every write.

use std::time::Duration;

use axum::response::Response;
use base64::Engine;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Ctx, Target, deletes, json_response, present, reviews, to_storage, typed};
use crate::authz::noderestriction::{self, Operation};
use crate::errors::ApiError;
use crate::patch::{self, PatchType, strategic};
use crate::selectors::Selectors;
use crate::server::UserInfo;
use crate::watch::{self, WatchParams};
use crate::{crd, kinds, meta};

type Res = Result<Response, ApiError>;

pub async fn dispatch(ctx: &Ctx, t: Target, watch: bool) -> Res {
    let verb = match (&ctx.method, &t.name) {
        (&Method::GET, _) if watch => "watch",
        (&Method::GET, Some(_)) => "get",
        (&Method::GET, None) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, Some(_)) => "delete",
        (&Method::DELETE, None) => "deletecollection",
        _ => return Err(ApiError::method_not_allowed()),
    };
    if !(t.def.can(verb) || (t.subresource == "binding" && verb == "create")) {
        return Err(ApiError::method_not_allowed());
    }
    check_json_body(ctx)?;
    match (verb, t.name.clone()) {
        ("watch", _) => watch_handler(ctx, t),
        ("get", Some(name)) => get(ctx, &t, &name),
        ("list", None) => list(ctx, &t),
        ("create", None) => create(ctx, &t),
        ("create", Some(name)) if t.subresource == "binding" => reviews::bind(ctx, &t, &name),
        ("update", Some(name)) => update(ctx, &t, &name),
        ("patch", Some(name)) => patch_handler(ctx, &t, &name),
        ("delete", Some(name)) => deletes::delete(ctx, &t, &name),
        ("deletecollection", None) => deletes::delete_collection(ctx, &t),
        _ => Err(ApiError::method_not_allowed()),
    }
}

pub(super) fn ok(code: StatusCode, v: &Value) -> Res {
    Ok(json_response(code, v))
}

pub(super) fn ns_of(t: &Target) -> &str {
    t.namespace.as_deref().unwrap_or("")
}

/// 415 for request bodies that are not JSON (kubectl's typed clients try protobuf first).
fn check_json_body(ctx: &Ctx) -> Result<(), ApiError> {
    let ct = ctx.header(http::header::CONTENT_TYPE);
    let base = ct.split(';').next().unwrap_or("").trim();
    if ctx.body.is_empty()
        || base.is_empty()
        || base == "application/json"
        || base.ends_with("+json")
        || base.ends_with("+yaml")
    {
        Ok(())
    } else {
        Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml; got {ct}"
            ),
        ))
    }
}

pub(super) fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    Ok(v)
}

/// Answers one object, as a Table row when asked.
pub(super) fn answer(ctx: &Ctx, t: &Target, code: StatusCode, obj: Value) -> Res {
    let obj = present(&t.def, &t.version, obj);
    match ctx.wants_table() {
        Some(inc) => ok(
            code,
            &crd::table::table(&t.def, &t.version, &[obj], &inc, json!({})),
        ),
        None => ok(code, &obj),
    }
}

fn get(ctx: &Ctx, t: &Target, name: &str) -> Res {
    let obj = ctx.inner.store.get(&t.def, ns_of(t), name)?;
    answer(ctx, t, StatusCode::OK, obj)
}

fn list(ctx: &Ctx, t: &Target) -> Res {
    let sel = Selectors::parse(ctx.q("labelSelector"), ctx.q("fieldSelector"))?;
    let (items, rv) = ctx.inner.store.list(&t.def, t.namespace.as_deref());
    if ctx.q("resourceVersionMatch") == Some("Exact")
        && let Some(want) = ctx.q("resourceVersion").and_then(|r| r.parse::<u64>().ok())
        && want != rv
    {
        return Err(ApiError::expired(
            "The resourceVersion for the provided list is too old.",
        ));
    }
    let start = match ctx.q("continue").filter(|c| !c.is_empty()) {
        Some(tok) => Some(decode_continue(tok)?),
        None => None,
    };
    let mut matching: Vec<Value> = items
        .into_iter()
        .filter(|o| start.as_ref().is_none_or(|s| key_of(o) > *s))
        .filter(|o| sel.matches(o))
        .map(|o| present(&t.def, &t.version, o))
        .collect();
    let mut list_meta = json!({"resourceVersion": rv.to_string()});
    if let Some(limit) = ctx
        .q("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        && matching.len() > limit
    {
        let rest = matching.split_off(limit);
        if let Some(last) = matching.last() {
            list_meta["continue"] = json!(encode_continue(&key_of(last), rv));
            list_meta["remainingItemCount"] = json!(rest.len());
        }
    }
    if let Some(inc) = ctx.wants_table() {
        return ok(
            StatusCode::OK,
            &crd::table::table(&t.def, &t.version, &matching, &inc, list_meta),
        );
    }
    let list = json!({
        "kind": format!("{}List", t.def.kind),
        "apiVersion": t.def.api_version(&t.version),
        "metadata": list_meta,
        "items": matching,
    });
    ok(StatusCode::OK, &list)
}

fn key_of(o: &Value) -> String {
    format!("{}\u{0}{}", meta::namespace(o), meta::name(o))
}

fn encode_continue(start: &str, rv: u64) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).to_string())
}

fn decode_continue(tok: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request("continue key is not valid");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(tok)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    v.get("start")
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(bad)
}

fn watch_handler(ctx: &Ctx, t: Target) -> Res {
    let mut selectors = Selectors::parse(ctx.q("labelSelector"), ctx.q("fieldSelector"))?;
    if let Some(name) = &t.name {
        let f = format!("metadata.name={name}");
        let extra = ctx
            .q("fieldSelector")
            .map(|s| format!("{f},{s}"))
            .unwrap_or(f);
        selectors = Selectors::parse(ctx.q("labelSelector"), Some(&extra))?;
    }
    if !ctx.accepts_json() {
        return Err(ApiError::not_acceptable());
    }
    let params = WatchParams {
        def: t.def.clone(),
        version: t.version.clone(),
        namespace: t.namespace.clone(),
        resource_version: ctx.q("resourceVersion").map(String::from),
        selectors,
        bookmarks: ctx.q("allowWatchBookmarks") == Some("true"),
        timeout: ctx
            .q("timeoutSeconds")
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs),
        table: ctx.wants_table(),
    };
    Ok(watch::response(ctx.inner.clone(), params))
}

/// Checks the body's namespace against the URL's and fills it in.
fn place(t: &Target, obj: &mut Value) -> Result<(), ApiError> {
    if let Some(ns) = &t.namespace {
        let body_ns = meta::namespace(obj);
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        meta::meta_mut(obj).insert("namespace".into(), json!(ns));
    } else if t.def.namespaced {
        return Err(ApiError::method_not_allowed());
    }
    Ok(())
}

/// NodeRestriction for a write through `t` to the object named `name`.
pub(super) fn admit(
    user: &UserInfo,
    t: &Target,
    name: &str,
    op: &Operation,
) -> Result<(), ApiError> {
    let target = noderestriction::Target {
        group: &t.def.group,
        resource: &t.def.plural,
        subresource: &t.subresource,
        namespace: ns_of(t),
        name,
    };
    noderestriction::admit(user, &target, op)
}

/// Validates a custom resource write; no-op for built-ins.
fn validate_cr(t: &Target, obj: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
    if t.def.crd.is_some() {
        crd::validate::validate(&t.def, &t.version, obj, old)
    } else {
        Ok(())
    }
}

fn create(ctx: &Ctx, t: &Target) -> Res {
    let mut obj = parse_json(&ctx.body)?;
    if t.def.is("authentication.k8s.io", "tokenreviews") {
        return ok(StatusCode::CREATED, &reviews::token_review(ctx, obj));
    }
    if t.def.is("authorization.k8s.io", "subjectaccessreviews") {
        return ok(
            StatusCode::CREATED,
            &reviews::subject_access_review(ctx, obj),
        );
    }
    place(t, &mut obj)?;
    obj = typed(&t.def, &t.version, obj);
    if t.def.crd.is_some()
        && t.def.has_status()
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    validate_cr(t, &mut obj, None)?;
    if t.def
        .is("certificates.k8s.io", "certificatesigningrequests")
    {
        let spec = meta::obj_mut(&mut obj, "spec");
        spec.insert("username".into(), json!(ctx.user.username));
        spec.insert("groups".into(), json!(ctx.user.groups));
    }
    admit(&ctx.user, t, meta::name(&obj), &Operation::Create(&obj))?;
    let mut obj = to_storage(&t.def, obj);
    patch::update::record(&mut obj, None, &update_manager(ctx), "");
    let created = ctx.inner.store.create(&t.def, obj)?;
    answer(ctx, t, StatusCode::CREATED, created)
}

/// The manager a non-apply write is recorded under in `managedFields`.
fn update_manager(ctx: &Ctx) -> String {
    patch::update::manager(ctx.q("fieldManager"), ctx.header(http::header::USER_AGENT))
}

/// The object to store for an update by `user` through `t` with `desired` as the client's version;
/// `manager`: record it in `managedFields` as an Update by that manager (apply records its own).
fn updated(
    user: &UserInfo,
    t: &Target,
    old: &Value,
    desired: Value,
    manager: Option<&str>,
) -> Result<Value, ApiError> {
    let desired = to_storage(&t.def, desired);
    let mut new = kinds::prepare_update(&t.def, &t.subresource, old, desired);
    if new.pointer("/metadata/managedFields").is_none()
        && let Some(mf) = old.pointer("/metadata/managedFields").cloned()
    {
        meta::meta_mut(&mut new).insert("managedFields".into(), mf);
    }
    if let Some(manager) = manager {
        patch::update::record(&mut new, Some(old), manager, &t.subresource);
    }
    validate_cr(t, &mut new, Some(old))?;
    admit(
        user,
        t,
        meta::name(old),
        &Operation::Update { old, new: &new },
    )?;
    if t.def
        .is("apiextensions.k8s.io", "customresourcedefinitions")
    {
        crd::registry::prepare_crd(&mut new);
    }
    Ok(new)
}

fn update(ctx: &Ctx, t: &Target, name: &str) -> Res {
    let mut body = parse_json(&ctx.body)?;
    place(t, &mut body)?;
    let body = typed(&t.def, &t.version, body);
    let manager = update_manager(ctx);
    let obj = ctx.inner.store.mutate(&t.def, ns_of(t), name, |old| {
        updated(&ctx.user, t, old, body, Some(&manager))
    })?;
    answer(ctx, t, StatusCode::OK, obj)
}

/// Drops from an applied configuration what the target's update strategy resets (kube-apiserver's
/// `GetResetFields`): `spec` through `status`, `status` through the main resource of a kind with a
/// status subresource. The server neither stores them nor records them in the manager's set.
fn reset_fields(t: &Target, applied: &mut Value) {
    let reset = match t.subresource.as_str() {
        "status" => "spec",
        "" if t.def.has_status() => "status",
        _ => return,
    };
    if let Some(m) = applied.as_object_mut() {
        m.remove(reset);
    }
}

fn patch_handler(ctx: &Ctx, t: &Target, name: &str) -> Res {
    let ct = ctx.header(http::header::CONTENT_TYPE);
    let pt =
        PatchType::from_content_type(ct).ok_or_else(|| ApiError::unsupported_media_type(ct))?;
    let is_cr = t.def.crd.is_some();
    if pt == PatchType::Strategic && is_cr {
        return Err(ApiError::unsupported_media_type(ct));
    }
    let store = &ctx.inner.store;
    let schema = t
        .def
        .crd_version(&t.version)
        .and_then(|v| v.schema.clone())
        .unwrap_or(Value::Null);
    let keys = move |p: &[String], f: &str, items: &[Value]| {
        if is_cr {
            patch::apply::schema_strategy(&schema, p, f)
        } else {
            strategic::builtin_strategy(p, f, items)
        }
    };
    if pt == PatchType::Apply {
        let manager = ctx
            .q("fieldManager")
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "PATCH request with apply content type must have a fieldManager",
                )
            })?;
        let mut applied = patch::apply::parse_body(&ctx.body)?;
        reset_fields(t, &mut applied);
        place(t, &mut applied)?;
        meta::meta_mut(&mut applied).insert("name".into(), json!(name));
        let applied = typed(&t.def, &t.version, applied);
        if let Err(e) = store.get(&t.def, ns_of(t), name) {
            if e.code != 404 || !t.subresource.is_empty() {
                return Err(e);
            }
            let mut obj = patch::apply::apply(&json!({}), &applied, manager, "", &keys);
            validate_cr(t, &mut obj, None)?;
            admit(&ctx.user, t, name, &Operation::Create(&obj))?;
            let created = store.create(&t.def, to_storage(&t.def, obj))?;
            return answer(ctx, t, StatusCode::CREATED, created);
        }
        let obj = store.mutate(&t.def, ns_of(t), name, |old| {
            let live = present(&t.def, &t.version, old.clone());
            let merged = patch::apply::apply(&live, &applied, manager, &t.subresource, &keys);
            updated(&ctx.user, t, old, merged, None)
        })?;
        return answer(ctx, t, StatusCode::OK, obj);
    }
    let manager = update_manager(ctx);
    let obj = store.mutate(&t.def, ns_of(t), name, |old| {
        let live = present(&t.def, &t.version, old.clone());
        let patched = match pt {
            PatchType::Merge => patch::merge::apply(&live, &ctx.body)?,
            PatchType::Json => patch::json::apply(&live, &ctx.body)?,
            _ => strategic::apply(&live, &ctx.body)?,
        };
        updated(&ctx.user, t, old, patched, Some(&manager))
    })?;
    answer(ctx, t, StatusCode::OK, obj)
}
