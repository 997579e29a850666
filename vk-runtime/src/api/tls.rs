//! TLS of a virtual node's endpoint: the serving certificate behind a [`CertResolver`] that can be
//! swapped at runtime (rotation without dropping open connections), optional client-certificate
//! verification against the cluster's client CA, and the identity a verified certificate carries.

use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{
    ClientHello, ResolvesServerCert, ServerSessionMemoryCache, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::auth::UserInfo;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating a self-signed certificate failed")]
    Generate(#[source] rcgen::Error),
    #[error("reading PEM failed")]
    Pem(#[source] rustls_pki_types::pem::Error),
    #[error("the PEM holds no certificate")]
    NoCertificate,
    #[error("unusable key or certificate")]
    Rustls(#[source] rustls::Error),
    #[error("client CA bundle is unusable")]
    ClientCa(#[source] rustls::server::VerifierBuilderError),
}

/// TLS sessions kept for resumption, shared by every endpoint of the process (allocated up front, so
/// one cache for the fleet rather than one per node). Sharing is safe: a client only offers a session
/// to the server it got it from, and every endpoint verifies clients against the same CA.
const SESSIONS: usize = 256;

/// One crypto provider for every endpoint (it holds the lists of suites and groups).
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn sessions() -> Arc<ServerSessionMemoryCache> {
    static CACHE: std::sync::OnceLock<Arc<ServerSessionMemoryCache>> = std::sync::OnceLock::new();
    CACHE
        .get_or_init(|| ServerSessionMemoryCache::new(SESSIONS))
        .clone()
}

/// The serving certificate of one endpoint; [`CertResolver::set`] replaces it for new handshakes.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        Self {
            current: RwLock::new(key),
        }
    }

    /// A self-signed certificate for `names` (DNS names or IP addresses), until a CSR-issued one
    /// replaces it.
    pub fn self_signed(names: &[String]) -> Result<Self, TlsError> {
        let cert =
            rcgen::generate_simple_self_signed(names.to_vec()).map_err(TlsError::Generate)?;
        let key = certified_key(
            vec![cert.cert.der().clone()],
            PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
        )?;
        Ok(Self::new(Arc::new(key)))
    }

    /// Replace the certificate; open connections keep the one they negotiated.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        match self.current.write() {
            Ok(mut guard) => *guard = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Build a [`CertifiedKey`] from DER parts.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, TlsError> {
    CertifiedKey::from_der(chain, key, &provider()).map_err(TlsError::Rustls)
}

/// Build a [`CertifiedKey`] from a PEM certificate chain and PEM private key.
pub fn certified_key_from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::Pem)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(TlsError::Pem)?;
    certified_key(chain, key)
}

/// The verifier of client certificates signed by the cluster's client CA. Client certificates stay
/// optional (bearer tokens remain possible). Built once and shared by every endpoint: the parsed
/// trust anchors are the same for all nodes.
#[derive(Clone)]
pub struct ClientCa(Arc<dyn ClientCertVerifier>);

impl std::fmt::Debug for ClientCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientCa")
    }
}

impl ClientCa {
    /// Parse a PEM bundle of CA certificates.
    ///
    /// # Errors
    /// Unreadable PEM, no certificate in it, or a certificate rustls cannot use as a trust anchor.
    pub fn from_pem(pem: &[u8]) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            roots
                .add(cert.map_err(TlsError::Pem)?)
                .map_err(TlsError::Rustls)?;
        }
        if roots.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(TlsError::ClientCa)?;
        Ok(Self(verifier))
    }
}

/// The rustls server configuration of an endpoint. With `client_ca`, client certificates are
/// verified against it; without, none are requested.
pub fn server_config(
    resolver: Arc<CertResolver>,
    client_ca: Option<&ClientCa>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?;
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(ca.0.clone()),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // rustls's default cache (256 sessions) is allocated up front: ~30 KB for every virtual node.
    config.session_storage = sessions();
    Ok(config)
}

/// The user a verified client certificate names: CN is the user, O entries are the groups.
pub fn user_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    Some(UserInfo {
        name,
        uid: String::new(),
        groups,
        extra: Default::default(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_resolver_swaps() {
        let resolver = CertResolver::self_signed(&["127.0.0.1".into(), "node-a".into()]).unwrap();
        let before = resolver.current();
        let other = CertResolver::self_signed(&["node-b".into()])
            .unwrap()
            .current();
        resolver.set(other.clone());
        assert!(Arc::ptr_eq(&resolver.current(), &other));
        assert!(!Arc::ptr_eq(&resolver.current(), &before));
        assert!(server_config(Arc::new(resolver), None).is_ok());
    }

    #[test]
    fn certificate_identity() {
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:nodes");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let user = user_from_certificate(cert.der()).unwrap();
        assert_eq!(user.name, "system:node:n1");
        assert_eq!(user.groups, vec!["system:nodes"]);
        let ca = ClientCa::from_pem(cert.pem().as_bytes()).unwrap();
        assert!(
            server_config(
                Arc::new(CertResolver::self_signed(&["x".into()]).unwrap()),
                Some(&ca)
            )
            .is_ok()
        );
        assert!(matches!(
            ClientCa::from_pem(b""),
            Err(TlsError::NoCertificate)
        ));
    }
}
