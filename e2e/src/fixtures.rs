//! Manifests the scenarios apply, exactly as a user would write them.

/// A Mock DeviceBackend named `name`.
pub fn mock_backend(name: &str) -> String {
    format!(
        "apiVersion: fleetlet.dev/v1alpha1\nkind: DeviceBackend\nmetadata: {{name: {name}}}\nspec: {{mock: {{}}}}\n"
    )
}

/// A VirtualNode `name` on backend `backend`.
pub fn virtual_node(name: &str, backend: &str) -> String {
    format!(
        "apiVersion: fleetlet.dev/v1alpha1\nkind: VirtualNode\nmetadata: {{name: {name}}}\nspec: {{backendRef: {{name: {backend}}}}}\n"
    )
}

/// A pod pinned to `node` that tolerates the virtual-node taint.
pub fn pod_on(ns: &str, name: &str, node: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [{"key": "fleetlet.dev/virtual-node", "operator": "Exists", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]
        }
    })
}
