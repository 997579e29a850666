//! `fleetlet run`: wire clients, the Fleet and both controllers together and run until SIGTERM/SIGINT.
//!
//! Shutdown leaves every Node and Lease in place and keeps leases renewing until the process exits, so a
//! planned restart never marks nodes NotReady.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use fleetlet_crds::consts::{FIELD_MANAGER, LABEL_VIRTUAL_NODE};
use fleetlet_crds::{DeviceBackend, VirtualNode};
use futures::StreamExt;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config, ResourceExt};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::info;
use vk_runtime::fleet::{Fleet, FleetConfig};
use vk_runtime::node::NodeTiming;

use crate::cli::RunArgs;
use crate::context::Context;
use crate::ports::Ports;
use crate::reconcilers::providers::Providers;
use crate::reconcilers::{device_backend, virtual_node};

/// Run the operator until a termination signal.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = Config::infer()
        .await
        .context("no usable kubeconfig (in-cluster or KUBECONFIG)")?;
    let client = Client::try_from(config.clone()).context("building the API client")?;
    // A second client has its own connection pool: heartbeats never queue behind pod traffic.
    let heartbeat_client = Client::try_from(config).context("building the heartbeat client")?;
    let timing = NodeTiming {
        lease_duration: args.lease_duration,
        renew_interval: args.lease_renew_interval,
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
        },
    );
    let kubelet_address = args.kubelet_address();
    info!(%kubelet_address, namespace = %args.namespace(), port_base = args.kubelet_port_base, "starting fleetlet");

    let (backends, backend_writer) = reflector::store::<DeviceBackend>();
    let backend_api: Api<DeviceBackend> = Api::all(client.clone());
    let backend_events = reflector::reflector(
        backend_writer,
        watcher(backend_api.clone(), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();

    let (trigger, trigger_rx) = tokio::sync::mpsc::unbounded_channel();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "fleetlet".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        fleet,
        ports: Ports::new(args.kubelet_port_base, args.kubelet_port_count),
        kubelet_address,
        namespace: args.namespace(),
        recorder,
        backends,
        providers: Providers::default(),
        trigger,
        forwarding: Mutex::new(HashSet::new()),
        last_ready: Mutex::new(HashMap::new()),
    });

    let vnode_api: Api<VirtualNode> = Api::all(client.clone());
    let vnodes = Controller::new(vnode_api.clone(), watcher::Config::default());
    let vstore = vnodes.store();
    let by_backend = vstore.clone();
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
        .shutdown_on_signal()
        .run(virtual_node::reconcile, virtual_node::error_policy, ctx)
        .for_each(|_| async {});

    let backend_ctx = Arc::new(device_backend::BackendCtx {
        client: client.clone(),
        vnodes: vstore,
    });
    let backends = Controller::new(backend_api, watcher::Config::default())
        .watches(vnode_api, watcher::Config::default(), |v: VirtualNode| {
            Some(ObjectRef::new(&v.spec.backend_ref.name))
        })
        .shutdown_on_signal()
        .run(
            device_backend::reconcile,
            device_backend::error_policy,
            backend_ctx,
        )
        .for_each(|_| async {});

    tokio::join!(vnodes, backends);
    info!("shutting down: nodes and leases stay in place");
    Ok(())
}
