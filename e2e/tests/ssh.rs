//! Issue 5 end to end: the SSH backend driven through the operator and kubectl as a user drives it.
//! This machine is the device, behind a loopback sshd with generated keys: the key Secret, the
//! DeviceBackend and the VirtualNode are applied with kubectl; the Node reports the machine's
//! resources; pods run as real processes; logs, exec and port-forward reach them through the
//! apiserver's kubelet proxy over WebSocket and SPDY (`--previous`, `exec -t`, attach and stats:
//! `tests/ssh_streams.rs`); a kill -9 of the operator loses nothing and runs nothing twice, and a pod
//! re-created meanwhile starts once; a wrong pinned host key is refused. Fails (never skips) without
//! openssh-server.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fleetlet_crds::VirtualNode;
use fleetlet_e2e::cluster::unique;
use fleetlet_e2e::fixtures::{SshBackendSpec, ssh_backend};
use fleetlet_e2e::kubelet::{
    Transport, create_and_wait, kubectl, kubectl_binary, port_forward_echo, running,
};
use fleetlet_e2e::kubelet_checks::{exec_transport_ok, last_record};
use fleetlet_e2e::observe::{node_ready, vnode_condition};
use fleetlet_e2e::ssh_device::{
    Pin, alive, container_pid, device, local, pod_running, recorded_pid, restarts,
};
use fleetlet_e2e::sshd::{pids_running, pids_with, whoami};
use fleetlet_e2e::{Operator, eventually};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use tokio::io::AsyncReadExt;

const NS: &str = "default";
const T: Duration = Duration::from_secs(60);

/// A sleep duration no other process on the machine uses: `sleep <it>` marks one container.
fn unique_sleep() -> String {
    unique("x")
        .strip_prefix("x-")
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .map_or_else(
            || "3600123".into(),
            |n| (3_600_000 + u64::from(n)).to_string(),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_reports_the_device_and_kubectl_reaches_its_processes() -> anyhow::Result<()> {
    let d = device(Pin::ServerKey, &[]).await?;
    let node = d.ready_node().await?;

    // Capacity and nodeInfo come from the device: this machine.
    let st = node.status.context("node status")?;
    let cap = st.capacity.context("capacity")?;
    let memkb = std::fs::read_to_string("/proc/meminfo")?
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next().map(String::from))
        .context("MemTotal")?;
    assert_eq!(
        cap.get("cpu").map(|q| q.0.as_str()),
        Some(local("nproc", &[])?.as_str())
    );
    assert_eq!(
        cap.get("memory").map(|q| q.0.clone()),
        Some(format!("{memkb}Ki"))
    );
    let info = st.node_info.context("nodeInfo")?;
    assert_eq!(info.kernel_version, local("uname", &["-r"])?);
    assert_eq!(info.operating_system, "linux");
    let arch = match local("uname", &["-m"])?.as_str() {
        "x86_64" => "amd64".to_string(),
        "aarch64" => "arm64".to_string(),
        other => other.to_string(),
    };
    assert_eq!(info.architecture, arch);
    let pretty = std::fs::read_to_string("/etc/os-release")?
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default();
    assert_eq!(info.os_image, pretty);

    // A real process, its logs (and -f while it runs).
    let pod = unique("proc");
    let cmd = ["sh", "-c", "echo started; exec sleep 3600"];
    let p = create_and_wait(
        &d.c,
        pod_running(NS, &pod, &d.node, &cmd),
        "pod Running",
        running,
    )
    .await?;
    let pid = container_pid(&p).context("containerID with a PID")?;
    assert!(
        alive(pid),
        "the container's process {pid} runs on the device"
    );
    assert_eq!(local("cat", &[&format!("/proc/{pid}/comm")])?, "sleep");
    eventually(T, "kubectl logs shows the output", || async {
        let r = kubectl(&d.c, "kubectl", Transport::Default, &["logs", &pod], None).await;
        r.ok().filter(|r| r.code == 0 && r.stdout == "started\n")
    })
    .await?;
    follow_first_line(&d.c, &pod).await?;

    // exec over WebSocket (the default) and SPDY: output, stdin, exit codes.
    for t in Transport::ALL {
        let sh = [
            "exec",
            &pod,
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ];
        let r = kubectl(&d.c, "kubectl", t, &sh, None).await?;
        assert_eq!((r.code, r.stdout.as_str()), (3, "out\n"), "{t:?}: {r:?}");
        assert!(r.stderr.contains("err"), "{t:?}: {r:?}");
        exec_transport_ok(&d.c, "kubectl", t, "exec")?;
        let r = kubectl(
            &d.c,
            "kubectl",
            t,
            &["exec", "-i", &pod, "--", "cat"],
            Some("in\n"),
        )
        .await?;
        assert_eq!((r.code, r.stdout.as_str()), (0, "in\n"), "{t:?}: {r:?}");
        let r = kubectl(&d.c, "kubectl", t, &["exec", &pod, "--", "id", "-un"], None).await?;
        assert_eq!(r.stdout.trim(), whoami(), "{t:?}: runs as the SSH user");
    }

    // port-forward to a port a pod process listens on (an SSH direct-tcpip channel).
    let port = fleetlet_e2e::operator::free_port()?.port();
    let web = unique("web");
    let serve = [
        "python3",
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ];
    create_and_wait(
        &d.c,
        pod_running(NS, &web, &d.node, &serve),
        "web pod Running",
        running,
    )
    .await?;
    eventually(T, "http.server listening on the device", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await?;
    for t in Transport::ALL {
        let req = b"GET / HTTP/1.0\r\n\r\n";
        let got = port_forward_echo(&d.c.kubeconfig, "kubectl", t, NS, &web, port, req).await?;
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.0 200"), "{t:?}: {got}");
        if let Some(r) = last_record(&d.c, "portforward") {
            assert_eq!(r.forwarded.status, 101, "{t:?}: {r:?}");
        }
    }

    for name in [&pod, &web] {
        d.c.kubectl(&["delete", "pod", "-n", NS, name, "--timeout=60s"])
            .await?;
    }
    assert!(!alive(pid), "deleting the pod ends its process");
    d.cleanup().await;
    Ok(())
}

/// `kubectl logs -f` streams the first line while the container runs, within a deadline.
async fn follow_first_line(c: &fleetlet_e2e::Cluster, pod: &str) -> anyhow::Result<()> {
    let mut child = tokio::process::Command::new(kubectl_binary("kubectl")?)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["logs", "-f", pod])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut out = child.stdout.take().context("no stdout")?;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    tokio::time::timeout(Duration::from_secs(30), async {
        while !got.ends_with(b"started\n") {
            let n = out.read(&mut buf).await?;
            anyhow::ensure!(
                n > 0,
                "log stream ended: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        Ok(())
    })
    .await
    .context("kubectl logs -f showed nothing within 30 s")??;
    assert_eq!(got, b"started\n");
    assert!(
        child.try_wait()?.is_none(),
        "still following a running container"
    );
    child.start_kill()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_adopts_processes_and_runs_nothing_twice() -> anyhow::Result<()> {
    let mut d = device(Pin::ServerKey, &[]).await?;
    d.ready_node().await?;
    let pods: Api<Pod> = Api::namespaced(d.c.client.clone(), NS);
    let term = d.c.dir().join("keep.term");
    let term_path = term.to_str().context("path is not UTF-8")?;
    let (keep_s, gone_s, forced_s) = (unique_sleep(), unique_sleep(), unique_sleep());
    // The kept pod notes SIGTERM in a file, so the test sees a graceful stop.
    let keep_sh = "trap 'echo TERM > \"$0\"; exit 0' TERM; echo started; sleep \"$1\" & wait";
    let (keep, gone, forced) = (unique("keep"), unique("gone"), unique("forced"));
    let keep_cmd = ["sh", "-c", keep_sh, term_path, &keep_s];
    let specs = [
        (&keep, pod_running(NS, &keep, &d.node, &keep_cmd)),
        (&gone, pod_running(NS, &gone, &d.node, &["sleep", &gone_s])),
        (
            &forced,
            pod_running(NS, &forced, &d.node, &["sleep", &forced_s]),
        ),
    ];
    let mut started = Vec::new();
    for (name, spec) in specs {
        started.push(create_and_wait(&d.c, spec, &format!("{name} Running"), running).await?);
    }
    let kept = &started[0];
    let uid = kept.uid().context("uid")?;
    let pid = container_pid(kept).context("containerID with a PID")?;
    assert_eq!(
        recorded_pid(&d.state, &uid, "main"),
        Some(pid),
        "pid file on the device"
    );
    let sleeps = pids_running(&["sleep", &keep_s]);
    assert_eq!(sleeps.len(), 1, "one process of the kept pod: {sleeps:?}");
    // The supervisor and its per-container loop (a subshell): the same set must be there after restart.
    let supervisor = format!("{uid}/run.sh");
    let supervisors = pids_with(&supervisor);
    assert!(!supervisors.is_empty(), "the pod's supervisor runs");

    // Crash: processes keep running; pods are deleted while nobody watches.
    d.op.kill();
    d.c.kubectl(&["delete", "pod", "-n", NS, &gone, "--wait=false"])
        .await?;
    let force = [
        "delete",
        "pod",
        "-n",
        NS,
        &forced,
        "--grace-period=0",
        "--force",
        "--wait=false",
    ];
    d.c.kubectl(&force).await?;
    // ... and `forced` is re-created under the same name (a new UID) running the same command: after
    // the restart exactly one process runs it, the new pod's, started once; the old one is gone.
    let old_forced = container_pid(&started[2]).context("containerID with a PID")?;
    let old_forced_uid = started[2].uid().context("uid")?;
    let spec: Pod =
        serde_json::from_value(pod_running(NS, &forced, &d.node, &["sleep", &forced_s]))?;
    let recreated = eventually(T, "forced pod re-created with a new UID", || async {
        pods.create(&PostParams::default(), &spec).await.ok()
    })
    .await?;
    let new_uid = recreated.uid().context("uid")?;
    assert_ne!(new_uid, old_forced_uid);
    assert!(alive(pid), "the kept process survives the crash");
    for s in [&gone_s, &forced_s] {
        assert_eq!(
            pids_running(&["sleep", s]).len(),
            1,
            "nothing stops {s} while down"
        );
    }

    d.op = Operator::start(&d.c, &[])?;
    d.ready_node().await?;
    eventually(T, "pods deleted while down: processes killed", || async {
        let gone_obj = pods.get_opt(&gone).await.ok()?.is_none();
        let none = pids_running(&["sleep", &gone_s]).is_empty() && !alive(old_forced);
        (gone_obj && none).then_some(())
    })
    .await?;
    let new_forced = eventually(T, "re-created pod Running", || async {
        pods.get_opt(&forced).await.ok().flatten().filter(running)
    })
    .await?;
    assert_eq!(new_forced.uid().as_deref(), Some(new_uid.as_str()));
    let new_pid = container_pid(&new_forced).context("containerID with a PID")?;
    assert_eq!(recorded_pid(&d.state, &new_uid, "main"), Some(new_pid));
    assert!(
        !d.state.pod(&old_forced_uid).exists(),
        "the old UID's state removed from the device"
    );
    assert_eq!(
        restarts(&new_forced),
        Some(0),
        "started once, never restarted"
    );
    let adopted = eventually(T, "kept pod Running after restart", || async {
        pods.get_opt(&keep).await.ok().flatten().filter(running)
    })
    .await?;
    assert_eq!(container_pid(&adopted), Some(pid), "same PID: adopted");
    assert_eq!(restarts(&adopted), Some(0), "never restarted");
    // Nothing runs twice: while the restarted operator polls, the machine keeps exactly one.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(
            pids_running(&["sleep", &keep_s]),
            sleeps,
            "exactly the same one process"
        );
        assert_eq!(pids_with(&supervisor), supervisors, "the same supervisor");
        assert_eq!(
            pids_running(&["sleep", &forced_s]),
            vec![new_pid],
            "one process for the re-created pod, its own"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A graceful delete of the adopted pod: SIGTERM to its process group, then gone.
    let began = Instant::now();
    d.c.kubectl(&["delete", "pod", "-n", NS, &keep, "--timeout=60s"])
        .await?;
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "delete took {:?}",
        began.elapsed()
    );
    assert_eq!(
        std::fs::read_to_string(&term)?.trim(),
        "TERM",
        "SIGTERM reached it"
    );
    assert!(!alive(pid) && pids_running(&["sleep", &keep_s]).is_empty());
    d.c.kubectl(&["delete", "pod", "-n", NS, &forced, "--timeout=60s"])
        .await?;
    assert!(pids_running(&["sleep", &forced_s]).is_empty());
    assert!(
        !d.state.pod(&uid).exists(),
        "pod state removed from the device"
    );
    d.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_host_key_is_refused_until_the_right_one_is_pinned() -> anyhow::Result<()> {
    let d = device(Pin::OtherKey, &[]).await?;
    let vns: Api<VirtualNode> = Api::all(d.c.client.clone());
    let vn = eventually(T, "BackendReachable=False HostKeyMismatch", || async {
        let vn = vns.get_opt(&d.node).await.ok().flatten()?;
        let (status, reason, _) = vnode_condition(&vn, "BackendReachable")?;
        (status == "False" && reason == "HostKeyMismatch").then_some(vn)
    })
    .await?;
    let ready = vnode_condition(&vn, "Ready").map(|(s, r, _)| (s, r));
    assert_eq!(
        ready.as_ref().map(|(s, _)| s.as_str()),
        Some("False"),
        "{ready:?}"
    );
    let nodes: Api<Node> = Api::all(d.c.client.clone());
    if let Some(n) = nodes.get_opt(&d.node).await? {
        assert!(!node_ready(&n), "the Node is not Ready");
    }

    // A pod bound to the node runs nothing while the key does not match.
    let (pod, secs) = (unique("refused"), unique_sleep());
    let spec: Pod = serde_json::from_value(pod_running(NS, &pod, &d.node, &["sleep", &secs]))?;
    Api::<Pod>::namespaced(d.c.client.clone(), NS)
        .create(&PostParams::default(), &spec)
        .await?;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert!(pids_running(&["sleep", &secs]).is_empty(), "nothing runs");
        assert!(!d.state.path().exists(), "nothing written to the device");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Pinning the right key (kubectl apply again) brings the node up and the pod runs.
    let user = whoami();
    let spec = SshBackendSpec {
        user: &user,
        port: d.sshd.port,
        key_secret: (fleetlet_e2e::cluster::OPERATOR_NAMESPACE, &d.secret),
        host_key: &d.sshd.host_key,
        state_dir: &d.state.0,
    };
    d.c.apply(&ssh_backend(&d.backend, &spec))
        .await
        .map_err(anyhow::Error::msg)?;
    d.ready_node().await?;
    let pods: Api<Pod> = Api::namespaced(d.c.client.clone(), NS);
    eventually(T, "pod Running once the key matches", || async {
        pods.get_opt(&pod).await.ok().flatten().filter(running)
    })
    .await?;
    assert_eq!(pids_running(&["sleep", &secs]).len(), 1);
    d.c.kubectl(&["delete", "pod", "-n", NS, &pod, "--timeout=60s"])
        .await?;
    d.cleanup().await;
    Ok(())
}
