//! The Helm chart, checked without helm (not available in CI): its plain files parse, its CRDs are the
//! generated ones, every `.Values` path a template uses exists in values.yaml, every flag it passes is
//! one `fleetlet run` accepts, the pod runs locked down, and namespaced objects go to the release
//! namespace. Users run `helm lint charts/fleetlet` and `helm template` on top (docs/operations.md).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use fleetlet_e2e::rbac::{RulesFile, repo_root};
use serde_yaml_ng::Value;

fn chart() -> PathBuf {
    repo_root().join("charts/fleetlet")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn templates() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(chart().join("templates"))
        .expect("charts/fleetlet/templates")
        .map(|e| e.expect("directory entry").path())
        .map(|p| {
            (
                p.file_name()
                    .expect("file name")
                    .to_string_lossy()
                    .into_owned(),
                read(&p),
            )
        })
        .collect();
    out.sort();
    out
}

fn values() -> Value {
    serde_yaml_ng::from_str(&read(&chart().join("values.yaml"))).expect("values.yaml parses")
}

#[test]
fn plain_files_parse_and_crds_match_the_generated_ones() {
    let meta: Value = serde_yaml_ng::from_str(&read(&chart().join("Chart.yaml"))).unwrap();
    assert_eq!(meta["apiVersion"].as_str(), Some("v2"));
    assert_eq!(meta["name"].as_str(), Some("fleetlet"));
    assert!(meta["version"].as_str().is_some() && meta["appVersion"].as_str().is_some());
    assert!(values().is_mapping());
    RulesFile::load().unwrap();
    let generated = read(&repo_root().join("crds/fleetlet.dev_crds.yaml"));
    let copied = read(&chart().join("crds/fleetlet.dev_crds.yaml"));
    assert!(
        generated == copied,
        "charts/fleetlet/crds/ is stale: cp crds/fleetlet.dev_crds.yaml charts/fleetlet/crds/"
    );
    // crds/ itself against `fleetlet crds`: scripts/test-all.sh (CRD freshness step).
}

/// `.Values.a.b` paths (letters, digits, dots) in a template.
fn value_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices(".Values.") {
        let rest = &text[i + ".Values.".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
            .unwrap_or(rest.len());
        out.insert(rest[..end].trim_end_matches('.').to_string());
    }
    out
}

#[test]
fn templates_use_only_existing_values() {
    let values = values();
    let mut missing = Vec::new();
    for (file, text) in templates() {
        for path in value_paths(&text) {
            let mut v = &values;
            for key in path.split('.') {
                v = &v[key];
            }
            if v.is_null() && !has_null_key(&values, &path) {
                missing.push(format!("{file}: .Values.{path}"));
            }
        }
    }
    assert!(missing.is_empty(), "not in values.yaml: {missing:#?}");
}

/// Whether `path` exists with an explicit (empty) value.
fn has_null_key(values: &Value, path: &str) -> bool {
    let mut v = values;
    let keys: Vec<&str> = path.split('.').collect();
    for (i, k) in keys.iter().enumerate() {
        let Some(m) = v.as_mapping() else {
            return false;
        };
        match m.get(Value::String((*k).to_string())) {
            Some(next) if i + 1 == keys.len() => return next.is_null(),
            Some(next) => v = next,
            None => return false,
        }
    }
    false
}

#[test]
fn every_value_is_documented() {
    // Each top-level key has a comment above it or on its first child.
    let text = read(&chart().join("values.yaml"));
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let top = !line.starts_with([' ', '#']) && line.contains(':');
        if !top {
            continue;
        }
        let above = i > 0 && lines[i - 1].trim_start().starts_with('#');
        let child = lines
            .get(i + 1)
            .is_some_and(|l| l.trim_start().starts_with('#'));
        assert!(above || child, "values.yaml: `{line}` is undocumented");
    }
}

#[test]
fn deployment_flags_exist_and_pod_is_locked_down() {
    let deployment = read(&chart().join("templates/deployment.yaml"));
    let bin = fleetlet_e2e::operator::binary().unwrap();
    let help = std::process::Command::new(bin)
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for line in deployment.lines() {
        let Some(flag) = line.trim().strip_prefix("- --") else {
            continue;
        };
        let name = flag.split('=').next().unwrap_or(flag);
        assert!(
            help.contains(&format!("--{name}")),
            "`fleetlet run` has no --{name}"
        );
    }
    // Every variable the chart sets for the operator is one `fleetlet run` reads (clap lists it).
    let envs: Vec<&str> = deployment
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- name: "))
        .filter(|n| n.starts_with("FLEETLET_"))
        .collect();
    assert!(!envs.is_empty(), "the deployment sets FLEETLET_* variables");
    for name in envs {
        assert!(
            help.contains(&format!("[env: {name}=")),
            "`fleetlet run` reads no {name}"
        );
    }
    for needle in [
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "- ALL",
        "fieldPath: status.podIP",
        "fieldPath: metadata.namespace",
        "fieldPath: metadata.name",
        "path: /healthz",
        "path: /readyz",
        "name: POD_IP",
        "name: POD_NAMESPACE",
        "name: POD_NAME",
    ] {
        assert!(
            deployment.contains(needle),
            "deployment.yaml lacks `{needle}`"
        );
    }
}

#[test]
fn namespaced_objects_go_to_the_release_namespace_and_rbac_comes_from_the_rules_file() {
    for (file, text) in templates() {
        if !file.ends_with(".yaml") {
            continue;
        }
        for doc in text.split("\n---") {
            let kind = doc
                .lines()
                .find_map(|l| l.strip_prefix("kind: "))
                .unwrap_or("");
            match kind {
                "" | "ClusterRole" | "ClusterRoleBinding" => {}
                "Role" | "RoleBinding" => assert!(
                    doc.contains("namespace: {{ $target }}"),
                    "{file}: {kind} outside the rules loop"
                ),
                _ => assert!(
                    doc.contains("namespace: {{ .Release.Namespace }}"),
                    "{file}: {kind} not in .Release.Namespace"
                ),
            }
        }
    }
    let rbac = read(&chart().join("templates/rbac.yaml"));
    let helpers = read(&chart().join("templates/_helpers.tpl"));
    assert!(helpers.contains(r#".Files.Get "rbac/rules.yaml""#));
    for key in [
        "$rules.clusterRules",
        "$rules.namespaced",
        "$rules.csrApproverRules",
    ] {
        assert!(rbac.contains(key), "rbac.yaml does not render {key}");
    }
    assert!(
        !rbac.contains("verbs:") && !rbac.contains("apiGroups:"),
        "rules are written only in rbac/rules.yaml"
    );
}

#[test]
fn pdb_only_with_more_than_one_replica_and_service_monitor_optional() {
    let pdb = read(&chart().join("templates/pdb.yaml"));
    assert!(pdb.starts_with("{{- if gt (int .Values.replicas) 1 }}"));
    let sm = read(&chart().join("templates/servicemonitor.yaml"));
    assert!(sm.starts_with("{{- if .Values.serviceMonitor.enabled }}"));
}
