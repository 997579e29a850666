//! HTTPS serving: a serving certificate for `127.0.0.1`/`localhost` signed by the cluster CA, a
//! rustls configuration that requests (never requires) a client certificate, and an axum
//! [`Listener`] that hands over connections once their handshake is done. Handshakes run
//! concurrently, off the accept loop, so a stalled client cannot hold up others; each
//! connection's [`Peer`] (its verified client identity, if any) reaches every request on it as
//! `ConnectInfo<Peer>`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::authn::{ClientCertAuthenticator, Peer};
use crate::kubelet::tls::{TlsError, chain_and_key, provider};
use crate::pki::{Ca, CertError, Identity};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    #[error("issuing the serving certificate failed")]
    Cert(#[from] CertError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The apiserver's serving certificate, signed by `ca`.
pub fn serving_identity(ca: &Ca) -> Result<Identity, CertError> {
    ca.issue_serving(
        "fleetlet-test-apiserver",
        &["localhost"],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
    )
}

/// Requests a client certificate and checks the handshake signature (the peer holds the key),
/// but leaves trusting the chain to [`ClientCertAuthenticator::authenticate`].
#[derive(Debug)]
struct RequestClientCert(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The server configuration: `identity` as serving certificate, client certificates optional.
pub fn server_config(
    identity: &Identity,
    authn: &ClientCertAuthenticator,
) -> Result<ServerConfig, TlsError> {
    let (chain, key) = chain_and_key(identity)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?
        .with_client_cert_verifier(Arc::new(RequestClientCert(authn.verifier())))
        .with_single_cert(chain, key)
        .map_err(TlsError::Rustls)?;
    // HTTP/1.1 only: SPDY and WebSocket upgrades (exec, attach, port-forward) need it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Connections whose TLS handshake completed, for `axum::serve`.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
}

impl TlsListener {
    /// Accepts on `tcp` and handshakes each connection on its own task; the returned task is
    /// the accept loop (abort it to stop accepting).
    pub fn start(
        tcp: TcpListener,
        config: Arc<ServerConfig>,
        authn: Arc<ClientCertAuthenticator>,
    ) -> std::io::Result<(TlsListener, JoinHandle<()>)> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            loop {
                let (stream, addr) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "accept");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, authn, tx) = (acceptor.clone(), authn.clone(), tx.clone());
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, peer = %addr, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %addr, "TLS handshake timed out");
                            return;
                        }
                    };
                    let cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .map(|chain| authn.authenticate(chain));
                    let peer = Peer {
                        addr: Some(addr),
                        cert,
                    };
                    let _ = tx.send((tls, peer)).await;
                });
            }
        });
        Ok((TlsListener { local, ready }, task))
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop is gone (shutdown): never yield another connection.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: Some(self.local),
            cert: None,
        })
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}
