//! CRD generation: the YAML committed under `crds/` and printed by `fleetlet crds`.
//!
//! Rules the derive cannot express (CEL one-of, immutable fields) are added here, in one place.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Value, json};

use crate::{DeviceBackend, VirtualNode};

/// Both CRDs with fleetlet's validation rules.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut vnode = VirtualNode::crd();
    add_rules(
        &mut vnode,
        &["spec"],
        json!([
            {"rule": "self.backendRef.name == oldSelf.backendRef.name",
             "message": "spec.backendRef.name is immutable: delete and re-create the VirtualNode to move it"},
        ]),
    );
    add_rules(
        &mut vnode,
        &[],
        json!([
            {"rule": "self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",
             "message": "metadata.name must be a valid node name: lower-case DNS subdomain of at most 63 characters"},
        ]),
    );
    let mut backend = DeviceBackend::crd();
    add_rules(
        &mut backend,
        &["spec"],
        json!([
            {"rule": "(has(self.mock) ? 1 : 0) + (has(self.ssh) ? 1 : 0) == 1",
             "message": "exactly one of spec.mock or spec.ssh must be set"},
        ]),
    );
    add_rules(
        &mut backend,
        &["spec", "ssh"],
        json!([
            {"rule": "has(self.hostKeys) || has(self.knownHostsSecretRef)",
             "message": "spec.ssh needs pinned host keys: set hostKeys or knownHostsSecretRef (keys are never trusted on first use)"},
            {"rule": "!has(self.stateDir) || !self.stateDir.matches('(^|/)[.][.]?(/|$)')",
             "message": "spec.ssh.stateDir must not contain '.' or '..' path elements"},
        ]),
    );
    vec![vnode, backend]
}

/// The CRDs as one multi-document YAML stream.
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        // Serializing a CRD we built ourselves cannot fail; an empty document would fail the freshness check.
        out.push_str(&serde_yaml_ng::to_string(&crd).unwrap_or_default());
    }
    out
}

/// Appends CEL rules to the schema node at `path` (below `openAPIV3Schema`) of every served version.
fn add_rules(crd: &mut CustomResourceDefinition, path: &[&str], rules: Value) {
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        let mut value = serde_json::to_value(&*schema).unwrap_or(Value::Null);
        let mut node = &mut value;
        for part in path {
            node = &mut node["properties"][*part];
        }
        let list = node.as_object_mut().map(|o| {
            o.entry("x-kubernetes-validations")
                .or_insert_with(|| json!([]))
        });
        if let (Some(Value::Array(existing)), Value::Array(new)) = (list, &rules) {
            existing.extend(new.iter().cloned());
        }
        if let Ok(updated) = serde_json::from_value(value) {
            *schema = updated;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_yaml_is_fresh() {
        let committed = include_str!("../fleetlet.dev_crds.yaml");
        assert!(
            committed == crds_yaml(),
            "crds/fleetlet.dev_crds.yaml is stale: run `cargo run -p fleetlet -- crds > crds/fleetlet.dev_crds.yaml`"
        );
    }

    #[test]
    fn rules_and_list_maps_present() {
        let y = crds_yaml();
        assert!(y.contains("exactly one of spec.mock or spec.ssh must be set"));
        assert!(y.contains("x-kubernetes-list-map-keys"));
        assert!(y.contains("shortNames:\n    - vnode"));
        // `kubectl get devb` / `kubectl get vnode`, as the docs and scenarios type them.
        for (crd, short) in [
            (DeviceBackend::crd(), "devb"),
            (VirtualNode::crd(), "vnode"),
        ] {
            assert_eq!(
                crd.spec.names.short_names,
                Some(vec![short.to_string()]),
                "{}",
                crd.spec.names.kind
            );
        }
        assert!(y.contains("- fleetlet"));
        assert!(y.contains("set hostKeys or knownHostsSecretRef"));
    }
}
