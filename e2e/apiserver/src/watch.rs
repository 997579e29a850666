//! Watch streams: newline-delimited JSON `WatchEvent`s over a chunked response, flushed per event.
//! Starts from a resourceVersion (resuming from the kept history; 410 Expired as an ERROR event
//! when it is gone) or from the current state as ADDED events; applies label/field selectors to
//! both sides of each change like the watch cache (leaving the selector = DELETED, entering it =
//! ADDED); sends BOOKMARKs when allowed; ends at `timeoutSeconds` or when the server goes down.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::errors::ApiError;
use crate::resources::ResourceDef;
use crate::selectors::Selectors;
use crate::server::Inner;
use crate::store::EventType;

/// How often a watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(1);

pub struct WatchParams {
    pub def: Arc<ResourceDef>,
    pub version: String,
    pub namespace: Option<String>,
    pub resource_version: Option<String>,
    pub selectors: Selectors,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    /// `Some(includeObject)` when the client asked for Table rows.
    pub table: Option<String>,
}

type Tx = mpsc::Sender<Result<Bytes, Infallible>>;

pub fn response(inner: Arc<Inner>, p: WatchParams) -> Response {
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    tokio::spawn(async move { run(inner, p, tx).await });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

impl WatchParams {
    fn in_scope(&self, obj: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| crate::meta::namespace(obj) == ns)
    }

    fn matches(&self, obj: &Value) -> bool {
        self.in_scope(obj) && self.selectors.matches(obj)
    }

    fn render(&self, obj: &Value) -> Value {
        let obj = crate::http::present(&self.def, &self.version, obj.clone());
        match &self.table {
            Some(include) => {
                crate::crd::table::table(&self.def, &self.version, &[obj], include, json!({}))
            }
            None => obj,
        }
    }
}

async fn send(tx: &Tx, etype: &str, object: Value) -> bool {
    let mut line = json!({"type": etype, "object": object}).to_string();
    line.push('\n');
    tx.send(Ok(Bytes::from(line))).await.is_ok()
}

async fn bookmark(tx: &Tx, p: &WatchParams, rv: u64) -> bool {
    let obj = json!({"kind": p.def.kind, "apiVersion": p.def.api_version(&p.version), "metadata": {"resourceVersion": rv.to_string()}});
    send(tx, "BOOKMARK", obj).await
}

async fn expired(tx: &Tx, rv: u64) {
    let status = ApiError::expired(format!("too old resource version: {rv}")).status();
    send(tx, "ERROR", status).await;
}

async fn run(inner: Arc<Inner>, p: WatchParams, tx: Tx) {
    let store = &inner.store;
    let mut ticks = store.subscribe();
    let mut down = inner.down.subscribe();
    let start = p
        .resource_version
        .as_deref()
        .filter(|rv| !rv.is_empty() && *rv != "0");
    let mut cursor = match start {
        None => {
            let (items, rv) = store.list(&p.def, p.namespace.as_deref());
            for o in items.iter().filter(|o| p.matches(o)) {
                if !send(&tx, "ADDED", p.render(o)).await {
                    return;
                }
            }
            rv
        }
        Some(rv) => match rv.parse::<u64>() {
            Ok(rv) => rv,
            Err(_) => {
                let status =
                    ApiError::bad_request(format!("invalid resource version: {rv}")).status();
                send(&tx, "ERROR", status).await;
                return;
            }
        },
    };
    let deadline = p.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut bookmarks = tokio::time::interval(BOOKMARK_EVERY);
    bookmarks.tick().await;
    let key = p.def.key();
    loop {
        if *down.borrow() {
            return;
        }
        let Some((events, now)) = store.events_since(cursor) else {
            expired(&tx, cursor).await;
            return;
        };
        for e in events.iter().filter(|e| e.resource == key) {
            let new_match = p.matches(&e.object);
            let old_match = match (&e.old, e.etype) {
                (Some(old), _) => p.matches(old),
                (None, EventType::Deleted) => new_match,
                (None, _) => false,
            };
            let etype = match e.etype {
                EventType::Deleted if old_match || new_match => Some("DELETED"),
                EventType::Deleted => None,
                _ if old_match && new_match => Some("MODIFIED"),
                _ if new_match => Some("ADDED"),
                _ if old_match => Some("DELETED"),
                _ => None,
            };
            if let Some(t) = etype
                && !send(&tx, t, p.render(&e.object)).await
            {
                return;
            }
        }
        cursor = cursor.max(now);
        tokio::select! {
            r = ticks.changed() => if r.is_err() { return },
            _ = down.changed() => return,
            _ = bookmarks.tick(), if p.bookmarks => {
                if !bookmark(&tx, &p, cursor).await { return }
            }
            _ = sleep_until(deadline) => {
                if p.bookmarks {
                    bookmark(&tx, &p, cursor).await;
                }
                return;
            }
            _ = tx.closed() => return,
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
