//! Reconcilers: [`virtual_node`] (a VirtualNode becomes a running virtual kubelet) and
//! [`device_backend`] (validate and report on backends), plus the per-node [`providers`] registry.

pub mod csr_approver;
pub mod device_backend;
pub mod providers;
pub mod virtual_node;

/// Errors of a reconcile; `reason()` is stable and used for conditions, Events and metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("object has no name")]
    NoName,
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube(_) => "ApiError",
            Self::Finalizer(_) => "FinalizerError",
            Self::NoName => "InvalidObject",
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Self::Kube(e)
    }
}
