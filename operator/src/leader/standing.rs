//! Where a leader stands after each renewal round: the pure state machine behind the renew loop.
//!
//! client-go's leader gives up when it has not renewed for the renew deadline. Here that only
//! *fences* it (its writes are held, see [`crate::fence`]): a standby can take over only after the
//! lease duration (longer than the deadline) *and* only by writing the Lease, so a leader that writes
//! nothing from its deadline on and renews before anyone else wrote the Lease was never a second
//! writer. Leadership is lost only when a round shows another holder (or a 409 on our write).

use std::time::{Duration, Instant};

/// How long a fenced leader waits between rounds: short, so it renews (and releases its held writes)
/// right after the API answers again.
pub(crate) const FENCED_PAUSE: Duration = Duration::from_millis(500);

/// A leader's standing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Renewed within the renew deadline: writes pass.
    Leading,
    /// Not renewed for the renew deadline: writes are held until a renewal succeeds.
    Fenced,
    /// Another candidate holds (or wrote) the Lease: stop all work, never write again. Final.
    Lost,
}

/// The outcome of one renewal round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Round {
    /// Our write succeeded; `sent` is when the round began (the server wrote at or after it).
    Renewed { sent: Instant },
    /// The Lease has another holder (or none), or our write got 409 Conflict.
    Taken,
    /// No answer, an error or a timeout: nothing learnt about the holder.
    Failed,
}

/// The renew loop's state.
#[derive(Clone, Debug)]
pub struct Standings {
    /// When the last successful round began. Counting from the start, not the answer, keeps the
    /// deadline conservative: a standby's lease-duration clock starts when it observes our write,
    /// which is never before we sent it.
    last_renewal: Instant,
    renew_deadline: Duration,
    retry_period: Duration,
    standing: Standing,
}

impl Standings {
    /// A leader whose winning round began at `sent`.
    pub fn new(sent: Instant, renew_deadline: Duration, retry_period: Duration) -> Self {
        Self {
            last_renewal: sent,
            renew_deadline,
            retry_period,
            standing: Standing::Leading,
        }
    }

    pub fn standing(&self) -> Standing {
        self.standing
    }

    /// Time left at `now` before the renew deadline fences this leader.
    fn remaining(&self, now: Instant) -> Duration {
        self.renew_deadline
            .saturating_sub(now.saturating_duration_since(self.last_renewal))
    }

    /// How long to wait before the next round: the retry period, but never past the deadline (so the
    /// gate closes on time), and only [`FENCED_PAUSE`] while fenced.
    pub fn pause(&self, now: Instant) -> Duration {
        match self.standing {
            Standing::Leading => self.retry_period.min(self.remaining(now)),
            Standing::Fenced | Standing::Lost => self.retry_period.min(FENCED_PAUSE),
        }
    }

    /// How long a round starting at `now` may take: up to the deadline while leading (a round still
    /// running then counts as failed, and fences); while fenced, half the renew deadline (at least a
    /// retry period): an API slow after an outage still gets the GET and PUT through, and a request
    /// lost on a dead connection is retried soon. Safe at any length: the PUT lands only on the Lease
    /// as read, and a renewal counts from when its round was sent.
    pub fn attempt_timeout(&self, now: Instant) -> Duration {
        match self.standing {
            Standing::Leading => self.remaining(now),
            Standing::Fenced | Standing::Lost => (self.renew_deadline / 2).max(self.retry_period),
        }
    }

    /// Record a round that ended at `now`; returns the new standing.
    pub fn after(&mut self, round: Round, now: Instant) -> Standing {
        self.standing = match (self.standing, round) {
            (Standing::Lost, _) | (_, Round::Taken) => Standing::Lost,
            (_, Round::Renewed { sent }) => {
                self.last_renewal = sent;
                Standing::Leading
            }
            (_, Round::Failed) if self.remaining(now).is_zero() => Standing::Fenced,
            (standing, Round::Failed) => standing,
        };
        self.standing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(10);
    const RETRY: Duration = Duration::from_secs(2);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn failures_fence_only_at_the_deadline_and_a_renewal_unfences() {
        let t0 = Instant::now();
        let mut s = Standings::new(t0, DEADLINE, RETRY);
        assert_eq!(s.after(Round::Failed, t0 + secs(4)), Standing::Leading);
        assert_eq!(s.after(Round::Failed, t0 + secs(9)), Standing::Leading);
        assert_eq!(
            s.pause(t0 + secs(9)),
            secs(1),
            "the last pause ends at the deadline, not after it"
        );
        assert_eq!(s.attempt_timeout(t0 + secs(9)), secs(1));
        assert_eq!(s.after(Round::Failed, t0 + secs(10)), Standing::Fenced);
        // A long outage: still fenced, never lost, retrying quickly.
        assert_eq!(s.after(Round::Failed, t0 + secs(60)), Standing::Fenced);
        assert_eq!(s.pause(t0 + secs(60)), FENCED_PAUSE);
        assert_eq!(s.attempt_timeout(t0 + secs(60)), DEADLINE / 2);
        // The API answers and the Lease is still ours: leading again, deadline counted from then.
        let sent = t0 + secs(61);
        assert_eq!(s.after(Round::Renewed { sent }, sent), Standing::Leading);
        assert_eq!(s.pause(sent), RETRY);
        assert_eq!(s.after(Round::Failed, sent + secs(9)), Standing::Leading);
        assert_eq!(s.after(Round::Failed, sent + secs(10)), Standing::Fenced);
    }

    #[test]
    fn the_deadline_counts_from_when_the_renewal_was_sent() {
        let t0 = Instant::now();
        let mut s = Standings::new(t0, DEADLINE, RETRY);
        // A renewal sent at 1 s that took 3 s to answer.
        let sent = t0 + secs(1);
        s.after(Round::Renewed { sent }, t0 + secs(4));
        assert_eq!(s.after(Round::Failed, t0 + secs(11)), Standing::Fenced);
    }

    #[test]
    fn another_holder_loses_leadership_for_good() {
        let t0 = Instant::now();
        let mut leading = Standings::new(t0, DEADLINE, RETRY);
        assert_eq!(leading.after(Round::Taken, t0 + secs(1)), Standing::Lost);

        let mut fenced = Standings::new(t0, DEADLINE, RETRY);
        fenced.after(Round::Failed, t0 + secs(30));
        assert_eq!(fenced.standing(), Standing::Fenced);
        assert_eq!(fenced.after(Round::Taken, t0 + secs(31)), Standing::Lost);
        let sent = t0 + secs(32);
        assert_eq!(
            fenced.after(Round::Renewed { sent }, sent),
            Standing::Lost,
            "lost is final"
        );
    }
}
