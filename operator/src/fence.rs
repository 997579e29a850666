//! The process-wide write gate that fences a leader which cannot prove it still holds the election
//! Lease.
//!
//! A leader that has not renewed its Lease for the renew deadline does not know whether a standby
//! will take over, but it does know no standby can before the lease duration has passed since the
//! last renewal. So instead of stopping its work (and its nodes) on a mere API outage, it closes this
//! gate: from then on no write of any of its clients (main, heartbeat, node identities: all built
//! by [`crate::metrics::stack`]) leaves the process. Reads and watches pass, so caches stay warm.
//! When a renewal succeeds the gate opens and the held writes go out at once (node Lease renewals
//! first of all: the heartbeat is blocked on them). A write still in flight when the gate closes is
//! abandoned, retries included (the layer sits above kube-rs's retry layer). When the election finds
//! another holder the gate is *lost*: held and later writes fail, and never go out.
//!
//! The election's own requests use a client without this layer; so do requests that change nothing
//! (TokenReview, SubjectAccessReview: the kubelet endpoints' authentication).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use http::{Method, Request};
use tokio::sync::watch;
use tower::{BoxError, Layer, Service, ServiceExt as _};

/// Where the gate stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateState {
    /// Writes pass.
    Open,
    /// Writes wait until the gate opens (or is lost).
    Closed,
    /// Leadership is gone: writes fail, now and forever.
    Lost,
}

/// A write held at a gate that was then lost: the request never left the process.
#[derive(Debug, thiserror::Error)]
#[error("write refused: this process is no longer the leader")]
pub struct Fenced;

/// The gate; clones share it.
#[derive(Clone, Debug)]
pub struct WriteGate {
    state: Arc<watch::Sender<GateState>>,
    /// Set on shutdown: closing then refuses writes instead of holding them.
    stopping: Arc<AtomicBool>,
}

impl Default for WriteGate {
    fn default() -> Self {
        Self::new()
    }
}

impl WriteGate {
    /// An open gate.
    pub fn new() -> Self {
        Self {
            state: Arc::new(watch::Sender::new(GateState::Open)),
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn state(&self) -> GateState {
        *self.state.borrow()
    }

    /// Let writes pass (held ones go out now). No effect once lost.
    pub fn open(&self) {
        self.set(GateState::Open);
    }

    /// Hold writes until [`WriteGate::open`] (refuse them once [`WriteGate::shutting_down`]). No
    /// effect once lost.
    pub fn close(&self) {
        self.set(GateState::Closed);
        // Set, then check, as `shutting_down` does the other way round: one of them sees the other.
        if self.stopping.load(Ordering::SeqCst) {
            self.lose();
        }
    }

    /// The process is stopping: a closed gate (now or later) refuses writes instead of holding them,
    /// so a fenced leader's shutdown does not wait for the API on writes it would drop anyway.
    pub fn shutting_down(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if self.state() == GateState::Closed {
            self.lose();
        }
    }

    /// Refuse every held and later write, for good.
    pub fn lose(&self) {
        self.set(GateState::Lost);
    }

    fn set(&self, to: GateState) {
        self.state.send_if_modified(|s| {
            let change = *s != to && *s != GateState::Lost;
            if change {
                *s = to;
            }
            change
        });
    }

    /// Resolves once the gate is no longer open (closed or lost).
    async fn shut(&self) {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|s| *s != GateState::Open).await;
    }

    /// Wait until writes may pass.
    ///
    /// # Errors
    /// [`Fenced`] when the gate is (or becomes) lost.
    pub async fn passable(&self) -> Result<(), Fenced> {
        let mut rx = self.state.subscribe();
        match rx.wait_for(|s| *s != GateState::Closed).await {
            Ok(s) if *s == GateState::Open => Ok(()),
            _ => Err(Fenced),
        }
    }
}

/// Whether a request changes nothing on the server and may pass a closed gate.
fn is_read<B>(req: &Request<B>) -> bool {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    // Reviews are POSTs that only ask a question.
    let path = req.uri().path();
    path.starts_with("/apis/authentication.k8s.io/")
        || path.starts_with("/apis/authorization.k8s.io/")
}

/// The tower layer holding a client's writes at a [`WriteGate`].
#[derive(Clone, Debug)]
pub struct GateLayer {
    gate: WriteGate,
}

impl GateLayer {
    pub fn new(gate: WriteGate) -> Self {
        Self { gate }
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = Gated<S>;
    fn layer(&self, inner: S) -> Gated<S> {
        Gated {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// The service [`GateLayer`] wraps around a client's stack.
#[derive(Clone, Debug)]
pub struct Gated<S> {
    inner: S,
    gate: WriteGate,
}

impl<S, B> Service<Request<B>> for Gated<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if is_read(&req) {
            let fut = self.inner.call(req);
            return Box::pin(async move { fut.await.map_err(Into::into) });
        }
        // A write waits while the gate is closed, and is abandoned (its connection dropped, the
        // retries below it stopped) if the gate closes while it is in flight: once fenced, no write
        // of ours is still on its way except bytes already in the kernel, which the margin between
        // renew deadline and lease duration covers (as for client-go). The held write takes an
        // unreadied clone and readies it once it may go: a readied one would keep its capacity
        // below (a request buffer's slot) for as long as the gate stays closed, and enough held
        // writes would stall the reads behind them.
        let inner = self.inner.clone();
        let gate = self.gate.clone();
        Box::pin(async move {
            gate.passable().await?;
            tokio::select! {
                res = inner.oneshot(req) => res.map_err(Into::into),
                () = gate.shut() => Err(Fenced.into()),
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A server stand-in counting the requests that reached it.
    #[derive(Clone, Default)]
    struct Counting(Arc<AtomicUsize>);

    impl Service<Request<()>> for Counting {
        type Response = &'static str;
        type Error = Infallible;
        type Future = std::future::Ready<Result<&'static str, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<()>) -> Self::Future {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok("ok"))
        }
    }

    fn counting() -> (Arc<AtomicUsize>, Counting) {
        let svc = Counting::default();
        (svc.0.clone(), svc)
    }

    fn req(method: Method, path: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap()
    }

    const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n0";

    #[tokio::test]
    async fn writes_wait_while_closed_and_go_out_when_opened() {
        let gate = WriteGate::new();
        let (hits, svc) = counting();
        let gated = GateLayer::new(gate.clone()).layer(svc);
        gate.close();
        let held = tokio::spawn(gated.clone().oneshot(req(Method::PUT, LEASE)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(hits.load(Ordering::SeqCst), 0, "a write waits while closed");
        assert!(!held.is_finished());

        // Reads and reviews pass a closed gate.
        gated
            .clone()
            .oneshot(req(Method::GET, LEASE))
            .await
            .unwrap();
        let review = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
        gated
            .clone()
            .oneshot(req(Method::POST, review))
            .await
            .unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 2);

        gate.open();
        let answer = tokio::time::timeout(Duration::from_secs(1), held).await;
        assert_eq!(
            answer.unwrap().unwrap().unwrap(),
            "ok",
            "the held write went out"
        );
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn held_writes_keep_no_capacity_below_the_gate() {
        let gate = WriteGate::new();
        let (hits, svc) = counting();
        // One slot of request buffer below the gate (a client with a proxy has such a buffer).
        let gated = GateLayer::new(gate.clone()).layer(tower::buffer::Buffer::new(svc, 1));
        gate.close();
        let held: Vec<_> = (0..3)
            .map(|_| tokio::spawn(gated.clone().oneshot(req(Method::PUT, LEASE))))
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let read = gated.clone().oneshot(req(Method::GET, LEASE));
        let answer = tokio::time::timeout(Duration::from_secs(1), read).await;
        assert!(
            answer.is_ok_and(|r| r.is_ok()),
            "a read passes while writes are held"
        );
        gate.open();
        for h in held {
            let answer = tokio::time::timeout(Duration::from_secs(1), h).await;
            assert!(answer.unwrap().unwrap().is_ok(), "the held write went out");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_lost_gate_refuses_held_and_later_writes_for_good() {
        let gate = WriteGate::new();
        let (hits, svc) = counting();
        let gated = GateLayer::new(gate.clone()).layer(svc);
        gate.close();
        let held = tokio::spawn(gated.clone().oneshot(req(Method::POST, "/api/v1/nodes")));
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.lose();
        let err = held.await.unwrap().unwrap_err();
        assert!(err.is::<Fenced>(), "{err}");
        gate.open(); // too late: lost is final
        assert_eq!(gate.state(), GateState::Lost);
        let err = gated
            .clone()
            .oneshot(req(Method::DELETE, "/api/v1/nodes/n0"))
            .await
            .unwrap_err();
        assert!(err.is::<Fenced>(), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 0, "no write left the process");
    }

    #[tokio::test]
    async fn a_write_in_flight_when_the_gate_closes_is_abandoned() {
        let gate = WriteGate::new();
        let hung =
            tower::service_fn(|_req: Request<()>| std::future::pending::<Result<(), Infallible>>());
        let gated = GateLayer::new(gate.clone()).layer(hung);
        let write = tokio::spawn(gated.clone().oneshot(req(Method::PUT, LEASE)));
        let read = tokio::spawn(gated.oneshot(req(Method::GET, LEASE)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.close();
        let err = tokio::time::timeout(Duration::from_secs(1), write)
            .await
            .expect("abandoned at once")
            .unwrap()
            .unwrap_err();
        assert!(err.is::<Fenced>(), "{err}");
        assert!(!read.is_finished(), "reads are not abandoned");
        read.abort();
    }

    #[tokio::test]
    async fn shutting_down_refuses_held_writes_but_leaves_an_open_gate_open() {
        let open = WriteGate::new();
        open.shutting_down();
        assert_eq!(
            open.state(),
            GateState::Open,
            "a healthy leader shuts down normally"
        );
        open.close();
        assert_eq!(
            open.state(),
            GateState::Lost,
            "fenced while stopping: refuse"
        );

        let gate = WriteGate::new();
        let (hits, svc) = counting();
        let gated = GateLayer::new(gate.clone()).layer(svc);
        gate.close();
        let held = tokio::spawn(gated.clone().oneshot(req(Method::PATCH, LEASE)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.shutting_down();
        let err = held.await.unwrap().unwrap_err();
        assert!(err.is::<Fenced>(), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 0);
    }
}
