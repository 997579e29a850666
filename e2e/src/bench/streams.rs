//! `logs` and `exec`: one virtual node with one Mock pod, reached either straight at the node's kubelet
//! endpoint over HTTPS with a client certificate the test apiserver's client CA signed (`direct`), or
//! through the apiserver's pods/log and pods/exec proxy with the kube client (`proxy`).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use futures::{AsyncReadExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{AttachParams, LogParams};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use super::cli::{ExecArgs, LogsArgs, Via, parse_size};
use super::fleet::{Fleet, bring_up, start_operator};
use super::measure::{percentile, round};
use crate::cluster::{Cluster, unique};
use crate::kubelet::{create_and_wait, mock_pod, running};
use crate::kubelet_checks::endpoint;
use crate::operator::Operator;
use fleetlet_test_apiserver::kubelet::{Identity, tls};

/// The pod a stream scenario talks to, and how to reach its node's kubelet endpoint.
struct Target {
    ns: String,
    pod: String,
    /// `(host, port, client identity)` for `direct`.
    direct: Option<(String, u16, Identity)>,
    _op: Operator,
    _fleet: Fleet,
}

async fn target(c: &Cluster, command: &[&str], via: Via) -> anyhow::Result<Target> {
    let op = start_operator(c, 1).await?;
    let fleet = Fleet::new(1);
    bring_up(c, &fleet, 1, Duration::from_secs(120)).await?;
    let node = fleet.nodes[0].clone();
    let ns = unique("bench-stream");
    c.ensure_namespace(&ns).await?;
    let pod = unique("p");
    create_and_wait(
        c,
        mock_pod(&ns, &pod, &node, &[("main", command)], "Never"),
        "bench pod running",
        running,
    )
    .await?;
    let direct = match via {
        Via::Proxy => None,
        Via::Direct => {
            let api = c
                .apiserver
                .as_ref()
                .context("--via direct needs the in-process test apiserver (its client CA signs our certificate)")?;
            let (cert_pem, key_pem) = api.client_cert("fleetlet-bench", &["system:masters"]);
            let n = Api::<Node>::all(c.client.clone()).get(&node).await?;
            let (host, port) = endpoint(&n).context("node without a kubelet endpoint")?;
            Some((host, port, Identity { cert_pem, key_pem }))
        }
    };
    Ok(Target {
        ns,
        pod,
        direct,
        _op: op,
        _fleet: fleet,
    })
}

/// The default transport: direct when we can sign a client certificate, else through the proxy.
fn via(c: &Cluster, chosen: Option<Via>) -> Via {
    chosen.unwrap_or(if c.apiserver.is_some() {
        Via::Direct
    } else {
        Via::Proxy
    })
}

fn via_name(v: Via) -> &'static str {
    match v {
        Via::Direct => "direct (HTTPS to the kubelet endpoint, client certificate)",
        Via::Proxy => "proxy (apiserver pods/log and pods/exec)",
    }
}

/// `logs`: the container sleeps 2 s (the follower connects meanwhile), then writes the log with the
/// Mock's `loggen`; throughput is bytes received over first byte -> end of stream.
pub async fn logs(c: &Cluster, a: &LogsArgs) -> anyhow::Result<Value> {
    let bytes = parse_size(&a.bytes).context("--bytes: a size such as 256M")?;
    let via = via(c, a.via);
    let body = format!("sleep 2; loggen {bytes} {}", a.line_bytes);
    let t = target(c, &["sh", "-c", &body], via).await?;
    let path = format!("/containerLogs/{}/{}/main?follow=true", t.ns, t.pod);
    let (received, seconds) = match &t.direct {
        Some((host, port, id)) => {
            let config = std::sync::Arc::new(tls::client_config(Some(id), None)?);
            let stream = tls::dial(config, host, *port).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let req = http::Request::get(&path)
                .header(http::header::HOST, tls::join_host_port(host, *port))
                .body(Empty::<Bytes>::new())?;
            let resp = sender.send_request(req).await?;
            anyhow::ensure!(
                resp.status() == 200,
                "containerLogs: HTTP {}",
                resp.status()
            );
            let mut body = resp.into_body();
            let (mut n, mut first) = (0u64, None);
            while let Some(frame) = body.frame().await {
                if let Some(data) = frame?.data_ref() {
                    first.get_or_insert_with(Instant::now);
                    n += data.len() as u64;
                }
            }
            (n, first.map_or(0.0, |f| f.elapsed().as_secs_f64()))
        }
        None => {
            let pods: Api<Pod> = Api::namespaced(c.client.clone(), &t.ns);
            let params = LogParams {
                follow: true,
                container: Some("main".into()),
                ..LogParams::default()
            };
            let mut reader = pods.log_stream(&t.pod, &params).await?;
            let mut buf = vec![0u8; 256 * 1024];
            let (mut n, mut first) = (0u64, None);
            loop {
                let got = reader.read(&mut buf).await?;
                if got == 0 {
                    break;
                }
                first.get_or_insert_with(Instant::now);
                n += got as u64;
            }
            (n, first.map_or(0.0, |f| f.elapsed().as_secs_f64()))
        }
    };
    Ok(json!({
        "via": via_name(via),
        "bytes_written": bytes,
        "bytes_received": received,
        "lost_bytes": bytes.saturating_sub(received),
        "line_bytes": a.line_bytes,
        "seconds": round(seconds, 4),
        "mb_per_s": round(received as f64 / 1e6 / seconds.max(1e-9), 1),
    }))
}

/// `exec`: each sample is one whole `exec -- echo <63 x>` (64 bytes back with the newline): connection,
/// TLS handshake (direct) or apiserver round trip (proxy), authorization, upgrade, the command, its
/// output and exit status.
pub async fn exec(c: &Cluster, a: &ExecArgs) -> anyhow::Result<Value> {
    let via = via(c, a.via);
    let t = target(c, &["sleep", "infinity"], via).await?;
    let payload = "x".repeat(63);
    let mut samples = Vec::with_capacity(a.samples);
    for i in 0..a.samples + 5 {
        let started = Instant::now();
        let out = match &t.direct {
            Some((host, port, id)) => exec_direct(host, *port, id, &t, &payload).await?,
            None => exec_proxy(c, &t, &payload).await?,
        };
        let took = started.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(out == format!("{payload}\n"), "exec echoed {out:?}");
        if i >= 5 {
            samples.push(took);
        }
    }
    Ok(json!({
        "via": via_name(via),
        "samples": samples.len(),
        "p50_ms": percentile(&samples, 50.0).map(|x| round(x, 3)),
        "p99_ms": percentile(&samples, 99.0).map(|x| round(x, 3)),
        "max_ms": percentile(&samples, 100.0).map(|x| round(x, 3)),
    }))
}

/// One exec over WebSocket (`v5.channel.k8s.io`) straight at the kubelet endpoint; stdout.
async fn exec_direct(
    host: &str,
    port: u16,
    id: &Identity,
    t: &Target,
    payload: &str,
) -> anyhow::Result<String> {
    let config = std::sync::Arc::new(tls::client_config(Some(id), None)?);
    let stream = tls::dial(config, host, port).await?;
    let url = format!(
        "wss://{}/exec/{}/{}/main?command=echo&command={payload}&output=1&error=1",
        tls::join_host_port(host, port),
        t.ns,
        t.pod
    );
    let mut req = url.into_client_request()?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        http::HeaderValue::from_static("v5.channel.k8s.io"),
    );
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await?;
    let (mut stdout, mut status) = (Vec::new(), Vec::new());
    let deadline = Duration::from_secs(10);
    while let Some(msg) = tokio::time::timeout(deadline, ws.next())
        .await
        .context("exec timed out")?
    {
        match msg? {
            Message::Binary(b) if b.first() == Some(&1) => stdout.extend_from_slice(&b[1..]),
            Message::Binary(b) if b.first() == Some(&3) => status.extend_from_slice(&b[1..]),
            Message::Close(_) => break,
            _ => {}
        }
    }
    let _ = ws.close(None).await;
    let status: Value = serde_json::from_slice(&status).context("exec status")?;
    anyhow::ensure!(status["status"] == "Success", "exec status {status}");
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// One exec through the apiserver's pods/exec proxy (kube's WebSocket client); stdout.
async fn exec_proxy(c: &Cluster, t: &Target, payload: &str) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &t.ns);
    let ap = AttachParams::default().container("main").stderr(false);
    let mut proc = pods.exec(&t.pod, ["echo", payload], &ap).await?;
    let mut out = String::new();
    if let Some(mut stdout) = proc.stdout() {
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut out).await?;
    }
    let status = proc.take_status().context("exec status")?.await;
    anyhow::ensure!(
        status.as_ref().and_then(|s| s.status.as_deref()) == Some("Success"),
        "exec status {status:?}"
    );
    proc.join().await?;
    Ok(out)
}
