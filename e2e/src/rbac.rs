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
    /// Extra cluster rules rendered only with `nodeIdentity: node`.
    #[serde(default)]
    pub node_identity_rules: Vec<Rule>,
    /// Extra cluster rules rendered only with `nodeIdentity: operator`.
    #[serde(default)]
    pub operator_identity_rules: Vec<Rule>,
    /// Extra cluster rules rendered only with `nodeIdentity: node` and `approveServingCsrs: true`.
    #[serde(default)]
    pub csr_approver_rules: Vec<Rule>,
}

/// Which chart values the rules are rendered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// `nodeIdentity: node` (else `operator`).
    pub node_identity: bool,
    /// `approveServingCsrs: true`.
    pub approver: bool,
    /// `sharding.shards > 1`.
    pub sharded: bool,
}

/// Rules rendered into one ClusterRole (`namespace: None`) or Role.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// Names the set in grants: `cluster`, `node-identity`, `kube-node-lease`, ...
    pub name: String,
    /// `None`: cluster-wide; `Some("")`: the release namespace.
    pub namespace: Option<String>,
    pub rules: Vec<Rule>,
}

/// Grants that are checked by the apiserver or kube-controller-manager when the operator acts, never
/// requested by it: `(group, resource, verb)`.
pub const AUTHORIZATION_ONLY: &[(&str, &str, &str)] = &[
    ("certificates.k8s.io", "signers", "approve"),
    (
        "certificates.k8s.io",
        "certificatesigningrequests/nodeclient",
        "create",
    ),
];

/// A Role's rules; `namespace` empty = the release (operator) namespace.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespacedRules {
    pub namespace: String,
    /// Why the operator needs a Role in this namespace.
    pub purpose: String,
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub node_identity_rules: Vec<Rule>,
    #[serde(default)]
    pub operator_identity_rules: Vec<Rule>,
    /// Added with `sharding.shards > 1`.
    #[serde(default)]
    pub sharding_rules: Vec<Rule>,
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

    /// Every rule of the file, whatever mode renders it: what the no-wildcard check walks.
    pub fn all_rules(&self) -> impl Iterator<Item = &Rule> {
        let roles = self.namespaced.iter().flat_map(|n| {
            n.rules
                .iter()
                .chain(&n.node_identity_rules)
                .chain(&n.operator_identity_rules)
                .chain(&n.sharding_rules)
        });
        self.cluster_rules
            .iter()
            .chain(&self.node_identity_rules)
            .chain(&self.operator_identity_rules)
            .chain(&self.csr_approver_rules)
            .chain(roles)
    }

    /// The rule sets the chart renders for `mode`.
    pub fn rendered(&self, mode: Mode) -> Vec<RuleSet> {
        let pick = |node: &[Rule], operator: &[Rule]| {
            if mode.node_identity {
                node.to_vec()
            } else {
                operator.to_vec()
            }
        };
        let mut out = vec![RuleSet {
            name: "cluster".into(),
            namespace: None,
            rules: self.cluster_rules.clone(),
        }];
        let mode_name = if mode.node_identity {
            "node-identity"
        } else {
            "operator-identity"
        };
        out.push(RuleSet {
            name: mode_name.into(),
            namespace: None,
            rules: pick(&self.node_identity_rules, &self.operator_identity_rules),
        });
        if mode.node_identity && mode.approver {
            out.push(RuleSet {
                name: "csr-approver".into(),
                namespace: None,
                rules: self.csr_approver_rules.clone(),
            });
        }
        for ns in &self.namespaced {
            out.push(RuleSet {
                name: set_name(&ns.namespace),
                namespace: Some(ns.namespace.clone()),
                rules: ns.rules.clone(),
            });
            out.push(RuleSet {
                name: format!("{}/{mode_name}", set_name(&ns.namespace)),
                namespace: Some(ns.namespace.clone()),
                rules: pick(&ns.node_identity_rules, &ns.operator_identity_rules),
            });
            if mode.sharded {
                out.push(RuleSet {
                    name: format!("{}/sharding", set_name(&ns.namespace)),
                    namespace: Some(ns.namespace.clone()),
                    rules: ns.sharding_rules.clone(),
                });
            }
        }
        out
    }

    /// The grant that covers `need` for an operator running in `operator_ns` with `mode`, if any.
    pub fn cover(&self, need: &Need, operator_ns: &str, mode: Mode) -> Option<Grant> {
        for set in self.rendered(mode) {
            let in_scope = match set.namespace.as_deref() {
                None => true,
                Some("") => need.namespace == operator_ns,
                Some(ns) => need.namespace == ns,
            };
            if !in_scope {
                continue;
            }
            if let Some(i) = set.rules.iter().position(|r| r.allows(need)) {
                return Some((
                    set.name,
                    i,
                    need.group.clone(),
                    need.resource.clone(),
                    need.verb.clone(),
                ));
            }
        }
        None
    }

    /// Every grant rendered for `mode`, except [`AUTHORIZATION_ONLY`] ones.
    pub fn grants(&self, mode: Mode) -> BTreeSet<Grant> {
        let mut out = BTreeSet::new();
        for set in self.rendered(mode) {
            for (i, r) in set.rules.iter().enumerate() {
                for (g, res, v) in r.grants() {
                    if AUTHORIZATION_ONLY.contains(&(g.as_str(), res.as_str(), v.as_str())) {
                        continue;
                    }
                    out.insert((set.name.clone(), i, g, res, v));
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
            for (title, rules) in [
                ("`nodeIdentity: node`", &ns.node_identity_rules),
                ("`nodeIdentity: operator`", &ns.operator_identity_rules),
                ("`sharding.shards` > 1", &ns.sharding_rules),
            ] {
                if !rules.is_empty() {
                    out.push_str(&format!("\nAdded with {title}:\n\n"));
                    table(&mut out, rules);
                }
            }
        }
        for (title, rules) in [
            ("`nodeIdentity: node`", &self.node_identity_rules),
            ("`nodeIdentity: operator`", &self.operator_identity_rules),
            (
                "`nodeIdentity: node` and `approveServingCsrs: true`",
                &self.csr_approver_rules,
            ),
        ] {
            if !rules.is_empty() {
                out.push_str(&format!("\n### ClusterRole additions with {title}\n\n"));
                table(&mut out, rules);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every list of rules in the file, found without the typed model: each value of a key named
    /// `rules` or ending in `Rules`.
    fn count_rules(v: &serde_yaml_ng::Value) -> usize {
        match v {
            serde_yaml_ng::Value::Mapping(m) => m
                .iter()
                .map(|(k, v)| {
                    let key = k.as_str().unwrap_or_default();
                    let here = if key == "rules" || key.ends_with("Rules") {
                        v.as_sequence().map_or(0, Vec::len)
                    } else {
                        0
                    };
                    here + count_rules(v)
                })
                .sum(),
            serde_yaml_ng::Value::Sequence(s) => s.iter().map(count_rules).sum(),
            _ => 0,
        }
    }

    #[test]
    fn all_rules_covers_every_rule_list_of_the_file() -> anyhow::Result<()> {
        let text = std::fs::read_to_string(rules_path())?;
        let raw: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)?;
        let file = RulesFile::load()?;
        assert_eq!(file.all_rules().count(), count_rules(&raw));
        Ok(())
    }
}
