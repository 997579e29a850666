//! fleetlet's in-process test apiserver: an axum server on 127.0.0.1 that behaves like
//! kube-apiserver for the `kube` client and `kubectl` — storage with resourceVersions, discovery,
//! CRUD, the four patch types, watches, CRDs with schema and CEL validation, kubectl tables — plus
//! a scheduler, garbage collector, node lifecycle controller and CSR signer acting on its store,
//! and the kubelet proxy (`pods/log|exec|attach|portforward`, `nodes/NAME/proxy`) that presents a
//! kubelet-client certificate signed by the client CA it publishes in
//! `kube-system/extension-apiserver-authentication`.
//!
//! It serves HTTPS ([`serving`]) with a certificate for 127.0.0.1/localhost signed by the cluster
//! CA ([`TestApiServer::ca_pem`]), which [`TestApiServer::kubeconfig_yaml`] trusts. Clients are
//! authenticated ([`authn`]) by client certificate (CN = user, O = groups; CSR-issued node
//! certificates included), bearer token or, without credentials, as the admin. Node identities
//! (`system:node:<name>` in `system:nodes`) are authorized ([`authz`]) like a cluster with
//! `--authorization-mode=Node,RBAC` and NodeRestriction: their own Node, Lease and bound pods only,
//! 403 `Status`es in kube-apiserver's words otherwise. Every request is recorded with its
//! authenticated user ([`RequestRecord`]), so tests can assert who made a write.
//! Test infrastructure only; never part of the fleetlet binary.
//!
//! ```no_run
//! # async fn demo() {
//! let server = fleetlet_test_apiserver::TestApiServer::start().await;
//! let kubeconfig = server.kubeconfig_yaml(); // https, trusting the cluster CA; user "admin" by certificate
//! # let _ = kubeconfig;
//! server.shutdown().await;
//! # }
//! ```

pub mod authn;
pub mod authz;
pub mod controllers;
pub mod conversion;
pub mod crd;
pub mod discovery;
pub mod errors;
pub mod http;
pub mod kinds;
pub mod kubelet;
pub mod meta;
pub mod patch;
pub mod pki;
pub mod resources;
pub mod selectors;
pub mod server;
pub mod serving;
pub mod store;
pub mod watch;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::sync::{oneshot, watch as tokio_watch};
use tokio::task::JoinHandle;

pub use server::{Authorizer, RequestRecord, UserInfo};

use crate::server::{Auth, Inner, lock};

/// What the test apiserver runs besides the API itself.
#[derive(Debug, Clone)]
pub struct Options {
    /// Bind pending pods to fitting nodes.
    pub scheduler: bool,
    /// Delete dependents whose owners are gone.
    pub garbage_collector: bool,
    /// Grace period after which a node whose Lease is not renewed gets Ready=Unknown; `None` = off.
    pub node_lifecycle: Option<Duration>,
    /// Events kept for watch resume; older resourceVersions get 410 Expired.
    pub watch_history: usize,
    /// PEM CA bundle that kubelet serving certificates must chain to (kube-apiserver
    /// `--kubelet-certificate-authority`); `None`: kubelet certificates are not verified.
    pub kubelet_certificate_authority: Option<String>,
    /// Verify kubelet serving certificates against the cluster CA (the one signing CSRs), as a cluster
    /// whose `--kubelet-certificate-authority` is its own CA; ignored when `kubelet_certificate_authority`
    /// is set.
    pub verify_kubelet_certificates: bool,
    /// Longest lifetime of a certificate the CSR signer issues (kube-controller-manager
    /// `--cluster-signing-duration`, default one year); a CSR's `expirationSeconds` may ask for less.
    pub signing_duration: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            scheduler: true,
            garbage_collector: true,
            node_lifecycle: None,
            watch_history: 10_000,
            kubelet_certificate_authority: None,
            verify_kubelet_certificates: false,
            signing_duration: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// A running test apiserver. Cheap to clone; all clones share one server.
#[derive(Clone)]
pub struct TestApiServer {
    inner: Arc<Inner>,
    /// The admin's client certificate (CN `admin`, O `system:masters`) for kubeconfigs.
    admin: Arc<kubelet::Identity>,
    stop: Arc<Mutex<Option<oneshot::Sender<()>>>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl TestApiServer {
    pub async fn start() -> TestApiServer {
        Self::start_with(Options::default()).await
    }

    /// Binds 127.0.0.1:0 (HTTPS) and starts the enabled controllers.
    ///
    /// # Panics
    /// When the loopback listener, the CAs or the TLS configuration cannot be created (test
    /// infrastructure).
    #[allow(clippy::expect_used)]
    pub async fn start_with(opts: Options) -> TestApiServer {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = tcp.local_addr().expect("local addr");
        let ca = pki::Ca::generate("fleetlet-test-apiserver-ca").expect("generate the cluster CA");
        let kubelet_ca = opts.kubelet_certificate_authority.clone().or_else(|| {
            opts.verify_kubelet_certificates
                .then(|| ca.pem().to_string())
        });
        let kubelet = kubelet::KubeletClient::generate(kubelet_ca.as_deref())
            .expect("generate the client CA and kubelet-client certificate");
        // Client certificates from either CA authenticate: the cluster CA issues CSR-signed node
        // identities, the client CA the apiserver's own and `client_cert` identities.
        let authn = Arc::new(
            authn::ClientCertAuthenticator::new(format!("{}{}", ca.pem(), kubelet.ca.pem()))
                .expect("trust the client CAs"),
        );
        let admin = kubelet
            .ca
            .issue(server::ADMIN, &["system:masters"])
            .expect("issue the admin certificate");
        let serving_id = serving::serving_identity(&ca).expect("issue the serving certificate");
        let tls = serving::server_config(&serving_id, &authn).expect("TLS server configuration");
        let (listener, acceptor) = serving::TlsListener::start(tcp, Arc::new(tls), authn.clone())
            .expect("start accepting");
        let inner = Arc::new(Inner {
            store: store::Store::new(opts.watch_history),
            down: tokio_watch::channel(false).0,
            cut_off: Mutex::new(std::collections::HashSet::new()),
            latency: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            addr,
            ca,
            signing_duration: opts.signing_duration,
            auth: Mutex::new(Auth {
                tokens: HashMap::new(),
                authorizer: server::default_authorizer(),
            }),
            kubelet,
        });
        inner.kubelet.publish(&inner.store, authn.bundle());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let app = http::router(inner.clone()).into_make_service_with_connect_info::<authn::Peer>();
        let mut tasks = vec![
            tokio::spawn(async move {
                let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                });
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "test apiserver stopped");
                }
            }),
            acceptor,
        ];
        let every = Duration::from_millis(500);
        if opts.scheduler {
            let mut scheduler = controllers::scheduler::Scheduler::default();
            tasks.push(tokio::spawn(controllers::run_on_change(
                inner.clone(),
                every,
                move |i| scheduler.pass(i),
            )));
        }
        if opts.garbage_collector {
            tasks.push(tokio::spawn(controllers::run_on_change(
                inner.clone(),
                every,
                controllers::gc::pass,
            )));
        }
        let mut csrs = controllers::csr::CsrController::default();
        tasks.push(tokio::spawn(controllers::run_on_change(
            inner.clone(),
            every,
            move |inner| csrs.pass(inner),
        )));
        if let Some(grace) = opts.node_lifecycle {
            let mut nl = controllers::node_lifecycle::NodeLifecycle::default();
            let check = (grace / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
            let inner = inner.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    nl.pass(&inner, grace);
                    tokio::time::sleep(check).await;
                }
            }));
        }
        TestApiServer {
            inner,
            admin: Arc::new(admin),
            stop: Arc::new(Mutex::new(Some(stop_tx))),
            tasks: Arc::new(Mutex::new(tasks)),
        }
    }

    /// `https://127.0.0.1:PORT`; the serving certificate chains to [`Self::ca_pem`].
    pub fn url(&self) -> String {
        format!("https://{}", self.inner.addr)
    }

    /// A kubeconfig for kubectl and `kube::Config`: cluster = [`Self::url`] trusting
    /// [`Self::ca_pem`] (`certificate-authority-data`), user `admin` (group `system:masters`) by
    /// client certificate, as kubeadm and kind write them (kubectl asks for a password when an
    /// HTTPS kubeconfig names no credentials).
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_for_identity(&self.admin)
    }

    /// As [`Self::kubeconfig_yaml`], authenticating with bearer `token` (see [`Self::add_token`]).
    pub fn kubeconfig_for_token(&self, token: &str) -> String {
        self.kubeconfig_with_user(&format!("{{token: {token}}}"))
    }

    /// As [`Self::kubeconfig_yaml`], authenticating with `identity`'s client certificate (e.g. a
    /// CSR-issued node certificate and its key).
    pub fn kubeconfig_for_identity(&self, identity: &kubelet::Identity) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        self.kubeconfig_with_user(&format!(
            "{{client-certificate-data: {}, client-key-data: {}}}",
            b64(&identity.cert_pem),
            b64(&identity.key_pem)
        ))
    }

    /// The kubeconfig with `user` (a YAML flow mapping) as the user's credentials.
    fn kubeconfig_with_user(&self, user: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(self.inner.ca.pem());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: user\n    namespace: default\ncurrent-context: test\nusers:\n- name: user\n  user: {user}\npreferences: {{}}\n",
            self.url()
        )
    }

    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// Control plane down: every request answers 503 and open watches are closed; `false` restores.
    pub fn set_unavailable(&self, down: bool) {
        self.inner.down.send_replace(down);
    }

    /// A partition between one client and the control plane: every request of `user` answers 503
    /// (watches it already has stay open); `false` restores. Others are served as usual.
    pub fn set_unavailable_for(&self, user: &str, down: bool) {
        let mut cut = lock(&self.inner.cut_off);
        if down {
            cut.insert(user.to_string());
        } else {
            cut.remove(user);
        }
    }

    /// Delays every request on `resource` (plural, e.g. "pods"); `Duration::ZERO` clears.
    pub fn set_latency(&self, resource: &str, delay: Duration) {
        let mut l = lock(&self.inner.latency);
        if delay.is_zero() {
            l.remove(resource);
        } else {
            l.insert(resource.to_string(), delay);
        }
    }

    /// Every request served so far, in order of completion.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.inner.requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.inner.requests).clear();
    }

    /// The cluster CA (PEM): signs approved CSRs and the serving certificate; kubeconfigs trust
    /// it, and the client certificates it issues authenticate.
    pub fn ca_pem(&self) -> String {
        self.inner.ca.pem().to_string()
    }

    /// The client CA (PEM): signs the apiserver's kubelet-client certificate and [`Self::client_cert`]
    /// identities. It and the cluster CA form the bundle published in ConfigMap
    /// `kube-system/extension-apiserver-authentication` under `client-ca-file`, which kubelets
    /// and this apiserver trust for client certificates.
    pub fn client_ca_pem(&self) -> String {
        self.inner.kubelet.ca.pem().to_string()
    }

    /// A client certificate and key (PEM) for `user` in `groups`, signed by the client CA.
    ///
    /// # Panics
    /// When key generation or signing fails (test infrastructure).
    #[allow(clippy::expect_used)]
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> (String, String) {
        let id = self
            .inner
            .kubelet
            .ca
            .issue(user, groups)
            .expect("issue a client certificate");
        (id.cert_pem, id.key_pem)
    }

    /// The certificate the apiserver presents to kubelets (`kube-apiserver-kubelet-client`,
    /// O `system:masters`).
    pub fn kubelet_client_identity(&self) -> kubelet::Identity {
        self.inner.kubelet.identity.clone()
    }

    /// Every request proxied to a kubelet so far: kubelet path, requested upgrade, the kubelet's
    /// status and the negotiated subprotocol.
    pub fn kubelet_requests(&self) -> Vec<kubelet::ProxyRecord> {
        self.inner.kubelet.records()
    }

    /// Registers a bearer token: requests carrying it are served as `user`, and TokenReview
    /// authenticates it.
    pub fn add_token(&self, token: &str, user: UserInfo) {
        lock(&self.inner.auth)
            .tokens
            .insert(token.to_string(), user);
    }

    /// Replaces the SubjectAccessReview authorizer (default: admin / system:masters allowed).
    pub fn set_authorizer(&self, authorizer: Authorizer) {
        lock(&self.inner.auth).authorizer = authorizer;
    }

    /// Stops serving, closes watches and stops the controllers.
    pub async fn shutdown(self) {
        self.inner.down.send_replace(true);
        if let Some(tx) = lock(&self.stop).take() {
            let _ = tx.send(());
        }
        let tasks: Vec<JoinHandle<()>> = lock(&self.tasks).drain(..).collect();
        let mut it = tasks.into_iter();
        if let Some(server) = it.next() {
            it.for_each(|t| t.abort());
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
    }
}
