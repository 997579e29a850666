//! fleetlet's API, `fleetlet.dev/v1alpha1`: the [`VirtualNode`] and [`DeviceBackend`] custom resources,
//! the condition vocabulary shared by the operator and the docs, and CRD generation.
//!
//! This crate holds types and pure helpers only: no tokio, no client.

// kube-derive printcolumn(...) attributes repeat `type_ = "string"`; clippy mistakes them for duplicates.
#![allow(clippy::duplicated_attributes)]

pub mod backend;
pub mod conditions;
pub mod consts;
pub mod generate;
pub mod shard;
pub mod virtual_node;

pub use backend::{DeviceBackend, DeviceBackendSpec, DeviceBackendStatus, MockBackend, SshBackend};
pub use virtual_node::{BackendRef, VirtualNode, VirtualNodeSpec, VirtualNodeStatus};
