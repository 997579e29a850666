//! The shard Leases on the API: one round every retry period (one list, a write per held shard and one
//! for the member Lease), deadlines enforced after every round whether or not the API answered.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetlet_crds::consts::{LABEL_LEASE_ROLE, LABEL_SHARD_GROUP, LABEL_SHARDS};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

mod members;

use super::{Ownership, ShardView, plan, shard_of};
use crate::leader::{expired, lease_record, released_record};
use crate::metrics::Metrics;

const ROLE_SHARD: &str = "shard";
const ROLE_MEMBER: &str = "member";

/// Identity, names and timing of the shard Leases.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    pub namespace: String,
    /// Prefix of the Lease names and value of [`LABEL_SHARD_GROUP`] (the leader election id).
    pub group: String,
    pub shards: u32,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl ShardConfig {
    fn shard_lease(&self, index: u32) -> String {
        format!("{}-shard-{index}", self.group)
    }

    fn member_lease(&self) -> String {
        // The identity may be long or hold characters a name cannot: name the Lease by its hash.
        format!(
            "{}-member-{:08x}",
            self.group,
            shard_of(&self.identity, u32::MAX)
        )
    }
}

/// What the manager calls as shards come and go.
pub struct Hooks {
    /// A shard was taken: reconcile its objects.
    pub gained: Box<dyn Fn(u32) + Send + Sync>,
    /// A shard is being given up: stop every node of it, synchronously (runs under the ownership lock).
    pub lost: Arc<dyn Fn(u32) + Send + Sync>,
}

/// Errors of one round.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("shard lease API: {0}")]
    Kube(#[from] kube::Error),
    #[error("shard lease round timed out")]
    Timeout,
}

/// Keeps this process's shard and member Leases.
pub struct Manager {
    api: Api<Lease>,
    cfg: ShardConfig,
    ownership: Ownership,
    hooks: Hooks,
    metrics: Metrics,
    /// Per Lease name: the resourceVersion last seen and when it was first seen (expiry clock).
    observed: HashMap<String, (String, Instant)>,
    /// Held shards: when each was last renewed, and the Lease as written.
    renewed: BTreeMap<u32, (Instant, Lease)>,
    member: Option<Lease>,
    foreign_warned: bool,
}

/// A running manager: cancel with [`Running::release`].
pub struct Running {
    stop: CancellationToken,
    task: JoinHandle<Manager>,
}

impl Manager {
    pub fn new(
        client: Client,
        cfg: ShardConfig,
        ownership: Ownership,
        hooks: Hooks,
        metrics: Metrics,
    ) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            ownership,
            hooks,
            metrics,
            observed: HashMap::new(),
            renewed: BTreeMap::new(),
            member: None,
            foreign_warned: false,
        }
    }

    /// Run rounds until [`Running::release`].
    pub fn start(self) -> Running {
        let stop = CancellationToken::new();
        let token = stop.clone();
        info!(shards = self.cfg.shards, identity = %self.cfg.identity, "sharding: taking part");
        let task = tokio::spawn(async move {
            let mut m = self;
            loop {
                let round = tokio::time::timeout(m.cfg.retry_period * 2, m.round()).await;
                match round {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(error = %e, "shard lease round failed"),
                    Err(_) => warn!(error = %Error::Timeout, "shard lease round failed"),
                }
                m.enforce_deadlines();
                m.metrics.set_shards_held(m.renewed.len());
                tokio::select! {
                    () = token.cancelled() => return m,
                    () = tokio::time::sleep(m.cfg.retry_period) => {}
                }
            }
        });
        Running { stop, task }
    }

    async fn round(&mut self) -> Result<(), Error> {
        let selector = format!("{LABEL_SHARD_GROUP}={}", self.cfg.group);
        let list = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await?;
        let leases: HashMap<String, Lease> =
            list.items.into_iter().map(|l| (l.name_any(), l)).collect();
        for (name, lease) in &leases {
            let rv = lease.resource_version().unwrap_or_default();
            let seen = self.observed.get(name).is_some_and(|(v, _)| *v == rv);
            if !seen {
                self.observed.insert(name.clone(), (rv, Instant::now()));
            }
        }
        self.observed.retain(|n, _| leases.contains_key(n));
        let member = leases.get(&self.cfg.member_lease());
        if let Err(e) = self.keep_member(member).await {
            // Held shards are still renewed below; others just see this member as gone sooner.
            warn!(error = %e, "renewing the member Lease failed");
        }

        let (members, foreign) = self.members(&leases).await;
        if foreign && !self.foreign_warned {
            warn!(
                "a live replica runs with another --shards value: taking no new shards until it is gone"
            );
        }
        self.foreign_warned = foreign;
        let view = self.view(&leases);
        self.renew_held(&view, &leases).await;
        let held: BTreeSet<u32> = self.renewed.keys().copied().collect();
        let p = plan(
            &self.cfg.identity,
            self.cfg.shards,
            &members,
            foreign,
            &view,
            &held,
        );
        for index in p.release {
            self.release(index).await;
        }
        for index in p.acquire {
            let current = leases.get(&self.cfg.shard_lease(index)).cloned();
            self.acquire(index, current).await;
        }
        Ok(())
    }

    fn view(&self, leases: &HashMap<String, Lease>) -> Vec<ShardView> {
        (0..self.cfg.shards)
            .map(|index| {
                let name = self.cfg.shard_lease(index);
                let Some(lease) = leases.get(&name) else {
                    return ShardView {
                        index,
                        holder: String::new(),
                        expired: true,
                    };
                };
                let spec = lease.spec.clone().unwrap_or_default();
                ShardView {
                    index,
                    holder: spec.holder_identity.clone().unwrap_or_default(),
                    expired: self
                        .observed
                        .get(&name)
                        .is_none_or(|(_, at)| expired(&spec, *at)),
                }
            })
            .collect()
    }

    /// Renew every held shard; one that another replica took is dropped at once.
    async fn renew_held(&mut self, view: &[ShardView], leases: &HashMap<String, Lease>) {
        let held: Vec<u32> = self.renewed.keys().copied().collect();
        for index in held {
            let name = self.cfg.shard_lease(index);
            let taken = view
                .get(usize::try_from(index).unwrap_or(usize::MAX))
                .is_none_or(|s| s.holder != self.cfg.identity);
            let Some(current) = leases.get(&name).filter(|_| !taken) else {
                warn!(
                    shard = index,
                    "shard Lease taken by another replica: stopping its nodes"
                );
                self.drop_shard(index);
                continue;
            };
            let mut lease = current.clone();
            lease.spec = Some(lease_record(
                &self.cfg.identity,
                self.cfg.lease_duration,
                current.spec.as_ref(),
                Timestamp::now(),
            ));
            match self
                .api
                .replace(&name, &PostParams::default(), &lease)
                .await
            {
                Ok(l) => {
                    self.renewed.insert(index, (Instant::now(), l));
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    warn!(
                        shard = index,
                        "shard Lease changed under us: stopping its nodes"
                    );
                    self.drop_shard(index);
                }
                Err(e) => debug!(shard = index, error = %e, "renewing a shard Lease"),
            }
        }
    }

    /// Take a free shard: a conditional write; losing the race (409) is normal.
    async fn acquire(&mut self, index: u32, current: Option<Lease>) {
        let name = self.cfg.shard_lease(index);
        let now = Timestamp::now();
        let result = match current {
            Some(mut lease) => {
                lease.spec = Some(lease_record(
                    &self.cfg.identity,
                    self.cfg.lease_duration,
                    lease.spec.as_ref(),
                    now,
                ));
                self.api
                    .replace(&name, &PostParams::default(), &lease)
                    .await
            }
            None => {
                let spec = lease_record(&self.cfg.identity, self.cfg.lease_duration, None, now);
                let lease = self.new_lease(&name, ROLE_SHARD, spec);
                self.api.create(&PostParams::default(), &lease).await
            }
        };
        match result {
            Ok(lease) => {
                info!(shard = index, "took shard");
                self.renewed.insert(index, (Instant::now(), lease));
                self.ownership.gain(index);
                (self.hooks.gained)(index);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                debug!(shard = index, "another replica took the shard first");
            }
            Err(e) => debug!(shard = index, error = %e, "taking a shard"),
        }
    }

    /// Stop a shard's work, then release its Lease so another replica takes it at its next round.
    async fn release(&mut self, index: u32) {
        let Some((_, lease)) = self.renewed.get(&index).cloned() else {
            return;
        };
        self.drop_shard(index);
        let mut lease = lease;
        let spec = lease.spec.clone().unwrap_or_default();
        lease.spec = Some(released_record(&spec, Timestamp::now()));
        let name = self.cfg.shard_lease(index);
        match self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(shard = index, "released shard"),
            Err(e) => {
                warn!(shard = index, error = %e, "releasing a shard Lease failed: it will expire")
            }
        }
    }

    /// Stop holding a shard locally (its nodes stop before this returns).
    fn drop_shard(&mut self, index: u32) {
        self.renewed.remove(&index);
        let lost = self.hooks.lost.clone();
        self.ownership.drop_shard(index, move |s| lost(s));
    }

    /// A shard not renewed for the renew deadline is dropped, API or not: the Lease may expire for
    /// the others soon after, and by then its nodes must have stopped here.
    fn enforce_deadlines(&mut self) {
        let late: Vec<u32> = self
            .renewed
            .iter()
            .filter(|(_, (at, _))| at.elapsed() >= self.cfg.renew_deadline)
            .map(|(i, _)| *i)
            .collect();
        for index in late {
            warn!(shard = index, deadline = ?self.cfg.renew_deadline, "could not renew a shard Lease in time: stopping its nodes");
            self.metrics.shard_dropped();
            self.drop_shard(index);
        }
    }

    fn new_lease(
        &self,
        name: &str,
        role: &str,
        spec: k8s_openapi::api::coordination::v1::LeaseSpec,
    ) -> Lease {
        let labels = [
            (LABEL_SHARD_GROUP.to_string(), self.cfg.group.clone()),
            (LABEL_LEASE_ROLE.to_string(), role.to_string()),
            (LABEL_SHARDS.to_string(), self.cfg.shards.to_string()),
        ];
        Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(self.cfg.namespace.clone()),
                labels: Some(labels.into_iter().collect()),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
        }
    }

    /// After the work stopped: release every held shard and delete the member Lease, so the others
    /// take over at their next round instead of after expiry.
    async fn shutdown(&mut self) {
        let held: Vec<u32> = self.renewed.keys().copied().collect();
        for index in held {
            self.release(index).await;
        }
        if let Some(member) = self.member.take() {
            self.delete_stale(&member.name_any(), &member).await;
        }
        self.metrics.set_shards_held(0);
    }
}

impl Running {
    /// Stop the rounds, stop every held shard's nodes and release the Leases (bounded: a Lease that
    /// cannot be released in time simply expires).
    pub async fn release(self) {
        self.stop.cancel();
        let Ok(mut m) = self.task.await else {
            return;
        };
        let budget = m.cfg.retry_period * 2;
        if tokio::time::timeout(budget, m.shutdown()).await.is_err() {
            warn!("releasing the shard Leases timed out: they will expire");
        }
    }
}

fn role(lease: &Lease) -> &str {
    lease
        .labels()
        .get(LABEL_LEASE_ROLE)
        .map_or("", String::as_str)
}
