//! fleetlet's end-to-end harness. A [`Cluster`] is the in-process test apiserver, or a real cluster when
//! `FLEETLET_E2E_KUBECONFIG` names one; an [`Operator`] is the real `fleetlet run` binary as a child
//! process pointed at it. Scenarios (under `tests/`) use only the Kubernetes API and `kubectl`, so the
//! same code checks both.

pub mod bench;
pub mod certs;
pub mod cluster;
pub mod fixtures;
pub mod follow;
pub mod kubelet;
pub mod kubelet_checks;
pub mod observe;
pub mod operator;
pub mod probe;
pub mod rbac;
pub mod replicas;
pub mod ssh_device;
pub mod sshd;
pub mod wait;

pub use cluster::Cluster;
pub use operator::Operator;
pub use wait::{consistently, eventually};
