//! The chart's RBAC rules file (`charts/fleetlet/rbac/rules.yaml`) as data: which request each rule
//! allows, and the Markdown reference `docs/rbac.md` is checked against.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Context as _;
use fleetlet_test_apiserver::RequestRecord;
use serde::Deserialize;

/// The rules file: cluster-wide rules and Roles per namespace.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RulesFile {
    pub cluster_rules: Vec<Rule>,
    pub namespaced: Vec<NamespacedRules>,
    /// Extra cluster rules rendered only with `approveServingCsrs: true`.
    #[serde(default)]
    pub csr_approver_rules: Vec<Rule>,
}

/// A Role's rules; `namespace` empty = the release (operator) namespace.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespacedRules {
    pub namespace: String,
    /// Why the operator needs a Role in this namespace.
    pub purpose: String,
    pub rules: Vec<Rule>,
}

/// A `rbac.authorization.k8s.io/v1` PolicyRule (resource rules only).
#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
}

/// One permission a request needs: the key RBAC decides on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Need {
    pub verb: String,
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    /// Empty for cluster-scoped requests (and cluster-wide lists/watches).
    pub namespace: String,
    pub name: String,
}

impl Need {
    pub fn from_record(r: &RequestRecord) -> Self {
        let resource = if r.subresource.is_empty() {
            r.resource.clone()
        } else {
            format!("{}/{}", r.resource, r.subresource)
        };
        Need {
            verb: r.verb.clone(),
            group: r.group.clone(),
            resource,
            namespace: r.namespace.clone(),
            name: r.name.clone(),
        }
    }
}

/// A (rule set, rule index, group, resource, verb) tuple: the unit "used at least once" is checked on.
pub type Grant = (String, usize, String, String, String);

impl Rule {
    /// Whether this rule allows `need` (namespace scope is the caller's business).
    pub fn allows(&self, need: &Need) -> bool {
        let named_ok = self.resource_names.is_empty()
            || (!need.name.is_empty()
                && !matches!(
                    need.verb.as_str(),
                    "create" | "list" | "watch" | "deletecollection"
                )
                && self.resource_names.contains(&need.name));
        self.api_groups.contains(&need.group)
            && self.resources.contains(&need.resource)
            && self.verbs.contains(&need.verb)
            && named_ok
    }

    /// Every (group, resource, verb) this rule grants.
    pub fn grants(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for g in &self.api_groups {
            for r in &self.resources {
                for v in &self.verbs {
                    out.push((g.clone(), r.clone(), v.clone()));
                }
            }
        }
        out
    }

    /// Wildcards are never allowed.
    pub fn has_wildcard(&self) -> bool {
        self.api_groups
            .iter()
            .chain(&self.resources)
            .chain(&self.verbs)
            .chain(&self.resource_names)
            .any(|s| s.contains('*'))
    }
}

impl RulesFile {
    /// Read the chart's rules file.
    pub fn load() -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(rules_path())?;
        serde_yaml_ng::from_str(&text).context("parsing charts/fleetlet/rbac/rules.yaml")
    }

    /// The grant that covers `need` for an operator running in `operator_ns`, if any.
    pub fn cover(&self, need: &Need, operator_ns: &str) -> Option<Grant> {
        let grant = |set: &str, i: usize| {
            Some((
                set.to_string(),
                i,
                need.group.clone(),
                need.resource.clone(),
                need.verb.clone(),
            ))
        };
        for (i, r) in self.cluster_rules.iter().enumerate() {
            if r.allows(need) {
                return grant("cluster", i);
            }
        }
        if need.namespace.is_empty() {
            return None;
        }
        for ns in &self.namespaced {
            let target = if ns.namespace.is_empty() {
                operator_ns
            } else {
                &ns.namespace
            };
            if target != need.namespace {
                continue;
            }
            for (i, r) in ns.rules.iter().enumerate() {
                if r.allows(need) {
                    return grant(&set_name(&ns.namespace), i);
                }
            }
        }
        None
    }

    /// Every grant of the always-rendered rules.
    pub fn all_grants(&self) -> BTreeSet<Grant> {
        let mut out = BTreeSet::new();
        for (i, r) in self.cluster_rules.iter().enumerate() {
            for (g, res, v) in r.grants() {
                out.insert(("cluster".into(), i, g, res, v));
            }
        }
        for ns in &self.namespaced {
            for (i, r) in ns.rules.iter().enumerate() {
                for (g, res, v) in r.grants() {
                    out.insert((set_name(&ns.namespace), i, g, res, v));
                }
            }
        }
        out
    }

    /// The Markdown tables of docs/rbac.md's generated section.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str("### ClusterRole (cluster-wide)\n\n");
        table(&mut out, &self.cluster_rules);
        for ns in &self.namespaced {
            let where_ = if ns.namespace.is_empty() {
                "the release namespace".to_string()
            } else {
                format!("`{}`", ns.namespace)
            };
            out.push_str(&format!(
                "\n### Role in {where_}\n\n{}\n\n",
                ns.purpose.trim()
            ));
            table(&mut out, &ns.rules);
        }
        if !self.csr_approver_rules.is_empty() {
            out.push_str("\n### ClusterRole additions with `approveServingCsrs: true`\n\n");
            table(&mut out, &self.csr_approver_rules);
        }
        out
    }
}

fn set_name(ns: &str) -> String {
    if ns.is_empty() {
        "release-namespace".into()
    } else {
        ns.to_string()
    }
}

fn table(out: &mut String, rules: &[Rule]) {
    out.push_str("| API group | resources | verbs | resource names |\n|---|---|---|---|\n");
    for r in rules {
        let groups: Vec<String> = r
            .api_groups
            .iter()
            .map(|g| {
                if g.is_empty() {
                    "core".into()
                } else {
                    g.clone()
                }
            })
            .collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            groups.join(", "),
            r.resources.join(", "),
            r.verbs.join(", "),
            if r.resource_names.is_empty() {
                "any".into()
            } else {
                r.resource_names.join(", ")
            }
        ));
    }
}

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn rules_path() -> PathBuf {
    repo_root().join("charts/fleetlet/rbac/rules.yaml")
}
