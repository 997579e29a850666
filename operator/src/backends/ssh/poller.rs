//! The device's status poll: one remote command per interval per device (not per pod) reads every
//! pod's state; changes are reported through the [`PodNotifier`]. Any provider call that needs fresh
//! state runs the same poll, so reports and answers agree.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use vk_runtime::{BackendPodStatus, PodNotifier, PodRef, ProviderError};

use super::conn::{Conn, SshError};
use super::scripts;
use super::session::unavailable;
use super::state::{Snapshot, parse};

/// The poll state of one device.
pub struct Poller {
    pub conn: Arc<Conn>,
    pub notifier: RwLock<Option<PodNotifier>>,
    snapshot: Mutex<Snapshot>,
    reported: Mutex<HashMap<PodRef, BackendPodStatus>>,
    /// Serialises polls, so reports are never sent out of order.
    polling: tokio::sync::Mutex<()>,
    wake: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Poller {
    pub fn new(conn: Arc<Conn>) -> Self {
        Self {
            conn,
            notifier: RwLock::new(None),
            snapshot: Mutex::default(),
            reported: Mutex::default(),
            polling: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
        }
    }

    /// Poll soon (after a start or stop), without waiting for it.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The last snapshot read.
    pub fn cached(&self) -> Snapshot {
        lock(&self.snapshot).clone()
    }

    /// Forget a deleted pod at once (the next poll would too).
    pub fn forget(&self, pod: &PodRef) {
        lock(&self.snapshot).pods.remove(pod);
        lock(&self.reported).remove(pod);
    }

    /// Read the device's state now, report what changed, and return it.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] when the device cannot be read.
    pub async fn poll(&self) -> Result<Snapshot, ProviderError> {
        let _one = self.polling.lock().await;
        let settings = self.conn.settings();
        let now = jiff::Timestamp::now().as_millisecond();
        let script = scripts::poll(&settings.state_dir, now)
            .map_err(|e| ProviderError::Internal(e.to_string()))?;
        let out = self
            .conn
            .run(&script, None, Duration::ZERO)
            .await
            .and_then(|o| o.success())
            .map_err(unavailable)?;
        let mut snap = parse(&String::from_utf8_lossy(&out.stdout)).map_err(|e| {
            let e = SshError::Protocol(e.to_string());
            self.conn.lost(&e);
            unavailable(e)
        })?;
        // Another VirtualNode's pods on the same device are not ours to report, adopt or stop.
        let node = &settings.node;
        snap.pods
            .retain(|_, p| node.is_empty() || p.node.as_ref().is_none_or(|n| n == node));
        let ip = self.conn.peer_ip().map(|ip| ip.to_string());
        let mut changed = Vec::new();
        {
            let mut reported = lock(&self.reported);
            reported.retain(|r, _| snap.pods.contains_key(r));
            for (r, pod) in &snap.pods {
                let status = pod.status(ip.clone());
                if reported.get(r) != Some(&status) {
                    reported.insert(r.clone(), status.clone());
                    changed.push((r.clone(), status));
                }
            }
        }
        *lock(&self.snapshot) = snap.clone();
        if let Some(n) = self
            .notifier
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            for (r, status) in changed {
                n.notify(r, status);
            }
        }
        Ok(snap)
    }

    /// Poll every `interval` (or when woken) until cancelled.
    pub async fn run(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        loop {
            if let Err(e) = self.poll().await {
                debug!(host = %self.conn.settings().host, error = %e, "status poll failed");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
                () = self.wake.notified() => {}
            }
        }
    }
}
