//! Every well-known string of the API in one place: group, labels, taints, finalizers, field manager,
//! condition types and reasons. Code and docs refer to these, never to literals.

/// API group of fleetlet's kinds.
pub const GROUP: &str = "fleetlet.dev";
/// API version of fleetlet's kinds.
pub const VERSION: &str = "v1alpha1";

/// Field manager for every server-side apply and patch the operator makes.
pub const FIELD_MANAGER: &str = "fleetlet";
/// Finalizer that guarantees a VirtualNode's Node and Lease are removed before it goes away.
pub const VIRTUAL_NODE_FINALIZER: &str = "fleetlet.dev/node-cleanup";

/// Label (and taint key) marking a Node as a fleetlet virtual node.
pub const LABEL_VIRTUAL_NODE: &str = "fleetlet.dev/virtual-node";
/// Label naming the DeviceBackend a virtual node's Node runs on.
pub const LABEL_BACKEND: &str = "fleetlet.dev/backend";
/// Label on a node certificate Secret: `client` or `serving` (with [`LABEL_VIRTUAL_NODE`] = the node).
pub const LABEL_CERTIFICATE: &str = "fleetlet.dev/certificate";
/// Label on the sharding Leases in the operator namespace: the election id they belong to.
pub const LABEL_SHARD_GROUP: &str = "fleetlet.dev/shard-group";
/// Label on the sharding Leases: `shard` (held by one replica) or `member` (one per live replica).
pub const LABEL_LEASE_ROLE: &str = "fleetlet.dev/lease-role";
/// Label on a member Lease: the shard count that replica runs with.
pub const LABEL_SHARDS: &str = "fleetlet.dev/shards";
/// Default taint key: pods must tolerate it to land on a virtual node.
pub const TAINT_VIRTUAL_NODE: &str = "fleetlet.dev/virtual-node";

/// Condition types on VirtualNode status.
pub mod condition {
    /// The Node is registered, its lease is fresh and the backend is healthy.
    pub const READY: &str = "Ready";
    /// The device backend answers (for SSH: the device is reachable and its host key matches).
    pub const BACKEND_REACHABLE: &str = "BackendReachable";
    /// The Node object exists and is heartbeating.
    pub const NODE_REGISTERED: &str = "NodeRegistered";
    /// The node's client and serving certificates are issued and current (`--node-identity=node`).
    pub const CERTIFICATES_READY: &str = "CertificatesReady";
    /// DeviceBackend: its spec is valid and usable.
    pub const ACCEPTED: &str = "Accepted";
}

/// Stable reasons used in conditions, Events and metric labels.
pub mod reason {
    pub const RUNNING: &str = "Running";
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    pub const BACKEND_INVALID: &str = "BackendInvalid";
    pub const BACKEND_HEALTHY: &str = "BackendHealthy";
    pub const BACKEND_UNHEALTHY: &str = "BackendUnhealthy";
    pub const REGISTERED: &str = "Registered";
    pub const REGISTRATION_FAILED: &str = "RegistrationFailed";
    pub const PENDING: &str = "Pending";
    pub const PORTS_EXHAUSTED: &str = "KubeletPortsExhausted";
    pub const ACCEPTED: &str = "Accepted";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const DELETING: &str = "Deleting";
    pub const CERTIFICATES_ISSUED: &str = "CertificatesIssued";
    /// Issuance of a node certificate is still in progress (first issuance).
    pub const CERTIFICATE_PENDING: &str = "CertificatePending";
    /// The serving CSR approver approved a CSR (CSR condition reason).
    pub const CSR_APPROVED: &str = "FleetletApproved";
    /// The serving CSR approver denied a CSR that claims one of its nodes but does not match it.
    pub const CSR_DENIED: &str = "FleetletDenied";
}
