//! Discovery documents (legacy, unaggregated form): `/version`, `/api`, `/api/v1`, `/apis`,
//! `/apis/GROUP`, `/apis/GROUP/VERSION`, built from the live resource registry so CRDs appear as
//! soon as they are created.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::crd::registry::version_priority;
use crate::resources::{ResourceDef, subresource_kind, subresource_verbs};

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-fleetlet-test",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

pub fn api_versions(addr: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr}]
    })
}

fn resource_entries(def: &ResourceDef) -> Vec<Value> {
    let mut main = json!({
        "name": def.plural,
        "singularName": def.singular,
        "namespaced": def.namespaced,
        "kind": def.kind,
        "verbs": def.verbs,
    });
    if !def.short_names.is_empty() {
        main["shortNames"] = json!(def.short_names);
    }
    if !def.categories.is_empty() {
        main["categories"] = json!(def.categories);
    }
    let mut out = vec![main];
    for sub in &def.subresources {
        let kind = subresource_kind(def, sub);
        out.push(json!({
            "name": format!("{}/{sub}", def.plural),
            "singularName": "",
            "namespaced": def.namespaced,
            "kind": kind,
            "verbs": subresource_verbs(sub),
        }));
    }
    out
}

/// `APIResourceList` for one group/version; `None` when nothing is served there.
pub fn resource_list(defs: &[Arc<ResourceDef>], group: &str, version: &str) -> Option<Value> {
    let matching: Vec<&Arc<ResourceDef>> = defs
        .iter()
        .filter(|d| d.group == group && d.versions.iter().any(|v| v == version))
        .collect();
    if matching.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut resources: Vec<Value> = matching.iter().flat_map(|d| resource_entries(d)).collect();
    resources.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn group_versions(defs: &[Arc<ResourceDef>], group: &str) -> Vec<String> {
    let mut vs: Vec<String> = defs
        .iter()
        .filter(|d| d.group == group)
        .flat_map(|d| d.versions.clone())
        .collect();
    vs.sort_by(|a, b| version_priority(a, b));
    vs.dedup();
    vs
}

/// `APIGroup` for one named group.
pub fn group(defs: &[Arc<ResourceDef>], name: &str) -> Option<Value> {
    let vs = group_versions(defs, name);
    let first = vs.first()?;
    let entry = |v: &String| json!({"groupVersion": format!("{name}/{v}"), "version": v});
    Some(json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": name,
        "versions": vs.iter().map(entry).collect::<Vec<_>>(),
        "preferredVersion": entry(first),
    }))
}

/// `APIGroupList` of every named group.
pub fn group_list(defs: &[Arc<ResourceDef>]) -> Value {
    let mut names: Vec<&str> = defs
        .iter()
        .map(|d| d.group.as_str())
        .filter(|g| !g.is_empty())
        .collect();
    names.sort();
    names.dedup();
    let groups: Vec<Value> = names
        .iter()
        .filter_map(|g| group(defs, g))
        .map(|mut g| {
            if let Some(m) = g.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            g
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/openapi/v3`: one entry per served group/version.
pub fn openapi_v3_index(defs: &[Arc<ResourceDef>]) -> Value {
    let mut paths = serde_json::Map::new();
    for d in defs {
        for v in &d.versions {
            let p = if d.group.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{}/{v}", d.group)
            };
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=0")}),
            );
        }
    }
    json!({"paths": paths})
}

/// `/openapi/v3/{api/v1,apis/G/V}`: a permissive schema per kind (the server validates for real),
/// enough for kubectl's client-side validation to accept objects.
pub fn openapi_v3_doc(defs: &[Arc<ResourceDef>], group: &str, version: &str) -> Option<Value> {
    let mut schemas = serde_json::Map::new();
    let mut paths = serde_json::Map::new();
    for d in defs
        .iter()
        .filter(|d| d.group == group && d.versions.iter().any(|v| v == version))
    {
        let root = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let ns = if d.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let gvk = json!({"group": group, "version": version, "kind": d.kind});
        let params = json!([{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
            {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string"}}]);
        paths.insert(
            format!("{root}{ns}/{}/{{name}}", d.plural),
            json!({"patch": {"parameters": params, "x-kubernetes-group-version-kind": gvk, "responses": {}}}),
        );
        let name = format!(
            "{}.{version}.{}",
            if group.is_empty() {
                "io.k8s.api.core"
            } else {
                group
            },
            d.kind
        );
        schemas.insert(
            name,
            json!({
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "x-kubernetes-group-version-kind": [{"group": group, "version": version, "kind": d.kind}],
            }),
        );
    }
    if schemas.is_empty() {
        return None;
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "fleetlet-test-apiserver", "version": "v1"}, "paths": paths, "components": {"schemas": schemas}}),
    )
}
