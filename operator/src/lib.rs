//! The fleetlet operator: reconciles DeviceBackends and VirtualNodes and runs one virtual kubelet per
//! VirtualNode inside this process (through vk-runtime's Fleet).

pub mod backends;
pub mod cli;
pub mod context;
pub mod fence;
pub mod health;
pub mod identity;
pub mod leader;
pub mod metrics;
pub mod ports;
pub mod reconcilers;
pub mod run;
pub mod shards;
pub mod telemetry;
