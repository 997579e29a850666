//! A real OpenSSH server on loopback, the "device" of SSH-backend tests: generated host and user keys,
//! started for one test and stopped when dropped; a state directory under the home that kills what
//! ran under it when dropped; a TCP relay in front of the server that a test can cut to make the device
//! unreachable; and readers of this machine's processes. Used by the e2e scenarios (`tests/ssh.rs`)
//! and by the operator's provider-level SSH tests, so there is one copy.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::cluster::unique;

/// Where sshd must be: tests fail (never skip) when it is missing.
pub const SSHD: &str = "/usr/sbin/sshd";

fn keygen(path: &Path) -> anyhow::Result<()> {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "fleetlet-test", "-f"])
        .arg(path)
        .status()
        .context("running ssh-keygen (install openssh-client)")?;
    anyhow::ensure!(status.success(), "ssh-keygen failed: {status}");
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Wait until `f` holds, polling every 50 ms, at most `limit` (for synchronous checks).
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A running sshd.
pub struct Sshd {
    child: Child,
    pub dir: PathBuf,
    pub port: u16,
    /// `ssh-ed25519 AAAA...` of the server.
    pub host_key: String,
    /// The user's private key (OpenSSH format).
    pub user_key: Vec<u8>,
    /// A host key the server does not have (for mismatch tests).
    pub other_host_key: String,
}

impl Sshd {
    /// Start sshd on a free loopback port; the current user may log in with the generated key.
    ///
    /// # Errors
    /// When `/usr/sbin/sshd` is missing (the message says to install openssh-server), keys cannot be
    /// generated, or the server does not listen within 10 s.
    pub fn start() -> anyhow::Result<Self> {
        anyhow::ensure!(
            Path::new(SSHD).is_file(),
            "{SSHD} not found: the SSH backend tests need a real OpenSSH server; install openssh-server \
             (e.g. `apt-get install -y openssh-server`, as .ci/run does)"
        );
        // sshd's privilege separation directory; it refuses to start without it.
        std::fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;
        let dir = std::env::temp_dir().join(unique("fleetlet-sshd"));
        std::fs::create_dir_all(&dir)?;
        for key in ["host", "other", "user"] {
            keygen(&dir.join(key))?;
        }
        std::fs::copy(dir.join("user.pub"), dir.join("authorized_keys"))?;
        let port = free_port()?;
        let cfg = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host\nAuthorizedKeysFile {dir}/authorized_keys\n\
             StrictModes no\nPidFile none\nUsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nMaxSessions 30\nMaxStartups 100\nAllowTcpForwarding yes\nLogLevel ERROR\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), cfg)?;
        let mut child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {SSHD} (install openssh-server)"))?;
        let up = wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        if !up {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("sshd did not start listening on 127.0.0.1:{port} within 10 s");
        }
        let read = |f: &str| std::fs::read_to_string(dir.join(f));
        let strip = |k: String| k.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        Ok(Self {
            host_key: strip(read("host.pub")?),
            other_host_key: strip(read("other.pub")?),
            user_key: std::fs::read(dir.join("user"))?,
            child,
            dir,
            port,
        })
    }

    /// Path of the user's private key file (for `kubectl create secret --from-file`).
    pub fn user_key_path(&self) -> PathBuf {
        self.dir.join("user")
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The name of the current user (who the tests log in as).
pub fn whoami() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            let out = Command::new("id").arg("-un").output().ok()?;
            Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "root".into())
}

/// The home directory of the SSH user (this machine's current user).
pub fn home() -> PathBuf {
    PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
}

/// A backend's `stateDir` (relative to the home) that kills what runs under it and removes it when dropped.
pub struct StateDir(pub String);

impl Default for StateDir {
    fn default() -> Self {
        Self::new()
    }
}

impl StateDir {
    pub fn new() -> Self {
        Self(format!(".fleetlet-test/{}", unique("state")))
    }

    /// The absolute path on this machine.
    pub fn path(&self) -> PathBuf {
        home().join(&self.0)
    }

    /// The state directory of the pod with `uid`.
    pub fn pod(&self, uid: &str) -> PathBuf {
        self.path().join("pods").join(uid)
    }
}

/// SIGKILL to the process group whose id is in `file` (only real group ids).
fn kill_group(file: &Path) {
    let Ok(text) = std::fs::read_to_string(file) else {
        return;
    };
    if let Ok(pgid) = text.trim().parse::<u32>()
        && pgid > 1
    {
        // The shell's builtin kill: procps-ng's /bin/kill turns some `-KILL -PGID` calls into
        // kill(-1), which ends every process of the machine.
        let _ = Command::new("sh")
            .args([
                "-c",
                "kill -s KILL -- -\"$1\" 2>/dev/null",
                "sh",
                &pgid.to_string(),
            ])
            .status();
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let pods = self.path().join("pods");
        for pod in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
            kill_group(&pod.path().join("sup.pid"));
            for c in std::fs::read_dir(pod.path().join("c"))
                .into_iter()
                .flatten()
                .flatten()
            {
                kill_group(&c.path().join("pid"));
            }
        }
        let _ = std::fs::remove_dir_all(self.path());
    }
}

/// A TCP relay to a backend address that can be cut (listener closed, connections dropped).
pub struct Relay {
    pub port: u16,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// A relay on a free loopback port.
    ///
    /// # Errors
    /// When it cannot listen.
    pub async fn start(to: SocketAddr) -> anyhow::Result<Self> {
        Self::start_at(0, to).await
    }

    /// A relay on a given local port (to bring a cut relay back).
    ///
    /// # Errors
    /// When it cannot listen there.
    pub async fn start_at(port: u16, to: SocketAddr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let t = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                t.lock().await.push(conn);
            }
        });
        Ok(Self {
            port,
            tasks,
            accept,
        })
    }

    /// Make the device unreachable: stop accepting and drop every relayed connection.
    pub async fn cut(&self) {
        self.accept.abort();
        for t in self.tasks.lock().await.drain(..) {
            t.abort();
        }
    }
}

/// The argv of every process of this machine, by PID.
pub fn processes() -> Vec<(u32, Vec<String>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let argv = cmd
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            out.push((pid, argv));
        }
    }
    out
}

/// PIDs of processes whose command line contains `marker`.
pub fn pids_with(marker: &str) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|(_, argv)| argv.iter().any(|a| a.contains(marker)))
        .map(|(pid, _)| pid)
        .collect()
}

/// PIDs of processes whose argv is exactly `argv`.
pub fn pids_running(argv: &[&str]) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|(_, a)| a.iter().map(String::as_str).eq(argv.iter().copied()))
        .map(|(pid, _)| pid)
        .collect()
}
