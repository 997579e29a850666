//! `fleetlet run`: serve metrics and probes, win the leader election (unless disabled), then wire clients,
//! the Fleet and both controllers together and run until SIGTERM/SIGINT or until leadership is lost.
//!
//! Shutdown leaves every Node and Lease in place, so a planned restart never marks nodes NotReady. A
//! leader stops its controllers and virtual nodes first and only then releases the leader Lease, so the
//! standby that takes over is never a second writer. A leader that cannot renew its Lease for the renew
//! deadline is fenced (no write leaves the process, see [`crate::fence`]) until it renews again; it
//! exits only when another replica took the Lease.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use fleetlet_crds::consts::{FIELD_MANAGER, LABEL_VIRTUAL_NODE};
use fleetlet_crds::{DeviceBackend, VirtualNode};
use futures::StreamExt;
use kube::runtime::controller;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config, ResourceExt};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::info;
use tracing::warn;
use vk_runtime::fleet::{Fleet, FleetConfig};
use vk_runtime::node::NodeTiming;

use crate::cli::{NodeIdentityMode, RunArgs};
use crate::context::Context;
use crate::fence::WriteGate;
use crate::health::{self, Phase, Readiness};
use crate::leader::{Elector, LeaderConfig};
use crate::metrics::stack::{Retries, Sizing};
use crate::metrics::{Metrics, Sources};
use crate::ports::Ports;
use crate::reconcilers::providers::Providers;
use crate::reconcilers::{csr_approver, device_backend, prune, virtual_node};
use crate::shards::Ownership;
use crate::shards::manager::{Manager, ShardConfig};
use crate::shards::wiring::{shard_config, shard_hooks};

/// Run the operator until a termination signal (or, as leader, until leadership is lost: an error).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    background_purging();
    let config = Config::infer()
        .await
        .context("no usable kubeconfig (in-cluster or KUBECONFIG)")?;
    let metrics = Metrics::new();
    let gate = WriteGate::new();
    let client = crate::metrics::stack::client(
        config.clone(),
        "main",
        &metrics,
        Sizing::SHARED,
        Retries::Server,
        Some(&gate),
    )
    .context("building the API client")?;
    // A second client has its own connection pool: heartbeats never queue behind pod traffic.
    let heartbeat_client = crate::metrics::stack::client(
        config.clone(),
        "heartbeat",
        &metrics,
        Sizing::SHARED,
        Retries::Brief,
        Some(&gate),
    )
    .context("building the heartbeat client")?;
    let readiness = Readiness::default();
    let servers = CancellationToken::new();
    if let Some(addr) = args.metrics_bind_address {
        let router = health::metrics_router(metrics.clone());
        health::serve("metrics", addr, router, servers.clone()).await?;
    }
    if let Some(addr) = args.health_probe_bind_address {
        let router = health::health_router(readiness.clone());
        health::serve("health probes", addr, router, servers.clone()).await?;
    }
    let stop = shutdown_signal();
    // A fenced leader stopping drops its held writes instead of waiting for the API to return.
    let (stopping, shutdown_gate) = (stop.clone(), gate.clone());
    tokio::spawn(async move {
        stopping.cancelled().await;
        shutdown_gate.shutting_down();
    });
    let shared = Shared {
        client,
        heartbeat_client,
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        stop: stop.clone(),
        config,
        gate: gate.clone(),
    };
    let result = if args.shards > 1 {
        // Every replica works, each on the shards it holds; the shard Leases replace the election.
        anyhow::ensure!(
            args.leader_elect,
            "--shards > 1 coordinates replicas through Leases: it cannot run with --leader-elect=false"
        );
        lead(&args, shared, Some(shard_config(&args)?)).await
    } else if args.leader_elect {
        let cfg = LeaderConfig {
            namespace: args.namespace(),
            name: args.leader_election_id.clone(),
            identity: crate::leader::default_identity(),
            lease_duration: args.leader_elect_lease_duration,
            renew_deadline: args.leader_elect_renew_deadline,
            retry_period: args.leader_elect_retry_period,
        };
        cfg.validate()?;
        // The election's own client: the only one whose writes pass the gate it controls.
        let election_client = crate::metrics::stack::client(
            shared.config.clone(),
            "election",
            &metrics,
            Sizing::SHARED,
            Retries::Brief,
            None,
        )
        .context("building the election client")?;
        let elector = Elector::new(election_client, cfg, metrics.clone(), gate);
        let on_round = |reachable| readiness.set(Phase::Standby { reachable });
        match elector.acquire(&stop, on_round).await {
            None => Ok(()),
            Some(leading) => {
                let lost = leading.lost();
                tokio::select! {
                    r = lead(&args, shared, None) => {
                        readiness.set(Phase::Stopping);
                        if let Err(e) = leading.release().await {
                            warn!(error = %e, "releasing the leader lease failed: it will expire");
                        }
                        r
                    }
                    () = lost.cancelled() => {
                        readiness.set(Phase::Stopping);
                        Err(anyhow::anyhow!("leadership lost: exiting so that no two replicas write"))
                    }
                }
            }
        }
    } else {
        metrics.set_leader(true);
        lead(&args, shared, None).await
    };
    readiness.set(Phase::Stopping);
    servers.cancel();
    result
}

/// With jemalloc (the default build), freed memory goes back to the system on a background thread
/// within ~10 s. Without it jemalloc purges only when the process allocates, so a quiet fleet kept
/// a bring-up's freed pages resident (~13 KB per node, docs/benchmarks.md). `_RJEM_MALLOC_CONF`
/// still overrides it.
fn background_purging() {
    #[cfg(feature = "jemalloc")]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        warn!(error = %e, "no background purging: freed memory returns to the system more slowly");
    }
}

/// What [`run`] hands to the leader's work.
struct Shared {
    client: Client,
    heartbeat_client: Client,
    metrics: Metrics,
    readiness: Readiness,
    stop: CancellationToken,
    /// The connection settings the clients were built from (node identities reuse them).
    config: Config,
    /// Holds every write of the clients above while the election fences this process.
    gate: WriteGate,
}

/// Cancelled on SIGTERM or SIGINT.
fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
        info!("termination signal received");
        t.cancel();
    });
    token
}

/// The leader's work (or, sharded, this replica's share of it): the Fleet and both controllers, until
/// `stop`.
async fn lead(args: &RunArgs, shared: Shared, sharding: Option<ShardConfig>) -> anyhow::Result<()> {
    let Shared {
        client,
        heartbeat_client,
        metrics,
        readiness,
        stop,
        config,
        gate,
    } = shared;
    readiness.set(Phase::Syncing);
    let timing = NodeTiming {
        lease_duration: args.lease_duration,
        renew_interval: args.lease_renew_interval(),
        status_report_interval: args.node_status_report_interval,
        ..NodeTiming::default()
    };
    // The CA of the apiserver's client certificates, so the kubelet endpoints can authenticate it.
    let client_ca_pem = match vk_runtime::node::endpoint::cluster_client_ca(&client).await {
        Ok(Some(ca)) => Some(ca),
        Ok(None) => {
            tracing::warn!(
                "kube-system/extension-apiserver-authentication has no client-ca-file: kubelet endpoints accept bearer tokens only"
            );
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the cluster's client CA: kubelet endpoints accept bearer tokens only");
            None
        }
    };
    // Node state changes become VirtualNode reconciles through one listener for the fleet.
    let (trigger, trigger_rx) = tokio::sync::mpsc::unbounded_channel();
    let state_listener = virtual_node::forward::start(trigger.clone());
    let fleet = Fleet::start(
        client.clone(),
        heartbeat_client,
        FleetConfig {
            timing,
            node_selector: (LABEL_VIRTUAL_NODE.into(), "true".into()),
            field_manager: FIELD_MANAGER.into(),
            component: "fleetlet".into(),
            max_pod_writes: args.max_pod_writes,
            serve_kubelet_api: true,
            client_ca_pem,
            identity: crate::identity::identity_config(args, config, &client, &metrics, &gate)?,
            kubelet_api_observer: Some(metrics.kubelet_api_observer()),
            state_listener: Some(state_listener),
        },
    );
    let kubelet_address = args.kubelet_address();
    info!(%kubelet_address, namespace = %args.namespace(), port_base = args.kubelet_port_base, "starting fleetlet");

    let (backends, backend_writer) = reflector::store::<DeviceBackend>();
    let backend_api: Api<DeviceBackend> = Api::all(client.clone());
    let backend_events = reflector::reflector(
        backend_writer,
        watcher(backend_api.clone(), watcher::Config::default()).modify(prune),
    )
    .default_backoff()
    .touched_objects();

    let (backend_trigger, backend_trigger_rx) = tokio::sync::mpsc::unbounded_channel();
    let ownership = sharding.as_ref().map_or_else(Ownership::everything, |c| {
        Ownership::sharded(c.shards, Default::default())
    });
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "fleetlet".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        fleet: fleet.clone(),
        ports: Ports::new(args.kubelet_port_base, args.kubelet_port_count),
        kubelet_address,
        namespace: args.namespace(),
        recorder,
        backends,
        providers: Providers::new(metrics.clone()),
        trigger,
        finalized: Mutex::new(HashSet::new()),
        written: Default::default(),
        ownership: ownership.clone(),
    });

    let vnode_api: Api<VirtualNode> = Api::all(client.clone());
    // The controller's own cache, built here so that it keeps pruned objects.
    let (vstore, vnode_writer) = reflector::store::<VirtualNode>();
    let vnode_events = reflector::reflector(
        vnode_writer,
        watcher(vnode_api.clone(), watcher::Config::default()).modify(prune),
    )
    .applied_objects();
    let vnodes = Controller::for_stream(vnode_events, vstore.clone());
    let by_backend = vstore.clone();
    metrics.set_sources(Some(Sources {
        virtual_nodes: vstore.clone(),
        fleet: fleet.clone(),
    }));
    let shard_manager = sharding.map(|cfg| {
        let hooks = shard_hooks(&ctx, vstore.clone(), ctx.backends.clone(), backend_trigger);
        Manager::new(
            client.clone(),
            cfg,
            ownership.clone(),
            hooks,
            metrics.clone(),
        )
        .start()
    });
    let reconciled = Arc::new(Mutex::new(HashSet::new()));
    tokio::spawn(report_ready(
        vnode_api.clone(),
        reconciled.clone(),
        readiness.clone(),
    ));
    let (m, vstop) = (metrics.clone(), stop.clone());
    let vnodes = vnodes
        .watches_stream(backend_events, move |b: DeviceBackend| {
            let name = b.name_any();
            by_backend
                .state()
                .iter()
                .filter(|v| v.spec.backend_ref.name == name)
                .map(|v| ObjectRef::from_obj(&**v))
                .collect::<Vec<_>>()
        })
        .reconcile_on(UnboundedReceiverStream::new(trigger_rx))
        .graceful_shutdown_on(async move { vstop.cancelled().await })
        .run(virtual_node::reconcile, virtual_node::error_policy, ctx)
        .for_each(move |r| {
            m.observe("virtualnode", &r);
            if let Some(name) = reconciled_name(&r)
                && let Ok(mut seen) = reconciled.lock()
            {
                seen.insert(name);
            }
            async {}
        });

    let approver = (args.approve_serving_csrs && args.node_identity == NodeIdentityMode::Node)
        .then(|| {
            tokio::spawn(csr_approver::run(
                client.clone(),
                fleet.clone(),
                stop.clone(),
            ))
        });

    let backend_ctx = Arc::new(device_backend::BackendCtx {
        client: client.clone(),
        vnodes: vstore,
        ownership,
    });
    let backends = Controller::new(backend_api, watcher::Config::default())
        .watches(vnode_api, watcher::Config::default(), |v: VirtualNode| {
            Some(ObjectRef::new(&v.spec.backend_ref.name))
        })
        .reconcile_on(UnboundedReceiverStream::new(backend_trigger_rx))
        .graceful_shutdown_on(async move { stop.cancelled().await })
        .run(
            device_backend::reconcile,
            device_backend::error_policy,
            backend_ctx,
        )
        .for_each(move |r| {
            metrics.observe("devicebackend", &r);
            async {}
        });

    tokio::join!(vnodes, backends);
    if let Some(a) = approver {
        a.abort();
    }
    readiness.set(Phase::Stopping);
    // Stop heartbeats and pod handling before the leader Lease is released: the next leader must never
    // overlap with this one. Nodes and their Leases stay in place.
    for name in fleet.node_names() {
        fleet.stop_node(&name);
    }
    if let Some(m) = shard_manager {
        m.release().await;
    }
    info!("shutting down: nodes and leases stay in place");
    Ok(())
}

/// The object a controller result is about (success or reconcile failure).
fn reconciled_name<E, Q>(
    r: &Result<(ObjectRef<VirtualNode>, controller::Action), controller::Error<E, Q>>,
) -> Option<String> {
    match r {
        Ok((o, _)) => Some(o.name.clone()),
        Err(controller::Error::ReconcilerFailed(_, o)) => Some(o.name.clone()),
        Err(_) => None,
    }
}

/// Ready once every VirtualNode that existed when leadership began was reconciled once (which implies
/// the controller's cache delivered it): one list, then watch the controller's results.
async fn report_ready(
    api: Api<VirtualNode>,
    reconciled: Arc<Mutex<HashSet<String>>>,
    readiness: Readiness,
) {
    let wanted: HashSet<String> = loop {
        match api.list_metadata(&Default::default()).await {
            Ok(list) => break list.items.iter().map(|v| v.name_any()).collect(),
            Err(e) => warn!(error = %e, "listing VirtualNodes for readiness"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    };
    loop {
        let done = reconciled
            .lock()
            .map(|seen| wanted.is_subset(&seen))
            .unwrap_or(false);
        if done {
            if readiness.phase() == Phase::Syncing {
                readiness.set(Phase::Running);
            }
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
