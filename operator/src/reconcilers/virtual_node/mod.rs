//! VirtualNode reconciler: read (the VirtualNode, its DeviceBackend from the shared store) -> decide
//! (pure, [`desired`]) -> act (start/replace the node in the Fleet) -> status (conditions, Events on
//! transitions). A finalizer removes the Node and Lease before the VirtualNode goes away. A new node's
//! "still starting" status is not written while it is likely to be superseded ([`settle`]).
//!
//! Invalid input (missing or invalid backend) sets Ready=False with a reason and waits for a change
//! of the VirtualNode or its backend: no retry storm. A missing or invalid Secret (SSH) is retried every
//! 30 s, since Secrets are not watched.

pub mod desired;
pub mod forward;
pub mod settle;
pub mod written;

use std::sync::Arc;
use std::time::Duration;

use fleetlet_crds::VirtualNode;
use fleetlet_crds::conditions::is_true;
use fleetlet_crds::consts::{VIRTUAL_NODE_FINALIZER, condition, reason};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Patch;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use tracing::{info, warn};

use super::Error;
use super::providers::BuildError;
use crate::context::Context;
use desired::{Blocked, node_config};

/// Reconcile one VirtualNode.
pub async fn reconcile(vn: Arc<VirtualNode>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Sharded: another replica serves it (this one is told when it takes the shard over).
    if !ctx.ownership.owns(&vn.name_any()) {
        return Ok(Action::await_change());
    }
    let uid = vn.uid().unwrap_or_default();
    let deleting = vn.metadata.deletion_timestamp.is_some();
    let cached_without_finalizer = !vn.finalizers().iter().any(|f| f == VIRTUAL_NODE_FINALIZER);
    if cached_without_finalizer && !deleting && finalized(&ctx).contains(&uid) {
        // The cache has not yet seen the finalizer this process added: adding it again would fail
        // its test-and-add patch (a wasted write and an error per new node). Go straight on.
        return apply(vn, ctx).await;
    }
    let api: Api<VirtualNode> = Api::all(ctx.client.clone());
    let result = finalizer(&api, VIRTUAL_NODE_FINALIZER, vn, |event| async {
        match event {
            Finalizer::Apply(vn) => apply(vn, ctx.clone()).await,
            Finalizer::Cleanup(vn) => cleanup(vn, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if deleting {
        finalized(&ctx).remove(&uid);
    } else if result.is_ok() {
        finalized(&ctx).insert(uid);
    }
    result
}

/// UIDs of VirtualNodes whose finalizer this process knows to be on the server.
fn finalized(ctx: &Context) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
    ctx.finalized.lock().unwrap_or_else(|e| e.into_inner())
}

/// Requeue after an error with a fixed, modest delay (the controller adds its own backoff on repeats).
pub fn error_policy(vn: Arc<VirtualNode>, err: &Error, _ctx: Arc<Context>) -> Action {
    warn!(vnode = %vn.name_any(), reason = err.reason(), error = %err, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

async fn apply(vn: Arc<VirtualNode>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = vn.metadata.name.clone().ok_or(Error::NoName)?;
    let backend_name = &vn.spec.backend_ref.name;
    let backend = ctx.backends.get(&ObjectRef::new(backend_name));
    // Secrets are not watched: a node blocked on one is retried periodically.
    let mut retry_blocked = false;
    let provider = match backend.as_deref() {
        None => Err(Blocked {
            reason: reason::BACKEND_NOT_FOUND,
            message: format!("DeviceBackend {backend_name:?} does not exist"),
        }),
        Some(b) => match ctx.providers.resolve(&ctx.client, &name, &vn, b).await {
            Ok(p) => Ok(p),
            // An API hiccup reading a Secret must not stop a running node: retry with backoff.
            Err(BuildError::Kube { source, .. }) => return Err(Error::Kube(source)),
            Err(e) => {
                retry_blocked = e.retry();
                Err(Blocked {
                    reason: e.reason(),
                    message: e.to_string(),
                })
            }
        },
    };
    let provider = provider.and_then(|p| {
        let preferred = vn
            .status
            .as_ref()
            .and_then(|s| s.kubelet_endpoint.as_deref())
            .and_then(|e| e.rsplit(':').next())
            .and_then(|p| p.parse().ok());
        ctx.ports
            .allocate(&name, preferred)
            .map(|port| (p, port))
            .map_err(|e| Blocked {
                reason: reason::PORTS_EXHAUSTED,
                message: e.to_string(),
            })
    });
    let now = Time(Timestamp::now());
    let status = match provider {
        Err(blocked) => {
            // Nothing can run: stop heartbeats (the Node goes NotReady as a real unreachable node would).
            ctx.fleet.stop_node(&name);
            ctx.providers.remove(&name);
            desired::status(&vn, Err(&blocked), &now)
        }
        Ok((provider, port)) => {
            let address = ctx.kubelet_address.to_string();
            let cfg = node_config(&name, &vn, &address, port);
            let rx = {
                // Under the shard lock: a shard given up meanwhile must not get a node started.
                let held = ctx.ownership.lock();
                if !held.owns(&name) {
                    return Ok(Action::await_change());
                }
                ctx.fleet
                    .add_node(cfg, provider, vn.controller_owner_ref(&()))
            };
            let state = rx.borrow().clone();
            let endpoint = format!("{}:{port}", ctx.kubelet_address);
            desired::status(&vn, Ok((&state, &endpoint)), &now)
        }
    };
    // What the server holds: the cache may not show yet what this process wrote a moment ago.
    let was = ctx.written.latest(&vn);
    // A new node's "still starting" status is usually superseded within the second: wait for the
    // next state change (which reconciles) or the end of the hold instead of writing it.
    if was.as_ref() != Some(&status)
        && let Some(wait) = settle::hold(&vn, &status, Timestamp::now())
    {
        return Ok(Action::requeue(wait));
    }
    publish_transition(&ctx, &vn, was.as_ref(), &status).await;
    if was.as_ref() != Some(&status) {
        let api: Api<VirtualNode> = Api::all(ctx.client.clone());
        let patch = super::status_apply::<VirtualNode>(&name, &status);
        api.patch_status(&name, &super::status_apply_params(), &Patch::Apply(patch))
            .await?;
        ctx.written.record(&vn, status);
    }
    if retry_blocked {
        return Ok(Action::requeue(SECRET_RETRY));
    }
    Ok(Action::await_change())
}

/// How often a node blocked on a Secret (missing, invalid) is retried.
const SECRET_RETRY: Duration = Duration::from_secs(30);

/// One Event per transition of Ready or CertificatesReady (and for the first blocked state), never per
/// reconcile; not for the first issuance of certificates.
async fn publish_transition(
    ctx: &Context,
    vn: &VirtualNode,
    was: Option<&fleetlet_crds::VirtualNodeStatus>,
    status: &fleetlet_crds::VirtualNodeStatus,
) {
    for (type_, good) in [
        (condition::READY, "NodeReady"),
        (condition::CERTIFICATES_READY, reason::CERTIFICATES_ISSUED),
    ] {
        let was = was
            .and_then(|s| fleetlet_crds::conditions::find(&s.conditions, type_))
            .map(|c| (c.status.clone(), c.reason.clone()));
        let Some(now) = fleetlet_crds::conditions::find(&status.conditions, type_) else {
            continue;
        };
        if was.as_ref() == Some(&(now.status.clone(), now.reason.clone())) {
            continue;
        }
        let ok = is_true(&status.conditions, type_);
        // The first reconcile of a fresh VirtualNode says Pending; that is not news.
        if !ok && (now.reason == reason::PENDING || now.reason == reason::CERTIFICATE_PENDING) {
            continue;
        }
        // Nor is the first issuance of certificates (one write per node saved at bring-up): an Event
        // says they are issued again only after they were not (denied, failed, expired).
        let first_issuance = was
            .as_ref()
            .is_none_or(|(_, r)| r == reason::CERTIFICATE_PENDING);
        if ok && type_ == condition::CERTIFICATES_READY && first_issuance {
            continue;
        }
        let ev = Event {
            type_: if ok {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: if ok { good.into() } else { now.reason.clone() },
            note: Some(now.message.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &vn.object_ref(&())).await {
            warn!(vnode = %vn.name_any(), error = %e, "publishing event failed");
        }
    }
}

async fn cleanup(vn: Arc<VirtualNode>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = vn.metadata.name.clone().ok_or(Error::NoName)?;
    info!(vnode = %name, "VirtualNode deleted: removing its Node and Lease");
    ctx.fleet.remove_node(&name).await?;
    ctx.providers.remove(&name);
    ctx.written.forget(&name);
    ctx.ports.release(&name);
    Ok(Action::await_change())
}
