//! The DeviceBackend kind: how to reach a family of devices. A one-of: exactly one backend is set.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How fleetlet reaches a family of devices. Exactly one of `mock` or `ssh` is set.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "fleetlet.dev",
    version = "v1alpha1",
    kind = "DeviceBackend",
    shortname = "devb",
    category = "fleetlet",
    status = "DeviceBackendStatus",
    doc = "How fleetlet reaches a family of devices. Exactly one backend kind is set.",
    printcolumn(name = "Type", type_ = "string", json_path = ".status.type"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".status.virtualNodes"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DeviceBackendSpec {
    /// A simulator: containers that run and report like real ones without a device. For demos, tests and
    /// scale benchmarks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mock: Option<MockBackend>,

    /// Devices reachable over SSH: pods run as process groups on the device (see docs/backends.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshBackend>,
}

/// Simulated devices.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MockBackend {
    /// Delay between a pod being accepted and its containers running, in milliseconds. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 600000))]
    pub start_delay_ms: Option<u32>,

    /// When set, every container exits after this many milliseconds of running (with `exitCode`), then the
    /// pod's restartPolicy applies. Unset: containers run until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400000))]
    pub exit_after_ms: Option<u32>,

    /// Exit code for containers that exit (see `exitAfterMs`). Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 255))]
    pub exit_code: Option<i32>,

    /// Node capacity the simulated devices report. Default: cpu 16, memory 64Gi, pods 110,
    /// ephemeral-storage 100Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<BTreeMap<String, Quantity>>,

    /// Health the simulated devices report; `false` makes every node of this backend NotReady
    /// (reason BackendUnhealthy). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
}

/// Devices reachable over SSH: each VirtualNode's `spec.address` is dialled with these settings, one
/// connection per device. See docs/backends.md.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SshBackend {
    /// Remote user to log in as. Its login shell must be POSIX (sh, dash, bash, ash, zsh).
    #[schemars(length(min = 1, max = 64))]
    pub user: String,
    /// SSH port. Default 22.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// Secret (type `kubernetes.io/ssh-auth`, key `ssh-privatekey`) holding the unencrypted private key
    /// (OpenSSH or PEM format).
    pub private_key_secret_ref: SecretRef,
    /// Pinned host public keys in OpenSSH format (`ssh-ed25519 AAAA... [comment]`). The device must present
    /// one of them (or one from `knownHostsSecretRef`); an unknown key is refused, never trusted on first use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub host_keys: Vec<String>,
    /// Secret holding an OpenSSH `known_hosts` file under key `known_hosts`; entries whose host pattern
    /// matches the device address (`host` for port 22, `[host]:port` otherwise, or `*`) are pinned.
    /// Hashed host names are not supported. May be combined with `hostKeys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts_secret_ref: Option<SecretRef>,
    /// Timeout for TCP connect, key exchange and authentication, in seconds. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub connect_timeout_seconds: Option<u32>,
    /// Timeout for each short remote command (start, stop, status poll, stats), in seconds. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub command_timeout_seconds: Option<u32>,
    /// Interval of SSH keepalives when the connection is idle, in seconds. Default 15.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub keepalive_interval_seconds: Option<u32>,
    /// Unanswered keepalives after which the connection counts as lost. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub keepalive_max: Option<u32>,
    /// Most SSH channels open at once on one device connection (log follows, exec, port-forward, commands);
    /// keep it below the server's `MaxSessions` (OpenSSH default 10). Default 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 1000))]
    pub max_sessions: Option<u32>,
    /// How often each device's pod state is read, in milliseconds (one command per device, whatever the
    /// number of pods). Default 2000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 200, max = 600000))]
    pub poll_interval_ms: Option<u32>,
    /// Longest wait between reconnect attempts to an unreachable device, in seconds (exponential backoff
    /// from 1 s). Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub reconnect_backoff_max_seconds: Option<u32>,
    /// Directory on the device, relative to the user's home, that holds pod state and logs. Default
    /// `.fleetlet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 200),
        regex(pattern = r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
    )]
    pub state_dir: Option<String>,
}

/// Reference to a namespaced Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretRef {
    /// Namespace of the Secret.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Observed state of a DeviceBackend.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceBackendStatus {
    /// `Accepted`: the spec is valid and the backend kind is supported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::conditions::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Which backend kind is set (`mock` or `ssh`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Number of VirtualNodes referring to this backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_nodes: Option<i32>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl DeviceBackendSpec {
    /// Name of the backend kind that is set, or `None` when none or several are (the schema forbids both).
    pub fn kind(&self) -> Option<&'static str> {
        match (&self.mock, &self.ssh) {
            (Some(_), None) => Some("mock"),
            (None, Some(_)) => Some("ssh"),
            _ => None,
        }
    }
}
