//! A one-shot HTTPS client for a kubelet endpoint, for tests that check the endpoint's own
//! authentication and authorization (no credentials, a certificate from an untrusted CA, a
//! trusted certificate of a denied or allowed user, a bearer token).

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use super::tls::{self, DialError, TlsError};
use crate::pki::Identity;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("HTTP exchange failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("invalid request: {0}")]
    Request(#[from] http::Error),
}

/// The credentials of a [`get`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    pub client_cert: Option<&'a Identity>,
    pub bearer_token: Option<&'a str>,
}

/// `GET path` on the kubelet at `host:port` (serving certificate not verified); the status and
/// body.
pub async fn get(
    host: &str,
    port: u16,
    path: &str,
    creds: Credentials<'_>,
) -> Result<(u16, String), ClientError> {
    let config = Arc::new(tls::client_config(creds.client_cert, None)?);
    let stream = tls::dial(config, host, port).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::get(path).header(header::HOST, tls::join_host_port(host, port));
    if let Some(token) = creds.bearer_token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new())?)
        .await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
