//! One provider per virtual node, built from its DeviceBackend (and, for SSH, the VirtualNode's address
//! and the backend's Secrets). A backend change updates a Mock provider in place; an SSH provider is
//! kept while its settings (including the key's fingerprint) are unchanged and replaced otherwise: the
//! new one adopts the pods already running on the device. Every provider handed out is wrapped in
//! the [`Instrumented`] decorator once, when built, so the same `Arc` comes back on every resolve
//! (the Fleet restarts a node whose provider changes identity).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fleetlet_crds::backend::SecretRef;
use fleetlet_crds::consts::reason;
use fleetlet_crds::{DeviceBackend, SshBackend, VirtualNode};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use vk_runtime::provider::DynProvider;

use crate::backends::instrumented::Instrumented;
use crate::backends::mock::MockProvider;
use crate::backends::ssh::settings::{
    KNOWN_HOSTS_FIELD, PRIVATE_KEY_FIELD, SSH_AUTH_TYPE, parse_host_keys,
};
use crate::backends::ssh::{Secrets, Settings, SettingsError, SshProvider};
use crate::metrics::Metrics;

/// Condition reasons of SSH backends that cannot be built.
pub mod ssh_reason {
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const SECRET_INVALID: &str = "SecretInvalid";
    pub const ADDRESS_MISSING: &str = "AddressMissing";
    pub const HOST_KEYS_INVALID: &str = "HostKeysInvalid";
}

/// Why no provider can be built for a backend.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("DeviceBackend {0} sets no backend (exactly one of spec.mock or spec.ssh is required)")]
    NoBackend(String),
    #[error("Secret {secret} not found")]
    SecretNotFound { secret: String },
    #[error("Secret {secret} cannot be used: {reason}")]
    SecretInvalid { secret: String, reason: String },
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("reading Secret {secret}: {source}")]
    Kube {
        secret: String,
        #[source]
        source: kube::Error,
    },
}

impl BuildError {
    /// Stable reason for conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoBackend(_) => reason::BACKEND_INVALID,
            Self::SecretNotFound { .. } => ssh_reason::SECRET_NOT_FOUND,
            Self::SecretInvalid { .. } | Self::Settings(SettingsError::PrivateKey { .. }) => {
                ssh_reason::SECRET_INVALID
            }
            Self::Settings(SettingsError::NoAddress) => ssh_reason::ADDRESS_MISSING,
            Self::Settings(
                SettingsError::HostKey { .. }
                | SettingsError::KnownHosts { .. }
                | SettingsError::NoHostKeys { .. },
            ) => ssh_reason::HOST_KEYS_INVALID,
            Self::Settings(SettingsError::StateDir(_)) => reason::BACKEND_INVALID,
            Self::Kube { .. } => "ApiError",
        }
    }

    /// Whether the failure may go away without a change to the VirtualNode or DeviceBackend (a Secret
    /// created or fixed later, an API hiccup): worth a periodic retry.
    pub fn retry(&self) -> bool {
        matches!(
            self,
            Self::SecretNotFound { .. }
                | Self::SecretInvalid { .. }
                | Self::Kube { .. }
                | Self::Settings(
                    SettingsError::PrivateKey { .. } | SettingsError::NoHostKeys { .. }
                )
        )
    }
}

#[derive(Clone)]
enum Built {
    Mock(Arc<MockProvider>),
    Ssh(Arc<SshProvider>),
}

impl Built {
    /// The backend wrapped in the metrics decorator.
    fn instrumented(&self, metrics: &Metrics) -> DynProvider {
        let (inner, kind): (DynProvider, _) = match self {
            Self::Mock(m) => (m.clone(), "mock"),
            Self::Ssh(s) => (s.clone(), "ssh"),
        };
        Instrumented::wrap(inner, kind, metrics.clone())
    }
}

/// A built backend and the (instrumented) provider handed out for it.
struct Entry {
    backend_name: String,
    built: Built,
    provider: DynProvider,
}

/// Providers by node name, with the backend they were built from.
pub struct Providers {
    inner: Mutex<HashMap<String, Entry>>,
    metrics: Metrics,
}

fn secret_name(r: &SecretRef) -> String {
    format!("{}/{}", r.namespace, r.name)
}

async fn get_secret(client: &Client, r: &SecretRef) -> Result<Secret, BuildError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &r.namespace);
    api.get_opt(&r.name)
        .await
        .map_err(|source| BuildError::Kube {
            secret: secret_name(r),
            source,
        })?
        .ok_or_else(|| BuildError::SecretNotFound {
            secret: secret_name(r),
        })
}

fn field(secret: &Secret, r: &SecretRef, key: &str) -> Result<Vec<u8>, BuildError> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .filter(|b| !b.is_empty())
        .ok_or_else(|| BuildError::SecretInvalid {
            secret: secret_name(r),
            reason: format!("it has no {key:?} key"),
        })
}

/// Read the Secrets an SSH backend refers to.
///
/// # Errors
/// A missing or unusable Secret, or an API error.
pub async fn fetch_secrets(client: &Client, spec: &SshBackend) -> Result<Secrets, BuildError> {
    let r = &spec.private_key_secret_ref;
    let key = get_secret(client, r).await?;
    if key.type_.as_deref() != Some(SSH_AUTH_TYPE) {
        return Err(BuildError::SecretInvalid {
            secret: secret_name(r),
            reason: format!("its type must be {SSH_AUTH_TYPE}"),
        });
    }
    let known_hosts = match &spec.known_hosts_secret_ref {
        Some(kr) => Some(field(
            &get_secret(client, kr).await?,
            kr,
            KNOWN_HOSTS_FIELD,
        )?),
        None => None,
    };
    Ok(Secrets {
        key_secret: secret_name(r),
        private_key: field(&key, r, PRIVATE_KEY_FIELD)?,
        known_hosts,
    })
}

impl Providers {
    /// No providers yet; every one built is timed into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            inner: Mutex::default(),
            metrics,
        }
    }

    /// The provider for the VirtualNode `vn` (named `node`) on `backend`: the existing one (updated) or
    /// a new one. SSH backends read their Secrets through `client`.
    ///
    /// # Errors
    /// A [`BuildError`] saying why the node cannot run.
    pub async fn resolve(
        &self,
        client: &Client,
        node: &str,
        vn: &VirtualNode,
        backend: &DeviceBackend,
    ) -> Result<DynProvider, BuildError> {
        match (&backend.spec.mock, &backend.spec.ssh) {
            (Some(_), None) => self.get_or_build(node, backend, None),
            (None, Some(spec)) => {
                let secrets = fetch_secrets(client, spec).await?;
                let settings =
                    Settings::new(spec, vn.spec.address.as_deref(), &secrets)?.for_node(node);
                self.get_or_build(node, backend, Some(settings))
            }
            _ => Err(BuildError::NoBackend(backend.name_any())),
        }
    }

    /// The provider for `node` on `backend` (SSH backends need their `settings`).
    ///
    /// # Errors
    /// [`BuildError::NoBackend`] when the backend sets no kind (or SSH settings are missing).
    pub fn get_or_build(
        &self,
        node: &str,
        backend: &DeviceBackend,
        settings: Option<Settings>,
    ) -> Result<DynProvider, BuildError> {
        let backend_name = backend.name_any();
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = map.get(node)
            && entry.backend_name == backend_name
        {
            match (&entry.built, &backend.spec.mock, &settings) {
                (Built::Mock(m), Some(spec), _) => {
                    m.update(spec);
                    return Ok(entry.provider.clone());
                }
                (Built::Ssh(s), None, Some(wanted)) if s.settings() == wanted => {
                    return Ok(entry.provider.clone());
                }
                _ => {}
            }
        }
        let built = match (&backend.spec.mock, settings) {
            (Some(spec), _) => Built::Mock(Arc::new(MockProvider::new(spec, node))),
            (None, Some(s)) if backend.spec.ssh.is_some() => {
                Built::Ssh(Arc::new(SshProvider::new(s)))
            }
            _ => return Err(BuildError::NoBackend(backend_name)),
        };
        let provider = built.instrumented(&self.metrics);
        map.insert(
            node.to_string(),
            Entry {
                backend_name,
                built,
                provider: provider.clone(),
            },
        );
        Ok(provider)
    }

    /// Forget the node's provider.
    pub fn remove(&self, node: &str) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node);
    }
}

/// Validate a backend spec without building anything (for DeviceBackend status).
///
/// # Errors
/// [`BuildError`] for a spec no node can use.
pub fn validate(backend: &DeviceBackend) -> Result<&'static str, BuildError> {
    match (&backend.spec.mock, &backend.spec.ssh) {
        (Some(_), None) => Ok("mock"),
        (None, Some(ssh)) => {
            parse_host_keys(&ssh.host_keys)?;
            if ssh.host_keys.is_empty() && ssh.known_hosts_secret_ref.is_none() {
                return Err(SettingsError::NoHostKeys {
                    host: "any device".into(),
                }
                .into());
            }
            Ok("ssh")
        }
        _ => Err(BuildError::NoBackend(backend.name_any())),
    }
}
