//! Streams over the device connection: log reads and follows, exec (with a PTY for `-t`, resizes,
//! stdin to EOF, the exit code), attach (the container's output from now on, until it exits) and
//! port-forward (a direct-tcpip channel to `127.0.0.1:port` on the device). Each holds one session slot
//! of the connection for as long as it runs.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use jiff::Timestamp;
use russh::client::Msg;
use russh::{ChannelMsg, ChannelWriteHalf, Sig};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tracing::debug;
use vk_runtime::provider::{BytePipe, ExecIo};
use vk_runtime::{LogOptions, ProviderError};

use super::conn::{Conn, SshError, exit_code, sh_command};
use super::logs::{Header, Shaper};

/// Exit code of the log script when the log does not exist.
const NO_LOG: i32 = 4;
/// Most header bytes accepted before the `--` line.
const MAX_HEADER: usize = 1 << 20;

/// How a remote failure reaches the kubelet API.
pub fn unavailable(e: SshError) -> ProviderError {
    match e {
        SshError::Command { .. } => ProviderError::Internal(e.to_string()),
        _ => ProviderError::Unavailable(e.to_string()),
    }
}

fn proto(e: russh::Error) -> ProviderError {
    ProviderError::Unavailable(format!("SSH channel: {e}"))
}

/// Run a log `script` and stream it shaped by `opts`. `missing` is the error when the log does not
/// exist (the container has not started, or had no previous run). A follow's script notes its PID
/// as `tracked` says, so that a reader going away ends it on the device.
///
/// # Errors
/// `missing`, or connection errors.
pub async fn logs(
    conn: &Arc<Conn>,
    script: &str,
    opts: &LogOptions,
    missing: ProviderError,
    tracked: Option<Tracked>,
) -> Result<BoxStream<'static, std::io::Result<Bytes>>, ProviderError> {
    let (ch, permit) = conn.session().await.map_err(unavailable)?;
    ch.exec(true, sh_command(script)).await.map_err(proto)?;
    ch.eof().await.map_err(proto)?;
    let (mut rd, wr) = ch.split();
    let mut cleanup = Cleanup {
        conn: conn.clone(),
        tracked,
        channel: Some(Arc::new(wr)),
        tasks: Vec::new(),
        permit: Some(permit),
    };
    let mut buf = Vec::new();
    let (header, rest) = loop {
        let msg = rd.wait().await;
        if msg.as_ref().is_none_or(|m| exit_code(m).is_some()) {
            // The script ended: nothing left to end on the device.
            cleanup.channel = None;
        }
        match msg {
            Some(ChannelMsg::Data { data }) => {
                buf.extend_from_slice(&data);
                if let Some((h, rest)) = Header::split(&buf) {
                    break (h, rest.to_vec());
                }
                if buf.len() > MAX_HEADER {
                    return Err(ProviderError::Internal("log header too long".into()));
                }
            }
            Some(msg) if exit_code(&msg) == Some(NO_LOG) => return Err(missing),
            Some(msg) if exit_code(&msg).is_some() => {
                return Err(ProviderError::Internal(format!(
                    "reading the log failed with exit code {:?}",
                    exit_code(&msg)
                )));
            }
            Some(_) => {}
            None => return Err(ProviderError::Unavailable("log channel closed".into())),
        }
    };
    let mut shaper = Shaper::new(header, opts);
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(16);
    tokio::spawn(async move {
        let send = |bytes: Vec<u8>| {
            let tx = tx.clone();
            async move { bytes.is_empty() || tx.send(Ok(Bytes::from(bytes))).await.is_ok() }
        };
        let mut open = send(shaper.push(&rest, Timestamp::now())).await && !shaper.exhausted();
        while open {
            // A follow of a quiet container sends nothing for a long time: notice a reader that went
            // away without waiting for output, so its session slot is given back.
            let msg = tokio::select! {
                msg = rd.wait() => msg,
                () = tx.closed() => break,
            };
            match msg {
                Some(ChannelMsg::Data { data }) => {
                    open = send(shaper.push(&data, Timestamp::now())).await && !shaper.exhausted();
                }
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => {
                    cleanup.channel = None;
                    drop(cleanup);
                    send(shaper.finish(Timestamp::now())).await;
                    return;
                }
                Some(_) => {}
            }
        }
        // The reader went away or the limit is reached: dropping `cleanup` with the channel still
        // open stops the remote follow loop.
        drop(cleanup);
    });
    Ok(ReceiverStream::new(rx).boxed())
}

/// The short commands that end a tracked stream's remote command from outside its channel
/// ([`super::scripts::end_tracked`]) or forget it once it ended ([`super::scripts::untrack`]).
pub struct Tracked {
    pub end: String,
    pub untrack: String,
}

/// Run `script` (which execs the user's command in the container's context, noting its PID as
/// `tracked` says) wired to `io`. Dropped before the command ended (the client went away), it ends
/// the command on the device, which gives the device's SSH session back.
///
/// # Errors
/// Connection errors.
pub async fn exec(
    conn: &Arc<Conn>,
    script: &str,
    io: ExecIo,
    tracked: Tracked,
) -> Result<i32, ProviderError> {
    let (ch, permit) = conn.session().await.map_err(unavailable)?;
    let mut io = io;
    if io.tty {
        // Clients send their terminal size first: open the PTY with it.
        let first = io.resize.as_mut().and_then(|r| r.try_recv().ok());
        let (w, h) = first.map_or((80, 24), |s| (u32::from(s.width), u32::from(s.height)));
        ch.request_pty(true, "xterm", w, h, 0, 0, &[])
            .await
            .map_err(proto)?;
    }
    ch.exec(true, sh_command(script)).await.map_err(proto)?;
    let (mut rd, wr) = ch.split();
    let wr = Arc::new(wr);
    let ExecIo {
        stdin,
        stdout,
        stderr,
        resize,
        ..
    } = io;
    let input = {
        let wr = wr.clone();
        tokio::spawn(async move {
            if let Some(mut stdin) = stdin {
                while let Some(data) = stdin.recv().await {
                    if wr.data_bytes(data).await.is_err() {
                        return;
                    }
                }
            }
            let _ = wr.eof().await;
        })
    };
    let resizer = resize.map(|mut resize| {
        let wr = wr.clone();
        tokio::spawn(async move {
            while let Some(sz) = resize.recv().await {
                let _ = wr
                    .window_change(u32::from(sz.width), u32::from(sz.height), 0, 0)
                    .await;
            }
        })
    });
    let mut cleanup = Cleanup {
        conn: conn.clone(),
        tracked: Some(tracked),
        channel: Some(wr),
        tasks: [Some(input), resizer].into_iter().flatten().collect(),
        permit: Some(permit),
    };
    let mut code = None;
    while let Some(msg) = rd.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                if let Some(out) = &stdout {
                    let _ = out.send(data).await;
                }
            }
            ChannelMsg::ExtendedData { data, .. } => {
                if let Some(out) = stderr.as_ref().or(stdout.as_ref()) {
                    let _ = out.send(data).await;
                }
            }
            ChannelMsg::Close => break,
            other => {
                if let Some(c) = exit_code(&other) {
                    code = Some(c);
                }
            }
        }
    }
    // The channel is closed: nothing left to end on the device.
    cleanup.channel = None;
    drop(cleanup);
    code.ok_or_else(|| {
        ProviderError::Unavailable("the exec session ended without an exit code".into())
    })
}

/// Ends a stream's helpers when the stream ends and forgets its PID; when the stream is dropped
/// before its channel closed (the kubelet API cancels an exec when the client goes away, a log
/// reader goes away) it also ends the remote command and closes the channel. Dropping the channel's
/// halves sends nothing, and sshd keeps a session, and its slot, until the command exits by itself.
struct Cleanup {
    conn: Arc<Conn>,
    /// Without it only the SSH `signal` request is left, which sshd refuses for root logins.
    tracked: Option<Tracked>,
    /// Set while the channel is open.
    channel: Option<Arc<ChannelWriteHalf<Msg>>>,
    tasks: Vec<JoinHandle<()>>,
    /// The stream's session slot, given back only once the remote session is ended and closed: sshd
    /// counts the session until then, and a slot given back earlier could be refused by it.
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let conn = self.conn.clone();
        let channel = self.channel.take();
        let script = self.tracked.take().map(|t| match channel {
            Some(_) => t.end,
            None => t.untrack,
        });
        // With the channel already closed the slot is free now; else once the close below is sent.
        let permit = self.permit.take().filter(|_| channel.is_some());
        if channel.is_none() && script.is_none() {
            return;
        }
        tokio::spawn(async move {
            let _permit = permit;
            match (&script, &channel) {
                (Some(script), _) => {
                    if let Err(e) = conn.run(script, None, Duration::ZERO).await {
                        debug!(error = %e, "could not end or forget a stream on the device");
                    }
                }
                (None, Some(channel)) => {
                    let _ = channel.signal(Sig::TERM).await;
                }
                (None, None) => {}
            }
            if let Some(channel) = channel {
                let _ = channel.close().await;
            }
        });
    }
}

/// Forward `stream` to `127.0.0.1:port` on the device until either side closes.
///
/// # Errors
/// Connection errors, or the device refusing the forward (nothing listening).
pub async fn port_forward(
    conn: &Conn,
    port: u16,
    mut stream: Box<dyn BytePipe>,
) -> Result<(), ProviderError> {
    let (ch, _permit) = conn.direct_tcpip(port).await.map_err(|e| match e {
        SshError::Protocol(m) => {
            ProviderError::Unavailable(format!("forwarding to port {port} on the device: {m}"))
        }
        e => unavailable(e),
    })?;
    let mut remote = ch.into_stream();
    tokio::io::copy_bidirectional(&mut stream, &mut remote)
        .await
        .map(|_| ())
        .map_err(|e| ProviderError::Unavailable(format!("port-forward: {e}")))
}
