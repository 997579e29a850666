//! One SSH DeviceBackend serving more than one VirtualNode, end to end: two nodes on the same
//! backend (here the same loopback device and state directory) each become Ready and run their own
//! pods; each node's kubelet endpoint shows only its own, also what it reads from the device; after a
//! kill -9 of the operator both pods are adopted (same PIDs) and neither node stops the other's
//! process.

use std::time::Duration;

use anyhow::Context as _;
use fleetlet_e2e::cluster::unique;
use fleetlet_e2e::fixtures::virtual_node_at;
use fleetlet_e2e::kubelet::{Transport, create_and_wait, kubectl, running};
use fleetlet_e2e::observe::node_ready;
use fleetlet_e2e::ssh_device::{Pin, alive, container_pid, device, pod_running};
use fleetlet_e2e::{Operator, eventually};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;

const NS: &str = "default";
const T: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_virtual_nodes_on_one_ssh_backend() -> anyhow::Result<()> {
    let mut d = device(Pin::ServerKey, &[]).await?;
    let second = unique("dev");
    d.c.apply(&virtual_node_at(&second, &d.backend, "127.0.0.1"))
        .await
        .map_err(anyhow::Error::msg)?;
    let nodes: Api<Node> = Api::all(d.c.client.clone());
    let both_ready = || async {
        for n in [&d.node, &second] {
            nodes.get_opt(n).await.ok().flatten().filter(node_ready)?;
        }
        Some(())
    };
    eventually(T, "both SSH nodes Ready", both_ready).await?;

    let mut placed = Vec::new();
    for node in [&d.node, &second] {
        let pod = unique("fleet");
        let p = create_and_wait(
            &d.c,
            pod_running(NS, &pod, node, &["sleep", "3600"]),
            "pod Running",
            running,
        )
        .await?;
        let pid = container_pid(&p).context("containerID with a PID")?;
        assert!(alive(pid), "{pod} runs on the device");
        let r = kubectl(
            &d.c,
            "kubectl",
            Transport::Default,
            &["exec", &pod, "--", "echo", "hi"],
            None,
        )
        .await?;
        assert_eq!((r.code, r.stdout.as_str()), (0, "hi\n"), "{pod}: {r:?}");
        placed.push((node.clone(), pod, pid));
    }
    // Each node's kubelet endpoint lists only its own pod: the pods bound to it, and what its
    // backend reports running (`/runningpods`, read from the device).
    for (node, pod, _) in &placed {
        for what in ["pods", "runningpods"] {
            let path = format!("/api/v1/nodes/{node}/proxy/{what}");
            let r = kubectl(
                &d.c,
                "kubectl",
                Transport::Default,
                &["get", "--raw", &path],
                None,
            )
            .await?;
            let list: serde_json::Value = serde_json::from_str(&r.stdout).context(r.stderr)?;
            let names: Vec<&str> = list["items"]
                .as_array()
                .context("items")?
                .iter()
                .filter_map(|p| p["metadata"]["name"].as_str())
                .collect();
            assert_eq!(names, vec![pod.as_str()], "{node} /{what}");
        }
    }

    // Crash and restart: both nodes come back and adopt their pod; nobody stops the other's.
    d.op.kill();
    d.op = Operator::start(&d.c, &[])?;
    eventually(T, "both SSH nodes Ready after the restart", both_ready).await?;
    let pods: Api<Pod> = Api::namespaced(d.c.client.clone(), NS);
    for (node, pod, pid) in &placed {
        let p = eventually(T, "pod Running after the restart", || async {
            pods.get_opt(pod).await.ok().flatten().filter(running)
        })
        .await?;
        assert_eq!(container_pid(&p), Some(*pid), "{node}: same PID, adopted");
    }
    // The restarted nodes' start-up clean-up is over once both pods are reported again; give a
    // wrong one the time of a few polls (250 ms each) to act, then check nothing was stopped.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        for (node, pod, pid) in &placed {
            assert!(alive(*pid), "{node}: {pod}'s process still runs");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    for (_, pod, pid) in &placed {
        d.c.kubectl(&["delete", "pod", "-n", NS, pod, "--timeout=60s"])
            .await?;
        assert!(!alive(*pid), "deleting {pod} ends its process");
    }
    let _ =
        d.c.kubectl(&[
            "delete",
            "virtualnode",
            &second,
            "--ignore-not-found",
            "--wait=false",
        ])
        .await;
    d.cleanup().await;
    Ok(())
}
