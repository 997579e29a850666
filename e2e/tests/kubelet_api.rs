//! Issue 3, "kubectl is a real peer": kubectl (the default, 1.27 and 1.33) against fleetlet's
//! virtual kubelets through the apiserver's kubelet proxy — logs with every option, exec, attach
//! and port-forward over WebSocket and SPDY, `get --raw .../proxy/...` — and the kubelet
//! endpoint's own authentication and authorization, asserted on exact bytes and exit codes.
//! Runs against the test apiserver, or a real cluster with FLEETLET_E2E_KUBECONFIG (checks that
//! need the test apiserver's internals are skipped there).

use std::time::Duration;

use fleetlet_e2e::cluster::unique;
use fleetlet_e2e::kubelet::{
    KUBECTLS, Transport, create_and_wait, kubectl, kubectl_binary, kubectl_tty, mock_pod,
    port_forward_echo, running,
};
use fleetlet_e2e::kubelet_checks::{
    Setup, endpoint_auth, exec_transport_ok, kubelet_metrics, last_record, setup,
};
use tokio::io::AsyncReadExt;

const NS: &str = "default";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_with_every_option() -> anyhow::Result<()> {
    let Setup { c, node, _op } = setup().await?;
    let k = |args: Vec<String>| {
        let c = &c;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            kubectl(c, "kubectl", Transport::Default, &args, None).await
        }
    };
    let pod = unique("logs");
    let cmd = ["sh", "-c", "echo line1; echo line2; echo line3; sleep 3600"];
    create_and_wait(
        &c,
        mock_pod(NS, &pod, &node, &[("main", &cmd)], "Always"),
        "logs pod running",
        running,
    )
    .await?;
    let all = "line1\nline2\nline3\n";
    let logs = |extra: &[&str]| {
        let mut a = vec!["logs".to_string(), pod.clone()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    // The container prints at start; poll until the three lines are there.
    fleetlet_e2e::eventually(Duration::from_secs(30), "three log lines", || async {
        k(logs(&[])).await.ok().filter(|r| r.stdout == all)
    })
    .await?;
    let r = k(logs(&["--tail=1"])).await?;
    assert_eq!((r.code, r.stdout.as_str()), (0, "line3\n"), "{}", r.stderr);
    let r = k(logs(&["--tail=2"])).await?;
    assert_eq!(r.stdout, "line2\nline3\n");
    let r = k(logs(&["--limit-bytes=8"])).await?;
    assert_eq!(r.stdout, "line1\nli");
    let r = k(logs(&["--since=1h"])).await?;
    assert_eq!(r.stdout, all);
    let past = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1))
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let future = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1))
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let r = k(logs(&["--since-time", &past])).await?;
    assert_eq!(r.stdout, all);
    let r = k(logs(&["--since-time", &future])).await?;
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{}", r.stderr);
    let r = k(logs(&["--timestamps"])).await?;
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", r.stdout);
    for (i, line) in lines.iter().enumerate() {
        let (ts, text) = line.split_once(' ').unwrap_or_default();
        assert!(
            ts.parse::<jiff::Timestamp>().is_ok(),
            "timestamp in {line:?}"
        );
        assert_eq!(text, format!("line{}", i + 1));
    }
    // --since with a window that really cuts: lines printed 4 s apart, a window reaching back to
    // just before the second one (measured from its timestamp) returns only that line.
    let late = unique("since");
    let cmd = ["sh", "-c", "echo early; sleep 4; echo late; sleep 3600"];
    create_and_wait(
        &c,
        mock_pod(NS, &late, &node, &[("main", &cmd)], "Always"),
        "since pod running",
        running,
    )
    .await?;
    let stamped = fleetlet_e2e::eventually(Duration::from_secs(30), "two log lines", || async {
        let args = vec!["logs".into(), late.clone(), "--timestamps".into()];
        k(args).await.ok().filter(|r| r.stdout.lines().count() == 2)
    })
    .await?;
    let late_at: jiff::Timestamp = stamped
        .stdout
        .lines()
        .nth(1)
        .and_then(|l| l.split_once(' '))
        .and_then(|(ts, _)| ts.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no timestamp: {}", stamped.stdout))?;
    let age = jiff::Timestamp::now().duration_since(late_at).as_secs() + 2;
    let since = format!("--since={age}s");
    let r = k(vec!["logs".into(), late.clone(), since.clone()]).await?;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "late\n"),
        "{since}: {}",
        r.stderr
    );

    // No restart yet: no previous container.
    let r = k(logs(&["--previous"])).await?;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("previous terminated container \\\"main\\\"")
            || r.stderr.contains("previous terminated container \"main\""),
        "{}",
        r.stderr
    );

    // -c picks the container; an unknown one is refused by the apiserver.
    let two = unique("two");
    let (a, b) = (
        ["sh", "-c", "echo from-a; sleep 3600"],
        ["sh", "-c", "echo from-b; sleep 3600"],
    );
    create_and_wait(
        &c,
        mock_pod(NS, &two, &node, &[("a", &a), ("b", &b)], "Always"),
        "two-container pod running",
        running,
    )
    .await?;
    let r = fleetlet_e2e::eventually(Duration::from_secs(30), "logs of b", || async {
        k(vec!["logs".into(), two.clone(), "-c".into(), "b".into()])
            .await
            .ok()
            .filter(|r| !r.stdout.is_empty())
    })
    .await?;
    assert_eq!(r.stdout, "from-b\n");
    let r = k(vec!["logs".into(), two.clone(), "-c".into(), "nope".into()]).await?;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains(&format!("container nope is not valid for pod {two}")),
        "{}",
        r.stderr
    );

    // --previous after a restart.
    let crash = unique("crash");
    let cmd = ["sh", "-c", "echo started; sleep 1; exit 1"];
    create_and_wait(
        &c,
        mock_pod(NS, &crash, &node, &[("main", &cmd)], "Always"),
        "a restarted container",
        |p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.first())
                .is_some_and(|s| s.restart_count >= 1)
        },
    )
    .await?;
    let r = k(vec!["logs".into(), crash.clone(), "--previous".into()]).await?;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "started\n"),
        "{}",
        r.stderr
    );

    // -f streams while the container runs and ends when it ends.
    let follow = unique("follow");
    let cmd = ["sh", "-c", "echo a; sleep 2; echo b"];
    create_and_wait(
        &c,
        mock_pod(NS, &follow, &node, &[("main", &cmd)], "Never"),
        "follow pod running",
        running,
    )
    .await?;
    let mut child = tokio::process::Command::new(kubectl_binary("kubectl")?)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["logs", "-f", &follow])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut out = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    tokio::time::timeout(Duration::from_secs(20), async {
        while !got.ends_with(b"a\n") {
            let n = out.read(&mut buf).await?;
            anyhow::ensure!(
                n > 0,
                "log stream ended early: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        Ok(())
    })
    .await??;
    assert_eq!(
        got, b"a\n",
        "first line arrives alone, before the container ends"
    );
    assert!(
        child.try_wait()?.is_none(),
        "kubectl logs -f still streaming"
    );
    tokio::time::timeout(Duration::from_secs(30), out.read_to_end(&mut got)).await??;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
    assert_eq!(String::from_utf8_lossy(&got), "a\nb\n");
    assert!(status.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_attach_port_forward_with_every_kubectl_and_transport() -> anyhow::Result<()> {
    let Setup { c, node, _op } = setup().await?;
    let pod = unique("shell");
    create_and_wait(
        &c,
        mock_pod(NS, &pod, &node, &[("main", &["sleep", "3600"])], "Always"),
        "shell pod running",
        running,
    )
    .await?;
    for name in KUBECTLS {
        for t in Transport::ALL {
            let what = format!("{name} {t:?}");
            let r = kubectl(
                &c,
                name,
                t,
                &["exec", &pod, "--", "echo", "hello", "world"],
                None,
            )
            .await?;
            assert_eq!(
                (r.code, r.stdout.as_str()),
                (0, "hello world\n"),
                "{what}: {}",
                r.stderr
            );
            exec_transport_ok(&c, name, t, "exec")?;
            let r = kubectl(
                &c,
                name,
                t,
                &["exec", "-i", &pod, "--", "cat"],
                Some("hi\nthere\n"),
            )
            .await?;
            assert_eq!(
                (r.code, r.stdout.as_str()),
                (0, "hi\nthere\n"),
                "{what}: stdin EOF delivered: {}",
                r.stderr
            );
            let r = kubectl(&c, name, t, &["exec", &pod, "--", "exit", "3"], None).await?;
            assert_eq!(r.code, 3, "{what}: {}", r.stderr);
            let r = kubectl(
                &c,
                name,
                t,
                &[
                    "exec",
                    &pod,
                    "--",
                    "sh",
                    "-c",
                    "echo out; echo err >&2; exit 7",
                ],
                None,
            )
            .await?;
            assert_eq!((r.code, r.stdout.as_str()), (7, "out\n"), "{what}");
            assert!(r.stderr.starts_with("err\n"), "{what}: {}", r.stderr);

            // -t needs a terminal on stdin: kubectl under script(1).
            let out =
                kubectl_tty(&c, name, t, &["exec", "-it", &pod, "--", "echo", "tty-ok"]).await?;
            assert!(
                out.code == 0 && out.stdout.contains("tty-ok\r\n"),
                "{what}: -t: {out:?}"
            );

            // attach: stdin to the main process (cat), its output back; ends with the container.
            let att = unique("attach");
            let mut spec = mock_pod(NS, &att, &node, &[("main", &["cat"])], "Never");
            spec["spec"]["containers"][0]["stdin"] = true.into();
            spec["spec"]["containers"][0]["stdinOnce"] = true.into();
            create_and_wait(&c, spec, "attach pod running", running).await?;
            let r = kubectl(
                &c,
                name,
                t,
                &["attach", "-i", &att, "-c", "main"],
                Some("attached\n"),
            )
            .await?;
            assert_eq!(
                (r.code, r.stdout.as_str()),
                (0, "attached\n"),
                "{what}: attach: {}",
                r.stderr
            );
            exec_transport_ok(&c, name, t, "attach")?;

            let payload = format!("ping through {what}\n");
            let echoed =
                port_forward_echo(&c.kubeconfig, name, t, NS, &pod, 8080, payload.as_bytes())
                    .await?;
            assert_eq!(
                String::from_utf8_lossy(&echoed),
                payload,
                "{what}: port-forward"
            );
            if let Some(r) = last_record(&c, "portforward") {
                // kubectl >= 1.31 first tries WebSocket tunnelling, which a kubelet behind an
                // apiserver that passes upgrades through (<= 1.29) refuses; it then uses SPDY.
                assert_eq!(r.upgrade.as_deref(), Some("SPDY/3.1"), "{what}");
                assert_eq!(r.forwarded.protocol.as_deref(), Some("portforward.k8s.io"));
            }
        }
    }
    // kubectl cp (exec + tar): tests/kubectl_cp.rs.
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_proxy_and_endpoint_authentication() -> anyhow::Result<()> {
    let Setup { c, node, _op: op } = setup().await?;
    let pod = unique("stats");
    create_and_wait(
        &c,
        mock_pod(NS, &pod, &node, &[("main", &["sleep", "3600"])], "Always"),
        "stats pod running",
        running,
    )
    .await?;
    let raw = |path: String| {
        let c = &c;
        async move {
            kubectl(
                c,
                "kubectl",
                Transport::Default,
                &["get", "--raw", &path],
                None,
            )
            .await
        }
    };
    let base = format!("/api/v1/nodes/{node}/proxy");
    let r = fleetlet_e2e::eventually(Duration::from_secs(30), "stats of the pod", || async {
        raw(format!("{base}/stats/summary"))
            .await
            .ok()
            .filter(|r| r.stdout.contains(&pod))
    })
    .await?;
    let summary: serde_json::Value = serde_json::from_str(&r.stdout)?;
    assert_eq!(summary["node"]["nodeName"], node.as_str());
    assert!(
        summary["node"]["cpu"]["usageNanoCores"].as_u64().is_some(),
        "{summary}"
    );
    let pods = summary["pods"].as_array().cloned().unwrap_or_default();
    assert!(
        pods.iter().any(|p| p["podRef"]["name"] == pod.as_str()),
        "{summary}"
    );
    let r = raw(format!("{base}/metrics/resource")).await?;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("node_cpu_usage_seconds_total")
            && r.stdout.contains("node_memory_working_set_bytes"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("pod_cpu_usage_seconds_total{")
                && l.contains(&format!("pod=\"{pod}\""))),
        "{}",
        r.stdout
    );
    let r = raw(format!("{base}/pods")).await?;
    let list: serde_json::Value = serde_json::from_str(&r.stdout)?;
    assert!(
        list["items"]
            .as_array()
            .is_some_and(|i| i.iter().any(|p| p["metadata"]["name"] == pod.as_str())),
        "{list}"
    );
    let r = raw(format!("{base}/healthz")).await?;
    assert_eq!((r.code, r.stdout.as_str()), (0, "ok"), "{}", r.stderr);
    let r = raw(format!("{base}/no/such/path")).await?;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("NotFound"), "{}", r.stderr);

    endpoint_auth(&c, &node).await?;
    kubelet_metrics(&c, &op, &pod).await
}
