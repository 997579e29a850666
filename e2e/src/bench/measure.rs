//! What the benchmark reads off the operator: RSS and CPU time from `/proc/<pid>`, API requests from
//! its own `/metrics` (`fleetlet_api_requests_total{client,verb,code}`), and latency percentiles.
//! The parsers are pure and tested with plain text.

use std::collections::BTreeMap;

use anyhow::Context as _;

/// Resident set size in KiB from `/proc/<pid>/status` text (`VmRSS:   12345 kB`).
pub fn parse_vm_rss_kb(status: &str) -> Option<u64> {
    status_kb(status, "VmRSS:")
}

/// A `/proc/<pid>/status` figure in KiB (`RssAnon:`: the resident anonymous memory, i.e. without
/// the pages of the binary itself, which are a fixed cost however many nodes run).
pub fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// utime + stime in clock ticks from `/proc/<pid>/stat` text. The command name (field 2) is in
/// parentheses and may contain spaces, so fields are counted after the last `)`: utime and stime are
/// fields 14 and 15, i.e. the 12th and 13th after it.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A process's RSS (KiB) and CPU time (seconds) at one moment.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub rss_kb: u64,
    /// `RssAnon` (0 on kernels without it).
    pub rss_anon_kb: u64,
    pub cpu_seconds: f64,
    pub at: std::time::Instant,
}

/// Clock ticks per second (`getconf CLK_TCK`; Linux reports 100 everywhere it matters).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Sample process `pid`.
pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is the operator running?)"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    Ok(ProcSample {
        rss_kb: parse_vm_rss_kb(&status).context("no VmRSS in /proc/PID/status")?,
        rss_anon_kb: status_kb(&status, "RssAnon:").unwrap_or(0),
        cpu_seconds: parse_cpu_ticks(&stat).context("unparsable /proc/PID/stat")? as f64
            / clock_ticks(),
        at: std::time::Instant::now(),
    })
}

/// CPU used between two samples, in millicores.
pub fn millicores(from: &ProcSample, to: &ProcSample) -> f64 {
    let wall = to.at.duration_since(from.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    (to.cpu_seconds - from.cpu_seconds) / wall * 1000.0
}

/// API requests so far, by (client, verb), summed over status codes.
pub type Requests = BTreeMap<(String, String), f64>;

/// `fleetlet_api_requests_total` samples of a Prometheus text exposition, by (client, verb).
pub fn parse_api_requests(text: &str) -> Requests {
    let mut out = Requests::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("fleetlet_api_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k.trim() == name)
                .map(|(_, v)| v.trim_matches('"').to_string())
                .unwrap_or_default()
        };
        *out.entry((label("client"), label("verb"))).or_default() += value;
    }
    out
}

/// Scrape the operator's `/metrics`.
pub async fn scrape(url: &str) -> anyhow::Result<Requests> {
    let (code, body) = crate::probe::get(url).await?;
    anyhow::ensure!(code == 200, "{url}: HTTP {code}");
    Ok(parse_api_requests(&body))
}

/// Writes: the verbs that change objects.
pub const WRITE_VERBS: [&str; 4] = ["create", "update", "patch", "delete"];

/// `later - earlier` per (client, verb), zeros dropped.
pub fn delta(earlier: &Requests, later: &Requests) -> Requests {
    later
        .iter()
        .map(|(k, v)| (k.clone(), v - earlier.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

/// Sum of `requests` whose client passes `client` and whose verb passes `verb`.
pub fn total(
    requests: &Requests,
    client: impl Fn(&str) -> bool,
    verb: impl Fn(&str) -> bool,
) -> f64 {
    requests
        .iter()
        .filter(|((c, v), _)| client(c) && verb(v))
        .map(|(_, n)| n)
        .sum()
}

/// `{"client/verb": n}` for the JSON output.
pub fn to_json(requests: &Requests, scale: f64) -> serde_json::Value {
    requests
        .iter()
        .map(|((c, v), n)| (format!("{c}/{v}"), serde_json::json!(round(n * scale, 3))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Nearest-rank percentile `p` (0-100) of unsorted `values`; `None` when empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v.get(rank.clamp(1, v.len()) - 1).copied()
}

/// `x` rounded to `digits` decimals (JSON readability).
pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    // `+ 0.0` turns -0.0 into 0.0.
    (x * f).round() / f + 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files() {
        let status = "Name:\tfleetlet\nVmPeak:\t  99 kB\nVmRSS:\t   12345 kB\nThreads: 3\n";
        assert_eq!(parse_vm_rss_kb(status), Some(12345));
        assert_eq!(
            status_kb("VmRSS:\t 9 kB\nRssAnon:\t    2048 kB\n", "RssAnon:"),
            Some(2048)
        );
        assert_eq!(parse_vm_rss_kb("Name: x\n"), None);
        // A command name with spaces and a parenthesis must not shift the fields.
        let stat =
            "4242 (fleet (x) y) S 1 4242 4242 0 -1 4194560 500 0 0 0 170 30 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(200));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn api_requests_by_client_and_verb() {
        let text = "# HELP fleetlet_api_requests Kubernetes API requests\n\
            fleetlet_api_requests_total{client=\"main\",verb=\"get\",code=\"200\"} 5\n\
            fleetlet_api_requests_total{client=\"main\",verb=\"get\",code=\"404\"} 2\n\
            fleetlet_api_requests_total{client=\"heartbeat\",verb=\"update\",code=\"200\"} 60\n\
            fleetlet_reconciles_total{controller=\"virtualnode\",result=\"success\"} 1\n";
        let r = parse_api_requests(text);
        assert_eq!(r[&("main".into(), "get".into())], 7.0);
        assert_eq!(r[&("heartbeat".into(), "update".into())], 60.0);
        assert_eq!(r.len(), 2);
        let mut later = r.clone();
        *later
            .entry(("heartbeat".into(), "update".into()))
            .or_default() += 6.0;
        let d = delta(&r, &later);
        assert_eq!(d.len(), 1);
        assert_eq!(total(&d, |_| true, |v| WRITE_VERBS.contains(&v)), 6.0);
        assert_eq!(total(&d, |c| c == "main", |_| true), 0.0);
    }

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(round(1.23456, 2), 1.23);
    }
}
