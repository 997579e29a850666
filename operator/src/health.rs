//! Health probes and the HTTP servers behind `--health-probe-bind-address` (`/healthz`, `/readyz`) and
//! `--metrics-bind-address` (`/metrics`).
//!
//! Liveness (`/healthz`) only says the process serves HTTP: a leader that loses its Lease exits by
//! itself, so the kubelet never has to kill a live but stuck operator to restore service. Readiness
//! (`/readyz`) follows [`Readiness`]: a standby is ready once it reached the API (it has nothing to
//! sync, and a never-ready standby would stall rolling updates); the leader is ready once its caches
//! synced and every VirtualNode that existed at sync time was reconciled (its instance started).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// Where the process is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not yet talked to the API.
    Starting,
    /// Waiting for the leader Lease; `reachable` is whether the last election round reached the API.
    Standby { reachable: bool },
    /// Leading; caches syncing or instances starting.
    Syncing,
    /// Leading (or running without election) with caches synced and instances started.
    Running,
    /// Shutting down.
    Stopping,
}

/// Shared readiness state; cheap to clone.
#[derive(Clone)]
pub struct Readiness {
    phase: Arc<Mutex<Phase>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            phase: Arc::new(Mutex::new(Phase::Starting)),
        }
    }
}

impl Readiness {
    pub fn set(&self, phase: Phase) {
        if let Ok(mut p) = self.phase.lock() {
            if *p != phase {
                info!(?phase, "readiness changed");
            }
            *p = phase;
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
            .lock()
            .map(|p| p.clone())
            .unwrap_or(Phase::Starting)
    }

    /// `Ok(detail)` when ready, `Err(reason)` when not.
    pub fn check(&self) -> Result<&'static str, &'static str> {
        match self.phase() {
            Phase::Running => Ok("leader: caches synced, instances started"),
            Phase::Standby { reachable: true } => Ok("standby: waiting for the leader Lease"),
            Phase::Standby { reachable: false } => Err("standby: cannot reach the API"),
            Phase::Starting => Err("starting"),
            Phase::Syncing => Err("leader: caches syncing or instances starting"),
            Phase::Stopping => Err("shutting down"),
        }
    }
}

/// Errors of the probe and metrics servers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(r): State<Readiness>) -> (StatusCode, &'static str) {
    match r.check() {
        Ok(detail) => (StatusCode::OK, detail),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

async fn metrics(State(m): State<Metrics>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}

/// The probe endpoints.
pub fn health_router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(readiness)
}

/// The metrics endpoint.
pub fn metrics_router(m: Metrics) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(m)
}

/// Bind `addr` now (so a taken port fails startup) and serve `router` until `stop`.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(
    what: &'static str,
    addr: SocketAddr,
    router: Router,
    stop: CancellationToken,
) -> Result<SocketAddr, Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    info!(server = what, address = %local, "serving");
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            warn!(server = what, error = %e, "server stopped");
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_by_phase() {
        let r = Readiness::default();
        assert!(r.check().is_err());
        r.set(Phase::Standby { reachable: true });
        assert!(r.check().is_ok());
        r.set(Phase::Standby { reachable: false });
        assert!(r.check().is_err());
        r.set(Phase::Syncing);
        assert!(r.check().is_err());
        r.set(Phase::Running);
        assert!(r.check().is_ok());
        r.set(Phase::Stopping);
        assert!(r.check().is_err());
    }

    #[tokio::test]
    async fn serves_probes_and_metrics() {
        let stop = CancellationToken::new();
        let r = Readiness::default();
        let app = health_router(r.clone()).merge(metrics_router(Metrics::new()));
        let addr = serve("test", "127.0.0.1:0".parse().unwrap(), app, stop.clone())
            .await
            .unwrap();
        let get = |path: &str| {
            let path = path.to_string();
            async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).await.unwrap();
                out
            }
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        r.set(Phase::Running);
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/metrics").await.contains("fleetlet_leader"));
        stop.cancel();
    }
}
