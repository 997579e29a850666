//! A tower layer on the kube clients: counts every API request by verb and status code, and times the
//! virtual nodes' Lease renewals (PUTs in `kube-node-lease`, made by vk-runtime's heartbeat client).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request, Response};
use tower::{Layer, Service};

use super::Metrics;

/// The layer; see the module docs.
#[derive(Clone)]
pub struct MeteredLayer {
    client: &'static str,
    metrics: Metrics,
}

impl MeteredLayer {
    /// Count requests of the client `name` in `metrics`.
    pub fn new(name: &'static str, metrics: Metrics) -> Self {
        Self {
            client: name,
            metrics,
        }
    }
}

impl<S> Layer<S> for MeteredLayer {
    type Service = Metered<S>;
    fn layer(&self, inner: S) -> Metered<S> {
        Metered {
            inner,
            client: self.client,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service the layer wraps around the client's stack.
#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
    client: &'static str,
    metrics: Metrics,
}

impl<S, B, R> Service<Request<B>> for Metered<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let verb = verb(req.method(), req.uri().query().unwrap_or(""));
        let lease_renewal = req.method() == Method::PUT
            && req
                .uri()
                .path()
                .contains("/namespaces/kube-node-lease/leases/");
        let (client, metrics) = (self.client, self.metrics.clone());
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            let code = res.as_ref().map_or(0, |r| r.status().as_u16());
            metrics.api_request(client, verb, code);
            if lease_renewal {
                metrics.node_lease_renewed(started.elapsed(), (200..300).contains(&code));
            }
            res
        })
    }
}

/// The Kubernetes verb as far as the request line tells (GET on a collection and on one object both
/// read as `get`, except watches).
fn verb(method: &Method, query: &str) -> &'static str {
    match *method {
        Method::GET
            if query
                .split('&')
                .any(|kv| kv == "watch=true" || kv == "watch=1") =>
        {
            "watch"
        }
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_from_request_line() {
        assert_eq!(verb(&Method::GET, "watch=true&resourceVersion=1"), "watch");
        assert_eq!(verb(&Method::GET, "labelSelector=a"), "get");
        assert_eq!(verb(&Method::PUT, ""), "update");
        assert_eq!(verb(&Method::PATCH, "fieldManager=x"), "patch");
    }
}
