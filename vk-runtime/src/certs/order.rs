//! The order in which a fleet's certificates are requested: client certificates first.
//!
//! A node can register (and so become Ready) once its client certificate is issued; its serving
//! certificate only lets the API server verify its kubelet endpoint, which serves a self-signed one
//! meanwhile. Both are signed by kube-controller-manager, whose signers share one client with a
//! client-side rate limit (`--kube-api-qps`, 20 by default): while a fleet comes up, every serving CSR
//! signed is a client CSR not yet signed. So a serving CSR waits while any node of the fleet still
//! waits for its first client certificate (at most the CSR approval timeout, so a client CSR that is never
//! approved holds nobody back for long).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Shared by every node identity of a fleet: how many client certificates are being obtained.
#[derive(Clone, Debug, Default)]
pub struct IssueOrder(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    clients: AtomicUsize,
    idle: Notify,
}

/// Held while one client certificate is being obtained.
pub(super) struct ClientTicket(Arc<Inner>);

impl Drop for ClientTicket {
    fn drop(&mut self) {
        if self.0.clients.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl IssueOrder {
    /// Count one client certificate in flight until the ticket is dropped.
    pub(super) fn client(&self) -> ClientTicket {
        self.0.clients.fetch_add(1, Ordering::AcqRel);
        ClientTicket(self.0.clone())
    }

    /// Client certificates in flight now.
    fn clients_in_flight(&self) -> usize {
        self.0.clients.load(Ordering::Acquire)
    }

    /// Wait until no client certificate is in flight, or `at_most`.
    pub(super) async fn clients_done(&self, at_most: Duration) {
        let wait = async {
            loop {
                let idle = self.0.idle.notified();
                tokio::pin!(idle);
                // Registered before the check, so a ticket dropped in between still wakes us.
                idle.as_mut().enable();
                if self.clients_in_flight() == 0 {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(at_most, wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn no_client_in_flight_means_no_wait() {
        let order = IssueOrder::default();
        let start = Instant::now();
        order.clients_done(Duration::from_secs(60)).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_the_last_client_ticket() {
        let order = IssueOrder::default();
        let (a, b) = (order.client(), order.client());
        assert_eq!(order.clients_in_flight(), 2);
        let start = Instant::now();
        let waiter = tokio::spawn({
            let order = order.clone();
            async move { order.clients_done(Duration::from_secs(60)).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(a);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished(), "one client still in flight");
        drop(b);
        waiter.await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(order.clients_in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_client_holds_back_at_most_the_bound() {
        let order = IssueOrder::default();
        let _stuck = order.client();
        let start = Instant::now();
        order.clients_done(Duration::from_secs(30)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }
}
