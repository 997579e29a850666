//! Shared pieces of the kubelet API integration tests: a fake provider, pod lookup and authorizer,
//! a running HTTPS server on 127.0.0.1, and TLS/HTTP/SPDY client helpers.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::Pod;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Decoder;
use vk_runtime::api::{
    self, Authorizer, CertResolver, Decision, KubeletApi, ObservedRequest, PodLookup,
    RequestAttributes, RequestObserver, SharedObserver, UserInfo, auth::AuthError,
};
use vk_runtime::provider::{
    BackendPodStatus, BytePipe, ExecIo, Health, LogOptions, NodeResources, PodNotifier, PodRef,
    Provider, ProviderError, ResolvedPod, StatsSummary, Usage,
};
use vk_runtime::stream::spdy::frame::{self, Frame, FrameCodec};
use vk_runtime::stream::spdy::{HeaderDecoder, HeaderEncoder, HeaderLimits, Headers};

pub const WAIT: Duration = Duration::from_secs(10);

/// Log streams of the fake `follow` container still alive (held by the server).
pub static FOLLOWERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts itself in [`FOLLOWERS`] while alive.
pub struct Follower;

impl Follower {
    fn new() -> Self {
        FOLLOWERS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        FOLLOWERS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}
/// Chunks per stream the fake `interleave` command writes.
pub const INTERLEAVED: usize = 10;

/// The upgrade request of a SPDY session, authenticated, offering `protocols` (header lines).
pub fn spdy_request(path: &str, protocols: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer good\r\nConnection: Upgrade\r\n\
         Upgrade: SPDY/3.1\r\n{protocols}Content-Length: 0\r\n\r\n"
    )
}

pub fn web_pod() -> PodRef {
    PodRef {
        namespace: "default".into(),
        name: "web".into(),
        uid: "uid-1".into(),
    }
}

/// Port whose forward stays quiet (see [`Quiet`]).
pub const QUIET_PORT: u16 = 90;

/// What the quiet calls (exec `sleep`, attach, port-forward to [`QUIET_PORT`]) did: they never
/// write and never end on their own, so only the server dropping them ends them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quiet {
    pub started: usize,
    pub dropped: usize,
}

/// Counts a quiet call as dropped when the server drops its future.
struct QuietGuard(Arc<watch::Sender<Quiet>>);

impl Drop for QuietGuard {
    fn drop(&mut self) {
        self.0.send_modify(|q| q.dropped += 1);
    }
}

/// exec `cat`: stdin to stdout until EOF, "bye" on stderr, exit 7. exec `tty`: report the first
/// resize on stdout, exit 0. exec `interleave`: alternate chunks on stderr and stdout, exit 0.
/// exec `sleep`, attach: quiet, holding their streams. port-forward: echo, quiet on
/// [`QUIET_PORT`].
pub struct FakeProvider {
    pub quiet: Arc<watch::Sender<Quiet>>,
}

impl FakeProvider {
    /// Hold `held` (the call's streams or pipe) without reading or writing, until dropped.
    async fn stay_quiet<T, H>(&self, held: H) -> Result<T, ProviderError> {
        self.quiet.send_modify(|q| q.started += 1);
        let _guard = QuietGuard(self.quiet.clone());
        let _held = held;
        std::future::pending().await
    }
}

#[async_trait]
impl Provider for FakeProvider {
    async fn node_resources(&self) -> Result<NodeResources, ProviderError> {
        Ok(NodeResources::default())
    }
    async fn health(&self) -> Health {
        Health::healthy()
    }
    fn set_notifier(&self, _: PodNotifier) {}
    async fn create_pod(&self, _: &ResolvedPod) -> Result<(), ProviderError> {
        Ok(())
    }
    async fn delete_pod(&self, _: &PodRef, _: Duration) -> Result<(), ProviderError> {
        Ok(())
    }
    async fn pod_status(&self, _: &PodRef) -> Result<Option<BackendPodStatus>, ProviderError> {
        Ok(None)
    }
    async fn list_pods(&self) -> Result<Vec<PodRef>, ProviderError> {
        Ok(vec![web_pod()])
    }
    async fn logs(
        &self,
        _: &PodRef,
        container: &str,
        opts: &LogOptions,
    ) -> Result<BoxStream<'static, std::io::Result<Bytes>>, ProviderError> {
        if container == "follow" && opts.follow {
            // One line, then nothing until the client leaves; the guard counts live followers.
            let guard = Follower::new();
            let first = futures::stream::iter([Ok(Bytes::from("line1\n"))]);
            let idle = futures::stream::pending().map(move |b: Bytes| {
                let _ = &guard;
                Ok(b)
            });
            return Ok(first.chain(idle).boxed());
        }
        if container != "app" {
            return Err(ProviderError::NotFound(format!("container {container}")));
        }
        let tail = opts.tail_lines.unwrap_or(0);
        let chunks = vec![
            Ok(Bytes::from("line1\n")),
            Ok(Bytes::from(format!("tail={tail} follow={}\n", opts.follow))),
        ];
        Ok(futures::stream::iter(chunks).boxed())
    }
    async fn exec(
        &self,
        _: &PodRef,
        _: &str,
        command: Vec<String>,
        mut io: ExecIo,
    ) -> Result<i32, ProviderError> {
        match command.first().map(String::as_str) {
            Some("cat") => {
                let mut stdin = io
                    .stdin
                    .take()
                    .ok_or(ProviderError::InvalidInput("no stdin".into()))?;
                let stdout = io
                    .stdout
                    .take()
                    .ok_or(ProviderError::InvalidInput("no stdout".into()))?;
                while let Some(chunk) = stdin.recv().await {
                    let _ = stdout.send(chunk).await;
                }
                if let Some(stderr) = io.stderr.take() {
                    let _ = stderr.send(Bytes::from_static(b"bye")).await;
                }
                Ok(7)
            }
            // `e0;` on stderr, `o0;` on stdout, `e1;` ... `o9;`: the client must see this order.
            Some("interleave") => {
                for i in 0..INTERLEAVED {
                    for (tx, tag) in [(&io.stderr, 'e'), (&io.stdout, 'o')] {
                        if let Some(tx) = tx {
                            let _ = tx.send(Bytes::from(format!("{tag}{i};"))).await;
                        }
                    }
                }
                Ok(0)
            }
            Some("tty") => {
                let mut resize = io
                    .resize
                    .take()
                    .ok_or(ProviderError::InvalidInput("no resize".into()))?;
                let size = resize
                    .recv()
                    .await
                    .ok_or(ProviderError::Internal("no size".into()))?;
                if let Some(stdout) = io.stdout.take() {
                    let _ = stdout
                        .send(Bytes::from(format!(
                            "size {}x{} tty={}",
                            size.width, size.height, io.tty
                        )))
                        .await;
                }
                Ok(0)
            }
            Some("sleep") => self.stay_quiet(io).await,
            _ => Err(ProviderError::NotFound("no such command".into())),
        }
    }
    async fn attach(&self, _: &PodRef, _: &str, io: ExecIo) -> Result<i32, ProviderError> {
        self.stay_quiet(io).await
    }
    async fn port_forward(
        &self,
        _: &PodRef,
        port: u16,
        mut pipe: Box<dyn BytePipe>,
    ) -> Result<(), ProviderError> {
        if port == QUIET_PORT {
            return self.stay_quiet(pipe).await;
        }
        if port != 80 {
            return Err(ProviderError::Unavailable(format!(
                "nothing listens on {port}"
            )));
        }
        let (mut r, mut w) = tokio::io::split(&mut pipe);
        tokio::io::copy(&mut r, &mut w)
            .await
            .map_err(|e| ProviderError::Internal(e.to_string()))?;
        Ok(())
    }
    async fn stats(&self) -> Result<StatsSummary, ProviderError> {
        let u = Usage {
            cpu_usage_core_nano_seconds: 2_000_000_000,
            cpu_usage_nano_cores: 5,
            memory_working_set_bytes: 42,
            timestamp: None,
        };
        Ok(StatsSummary {
            node: u.clone(),
            pods: vec![(web_pod(), vec![("app".into(), u)])],
        })
    }
}

pub struct Pods;

impl PodLookup for Pods {
    fn lookup(&self, namespace: &str, name: &str) -> Option<PodRef> {
        (namespace == "default" && name == "web").then(web_pod)
    }
    fn pods(&self) -> Vec<Pod> {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        vec![pod]
    }
}

/// Token `good`: alice, allowed everything. Token `viewer`: bob, allowed only `get` on stats.
pub struct Tokens;

#[async_trait]
impl Authorizer for Tokens {
    async fn authenticate_token(&self, token: &str) -> Result<Option<UserInfo>, AuthError> {
        let name = match token {
            "good" => "alice",
            "viewer" => "bob",
            _ => return Ok(None),
        };
        Ok(Some(UserInfo {
            name: name.into(),
            ..Default::default()
        }))
    }
    async fn authorize(
        &self,
        user: &UserInfo,
        attrs: &RequestAttributes,
    ) -> Result<Decision, AuthError> {
        let allowed = user.name == "alice" || (attrs.verb == "get" && attrs.subresource == "stats");
        Ok(if allowed {
            Decision::Allow
        } else {
            Decision::Deny {
                reason: "test".into(),
            }
        })
    }
}

pub struct Server {
    pub addr: SocketAddr,
    pub tls: Arc<CertResolver>,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
    /// What the provider's quiet calls did.
    pub quiet: Arc<watch::Sender<Quiet>>,
}

/// Keeps every request the server reports.
#[derive(Debug, Default)]
pub struct Recorded(pub Mutex<Vec<ObservedRequest>>);

impl RequestObserver for Recorded {
    fn observe(&self, request: &ObservedRequest) {
        self.0.lock().unwrap().push(*request);
    }
}

pub async fn start() -> Server {
    start_with(None).await
}

pub async fn start_with(observer: Option<SharedObserver>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls =
        Arc::new(CertResolver::self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap());
    let quiet = Arc::new(watch::Sender::new(Quiet::default()));
    let api = KubeletApi {
        node_name: "vn-1".into(),
        provider: Arc::new(FakeProvider {
            quiet: quiet.clone(),
        }),
        pods: Arc::new(Pods),
        auth: Arc::new(Tokens),
        tls: tls.clone(),
        client_ca: None,
        observer,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        api::serve_on(listener, api, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Server {
        addr,
        tls,
        stop: Some(stop),
        task,
        quiet,
    }
}

pub async fn connect(server: &Server) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.tls.current().cert[0].clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// Wait (bounded) until the provider's quiet calls reached `want`.
pub async fn wait_quiet(server: &Server, want: Quiet) {
    let mut rx = server.quiet.subscribe();
    let reached = tokio::time::timeout(WAIT, rx.wait_for(|q| *q == want))
        .await
        .is_ok();
    assert!(
        reached,
        "quiet calls: want {want:?}, have {:?}",
        *rx.borrow()
    );
}

/// Send a raw HTTP/1.1 request and read the response head (status + raw header text).
pub async fn request_head<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    request: &str,
) -> (u16, String) {
    io.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(WAIT, io.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    let text = String::from_utf8(head).unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    (status, text.to_ascii_lowercase())
}

/// GET `path` (with an optional bearer token); returns status and the whole raw body.
pub async fn get(server: &Server, path: &str, token: Option<&str>) -> (u16, String) {
    let mut io = connect(server).await;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let (status, _) = request_head(
        &mut io,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"),
    )
    .await;
    let mut body = Vec::new();
    let _ = tokio::time::timeout(WAIT, io.read_to_end(&mut body))
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A minimal SPDY client on an upgraded connection.
pub struct SpdyClient<S> {
    pub io: S,
    buf: BytesMut,
    encoder: HeaderEncoder,
    decoder: HeaderDecoder,
    next_id: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> SpdyClient<S> {
    pub fn new(io: S) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            encoder: HeaderEncoder::new(),
            decoder: HeaderDecoder::new(HeaderLimits::default()),
            next_id: 1,
        }
    }

    pub async fn send(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        frame::encode(&frame, &mut out);
        self.io.write_all(&out).await.unwrap();
    }

    /// Open a stream with these headers; returns its id.
    pub async fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let mut h = Headers::new();
        for (n, v) in headers {
            h.insert(n, *v);
        }
        let header_block = self.encoder.encode(&h).unwrap();
        let stream_id = self.next_id;
        self.next_id += 2;
        self.send(Frame::SynStream {
            stream_id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            header_block,
        })
        .await;
        stream_id
    }

    pub async fn data(&mut self, stream_id: u32, data: &[u8], fin: bool) {
        let flags = if fin { frame::FLAG_FIN } else { 0 };
        self.send(Frame::Data {
            stream_id,
            flags,
            data: Bytes::copy_from_slice(data),
        })
        .await;
    }

    /// The next frame (header blocks of SYN_REPLY are inflated to keep the context in step).
    pub async fn next(&mut self) -> Option<Frame> {
        let mut codec = FrameCodec { max_len: 1 << 24 };
        loop {
            if let Some(frame) = codec.decode(&mut self.buf).unwrap() {
                if let Frame::SynReply { header_block, .. } = &frame {
                    self.decoder.decode(header_block).unwrap();
                }
                return Some(frame);
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.io.read(&mut chunk))
                .await
                .unwrap()
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
