//! Garbage collector: an object whose every `ownerReferences` uid no longer exists is deleted
//! (background propagation), like kube-controller-manager's GC after the owner is deleted.

use std::collections::HashSet;

use serde_json::Value;

use crate::meta;
use crate::resources::ResourceDef;
use crate::server::Inner;
use crate::store::DeleteOpts;

/// Whether `obj` lists `uid` among its owners.
pub fn owned_by(obj: &Value, uid: &str) -> bool {
    owner_uids(obj).any(|u| u == uid)
}

fn owner_uids(obj: &Value) -> impl Iterator<Item = &str> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("uid").and_then(Value::as_str))
}

/// One GC pass: deletes dependents whose owners are all gone.
pub fn pass(inner: &Inner) {
    let mut uids = HashSet::new();
    let mut candidates: Vec<(ResourceDef, String, String)> = Vec::new();
    inner.store.scan(|def, obj| {
        uids.insert(meta::uid_of(obj).to_string());
        if owner_uids(obj).next().is_some() && obj.pointer("/metadata/deletionTimestamp").is_none()
        {
            candidates.push((
                def.clone(),
                meta::namespace(obj).to_string(),
                meta::name(obj).to_string(),
            ));
        }
    });
    for (def, ns, name) in candidates {
        let Ok(obj) = inner.store.get(&def, &ns, &name) else {
            continue;
        };
        if owner_uids(&obj).all(|u| !uids.contains(u))
            && let Err(e) = inner.store.delete(&def, &ns, &name, &DeleteOpts::default())
        {
            tracing::debug!(error = %e, %name, "gc delete");
        }
    }
}
