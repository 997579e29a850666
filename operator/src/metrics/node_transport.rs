//! A node identity's HTTP transport: at most one kept-alive connection and nothing else between requests.
//!
//! hyper-util's pooled client keeps, for every idle connection, a connection task, its request channel
//! and read and write buffers: ~40 KB per node identity, paid a thousand times in a large fleet while
//! the node does nothing but renew its Lease every 10 s. This transport keeps only the TLS stream
//! itself between requests. Each request runs one hyper HTTP/1.1 exchange over the stream (hyper's own
//! parser and body handling, no code of ours on the wire), driven by the caller (no task, no channel)
//! and takes the stream back when the exchange has ended cleanly: the response read to its end, no
//! `Connection: close`, nothing left unread. A request
//! that finds the kept stream busy or gone opens another; only one is kept afterwards (none with a
//! sizing that keeps none).
//!
//! A kept stream the server closed meanwhile is noticed before it is reused (a non-blocking read sees
//! the end of the stream), so a request is never written to a connection known to be dead.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri, header};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tower::BoxError;
use tower::Service;

/// A byte stream to the apiserver: TLS over TCP, or plain TCP for `http://` URLs.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
type Stream = Box<dyn Io>;

/// Where and how to connect.
struct Target {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// How long to wait, and how much to keep.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub connect_timeout: Option<Duration>,
    /// From sending the request to the response head.
    pub read_timeout: Option<Duration>,
    /// hyper's read buffer for the exchange (a fixed size; Lease answers are well under 1 KiB).
    pub read_buf: usize,
    /// Keep one connection between requests (`false`: nothing kept, a connection per request).
    pub keep: bool,
}

/// The transport; cheap to clone (all clones share the kept connection).
#[derive(Clone)]
pub struct NodeTransport(Arc<Inner>);

struct Inner {
    target: Target,
    limits: Limits,
    idle: Mutex<Option<Stream>>,
}

impl NodeTransport {
    /// A transport to the server at `url` (`https://` with `tls`, or `http://`).
    ///
    /// # Errors
    /// A URL without a host, or a server name rustls cannot use.
    pub fn new(
        url: &Uri,
        mut tls: rustls::ClientConfig,
        server_name: Option<&str>,
        limits: Limits,
    ) -> Result<Self, BoxError> {
        let host = url
            .host()
            .ok_or("the cluster URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let https = url.scheme_str() != Some("http");
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            // This transport speaks HTTP/1.1 only; never let the server pick h2.
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = ServerName::try_from(server_name.unwrap_or(&host).to_string())?;
            Some((TlsConnector::from(Arc::new(tls)), name))
        } else {
            None
        };
        Ok(Self(Arc::new(Inner {
            target: Target { host, port, tls },
            limits,
            idle: Mutex::new(None),
        })))
    }
}

impl Service<Request<kube::client::Body>> for NodeTransport {
    type Response = Response<Tracked>;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
        Box::pin(self.0.clone().send(req))
    }
}

/// One exchange's hyper connection (it owns the stream until the exchange is over).
type Conn = hyper::client::conn::http1::Connection<TokioIo<Stream>, kube::client::Body>;

impl Inner {
    async fn send(
        self: Arc<Self>,
        mut req: Request<kube::client::Body>,
    ) -> Result<Response<Tracked>, BoxError> {
        origin_form(&mut req)?;
        let stream = match self.checkout() {
            Some(s) => s,
            None => self.connect().await?,
        };
        let mut builder = hyper::client::conn::http1::Builder::new();
        builder.read_buf_exact_size(Some(self.limits.read_buf));
        let (mut sender, conn) = builder.handshake(TokioIo::new(stream)).await?;
        // The connection is driven by whoever waits on it: here until the response head, then by the
        // body's reader. No task is spawned; when the body ends the stream comes straight back.
        let mut exchange = Exchange {
            conn: Some(conn),
            done: false,
        };
        let mut response = std::pin::pin!(sender.send_request(req));
        let head = std::future::poll_fn(|cx| {
            exchange.drive(cx);
            response.as_mut().poll(cx)
        });
        let response = match self.limits.read_timeout {
            Some(t) => tokio::time::timeout(t, head)
                .await
                .map_err(|_| "timed out waiting for the apiserver's response")??,
            None => head.await?,
        };
        // No further request on this exchange: it completes once the body has been read.
        drop(sender);
        let reusable = reusable(&response);
        Ok(response.map(|body| Tracked {
            body,
            exchange,
            reusable,
            inner: self,
        }))
    }

    /// The kept connection, if there is one and the server has not closed it.
    fn checkout(&self) -> Option<Stream> {
        let mut stream = self.idle.lock().ok()?.take()?;
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut stream).poll_read(&mut cx, &mut buf) {
            // Nothing to read: the connection is open and idle.
            Poll::Pending => Some(stream),
            // The end of the stream (the server closed it), an error, or bytes nobody asked for.
            Poll::Ready(_) => None,
        }
    }

    /// Keeps an exchange's stream if nothing of it is left unread.
    fn checkin_parts(&self, conn: Conn) {
        let parts = conn.into_parts();
        if parts.read_buf.is_empty() {
            self.checkin(parts.io.into_inner());
        }
    }

    fn checkin(&self, stream: Stream) {
        if !self.limits.keep {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.is_none()
        {
            *idle = Some(stream);
        }
    }

    async fn connect(&self) -> Result<Stream, BoxError> {
        let connect = async {
            let t = &self.target;
            let tcp = TcpStream::connect((t.host.as_str(), t.port)).await?;
            tcp.set_nodelay(true)?;
            Ok::<Stream, BoxError>(match &t.tls {
                Some((tls, name)) => Box::new(tls.connect(name.clone(), tcp).await?),
                None => Box::new(tcp),
            })
        };
        match self.limits.connect_timeout {
            Some(d) => tokio::time::timeout(d, connect)
                .await
                .map_err(|_| "timed out connecting to the apiserver")?,
            None => connect.await,
        }
    }
}

/// HTTP/1.1 wants the path in the request line and the authority in `Host`.
fn origin_form<B>(req: &mut Request<B>) -> Result<(), BoxError> {
    let uri = req.uri().clone();
    if let Some(authority) = uri.authority() {
        let host = header::HeaderValue::from_str(authority.as_str())?;
        req.headers_mut().entry(header::HOST).or_insert(host);
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = path.parse()?;
    Ok(())
}

/// Whether the server lets the connection live on after this response.
fn reusable<B>(response: &Response<B>) -> bool {
    let close = response
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.eq_ignore_ascii_case("close")));
    !close && response.version() == http::Version::HTTP_11
}

/// An exchange's connection, and whether hyper has finished with it.
struct Exchange {
    conn: Option<Conn>,
    done: bool,
}

impl Exchange {
    /// Lets the connection make progress; a failed connection is dropped (its error reaches the
    /// response or the body through hyper).
    fn drive(&mut self, cx: &mut Context<'_>) {
        if self.done {
            return;
        }
        if let Some(conn) = &mut self.conn {
            match conn.poll_without_shutdown(cx) {
                Poll::Ready(Ok(())) => self.done = true,
                Poll::Ready(Err(_)) => self.conn = None,
                Poll::Pending => {}
            }
        }
    }
}

/// A response body that drives its exchange and, once read to its end, gives the stream back.
pub struct Tracked {
    body: Incoming,
    exchange: Exchange,
    reusable: bool,
    inner: Arc<Inner>,
}

impl Tracked {
    /// The body has ended: keep the stream if the exchange ended cleanly with nothing left over.
    fn finish(&mut self) {
        if !self.reusable {
            self.exchange.conn = None;
            return;
        }
        self.exchange.drive(&mut Context::from_waker(Waker::noop()));
        let Some(conn) = self.exchange.conn.take() else {
            return;
        };
        if self.exchange.done {
            self.inner.checkin_parts(conn);
        } else if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // hyper wants another turn (not seen in practice): let it finish on its own.
            let inner = self.inner.clone();
            let mut conn = conn;
            runtime.spawn(async move {
                if std::future::poll_fn(|cx| conn.poll_without_shutdown(cx))
                    .await
                    .is_ok()
                {
                    inner.checkin_parts(conn);
                }
            });
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // A body nobody read (an empty one) ended too; one dropped half-read takes its stream along.
        if self.body.is_end_stream() {
            self.finish();
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.exchange.drive(cx);
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Err(_))) => self.exchange.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt as _, Full};
    use hyper::service::service_fn;
    use tokio::sync::Notify;

    use super::*;
    use crate::metrics::Metrics;
    use crate::metrics::stack::{Sizing, node_client_source};

    /// A real HTTP/1.1 server (hyper, over TLS when given a config) that records each connection's
    /// peer and, with `close_idle`, closes a connection once it has answered (as a server's idle
    /// timeout would: no `Connection: close`, the stream just ends).
    struct Server {
        url: String,
        peers: Arc<Mutex<Vec<SocketAddr>>>,
        closed: Arc<AtomicUsize>,
    }

    async fn server(tls: Option<Arc<rustls::ServerConfig>>, close_idle: bool) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicUsize::new(0));
        let (seen, ended) = (peers.clone(), closed.clone());
        let acceptor = tls.clone().map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = listener.accept().await.unwrap();
                seen.lock().unwrap().push(peer);
                let (acceptor, ended) = (acceptor.clone(), ended.clone());
                tokio::spawn(async move {
                    let io: Stream = match acceptor {
                        Some(a) => Box::new(a.accept(tcp).await.unwrap()),
                        None => Box::new(tcp),
                    };
                    let answered = Arc::new(Notify::new());
                    let notify = answered.clone();
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let notify = notify.clone();
                        async move {
                            let body = match req.uri().path() {
                                "/big" => vec![b'x'; 256 * 1024],
                                _ => b"{}".to_vec(),
                            };
                            if close_idle {
                                tokio::spawn(async move {
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                    notify.notify_one();
                                });
                            }
                            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(body))))
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(io), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        () = answered.notified() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        Server {
            url: format!("{scheme}://{addr}"),
            peers,
            closed,
        }
    }

    fn source(
        url: &str,
        root: Option<Vec<u8>>,
        sizing: Sizing,
    ) -> (vk_runtime::certs::ClientSource, Metrics) {
        let mut config = kube::Config::new(url.parse().unwrap());
        config.root_cert = root.map(|der| vec![der]);
        let metrics = Metrics::new();
        (
            node_client_source(config, &metrics, sizing, &crate::fence::WriteGate::new()).unwrap(),
            metrics,
        )
    }

    async fn get(source: &vk_runtime::certs::ClientSource, path: &str) -> String {
        let req = Request::get(path).body(Vec::new()).unwrap();
        source().request_text(req).await.unwrap()
    }

    /// Waits (bounded) until `f` holds.
    async fn until(what: &str, f: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn tls_pair() -> (Arc<rustls::ServerConfig>, Vec<u8>) {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let der = cert.cert.der().to_vec();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone().into()], key)
        .unwrap();
        (Arc::new(config), der)
    }

    #[tokio::test]
    async fn sequential_requests_share_one_tls_connection() {
        let (tls, root) = tls_pair();
        let server = server(Some(tls), false).await;
        let (source, metrics) = source(&server.url, Some(root), Sizing::NODE);
        for _ in 0..3 {
            assert_eq!(get(&source, "/version").await, "{}");
        }
        // A large answer takes many reads of the small buffer and leaves the connection reusable.
        assert_eq!(get(&source, "/big").await.len(), 256 * 1024);
        assert_eq!(get(&source, "/version").await, "{}");
        assert_eq!(server.peers.lock().unwrap().len(), 1);
        assert!(
            metrics
                .render()
                .contains(r#"fleetlet_api_requests_total{client="node",verb="get",code="200"} 5"#)
        );
    }

    #[tokio::test]
    async fn an_unkept_sizing_keeps_no_connection() {
        let server = server(None, false).await;
        let (source, _) = source(&server.url, None, Sizing::UNKEPT);
        for _ in 0..3 {
            assert_eq!(get(&source, "/version").await, "{}");
        }
        assert_eq!(server.peers.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_not_reused() {
        for tls in [false, true] {
            let (config, root) = tls_pair();
            let server = server(tls.then_some(config), true).await;
            let (source, _) = source(&server.url, tls.then_some(root), Sizing::NODE);
            for n in 1..=3 {
                assert_eq!(get(&source, "/version").await, "{}", "tls {tls}");
                until("the server closes the idle connection", || {
                    server.closed.load(Ordering::SeqCst) == n
                })
                .await;
            }
            assert_eq!(server.peers.lock().unwrap().len(), 3, "tls {tls}");
        }
    }

    #[tokio::test]
    async fn a_body_dropped_half_read_does_not_leave_its_connection_for_reuse() {
        let server = server(None, false).await;
        let (source, _) = source(&server.url, None, Sizing::NODE);
        let req = Request::get("/big").body(Vec::new()).unwrap();
        let response = source().send(req.map(kube::client::Body::from)).await;
        let mut body = response.unwrap().into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.data_ref().is_some_and(|d| d.len() < 256 * 1024));
        drop(body);
        assert_eq!(get(&source, "/version").await, "{}");
        assert_eq!(get(&source, "/version").await, "{}");
        // The half-read connection is dropped; the next request's is kept and reused.
        assert_eq!(server.peers.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn concurrent_requests_open_more_connections_and_one_is_kept() {
        let server = server(None, false).await;
        let (source, _) = source(&server.url, None, Sizing::NODE);
        let all = futures::future::join_all((0..4).map(|_| get(&source, "/big"))).await;
        assert!(all.iter().all(|b| b.len() == 256 * 1024));
        let opened = server.peers.lock().unwrap().len();
        assert!(
            opened > 1,
            "four concurrent requests used {opened} connection(s)"
        );
        assert_eq!(get(&source, "/version").await, "{}");
        assert_eq!(server.peers.lock().unwrap().len(), opened);
    }
}
