//! How failures become HTTP answers. [`status_for`] is the one place a [`ProviderError`] is mapped
//! to a status code; the body is plain text because kubectl shows a non-2xx body to the user.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::provider::ProviderError;

/// The HTTP status of a provider error.
pub fn status_for(err: &ProviderError) -> StatusCode {
    match err {
        ProviderError::NotFound(_) => StatusCode::NOT_FOUND,
        ProviderError::InvalidInput(_) => StatusCode::BAD_REQUEST,
        ProviderError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
        ProviderError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ProviderError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error answer of a kubelet API route.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("pod {namespace}/{name} not found")]
    PodNotFound { namespace: String, name: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("{message}")]
    Unauthorized { message: String },
    #[error("{0}")]
    Forbidden(String),
    #[error("authorization check failed: {0}")]
    AuthBackend(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Provider(e) => status_for(e),
            Self::PodNotFound { .. } => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::AuthBackend(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), self.to_string()).into_response()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn provider_errors_map_to_statuses() {
        assert_eq!(
            status_for(&ProviderError::NotFound("c".into())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status_for(&ProviderError::InvalidInput("x".into())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_for(&ProviderError::NotImplemented("exec")),
            StatusCode::NOT_IMPLEMENTED
        );
        assert_eq!(
            status_for(&ProviderError::Unavailable("down".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_for(&ProviderError::Internal("bug".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            ApiError::from(ProviderError::NotImplemented("logs")).status(),
            StatusCode::NOT_IMPLEMENTED
        );
    }
}
