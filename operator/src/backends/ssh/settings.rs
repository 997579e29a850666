//! What one SSH device connection needs, checked before anything dials: the address and port, the
//! user, the private key (from its Secret), the pinned host keys (from the spec and/or a known_hosts
//! Secret), timeouts and limits with their defaults. Pure: parsing and validation only.

use std::sync::Arc;
use std::time::Duration;

use fleetlet_crds::SshBackend;
use russh::keys::{HashAlg, PrivateKey, PublicKey};

/// Key of the private key in a `kubernetes.io/ssh-auth` Secret.
pub const PRIVATE_KEY_FIELD: &str = "ssh-privatekey";
/// Key of the known_hosts file in its Secret.
pub const KNOWN_HOSTS_FIELD: &str = "known_hosts";
/// Type a private key Secret must have.
pub const SSH_AUTH_TYPE: &str = "kubernetes.io/ssh-auth";

/// Why settings cannot be built. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("the VirtualNode has no spec.address to dial")]
    NoAddress,
    #[error("spec.ssh.hostKeys[{index}] is not an OpenSSH public key ({reason})")]
    HostKey { index: usize, reason: String },
    #[error("known_hosts line {line} is not valid ({reason})")]
    KnownHosts { line: usize, reason: String },
    #[error(
        "no pinned host key for {host}: set spec.ssh.hostKeys or a known_hosts entry for it (keys are never trusted on first use)"
    )]
    NoHostKeys { host: String },
    #[error("the private key in Secret {secret} cannot be used: {reason}")]
    PrivateKey { secret: String, reason: String },
    #[error("spec.ssh.stateDir {0:?} must be a relative path without '.' or '..' elements")]
    StateDir(String),
}

/// Everything one device connection needs.
#[derive(Clone)]
pub struct Settings {
    /// Host name or IP of the device (the VirtualNode's `spec.address`).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub key: Arc<PrivateKey>,
    /// Accepted host keys; the device must present one of them.
    pub host_keys: Vec<PublicKey>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_max: usize,
    pub max_sessions: usize,
    pub poll_interval: Duration,
    pub reconnect_backoff_max: Duration,
    /// Relative to the remote user's home.
    pub state_dir: String,
    /// The VirtualNode these settings serve; empty for none. Pods are recorded on the device with it,
    /// so VirtualNodes that share a device (and state directory) each see only their own.
    pub node: String,
}

impl std::fmt::Debug for Settings {
    // The key stays out of every log line and error message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("key", &"<redacted>")
            .field("host_keys", &self.host_keys.len())
            .finish_non_exhaustive()
    }
}

/// Settings compare by everything but the key itself, plus the key's fingerprint.
impl PartialEq for Settings {
    fn eq(&self, o: &Self) -> bool {
        let fp = |k: &PrivateKey| k.fingerprint(HashAlg::Sha256).to_string();
        (
            &self.host,
            self.port,
            &self.user,
            &self.host_keys,
            self.connect_timeout,
            self.command_timeout,
            self.keepalive_interval,
            self.keepalive_max,
            self.max_sessions,
            self.poll_interval,
            self.reconnect_backoff_max,
            &self.state_dir,
        ) == (
            &o.host,
            o.port,
            &o.user,
            &o.host_keys,
            o.connect_timeout,
            o.command_timeout,
            o.keepalive_interval,
            o.keepalive_max,
            o.max_sessions,
            o.poll_interval,
            o.reconnect_backoff_max,
            &o.state_dir,
        ) && self.node == o.node
            && fp(&self.key) == fp(&o.key)
    }
}

/// Secret contents the backend needs, already fetched.
#[derive(Clone, Default)]
pub struct Secrets {
    /// `namespace/name` of the private key Secret, for messages.
    pub key_secret: String,
    /// The `ssh-privatekey` bytes.
    pub private_key: Vec<u8>,
    /// The `known_hosts` bytes, when `knownHostsSecretRef` is set.
    pub known_hosts: Option<Vec<u8>>,
}

fn secs(v: Option<u32>, default: u64) -> Duration {
    Duration::from_secs(v.map_or(default, u64::from))
}

impl Settings {
    /// Build the settings of the device at `address` from the backend spec and its Secrets.
    ///
    /// # Errors
    /// A [`SettingsError`] saying which input is wrong.
    pub fn new(
        spec: &SshBackend,
        address: Option<&str>,
        secrets: &Secrets,
    ) -> Result<Self, SettingsError> {
        let host = address
            .filter(|a| !a.is_empty())
            .ok_or(SettingsError::NoAddress)?
            .to_string();
        let port = spec.port.unwrap_or(22);
        let mut host_keys = parse_host_keys(&spec.host_keys)?;
        if let Some(kh) = &secrets.known_hosts {
            host_keys.extend(known_hosts_keys(&String::from_utf8_lossy(kh), &host, port)?);
        }
        if host_keys.is_empty() {
            return Err(SettingsError::NoHostKeys { host });
        }
        let key = parse_private_key(&secrets.private_key).map_err(|reason| {
            SettingsError::PrivateKey {
                secret: secrets.key_secret.clone(),
                reason,
            }
        })?;
        let state_dir = spec.state_dir.clone().unwrap_or_else(|| ".fleetlet".into());
        if !valid_state_dir(&state_dir) {
            return Err(SettingsError::StateDir(state_dir));
        }
        Ok(Self {
            host,
            port,
            user: spec.user.clone(),
            key: Arc::new(key),
            host_keys,
            connect_timeout: secs(spec.connect_timeout_seconds, 10),
            command_timeout: secs(spec.command_timeout_seconds, 30),
            keepalive_interval: secs(spec.keepalive_interval_seconds, 15),
            keepalive_max: spec.keepalive_max.map_or(3, |m| m as usize),
            max_sessions: spec.max_sessions.map_or(8, |m| (m as usize).max(2)),
            poll_interval: Duration::from_millis(spec.poll_interval_ms.map_or(2000, u64::from)),
            reconnect_backoff_max: secs(spec.reconnect_backoff_max_seconds, 30),
            state_dir,
            node: String::new(),
        })
    }

    /// The same settings for the VirtualNode `node`.
    #[must_use]
    pub fn for_node(self, node: &str) -> Self {
        Self {
            node: node.to_string(),
            ..self
        }
    }

    /// Whether `key` is one of the pinned host keys (algorithm and key data; comments do not count).
    pub fn is_pinned(&self, key: &PublicKey) -> bool {
        self.host_keys
            .iter()
            .any(|k| k.key_data() == key.key_data())
    }
}

fn valid_state_dir(dir: &str) -> bool {
    !dir.is_empty()
        && dir.split('/').all(|p| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
}

fn parse_private_key(bytes: &[u8]) -> Result<PrivateKey, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    // The parser's own errors never echo the key.
    let key = russh::keys::decode_secret_key(text, None).map_err(|e| match e {
        russh::keys::Error::KeyIsEncrypted => {
            "the key is encrypted (passphrases are not supported)".to_string()
        }
        _ => "not an OpenSSH or PEM private key".to_string(),
    })?;
    Ok(key)
}

/// Parse `hostKeys` entries (`type base64 [comment]`).
///
/// # Errors
/// [`SettingsError::HostKey`] for the first entry that is not a public key.
pub fn parse_host_keys(keys: &[String]) -> Result<Vec<PublicKey>, SettingsError> {
    keys.iter()
        .enumerate()
        .map(|(index, k)| {
            PublicKey::from_openssh(k.trim()).map_err(|e| SettingsError::HostKey {
                index,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Keys of the known_hosts entries whose host patterns name `host` (`[host]:port` unless port 22).
/// Negated (`!`) patterns exclude a line; `@revoked` and `@cert-authority` lines are skipped.
///
/// # Errors
/// [`SettingsError::KnownHosts`] for a matching line whose key does not parse.
pub fn known_hosts_keys(
    text: &str,
    host: &str,
    port: u16,
) -> Result<Vec<PublicKey>, SettingsError> {
    let wanted = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
            continue;
        }
        let Some((patterns, key)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let mut matched = false;
        for p in patterns.split(',') {
            if let Some(neg) = p.strip_prefix('!') {
                if neg == wanted {
                    matched = false;
                    break;
                }
            } else if p == wanted || p == "*" {
                matched = true;
            }
        }
        if matched {
            let key =
                PublicKey::from_openssh(key.trim()).map_err(|e| SettingsError::KnownHosts {
                    line: i + 1,
                    reason: e.to_string(),
                })?;
            keys.push(key);
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test";

    #[test]
    fn known_hosts_matching() {
        let key = ED.rsplit_once(' ').unwrap().0;
        let text = format!(
            "# comment\nother {key}\ndev,[dev]:2222 {key}\n@revoked dev {key}\n!dev,* {key}\n"
        );
        assert_eq!(known_hosts_keys(&text, "dev", 22).unwrap().len(), 1);
        assert_eq!(known_hosts_keys(&text, "dev", 2222).unwrap().len(), 2);
        assert_eq!(known_hosts_keys(&text, "x", 22).unwrap().len(), 1);
        assert!(known_hosts_keys("dev garbage", "dev", 22).is_err());
    }

    #[test]
    fn host_keys_and_state_dir() {
        assert_eq!(parse_host_keys(&[ED.into()]).unwrap().len(), 1);
        assert!(matches!(
            parse_host_keys(&[ED.into(), "ssh-ed25519 nope".into()]),
            Err(SettingsError::HostKey { index: 1, .. })
        ));
        assert!(valid_state_dir(".fleetlet"));
        assert!(valid_state_dir("a/b-c_d.e"));
        for bad in ["", "/abs", "a/../b", "./a", "a//b", "a b", "$(x)"] {
            assert!(!valid_state_dir(bad), "{bad:?}");
        }
    }

    #[test]
    fn errors_never_contain_the_key() {
        let secrets = Secrets {
            key_secret: "ns/key".into(),
            private_key: b"-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LXNlY3JldA==\n-----END OPENSSH PRIVATE KEY-----\n".to_vec(),
            known_hosts: None,
        };
        let spec = SshBackend {
            user: "pi".into(),
            host_keys: vec![ED.into()],
            ..Default::default()
        };
        let err = Settings::new(&spec, Some("dev"), &secrets)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ns/key") && !err.contains("c2VjcmV0"), "{err}");
        assert_eq!(
            Settings::new(&spec, None, &secrets).unwrap_err(),
            SettingsError::NoAddress
        );
    }
}
