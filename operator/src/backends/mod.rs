//! Device backends: each implements vk-runtime's [`vk_runtime::Provider`] for one kind of device.
//! [`mock`] simulates devices (containers that run and report like real ones, for demos, tests and
//! scale benchmarks); [`ssh`] runs pods as process groups on devices reachable over SSH.
//! [`instrumented`] wraps either one to time its operations.

pub mod instrumented;
pub mod mock;
pub mod ssh;
