//! Port-forward over both transports. Each forwarded connection is a data stream (bytes both ways)
//! and an error stream (text, server to client) bound to one port; the provider gets one end of a
//! byte pipe per connection ([`Provider::port_forward`](crate::Provider::port_forward)).
//!
//! SPDY (`portforward.k8s.io`): the client opens stream pairs carrying `port` and `requestID`
//! headers. WebSocket: `?port=` lists the ports, channel 2i is port i's data, 2i+1 its errors, and
//! the server starts each channel with the port as a little-endian u16.

mod spdy;
mod ws;

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::provider::{BytePipe, ProviderError};

pub use spdy::serve_spdy;
pub use ws::serve_ws;

/// The SPDY subprotocol of port-forward.
pub const PROTOCOL_V1: &str = "portforward.k8s.io";
/// Bytes buffered in each direction of one forwarded connection.
const PIPE_BUFFER: usize = 64 * 1024;

/// Connects one forwarded connection to a port of the pod (the provider call).
pub type Forwarder = Arc<
    dyn Fn(u16, Box<dyn BytePipe>) -> BoxFuture<'static, Result<(), ProviderError>> + Send + Sync,
>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortError {
    #[error("at least one port must be given")]
    NoPorts,
    #[error("invalid port {0:?}: must be an integer between 1 and 65535")]
    Invalid(String),
}

/// Parse one port value.
pub fn parse_port(value: &str) -> Result<u16, PortError> {
    match value.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(PortError::Invalid(value.to_string())),
    }
}

/// The `port` query values of a WebSocket port-forward (each may be a comma-separated list).
pub fn ports_from_query(pairs: &[(String, String)]) -> Result<Vec<u16>, PortError> {
    let ports = pairs
        .iter()
        .filter(|(k, _)| k == "port")
        .flat_map(|(_, v)| v.split(','))
        .map(parse_port)
        .collect::<Result<Vec<_>, _>>()?;
    if ports.is_empty() {
        return Err(PortError::NoPorts);
    }
    Ok(ports)
}

/// The kubelet's text for a failed forward.
fn error_text(port: u16, pod: &str, err: &ProviderError) -> String {
    format!("error forwarding port {port} to pod {pod}: {err}")
}

/// Forward one connection: client bytes from `inbound` to the provider's pipe, pipe bytes to
/// `outbound`, until the pod side ends (or the client goes away). Returns the provider's result.
async fn forward_one(
    forwarder: &Forwarder,
    port: u16,
    mut inbound: mpsc::Receiver<Bytes>,
    outbound: mpsc::Sender<Bytes>,
) -> Result<(), ProviderError> {
    let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
    let provider = forwarder(port, Box::new(theirs));
    let copy = async move {
        let (mut read, mut write) = tokio::io::split(ours);
        let to_pod = async {
            while let Some(chunk) = inbound.recv().await {
                if write.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            // The client half-closed: the pod reads EOF and may still answer.
            let _ = write.shutdown().await;
        };
        let from_pod = async {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if outbound
                            .send(Bytes::copy_from_slice(&buf[..n]))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        };
        tokio::pin!(to_pod, from_pod);
        let mut to_pod_done = false;
        loop {
            tokio::select! {
                () = &mut from_pod => break,
                () = &mut to_pod, if !to_pod_done => to_pod_done = true,
            }
        }
        // Dropping both halves here closes the pipe, so the provider's copy ends too.
    };
    let (result, ()) = tokio::join!(provider, copy);
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ports_parse() {
        assert_eq!(
            ports_from_query(&q(&[("port", "80"), ("port", "8080,9090")])),
            Ok(vec![80, 8080, 9090])
        );
        assert_eq!(ports_from_query(&q(&[])), Err(PortError::NoPorts));
        assert!(ports_from_query(&q(&[("port", "0")])).is_err());
        assert!(ports_from_query(&q(&[("port", "70000")])).is_err());
        assert!(ports_from_query(&q(&[("port", "http")])).is_err());
    }

    #[tokio::test]
    async fn forward_one_echoes_and_reports_errors() {
        let echo: Forwarder = Arc::new(|_port, mut pipe| {
            Box::pin(async move {
                let (mut r, mut w) = tokio::io::split(&mut pipe);
                tokio::io::copy(&mut r, &mut w)
                    .await
                    .map_err(|e| ProviderError::Internal(e.to_string()))?;
                Ok(())
            })
        });
        let (in_tx, in_rx) = mpsc::channel(4);
        let (out_tx, mut out_rx) = mpsc::channel(4);
        in_tx.send(Bytes::from_static(b"ping")).await.unwrap();
        drop(in_tx);
        let result = forward_one(&echo, 80, in_rx, out_tx).await;
        assert!(result.is_ok());
        assert_eq!(out_rx.recv().await.unwrap(), Bytes::from_static(b"ping"));
        assert!(out_rx.recv().await.is_none());

        let refuse: Forwarder = Arc::new(|port, _pipe| {
            Box::pin(async move { Err(ProviderError::Unavailable(format!("port {port} closed"))) })
        });
        let (_in_tx, in_rx) = mpsc::channel(4);
        let (out_tx, _out_rx) = mpsc::channel(4);
        let err = forward_one(&refuse, 81, in_rx, out_tx).await.unwrap_err();
        assert!(error_text(81, "ns/p", &err).contains("port 81 closed"));
    }
}
