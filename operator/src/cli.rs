//! Command line: `fleetlet run` and `fleetlet crds`. Every flag is also an environment variable.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "fleetlet",
    version,
    about = "Turns devices that cannot run a kubelet into Kubernetes nodes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the operator against the ambient kubeconfig (in-cluster or KUBECONFIG).
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
}

/// Log output format.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Parser, Debug, Clone)]
pub struct RunArgs {
    /// Address the virtual nodes' kubelet endpoints listen on and advertise as the Nodes' InternalIP.
    /// Defaults to POD_IP, else 127.0.0.1.
    #[arg(long, env = "FLEETLET_KUBELET_ADDRESS")]
    pub kubelet_address: Option<IpAddr>,

    /// First port of the range each virtual node's kubelet endpoint is allocated from (one per node).
    #[arg(long, env = "FLEETLET_KUBELET_PORT_BASE", default_value_t = 10250)]
    pub kubelet_port_base: u16,

    /// Size of the kubelet port range: the most virtual nodes this process runs.
    #[arg(long, env = "FLEETLET_KUBELET_PORT_COUNT", default_value_t = 5000)]
    pub kubelet_port_count: u16,

    /// Namespace holding the operator's own Secrets and Leases. Defaults to POD_NAMESPACE, else fleetlet-system.
    #[arg(long, env = "FLEETLET_NAMESPACE")]
    pub namespace: Option<String>,

    /// Node lease renewal interval (a kubelet renews every 10s) [default: 10s, 20s with --economy].
    #[arg(long, env = "FLEETLET_LEASE_RENEW_INTERVAL", value_parser = parse_duration)]
    pub lease_renew_interval: Option<Duration>,

    /// Economy mode for large, quiet fleets: node Leases renewed every 20s instead of 10s (unless
    /// --lease-renew-interval says otherwise). Halves the idle API writes, at the cost of one missed
    /// renewal fewer before NotReady (see docs/operations.md).
    #[arg(long, env = "FLEETLET_ECONOMY", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub economy: bool,

    /// Node lease duration (a kubelet's is 40s).
    #[arg(long, env = "FLEETLET_LEASE_DURATION", default_value = "40s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// Node status is patched on change and at least this often.
    #[arg(long, env = "FLEETLET_NODE_STATUS_REPORT_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub node_status_report_interval: Duration,

    /// Whose identity virtual nodes write their Node, Lease, pod status and Events with: `node` (each
    /// node its own CSR-issued `system:node:<name>` certificate and a CSR-issued serving certificate, as a
    /// kubelet; works with the Node authorizer and NodeRestriction) or `operator` (the operator's own
    /// identity and self-signed serving certificates: no CSRs, one shared connection; see docs/security.md).
    #[arg(long, env = "FLEETLET_NODE_IDENTITY", value_enum, default_value_t = NodeIdentityMode::Node)]
    pub node_identity: NodeIdentityMode,

    /// Approve the virtual nodes' kubelet-serving CSRs after validating them (requester == CN == a node
    /// this operator runs, SANs == its addresses, bounded lifetime). `false` leaves them to an external
    /// approver.
    #[arg(long, env = "FLEETLET_APPROVE_SERVING_CSRS", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub approve_serving_csrs: bool,

    /// Lifetime requested for node certificates (CSR `expirationSeconds`, at least 10m); unset: the
    /// signer's default (kube-controller-manager: `--cluster-signing-duration`, one year by default).
    #[arg(long, env = "FLEETLET_NODE_CERTIFICATE_DURATION", value_parser = parse_duration)]
    pub node_certificate_duration: Option<Duration>,

    /// How long to wait for a node CSR to be approved and signed before retrying (with backoff).
    #[arg(long, env = "FLEETLET_CSR_APPROVAL_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub csr_approval_timeout: Duration,

    /// Most concurrent pod API writes across all virtual nodes.
    #[arg(long, env = "FLEETLET_MAX_POD_WRITES", default_value_t = 64)]
    pub max_pod_writes: usize,

    /// Log format.
    #[arg(long, env = "FLEETLET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Address of the Prometheus `/metrics` endpoint (`:8080` = every interface); `0` disables it.
    #[arg(long, env = "FLEETLET_METRICS_BIND_ADDRESS", default_value = ":8080", value_parser = parse_bind_address)]
    pub metrics_bind_address: BindAddress,

    /// Address of the `/healthz` and `/readyz` probes; `0` disables them.
    #[arg(long, env = "FLEETLET_HEALTH_PROBE_BIND_ADDRESS", default_value = ":8081", value_parser = parse_bind_address)]
    pub health_probe_bind_address: BindAddress,

    /// Elect a leader among replicas through a Lease in the operator namespace; only the leader runs
    /// controllers and virtual nodes. Disable only when exactly one replica can ever run.
    #[arg(long, env = "FLEETLET_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_elect: bool,

    /// Split the VirtualNodes into this many shards held by the replicas through Leases in the operator
    /// namespace: every replica runs virtual kubelets for the shards it holds, and a dead replica's
    /// shards move to the others. 1 (the default): one leader runs every node. Use about twice the
    /// replica count; every replica must run with the same value.
    #[arg(long, env = "FLEETLET_SHARDS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub shards: u32,

    /// Name of the leader election Lease.
    #[arg(
        long,
        env = "FLEETLET_LEADER_ELECTION_ID",
        default_value = "fleetlet-leader"
    )]
    pub leader_election_id: String,

    /// How long a standby waits after the last observed renewal before taking over (client-go: 15s).
    #[arg(long, env = "FLEETLET_LEADER_ELECT_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,

    /// A leader that could not renew for this long holds every write until it renews (client-go's
    /// leader stops instead); it stops only when another replica took the Lease (client-go: 10s).
    #[arg(long, env = "FLEETLET_LEADER_ELECT_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub leader_elect_renew_deadline: Duration,

    /// Interval between election attempts and renewals (client-go: 2s).
    #[arg(long, env = "FLEETLET_LEADER_ELECT_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: Duration,
}

/// Whose identity virtual nodes write with (`--node-identity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NodeIdentityMode {
    /// Each node its own CSR-issued certificates.
    Node,
    /// The operator's identity for every node.
    Operator,
}

/// A listen address; `None` = disabled.
pub type BindAddress = Option<SocketAddr>;

/// Parse controller-runtime style bind addresses: `:8080` (all interfaces), `127.0.0.1:8080`,
/// `[::1]:8080`, `localhost:8080`, or `0` to disable.
pub fn parse_bind_address(s: &str) -> Result<BindAddress, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(None);
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("invalid bind address {s:?}: expected HOST:PORT, :PORT or 0"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("invalid port in bind address {s:?}"))?;
    let ip: IpAddr = match host.trim_start_matches('[').trim_end_matches(']') {
        "" => IpAddr::from([0, 0, 0, 0]),
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        h => h
            .parse()
            .map_err(|_| format!("invalid host in bind address {s:?}: use an IP address"))?,
    };
    Ok(Some(SocketAddr::new(ip, port)))
}

impl RunArgs {
    /// The node Lease renewal interval after defaults: the flag, else 20s in economy mode, else 10s.
    pub fn lease_renew_interval(&self) -> Duration {
        self.lease_renew_interval.unwrap_or(if self.economy {
            ECONOMY_RENEW_INTERVAL
        } else {
            Duration::from_secs(10)
        })
    }

    /// The kubelet address after defaults: flag, else POD_IP, else loopback.
    pub fn kubelet_address(&self) -> IpAddr {
        self.kubelet_address
            .or_else(|| std::env::var("POD_IP").ok().and_then(|s| s.parse().ok()))
            .unwrap_or(IpAddr::from([127, 0, 0, 1]))
    }

    /// The operator namespace after defaults: flag, else POD_NAMESPACE, else fleetlet-system.
    pub fn namespace(&self) -> String {
        self.namespace
            .clone()
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| "fleetlet-system".into())
    }
}

/// Node Lease renewal interval in economy mode: two renewals per node-monitor grace period (40-50s).
pub const ECONOMY_RENEW_INTERVAL: Duration = Duration::from_secs(20);

/// Parse `500ms`, `10s`, `5m`, `1h` (or a plain number of seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 10s, 500ms, 5m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s, m or h")),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("duration {s:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Run the chosen command.
pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crds => {
            print!("{}", fleetlet_crds::generate::crds_yaml());
            Ok(())
        }
        Command::Run(args) => {
            crate::telemetry::init(args.log_format);
            crate::run::run(*args).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10d").is_err());
    }

    #[test]
    fn flags_parse_with_defaults() {
        let cli =
            Cli::try_parse_from(["fleetlet", "run", "--kubelet-address", "127.0.0.1"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run expected")
        };
        assert_eq!(args.kubelet_port_base, 10250);
        assert_eq!(args.lease_renew_interval(), Duration::from_secs(10));
        assert!(!args.economy);
        assert_eq!(args.kubelet_address().to_string(), "127.0.0.1");
        assert_eq!(
            args.metrics_bind_address,
            Some("0.0.0.0:8080".parse().unwrap())
        );
        assert_eq!(
            args.health_probe_bind_address,
            Some("0.0.0.0:8081".parse().unwrap())
        );
        assert!(args.leader_elect);
        assert_eq!(args.leader_elect_lease_duration, Duration::from_secs(15));
        assert_eq!(args.leader_elect_renew_deadline, Duration::from_secs(10));
        assert_eq!(args.leader_elect_retry_period, Duration::from_secs(2));
    }

    /// Set in the child process of [`an_environment_variable_sets_its_flag`].
    const CHILD: &str = "FLEETLET_CLI_TEST_CHILD";

    /// Every flag is also a `FLEETLET_*` variable. The variable is set for a child run of this very
    /// test (setting it here would need `unsafe` and race other tests), which parses and checks it.
    #[test]
    fn an_environment_variable_sets_its_flag() {
        if std::env::var_os(CHILD).is_some() {
            let cli = Cli::try_parse_from(["fleetlet", "run"]).unwrap();
            let Command::Run(args) = cli.command else {
                panic!("run expected")
            };
            assert_eq!(
                args.metrics_bind_address,
                Some("127.0.0.1:9999".parse().unwrap())
            );
            assert_eq!(args.kubelet_port_base, 20000);
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "cli::tests::an_environment_variable_sets_its_flag",
            ])
            .env(CHILD, "1")
            .env("FLEETLET_METRICS_BIND_ADDRESS", "127.0.0.1:9999")
            .env("FLEETLET_KUBELET_PORT_BASE", "20000")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn economy_lengthens_renewals_unless_the_interval_is_given() {
        let run = |extra: &[&str]| {
            let mut argv = vec!["fleetlet", "run"];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Run(args) => args,
                _ => panic!("run expected"),
            }
        };
        let args = run(&["--economy"]);
        assert!(args.economy);
        assert_eq!(args.lease_renew_interval(), ECONOMY_RENEW_INTERVAL);
        let args = run(&["--economy", "--lease-renew-interval", "15s"]);
        assert_eq!(args.lease_renew_interval(), Duration::from_secs(15));
        assert!(!run(&["--economy=false"]).economy);
    }

    #[test]
    fn leader_elect_takes_a_value_like_controller_runtime() {
        for (flag, want) in [("--leader-elect=false", false), ("--leader-elect", true)] {
            let cli = Cli::try_parse_from(["fleetlet", "run", flag]).unwrap();
            let Command::Run(args) = cli.command else {
                panic!("run expected")
            };
            assert_eq!(args.leader_elect, want, "{flag}");
        }
    }

    #[test]
    fn bind_addresses() {
        assert_eq!(parse_bind_address("0"), Ok(None));
        assert_eq!(
            parse_bind_address(":9090"),
            Ok(Some("0.0.0.0:9090".parse().unwrap()))
        );
        assert_eq!(
            parse_bind_address("[::1]:1"),
            Ok(Some("[::1]:1".parse().unwrap()))
        );
        assert_eq!(
            parse_bind_address("localhost:80"),
            Ok(Some("127.0.0.1:80".parse().unwrap()))
        );
        assert!(parse_bind_address("8080").is_err());
        assert!(parse_bind_address("example.com:80").is_err());
    }
}
