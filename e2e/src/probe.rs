//! A minimal HTTP/1.1 GET for the operator's plain-HTTP endpoints (`/metrics`, `/healthz`, `/readyz`).

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET `url` (`http://HOST:PORT/PATH`); returns the status code and body.
///
/// # Errors
/// When the URL is not plain `http://`, the connection fails, or the answer is not HTTP.
pub async fn get(url: &str) -> anyhow::Result<(u16, String)> {
    let rest = url
        .strip_prefix("http://")
        .context("plain http:// URL expected")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = tokio::net::TcpStream::connect(host).await?;
    s.write_all(
        format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("not an HTTP answer")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}
