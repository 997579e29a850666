//! DeviceBackend reconciler: validates the spec and reports it (`Accepted`, `type`, `virtualNodes`).
//! VirtualNodes using a backend are re-reconciled by their own controller when it changes.

use std::sync::Arc;
use std::time::Duration;

use fleetlet_crds::conditions::{Wanted, set_condition};
use fleetlet_crds::consts::{condition, reason};
use fleetlet_crds::{DeviceBackend, DeviceBackendStatus, VirtualNode};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Patch;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use tracing::warn;

use super::Error;
use super::providers::validate;
use crate::shards::Ownership;

/// Context of the DeviceBackend reconciler.
pub struct BackendCtx {
    pub client: Client,
    pub vnodes: Store<VirtualNode>,
    /// Only the replica holding a backend's shard writes its status.
    pub ownership: Ownership,
}

/// The status a backend should have (pure).
pub fn desired_status(b: &DeviceBackend, virtual_nodes: usize, now: &Time) -> DeviceBackendStatus {
    let mut st = b.status.clone().unwrap_or_default();
    let generation = b.metadata.generation;
    match validate(b) {
        Ok(kind) => {
            set_condition(
                &mut st.conditions,
                Wanted::new(
                    condition::ACCEPTED,
                    true,
                    reason::ACCEPTED,
                    format!("{kind} backend accepted"),
                ),
                generation,
                now,
            );
            st.type_ = Some(kind.into());
        }
        Err(e) => {
            set_condition(
                &mut st.conditions,
                Wanted::new(
                    condition::ACCEPTED,
                    false,
                    reason::BACKEND_INVALID,
                    e.to_string(),
                ),
                generation,
                now,
            );
            st.type_ = b.spec.kind().map(str::to_string);
        }
    }
    st.virtual_nodes = Some(i32::try_from(virtual_nodes).unwrap_or(i32::MAX));
    st.observed_generation = generation;
    st
}

pub async fn reconcile(b: Arc<DeviceBackend>, ctx: Arc<BackendCtx>) -> Result<Action, Error> {
    let name = b.metadata.name.clone().ok_or(Error::NoName)?;
    if !ctx.ownership.owns(&name) {
        return Ok(Action::await_change());
    }
    let count = ctx
        .vnodes
        .state()
        .iter()
        .filter(|v| v.spec.backend_ref.name == name)
        .count();
    let status = desired_status(&b, count, &Time(Timestamp::now()));
    if b.status.as_ref() != Some(&status) {
        let api: Api<DeviceBackend> = Api::all(ctx.client.clone());
        let patch = super::status_apply::<DeviceBackend>(&name, &status);
        api.patch_status(&name, &super::status_apply_params(), &Patch::Apply(patch))
            .await?;
    }
    Ok(Action::await_change())
}

pub fn error_policy(b: Arc<DeviceBackend>, err: &Error, _ctx: Arc<BackendCtx>) -> Action {
    warn!(backend = %b.name_any(), reason = err.reason(), error = %err, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}
