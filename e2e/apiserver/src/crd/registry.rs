//! CRD -> [`ResourceDef`]: the CRD's names, scope, served versions (ordered by Kubernetes version
//! priority), subresources, schemas and printer columns; plus the status a real apiserver gives a
//! freshly accepted CRD (NamesAccepted and Established conditions, acceptedNames, storedVersions).

use std::cmp::Ordering;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::meta;
use crate::resources::{CRUD_VERBS, CrdVersion, ResourceDef};

/// Defaults and status of a CRD being created or updated.
pub fn prepare_crd(obj: &mut Value) {
    let kind = meta::str_at(obj, &["spec", "names", "kind"])
        .unwrap_or("")
        .to_string();
    if let Some(n) = obj
        .pointer_mut("/spec/names")
        .and_then(Value::as_object_mut)
    {
        n.entry("listKind").or_insert(json!(format!("{kind}List")));
        n.entry("singular").or_insert(json!(kind.to_lowercase()));
    }
    if let Some(s) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        s.entry("conversion").or_insert(json!({"strategy": "None"}));
    }
    let now = meta::now();
    let accepted = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let stored: Vec<Value> = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage") == Some(&json!(true)))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    if let Some(m) = obj.as_object_mut() {
        m.insert(
            "status".into(),
            json!({
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts", "message": "no conflicts found"},
                    {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
                ],
                "acceptedNames": accepted,
                "storedVersions": stored,
            }),
        );
    }
}

/// Kubernetes version priority: GA > beta > alpha > other, higher numbers first.
pub fn version_priority(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> (u8, u64, u64) {
        let Some(rest) = v.strip_prefix('v') else {
            return (0, 0, 0);
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(major) = digits.parse::<u64>() else {
            return (0, 0, 0);
        };
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return (3, major, 0);
        }
        for (prefix, rank) in [("beta", 2), ("alpha", 1)] {
            if let Some(n) = tail.strip_prefix(prefix)
                && let Ok(n) = n.parse()
            {
                return (rank, major, n);
            }
        }
        (0, 0, 0)
    }
    parse(b).cmp(&parse(a)).then_with(|| a.cmp(b))
}

/// The resource a CRD defines; `None` for a malformed CRD.
pub fn def_from_crd(crd: &Value) -> Option<ResourceDef> {
    let spec = crd.get("spec")?;
    let names = spec.get("names")?;
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    let strs = |v: &Value, k: &str| -> Vec<String> {
        v.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let kind = s(names, "kind")?;
    let mut versions: Vec<&Value> = spec
        .get("versions")?
        .as_array()?
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(false))
        .collect();
    versions.sort_by(|a, b| {
        version_priority(
            a.get("name").and_then(Value::as_str).unwrap_or(""),
            b.get("name").and_then(Value::as_str).unwrap_or(""),
        )
    });
    let has_status = versions
        .iter()
        .any(|v| v.pointer("/subresources/status").is_some());
    let crd_versions = versions
        .iter()
        .map(|v| CrdVersion {
            name: s(v, "name").unwrap_or_default(),
            schema: v.pointer("/schema/openAPIV3Schema").cloned(),
            printer_columns: v
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        })
        .collect::<Vec<_>>();
    Some(ResourceDef {
        group: s(spec, "group")?,
        versions: crd_versions.iter().map(|v| v.name.clone()).collect(),
        plural: s(names, "plural")?,
        singular: s(names, "singular").unwrap_or_else(|| kind.to_lowercase()),
        kind,
        namespaced: spec.get("scope").and_then(Value::as_str) != Some("Cluster"),
        subresources: if has_status {
            vec!["status".into()]
        } else {
            vec![]
        },
        verbs: CRUD_VERBS.iter().map(|v| v.to_string()).collect(),
        short_names: strs(names, "shortNames"),
        categories: strs(names, "categories"),
        crd: Some(Arc::new(crd_versions)),
        storage: None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn priority_order() {
        let mut v = vec!["v1alpha1", "v2", "v1beta2", "v1", "v1beta1", "foo"];
        v.sort_by(|a, b| version_priority(a, b));
        assert_eq!(v, vec!["v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "foo"]);
    }
}
