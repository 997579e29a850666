//! Device backends: each implements vk-runtime's [`vk_runtime::Provider`] for one kind of device.
//! [`mock`] simulates devices (containers that run and report like real ones, for demos, tests and
//! scale benchmarks).

pub mod mock;
