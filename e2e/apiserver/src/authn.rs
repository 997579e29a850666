//! Authentication, in the order kube-apiserver's union authenticator tries it: a client
//! certificate that chains to a trusted CA (user = CN, groups = O values plus
//! `system:authenticated`, like the x509 authenticator), then a bearer token registered with
//! `TestApiServer::add_token`. A certificate that does not verify, or an unknown token, is 401
//! unless the other credential authenticates. A request without credentials is served as the
//! admin user (this server's convention, unlike a real cluster's `system:anonymous`).
//! Impersonation headers then replace the user (unchecked: tests use them as the admin).
//!
//! The TLS layer only *requests* a client certificate and checks that the peer holds its key;
//! the chain is verified here, so an untrusted certificate gets a 401 `Status` rather than a failed
//! handshake, as with Go's `tls.RequestClientCert` and the x509 authenticator.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use http::{Extensions, HeaderMap};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

use crate::errors::ApiError;
use crate::kubelet::tls::{TlsError, provider, roots};
use crate::server::{Inner, UserInfo};

/// The group every authenticated user is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// What is known about a connection's peer; attached to each of its requests.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub addr: Option<SocketAddr>,
    /// `None`: no client certificate; `Some(Err)`: one that did not verify.
    pub cert: Option<Result<UserInfo, String>>,
}

/// Verifies client certificate chains against the trusted CA bundle.
pub struct ClientCertAuthenticator {
    bundle: String,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl ClientCertAuthenticator {
    /// Trusts the CAs of `bundle` (PEM), as `--client-ca-file` does.
    pub fn new(bundle: String) -> Result<Self, TlsError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&bundle)?), provider())
                .allow_unauthenticated()
                .build()
                .map_err(TlsError::Verifier)?;
        Ok(ClientCertAuthenticator { bundle, verifier })
    }

    /// The trusted CAs, PEM.
    pub fn bundle(&self) -> &str {
        &self.bundle
    }

    /// The verifier that also checks, during the handshake, that the peer holds its key.
    pub fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.verifier.clone()
    }

    /// The user a presented chain (end entity first) names, or why it is not trusted.
    pub fn authenticate(&self, chain: &[CertificateDer<'_>]) -> Result<UserInfo, String> {
        let (end_entity, intermediates) = chain
            .split_first()
            .ok_or_else(|| "empty certificate chain".to_string())?;
        self.verifier
            .verify_client_cert(end_entity, intermediates, UnixTime::now())
            .map_err(|e| format!("verifying certificate: {e}"))?;
        user_from_certificate(end_entity)
    }
}

/// CN is the user name, each O value a group; `system:authenticated` is added.
pub fn user_from_certificate(der: &[u8]) -> Result<UserInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("parsing certificate: {e}"))?;
    let subject = cert.subject();
    let username = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .ok_or_else(|| "the certificate has no common name".to_string())?
        .to_string();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    groups.push(AUTHENTICATED_GROUP.into());
    Ok(UserInfo {
        username,
        uid: String::new(),
        groups,
    })
}

/// The user a request is served as (see the module docs).
pub fn authenticate(
    inner: &Inner,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Result<UserInfo, ApiError> {
    let cert = extensions
        .get::<ConnectInfo<Peer>>()
        .and_then(|c| c.0.cert.clone());
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::trim);
    let mut user = match (cert, token) {
        (Some(Ok(user)), _) => user,
        (cert, Some(token)) => match inner.user_for_token(token) {
            Some(user) => user,
            None => {
                if let Some(Err(e)) = cert {
                    tracing::debug!(error = %e, "client certificate rejected");
                }
                return Err(ApiError::unauthorized());
            }
        },
        (Some(Err(e)), None) => {
            tracing::debug!(error = %e, "client certificate rejected");
            return Err(ApiError::unauthorized());
        }
        (None, None) => UserInfo::admin(),
    };
    if let Some(imp) = headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
    {
        let groups = headers
            .get_all("impersonate-group")
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect();
        user = UserInfo {
            username: imp.to_string(),
            uid: String::new(),
            groups,
        };
    }
    Ok(user)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rustls_pki_types::pem::PemObject;

    use super::*;
    use crate::pki::Ca;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn trusted_and_untrusted_chains() {
        let cluster = Ca::generate("cluster").unwrap();
        let client = Ca::generate("client").unwrap();
        let bundle = format!("{}{}", cluster.pem(), client.pem());
        let authn = ClientCertAuthenticator::new(bundle).unwrap();
        let node = cluster
            .issue("system:node:edge-0", &["system:nodes"])
            .unwrap();
        let user = authn.authenticate(&[der(&node.cert_pem)]).unwrap();
        assert_eq!(user.username, "system:node:edge-0");
        assert_eq!(user.groups, ["system:nodes", AUTHENTICATED_GROUP]);
        let other = client.issue("alice", &[]).unwrap();
        assert_eq!(
            authn.authenticate(&[der(&other.cert_pem)]).unwrap().groups,
            [AUTHENTICATED_GROUP]
        );
        let stranger = Ca::generate("stranger")
            .unwrap()
            .issue("admin", &["system:masters"])
            .unwrap();
        assert!(authn.authenticate(&[der(&stranger.cert_pem)]).is_err());
        assert!(authn.authenticate(&[]).is_err());
        let serving = cluster
            .issue_serving("localhost", &["localhost"], &[])
            .unwrap();
        assert!(
            authn.authenticate(&[der(&serving.cert_pem)]).is_err(),
            "a serving certificate is no client identity"
        );
    }
}
