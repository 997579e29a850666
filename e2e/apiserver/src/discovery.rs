//! Discovery documents (legacy, unaggregated form): `/version`, `/api`, `/api/v1`, `/apis`,
//! `/apis/GROUP`, `/apis/GROUP/VERSION`, built from the live resource registry so CRDs appear as
//! soon as they are created.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::crd::registry::version_priority;
use crate::resources::{ResourceDef, subresource_verbs};

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
        let kind = if sub == "binding" { "Binding" } else { def.kind.as_str() };
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
    let matching: Vec<&Arc<ResourceDef>> =
        defs.iter().filter(|d| d.group == group && d.versions.iter().any(|v| v == version)).collect();
    if matching.is_empty() {
        return None;
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    let mut resources: Vec<Value> = matching.iter().flat_map(|d| resource_entries(d)).collect();
    resources.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

fn group_versions(defs: &[Arc<ResourceDef>], group: &str) -> Vec<String> {
    let mut vs: Vec<String> = defs.iter().filter(|d| d.group == group).flat_map(|d| d.versions.clone()).collect();
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
    let mut names: Vec<&str> = defs.iter().map(|d| d.group.as_str()).filter(|g| !g.is_empty()).collect();
    names.sort();
    names.dedup();
    let groups: Vec<Value> = names.iter().filter_map(|g| group(defs, g)).map(|mut g| {
        if let Some(m) = g.as_object_mut() {
            m.remove("kind");
            m.remove("apiVersion");
        }
        g
    }).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}
