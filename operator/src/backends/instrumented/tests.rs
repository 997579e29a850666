#![allow(clippy::unwrap_used)]
//! The decorator: outcomes per operation, streaming operations timed to establishment (recorded
//! while still running), output passed through unchanged, and the Mock still conformant behind it.

use std::sync::Mutex;
use std::time::Duration;

use fleetlet_crds::MockBackend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use vk_runtime::provider::{OutputChunk, OutputStream, output_channel};
use vk_runtime::testing::{ConformanceConfig, conformance};

use super::*;
use crate::backends::mock::MockProvider;

/// exec: prints "hi" (unless told to fail), waits for `release`, prints 40 more chunks alternating
/// between stdout and stderr, exits 3.
/// port-forward: writes "pong", waits for `release`. Everything else: NotFound.
#[derive(Default)]
struct Scripted {
    release: Mutex<Option<oneshot::Receiver<()>>>,
    fail_exec: bool,
}

#[async_trait]
impl Provider for Scripted {
    async fn node_resources(&self) -> Result<NodeResources, ProviderError> {
        Ok(NodeResources::default())
    }
    async fn health(&self) -> Health {
        Health::unhealthy("HostUnreachable", "down")
    }
    fn set_notifier(&self, _: PodNotifier) {}
    async fn create_pod(&self, _: &ResolvedPod) -> Result<(), ProviderError> {
        Ok(())
    }
    async fn delete_pod(&self, _: &PodRef, _: Duration) -> Result<(), ProviderError> {
        Err(ProviderError::NotFound("gone".into()))
    }
    async fn pod_status(&self, _: &PodRef) -> Result<Option<BackendPodStatus>, ProviderError> {
        Ok(None)
    }
    async fn list_pods(&self) -> Result<Vec<PodRef>, ProviderError> {
        Err(ProviderError::Unavailable("down".into()))
    }
    async fn exec(
        &self,
        _: &PodRef,
        _: &str,
        _: Vec<String>,
        io: ExecIo,
    ) -> Result<i32, ProviderError> {
        if self.fail_exec {
            return Err(ProviderError::NotFound("container".into()));
        }
        let (out, err) = (io.stdout.unwrap(), io.stderr.unwrap());
        out.send(Bytes::from_static(b"hi")).await.unwrap();
        let release = self.release.lock().unwrap().take().unwrap();
        let _ = release.await;
        for i in 0..40 {
            let tx = if i % 2 == 0 { &out } else { &err };
            tx.send(Bytes::from(format!("{i};"))).await.unwrap();
        }
        Ok(3)
    }
    async fn port_forward(
        &self,
        _: &PodRef,
        _: u16,
        mut stream: Box<dyn BytePipe>,
    ) -> Result<(), ProviderError> {
        stream.write_all(b"pong").await.unwrap();
        let release = self.release.lock().unwrap().take().unwrap();
        let _ = release.await;
        Ok(())
    }
}

fn pod() -> PodRef {
    PodRef {
        namespace: "ns".into(),
        name: "web-1".into(),
        uid: "u".into(),
    }
}

fn count(m: &Metrics, operation: &str, outcome: &str) -> u64 {
    let needle = format!(
        r#"fleetlet_backend_operation_duration_seconds_count{{backend="mock",operation="{operation}",outcome="{outcome}"}} "#
    );
    m.render()
        .lines()
        .find_map(|l| l.strip_prefix(&needle).map(|n| n.parse().unwrap()))
        .unwrap_or(0)
}

fn wrapped(inner: Scripted) -> (DynProvider, Metrics) {
    let m = Metrics::new();
    (Instrumented::wrap(Arc::new(inner), "mock", m.clone()), m)
}

fn exec_io() -> (ExecIo, mpsc::Receiver<OutputChunk>) {
    let (stdout, stderr, rx) = output_channel(16, true, true);
    let io = ExecIo {
        stdin: None,
        stdout,
        stderr,
        resize: None,
        tty: false,
    };
    (io, rx)
}

#[tokio::test]
async fn request_response_outcomes() {
    let (p, m) = wrapped(Scripted::default());
    p.node_resources().await.unwrap();
    assert!(!p.health().await.ready);
    assert!(p.delete_pod(&pod(), Duration::ZERO).await.is_err());
    assert!(p.list_pods().await.is_err());
    assert!(p.stats().await.is_err());
    assert_eq!(count(&m, "node_resources", "ok"), 1);
    assert_eq!(count(&m, "health", "unhealthy"), 1);
    assert_eq!(count(&m, "delete_pod", "NotFound"), 1);
    assert_eq!(count(&m, "list_pods", "BackendUnavailable"), 1);
    assert_eq!(count(&m, "stats", "NotImplemented"), 1);
    assert!(!m.render().contains("web-1"), "no pod name in a label");
}

#[tokio::test]
async fn exec_is_timed_to_first_output_and_passes_every_byte() {
    let (release, released) = oneshot::channel();
    let (p, m) = wrapped(Scripted {
        release: Mutex::new(Some(released)),
        fail_exec: false,
    });
    let (io, mut out) = exec_io();
    let session = tokio::spawn(async move { p.exec(&pod(), "c", vec![], io).await });
    assert_eq!(
        out.recv().await.unwrap(),
        (OutputStream::Stdout, Bytes::from_static(b"hi"))
    );
    // Established: counted while the command still runs.
    tokio::time::timeout(Duration::from_secs(10), async {
        while count(&m, "exec", "ok") == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    release.send(()).unwrap();
    let mut rest = Vec::new();
    while let Some(chunk) = out.recv().await {
        rest.push(chunk);
    }
    let want: Vec<OutputChunk> = (0..40)
        .map(|i| {
            let stream = if i % 2 == 0 {
                OutputStream::Stdout
            } else {
                OutputStream::Stderr
            };
            (stream, Bytes::from(format!("{i};")))
        })
        .collect();
    assert_eq!(
        rest, want,
        "every chunk, in order across both streams, then EOF"
    );
    assert_eq!(session.await.unwrap().unwrap(), 3);
    assert_eq!(count(&m, "exec", "ok"), 1, "recorded once");
}

#[tokio::test]
async fn exec_failing_before_output_records_its_reason() {
    let (p, m) = wrapped(Scripted {
        fail_exec: true,
        ..Default::default()
    });
    let (io, mut out) = exec_io();
    assert!(p.exec(&pod(), "c", vec![], io).await.is_err());
    assert_eq!(out.recv().await, None, "the runtime sees EOF");
    assert_eq!(count(&m, "exec", "NotFound"), 1);
    assert_eq!(count(&m, "exec", "ok"), 0);
}

#[tokio::test]
async fn port_forward_is_timed_to_first_use() {
    let (release, released) = oneshot::channel();
    let (p, m) = wrapped(Scripted {
        release: Mutex::new(Some(released)),
        fail_exec: false,
    });
    let (ours, mut theirs) = tokio::io::duplex(64);
    let forward = tokio::spawn(async move { p.port_forward(&pod(), 80, Box::new(ours)).await });
    let mut buf = [0u8; 4];
    theirs.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    assert_eq!(count(&m, "port_forward", "ok"), 1, "counted while open");
    release.send(()).unwrap();
    forward.await.unwrap().unwrap();
    assert_eq!(count(&m, "port_forward", "ok"), 1, "recorded once");
}

#[tokio::test]
async fn mock_behind_the_decorator_passes_conformance() {
    let m = Metrics::new();
    let mock = Arc::new(MockProvider::new(&MockBackend::default(), "node-a"));
    let p = Instrumented::wrap(mock, "mock", m.clone());
    conformance(p, &ConformanceConfig::default()).await.unwrap();
    for op in ["create_pod", "delete_pod", "logs", "exec"] {
        assert!(count(&m, op, "ok") > 0, "{op} timed");
    }
}
