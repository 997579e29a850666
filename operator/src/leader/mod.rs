//! Leader election on a `coordination.k8s.io/v1` Lease in the operator namespace, with client-go's
//! semantics for acquiring: only the holder runs controllers and virtual kubelets.
//!
//! - Every write is a PUT carrying the resourceVersion it read (or a create when there is no Lease), so
//!   two candidates can never both win the same round: the loser gets 409 Conflict.
//! - A candidate considers the Lease expired `lease_duration` after it *observed* the record change, on
//!   its own clock (no clock-skew assumption, as client-go).
//! - The holder renews every `retry_period`. Unlike client-go, a holder that has not renewed for
//!   `renew_deadline` does not give up: it is *fenced* ([`standing`]): the process-wide write gate
//!   ([`crate::fence`]) closes, so none of its clients writes, while it keeps trying every
//!   [`standing::FENCED_PAUSE`]. A renewal reopens the gate. `renew_deadline < lease_duration` is what
//!   makes "never two writers" hold: the fenced leader has stopped writing before any standby may take
//!   over, and a standby takes over only by writing the Lease, which the old leader then sees.
//! - Leadership is lost, for good, only when a round shows another holder (or no holder: someone else
//!   wrote the Lease since we did) or our write gets 409 Conflict: the gate is then lost (held writes
//!   fail) and all work stops. So an API outage of any length never stops the nodes: they renew as
//!   soon as the API answers, unless a standby that could still reach it took over meanwhile.
//! - On a planned shutdown the holder, after its work has stopped, releases the Lease (empty holder) so a
//!   standby takes over at its next retry instead of waiting for expiry.
//!
//! kube-lease-manager tracks kube 5 but has no renew deadline (a holder that cannot renew keeps believing
//! it leads, and writes) and whole-second timing, so the election is implemented here directly.

pub mod standing;

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::fence::WriteGate;
use crate::metrics::Metrics;
use standing::{Round, Standing, Standings};

/// Timing and identity of the election.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub namespace: String,
    /// Name of the Lease (the election id).
    pub name: String,
    /// Unique per process: `<pod name or host>_<random>`.
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// Errors of one election round.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("lease API: {0}")]
    Kube(#[source] kube::Error),
    #[error("lease request timed out")]
    Timeout,
    #[error("renew task failed: {0}")]
    Join(#[source] tokio::task::JoinError),
    #[error("invalid leader election timing: {0}")]
    Timing(&'static str),
}

impl LeaderConfig {
    /// client-go's constraints: `lease_duration > renew_deadline > retry_period`.
    ///
    /// # Errors
    /// When the durations do not leave the old leader time to stop before a standby takes over.
    pub fn validate(&self) -> Result<(), Error> {
        if self.lease_duration <= self.renew_deadline {
            return Err(Error::Timing(
                "lease duration must exceed the renew deadline",
            ));
        }
        if self.renew_deadline <= self.retry_period {
            return Err(Error::Timing("renew deadline must exceed the retry period"));
        }
        Ok(())
    }
}

/// Identity for this process: the pod name (or hostname) plus a random suffix, as client-go does.
pub fn default_identity() -> String {
    use rand::Rng;
    let host = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "fleetlet".into());
    let suffix: u64 = rand::rng().random();
    format!("{host}_{suffix:016x}")
}

/// The last Lease record seen and when it was seen to change.
struct Observed {
    lease: Lease,
    at: Instant,
}

/// A candidate for leadership.
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaderConfig,
    observed: Option<Observed>,
    metrics: Metrics,
    /// The gate this elector closes while fenced; its own `client` must not be behind it.
    gate: WriteGate,
    /// Set once this process won: from then on any other holder means leadership is lost.
    leading: bool,
}

impl Elector {
    /// A candidate electing through `client` (which must bypass `gate`) that fences its process
    /// by closing `gate`.
    pub fn new(client: Client, cfg: LeaderConfig, metrics: Metrics, gate: WriteGate) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
            metrics,
            gate,
            leading: false,
        }
    }

    /// Try every retry period until this process holds the Lease; `None` when `stop` fired first.
    /// `on_round` is told after each round whether the API answered (for readiness).
    pub async fn acquire(
        mut self,
        stop: &CancellationToken,
        on_round: impl Fn(bool),
    ) -> Option<Leading> {
        info!(lease = %self.cfg.name, namespace = %self.cfg.namespace, identity = %self.cfg.identity, "waiting for leadership");
        let won = loop {
            let sent = Instant::now();
            match self.round().await {
                Ok(true) => break sent,
                Ok(false) => on_round(true),
                Err(e) => {
                    on_round(false);
                    debug!(error = %e, "leader election round failed");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(self.cfg.retry_period) => {}
            }
        };
        info!(identity = %self.cfg.identity, "became the leader");
        self.leading = true;
        self.metrics.set_leader(true);
        self.gate.open();
        let lost = CancellationToken::new();
        let quit = CancellationToken::new();
        let standings = Standings::new(won, self.cfg.renew_deadline, self.cfg.retry_period);
        let task = tokio::spawn(renew_loop(self, standings, lost.clone(), quit.clone()));
        Some(Leading { lost, quit, task })
    }

    /// One attempt to acquire or renew, bounded by the renew deadline. `Ok(true)`: this process holds it.
    async fn round(&mut self) -> Result<bool, Error> {
        let deadline = self.cfg.renew_deadline;
        tokio::time::timeout(deadline, self.try_acquire_or_renew())
            .await
            .map_err(|_| Error::Timeout)?
    }

    async fn try_acquire_or_renew(&mut self) -> Result<bool, Error> {
        let now = Timestamp::now();
        let Some(current) = self
            .api
            .get_opt(&self.cfg.name)
            .await
            .map_err(Error::Kube)?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.record(None, now)),
            };
            let created = self.api.create(&PostParams::default(), &lease).await;
            if matches!(&created, Err(kube::Error::Api(s)) if s.code == 404) {
                // The operator namespace does not exist (a `fleetlet run` outside the chart): create it
                // when allowed, else say what to do. The chart always creates it.
                ensure_namespace(self.api.clone().into_client(), &self.cfg.namespace).await;
                return self.write(self.api.create(&PostParams::default(), &lease).await);
            }
            return self.write(created);
        };
        let spec = current.spec.clone().unwrap_or_default();
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|o| o.lease.metadata.resource_version != current.metadata.resource_version);
        if changed {
            self.observed = Some(Observed {
                lease: current.clone(),
                at: Instant::now(),
            });
        }
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        let mine = holder == self.cfg.identity;
        if self.leading && !mine {
            // Someone else wrote the Lease since we did (identities are unique per process): even
            // an empty holder means another replica led and released meanwhile.
            return Ok(false);
        }
        let run_out = self.observed.as_ref().is_none_or(|o| expired(&spec, o.at));
        if !mine && !holder.is_empty() && !run_out {
            return Ok(false);
        }
        let mut lease = current;
        lease.spec = Some(self.record(Some(&spec), now));
        let result = self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await;
        self.write(result)
    }

    /// Interpret a create/replace: success records what we wrote, 409 means someone else won the round.
    fn write(&mut self, result: Result<Lease, kube::Error>) -> Result<bool, Error> {
        match result {
            Ok(lease) => {
                self.observed = Some(Observed {
                    lease,
                    at: Instant::now(),
                });
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(Error::Kube(e)),
        }
    }

    /// The record this process writes.
    fn record(&self, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
        lease_record(&self.cfg.identity, self.cfg.lease_duration, previous, now)
    }

    /// Give the Lease up (empty holder, 1 s duration), as client-go's ReleaseOnCancel. Only when we hold it.
    async fn release(&mut self) -> Result<(), Error> {
        let Some(observed) = self.observed.as_ref() else {
            return Ok(());
        };
        let spec = observed.lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(&self.cfg.identity) {
            return Ok(());
        }
        let now = Timestamp::now();
        let mut lease = observed.lease.clone();
        lease.spec = Some(released_record(&spec, now));
        let pp = PostParams::default();
        let put = self.api.replace(&self.cfg.name, &pp, &lease);
        tokio::time::timeout(self.cfg.retry_period, put)
            .await
            .map_err(|_| Error::Timeout)?
            .map_err(Error::Kube)?;
        info!(identity = %self.cfg.identity, "released the leader lease");
        Ok(())
    }
}

/// Create the operator namespace; warn clearly when that is not allowed.
pub(crate) async fn ensure_namespace(client: Client, namespace: &str) {
    use k8s_openapi::api::core::v1::Namespace;
    let api: Api<Namespace> = Api::all(client);
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => info!(namespace, "created the operator namespace"),
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => warn!(
            namespace,
            error = %e,
            "the operator namespace does not exist and cannot be created: create it, pass --namespace, or run with --leader-elect=false"
        ),
    }
}

/// The record `identity` writes to hold a Lease: renewing keeps acquireTime, taking over counts a
/// transition (client-go's LeaderElectionRecord rules).
pub(crate) fn lease_record(
    identity: &str,
    duration: Duration,
    previous: Option<&LeaseSpec>,
    now: Timestamp,
) -> LeaseSpec {
    let held = previous.is_some_and(|p| p.holder_identity.as_deref() == Some(identity));
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX)),
        acquire_time: if held {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if held || previous.is_none() {
            transitions
        } else {
            transitions + 1
        }),
        ..LeaseSpec::default()
    }
}

/// The spec of a released Lease: no holder, 1 s duration (client-go's ReleaseOnCancel).
pub(crate) fn released_record(previous: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: previous.lease_transitions,
        ..LeaseSpec::default()
    }
}

/// Whether a Lease observed (changed) at `observed_at` has run out on this process's clock.
pub(crate) fn expired(spec: &LeaseSpec, observed_at: Instant) -> bool {
    let secs = spec.lease_duration_seconds.unwrap_or(0).max(0);
    observed_at.elapsed() >= Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// Renew every retry period; fence (close the gate) when no renewal succeeded for the renew deadline,
/// unfence on the next renewal, and give up (lose the gate, cancel `lost`) only when another candidate
/// holds the Lease.
async fn renew_loop(
    mut el: Elector,
    mut standings: Standings,
    lost: CancellationToken,
    quit: CancellationToken,
) -> Elector {
    loop {
        tokio::select! {
            () = quit.cancelled() => return el,
            () = tokio::time::sleep(standings.pause(Instant::now())) => {}
        }
        let sent = Instant::now();
        let limit = standings.attempt_timeout(sent);
        let attempt = tokio::time::timeout(limit, el.try_acquire_or_renew()).await;
        let round = match attempt {
            Ok(Ok(true)) => Round::Renewed { sent },
            Ok(Ok(false)) => {
                warn!("the leader lease was taken by another candidate");
                Round::Taken
            }
            Ok(Err(e)) => {
                debug!(error = %e, "renewing the leader lease failed");
                Round::Failed
            }
            Err(_) => {
                debug!(timeout = ?limit, "renewing the leader lease timed out");
                Round::Failed
            }
        };
        if round != (Round::Renewed { sent }) {
            el.metrics.leader_renew_failed();
        }
        let before = standings.standing();
        match (before, standings.after(round, Instant::now())) {
            (Standing::Leading, Standing::Fenced) => {
                warn!(
                    deadline = ?el.cfg.renew_deadline,
                    "could not renew the leader lease in time: holding every write until it is renewed"
                );
                el.gate.close();
                el.metrics.set_leader_fenced(true);
            }
            (Standing::Fenced, Standing::Leading) => {
                info!("renewed the leader lease: writes resume");
                el.gate.open();
                el.metrics.set_leader_fenced(false);
            }
            (_, Standing::Lost) => {
                warn!("leadership lost: stopping all work");
                el.gate.lose();
                el.metrics.set_leader(false);
                el.metrics.set_leader_fenced(false);
                lost.cancel();
                el.observed = None; // never release a lease we no longer hold
                quit.cancelled().await;
                return el;
            }
            _ => {}
        }
    }
}

/// Held leadership: watch [`Leading::lost`]; call [`Leading::release`] after the guarded work stopped.
pub struct Leading {
    lost: CancellationToken,
    quit: CancellationToken,
    task: JoinHandle<Elector>,
}

impl Leading {
    /// Cancelled when another candidate took the Lease (the write gate is then lost too).
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Stop renewing and, unless leadership was already lost, release the Lease. Call only after every
    /// guarded writer stopped.
    ///
    /// # Errors
    /// When the release write fails; the Lease then simply expires.
    pub async fn release(self) -> Result<(), Error> {
        self.quit.cancel();
        let mut el = self.task.await.map_err(Error::Join)?;
        el.metrics.set_leader(false);
        if self.lost.is_cancelled() {
            return Ok(());
        }
        el.release().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(l: u64, d: u64, r: u64) -> LeaderConfig {
        LeaderConfig {
            namespace: "ns".into(),
            name: "fleetlet".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(l),
            renew_deadline: Duration::from_secs(d),
            retry_period: Duration::from_secs(r),
        }
    }

    #[test]
    fn timing_is_validated() {
        assert!(cfg(15, 10, 2).validate().is_ok());
        assert!(cfg(10, 10, 2).validate().is_err());
        assert!(cfg(15, 2, 2).validate().is_err());
    }

    #[test]
    fn identity_is_unique_per_process() {
        assert_ne!(default_identity(), default_identity());
    }
}
