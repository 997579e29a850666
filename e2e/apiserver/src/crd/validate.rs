//! Custom resource validation against the CRD version's structural `openAPIV3Schema`: pruning of
//! unknown fields, defaults, types, `required`, `enum`, bounds, lengths, `pattern`, item counts,
//! then the CEL `x-kubernetes-validations` rules (with `oldSelf` on update) through `kube-cel`.
//! Failures become one 422 Invalid with a cause per field, worded like kube-apiserver.

use regex::Regex;
use serde_json::{Value, json};

use crate::errors::{ApiError, Cause};
use crate::meta;
use crate::resources::ResourceDef;

/// Prunes, defaults and validates `obj` in place; 422 on violations.
pub fn validate(
    def: &ResourceDef,
    version: &str,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(schema) = def.crd_version(version).and_then(|v| v.schema.clone()) else {
        return Ok(());
    };
    prune(obj, &schema, true);
    *obj = kube_cel::apply_defaults(&schema, obj);
    let mut causes = Vec::new();
    check(obj, &schema, "", &mut causes);
    if causes.is_empty()
        && let Err(errs) = kube_cel::Validator::new().validate(&schema, obj, old)
    {
        for e in errs.into_vec() {
            let field = e.field_path.trim_start_matches('.').to_string();
            let value = if field.is_empty() {
                Some(&*obj)
            } else {
                obj.pointer(&pointer_of(&field))
            };
            causes.push(Cause {
                reason: "FieldValueInvalid",
                field,
                message: format!(
                    "Invalid value: {}: {}",
                    show(value.unwrap_or(&Value::Null)),
                    e.message
                ),
            });
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(def, meta::name(obj), causes))
    }
}

/// `spec.items[0].name` -> `/spec/items/0/name`.
fn pointer_of(field: &str) -> String {
    field
        .split('.')
        .flat_map(|seg| seg.split('[').map(|s| s.trim_end_matches(']')))
        .fold(String::new(), |mut acc, s| {
            acc.push('/');
            acc.push_str(s);
            acc
        })
}

/// How a value appears in an `Invalid value:` message.
fn show(v: &Value) -> String {
    match v {
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        Value::Null => "\"null\"".into(),
        other => other.to_string(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::Null => "null",
    }
}

/// Removes fields the schema does not declare (unless `x-kubernetes-preserve-unknown-fields`).
pub fn prune(v: &mut Value, schema: &Value, root: bool) {
    match v {
        Value::Object(m) => {
            let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
            let embedded =
                root || schema.get("x-kubernetes-embedded-resource") == Some(&json!(true));
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            m.retain(|k, _| {
                preserve
                    || (embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
                    || props.is_some_and(|p| p.contains_key(k))
                    || additional.is_some()
            });
            for (k, child) in m.iter_mut() {
                if embedded && k == "metadata" {
                    continue;
                }
                if let Some(s) = props.and_then(|p| p.get(k)).or(additional) {
                    prune(child, s, false);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                items.iter_mut().for_each(|i| prune(i, s, false));
            }
        }
        _ => {}
    }
}

fn invalid(path: &str, v: &Value, msg: String) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: path.into(),
        message: format!("Invalid value: {}: {msg}", show(v)),
    }
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

fn check(v: &Value, s: &Value, path: &str, out: &mut Vec<Cause>) {
    if v.is_null() {
        if s.get("nullable") != Some(&json!(true)) && s.get("type").is_some() {
            let t = s.get("type").and_then(Value::as_str).unwrap_or("");
            out.push(invalid(
                path,
                v,
                format!("{path} in body must be of type {t}: \"null\""),
            ));
        }
        return;
    }
    let int_or_string = s.get("x-kubernetes-int-or-string") == Some(&json!(true));
    if let Some(t) = s.get("type").and_then(Value::as_str) {
        let actual = type_name(v);
        let ok = actual == t
            || (t == "number" && actual == "integer")
            || (int_or_string && matches!(actual, "integer" | "string"));
        if !ok {
            out.push(invalid(
                path,
                &json!(actual),
                format!("{path} in body must be of type {t}: {}", json!(actual)),
            ));
            return;
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        out.push(Cause {
            reason: "FieldValueNotSupported",
            field: path.into(),
            message: format!(
                "Unsupported value: {v}: supported values: {}",
                list.join(", ")
            ),
        });
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
            let excl = s.get("exclusiveMinimum") == Some(&json!(true));
            if n < min || (excl && n == min) {
                let rel = if excl {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                out.push(invalid(
                    path,
                    v,
                    format!("{path} in body should be {rel} {}", s["minimum"]),
                ));
            }
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
            let excl = s.get("exclusiveMaximum") == Some(&json!(true));
            if n > max || (excl && n == max) {
                let rel = if excl {
                    "less than"
                } else {
                    "less than or equal to"
                };
                out.push(invalid(
                    path,
                    v,
                    format!("{path} in body should be {rel} {}", s["maximum"]),
                ));
            }
        }
    }
    if let Some(st) = v.as_str() {
        let len = st.chars().count() as u64;
        if let Some(min) = s
            .get("minLength")
            .and_then(Value::as_u64)
            .filter(|m| len < *m)
        {
            out.push(invalid(
                path,
                v,
                format!("{path} in body should be at least {min} chars long"),
            ));
        }
        if let Some(max) = s
            .get("maxLength")
            .and_then(Value::as_u64)
            .filter(|m| len > *m)
        {
            out.push(invalid(
                path,
                v,
                format!("{path} in body should be at most {max} chars long"),
            ));
        }
        if let Some(p) = s.get("pattern").and_then(Value::as_str)
            && Regex::new(p).is_ok_and(|re| !re.is_match(st))
        {
            out.push(invalid(
                path,
                v,
                format!("{path} in body should match '{p}'"),
            ));
        }
    }
    match v {
        Value::Object(m) => {
            if let Some(req) = s.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if !m.contains_key(r) {
                        out.push(crate::store::required(&join(path, r)));
                    }
                }
            }
            let props = s.get("properties").and_then(Value::as_object);
            let additional = s.get("additionalProperties").filter(|a| a.is_object());
            for (k, child) in m {
                if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(cs) = props.and_then(|p| p.get(k)).or(additional) {
                    check(child, cs, &join(path, k), out);
                }
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = s.get("minItems").and_then(Value::as_u64).filter(|m| n < *m) {
                out.push(invalid(
                    path,
                    v,
                    format!("{path} in body should have at least {min} items"),
                ));
            }
            if let Some(max) = s.get("maxItems").and_then(Value::as_u64).filter(|m| n > *m) {
                out.push(Cause {
                    reason: "FieldValueTooMany",
                    field: path.into(),
                    message: format!("Too many: {n}: must have at most {max} items"),
                });
            }
            if let Some(is) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item, is, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}
