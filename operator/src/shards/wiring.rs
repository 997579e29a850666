//! How `fleetlet run` plugs sharding in: the shard Leases' configuration from the flags, and what
//! taking or losing a shard does to the operator's controllers and Fleet.

use std::sync::Arc;

use fleetlet_crds::{DeviceBackend, VirtualNode};
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::manager::{Hooks, ShardConfig};
use super::shard_of;
use crate::cli::RunArgs;
use crate::context::Context;
use crate::leader::LeaderConfig;

/// The shard Leases' names and timing: the leader election's flags.
pub fn shard_config(args: &RunArgs) -> anyhow::Result<ShardConfig> {
    LeaderConfig {
        namespace: args.namespace(),
        name: args.leader_election_id.clone(),
        identity: String::new(),
        lease_duration: args.leader_elect_lease_duration,
        renew_deadline: args.leader_elect_renew_deadline,
        retry_period: args.leader_elect_retry_period,
    }
    .validate()?;
    Ok(ShardConfig {
        namespace: args.namespace(),
        group: args.leader_election_id.clone(),
        shards: args.shards,
        identity: crate::leader::default_identity(),
        lease_duration: args.leader_elect_lease_duration,
        renew_deadline: args.leader_elect_renew_deadline,
        retry_period: args.leader_elect_retry_period,
    })
}

/// What the shard manager does as shards come and go: reconcile a gained shard's objects; stop a lost
/// shard's nodes (Nodes and Leases stay for the replica that takes it over).
pub fn shard_hooks(
    ctx: &Arc<Context>,
    vnodes: Store<VirtualNode>,
    backends: Store<DeviceBackend>,
    backend_trigger: tokio::sync::mpsc::UnboundedSender<ObjectRef<DeviceBackend>>,
) -> Hooks {
    let shards = ctx.ownership.shards();
    let trigger = ctx.trigger.clone();
    let gained = move |s: u32| {
        for v in vnodes.state() {
            if shard_of(&v.name_any(), shards) == s {
                let _ = trigger.send(ObjectRef::from_obj(&*v));
            }
        }
        for b in backends.state() {
            if shard_of(&b.name_any(), shards) == s {
                let _ = backend_trigger.send(ObjectRef::from_obj(&*b));
            }
        }
    };
    let ctx = ctx.clone();
    let lost = move |s: u32| {
        for name in ctx.fleet.node_names() {
            if shard_of(&name, shards) == s {
                ctx.fleet.stop_node(&name);
                ctx.providers.remove(&name);
                ctx.ports.release(&name);
                ctx.written.forget(&name);
            }
        }
    };
    Hooks {
        gained: Box::new(gained),
        lost: Arc::new(lost),
    }
}
