//! Create-only and action endpoints: TokenReview (tokens registered with
//! `TestApiServer::add_token`, anything else unauthenticated), SubjectAccessReview (the pluggable
//! authorizer; admin allowed by default) and the pods/binding subresource.

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

use super::{Ctx, Target, json_response};
use crate::errors::ApiError;
use crate::meta;

pub fn token_review(ctx: &Ctx, mut review: Value) -> Value {
    let token = meta::str_at(&review, &["spec", "token"])
        .unwrap_or("")
        .to_string();
    let status = match ctx.inner.user_for_token(&token) {
        Some(u) => json!({
            "authenticated": true,
            "user": {"username": u.username, "uid": u.uid, "groups": u.groups},
            "audiences": review.pointer("/spec/audiences").cloned().unwrap_or(json!([])),
        }),
        None => json!({"user": {}, "error": "invalid bearer token"}),
    };
    if let Some(m) = review.as_object_mut() {
        m.insert("status".into(), status);
        m.insert("apiVersion".into(), json!("authentication.k8s.io/v1"));
        m.insert("kind".into(), json!("TokenReview"));
        m.insert("metadata".into(), json!({"creationTimestamp": null}));
    }
    review
}

pub fn subject_access_review(ctx: &Ctx, mut review: Value) -> Value {
    let spec = review.get("spec").cloned().unwrap_or(json!({}));
    let allowed = ctx.inner.authorize(&spec);
    let status = if allowed {
        json!({"allowed": true, "reason": "allowed by the test apiserver's authorizer"})
    } else {
        json!({"allowed": false})
    };
    if let Some(m) = review.as_object_mut() {
        m.insert("status".into(), status);
        m.insert("apiVersion".into(), json!("authorization.k8s.io/v1"));
        m.insert("kind".into(), json!("SubjectAccessReview"));
        m.insert("metadata".into(), json!({"creationTimestamp": null}));
    }
    review
}

/// POST pods/NAME/binding: sets spec.nodeName (once) and the PodScheduled condition.
pub fn bind(ctx: &Ctx, t: &Target, name: &str) -> Result<Response, ApiError> {
    let body: Value = serde_json::from_slice(&ctx.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))?;
    let node = meta::str_at(&body, &["target", "name"])
        .unwrap_or("")
        .to_string();
    if node.is_empty() {
        return Err(ApiError::bad_request("binding target name is required"));
    }
    let ns = t.namespace.as_deref().unwrap_or("");
    bind_pod(&ctx.inner.store, &t.def, ns, name, &node)?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// Binds a pod to a node in the store (shared with the scheduler).
pub fn bind_pod(
    store: &crate::store::Store,
    def: &crate::resources::ResourceDef,
    ns: &str,
    name: &str,
    node: &str,
) -> Result<Value, ApiError> {
    store.mutate(def, ns, name, |old| {
        if let Some(cur) = meta::str_at(old, &["spec", "nodeName"]).filter(|n| !n.is_empty()) {
            return Err(ApiError::precondition(def, name, &format!("pod {name} is already assigned to node \"{cur}\"")));
        }
        let mut new = old.clone();
        meta::obj_mut(&mut new, "spec").insert("nodeName".into(), json!(node));
        set_condition(&mut new, json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": meta::now()}));
        Ok(new)
    })
}

/// Sets (replaces by type) a condition in `status.conditions`.
pub fn set_condition(obj: &mut Value, cond: Value) {
    let status = meta::obj_mut(obj, "status");
    let list = status.entry("conditions").or_insert(json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    if let Some(a) = list.as_array_mut() {
        let ty = cond.get("type").cloned();
        match a.iter_mut().find(|c| c.get("type") == ty.as_ref()) {
            Some(c) => *c = cond,
            None => a.push(cond),
        }
    }
}
