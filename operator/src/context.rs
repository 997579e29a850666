//! What every reconciler shares: clients, the Fleet of running virtual nodes, stores of the custom
//! resources, the kubelet port allocator and the providers built for each node.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Mutex;

use fleetlet_crds::{DeviceBackend, VirtualNode};
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc;
use vk_runtime::fleet::Fleet;

use crate::ports::Ports;
use crate::reconcilers::providers::Providers;
use crate::reconcilers::virtual_node::written::Written;
use crate::shards::Ownership;

/// Shared state of the operator.
pub struct Context {
    pub client: Client,
    pub fleet: Fleet,
    pub ports: Ports,
    pub kubelet_address: IpAddr,
    pub namespace: String,
    pub recorder: Recorder,
    pub backends: Store<DeviceBackend>,
    pub providers: Providers,
    /// Reconcile requests from outside the API (a node's state changed).
    pub trigger: mpsc::UnboundedSender<ObjectRef<VirtualNode>>,
    /// VirtualNode statuses written and not yet seen in the cache.
    pub written: Written,
    /// UIDs of VirtualNodes whose cleanup finalizer this process added or saw (its cache may lag).
    pub finalized: Mutex<HashSet<String>>,
    /// The shards this process serves (everything, unsharded).
    pub ownership: Ownership,
}
