//! The node scenarios: `bring-up` (time to Ready against the raw API floor) and `idle` (memory, CPU
//! and API requests per node above an empty operator, NotReady flaps).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::cli::{BringUpArgs, IdleArgs};
use super::fleet::{Fleet, bring_up as apply_and_wait, start_operator, start_sharded};
use super::measure::{self, WRITE_VERBS, round};
use crate::cluster::Cluster;

/// `bring-up --nodes N`.
pub async fn bring_up(c: &Cluster, a: &BringUpArgs) -> anyhow::Result<Value> {
    let (n, conc) = (a.fleet.nodes, a.fleet.concurrency);
    eprintln!("raw API floor: {n} Nodes + Leases + Ready status, {conc} at a time");
    let floor = super::floor::measure(c, n, conc).await?;
    eprintln!("floor: {floor:.2} s; starting {} operator(s)", a.replicas);
    let ops = start_sharded(c, n, a.replicas, a.shards).await?;
    let fleet = Fleet::new(n);
    let before = scrape_all(&ops).await?;
    let started = Instant::now();
    eprintln!("applying {n} VirtualNodes");
    let timeout = Duration::from_secs(a.fleet.ready_timeout);
    let (seconds, applied, _watch) = apply_and_wait(c, &fleet, conc, timeout).await?;
    eprintln!("all {n} Nodes Ready after {seconds:.2} s");
    let after = scrape_all(&ops).await?;
    let by_resource = writes_by_resource(c, started, n);
    // What is left after the Nodes are Ready (VirtualNode statuses, serving certificates, Events).
    let settled = seconds + fleet.wait_settled(c, timeout).await?;
    eprintln!("all {n} VirtualNodes settled after {settled:.2} s");
    let settled_requests = scrape_all(&ops).await?;
    let settled_by_resource = writes_by_resource(c, started, n);
    let mut rss = 0;
    for op in &ops {
        rss += measure::sample(op.pid().context("operator pid")?)?.rss_kb;
    }
    fleet.remove(c, conc).await?;
    let d = measure::delta(&before, &after);
    let all = measure::delta(&before, &settled_requests);
    let writes = |d: &measure::Requests| {
        round(
            measure::total(d, |_| true, |v| WRITE_VERBS.contains(&v)) / n.max(1) as f64,
            2,
        )
    };
    Ok(json!({
        "bring_up_seconds": round(seconds, 3),
        "floor_seconds": round(floor, 3),
        "ratio": round(seconds / floor.max(1e-9), 3),
        "apply_seconds": round(applied, 3),
        "replicas": a.replicas,
        "shards": a.shards,
        "operator_rss_kb_after": rss,
        "api_requests": measure::to_json(&d, 1.0),
        "api_writes_per_node": writes(&d),
        "writes_by_resource_per_node": by_resource,
        "settled_seconds": round(settled, 3),
        "settled_api_writes_per_node": writes(&all),
        "settled_writes_by_resource_per_node": settled_by_resource,
    }))
}

/// With the in-process test apiserver: every write from `since` on, per node, by `verb resource[/sub]
/// code` (the benchmark's own VirtualNode creates included: `create virtualnodes 201` = 1). `null` on a
/// real cluster, whose request log is not at hand.
fn writes_by_resource(c: &Cluster, since: Instant, n: usize) -> Value {
    let Some(api) = c.apiserver.as_ref() else {
        return Value::Null;
    };
    let mut counts = std::collections::BTreeMap::<String, f64>::new();
    for r in api.requests().iter().filter(|r| r.at >= since) {
        if !WRITE_VERBS.contains(&r.verb.as_str()) {
            continue;
        }
        let sub = if r.subresource.is_empty() {
            String::new()
        } else {
            format!("/{}", r.subresource)
        };
        *counts
            .entry(format!("{} {}{sub} {}", r.verb, r.resource, r.code))
            .or_default() += 1.0;
    }
    counts
        .into_iter()
        .map(|(k, v)| (k, json!(round(v / n.max(1) as f64, 2))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Every replica's API request counters, added up.
async fn scrape_all(ops: &[crate::operator::Operator]) -> anyhow::Result<measure::Requests> {
    let mut sum = measure::Requests::new();
    for op in ops {
        for (k, v) in measure::scrape(&op.metrics_url().context("metrics url")?).await? {
            *sum.entry(k).or_default() += v;
        }
    }
    Ok(sum)
}

async fn pause(seconds: f64) {
    tokio::time::sleep(Duration::from_secs_f64(seconds.max(0.0))).await;
}

/// `idle --nodes N --minutes M`.
pub async fn idle(c: &Cluster, a: &IdleArgs) -> anyhow::Result<Value> {
    let n = a.fleet.nodes;
    anyhow::ensure!(
        n > 0 && a.minutes > 0.0,
        "--nodes and --minutes must be positive"
    );
    let mut op = start_operator(c, n).await?;
    let pid = op.pid().context("operator pid")?;
    let url = op.metrics_url().context("metrics url")?;
    eprintln!("empty operator baseline over {} s", a.baseline_seconds);
    let (b0, r0) = (measure::sample(pid)?, measure::scrape(&url).await?);
    pause(a.baseline_seconds).await;
    let (b1, r1) = (measure::sample(pid)?, measure::scrape(&url).await?);
    let baseline_mc = measure::millicores(&b0, &b1);
    // The process-wide traffic of an empty operator (leader election: a GET and a PUT every 2 s), per
    // minute: subtracted like its RSS and CPU, so that per-node figures do not depend on N.
    let baseline_minutes = b1.at.duration_since(b0.at).as_secs_f64() / 60.0;
    let baseline = measure::delta(&r0, &r1);
    let fleet = Fleet::new(n);
    let timeout = Duration::from_secs(a.fleet.ready_timeout);
    let (bring_up, _, watch) = apply_and_wait(c, &fleet, a.fleet.concurrency, timeout).await?;
    eprintln!(
        "{n} Nodes Ready after {bring_up:.2} s; settling {} s",
        a.settle_seconds
    );
    pause(a.settle_seconds).await;

    let (w0, m0, t0) = (
        measure::sample(pid)?,
        measure::scrape(&url).await?,
        watch.not_ready_transitions(),
    );
    let window = Instant::now();
    eprintln!("idle window: {} min", a.minutes);
    pause(a.minutes * 60.0).await;
    let minutes = window.elapsed().as_secs_f64() / 60.0;
    if !op.is_running() {
        let logs = op.logs();
        let tail: Vec<&str> = logs.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        anyhow::bail!(
            "fleetlet exited during the idle window; its log ends:\n{}",
            tail.join("\n")
        );
    }
    let (w1, m1, t1) = (
        measure::sample(pid)?,
        measure::scrape(&url).await?,
        watch.not_ready_transitions(),
    );
    let ready_at_end = watch.ready();
    fleet.remove(c, a.fleet.concurrency).await?;

    let node_minutes = n as f64 * minutes;
    let d = measure::delta(&m0, &m1);
    let is_write = |v: &str| WRITE_VERBS.contains(&v);
    let above = |verb: &dyn Fn(&str) -> bool| {
        let base = measure::total(&baseline, |_| true, verb) / baseline_minutes.max(1e-9);
        (measure::total(&d, |_| true, verb) - base * minutes) / node_minutes
    };
    let raw = |verb: &dyn Fn(&str) -> bool| measure::total(&d, |_| true, verb) / node_minutes;
    let rss_above = w1.rss_kb as f64 - b1.rss_kb as f64;
    Ok(json!({
        "minutes": round(minutes, 3),
        "bring_up_seconds": round(bring_up, 3),
        "rss_kb_per_node": round(rss_above / n as f64, 2),
        "rss_anon_kb_per_node": round((w1.rss_anon_kb as f64 - b1.rss_anon_kb as f64) / n as f64, 2),
        "cpu_millicores_per_node": round((measure::millicores(&w0, &w1) - baseline_mc) / n as f64, 4),
        "writes_per_node_minute": round(above(&is_write), 3),
        "gets_per_node_minute": round(above(&|v| v == "get"), 3),
        "writes_per_node_minute_raw": round(raw(&is_write), 3),
        "gets_per_node_minute_raw": round(raw(&|v| v == "get"), 3),
        "baseline_requests_per_minute": measure::to_json(&baseline, 1.0 / baseline_minutes.max(1e-9)),
        "not_ready_transitions": t1 - t0,
        "not_ready_transitions_since_apply": t1,
        "ready_at_end": ready_at_end,
        "baseline_rss_kb": b1.rss_kb,
        "baseline_cpu_millicores": round(baseline_mc, 2),
        "operator_rss_kb": w1.rss_kb,
        "operator_cpu_millicores": round(measure::millicores(&w0, &w1), 2),
        "requests_per_node_minute": measure::to_json(&d, 1.0 / node_minutes),
    }))
}
