//! Shared server state ([`Inner`]): the store, the "control plane down" switch, per-resource
//! latency, the request log, the cluster CA, the kubelet client, the bearer tokens (requests and
//! TokenReview) and the pluggable SubjectAccessReview authorizer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use crate::kubelet::KubeletClient;
use crate::pki::Ca;
use crate::store::Store;

/// The name requests without credentials are served as.
pub const ADMIN: &str = "admin";

/// One served request, as an audit log would name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    pub group: String,
    /// Plural resource name; empty for non-resource paths (discovery).
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub code: u16,
    /// The authenticated user (`system:anonymous` when authentication failed).
    pub user: String,
    /// The authenticated user's groups.
    pub groups: Vec<String>,
    pub at: Instant,
    /// The request path (without query), handy for non-resource requests.
    pub path: String,
}

/// An authenticated identity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    pub fn admin() -> Self {
        UserInfo {
            username: ADMIN.into(),
            uid: String::new(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }
    }
}

/// Decides a SubjectAccessReview: gets the review's `spec`, answers allowed or not.
pub type Authorizer = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

/// The default authorizer: the admin user (or `system:masters`) may do anything; nobody else may.
pub fn default_authorizer() -> Authorizer {
    Arc::new(|spec: &Value| {
        spec.get("user").and_then(Value::as_str) == Some(ADMIN)
            || spec
                .get("groups")
                .and_then(Value::as_array)
                .is_some_and(|g| g.iter().any(|x| x == "system:masters"))
    })
}

pub struct Auth {
    pub tokens: HashMap<String, UserInfo>,
    pub authorizer: Authorizer,
}

pub struct Inner {
    pub store: Store,
    pub down: watch::Sender<bool>,
    /// Users cut off from the API (a network partition between one client and the control plane).
    pub cut_off: Mutex<std::collections::HashSet<String>>,
    pub latency: Mutex<HashMap<String, Duration>>,
    pub requests: Mutex<Vec<RequestRecord>>,
    pub addr: SocketAddr,
    /// The cluster CA: signs CSRs and the serving certificate.
    pub ca: Ca,
    /// Longest lifetime the CSR signer issues.
    pub signing_duration: std::time::Duration,
    pub auth: Mutex<Auth>,
    /// The client CA, the apiserver's kubelet-client identity and the proxied-request log.
    pub kubelet: KubeletClient,
}

/// Locks a mutex, ignoring poisoning (a panicked test thread must not wedge the server).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    pub fn is_down(&self) -> bool {
        *self.down.borrow()
    }

    /// Whether requests of `user` are refused (the whole API down, or that user cut off).
    pub fn is_down_for(&self, user: &str) -> bool {
        self.is_down() || lock(&self.cut_off).contains(user)
    }

    pub fn latency_for(&self, resource: &str) -> Duration {
        lock(&self.latency)
            .get(resource)
            .copied()
            .unwrap_or(Duration::ZERO)
    }

    pub fn record(&self, r: RequestRecord) {
        lock(&self.requests).push(r);
    }

    pub fn user_for_token(&self, token: &str) -> Option<UserInfo> {
        lock(&self.auth).tokens.get(token).cloned()
    }

    pub fn authorize(&self, spec: &Value) -> bool {
        let a = lock(&self.auth).authorizer.clone();
        a(spec)
    }
}
