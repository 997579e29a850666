//! The VirtualNode kind: one device that becomes one Kubernetes Node.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A device that fleetlet registers as a Kubernetes Node and runs pods on.
///
/// The Node takes the VirtualNode's name. One virtual kubelet runs per VirtualNode inside the operator.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "fleetlet.dev",
    version = "v1alpha1",
    kind = "VirtualNode",
    shortname = "vnode",
    category = "fleetlet",
    status = "VirtualNodeStatus",
    doc = "A device that fleetlet registers as a Kubernetes Node and runs pods on.",
    printcolumn(
        name = "Backend",
        type_ = "string",
        json_path = ".spec.backendRef.name"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Pods", type_ = "integer", json_path = ".status.pods"),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.kubeletEndpoint",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualNodeSpec {
    /// The DeviceBackend that reaches this device.
    pub backend_ref: BackendRef,

    /// Network address of the device (host name or IP) for backends that dial it (SSH). Not used by Mock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub address: Option<String>,

    /// Node capacity override (e.g. `cpu: "4"`, `memory: 8Gi`, `pods: "110"`). Keys given here replace what
    /// the backend reports; allocatable equals capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<BTreeMap<String, Quantity>>,

    /// Extra labels for the Node. Keys in the `kubernetes.io` / `k8s.io` domains that a kubelet may not set
    /// are rejected by the API (NodeRestriction); use your own domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,

    /// Taints for the Node. When unset the Node gets `fleetlet.dev/virtual-node=true:NoSchedule`, so only pods
    /// that tolerate it land on the device. Set to `[]` to register an untainted Node. Changes apply to the
    /// existing Node; system taints (`node.kubernetes.io/*`) are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taints: Option<Vec<Taint>>,
}

/// Reference to a cluster-scoped DeviceBackend.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct BackendRef {
    /// Name of the DeviceBackend.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Observed state of a VirtualNode.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualNodeStatus {
    /// `Ready`, `BackendReachable` and `NodeRegistered`, keyed by type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::conditions::conditions_schema")]
    pub conditions: Vec<Condition>,

    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Name of the registered Node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,

    /// `address:port` of this node's kubelet HTTPS endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_endpoint: Option<String>,

    /// Number of pods currently bound to the node and known to the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<i32>,
}
