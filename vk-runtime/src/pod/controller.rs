//! Per-node pod controller: routes watch events and provider notifications to one worker per pod UID.
//!
//! A worker owns everything about its pod: creation (env resolved first; missing references become a
//! `CreateContainerConfigError` and an Event, retried with backoff), status reports (patched only when
//! they change), and graceful deletion (deletionTimestamp -> provider stop within the grace period ->
//! final status -> delete with a UID precondition). After a restart the first full list is reconciled
//! with what the backend runs: backend work without a pod is stopped, pods whose work vanished fail.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodStatus, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, info, warn};

use super::env::{EnvError, EnvSource, ObjectKind, resolve_pod_env};
use super::outbox::Outbox;
use super::status::{lost_status, pod_status, terminated_status};
use crate::certs::NodeClient;
use crate::node::lease::is_status;
use crate::provider::{
    BackendPodStatus, DEFAULT_GRACE, DynProvider, PodNote, PodNotifier, PodRef, ResolvedPod,
};

/// What the shared pod watch tells one node.
#[derive(Debug)]
pub enum PodEvent {
    /// A pod bound to this node was added or changed.
    Apply(Box<Pod>),
    /// A pod bound to this node is gone from the API.
    Delete(Box<Pod>),
    /// The complete set of pods bound to this node (after a (re)list).
    Resync(Vec<Pod>),
}

/// Shared by the pod controllers of every node in a fleet.
#[derive(Clone)]
pub struct PodShared {
    /// Reads (ConfigMaps and Secrets for container env) with the fleet's identity.
    pub client: Client,
    /// Source of pod Events (published with each node's own writer).
    pub reporter: Reporter,
    /// Bounds concurrent pod API writes of the whole fleet, so bulk pod work cannot flood the API.
    pub writes: Arc<Semaphore>,
    /// Field manager of the pod status patches (the same as every other write of the fleet).
    pub field_manager: String,
}

/// Pods of one node, as the node knows them: what the kubelet API's `/pods` and lookups read.
pub type PodTable = Arc<RwLock<BTreeMap<(String, String), Pod>>>;

/// The node's queue of pod events and its dispatcher's queue of finished workers are futures' unbounded
/// channels: tokio's allocates room for 32 items up front (~0.8 KB each), for every node, idle or not.
type Queue<T> = futures::channel::mpsc::UnboundedSender<T>;

/// Handle to one node's pod controller.
pub struct PodController {
    events: Queue<PodEvent>,
    table: PodTable,
}

impl PodController {
    /// Start the controller of node `node` whose kubelet address is `host_ip`.
    pub fn start(
        shared: PodShared,
        writer: NodeClient,
        node: String,
        host_ip: String,
        provider: DynProvider,
    ) -> Self {
        let (events, events_rx) = futures::channel::mpsc::unbounded();
        let (notifier, notify_rx) = PodNotifier::channel();
        provider.set_notifier(notifier);
        let table = PodTable::default();
        let ctx = Arc::new(Ctx {
            shared,
            writer,
            node,
            host_ip,
            provider,
            table: table.clone(),
        });
        tokio::spawn(dispatch(ctx, events_rx, notify_rx));
        Self { events, table }
    }

    /// Feed an event from the shared pod watch.
    pub fn send(&self, event: PodEvent) {
        let _ = self.events.unbounded_send(event);
    }

    /// The node's pods as last seen.
    pub fn table(&self) -> PodTable {
        self.table.clone()
    }

    /// Number of pods bound to the node.
    pub fn len(&self) -> usize {
        self.table.read().map(|t| t.len()).unwrap_or(0)
    }

    /// Whether no pod is bound to the node.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct Ctx {
    shared: PodShared,
    /// Writes pod status, final deletes and Events: the node's own identity.
    writer: NodeClient,
    node: String,
    host_ip: String,
    provider: DynProvider,
    table: PodTable,
}

enum Msg {
    Update(Box<Pod>),
    Gone,
    /// Boxed as it came, so the message stays small.
    Backend(PodNote),
}

async fn dispatch(
    ctx: Arc<Ctx>,
    mut events: futures::channel::mpsc::UnboundedReceiver<PodEvent>,
    mut notes: mpsc::UnboundedReceiver<PodNote>,
) {
    let mut workers: HashMap<String, mpsc::UnboundedSender<Msg>> = HashMap::new();
    let (done_tx, mut done_rx) = futures::channel::mpsc::unbounded::<String>();
    let mut first_sync = true;
    // UIDs whose worker finished (pod deleted): late MODIFIED events for them start nothing.
    let mut finished: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else { break };
                match ev {
                    PodEvent::Apply(pod) => {
                        if pod.metadata.uid.as_ref().is_some_and(|u| finished.contains(u)) {
                            continue;
                        }
                        route(&ctx, &mut workers, &done_tx, *pod, false);
                    }
                    PodEvent::Delete(pod) => {
                        ctx.untrack(&pod);
                        if let Some(uid) = pod.metadata.uid.as_ref() {
                            finished.remove(uid);
                        }
                        if let Some(tx) = pod.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                            let _ = tx.send(Msg::Gone);
                        }
                    }
                    PodEvent::Resync(pods) => {
                        let adopted = if first_sync { reconcile_backend(&ctx, &pods).await } else { HashSet::new() };
                        first_sync = false;
                        let live: HashSet<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
                        finished.retain(|u| live.contains(u));
                        for (uid, tx) in &workers {
                            if !live.contains(uid) { let _ = tx.send(Msg::Gone); }
                        }
                        if let Ok(mut t) = ctx.table.write() { t.retain(|_, p| p.metadata.uid.as_ref().is_some_and(|u| live.contains(u))); }
                        for pod in pods {
                            if pod.metadata.uid.as_ref().is_some_and(|u| finished.contains(u)) {
                                continue;
                            }
                            let adopt = pod.metadata.uid.as_ref().is_some_and(|u| adopted.contains(u));
                            route(&ctx, &mut workers, &done_tx, pod, adopt);
                        }
                    }
                }
            }
            Some(note) = notes.recv() => {
                if let Some(tx) = workers.get(&note.0.uid) { let _ = tx.send(Msg::Backend(note)); }
            }
            Some(uid) = done_rx.next() => {
                workers.remove(&uid);
                finished.insert(uid);
            }
        }
    }
}

fn route(
    ctx: &Arc<Ctx>,
    workers: &mut HashMap<String, mpsc::UnboundedSender<Msg>>,
    done: &Queue<String>,
    pod: Pod,
    adopted: bool,
) {
    let Some(pod_ref) = PodRef::of(&pod) else {
        return;
    };
    ctx.track(&pod);
    if let Some(tx) = workers.get(&pod_ref.uid) {
        let _ = tx.send(Msg::Update(Box::new(pod)));
        return;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    workers.insert(pod_ref.uid.clone(), tx);
    let (ctx, done) = (ctx.clone(), done.clone());
    tokio::spawn(async move {
        let uid = pod_ref.uid.clone();
        Worker {
            ctx,
            pod_ref,
            pod,
            created: adopted,
            last_backend: None,
            reported: None,
            outbox: Outbox::default(),
        }
        .run(rx, adopted)
        .await;
        let _ = done.unbounded_send(uid);
    });
}

/// First sync after start: stop backend work whose pod is gone; return the UIDs the backend still runs.
///
/// Until the backend answers, nothing is decided: assuming it runs nothing would mark every pod of a device
/// that is merely unreachable during the restart as lost. Events queue meanwhile (as on a kubelet whose
/// node is down, deletions wait for the device).
async fn reconcile_backend(ctx: &Ctx, pods: &[Pod]) -> HashSet<String> {
    let mut backoff = Duration::from_secs(1);
    let running = loop {
        match ctx.provider.list_pods().await {
            Ok(r) => break r,
            Err(e) => {
                warn!(node = %ctx.node, error = %e, retry_in = ?backoff, "cannot list backend pods yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    let api: HashSet<&str> = pods
        .iter()
        .filter_map(|p| p.metadata.uid.as_deref())
        .collect();
    let mut adopted = HashSet::new();
    for r in running {
        if api.contains(r.uid.as_str()) {
            adopted.insert(r.uid);
        } else {
            info!(node = %ctx.node, pod = %r, "stopping backend work whose pod no longer exists");
            if let Err(e) = ctx.provider.delete_pod(&r, Duration::ZERO).await {
                warn!(node = %ctx.node, pod = %r, error = %e, "stopping orphaned backend work failed");
            }
        }
    }
    adopted
}

impl Ctx {
    fn track(&self, pod: &Pod) {
        if let (Some(ns), Some(name), Ok(mut t)) = (
            pod.metadata.namespace.clone(),
            pod.metadata.name.clone(),
            self.table.write(),
        ) {
            t.insert((ns, name), pod.clone());
        }
    }

    fn untrack(&self, pod: &Pod) {
        if let (Some(ns), Some(name), Ok(mut t)) = (
            pod.metadata.namespace.clone(),
            pod.metadata.name.clone(),
            self.table.write(),
        ) && t
            .get(&(ns.clone(), name.clone()))
            .and_then(|p| p.metadata.uid.as_ref())
            == pod.metadata.uid.as_ref()
        {
            t.remove(&(ns, name));
        }
    }

    /// The pods API as the node; `None` while the node has no client certificate yet (callers retry).
    fn api(&self, ns: &str) -> Option<Api<Pod>> {
        self.writer.get().map(|c| Api::namespaced(c, ns))
    }

    /// Publish an Event about `pod`. Built before awaiting so the future owns everything it needs.
    fn event(
        &self,
        pod: &Pod,
        type_: EventType,
        reason: &str,
        note: String,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        let (recorder, reference, node) = (
            self.writer
                .get()
                .map(|c| Recorder::new(c, self.shared.reporter.clone())),
            pod.object_ref(&()),
            self.node.clone(),
        );
        async move {
            let Some(recorder) = recorder else {
                debug!(node = %node, "no node identity yet; event dropped");
                return;
            };
            if let Err(e) = recorder.publish(&ev, &reference).await {
                debug!(node = %node, error = %e, "publishing event failed");
            }
        }
    }
}

struct Worker {
    ctx: Arc<Ctx>,
    pod_ref: PodRef,
    pod: Pod,
    created: bool,
    last_backend: Option<BackendPodStatus>,
    reported: Option<PodStatus>,
    /// The status still to be written (held briefly, or after a failed patch) and when.
    outbox: Outbox,
}

const CREATE_RETRY_MIN: Duration = Duration::from_secs(1);
const CREATE_RETRY_MAX: Duration = Duration::from_secs(60);

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>, adopted: bool) {
        if adopted {
            match self.ctx.provider.pod_status(&self.pod_ref).await {
                Ok(Some(b)) => self.report(b).await,
                Ok(None) => {}
                Err(e) => {
                    warn!(pod = %self.pod_ref, error = %e, "reading adopted pod status failed")
                }
            }
        } else if started_before(&self.pod)
            && !terminal(&self.pod)
            && self.pod.metadata.deletion_timestamp.is_none()
        {
            // The API says it ran here, but the backend does not know it: it was lost.
            let status = lost_status(&self.pod, &self.ctx.host_ip, Timestamp::now());
            self.ctx
                .event(
                    &self.pod,
                    EventType::Warning,
                    "ProviderLost",
                    "the device backend no longer runs this pod".into(),
                )
                .await;
            self.patch_status(status).await;
        }
        let mut retry = CREATE_RETRY_MIN;
        let mut next_attempt = Some(tokio::time::Instant::now());
        loop {
            if self.pod.metadata.deletion_timestamp.is_some() {
                self.delete().await;
                return;
            }
            let want_create = !self.created && !terminal(&self.pod) && !started_before(&self.pod);
            let create_at = if want_create { next_attempt } else { None };
            let status_at = self.outbox.due();
            let deadline = match (create_at, status_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                msg = rx.recv() => match msg {
                    // The controller is shutting down (operator stop): leave the backend work running.
                    None => return,
                    Some(Msg::Gone) => { self.gone().await; return; }
                    Some(Msg::Update(pod)) => {
                        // Most updates are the echo of our own status patches: only a changed spec or
                        // labels/annotations concern the provider (and only then is env resolved again).
                        let changed = spec_changed(&self.pod, &pod);
                        self.pod = *pod;
                        if changed && self.created && self.pod.metadata.deletion_timestamp.is_none()
                            && let Some(resolved) = self.resolve_quiet().await
                                && let Err(e) = self.ctx.provider.update_pod(&resolved).await { debug!(pod = %self.pod_ref, error = %e, "update failed"); }
                    }
                    Some(Msg::Backend(note)) => self.report(note.1).await,
                },
                _ = sleep_until(deadline) => {
                    if let Some(status) = self.outbox.take_due(tokio::time::Instant::now()) {
                        self.patch_status(status).await;
                    } else if create_at.is_some() {
                        if self.create().await { next_attempt = None; } else {
                            next_attempt = Some(tokio::time::Instant::now() + retry);
                            retry = (retry * 2).min(CREATE_RETRY_MAX);
                        }
                    }
                }
            }
        }
    }

    async fn resolve_quiet(&self) -> Option<ResolvedPod> {
        let env = resolve_env(self.pod.clone(), self.ctx.shared.client.clone())
            .await
            .ok()?;
        Some(ResolvedPod {
            pod_ref: self.pod_ref.clone(),
            pod: self.pod.clone(),
            env,
        })
    }

    /// Resolve env and hand the pod to the provider. `true` when done (created, or failed for good).
    async fn create(&mut self) -> bool {
        let env = match resolve_env(self.pod.clone(), self.ctx.shared.client.clone()).await {
            Ok(env) => env,
            Err(e) => {
                warn!(pod = %self.pod_ref, error = %e, "cannot resolve container environment");
                self.ctx
                    .event(
                        &self.pod,
                        EventType::Warning,
                        "Failed",
                        format!("Error: {e}"),
                    )
                    .await;
                let mut b = waiting_all(&self.pod, e.reason(), &e.to_string());
                b.pod_ip = None;
                self.report(b).await;
                return false;
            }
        };
        let resolved = ResolvedPod {
            pod_ref: self.pod_ref.clone(),
            pod: self.pod.clone(),
            env,
        };
        match self.ctx.provider.create_pod(&resolved).await {
            Ok(()) => {
                self.created = true;
                info!(pod = %self.pod_ref, node = %self.ctx.node, "pod handed to backend");
                // Not awaited: the Event must not delay the pod's first status report.
                tokio::spawn(self.ctx.event(
                    &self.pod,
                    EventType::Normal,
                    "Started",
                    format!("Started on virtual node {}", self.ctx.node),
                ));
                true
            }
            Err(crate::ProviderError::InvalidInput(msg)) => {
                self.ctx
                    .event(&self.pod, EventType::Warning, "ProviderFailed", msg.clone())
                    .await;
                let mut status =
                    terminated_status(&self.pod, None, &self.ctx.host_ip, Timestamp::now());
                status.reason = Some("ProviderFailed".into());
                status.message = Some(msg);
                self.patch_status(status).await;
                true
            }
            Err(e) => {
                warn!(pod = %self.pod_ref, error = %e, "backend refused pod; will retry");
                self.ctx
                    .event(&self.pod, EventType::Warning, "FailedCreate", e.to_string())
                    .await;
                false
            }
        }
    }

    /// A backend report: written at once when settled, else held briefly for a newer one (see
    /// [`super::outbox`]).
    async fn report(&mut self, b: BackendPodStatus) {
        let status = pod_status(&self.pod, &b, &self.ctx.host_ip, Timestamp::now());
        self.last_backend = Some(b);
        let now = tokio::time::Instant::now();
        self.outbox.put(status, now);
        if let Some(status) = self.outbox.take_due(now) {
            self.patch_status(status).await;
        }
    }

    async fn patch_status(&mut self, status: PodStatus) {
        if self.reported.as_ref() == Some(&status) || self.pod.status.as_ref() == Some(&status) {
            self.outbox.clear();
            return;
        }
        let Some(api) = self.ctx.api(&self.pod_ref.namespace) else {
            self.outbox.retry(status, tokio::time::Instant::now());
            return;
        };
        let _permit = self.ctx.shared.writes.clone().acquire_owned().await;
        let patch = serde_json::json!({ "status": status });
        let pp = PatchParams {
            field_manager: Some(self.ctx.shared.field_manager.clone()),
            ..PatchParams::default()
        };
        let result = patch_pod_status(api, self.pod_ref.name.clone(), pp, patch).await;
        match result {
            Ok(pod) => {
                self.reported = Some(status);
                self.outbox.clear();
                if pod.metadata.uid.as_deref() == Some(self.pod_ref.uid.as_str()) {
                    self.pod.status = pod.status;
                }
            }
            // Gone: nothing to report to. Anything else: try again shortly (newer states replace it).
            Err(e) if is_status(&e, 404) => debug!(pod = %self.pod_ref, "pod gone; status dropped"),
            Err(e) => {
                debug!(pod = %self.pod_ref, error = %e, "status patch failed; retrying");
                self.outbox.retry(status, tokio::time::Instant::now());
            }
        }
    }

    /// Graceful deletion: stop in the backend within the grace period, report, then remove the object.
    async fn delete(&mut self) {
        let grace = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .unwrap_or(DEFAULT_GRACE);
        if self.created {
            self.ctx
                .event(
                    &self.pod,
                    EventType::Normal,
                    "Killing",
                    format!("Stopping pod (grace period {}s)", grace.as_secs()),
                )
                .await;
            if let Err(e) = self.ctx.provider.delete_pod(&self.pod_ref, grace).await {
                warn!(pod = %self.pod_ref, error = %e, "backend stop failed; removing the pod anyway");
            }
        }
        if !terminal(&self.pod) {
            let status = terminated_status(
                &self.pod,
                self.last_backend.as_ref(),
                &self.ctx.host_ip,
                Timestamp::now(),
            );
            self.patch_status(status).await;
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.pod_ref.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        // The API may be briefly unavailable: keep trying (capped backoff) so the pod never stays
        // Terminating; 404/409 mean someone else finished the job.
        let mut backoff = Duration::from_millis(500);
        loop {
            let Some(api) = self.ctx.api(&self.pod_ref.namespace) else {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            };
            let permit = self.ctx.shared.writes.clone().acquire_owned().await;
            let result = delete_pod(api, self.pod_ref.name.clone(), dp.clone()).await;
            drop(permit);
            match result {
                Ok(_) => {
                    info!(pod = %self.pod_ref, "pod deleted");
                    return;
                }
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => return,
                Err(e) => {
                    warn!(pod = %self.pod_ref, error = %e, "final pod delete failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// The API object vanished without graceful deletion (force delete): stop the backend work now.
    async fn gone(&mut self) {
        if self.created
            && let Err(e) = self
                .ctx
                .provider
                .delete_pod(&self.pod_ref, Duration::ZERO)
                .await
        {
            warn!(pod = %self.pod_ref, error = %e, "stopping backend work of a vanished pod failed");
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Whether an update changed what a provider may act on (spec, labels, annotations), not just status.
fn spec_changed(old: &Pod, new: &Pod) -> bool {
    old.metadata.generation != new.metadata.generation
        || old.metadata.labels != new.metadata.labels
        || old.metadata.annotations != new.metadata.annotations
        || old.spec != new.spec
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether the API shows the pod was already started by a kubelet (before a restart).
fn started_before(pod: &Pod) -> bool {
    let s = pod.status.as_ref();
    let phase_running = s.and_then(|s| s.phase.as_deref()) == Some("Running");
    let any_started = s
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.state
                    .as_ref()
                    .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
            })
        });
    phase_running || any_started
}

fn waiting_all(pod: &Pod, reason: &str, message: &str) -> BackendPodStatus {
    use crate::provider::{ContainerState, ContainerStatus};
    let spec = pod.spec.as_ref();
    let waiting = |c: &k8s_openapi::api::core::v1::Container| ContainerStatus {
        name: c.name.clone(),
        state: ContainerState::Waiting {
            reason: reason.into(),
            message: Some(message.into()),
        },
        last_termination: None,
        restart_count: 0,
        ready: false,
        image: c.image.clone().unwrap_or_default(),
        container_id: None,
    };
    BackendPodStatus {
        containers: spec
            .map(|s| s.containers.iter().map(waiting).collect())
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// Environment lookups through the API (GET per referenced object, once per pod).
struct ApiEnv(Client);

#[async_trait]
impl EnvSource for ApiEnv {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, EnvError> {
        Api::<ConfigMap>::namespaced(self.0.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| lookup(ObjectKind::ConfigMap, ns, name, e))
    }
    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, EnvError> {
        Api::<Secret>::namespaced(self.0.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| lookup(ObjectKind::Secret, ns, name, e))
    }
}

fn lookup(kind: ObjectKind, ns: &str, name: &str, e: kube::Error) -> EnvError {
    EnvError::Lookup {
        kind,
        ns: ns.into(),
        name: name.into(),
        source: Box::new(e),
    }
}

/// Owned-argument wrappers: the futures are `Send + 'static` by construction, which keeps the worker's
/// own future provably `Send` (borrowed temporaries across awaits defeat the compiler's proof).
async fn patch_pod_status(
    api: Api<Pod>,
    name: String,
    pp: PatchParams,
    patch: serde_json::Value,
) -> Result<Pod, kube::Error> {
    api.patch_status(&name, &pp, &Patch::Strategic(patch)).await
}

async fn delete_pod(api: Api<Pod>, name: String, dp: DeleteParams) -> Result<(), kube::Error> {
    api.delete(&name, &dp).await.map(|_| ())
}

type Env = std::collections::BTreeMap<String, Vec<(String, String)>>;

fn resolve_env(
    pod: Pod,
    client: Client,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Env, EnvError>> + Send>> {
    Box::pin(async move { resolve_pod_env(&pod, &ApiEnv(client)).await })
}
