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

/// A VirtualNode `name` on backend `backend` reached at `address` (SSH backends need one).
pub fn virtual_node_at(name: &str, backend: &str, address: &str) -> String {
    format!(
        "apiVersion: fleetlet.dev/v1alpha1\nkind: VirtualNode\nmetadata: {{name: {name}}}\nspec: {{backendRef: {{name: {backend}}}, address: \"{address}\"}}\n"
    )
}

/// How an SSH DeviceBackend reaches its devices.
#[derive(Debug, Clone)]
pub struct SshBackendSpec<'a> {
    pub user: &'a str,
    pub port: u16,
    /// `(namespace, name)` of the `kubernetes.io/ssh-auth` Secret.
    pub key_secret: (&'a str, &'a str),
    /// The pinned host key, `type base64`.
    pub host_key: &'a str,
    /// `stateDir`, relative to the user's home.
    pub state_dir: &'a str,
}

/// An SSH DeviceBackend named `name`, with short poll, keepalive and backoff intervals so that
/// scenarios see changes quickly.
pub fn ssh_backend(name: &str, s: &SshBackendSpec<'_>) -> String {
    let (ns, secret) = s.key_secret;
    format!(
        "apiVersion: fleetlet.dev/v1alpha1\nkind: DeviceBackend\nmetadata: {{name: {name}}}\nspec:\n  ssh:\n\
         \x20   user: \"{user}\"\n    port: {port}\n    privateKeySecretRef: {{namespace: {ns}, name: {secret}}}\n\
         \x20   hostKeys: [\"{host_key}\"]\n    stateDir: \"{state_dir}\"\n    connectTimeoutSeconds: 5\n\
         \x20   keepaliveIntervalSeconds: 2\n    keepaliveMax: 2\n    pollIntervalMs: 250\n\
         \x20   reconnectBackoffMaxSeconds: 2\n",
        user = s.user,
        port = s.port,
        host_key = s.host_key,
        state_dir = s.state_dir,
    )
}
