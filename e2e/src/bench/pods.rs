//! `pods --nodes N --pods M --rate R`: pod startup latency as the Kubernetes SLO defines it (creation
//! to observed running, no image pull) and the operator's API writes per pod start.
//!
//! The clock starts when the benchmark sends the create (creationTimestamp has one-second resolution,
//! and the send is never later than it) and stops when a watch event first shows the pod Running with
//! every container running. A watch, not polling, so the figure carries no polling interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::cli::PodsArgs;
use super::fleet::{Fleet, bring_up, start_operator};
use super::measure::{self, percentile, round};
use crate::cluster::{Cluster, unique};
use crate::fixtures::pod_on;
use crate::kubelet::running;

/// Records when each pod of a namespace is first seen running.
struct RunningWatch {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    count: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningWatch {
    fn start(pods: Api<Pod>) -> Self {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let (tx, count) = watch::channel(0);
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            let mut events = watcher(pods, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(ev) = events.next().await {
                let Ok(pod) = ev else { continue };
                if !running(&pod) {
                    continue;
                }
                let Some(name) = pod.meta().name.clone() else {
                    continue;
                };
                let Ok(mut s) = shared.lock() else { return };
                s.entry(name).or_insert_with(Instant::now);
                tx.send_replace(s.len());
            }
        });
        Self { seen, count, task }
    }
}

impl Drop for RunningWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn pods(c: &Cluster, a: &PodsArgs) -> anyhow::Result<Value> {
    let (n, m) = (a.fleet.nodes, a.pods);
    anyhow::ensure!(
        n > 0 && m > 0 && a.rate > 0.0,
        "--nodes, --pods and --rate must be positive"
    );
    let op = start_operator(c, n).await?;
    let url = op.metrics_url().context("metrics url")?;
    let fleet = Fleet::new(n);
    let timeout = Duration::from_secs(a.fleet.ready_timeout);
    let (ready_seconds, _, _nodes) = bring_up(c, &fleet, a.fleet.concurrency, timeout).await?;
    eprintln!(
        "{n} Nodes Ready after {ready_seconds:.2} s; creating {m} pods at {} /s",
        a.rate
    );
    let ns = unique("bench-pods");
    c.ensure_namespace(&ns).await?;
    let api: Api<Pod> = Api::namespaced(c.client.clone(), &ns);
    let mut watch = RunningWatch::start(api.clone());
    // Let the watch's initial list finish, so no Running event can be missed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = measure::scrape(&url).await?;

    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let start = tokio::time::Instant::now();
    let mut creates = Vec::with_capacity(m);
    for i in 0..m {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / a.rate)).await;
        let name = format!("p-{i:05}");
        let pod: Pod = serde_json::from_value(pod_on(&ns, &name, &fleet.nodes[i % n]))?;
        let (api, sent) = (api.clone(), sent.clone());
        creates.push(tokio::spawn(async move {
            if let Ok(mut s) = sent.lock() {
                s.insert(name, Instant::now());
            }
            api.create(&PostParams::default(), &pod).await.map(|_| ())
        }));
    }
    let created_in = start.elapsed().as_secs_f64();
    for c in creates {
        c.await??;
    }
    let waited = tokio::time::timeout(
        Duration::from_secs(a.running_timeout),
        watch.count.wait_for(|k| *k >= m),
    )
    .await
    .map(|r| r.map(|_| ()));
    let running_count = *watch.count.borrow();
    anyhow::ensure!(
        matches!(waited, Ok(Ok(()))),
        "only {running_count} of {m} pods Running {} s after the last create",
        a.running_timeout
    );
    // Trailing status patches (Ready conditions after Running) belong to the start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = measure::scrape(&url).await?;

    let latencies_ms: Vec<f64> = {
        let sent = sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let seen = watch.seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        sent.iter()
            .filter_map(|(name, t0)| {
                Some(seen.get(name)?.saturating_duration_since(*t0).as_secs_f64() * 1e3)
            })
            .collect()
    };
    let _ = c
        .kubectl(&["delete", "namespace", &ns, "--wait=false"])
        .await;
    fleet.remove(c, a.fleet.concurrency).await?;
    let d = measure::delta(&before, &after);
    // Pod work is creates (Events) and patches (pod status, VirtualNode status) by the operator's own
    // client and, with node identities, the nodes' clients; lease renewals are updates (PUT) and are
    // counted apart, with whichever client made them.
    let per_pod = |client: &dyn Fn(&str) -> bool, verb: &dyn Fn(&str) -> bool| {
        round(measure::total(&d, client, verb) / m as f64, 3)
    };
    let pod_work = |v: &str| v == "create" || v == "patch" || v == "delete";
    Ok(json!({
        "pods": m,
        "rate": a.rate,
        "create_seconds": round(created_in, 3),
        "p50_ms": percentile(&latencies_ms, 50.0).map(|x| round(x, 1)),
        "p99_ms": percentile(&latencies_ms, 99.0).map(|x| round(x, 1)),
        "max_ms": percentile(&latencies_ms, 100.0).map(|x| round(x, 1)),
        "writes_per_pod": per_pod(&|c| c == "main" || c == "node", &pod_work),
        "operator_writes_per_pod": per_pod(&|c| c == "main", &pod_work),
        "heartbeat_writes_per_pod": per_pod(&|_| true, &|v| v == "update"),
        "api_requests": measure::to_json(&d, 1.0),
        "latency": "bench create sent -> first watch event with phase Running and every container running",
    }))
}
