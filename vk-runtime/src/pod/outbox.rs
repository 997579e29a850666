//! The one pod status a worker still has to write, and when: the coalescing step between backend reports
//! and status patches.
//!
//! A backend that starts a pod at once reports several states within milliseconds (ContainerCreating,
//! sandbox ready, Running). Patching each one costs an API write per state, every one already stale when
//! it lands. So a status a pod can stay in for long ([`settled`]: Ready, or finished) is written at once,
//! while an intermediate one (Pending, Running but not Ready) waits up to [`COALESCE`] for a newer report
//! to replace it. The wait starts at the first held status and is not extended by later ones, so a pod
//! that keeps changing still has its status written at least every [`COALESCE`]. Pure: times are
//! arguments.

use std::time::Duration;

use k8s_openapi::api::core::v1::PodStatus;
use tokio::time::Instant;

/// Longest an intermediate status waits for a newer one before it is written anyway.
pub const COALESCE: Duration = Duration::from_millis(200);

/// Delay before re-sending a status whose patch failed (the API may be down).
pub const STATUS_RETRY: Duration = Duration::from_secs(2);

/// Whether a pod can stay in `status` for long, so it should be reported without waiting: Ready (phase
/// Running, Ready condition True) or finished (Succeeded, Failed).
pub fn settled(status: &PodStatus) -> bool {
    match status.phase.as_deref() {
        Some("Succeeded" | "Failed") => true,
        Some("Running") => status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        _ => false,
    }
}

/// At most one status waiting to be written, with the time it is due.
#[derive(Debug, Default)]
pub struct Outbox {
    pending: Option<(PodStatus, Instant)>,
}

impl Outbox {
    /// A newer status from the backend replaces any unwritten one. Settled: due now. Intermediate: due
    /// when the held one was (or [`COALESCE`] from now when nothing was held).
    pub fn put(&mut self, status: PodStatus, now: Instant) {
        let due = if settled(&status) {
            now
        } else {
            self.due().unwrap_or(now + COALESCE)
        };
        self.pending = Some((status, due));
    }

    /// A status whose patch failed: try again after [`STATUS_RETRY`] unless a newer one comes first.
    pub fn retry(&mut self, status: PodStatus, now: Instant) {
        self.pending = Some((status, now + STATUS_RETRY));
    }

    /// When the held status is due, if one is held.
    pub fn due(&self) -> Option<Instant> {
        self.pending.as_ref().map(|(_, at)| *at)
    }

    /// The held status if it is due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Option<PodStatus> {
        if self.due().is_some_and(|at| at <= now) {
            self.pending.take().map(|(s, _)| s)
        } else {
            None
        }
    }

    /// A status was written: anything still held is older and must not follow it.
    pub fn clear(&mut self) {
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(phase: &str, ready: bool) -> PodStatus {
        serde_json::from_value(serde_json::json!({
            "phase": phase,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
        }))
        .unwrap()
    }

    #[test]
    fn settled_means_ready_or_finished() {
        assert!(settled(&status("Running", true)));
        assert!(!settled(&status("Running", false)));
        assert!(!settled(&status("Pending", false)));
        assert!(settled(&status("Succeeded", false)));
        assert!(settled(&status("Failed", false)));
        assert!(!settled(&PodStatus::default()));
    }

    #[test]
    fn intermediate_states_are_replaced_by_the_final_one_before_any_write() {
        let t0 = Instant::now();
        let mut out = Outbox::default();
        out.put(status("Pending", false), t0);
        assert_eq!(out.take_due(t0), None, "an intermediate status waits");
        out.put(status("Pending", false), t0 + Duration::from_millis(5));
        out.put(status("Running", true), t0 + Duration::from_millis(10));
        let written = out.take_due(t0 + Duration::from_millis(10));
        assert_eq!(
            written,
            Some(status("Running", true)),
            "settled: due at once"
        );
        assert_eq!(out.due(), None, "one write for the three reports");
    }

    #[test]
    fn a_pod_that_keeps_changing_is_still_reported_every_coalesce_window() {
        let t0 = Instant::now();
        let mut out = Outbox::default();
        out.put(status("Pending", false), t0);
        // Later intermediate reports do not push the first one's deadline out.
        out.put(status("Running", false), t0 + COALESCE / 2);
        assert_eq!(out.due(), Some(t0 + COALESCE));
        assert_eq!(out.take_due(t0 + COALESCE / 2), None);
        assert_eq!(
            out.take_due(t0 + COALESCE),
            Some(status("Running", false)),
            "the newest held status is written when the window ends"
        );
    }

    #[test]
    fn a_failed_write_is_retried_later_unless_a_newer_status_comes() {
        let t0 = Instant::now();
        let mut out = Outbox::default();
        out.retry(status("Running", true), t0);
        assert_eq!(out.take_due(t0 + Duration::from_secs(1)), None);
        assert_eq!(
            out.take_due(t0 + STATUS_RETRY),
            Some(status("Running", true))
        );
        out.retry(status("Running", true), t0);
        out.put(status("Failed", false), t0 + Duration::from_millis(1));
        assert_eq!(
            out.take_due(t0 + Duration::from_millis(1)),
            Some(status("Failed", false))
        );
        out.put(status("Pending", false), t0);
        out.clear();
        assert_eq!(out.due(), None);
    }
}
