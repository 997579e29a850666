//! One provider per virtual node, built from its DeviceBackend. A backend change updates the provider in
//! place when the backend kind supports it (Mock), so running pods are not disturbed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fleetlet_crds::DeviceBackend;
use kube::ResourceExt;
use vk_runtime::provider::DynProvider;

use crate::backends::mock::MockProvider;

/// Why no provider can be built for a backend.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("DeviceBackend {0} sets no backend (exactly one of spec.mock or spec.ssh is required)")]
    NoBackend(String),
    #[error(
        "DeviceBackend {0} uses the ssh backend, which this fleetlet version does not support yet"
    )]
    Unsupported(String),
}

#[derive(Clone)]
enum Built {
    Mock(Arc<MockProvider>),
}

impl Built {
    fn dyn_provider(&self) -> DynProvider {
        match self {
            Self::Mock(m) => m.clone(),
        }
    }
}

/// Providers by node name, with the backend they were built from.
#[derive(Default)]
pub struct Providers {
    inner: Mutex<HashMap<String, (String, Built)>>,
}

impl Providers {
    /// The provider for `node` on `backend`: the existing one (updated) or a new one.
    pub fn get_or_build(
        &self,
        node: &str,
        backend: &DeviceBackend,
    ) -> Result<DynProvider, BuildError> {
        let backend_name = backend.name_any();
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((name, built)) = map.get(node)
            && *name == backend_name
            && let (Built::Mock(m), Some(spec)) = (built, &backend.spec.mock)
        {
            m.update(spec);
            return Ok(built.dyn_provider());
        }
        let built = match (&backend.spec.mock, &backend.spec.ssh) {
            (Some(spec), None) => Built::Mock(Arc::new(MockProvider::new(spec, node))),
            (None, Some(_)) => return Err(BuildError::Unsupported(backend_name)),
            _ => return Err(BuildError::NoBackend(backend_name)),
        };
        let provider = built.dyn_provider();
        map.insert(node.to_string(), (backend_name, built));
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
pub fn validate(backend: &DeviceBackend) -> Result<&'static str, BuildError> {
    match (&backend.spec.mock, &backend.spec.ssh) {
        (Some(_), None) => Ok("mock"),
        (None, Some(_)) => Err(BuildError::Unsupported(backend.name_any())),
        _ => Err(BuildError::NoBackend(backend.name_any())),
    }
}
