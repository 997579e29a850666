//! Strategic merge patch: JSON merge semantics, except that list fields with a `patchMergeKey`
//! in the upstream Go types merge item by item (node `conditions` by `type`, `containers` by `name`,
//! ...), `patchStrategy:"merge"` scalar lists (finalizers) merge as sets, and the `$patch`,
//! `$deleteFromPrimitiveList/…`, `$setElementOrder/…` and `$retainKeys` directives are honoured.

use serde_json::{Map, Value};

use super::{KeyFn, ListStrategy};
use crate::errors::ApiError;

/// The merge strategy of a built-in list field, from the upstream `patchMergeKey`/`patchStrategy` tags.
pub fn builtin_strategy(_path: &[String], field: &str, items: &[Value]) -> ListStrategy {
    let key = |k: &str| ListStrategy::MergeKeys(vec![k.to_string()]);
    match field {
        "conditions" => key("type"),
        "addresses" => key("type"),
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "containerStatuses"
        | "initContainerStatuses"
        | "ephemeralContainerStatuses"
        | "resourceClaims"
        | "volumesAttached" => key("name"),
        "volumeMounts" => key("mountPath"),
        "volumeDevices" => key("devicePath"),
        "ownerReferences" => key("uid"),
        "podIPs" | "hostIPs" | "hostAliases" => key("ip"),
        "topologySpreadConstraints" => key("topologyKey"),
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                key("containerPort")
            } else {
                key("port")
            }
        }
        "finalizers" => ListStrategy::MergePrimitive,
        _ => ListStrategy::Replace,
    }
}

pub fn apply(target: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "strategic merge patch must be a JSON object",
        ));
    }
    Ok(merge(target, &patch, &builtin_strategy))
}

/// Merges `patch` into `target` using `keys` for lists.
pub fn merge(target: &Value, patch: &Value, keys: KeyFn<'_>) -> Value {
    let mut out = target.clone();
    let mut path = Vec::new();
    merge_value(&mut out, patch, &mut path, keys);
    out
}

fn merge_value(target: &mut Value, patch: &Value, path: &mut Vec<String>, keys: KeyFn<'_>) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                *target = strip(patch);
                return;
            }
            merge_map(t, p, path, keys)
        }
        _ => *target = strip(patch),
    }
}

fn merge_map(
    t: &mut Map<String, Value>,
    p: &Map<String, Value>,
    path: &mut Vec<String>,
    keys: KeyFn<'_>,
) {
    for (k, pv) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(del)) = (
                t.get_mut(field).and_then(Value::as_array_mut),
                pv.as_array(),
            ) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            t.remove(k);
            continue;
        }
        if pv.get("$patch").and_then(Value::as_str) == Some("delete") {
            t.remove(k);
            continue;
        }
        path.push(k.clone());
        match (t.get_mut(k), pv) {
            (Some(tv @ Value::Object(_)), Value::Object(_)) => merge_value(tv, pv, path, keys),
            (Some(Value::Array(tl)), Value::Array(pl)) => {
                let strategy = keys(&path[..path.len() - 1], k, pl);
                merge_list(tl, pl, &strategy, path, keys);
            }
            _ => {
                t.insert(k.clone(), strip(pv));
            }
        }
        path.pop();
    }
    if let Some(retain) = p.get("$retainKeys").and_then(Value::as_array) {
        t.retain(|k, _| retain.iter().any(|r| r.as_str() == Some(k)));
    }
}

fn item_matches(a: &Value, b: &Value, keys: &[String]) -> bool {
    keys.iter().all(|k| a.get(k) == b.get(k))
}

fn merge_list(
    t: &mut Vec<Value>,
    p: &[Value],
    strategy: &ListStrategy,
    path: &mut Vec<String>,
    keys: KeyFn<'_>,
) {
    if p.iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *t = p
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .map(strip)
            .collect();
        return;
    }
    match strategy {
        ListStrategy::Replace => *t = p.iter().map(strip).collect(),
        ListStrategy::MergePrimitive => {
            for item in p {
                if !t.contains(item) {
                    t.push(item.clone());
                }
            }
        }
        ListStrategy::MergeKeys(k) => {
            for item in p {
                if !item.is_object() {
                    continue;
                }
                let pos = t.iter().position(|x| item_matches(x, item, k));
                if item.get("$patch").and_then(Value::as_str) == Some("delete") {
                    t.retain(|x| !item_matches(x, item, k));
                    continue;
                }
                match pos {
                    Some(i) => merge_value(&mut t[i], item, path, keys),
                    None => t.push(strip(item)),
                }
            }
            // Like upstream's normalizeElementOrder: items the patch names come first, in patch
            // order, then the server-only items in their original order.
            let in_patch = |x: &Value| {
                p.iter()
                    .position(|i| i.is_object() && item_matches(x, i, k))
            };
            let (mut named, rest): (Vec<Value>, Vec<Value>) = std::mem::take(t)
                .into_iter()
                .partition(|x| in_patch(x).is_some());
            named.sort_by_key(|x| in_patch(x));
            named.extend(rest);
            *t = named;
        }
    }
}

/// `v` without patch directives.
pub fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    !k.starts_with("$patch")
                        && !k.starts_with("$retainKeys")
                        && !k.starts_with("$setElementOrder/")
                        && !k.starts_with("$deleteFromPrimitiveList/")
                })
                .map(|(k, v)| (k.clone(), strip(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn conditions_merge_by_type() {
        let t = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let p = json!({"status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "False"}]}});
        let out = merge(&t, &p, &builtin_strategy);
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "False"}])
        );
    }

    #[test]
    fn directives() {
        let t = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"containers": [{"name": "x", "image": "i"}, {"name": "y"}], "m": {"a": 1}}});
        let p = json!({
            "metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]},
            "spec": {"containers": [{"name": "y", "$patch": "delete"}], "$setElementOrder/containers": [{"name": "x"}], "m": {"$patch": "replace", "b": 2}}
        });
        let out = merge(&t, &p, &builtin_strategy);
        assert_eq!(
            out,
            json!({"metadata": {"finalizers": ["b", "c"]}, "spec": {"containers": [{"name": "x", "image": "i"}], "m": {"b": 2}}})
        );
    }

    #[test]
    fn unknown_lists_replace() {
        let t = json!({"spec": {"taints": [{"key": "a"}]}});
        let out = merge(
            &t,
            &json!({"spec": {"taints": [{"key": "b"}]}}),
            &builtin_strategy,
        );
        assert_eq!(out["spec"]["taints"], json!([{"key": "b"}]));
    }
}
