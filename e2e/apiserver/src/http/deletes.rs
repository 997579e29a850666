//! Deletes: DeleteOptions (body or query), preconditions, graceful deletion, NodeRestriction for
//! node identities, and deletecollection by selector.

use http::StatusCode;
use serde_json::{Value, json};

use super::handlers::{admit, answer, ns_of, ok, parse_json};
use super::{Ctx, Target, present};
use crate::authz::noderestriction::Operation;
use crate::errors::{self, ApiError};
use crate::selectors::Selectors;
use crate::store::DeleteOpts;
use crate::{authz, meta};

type Res = Result<axum::response::Response, ApiError>;

fn delete_opts(ctx: &Ctx) -> Result<DeleteOpts, ApiError> {
    let body: Value = if ctx.body.is_empty() {
        json!({})
    } else {
        parse_json(&ctx.body)?
    };
    let grace = body
        .get("gracePeriodSeconds")
        .and_then(Value::as_i64)
        .or_else(|| ctx.q("gracePeriodSeconds").and_then(|g| g.parse().ok()));
    let propagation = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .map(String::from)
        .or_else(|| ctx.q("propagationPolicy").map(String::from))
        .or_else(|| {
            (body.get("orphanDependents") == Some(&json!(true))).then(|| "Orphan".to_string())
        });
    let pre = |k: &str| {
        body.pointer(&format!("/preconditions/{k}"))
            .and_then(Value::as_str)
            .map(String::from)
    };
    Ok(DeleteOpts {
        grace,
        uid: pre("uid"),
        resource_version: pre("resourceVersion"),
        propagation,
    })
}

/// Whether a completed delete answers with the object (pods, custom resources) or a Status.
fn returns_object(t: &Target) -> bool {
    t.def.crd.is_some() || t.def.is("", "pods")
}

pub fn delete(ctx: &Ctx, t: &Target, name: &str) -> Res {
    let opts = delete_opts(ctx)?;
    if authz::node_identity(&ctx.user).is_some() {
        let old = ctx.inner.store.get(&t.def, ns_of(t), name)?;
        admit(&ctx.user, t, name, &Operation::Delete(&old))?;
    }
    let d = ctx.inner.store.delete(&t.def, ns_of(t), name, &opts)?;
    if d.removed && !returns_object(t) {
        return ok(
            StatusCode::OK,
            &errors::success_status(&t.def, name, meta::uid_of(&d.object)),
        );
    }
    answer(ctx, t, StatusCode::OK, d.object)
}

pub fn delete_collection(ctx: &Ctx, t: &Target) -> Res {
    let opts = delete_opts(ctx)?;
    let sel = Selectors::parse(ctx.q("labelSelector"), ctx.q("fieldSelector"))?;
    let (items, _) = ctx.inner.store.list(&t.def, t.namespace.as_deref());
    let mut deleted = Vec::new();
    for o in items.iter().filter(|o| sel.matches(o)) {
        match ctx
            .inner
            .store
            .delete(&t.def, meta::namespace(o), meta::name(o), &opts)
        {
            Ok(d) => deleted.push(present(&t.def, &t.version, d.object)),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let list = json!({
        "kind": format!("{}List", t.def.kind),
        "apiVersion": t.def.api_version(&t.version),
        "metadata": {"resourceVersion": ctx.inner.store.current_rv().to_string()},
        "items": deleted,
    });
    ok(StatusCode::OK, &list)
}
