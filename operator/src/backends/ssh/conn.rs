//! The one SSH connection of a device: dialled lazily, host key checked against the pinned set,
//! authenticated with the Secret's key, kept alive with SSH keepalives, re-dialled after a loss with
//! exponential backoff (1 s doubling to the configured maximum). Channels are multiplexed over it and
//! bounded by two semaphores: short commands (status poll, start, stop, stats) never wait behind
//! long-lived streams (log follows, exec, port-forward).

use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use russh::client::{self, Handle, Msg};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{Channel, ChannelMsg, Sig};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::settings::Settings;

/// Most bytes a short command may print; more is an error (status and stats output is small).
const MAX_OUTPUT: usize = 16 << 20;
/// Slots kept for short commands whatever the streams do.
const COMMAND_SLOTS: usize = 2;

/// Why a device could not be reached or a command failed. `reason()` becomes the BackendReachable
/// condition's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshError {
    #[error("host key mismatch: the device presented {fingerprint}, which is not pinned")]
    HostKeyMismatch { fingerprint: String },
    #[error("cannot reach {addr}: {message}")]
    Unreachable { addr: String, message: String },
    #[error("{what} did not finish within {secs}s")]
    Timeout { what: &'static str, secs: u64 },
    #[error("the device refused the key for user {user}")]
    AuthFailed { user: String },
    #[error("SSH protocol error: {0}")]
    Protocol(String),
    #[error("all {0} SSH sessions of this device are busy")]
    Busy(usize),
    #[error("remote command failed with exit code {code}: {stderr}")]
    Command { code: i32, stderr: String },
}

impl SshError {
    /// Stable CamelCase reason for conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::HostKeyMismatch { .. } => "HostKeyMismatch",
            Self::Unreachable { .. } => "HostUnreachable",
            Self::Timeout { .. } => "Timeout",
            Self::AuthFailed { .. } => "AuthenticationFailed",
            Self::Protocol(_) => "SshProtocolError",
            Self::Busy(_) => "SessionsExhausted",
            Self::Command { .. } => "RemoteCommandFailed",
        }
    }

    /// Whether the error says the connection itself is unusable (as opposed to one command failing).
    pub fn is_link(&self) -> bool {
        !matches!(self, Self::Command { .. } | Self::Busy(_))
    }
}

/// Output of a finished remote command.
#[derive(Debug, Default)]
pub struct Output {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    /// The output when the command exited 0.
    ///
    /// # Errors
    /// [`SshError::Command`] with the exit code and the start of stderr.
    pub fn success(self) -> Result<Self, SshError> {
        if self.code == 0 {
            Ok(self)
        } else {
            let stderr = String::from_utf8_lossy(&self.stderr);
            Err(SshError::Command {
                code: self.code,
                stderr: stderr.chars().take(500).collect(),
            })
        }
    }
}

/// russh client handler: accepts only pinned host keys and remembers what it refused.
pub struct Client {
    settings: Arc<Settings>,
    refused: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let offered = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(c) => {
                *self.refused.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(format!("a host certificate ({})", c.algorithm()));
                return Ok(false);
            }
        };
        if self.settings.is_pinned(offered) {
            return Ok(true);
        }
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
            "{} {}",
            offered.algorithm(),
            offered.fingerprint(HashAlg::Sha256)
        ));
        Ok(false)
    }
}

/// State of the link as health reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// Never tried yet.
    Idle,
    Up,
    Down(SshError),
}

struct Backoff {
    failures: u32,
    next_attempt: Option<Instant>,
}

/// One device connection.
pub struct Conn {
    settings: Arc<Settings>,
    handle: RwLock<Option<Arc<Handle<Client>>>>,
    dialing: tokio::sync::Mutex<Backoff>,
    link: RwLock<Link>,
    peer: RwLock<Option<IpAddr>>,
    commands: Arc<Semaphore>,
    streams: Arc<Semaphore>,
}

fn read<T: Clone>(l: &RwLock<T>) -> T {
    l.read().unwrap_or_else(|e| e.into_inner()).clone()
}

fn write<T>(l: &RwLock<T>, v: T) {
    *l.write().unwrap_or_else(|e| e.into_inner()) = v;
}

fn protocol(e: russh::Error) -> SshError {
    SshError::Protocol(e.to_string())
}

/// Exit code of a process killed by `sig`, as a shell reports it.
fn signal_code(sig: &Sig) -> i32 {
    128 + match sig {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(_) => 0,
    }
}

impl Conn {
    pub fn new(settings: Arc<Settings>) -> Self {
        let streams = settings.max_sessions.saturating_sub(COMMAND_SLOTS).max(1);
        Self {
            settings,
            handle: RwLock::new(None),
            dialing: tokio::sync::Mutex::new(Backoff {
                failures: 0,
                next_attempt: None,
            }),
            link: RwLock::new(Link::Idle),
            peer: RwLock::new(None),
            commands: Arc::new(Semaphore::new(COMMAND_SLOTS)),
            streams: Arc::new(Semaphore::new(streams)),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The link as last seen.
    pub fn link(&self) -> Link {
        read(&self.link)
    }

    /// The device's IP as dialled (the pods' IP: they share the device's network).
    pub fn peer_ip(&self) -> Option<IpAddr> {
        read(&self.peer)
    }

    /// Record that the link failed under a command, so the next use re-dials.
    pub fn lost(&self, err: &SshError) {
        if err.is_link() {
            write(&self.handle, None);
            write(&self.link, Link::Down(err.clone()));
        }
    }

    /// The live connection, dialling when there is none and the backoff allows it.
    ///
    /// # Errors
    /// The dial's error, or the last one while backing off.
    pub async fn connect(&self) -> Result<Arc<Handle<Client>>, SshError> {
        if let Some(h) = read(&self.handle).filter(|h| !h.is_closed()) {
            return Ok(h);
        }
        let mut backoff = self.dialing.lock().await;
        if let Some(h) = read(&self.handle).filter(|h| !h.is_closed()) {
            return Ok(h);
        }
        if let (Some(at), Link::Down(e)) = (backoff.next_attempt, self.link())
            && Instant::now() < at
        {
            return Err(e);
        }
        let secs = self.settings.connect_timeout.as_secs();
        let dialed = tokio::time::timeout(self.settings.connect_timeout, self.dial())
            .await
            .unwrap_or(Err(SshError::Timeout {
                what: "connecting",
                secs,
            }));
        match dialed {
            Ok(h) => {
                let h = Arc::new(h);
                if backoff.failures > 0 || self.link() == Link::Idle {
                    info!(host = %self.settings.host, "SSH connection established");
                }
                backoff.failures = 0;
                backoff.next_attempt = None;
                write(&self.handle, Some(h.clone()));
                write(&self.link, Link::Up);
                Ok(h)
            }
            Err(e) => {
                backoff.failures = backoff.failures.saturating_add(1);
                let exp = Duration::from_secs(1u64 << backoff.failures.min(16).saturating_sub(1));
                let wait = exp.min(self.settings.reconnect_backoff_max);
                let jitter = wait.mul_f64(rand::random::<f64>() * 0.2);
                backoff.next_attempt = Some(Instant::now() + wait - jitter);
                warn!(host = %self.settings.host, reason = e.reason(), error = %e, retry_in = ?wait, "SSH connection failed");
                write(&self.link, Link::Down(e.clone()));
                Err(e)
            }
        }
    }

    async fn dial(&self) -> Result<Handle<Client>, SshError> {
        let s = &self.settings;
        let addr = format!("{}:{}", s.host, s.port);
        let unreachable = |e: std::io::Error| SshError::Unreachable {
            addr: addr.clone(),
            message: e.to_string(),
        };
        let stream = tokio::net::TcpStream::connect((s.host.as_str(), s.port))
            .await
            .map_err(unreachable)?;
        let _ = stream.set_nodelay(true);
        if let Ok(peer) = stream.peer_addr() {
            write(&self.peer, Some(peer.ip()));
        }
        let config = client::Config {
            keepalive_interval: Some(s.keepalive_interval),
            keepalive_max: s.keepalive_max,
            nodelay: true,
            ..Default::default()
        };
        let refused = Arc::new(Mutex::new(None));
        let handler = Client {
            settings: self.settings.clone(),
            refused: refused.clone(),
        };
        let mut handle = match client::connect_stream(Arc::new(config), stream, handler).await {
            Ok(h) => h,
            Err(e) => {
                let refused = refused.lock().unwrap_or_else(|e| e.into_inner()).take();
                return Err(match refused {
                    Some(fingerprint) => SshError::HostKeyMismatch { fingerprint },
                    None => protocol(e),
                });
            }
        };
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .map_err(protocol)?
            .flatten();
        let auth = handle
            .authenticate_publickey(&s.user, PrivateKeyWithHashAlg::new(s.key.clone(), hash))
            .await
            .map_err(protocol)?;
        if !auth.success() {
            return Err(SshError::AuthFailed {
                user: s.user.clone(),
            });
        }
        Ok(handle)
    }

    async fn permit(&self, sem: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit, SshError> {
        let wait = self.settings.command_timeout;
        match tokio::time::timeout(wait, sem.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(SshError::Busy(self.settings.max_sessions)),
        }
    }

    /// A session channel for a long-lived stream, with the permit that bounds it.
    ///
    /// # Errors
    /// Connection errors, or [`SshError::Busy`] when no slot frees up within the command timeout.
    pub async fn session(&self) -> Result<(Channel<Msg>, OwnedSemaphorePermit), SshError> {
        let permit = self.permit(&self.streams).await?;
        let h = self.connect().await?;
        match h.channel_open_session().await {
            Ok(ch) => Ok((ch, permit)),
            Err(e) => {
                let e = protocol(e);
                self.lost(&e);
                Err(e)
            }
        }
    }

    /// A direct-tcpip channel to `127.0.0.1:port` on the device.
    ///
    /// # Errors
    /// Connection errors, or the device refusing the forward.
    pub async fn direct_tcpip(
        &self,
        port: u16,
    ) -> Result<(Channel<Msg>, OwnedSemaphorePermit), SshError> {
        let permit = self.permit(&self.streams).await?;
        let h = self.connect().await?;
        let ch = h
            .channel_open_direct_tcpip("127.0.0.1", u32::from(port), "127.0.0.1", 0)
            .await
            .map_err(protocol)?;
        Ok((ch, permit))
    }

    /// Run `script` with `sh` on the device, feeding it `stdin`, within the command timeout (plus
    /// `extra`, for commands that wait on purpose).
    ///
    /// # Errors
    /// Connection errors, [`SshError::Timeout`]; a non-zero exit is not an error here (see
    /// [`Output::success`]).
    pub async fn run(
        &self,
        script: &str,
        stdin: Option<Bytes>,
        extra: Duration,
    ) -> Result<Output, SshError> {
        let _permit = self.permit(&self.commands).await?;
        let limit = self.settings.command_timeout + extra;
        let res = tokio::time::timeout(limit, self.run_inner(script, stdin))
            .await
            .unwrap_or(Err(SshError::Timeout {
                what: "a remote command",
                secs: limit.as_secs(),
            }));
        if let Err(e) = &res {
            debug!(host = %self.settings.host, error = %e, "remote command failed");
            self.lost(e);
        }
        res
    }

    async fn run_inner(&self, script: &str, stdin: Option<Bytes>) -> Result<Output, SshError> {
        let h = self.connect().await?;
        let mut ch = h.channel_open_session().await.map_err(protocol)?;
        ch.exec(true, sh_command(script)).await.map_err(protocol)?;
        if let Some(data) = stdin {
            ch.data_bytes(data).await.map_err(protocol)?;
        }
        ch.eof().await.map_err(protocol)?;
        let mut out = Output {
            code: -1,
            ..Default::default()
        };
        while let Some(msg) = ch.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, .. } => out.stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => {
                    out.code = i32::try_from(exit_status).unwrap_or(255);
                }
                ChannelMsg::ExitSignal { signal_name, .. } => out.code = signal_code(&signal_name),
                _ => {}
            }
            if out.stdout.len() + out.stderr.len() > MAX_OUTPUT {
                return Err(SshError::Protocol("remote command printed too much".into()));
            }
        }
        Ok(out)
    }
}

/// The exec request for `script`: always `sh`, whatever the login shell (which must be POSIX enough to
/// parse one quoted word).
pub fn sh_command(script: &str) -> String {
    let quoted = shlex::try_quote(script).map_or_else(|_| "''".into(), |q| q.into_owned());
    format!("exec sh -c {quoted}")
}

/// Exit code of a channel message that ends a command, if it is one.
pub fn exit_code(msg: &ChannelMsg) -> Option<i32> {
    match msg {
        ChannelMsg::ExitStatus { exit_status } => Some(i32::try_from(*exit_status).unwrap_or(255)),
        ChannelMsg::ExitSignal { signal_name, .. } => Some(signal_code(signal_name)),
        _ => None,
    }
}
