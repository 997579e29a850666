//! Test helpers: an HTTPS/1.1 client (hyper-util + rustls, verifying the server against the
//! cluster CA, optionally presenting a client certificate) for raw requests and watch streams, and
//! a deadline-bounded poll.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use fleetlet_test_apiserver::TestApiServer;
use fleetlet_test_apiserver::kubelet::Identity;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Where and as whom raw requests go.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    client: HttpClient,
}

impl Api {
    /// The server's URL, trusting its CA, without client certificate (the admin).
    pub fn of(s: &TestApiServer) -> Api {
        Api::with(s, None)
    }

    /// As [`Api::of`], presenting `identity`'s client certificate.
    pub fn as_identity(s: &TestApiServer, identity: &Identity) -> Api {
        Api::with(s, Some(identity))
    }

    fn with(s: &TestApiServer, identity: Option<&Identity>) -> Api {
        let mut tls =
            fleetlet_test_apiserver::kubelet::tls::client_config(identity, Some(&s.ca_pem()))
                .unwrap();
        tls.alpn_protocols.clear(); // the connector sets them

        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Api {
            base: s.url(),
            client: Client::builder(TokioExecutor::new()).build(https),
        }
    }
}

/// One request; returns status and the JSON body (Null when not JSON).
pub async fn call(
    api: &Api,
    method: &str,
    path: &str,
    ct: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let mut b = http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", api.base));
    if let Some(ct) = ct {
        b = b.header("content-type", ct);
    }
    let req = b
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    let resp = api.client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

pub async fn get(api: &Api, path: &str) -> (u16, Value) {
    call(api, "GET", path, None, None).await
}

pub async fn send_json(
    api: &Api,
    method: &str,
    path: &str,
    ct: &str,
    body: &Value,
) -> (u16, Value) {
    call(
        api,
        method,
        path,
        Some(ct),
        Some(serde_json::to_vec(body).unwrap()),
    )
    .await
}

/// An open watch stream.
pub struct Watch {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
    pub ended: bool,
}

pub async fn watch(api: &Api, path: &str) -> (u16, Watch) {
    let req = http::Request::builder()
        .uri(format!("{}{path}", api.base))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = api.client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    (
        status,
        Watch {
            body: resp.into_body(),
            buf: Vec::new(),
            ended: false,
        },
    )
}

impl Watch {
    /// The next event, or None at end of stream or after `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return serde_json::from_slice(&line).ok();
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => return None,
                Ok(None) => self.ended = true,
                Ok(Some(Err(_))) => self.ended = true,
                Ok(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        self.buf.extend_from_slice(&d);
                    }
                }
            }
        }
    }

    /// Events (BOOKMARKs skipped) until `n` arrived, the stream ended or `wait` passed.
    pub async fn collect(&mut self, n: usize, wait: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(e) if e["type"] == "BOOKMARK" => {}
                Some(e) => out.push(e),
                None => break,
            }
        }
        out
    }
}

/// Polls `f` until it yields Some or `wait` passes.
pub async fn eventually<T, F, Fut>(wait: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
