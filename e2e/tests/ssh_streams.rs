//! Issue 5's streams end to end on the SSH backend, through the apiserver's kubelet proxy as a user
//! drives them: `kubectl logs --previous` after a restart, `kubectl exec -t` (a terminal on the
//! device) and `kubectl attach` over WebSocket and SPDY, and `/stats/summary` with the device's and a
//! pod's CPU and memory; an interrupted `kubectl exec` ends its command on the device. This machine
//! is the device, behind a loopback sshd (see `tests/ssh.rs`).

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use fleetlet_e2e::cluster::unique;
use fleetlet_e2e::eventually;
use fleetlet_e2e::kubelet::{
    Transport, create_and_wait, kubectl, kubectl_binary, kubectl_tty, running,
};
use fleetlet_e2e::kubelet_checks::exec_transport_ok;
use fleetlet_e2e::ssh_device::{Pin, device, local, pod_running, restarts};
use fleetlet_e2e::sshd::pids_running;
use kube::ResourceExt;
use tokio::io::AsyncReadExt;

const NS: &str = "default";
const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_logs_tty_attach_and_stats_through_the_proxy() -> anyhow::Result<()> {
    let d = device(Pin::ServerKey, &[]).await?;
    d.ready_node().await?;
    let k = |args: Vec<String>| {
        let c = &d.c;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            kubectl(c, "kubectl", Transport::Default, &args, None).await
        }
    };

    // `kubectl logs --previous`: each run prints its number (counted in a file in its working
    // directory); run 0 fails, run 1 keeps running, so the previous and the current log differ.
    let counted = unique("count");
    let counting = "n=$(cat n 2>/dev/null || echo 0); echo $((n + 1)) > n; echo run-$n; \
                    [ \"$n\" = 0 ] && exit 1; exec sleep 3600";
    let mut spec = pod_running(NS, &counted, &d.node, &["sh", "-c", counting]);
    let wd = d.c.dir().join(unique("wd"));
    spec["spec"]["containers"][0]["workingDir"] = wd.to_str().context("path is not UTF-8")?.into();
    create_and_wait(&d.c, spec, "Running after one restart", |p| {
        running(p) && restarts(p) == Some(1)
    })
    .await?;
    let r = k(vec!["logs".into(), counted.clone(), "--previous".into()]).await?;
    assert_eq!((r.code, r.stdout.as_str()), (0, "run-0\n"), "{}", r.stderr);
    eventually(T, "the current log is run 1's", || async {
        k(vec!["logs".into(), counted.clone()])
            .await
            .ok()
            .filter(|r| r.code == 0 && !r.stdout.is_empty())
            .map(|r| r.stdout)
    })
    .await
    .map(|out| assert_eq!(out, "run-1\n"))?;

    // exec -t: a terminal on the device (test -t), and the exit code, over both transports.
    for t in Transport::ALL {
        let sh = "test -t 0 && test -t 1 && echo tty-ok; exit 3";
        let r = kubectl_tty(
            &d.c,
            "kubectl",
            t,
            &["exec", "-it", &counted, "--", "sh", "-c", sh],
        )
        .await?;
        assert!(
            r.code == 3 && r.stdout.contains("tty-ok\r\n"),
            "{t:?}: exec -t: {r:?}"
        );
        exec_transport_ok(&d.c, "kubectl", t, "exec")?;
    }

    // attach: the container's output from now on, and its exit code, over both transports.
    for t in Transport::ALL {
        let (pod, stop) = (unique("attach"), d.c.dir().join(unique("stop")));
        let stop = stop.to_str().context("path is not UTF-8")?;
        let sh = "while [ ! -e \"$0\" ]; do echo tick; sleep 0.2; done; echo bye; exit 5";
        let mut spec = pod_running(NS, &pod, &d.node, &["sh", "-c", sh, stop]);
        spec["spec"]["restartPolicy"] = "Never".into();
        create_and_wait(&d.c, spec, "attach pod Running", running).await?;
        let (code, out) = attach_until(&d.c, t, &pod, stop).await?;
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            code == Some(5)
                && lines.last() == Some(&"bye")
                && lines.len() >= 2
                && lines[..lines.len() - 1].iter().all(|l| *l == "tick"),
            "{t:?}: attach: {code:?} {out:?}"
        );
        exec_transport_ok(&d.c, "kubectl", t, "attach")?;
    }

    // /stats/summary through the apiserver's node proxy: the device's and a busy pod's CPU and memory.
    let busy = unique("busy");
    let burn = "while :; do i=0; while [ $i -lt 20000 ]; do i=$((i + 1)); done; sleep 0.2; done";
    let uid = create_and_wait(
        &d.c,
        pod_running(NS, &busy, &d.node, &["sh", "-c", burn]),
        "busy pod Running",
        running,
    )
    .await?
    .uid()
    .context("uid")?;
    let path = format!("/api/v1/nodes/{}/proxy/stats/summary", d.node);
    let (node, pod) = eventually(T, "CPU rates of the device and the busy pod", || async {
        let r = k(vec!["get".into(), "--raw".into(), path.clone()])
            .await
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&r.stdout).ok()?;
        let pod = v["pods"]
            .as_array()?
            .iter()
            .find(|p| p["podRef"]["name"] == busy.as_str())?
            .clone();
        let rate = |v: &serde_json::Value| v["cpu"]["usageNanoCores"].as_u64().filter(|n| *n > 0);
        (rate(&v["node"]).is_some() && rate(&pod).is_some()).then(|| (v["node"].clone(), pod))
    })
    .await?;
    let cores: u64 = local("nproc", &[])?.parse()?;
    let mem_total = 1024
        * std::fs::read_to_string("/proc/meminfo")?
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .context("MemTotal")?;
    let figure = |v: &serde_json::Value, p: &str| v.pointer(p).and_then(serde_json::Value::as_u64);
    // Rates come from two samples timed by the operator: allow some slack over the core count.
    let within = |n: Option<u64>, max: u64| n.is_some_and(|n| n > 0 && n <= max);
    assert_eq!(node["nodeName"], d.node.as_str());
    assert!(
        within(figure(&node, "/cpu/usageNanoCores"), cores * 1_500_000_000)
            && within(figure(&node, "/cpu/usageCoreNanoSeconds"), u64::MAX)
            && within(figure(&node, "/memory/workingSetBytes"), mem_total),
        "node: {node}"
    );
    assert_eq!(pod["podRef"]["uid"], uid.as_str());
    assert!(
        within(figure(&pod, "/cpu/usageNanoCores"), 1_500_000_000)
            && within(figure(&pod, "/cpu/usageCoreNanoSeconds"), u64::MAX)
            && within(figure(&pod, "/memory/workingSetBytes"), mem_total),
        "pod: {pod}"
    );
    assert_eq!(pod["containers"][0]["name"], "main", "pod: {pod}");

    for name in [&counted, &busy] {
        d.c.kubectl(&["delete", "pod", "-n", NS, name, "--timeout=60s"])
            .await?;
    }
    d.cleanup().await;
    Ok(())
}

/// An interrupted `kubectl exec` of a command that prints nothing more (Ctrl-C, a dropped
/// connection) ends the command on the device, over both transports: the kubelet API notices the
/// client going away and the SSH backend ends what it started, so repeated interruptions do not pile
/// up commands and sshd sessions on the device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_exec_ends_on_the_device() -> anyhow::Result<()> {
    let d = device(Pin::ServerKey, &[]).await?;
    d.ready_node().await?;
    let pod = unique("quiet");
    let spec = pod_running(NS, &pod, &d.node, &["sleep", "3600"]);
    create_and_wait(&d.c, spec, "quiet pod Running", running).await?;
    for t in Transport::ALL {
        // A sleep whose argv only this exec has.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let secs = format!("3600.{nanos:09}");
        let sh = "echo started; exec sleep \"$0\"";
        let mut child = tokio::process::Command::new(kubectl_binary("kubectl")?)
            .arg("--kubeconfig")
            .arg(&d.c.kubeconfig)
            .args(["exec", &pod, "--", "sh", "-c", sh, &secs])
            .envs(t.envs().iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut out = child.stdout.take().context("no stdout")?;
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        tokio::time::timeout(Duration::from_secs(30), async {
            while !got.ends_with(b"started\n") {
                let n = out.read(&mut buf).await?;
                anyhow::ensure!(n > 0, "exec ended: {:?}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
            Ok(())
        })
        .await
        .context("kubectl exec showed nothing within 30 s")??;
        let on_device = || !pids_running(&["sleep", &secs]).is_empty();
        eventually(T, "the command runs on the device", || async {
            on_device().then_some(())
        })
        .await?;
        child.kill().await?;
        eventually(T, "the interrupted command ended on the device", || async {
            (!on_device()).then_some(())
        })
        .await
        .with_context(|| format!("{t:?}"))?;
    }
    d.c.kubectl(&["delete", "pod", "-n", NS, &pod, "--timeout=60s"])
        .await?;
    d.cleanup().await;
    Ok(())
}

/// `kubectl attach` to `pod` over `t`: once its output shows, `stop` is created (the container
/// then ends); the exit code and stdout when kubectl ends, within a deadline.
async fn attach_until(
    c: &fleetlet_e2e::Cluster,
    t: Transport,
    pod: &str,
    stop: &str,
) -> anyhow::Result<(Option<i32>, String)> {
    let mut child = tokio::process::Command::new(kubectl_binary("kubectl")?)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["attach", pod, "-c", "main"])
        .envs(t.envs().iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut out = child.stdout.take().context("no stdout")?;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    tokio::time::timeout(Duration::from_secs(30), async {
        while !got.ends_with(b"tick\n") {
            let n = out.read(&mut buf).await?;
            anyhow::ensure!(n > 0, "attach ended: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        Ok(())
    })
    .await
    .context("kubectl attach showed nothing within 30 s")??;
    std::fs::write(stop, "")?;
    tokio::time::timeout(Duration::from_secs(30), out.read_to_end(&mut got))
        .await
        .context("kubectl attach did not end with the container")??;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
    Ok((status.code(), String::from_utf8_lossy(&got).into_owned()))
}
