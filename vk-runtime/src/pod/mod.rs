//! The pod side of a virtual kubelet: pods bound to a node become provider calls ([`controller`], one
//! small worker per pod so that calls for one pod never overlap), backend state becomes `PodStatus`
//! ([`status`], pure), written without the intermediate states a fast start passes through ([`outbox`],
//! pure), and container environments are resolved as the kubelet does ([`env`]).

pub mod controller;
pub mod env;
pub mod outbox;
pub mod status;

pub use controller::{PodController, PodEvent};
