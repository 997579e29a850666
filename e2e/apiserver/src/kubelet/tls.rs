//! TLS towards kubelets (and the PEM helpers `crate::serving` shares), as kube-apiserver dials them: present the kubelet-client certificate and
//! verify the kubelet's serving certificate only when a CA is configured
//! (`--kubelet-certificate-authority`); otherwise accept any certificate, as the default
//! kube-apiserver does. [`dial`] reports failures in Go's wording (`dial tcp ADDR: connect:
//! connection refused`), which ends up in the `Status` messages users see.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::pki::Identity;

/// How long dialling a kubelet (TCP connect + TLS handshake) may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading PEM failed")]
    Pem(#[source] rustls_pki_types::pem::Error),
    #[error("the PEM holds no certificate")]
    NoCertificate,
    #[error("unusable key or certificate")]
    Rustls(#[source] rustls::Error),
    #[error("unusable certificate authority")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
}

/// Why dialling a kubelet failed; `Display` is Go's `net.OpError`/TLS wording.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("dial tcp {addr}: connect: {}", go_io_text(.source))]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("dial tcp {addr}: i/o timeout")]
    Timeout { addr: String },
    #[error("tls: {}", go_io_text(.source))]
    Handshake {
        #[source]
        source: std::io::Error,
    },
}

/// An io::Error as Go prints the corresponding errno (`connection refused`, not
/// `Connection refused (os error 111)`).
pub fn go_io_text(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset by peer".into(),
        HostUnreachable => "no route to host".into(),
        NetworkUnreachable => "network is unreachable".into(),
        _ => {
            let text = e.to_string();
            let text = match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => text,
            }
        }
    }
}

/// The crypto provider of every TLS configuration here (ring).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM bundle as a root store; `NoCertificate` when it holds none.
pub(crate) fn roots(pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots
            .add(cert.map_err(TlsError::Pem)?)
            .map_err(TlsError::Rustls)?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(roots)
}

/// The certificate chain and private key of `id`.
pub(crate) fn chain_and_key(
    id: &Identity,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::Pem)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).map_err(TlsError::Pem)?;
    Ok((chain, key))
}

/// Accepts any server certificate (kube-apiserver without `--kubelet-certificate-authority`),
/// still checking that the peer holds the key it presents.
#[derive(Debug)]
struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A client configuration presenting `identity` (if any) and verifying servers against `ca_pem`
/// (if any; otherwise any server certificate is accepted).
pub fn client_config(
    identity: Option<&Identity>,
    ca_pem: Option<&str>,
) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?;
    let builder = match ca_pem {
        Some(pem) => builder.with_root_certificates(roots(pem)?),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert {
                algorithms: provider.signature_verification_algorithms,
            })),
    };
    let mut config = match identity {
        Some(id) => {
            let (chain, key) = chain_and_key(id)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(TlsError::Rustls)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `host:port`, IPv6 hosts bracketed (Go's `net.JoinHostPort`).
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// TCP connect and TLS handshake to `host:port`, within [`DIAL_TIMEOUT`].
pub async fn dial(
    config: Arc<ClientConfig>,
    host: &str,
    port: u16,
) -> Result<TlsStream<TcpStream>, DialError> {
    let addr = join_host_port(host, port);
    let tcp = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&addr)).await {
        Err(_) => return Err(DialError::Timeout { addr }),
        Ok(Err(source)) => return Err(DialError::Connect { addr, source }),
        Ok(Ok(tcp)) => tcp,
    };
    let _ = tcp.set_nodelay(true);
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.to_string()).map_err(|e| DialError::Handshake {
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?,
    };
    match tokio::time::timeout(DIAL_TIMEOUT, TlsConnector::from(config).connect(name, tcp)).await {
        Err(_) => Err(DialError::Timeout { addr }),
        Ok(Err(source)) => Err(DialError::Handshake { source }),
        Ok(Ok(tls)) => Ok(tls),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn go_wording() {
        let refused = DialError::Connect {
            addr: "127.0.0.1:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(
            refused.to_string(),
            "dial tcp 127.0.0.1:1: connect: connection refused"
        );
        assert_eq!(join_host_port("::1", 10250), "[::1]:10250");
        assert_eq!(join_host_port("10.0.0.1", 10250), "10.0.0.1:10250");
    }

    #[test]
    fn configs() {
        let ca = crate::pki::Ca::generate("ca").unwrap();
        let id = ca.issue("u", &[]).unwrap();
        assert!(client_config(Some(&id), None).is_ok());
        assert!(client_config(None, Some(ca.pem())).is_ok());
        assert!(matches!(
            client_config(None, Some("")),
            Err(TlsError::NoCertificate)
        ));
    }

    #[tokio::test]
    async fn refused_dial() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let config = Arc::new(client_config(None, None).unwrap());
        let err = dial(config, "127.0.0.1", port).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("dial tcp 127.0.0.1:{port}: connect: connection refused")
        );
    }
}
