//! The member Lease: one per live replica, so every replica knows how many share the shards.

use std::collections::{BTreeSet, HashMap};

use fleetlet_crds::consts::LABEL_SHARDS;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::{DeleteParams, PostParams, Preconditions};
use tracing::debug;

use super::{Error, Manager, ROLE_MEMBER, role};
use crate::leader::{expired, lease_record};

impl Manager {
    /// Create or renew this replica's member Lease.
    pub(super) async fn keep_member(&mut self, current: Option<&Lease>) -> Result<(), Error> {
        let name = self.cfg.member_lease();
        let now = Timestamp::now();
        let spec = lease_record(
            &self.cfg.identity,
            self.cfg.lease_duration,
            current.and_then(|l| l.spec.as_ref()),
            now,
        );
        let written = match current {
            Some(l) => {
                let mut l = l.clone();
                l.spec = Some(spec);
                self.api.replace(&name, &PostParams::default(), &l).await
            }
            None => {
                let lease = self.new_lease(&name, ROLE_MEMBER, spec);
                let created = self.api.create(&PostParams::default(), &lease).await;
                if matches!(&created, Err(kube::Error::Api(s)) if s.code == 404) {
                    let client = self.api.clone().into_client();
                    crate::leader::ensure_namespace(client, &self.cfg.namespace).await;
                }
                created
            }
        };
        self.member = Some(written?);
        Ok(())
    }

    /// Live members running this shard count (always including this one), and whether a live member
    /// runs another. Members that ran out are deleted (conditionally: never one renewed meanwhile).
    pub(super) async fn members(
        &mut self,
        leases: &HashMap<String, Lease>,
    ) -> (BTreeSet<String>, bool) {
        let mut members = BTreeSet::from([self.cfg.identity.clone()]);
        let mut foreign = false;
        let shards = self.cfg.shards.to_string();
        for (name, lease) in leases.iter().filter(|(_, l)| role(l) == ROLE_MEMBER) {
            let spec = lease.spec.clone().unwrap_or_default();
            let Some(holder) = spec.holder_identity.clone().filter(|h| !h.is_empty()) else {
                continue;
            };
            let live = self
                .observed
                .get(name)
                .is_some_and(|(_, at)| !expired(&spec, *at));
            if !live {
                if holder != self.cfg.identity {
                    self.delete_stale(name, lease).await;
                }
                continue;
            }
            if lease.labels().get(LABEL_SHARDS) == Some(&shards) {
                members.insert(holder);
            } else {
                foreign = true;
            }
        }
        (members, foreign)
    }

    pub(super) async fn delete_stale(&self, name: &str, lease: &Lease) {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: lease.resource_version(),
                uid: lease.uid(),
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(name, &dp).await {
            Ok(_) => debug!(
                lease = name,
                "deleted the member Lease of a replica that is gone"
            ),
            Err(e) => debug!(lease = name, error = %e, "deleting a stale member Lease"),
        }
    }
}
