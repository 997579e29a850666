//! Port-forward over SPDY: pair each `data` stream with its `error` stream by `requestID` (older
//! clients without one are paired by stream id, error = data + 2), forward each complete pair, and
//! reset pairs left incomplete for [`STREAM_CREATION_TIMEOUT`](crate::stream::remotecommand::STREAM_CREATION_TIMEOUT).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::debug;

use super::{Forwarder, error_text, forward_one, parse_port};
use crate::stream::remotecommand::STREAM_CREATION_TIMEOUT;
use crate::stream::spdy::{Session, SpdyStream};

#[derive(Default)]
struct Pending {
    data: Option<SpdyStream>,
    error: Option<SpdyStream>,
    port: u16,
    since: Option<Instant>,
}

fn request_id(stream: &SpdyStream, is_error: bool) -> String {
    match stream.headers.get("requestid") {
        Some(id) => id.to_string(),
        // Clients before requestID: the error stream is created first, the data stream right after.
        None if is_error => stream.id.to_string(),
        None => stream.id.saturating_sub(2).to_string(),
    }
}

/// Serve port-forward on an upgraded SPDY connection until the client closes it.
pub async fn serve_spdy(mut session: Session, pod: String, forwarder: Forwarder) {
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut running = JoinSet::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        let stream = tokio::select! {
            stream = session.accept() => match stream {
                Some(stream) => stream,
                None => break,
            },
            _ = sweep.tick() => {
                let now = Instant::now();
                pending.retain(|id, p| {
                    let fresh = p.since.is_some_and(|t| now.duration_since(t) < STREAM_CREATION_TIMEOUT);
                    if !fresh {
                        debug!(request_id = %id, "timed out waiting for the other stream of a port-forward pair");
                        for s in [&p.data, &p.error].into_iter().flatten() {
                            s.writer.refuse();
                        }
                    }
                    fresh
                });
                continue;
            }
            Some(_) = running.join_next(), if !running.is_empty() => continue,
        };
        let kind = stream
            .headers
            .get("streamtype")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let is_error = match kind.as_str() {
            "error" => true,
            "data" => false,
            _ => {
                debug!(stream_type = %kind, "refusing unexpected port-forward stream");
                stream.writer.refuse();
                continue;
            }
        };
        let Ok(port) = parse_port(stream.headers.get("port").unwrap_or_default()) else {
            debug!("refusing port-forward stream without a valid port header");
            stream.writer.refuse();
            continue;
        };
        let id = request_id(&stream, is_error);
        let entry = pending.entry(id.clone()).or_default();
        entry.since.get_or_insert_with(Instant::now);
        entry.port = port;
        let slot = if is_error {
            &mut entry.error
        } else {
            &mut entry.data
        };
        if slot.is_some() {
            stream.writer.refuse();
            continue;
        }
        *slot = Some(stream);
        if entry.data.is_none() || entry.error.is_none() {
            continue;
        }
        if let Some(Pending {
            data: Some(data),
            error: Some(error),
            port,
            ..
        }) = pending.remove(&id)
        {
            running.spawn(forward_pair(
                data,
                error,
                port,
                pod.clone(),
                forwarder.clone(),
            ));
        }
    }
    running.shutdown().await;
    session.close(Duration::ZERO).await;
}

async fn forward_pair(
    data: SpdyStream,
    error: SpdyStream,
    port: u16,
    pod: String,
    forwarder: Forwarder,
) {
    let SpdyStream {
        reader: mut data_reader,
        writer: data_writer,
        ..
    } = data;
    let (in_tx, in_rx) = mpsc::channel::<Bytes>(16);
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(16);
    let inbound = tokio::spawn(async move {
        while let Some(chunk) = data_reader.read_chunk().await {
            if in_tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    let outbound = tokio::spawn(async move {
        while let Some(chunk) = out_rx.recv().await {
            if data_writer.write(chunk).await.is_err() {
                break;
            }
        }
        let _ = data_writer.close().await;
    });
    let result = forward_one(&forwarder, port, in_rx, out_tx).await;
    let _ = outbound.await;
    inbound.abort();
    if let Err(e) = result {
        let _ = error
            .writer
            .write(Bytes::from(error_text(port, &pod, &e)))
            .await;
    }
    let _ = error.writer.close().await;
}
