//! Server-side apply, simplified: the applied configuration (YAML or JSON) is merged into the live
//! object like a strategic merge, with list-maps keyed by the CRD schema's
//! `x-kubernetes-list-type: map` / `x-kubernetes-list-map-keys` (built-ins use the upstream merge
//! keys). Each manager gets one `managedFields` entry; fields a manager applied before and omits now
//! are removed unless another manager also owns them. A no-op apply keeps the entry's time. Conflicts
//! between managers are not reported: every apply behaves as `force=true`, taking over the fields it
//! sets to a different value from their other owners.

use serde_json::{Map, Value, json};

use super::{KeyFn, ListStrategy, strategic};
use crate::errors::ApiError;
use crate::meta;

/// Parses an apply body: YAML (a superset of JSON).
pub fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_yaml_ng::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("apply patch must be an object"));
    }
    Ok(v)
}

/// The list strategy a structural schema declares for `field` under `path`.
pub fn schema_strategy(schema: &Value, path: &[String], field: &str) -> ListStrategy {
    let mut cur = schema;
    let mut all: Vec<&str> = path.iter().map(String::as_str).collect();
    all.push(field);
    let last = all.len() - 1;
    for (i, p) in all.iter().enumerate() {
        let next = cur
            .pointer(&format!(
                "/properties/{}",
                p.replace('~', "~0").replace('/', "~1")
            ))
            .or_else(|| cur.get("additionalProperties").filter(|a| a.is_object()));
        cur = match next {
            Some(n) => n,
            None => return ListStrategy::Replace,
        };
        // Descend through list items transparently (path omits indices).
        if i < last
            && let Some(items) = cur.get("items")
        {
            cur = items;
        }
    }
    match cur.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("map") => ListStrategy::MergeKeys(
            cur.get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        Some("set") => ListStrategy::MergePrimitive,
        _ => ListStrategy::Replace,
    }
}

/// The `fieldsV1` set of an applied configuration.
pub fn fields_v1(v: &Value, path: &mut Vec<String>, keys: KeyFn<'_>) -> Value {
    let Some(m) = v.as_object() else {
        return json!({});
    };
    let mut out = Map::new();
    for (k, child) in m {
        if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind") {
            continue;
        }
        if path.len() == 1
            && path[0] == "metadata"
            && matches!(
                k.as_str(),
                "name" | "namespace" | "resourceVersion" | "managedFields"
            )
        {
            continue;
        }
        path.push(k.clone());
        let f = match child {
            Value::Object(_) => fields_v1(child, path, keys),
            Value::Array(items) => match keys(&path[..path.len() - 1], k, items) {
                ListStrategy::MergeKeys(ks) => {
                    let mut lm = Map::new();
                    for item in items {
                        let key: Map<String, Value> = ks
                            .iter()
                            .map(|x| (x.clone(), item.get(x).cloned().unwrap_or(Value::Null)))
                            .collect();
                        lm.insert(
                            format!("k:{}", Value::Object(key)),
                            fields_v1(item, path, keys),
                        );
                    }
                    Value::Object(lm)
                }
                ListStrategy::MergePrimitive => Value::Object(
                    items
                        .iter()
                        .map(|i| (format!("v:{i}"), json!({})))
                        .collect(),
                ),
                ListStrategy::Replace => json!({}),
            },
            _ => json!({}),
        };
        path.pop();
        // Metadata holding only what the server owns (the name) is no field of the manager's.
        let empty = f.as_object().is_some_and(Map::is_empty);
        if path.is_empty() && k == "metadata" && empty {
            continue;
        }
        out.insert(format!("f:{k}"), f);
    }
    Value::Object(out)
}

/// Removes from `obj` what `prev` owned, `now` no longer owns and no tree in `others` owns.
fn remove_released(obj: &mut Value, prev: &Value, now: &Value, others: &[&Value]) {
    let Some(pm) = prev.as_object() else { return };
    for (k, pchild) in pm {
        let nchild = now.get(k);
        let other_children: Vec<&Value> = others.iter().filter_map(|o| o.get(k)).collect();
        if let Some(field) = k.strip_prefix("f:") {
            match nchild {
                None if other_children.is_empty() => {
                    if let Some(m) = obj.as_object_mut() {
                        m.remove(field);
                    }
                }
                Some(n) => {
                    if let Some(o) = obj.get_mut(field) {
                        remove_released(o, pchild, n, &other_children);
                    }
                }
                None => {}
            }
        } else if let Some(key) = k.strip_prefix("k:") {
            let Ok(Value::Object(km)) = serde_json::from_str::<Value>(key) else {
                continue;
            };
            let Some(list) = obj.as_array_mut() else {
                continue;
            };
            let hit = |x: &Value| km.iter().all(|(kk, kv)| x.get(kk) == Some(kv));
            match nchild {
                None if other_children.is_empty() => list.retain(|x| !hit(x)),
                Some(n) => {
                    if let Some(item) = list.iter_mut().find(|x| hit(x)) {
                        remove_released(item, pchild, n, &other_children);
                    }
                }
                None => {}
            }
        }
    }
}

/// Removes from another manager's set `other` the fields of `mine` whose applied value differs from the
/// live one: the applier takes them over, as a forced apply does on kube-apiserver. Fields applied with
/// the value they already have stay shared.
fn take_over(other: &mut Value, mine: &Value, live: Option<&Value>, applied: Option<&Value>) {
    let (Some(om), Some(mm)) = (other.as_object_mut(), mine.as_object()) else {
        return;
    };
    for (k, mchild) in mm {
        let Some(ochild) = om.get_mut(k) else {
            continue;
        };
        let (l, a) = if let Some(field) = k.strip_prefix("f:") {
            (
                live.and_then(|v| v.get(field)),
                applied.and_then(|v| v.get(field)),
            )
        } else if let Some(key) = k.strip_prefix("k:") {
            let Ok(Value::Object(km)) = serde_json::from_str::<Value>(key) else {
                continue;
            };
            let hit = |x: &&Value| km.iter().all(|(kk, kv)| x.get(kk) == Some(kv));
            (
                live.and_then(Value::as_array)
                    .and_then(|l| l.iter().find(hit)),
                applied
                    .and_then(Value::as_array)
                    .and_then(|l| l.iter().find(hit)),
            )
        } else {
            continue;
        };
        if mchild.as_object().is_none_or(Map::is_empty) {
            if l != a {
                om.remove(k);
            }
        } else {
            take_over(ochild, mchild, l, a);
            if ochild.as_object().is_some_and(Map::is_empty) {
                om.remove(k);
            }
        }
    }
}

/// Applies `applied` (as `manager`) to `live` and returns the result with managedFields updated.
pub fn apply(
    live: &Value,
    applied: &Value,
    manager: &str,
    subresource: &str,
    keys: KeyFn<'_>,
) -> Value {
    let mut out = strategic::merge(live, applied, keys);
    let fields = fields_v1(applied, &mut Vec::new(), keys);
    let mut entries: Vec<Value> = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mine = |e: &Value| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Apply")
            && e.get("subresource").and_then(Value::as_str).unwrap_or("") == subresource
    };
    for e in entries.iter_mut().filter(|e| !mine(e)) {
        if let Some(set) = e.get_mut("fieldsV1") {
            take_over(set, &fields, Some(live), Some(applied));
        }
    }
    // An entry left with nothing is dropped.
    entries.retain(|e| {
        mine(e)
            || e.get("fieldsV1")
                .and_then(Value::as_object)
                .is_none_or(|m| !m.is_empty())
    });
    let prev_entry = entries.iter().find(|e| mine(e)).cloned();
    if let Some(prev) = prev_entry.as_ref().and_then(|e| e.get("fieldsV1")).cloned() {
        let others: Vec<&Value> = entries
            .iter()
            .filter(|e| !mine(e))
            .filter_map(|e| e.get("fieldsV1"))
            .collect();
        remove_released(&mut out, &prev, &fields, &others);
    }
    // The entry keeps its place (a no-op apply must leave managedFields as they were); a new one leads.
    let at = entries.iter().position(mine).unwrap_or(0);
    entries.retain(|e| !mine(e));
    // As kube-apiserver: the entry's time moves when the apply changed the object; a no-op apply
    // keeps it, so that applying the same again changes nothing, not even managedFields.
    let time = prev_entry
        .and_then(|e| e.get("time").cloned())
        .filter(|_| meta::same_content(live, &out))
        .unwrap_or_else(|| json!(meta::now()));
    let mut entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": applied.get("apiVersion").cloned().unwrap_or(Value::Null),
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    });
    if !subresource.is_empty() {
        entry["subresource"] = json!(subresource);
    }
    entries.insert(at.min(entries.len()), entry);
    meta::meta_mut(&mut out).insert("managedFields".into(), Value::Array(entries));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "backends": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}}}}}})
    }

    #[test]
    fn a_forced_apply_takes_over_changed_fields_and_shares_equal_ones() {
        let keys = |_: &[String], _: &str, _: &[Value]| ListStrategy::Replace;
        let live = json!({"metadata": {"name": "x", "managedFields": [{
            "manager": "old", "operation": "Update", "apiVersion": "v1",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {".": {}, "f:a": {}, "f:b": {}}}}]},
            "data": {"a": "1", "b": "2"}});
        let applied = json!({"apiVersion": "v1", "data": {"a": "1", "b": "3"}});
        let out = apply(&live, &applied, "m", "", &keys);
        let mf = out["metadata"]["managedFields"].as_array().unwrap();
        let old = mf.iter().find(|e| e["manager"] == "old").unwrap();
        assert_eq!(old["fieldsV1"], json!({"f:data": {".": {}, "f:a": {}}}));
        // Everything taken over: the old entry goes.
        let applied = json!({"apiVersion": "v1", "data": {"a": "9"}});
        let only = json!({"metadata": {"name": "x", "managedFields": [{
            "manager": "old", "operation": "Update", "apiVersion": "v1",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}}}]}, "data": {"a": "1"}});
        let out = apply(&only, &applied, "m", "", &keys);
        let mf = out["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(mf.len(), 1);
        assert_eq!(mf[0]["manager"], "m");
    }

    #[test]
    fn list_map_from_schema_and_released_fields() {
        let s = schema();
        let keys = |p: &[String], f: &str, _: &[Value]| schema_strategy(&s, p, f);
        let live =
            json!({"metadata": {"name": "x"}, "spec": {"backends": [{"name": "a", "port": 1}]}});
        let a1 = json!({"apiVersion": "v1", "spec": {"backends": [{"name": "b", "port": 2}], "extra": 1}});
        let out = apply(&live, &a1, "m", "", &keys);
        assert_eq!(
            out["spec"]["backends"],
            json!([{"name": "b", "port": 2}, {"name": "a", "port": 1}])
        );
        let a2 = json!({"apiVersion": "v1", "spec": {"backends": [{"name": "b", "port": 3}]}});
        let out = apply(&out, &a2, "m", "", &keys);
        assert_eq!(
            out["spec"],
            json!({"backends": [{"name": "b", "port": 3}, {"name": "a", "port": 1}]})
        );
        assert_eq!(
            out["metadata"]["managedFields"].as_array().unwrap().len(),
            1
        );
    }
}
