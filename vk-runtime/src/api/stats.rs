//! `/stats/summary` (the kubelet's stats/v1alpha1 Summary JSON) and `/metrics/resource` (Prometheus
//! text with the series metrics-server reads), both built from [`Provider::stats`](crate::Provider::stats).

use std::fmt::Write as _;

use jiff::Timestamp;
use serde::Serialize;

use crate::provider::{StatsSummary, Usage};

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    pub time: String,
    pub usage_nano_cores: u64,
    pub usage_core_nano_seconds: u64,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    pub time: String,
    pub working_set_bytes: u64,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub node_name: String,
    pub start_time: String,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct PodReference {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    pub name: String,
    pub start_time: String,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodReference,
    pub start_time: String,
    pub containers: Vec<ContainerStats>,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
}

/// The stats/v1alpha1 `Summary`.
#[derive(Serialize, Debug, PartialEq)]
pub struct Summary {
    pub node: NodeStats,
    pub pods: Vec<PodStats>,
}

fn stamp(usage: &Usage, now: Timestamp) -> Timestamp {
    usage.timestamp.unwrap_or(now)
}

fn cpu(usage: &Usage, now: Timestamp) -> CpuStats {
    CpuStats {
        time: stamp(usage, now).to_string(),
        usage_nano_cores: usage.cpu_usage_nano_cores,
        usage_core_nano_seconds: usage.cpu_usage_core_nano_seconds,
    }
}

fn memory(usage: &Usage, now: Timestamp) -> MemoryStats {
    MemoryStats {
        time: stamp(usage, now).to_string(),
        working_set_bytes: usage.memory_working_set_bytes,
    }
}

/// Sum of a pod's containers.
fn pod_total(containers: &[(String, Usage)]) -> Usage {
    containers
        .iter()
        .fold(Usage::default(), |acc, (_, u)| Usage {
            cpu_usage_core_nano_seconds: acc
                .cpu_usage_core_nano_seconds
                .saturating_add(u.cpu_usage_core_nano_seconds),
            cpu_usage_nano_cores: acc
                .cpu_usage_nano_cores
                .saturating_add(u.cpu_usage_nano_cores),
            memory_working_set_bytes: acc
                .memory_working_set_bytes
                .saturating_add(u.memory_working_set_bytes),
            timestamp: acc.timestamp.max(u.timestamp),
        })
}

/// Build the Summary; `started` stands in for start times the provider does not report.
pub fn summary(
    node_name: &str,
    stats: &StatsSummary,
    started: Timestamp,
    now: Timestamp,
) -> Summary {
    let start = started.to_string();
    Summary {
        node: NodeStats {
            node_name: node_name.to_string(),
            start_time: start.clone(),
            cpu: cpu(&stats.node, now),
            memory: memory(&stats.node, now),
        },
        pods: stats
            .pods
            .iter()
            .map(|(pod, containers)| {
                let total = pod_total(containers);
                PodStats {
                    pod_ref: PodReference {
                        name: pod.name.clone(),
                        namespace: pod.namespace.clone(),
                        uid: pod.uid.clone(),
                    },
                    start_time: start.clone(),
                    containers: containers
                        .iter()
                        .map(|(name, u)| ContainerStats {
                            name: name.clone(),
                            start_time: start.clone(),
                            cpu: cpu(u, now),
                            memory: memory(u, now),
                        })
                        .collect(),
                    cpu: cpu(&total, now),
                    memory: memory(&total, now),
                }
            })
            .collect(),
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

/// The `/metrics/resource` text. `stats` is `None` when the provider could not report
/// (`scrape_error 1`, as the kubelet does).
pub fn resource_metrics(stats: Option<&StatsSummary>, now: Timestamp) -> String {
    let mut out = String::new();
    let Some(stats) = stats else {
        out.push_str("# HELP scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise\n");
        out.push_str("# TYPE scrape_error gauge\nscrape_error 1\n");
        return out;
    };
    let ms = |u: &Usage| stamp(u, now).as_millisecond();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64, i64)>| {
        let _ = writeln!(out, "# HELP {name} [STABLE] {help}\n# TYPE {name} {kind}");
        for (labels, value, ts) in samples {
            let _ = writeln!(out, "{name}{labels} {value} {ts}");
        }
    };
    let node = &stats.node;
    family(
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
        container_samples(stats, |u| seconds(u.cpu_usage_core_nano_seconds), ms),
    );
    family(
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set of the container in bytes",
        container_samples(stats, |u| u.memory_working_set_bytes as f64, ms),
    );
    family(
        "node_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the node in core-seconds",
        vec![(
            String::new(),
            seconds(node.cpu_usage_core_nano_seconds),
            ms(node),
        )],
    );
    family(
        "node_memory_working_set_bytes",
        "gauge",
        "Current working set of the node in bytes",
        vec![(
            String::new(),
            node.memory_working_set_bytes as f64,
            ms(node),
        )],
    );
    let pods = |f: &dyn Fn(&Usage) -> f64| -> Vec<(String, f64, i64)> {
        stats
            .pods
            .iter()
            .map(|(pod, containers)| {
                let total = pod_total(containers);
                let labels = format!(
                    "{{namespace=\"{}\",pod=\"{}\"}}",
                    escape(&pod.namespace),
                    escape(&pod.name)
                );
                (labels, f(&total), ms(&total))
            })
            .collect()
    };
    let pod_cpu = pods(&|u| seconds(u.cpu_usage_core_nano_seconds));
    let pod_mem = pods(&|u| u.memory_working_set_bytes as f64);
    family(
        "pod_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the pod in core-seconds",
        pod_cpu,
    );
    family(
        "pod_memory_working_set_bytes",
        "gauge",
        "Current working set of the pod in bytes",
        pod_mem,
    );
    family(
        "scrape_error",
        "gauge",
        "1 if there was an error while getting container metrics, 0 otherwise",
        vec![(String::new(), 0.0, now.as_millisecond())],
    );
    out
}

fn container_samples(
    stats: &StatsSummary,
    value: impl Fn(&Usage) -> f64,
    ms: impl Fn(&Usage) -> i64,
) -> Vec<(String, f64, i64)> {
    stats
        .pods
        .iter()
        .flat_map(|(pod, containers)| containers.iter().map(move |(name, u)| (pod, name, u)))
        .map(|(pod, name, u)| {
            let labels = format!(
                "{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}}",
                escape(name),
                escape(&pod.namespace),
                escape(&pod.name)
            );
            (labels, value(u), ms(u))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "stats_tests.rs"]
mod tests;
