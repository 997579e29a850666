//! `fleetlet-bench`'s command line: one subcommand per scenario. Every flag is also an environment
//! variable (`FLEETLET_BENCH_*`).

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "fleetlet-bench",
    about = "Measures fleetlet against the ambient cluster (KUBECONFIG) or the in-process test apiserver; \
             the last line of output is one JSON object"
)]
pub struct Cli {
    /// Start the in-process test apiserver even when KUBECONFIG is set (without KUBECONFIG it always is).
    #[arg(long, global = true, env = "FLEETLET_BENCH_TEST_APISERVER")]
    pub test_apiserver: bool,

    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Subcommand, Debug)]
pub enum Scenario {
    /// N VirtualNodes applied at once: seconds until every Node is Ready, against the raw API floor.
    BringUp(BringUpArgs),
    /// N Ready nodes left alone for M minutes: memory, CPU and API requests per node, NotReady flaps.
    Idle(IdleArgs),
    /// M pods created at R pods/s over N nodes: creation -> Running latency and API writes per start.
    Pods(PodsArgs),
    /// Single-stream `logs -f` throughput through a node's kubelet endpoint.
    Logs(LogsArgs),
    /// Exec round-trip latency of a 64-byte echo through a node's kubelet endpoint.
    Exec(ExecArgs),
}

/// The fleet every scenario brings up first.
#[derive(Args, Debug, Clone)]
pub struct FleetArgs {
    /// Number of mock VirtualNodes.
    #[arg(long, env = "FLEETLET_BENCH_NODES", default_value_t = 100)]
    pub nodes: usize,

    /// Concurrent API requests when the benchmark itself writes (VirtualNodes, the raw floor, pods):
    /// the 8 keep-alive connections of the floor measured in docs/benchmarks.md.
    #[arg(long, env = "FLEETLET_BENCH_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,

    /// Give up when the nodes are not all Ready after this many seconds.
    #[arg(long, env = "FLEETLET_BENCH_READY_TIMEOUT", default_value_t = 600)]
    pub ready_timeout: u64,
}

#[derive(Args, Debug, Clone)]
pub struct BringUpArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,

    /// Operator processes to start; with more than one, they share the nodes through `--shards`.
    #[arg(long, env = "FLEETLET_BENCH_REPLICAS", default_value_t = 1)]
    pub replicas: usize,

    /// `fleetlet run --shards` for every replica (1: leader election, one replica serves every node).
    #[arg(long, env = "FLEETLET_BENCH_SHARDS", default_value_t = 1)]
    pub shards: u32,
}

#[derive(Args, Debug, Clone)]
pub struct IdleArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,

    /// Length of the measured idle window, in minutes (fractions allowed: 0.25 = 15 s).
    #[arg(long, env = "FLEETLET_BENCH_MINUTES", default_value_t = 5.0)]
    pub minutes: f64,

    /// Seconds the empty operator runs before its baseline CPU time is taken (and the window over which
    /// it is measured).
    #[arg(long, env = "FLEETLET_BENCH_BASELINE_SECONDS", default_value_t = 10.0)]
    pub baseline_seconds: f64,

    /// Seconds between the last Node becoming Ready and the start of the window (bring-up settles:
    /// status reports, the first lease renewals).
    #[arg(long, env = "FLEETLET_BENCH_SETTLE_SECONDS", default_value_t = 20.0)]
    pub settle_seconds: f64,
}

#[derive(Args, Debug, Clone)]
pub struct PodsArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,

    /// Pods to create.
    #[arg(long, env = "FLEETLET_BENCH_PODS", default_value_t = 1000)]
    pub pods: usize,

    /// Creation rate, pods per second.
    #[arg(long, env = "FLEETLET_BENCH_RATE", default_value_t = 20.0)]
    pub rate: f64,

    /// Give up when the pods are not all Running after this many seconds past the last creation.
    #[arg(long, env = "FLEETLET_BENCH_RUNNING_TIMEOUT", default_value_t = 300)]
    pub running_timeout: u64,
}

/// How logs and exec reach the kubelet endpoint.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// HTTPS straight to the node's endpoint with a client certificate from the test apiserver's client
    /// CA (only with the in-process test apiserver).
    Direct,
    /// Through the apiserver's pods/log and pods/exec proxy (any cluster).
    Proxy,
}

#[derive(Args, Debug, Clone)]
pub struct LogsArgs {
    /// Bytes of log the container writes (suffixes K, M, G: powers of 1024).
    #[arg(long, env = "FLEETLET_BENCH_LOG_BYTES", default_value = "256M")]
    pub bytes: String,

    /// Length of each log line in bytes, newline included.
    #[arg(long, env = "FLEETLET_BENCH_LINE_BYTES", default_value_t = 1024)]
    pub line_bytes: usize,

    /// Default: direct with the test apiserver, proxy on a real cluster.
    #[arg(long, env = "FLEETLET_BENCH_VIA", value_enum)]
    pub via: Option<Via>,
}

#[derive(Args, Debug, Clone)]
pub struct ExecArgs {
    /// Exec round trips to time (after 5 unmeasured warm-up runs).
    #[arg(long, env = "FLEETLET_BENCH_SAMPLES", default_value_t = 200)]
    pub samples: usize,

    /// Default: direct with the test apiserver, proxy on a real cluster.
    #[arg(long, env = "FLEETLET_BENCH_VIA", value_enum)]
    pub via: Option<Via>,
}

/// `256M` -> bytes (K, M, G: powers of 1024; a plain number is bytes).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'K' | 'k') => (&s[..i], 1 << 10),
        (i, 'M' | 'm') => (&s[..i], 1 << 20),
        (i, 'G' | 'g') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M"), Some(256 << 20));
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("17"), Some(17));
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("x1"), None);
    }

    #[test]
    fn scenarios_parse() {
        let cli = Cli::try_parse_from([
            "fleetlet-bench",
            "idle",
            "--nodes",
            "5",
            "--minutes",
            "0.25",
        ])
        .expect("parses");
        let Scenario::Idle(a) = cli.scenario else {
            panic!("idle expected")
        };
        assert_eq!((a.fleet.nodes, a.minutes), (5, 0.25));
        let cli = Cli::try_parse_from([
            "fleetlet-bench",
            "--test-apiserver",
            "exec",
            "--via",
            "proxy",
        ])
        .expect("parses");
        assert!(cli.test_apiserver);
        assert!(matches!(
            cli.scenario,
            Scenario::Exec(ExecArgs {
                via: Some(Via::Proxy),
                ..
            })
        ));
    }
}
