//! `meta.k8s.io/v1` Table rendering for `kubectl get`: a CRD version's additionalPrinterColumns
//! (simple JSONPath: `.a.b`, `.a[0]`, `.a[*].b`, `.a[?(@.k=="v")].b`), or Name + Age for everything
//! else. Row objects are PartialObjectMetadata unless `includeObject=Object` asks for the object.

use serde_json::{Value, json};

use crate::meta;
use crate::resources::ResourceDef;

/// Evaluates a simple JSONPath against `v`.
pub fn jsonpath(v: &Value, path: &str) -> Vec<Value> {
    let path = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    let mut cur = vec![v.clone()];
    for seg in segments(path) {
        let mut next = Vec::new();
        for c in &cur {
            match &seg {
                Seg::Field(f) => next.extend(c.get(f).cloned()),
                Seg::Index(i) => next.extend(c.as_array().and_then(|a| a.get(*i)).cloned()),
                Seg::All => next.extend(c.as_array().cloned().unwrap_or_default()),
                Seg::Filter(k, want) => next.extend(
                    c.as_array()
                        .map(|a| {
                            a.iter()
                                .filter(|x| {
                                    jsonpath(x, k).first().map(as_text).as_deref()
                                        == Some(want.as_str())
                                })
                                .cloned()
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default(),
                ),
            }
        }
        cur = next;
    }
    cur
}

enum Seg {
    Field(String),
    Index(usize),
    All,
    Filter(String, String),
}

fn segments(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            rest = r;
            continue;
        }
        if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').unwrap_or(r.len());
            let inner = &r[..end];
            rest = r.get(end + 1..).unwrap_or("");
            if inner == "*" {
                out.push(Seg::All);
            } else if let Ok(i) = inner.parse() {
                out.push(Seg::Index(i));
            } else if let Some(f) = inner.strip_prefix("?(@").and_then(|f| f.strip_suffix(')'))
                && let Some((k, v)) = f.split_once("==")
            {
                out.push(Seg::Filter(
                    k.trim().to_string(),
                    v.trim().trim_matches(|c| c == '"' || c == '\'').to_string(),
                ));
            }
            continue;
        }
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        out.push(Seg::Field(rest[..end].to_string()));
        rest = &rest[end..];
    }
    out
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// kube's short human duration: `42s`, `5m`, `3h`, `2d`, `1y`.
pub fn age(ts: &str) -> String {
    let Some(t) = meta::parse_ts(ts) else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 * 3 => format!("{}m", s / 60),
        s if s < 86400 * 2 => format!("{}h", s / 3600),
        s if s < 86400 * 365 * 2 => format!("{}d", s / 86400),
        s => format!("{}y", s / (86400 * 365)),
    }
}

fn column(name: &str, ty: &str, format: &str, description: &str, priority: i64) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
}

/// The Table for `objects` of `def` served as `version`.
pub fn table(
    def: &ResourceDef,
    version: &str,
    objects: &[Value],
    include_object: &str,
    list_meta: Value,
) -> Value {
    let custom: Vec<Value> = def
        .crd_version(version)
        .map(|v| v.printer_columns.clone())
        .unwrap_or_default();
    let mut defs = vec![column(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace.",
        0,
    )];
    let with_age = custom.is_empty();
    for c in &custom {
        let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        defs.push(column(
            &s("name"),
            &s("type"),
            &s("format"),
            &s("description"),
            c.get("priority").and_then(Value::as_i64).unwrap_or(0),
        ));
    }
    if with_age {
        defs.push(column("Age", "string", "", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![json!(meta::name(o))];
            for c in &custom {
                let path = c.get("jsonPath").and_then(Value::as_str).unwrap_or("");
                let ty = c.get("type").and_then(Value::as_str).unwrap_or("string");
                let cell = match jsonpath(o, path).into_iter().next() {
                    None | Some(Value::Null) => Value::Null,
                    Some(Value::String(s)) if ty == "date" => json!(age(&s)),
                    Some(v @ (Value::Object(_) | Value::Array(_))) => json!(v.to_string()),
                    Some(v) => v,
                };
                cells.push(cell);
            }
            if with_age {
                cells.push(json!(age(meta::str_at(o, &["metadata", "creationTimestamp"]).unwrap_or(""))));
            }
            let object = match include_object {
                "Object" => o.clone(),
                "None" => Value::Null,
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(json!({}))}),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_filters() {
        let o = json!({"status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}], "n": 3}});
        assert_eq!(
            jsonpath(&o, r#".status.conditions[?(@.type=="Ready")].status"#),
            vec![json!("True")]
        );
        assert_eq!(jsonpath(&o, ".status.conditions[0].type"), vec![json!("A")]);
        assert_eq!(jsonpath(&o, ".status.conditions[*].type").len(), 2);
        assert_eq!(jsonpath(&o, ".status.n"), vec![json!(3)]);
        assert!(jsonpath(&o, ".status.missing").is_empty());
    }
}
