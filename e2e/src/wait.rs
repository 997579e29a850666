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

/// Poll `check` every 100 ms for the whole of `window`, failing as soon as it returns `Some(why)`:
/// how a scenario shows that something does *not* happen (no writes, no transition) for a while.
///
/// # Errors
/// The first `why`, prefixed with `what`.
pub async fn consistently<F, Fut>(window: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<String>>,
{
    let deadline = tokio::time::Instant::now() + window;
    loop {
        if let Some(why) = check().await {
            anyhow::bail!("{what}: {why}");
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
