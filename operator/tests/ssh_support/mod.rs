//! Test harness for the SSH backend: the real OpenSSH server on loopback, state directory, relay and
//! process readers come from `fleetlet_e2e::sshd` (one copy for these tests and the e2e scenarios);
//! this module adds what needs the operator crate: backend specs, Secrets, Settings and providers for
//! that server.

#![allow(dead_code, clippy::unwrap_used)]

use std::ops::Deref;
use std::sync::Arc;

use fleetlet::backends::ssh::{Secrets, Settings, SshProvider};
use fleetlet_crds::SshBackend;

// Each test file uses a different subset.
#[allow(unused_imports)]
pub use fleetlet_e2e::{
    cluster::unique,
    sshd::{Relay, StateDir, pids_running, pids_with, processes, wait_until, whoami},
};

/// A running sshd (see [`fleetlet_e2e::sshd::Sshd`]) and providers for it.
pub struct Sshd(fleetlet_e2e::sshd::Sshd);

impl Deref for Sshd {
    type Target = fleetlet_e2e::sshd::Sshd;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Sshd {
    /// Start sshd on a free loopback port; panics (failing the test) with the reason, e.g. that
    /// openssh-server is not installed.
    pub fn start() -> Self {
        match fleetlet_e2e::sshd::Sshd::start() {
            Ok(s) => Self(s),
            Err(e) => panic!("{e:#}"),
        }
    }

    /// The spec of a backend reaching this server, state under a fresh directory in the home.
    pub fn spec(&self, state_dir: &str) -> SshBackend {
        SshBackend {
            user: whoami(),
            port: Some(self.port),
            host_keys: vec![self.host_key.clone()],
            connect_timeout_seconds: Some(5),
            command_timeout_seconds: Some(20),
            keepalive_interval_seconds: Some(2),
            keepalive_max: Some(2),
            poll_interval_ms: Some(250),
            reconnect_backoff_max_seconds: Some(2),
            max_sessions: Some(16),
            state_dir: Some(state_dir.to_string()),
            ..Default::default()
        }
    }

    pub fn secrets(&self) -> Secrets {
        Secrets {
            key_secret: "test/key".into(),
            private_key: self.user_key.clone(),
            known_hosts: None,
        }
    }

    /// Settings for `spec` dialling `host:port` (the sshd itself, or a relay in front of it).
    pub fn settings(&self, spec: &SshBackend, host: &str, port: u16) -> Settings {
        let mut spec = spec.clone();
        spec.port = Some(port);
        Settings::new(&spec, Some(host), &self.secrets()).unwrap()
    }

    /// A provider for this server with state under `state_dir`.
    pub fn provider(&self, state_dir: &str) -> Arc<SshProvider> {
        Arc::new(SshProvider::new(self.settings(
            &self.spec(state_dir),
            "127.0.0.1",
            self.port,
        )))
    }
}
