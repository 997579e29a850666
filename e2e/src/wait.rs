//! Deadline-bounded polling: the only way scenarios wait for state.

use std::future::Future;
use std::time::Duration;

/// Poll `check` every 100 ms until it returns `Some`, or fail after `timeout` naming `what`.
///
/// # Errors
/// When the deadline passes; the error names what was awaited.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
