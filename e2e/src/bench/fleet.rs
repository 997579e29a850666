//! The setup every scenario shares: a cluster (ambient or the in-process test apiserver), the operator
//! as a child process, a mock DeviceBackend with N VirtualNodes applied at once, and a Node watch that
//! says how many are Ready and counts Ready True -> not True transitions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fleetlet_crds::{DeviceBackend, VirtualNode, consts};
use fleetlet_test_apiserver::Options;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Node;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use tokio::sync::watch;

use crate::cluster::{Cluster, unique};
use crate::fixtures::{mock_backend, virtual_node};
use crate::observe::node_ready;
use crate::operator::Operator;

/// Start the cluster: the in-process test apiserver with `--test-apiserver` or without `KUBECONFIG`,
/// else the cluster `KUBECONFIG` names. The test apiserver runs its node lifecycle controller with the
/// kube-controller-manager's 40 s grace period, so a late lease shows up as a NotReady Node, and its
/// scheduler only when the scenario has pods: its controllers re-list whole resources after every
/// change (the scheduler every Node, the garbage collector every object under the store lock), which at
/// 1,000 nodes costs the shared cores more than the API work being measured. No scenario needs the
/// garbage collector.
pub async fn cluster(test_apiserver: bool, scheduler: bool) -> anyhow::Result<Cluster> {
    let kubeconfig = if test_apiserver {
        None
    } else {
        std::env::var_os("KUBECONFIG").map(std::path::PathBuf::from)
    };
    let opts = Options {
        node_lifecycle: Some(Duration::from_secs(40)),
        scheduler,
        garbage_collector: false,
        ..Options::default()
    };
    Cluster::start_at(kubeconfig, opts).await
}

/// A kubelet port base with room for `nodes` ports below the ephemeral range (32768).
fn port_base(nodes: usize) -> String {
    let block = crate::observe::port_block();
    let room = 32_000u16.saturating_sub(u16::try_from(nodes).unwrap_or(u16::MAX));
    if room <= 10_000 {
        return "10000".into();
    }
    (10_000 + (block - 10_000) % (room - 10_000)).to_string()
}

/// Start `fleetlet run` for up to `nodes` nodes and wait until it leads (its metrics say so).
pub async fn start_operator(c: &Cluster, nodes: usize) -> anyhow::Result<Operator> {
    let base = port_base(nodes);
    let mut op = Operator::start(c, &["--kubelet-port-base", &base])?;
    let url = op.metrics_url().context("metrics address")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, body)) = crate::probe::get(&url).await
            && body.lines().any(|l| l.trim() == "fleetlet_leader 1")
        {
            op.set_log_tail_on_drop(false);
            return Ok(op);
        }
        anyhow::ensure!(op.is_running(), "fleetlet exited during start-up");
        anyhow::ensure!(
            Instant::now() < deadline,
            "fleetlet did not lead within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Start `replicas` operators with `--shards shards` sharing one shard group, each with room for every
/// node's port (a replica may end up serving them all), and wait until every shard is held.
pub async fn start_sharded(
    c: &Cluster,
    nodes: usize,
    replicas: usize,
    shards: u32,
) -> anyhow::Result<Vec<Operator>> {
    anyhow::ensure!(
        replicas >= 1 && shards >= 1,
        "--replicas and --shards must be at least 1"
    );
    if replicas == 1 && shards == 1 {
        return Ok(vec![start_operator(c, nodes).await?]);
    }
    let width = u32::try_from(nodes + 1).unwrap_or(u32::MAX);
    let group = unique("bench-shard");
    let shards_arg = shards.to_string();
    let mut ops = Vec::new();
    for i in 0..replicas {
        let base = u32::try_from(i).unwrap_or(u32::MAX).saturating_mul(width) + 10_000;
        anyhow::ensure!(
            base.saturating_add(width) <= 32_000,
            "{replicas} replicas x {nodes} ports do not fit below the ephemeral port range"
        );
        let base = base.to_string();
        ops.push(Operator::start(
            c,
            &[
                "--kubelet-port-base",
                &base,
                "--shards",
                &shards_arg,
                "--leader-election-id",
                &group,
            ],
        )?);
    }
    // The clock starts once the shards are spread: every shard held and every replica holding its
    // share. Held by the first replica alone, shards would move while the nodes come up (each move a
    // re-registration), which measures the replicas' start-up order rather than the bring-up.
    let share = shards / u32::try_from(replicas).unwrap_or(u32::MAX);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut each = Vec::with_capacity(ops.len());
        for op in &mut ops {
            anyhow::ensure!(op.is_running(), "a fleetlet replica exited during start-up");
            let url = op.metrics_url().context("metrics address")?;
            let held = match crate::probe::get(&url).await {
                Ok((200, body)) => body
                    .lines()
                    .find_map(|l| l.strip_prefix("fleetlet_shards_held "))
                    .and_then(|v| v.trim().parse::<u32>().ok())
                    .unwrap_or(0),
                _ => 0,
            };
            each.push(held);
        }
        let held: u32 = each.iter().sum();
        if held == shards && each.iter().all(|h| *h >= share) {
            for op in &mut ops {
                op.set_log_tail_on_drop(false);
            }
            return Ok(ops);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the replicas did not spread the {shards} shards within 60 s (held: {each:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A mock DeviceBackend and N VirtualNodes on it.
pub struct Fleet {
    pub backend: String,
    pub nodes: Vec<String>,
}

impl Fleet {
    pub fn new(n: usize) -> Self {
        let backend = unique("bench");
        let nodes = (0..n).map(|i| format!("{backend}-{i:04}")).collect();
        Self { backend, nodes }
    }

    /// Create the backend and the VirtualNodes, `concurrency` requests at a time (kubectl apply would
    /// take a GET and a POST per object, one after the other).
    pub async fn apply(&self, c: &Cluster, concurrency: usize) -> anyhow::Result<()> {
        let backends: Api<DeviceBackend> = Api::all(c.client.clone());
        let backend: DeviceBackend = serde_yaml_ng::from_str(&mock_backend(&self.backend))?;
        backends.create(&PostParams::default(), &backend).await?;
        let vns: Api<VirtualNode> = Api::all(c.client.clone());
        stream::iter(self.nodes.iter().map(|name| {
            let vns = vns.clone();
            async move {
                let vn: VirtualNode = serde_yaml_ng::from_str(&virtual_node(name, &self.backend))?;
                vns.create(&PostParams::default(), &vn).await?;
                anyhow::Ok(())
            }
        }))
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
        Ok(())
    }

    /// Wait until every VirtualNode's status says Ready and, where it has one, CertificatesReady (the
    /// operator's work for the bring-up is done: statuses, serving certificates, Events). Seconds waited.
    pub async fn wait_settled(&self, c: &Cluster, timeout: Duration) -> anyhow::Result<f64> {
        let started = Instant::now();
        let vns: Api<VirtualNode> = Api::all(c.client.clone());
        let ours = |vn: &VirtualNode| vn.spec.backend_ref.name == self.backend;
        let done = |vn: &VirtualNode| {
            let conds = vn.status.as_ref().map(|s| &s.conditions[..]).unwrap_or(&[]);
            let ok = |t: &str| {
                conds
                    .iter()
                    .find(|c| c.type_ == t)
                    .map(|c| c.status == "True")
            };
            ok("Ready") == Some(true) && ok("CertificatesReady") != Some(false)
        };
        loop {
            let list = vns.list(&Default::default()).await?;
            let settled = list.items.iter().filter(|v| ours(v) && done(v)).count();
            if settled >= self.nodes.len() {
                return Ok(started.elapsed().as_secs_f64());
            }
            anyhow::ensure!(
                started.elapsed() < timeout,
                "only {settled} of {} VirtualNodes settled after {timeout:?}",
                self.nodes.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// On a real cluster: delete the VirtualNodes (the operator, still running, removes their Nodes and
    /// Leases) and the backend. The test apiserver is simply dropped.
    pub async fn remove(&self, c: &Cluster, concurrency: usize) -> anyhow::Result<()> {
        if !c.is_real() {
            return Ok(());
        }
        let vns: Api<VirtualNode> = Api::all(c.client.clone());
        stream::iter(self.nodes.iter().map(|name| {
            let vns = vns.clone();
            async move { vns.delete(name, &Default::default()).await.map(|_| ()) }
        }))
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
        let backends: Api<DeviceBackend> = Api::all(c.client.clone());
        backends.delete(&self.backend, &Default::default()).await?;
        Ok(())
    }
}

/// What the Node watch has seen.
#[derive(Default)]
struct Seen {
    ready: HashMap<String, bool>,
    not_ready_transitions: u64,
}

/// A watch of the fleet's Nodes (by the backend label), running until dropped.
pub struct ReadyWatch {
    seen: Arc<Mutex<Seen>>,
    ready_count: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadyWatch {
    pub fn start(c: &Cluster, backend: &str) -> Self {
        let nodes: Api<Node> = Api::all(c.client.clone());
        let cfg =
            watcher::Config::default().labels(&format!("{}={backend}", consts::LABEL_BACKEND));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (tx, ready_count) = watch::channel(0);
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            let mut events = watcher(nodes, cfg)
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(ev) = events.next().await {
                let Ok(node) = ev else { continue };
                let Some(name) = node.meta().name.clone() else {
                    continue;
                };
                let ready = node_ready(&node);
                let Ok(mut s) = shared.lock() else { return };
                let was = s.ready.insert(name, ready);
                if was == Some(true) && !ready {
                    s.not_ready_transitions += 1;
                }
                let count = s.ready.values().filter(|r| **r).count();
                tx.send_replace(count);
            }
        });
        Self {
            seen,
            ready_count,
            task,
        }
    }

    /// Wait until `n` Nodes are Ready; fails after `timeout` saying how many were.
    pub async fn wait_ready(&mut self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let waited = tokio::time::timeout(timeout, self.ready_count.wait_for(|c| *c >= n))
            .await
            .map(|r| r.map(|_| ()));
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => anyhow::bail!("the Node watch ended"),
            Err(_) => anyhow::bail!(
                "only {} of {n} Nodes Ready after {timeout:?}",
                *self.ready_count.borrow()
            ),
        }
    }

    /// Ready True -> not True transitions seen so far.
    pub fn not_ready_transitions(&self) -> u64 {
        self.seen.lock().map_or(0, |s| s.not_ready_transitions)
    }

    /// Nodes Ready now.
    pub fn ready(&self) -> usize {
        *self.ready_count.borrow()
    }
}

impl Drop for ReadyWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Apply `fleet` and time until all its Nodes are Ready: (seconds until all Ready, seconds the
/// creates took). The watch is returned so that later phases keep counting transitions.
pub async fn bring_up(
    c: &Cluster,
    fleet: &Fleet,
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<(f64, f64, ReadyWatch)> {
    let mut ready = ReadyWatch::start(c, &fleet.backend);
    let started = Instant::now();
    fleet.apply(c, concurrency).await?;
    let applied = started.elapsed().as_secs_f64();
    ready.wait_ready(fleet.nodes.len(), timeout).await?;
    Ok((started.elapsed().as_secs_f64(), applied, ready))
}
