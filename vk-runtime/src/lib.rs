//! vk-runtime: a virtual-kubelet framework for running many virtual nodes in one process.
//!
//! A [`Provider`] runs pods on some device. A [`fleet::Fleet`] runs any number of virtual nodes, each
//! backed by a provider, sharing one set of API clients, one pod watch and one heartbeat timer:
//! - [`node`] registers the Node, renews its Lease and keeps its status current;
//! - [`pod`] turns the pods bound to each node into provider calls and provider state into pod status;
//! - [`stream`] holds the wire protocols of the kubelet API (SPDY/3.1, WebSocket channels).
//!
//! Nothing here knows about fleetlet's custom resources or about SSH.

pub mod api;
pub mod certs;
pub mod fleet;
pub mod node;
pub mod pod;
pub mod provider;
pub mod stream;
pub mod testing;

pub use provider::{
    BackendPodStatus, ContainerState, ContainerStatus, Health, LogOptions, NodeResources, PodNote,
    PodNotifier, PodRef, Provider, ProviderError, ResolvedPod,
};
