//! What a device is and uses, from its own files: resources (CPU count, memory, architecture, kernel,
//! OS image, machine id, disk) for the Node, and CPU/memory usage of the device and of each running
//! container (from `/proc`) for `/stats/summary`. Parsing is pure; CPU rates come from the difference to
//! the previous sample.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use vk_runtime::NodeResources;
use vk_runtime::provider::{Usage, quantity};

/// Go's name (`GOARCH`) for a `uname -m` machine, as Kubernetes labels nodes.
pub fn go_arch(machine: &str) -> String {
    match machine {
        "x86_64" | "amd64" => "amd64",
        "aarch64" | "arm64" | "armv8l" => "arm64",
        m if m.starts_with("armv") => "arm",
        "i386" | "i486" | "i586" | "i686" => "386",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
    .to_string()
}

/// Parse the output of [`super::scripts::RESOURCES`].
pub fn resources(out: &str) -> NodeResources {
    let mut f: HashMap<&str, &str> = HashMap::new();
    for line in out.lines() {
        if let Some((k, v)) = line.split_once(' ') {
            f.insert(k, v.trim());
        }
    }
    let mut capacity = BTreeMap::new();
    let cpus = f
        .get("nproc")
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    capacity.insert("cpu".to_string(), quantity(&cpus.to_string()));
    if let Some(kb) = f.get("memkb").and_then(|v| v.parse::<u64>().ok()) {
        capacity.insert("memory".to_string(), quantity(&format!("{kb}Ki")));
    }
    if let Some(kb) = f.get("diskkb").and_then(|v| v.parse::<u64>().ok()) {
        capacity.insert(
            "ephemeral-storage".to_string(),
            quantity(&format!("{kb}Ki")),
        );
    }
    capacity.insert("pods".to_string(), quantity("110"));
    let unquote = |v: &str| v.trim_matches('"').trim_matches('\'').to_string();
    NodeResources {
        capacity,
        operating_system: f
            .get("os")
            .map_or_else(|| "linux".into(), |v| v.to_lowercase()),
        architecture: go_arch(f.get("arch").copied().unwrap_or_default()),
        kernel_version: f.get("kernel").map(|v| v.to_string()).unwrap_or_default(),
        os_image: f.get("pretty").map(|v| unquote(v)).unwrap_or_default(),
        machine_id: f.get("machine").map(|v| v.to_string()).unwrap_or_default(),
        container_runtime_version: concat!("ssh://fleetlet-", env!("CARGO_PKG_VERSION")).into(),
    }
}

/// One usage sample of the device.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// Busy CPU time of the whole device, in nanoseconds.
    pub node_cpu_ns: u64,
    pub node_memory_bytes: u64,
    /// (pod UID, container) -> (CPU time in ns, resident memory in bytes).
    pub containers: BTreeMap<(String, String), (u64, u64)>,
    pub at: Option<Timestamp>,
}

/// Parse the output of [`super::scripts::stats`].
pub fn sample(out: &str, at: Timestamp) -> Sample {
    let mut hz = 100u64;
    let mut busy_ticks = 0u64;
    let (mut total_kb, mut avail_kb) = (0u64, 0u64);
    let mut raw = Vec::new();
    for line in out.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let n = |i: usize| w.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        match w.first().copied() {
            Some("cpu") => {
                // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
                busy_ticks = (1..=8).filter(|i| *i != 4 && *i != 5).map(n).sum();
            }
            Some("MemTotal:") => total_kb = n(1),
            Some("MemAvailable:") => avail_kb = n(1),
            Some("hz") => hz = n(1).max(1),
            // ct UID NAME state ppid ... : utime and stime are fields 14 and 15 of /proc/pid/stat, here
            // 3 + 11 and 3 + 12; the RSS in kB is last.
            Some("ct") if w.len() > 16 => {
                let ticks = n(14) + n(15);
                let rss_kb = w.last().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                raw.push((w[1].to_string(), w[2].to_string(), ticks, rss_kb));
            }
            _ => {}
        }
    }
    let ns = |ticks: u64| ticks.saturating_mul(1_000_000_000) / hz;
    Sample {
        node_cpu_ns: ns(busy_ticks),
        node_memory_bytes: total_kb.saturating_sub(avail_kb) * 1024,
        containers: raw
            .into_iter()
            .map(|(u, c, t, kb)| ((u, c), (ns(t), kb * 1024)))
            .collect(),
        at: Some(at),
    }
}

/// Usage from a sample, with rates against the previous one.
pub fn usage(cpu_ns: u64, mem: u64, now: &Sample, before: Option<(u64, &Sample)>) -> Usage {
    let rate = before
        .and_then(|(prev_ns, prev)| {
            let dt = now.at?.duration_since(prev.at?).as_nanos();
            let dt = u64::try_from(dt).ok().filter(|d| *d > 0)?;
            let used = cpu_ns.checked_sub(prev_ns)?;
            Some(
                u64::try_from(u128::from(used) * 1_000_000_000 / u128::from(dt))
                    .unwrap_or(u64::MAX),
            )
        })
        .unwrap_or(0);
    Usage {
        cpu_usage_core_nano_seconds: cpu_ns,
        cpu_usage_nano_cores: rate,
        memory_working_set_bytes: mem,
        timestamp: now.at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resources() {
        let r = resources(
            "nproc 4\narch aarch64\nkernel 6.1.0\nos Linux\nmemkb 8000000\npretty \"Debian GNU/Linux 12\"\nmachine abc\ndiskkb 1000\n",
        );
        assert_eq!(r.capacity["cpu"].0, "4");
        assert_eq!(r.capacity["memory"].0, "8000000Ki");
        assert_eq!(r.capacity["pods"].0, "110");
        assert_eq!(
            (r.architecture.as_str(), r.operating_system.as_str()),
            ("arm64", "linux")
        );
        assert_eq!(r.os_image, "Debian GNU/Linux 12");
        assert_eq!(go_arch("armv7l"), "arm");
    }

    #[test]
    fn samples_and_rates() {
        let t0 = Timestamp::from_second(10).unwrap();
        let t1 = Timestamp::from_second(11).unwrap();
        let stat = |user: u64, ut: u64| {
            format!(
                "cpu  {user} 0 0 1000 50 0 0 0 0 0\nMemTotal: 1000\nMemAvailable: 400\nhz 100\nct u1 main S 1 2 3 4 5 6 7 8 9 10 {ut} 0 0 0 20 0 1 0 5 6 7 2048\n"
            )
        };
        let a = sample(&stat(100, 10), t0);
        let b = sample(&stat(150, 60), t1);
        assert_eq!(a.node_cpu_ns, 1_000_000_000);
        assert_eq!(a.node_memory_bytes, 600 * 1024);
        assert_eq!(
            a.containers[&("u1".into(), "main".into())],
            (100_000_000, 2048 * 1024)
        );
        let u = usage(
            b.node_cpu_ns,
            b.node_memory_bytes,
            &b,
            Some((a.node_cpu_ns, &a)),
        );
        assert_eq!(u.cpu_usage_nano_cores, 500_000_000);
    }
}
