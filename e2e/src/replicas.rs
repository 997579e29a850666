//! Helpers of the scenarios with several operator replicas (`tests/ha*.rs`, `tests/sharding.rs`).

use std::time::{Duration, Instant};

use fleetlet_test_apiserver::RequestRecord;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

use crate::{Cluster, Operator, eventually, probe};

/// The holder of the Lease `name`, if held.
pub async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// The replica's `/readyz` status code.
pub async fn readyz(op: &Operator) -> Option<u16> {
    let url = format!("{}/readyz", op.health_url()?);
    probe::get(&url).await.ok().map(|(code, _)| code)
}

/// Writes (anything but get/list/watch) by `user` to node objects: Nodes, node Leases, pod status.
pub fn node_writes<'a>(
    reqs: &'a [RequestRecord],
    user: &'a str,
) -> impl Iterator<Item = Instant> + 'a {
    reqs.iter()
        .filter(move |r| r.user == user && !matches!(r.verb.as_str(), "get" | "list" | "watch"))
        .filter(|r| {
            r.resource == "nodes" || r.namespace == "kube-node-lease" || r.subresource == "status"
        })
        .map(|r| r.at)
}

/// An HA replica named `name` in election `election` (its pod name, and its API user `ha:<name>`).
pub fn ha_replica(c: &Cluster, name: &str, election: &str) -> anyhow::Result<Operator> {
    Operator::start_replica(c, &format!("ha:{name}"), name, election, &[])
}

/// Wait (within `timeout`) until replica `name` holds the election Lease `election`.
pub async fn wait_leader(leases: &Api<Lease>, election: &str, name: &str, timeout: Duration) {
    let prefix = format!("{name}_");
    eventually(timeout, &format!("{name} leads"), || async {
        holder(leases, election)
            .await
            .filter(|h| h.starts_with(&prefix))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
}
