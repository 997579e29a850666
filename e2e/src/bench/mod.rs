//! `fleetlet-bench`: fleet-scale measurements of the real `fleetlet` binary (issue 7). Each scenario
//! starts the operator as a child process against the ambient cluster or the in-process test apiserver,
//! drives its load and returns one JSON object; `docs/benchmarks.md` says how to read it.

pub mod cli;
pub mod fleet;
pub mod floor;
pub mod measure;
pub mod nodes;
pub mod pods;
pub mod streams;

use serde_json::Value;

use cli::{Cli, Scenario};

/// Run the chosen scenario; its figures plus what was measured where.
pub async fn run(cli: &Cli) -> anyhow::Result<Value> {
    let scheduler = !matches!(cli.scenario, Scenario::BringUp(_) | Scenario::Idle(_));
    let c = fleet::cluster(cli.test_apiserver, scheduler).await?;
    let started = std::time::Instant::now();
    let (name, nodes, mut out) = match &cli.scenario {
        Scenario::BringUp(a) => ("bring-up", a.fleet.nodes, nodes::bring_up(&c, a).await?),
        Scenario::Idle(a) => ("idle", a.fleet.nodes, nodes::idle(&c, a).await?),
        Scenario::Pods(a) => ("pods", a.fleet.nodes, pods::pods(&c, a).await?),
        Scenario::Logs(a) => ("logs", 1, streams::logs(&c, a).await?),
        Scenario::Exec(a) => ("exec", 1, streams::exec(&c, a).await?),
    };
    if let Value::Object(m) = &mut out {
        m.insert("scenario".into(), name.into());
        m.insert("nodes".into(), nodes.into());
        let cluster = if c.is_real() {
            "kubeconfig"
        } else {
            "test-apiserver (in-process)"
        };
        m.insert("cluster".into(), cluster.into());
        m.insert(
            "operator".into(),
            crate::operator::binary()?.display().to_string().into(),
        );
        m.insert(
            "cpus".into(),
            std::thread::available_parallelism()
                .map_or(0, |n| n.get())
                .into(),
        );
        m.insert("loadavg".into(), loadavg().into());
        m.insert(
            "elapsed_seconds".into(),
            measure::round(started.elapsed().as_secs_f64(), 1).into(),
        );
    }
    Ok(out)
}

/// `/proc/loadavg`'s three load averages at the end of the run (how busy the machine was).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
