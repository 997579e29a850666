//! Sharding: with `--shards K` (K > 1) every replica runs controllers and virtual kubelets, each for the
//! VirtualNodes (and DeviceBackends) whose name hashes to a shard it holds.
//!
//! - A shard is held through a Lease `<id>-shard-<i>` in the operator namespace, with the same rules as
//!   the leader election ([`crate::leader`]): conditional writes, expiry judged on the observer's clock,
//!   a renew deadline shorter than the lease duration so a holder stops a shard's work before anyone
//!   else may take it.
//! - Every replica also keeps a member Lease `<id>-member-<hash>`; the live members, sorted by identity,
//!   give each replica its share ([`target`]): `K / n`, plus one for the first `K % n`. A replica above
//!   its share releases shards (after stopping their nodes), one below it takes free or expired ones. So
//!   a new replica gets work without a restart and a dead replica's shards move within a lease duration
//!   plus a retry period, well inside a node Lease's 40 s: nodes never go NotReady.
//! - A replica that sees a live member with a different shard count acquires nothing (shard `i` would
//!   not mean the same nodes): during a rollout that changes K the old replicas keep serving until they
//!   are gone.
//!
//! This module is the pure part: the hash, the share and the plan of one round. [`manager`] talks to
//! the API and [`Ownership`] is what reconcilers consult.

pub mod manager;
mod ownership;
pub mod wiring;

use std::collections::BTreeSet;

pub use fleetlet_crds::shard::shard_of;
pub use ownership::Ownership;

/// How many shards the member `me` should hold, given the live members (including `me`).
pub fn target(me: &str, members: &BTreeSet<String>, shards: u32) -> u32 {
    let n = u32::try_from(members.len().max(1)).unwrap_or(u32::MAX);
    let rank = members
        .iter()
        .position(|m| m == me)
        .unwrap_or(members.len());
    let rank = u32::try_from(rank).unwrap_or(u32::MAX);
    shards / n + u32::from(rank < shards % n)
}

/// One shard Lease as a round sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardView {
    pub index: u32,
    /// Empty when released; the holder's identity otherwise.
    pub holder: String,
    /// Not renewed for its lease duration (judged on this replica's clock), or never created.
    pub expired: bool,
}

impl ShardView {
    fn free(&self) -> bool {
        self.holder.is_empty() || self.expired
    }
}

/// What one round decides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Held shards to give up (highest first): over the share.
    pub release: Vec<u32>,
    /// Free shards to try to take, in order.
    pub acquire: Vec<u32>,
}

/// Decide a round: `held` are the shards this replica holds, `members` the live members with this
/// replica's shard count, `foreign` whether a live member runs with another shard count.
pub fn plan(
    me: &str,
    shards: u32,
    members: &BTreeSet<String>,
    foreign: bool,
    view: &[ShardView],
    held: &BTreeSet<u32>,
) -> Plan {
    let want = usize::try_from(target(me, members, shards)).unwrap_or(usize::MAX);
    if held.len() > want {
        return Plan {
            release: held.iter().rev().take(held.len() - want).copied().collect(),
            acquire: Vec::new(),
        };
    }
    if foreign {
        return Plan::default();
    }
    // Start at a point that depends on the identity, so replicas rarely race for the same shard.
    let start = shard_of(me, shards);
    let mut free: Vec<u32> = view
        .iter()
        .filter(|s| s.free() && !held.contains(&s.index))
        .map(|s| s.index)
        .collect();
    free.sort_by_key(|i| (i + shards - start) % shards);
    Plan {
        release: Vec::new(),
        acquire: free.into_iter().take(want - held.len()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_string()).collect()
    }

    fn view(holders: &[&str]) -> Vec<ShardView> {
        holders
            .iter()
            .zip(0..)
            .map(|(h, index)| ShardView {
                index,
                holder: (*h).to_string(),
                expired: false,
            })
            .collect()
    }

    #[test]
    fn shares_add_up_to_the_shard_count() {
        let m = members(&["a", "b", "c"]);
        let shares: Vec<u32> = ["a", "b", "c"].iter().map(|x| target(x, &m, 4)).collect();
        assert_eq!(shares, [2, 1, 1]);
        assert_eq!(target("a", &members(&["a"]), 4), 4);
        assert_eq!(target("z", &members(&["a", "b", "c", "d", "e"]), 4), 0);
    }

    #[test]
    fn a_lone_replica_takes_every_free_shard() {
        let p = plan(
            "a",
            3,
            &members(&["a"]),
            false,
            &view(&["", "", ""]),
            &BTreeSet::new(),
        );
        let mut got = p.acquire.clone();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2]);
        assert!(p.release.is_empty());
    }

    #[test]
    fn a_replica_over_its_share_releases_its_highest_shards() {
        let held: BTreeSet<u32> = [0, 1, 2, 3].into();
        let p = plan(
            "a",
            4,
            &members(&["a", "b"]),
            false,
            &view(&["a"; 4]),
            &held,
        );
        assert_eq!(p.release, [3, 2]);
        assert!(p.acquire.is_empty());
    }

    #[test]
    fn held_shards_of_live_members_are_never_taken() {
        let p = plan(
            "b",
            4,
            &members(&["a", "b"]),
            false,
            &view(&["a", "a", "a", ""]),
            &BTreeSet::new(),
        );
        assert_eq!(p.acquire, [3]);
    }

    #[test]
    fn expired_shards_are_free() {
        let mut v = view(&["dead", "dead", "a", "a"]);
        v[0].expired = true;
        v[1].expired = true;
        let held: BTreeSet<u32> = [2, 3].into();
        let p = plan("a", 4, &members(&["a"]), false, &v, &held);
        let mut got = p.acquire.clone();
        got.sort_unstable();
        assert_eq!(got, [0, 1]);
    }

    #[test]
    fn another_shard_count_blocks_acquisition_but_not_release() {
        let p = plan(
            "a",
            4,
            &members(&["a"]),
            true,
            &view(&["", "", "", ""]),
            &BTreeSet::new(),
        );
        assert_eq!(p, Plan::default());
        let held: BTreeSet<u32> = [0, 1].into();
        let five = members(&["a", "b", "c", "d", "e"]);
        let p = plan("e", 4, &five, true, &view(&["e", "e", "", ""]), &held);
        assert_eq!(p.release, [1, 0]);
    }
}
