//! Test harness for the SSH backend: a real OpenSSH server on loopback with generated host and user keys,
//! started for one test and stopped when dropped, plus a TCP relay in front of it that a test can cut to
//! make the device unreachable.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fleetlet::backends::ssh::{Secrets, Settings, SshProvider};
use fleetlet_crds::SshBackend;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

static SERIAL: AtomicU32 = AtomicU32::new(0);

/// A unique name for this process and call.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed)
    )
}

fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "fleetlet-test", "-f"])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ssh-keygen failed");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

/// Wait until `f` holds, polling every 50 ms, at most `limit`.
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

impl Sshd {
    /// Start sshd on a free loopback port; the current user may log in with the generated key.
    pub fn start() -> Self {
        std::fs::create_dir_all("/run/sshd").unwrap();
        let dir = std::env::temp_dir().join(unique("fleetlet-sshd"));
        std::fs::create_dir_all(&dir).unwrap();
        keygen(&dir.join("host"));
        keygen(&dir.join("other"));
        keygen(&dir.join("user"));
        std::fs::copy(dir.join("user.pub"), dir.join("authorized_keys")).unwrap();
        let port = free_port();
        let cfg = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host\nAuthorizedKeysFile {dir}/authorized_keys\n\
             StrictModes no\nPidFile none\nUsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nMaxSessions 30\nMaxStartups 100\nAllowTcpForwarding yes\nLogLevel ERROR\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), cfg).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting /usr/sbin/sshd (install openssh-server)");
        let up = wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "sshd did not start listening on {port}");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        let strip = |k: String| k.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        Self {
            host_key: strip(read("host.pub")),
            other_host_key: strip(read("other.pub")),
            user_key: std::fs::read(dir.join("user")).unwrap(),
            child,
            dir,
            port,
        }
    }

    /// The spec of a backend reaching this server, state under a fresh directory in the home.
    pub fn spec(&self, state_dir: &str) -> SshBackend {
        SshBackend {
            user: whoami(),
            port: Some(self.port),
            host_keys: vec![self.host_key.clone()],
            connect_timeout_seconds: Some(5),
            command_timeout_seconds: Some(20),
            keepalive_interval_seconds: Some(2),
            keepalive_max: Some(2),
            poll_interval_ms: Some(250),
            reconnect_backoff_max_seconds: Some(2),
            max_sessions: Some(16),
            state_dir: Some(state_dir.to_string()),
            ..Default::default()
        }
    }

    pub fn secrets(&self) -> Secrets {
        Secrets {
            key_secret: "test/key".into(),
            private_key: self.user_key.clone(),
            known_hosts: None,
        }
    }

    /// Settings for `spec` dialling `addr` (the sshd itself, or a relay in front of it).
    pub fn settings(&self, spec: &SshBackend, host: &str, port: u16) -> Settings {
        let mut spec = spec.clone();
        spec.port = Some(port);
        Settings::new(&spec, Some(host), &self.secrets()).unwrap()
    }

    /// A provider for this server with state under `state_dir`.
    pub fn provider(&self, state_dir: &str) -> Arc<SshProvider> {
        Arc::new(SshProvider::new(self.settings(
            &self.spec(state_dir),
            "127.0.0.1",
            self.port,
        )))
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn whoami() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            let out = Command::new("id").arg("-un").output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
}

/// The home directory of the SSH user (this machine's current user).
pub fn home() -> PathBuf {
    PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
}

/// Removes a state directory (and kills what runs under it) when dropped.
pub struct StateDir(pub String);

impl StateDir {
    pub fn new() -> Self {
        Self(format!(".fleetlet-test/{}", unique("state")))
    }
    pub fn path(&self) -> PathBuf {
        home().join(&self.0)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        // Kill every process group a test left behind (only real group ids), then the files.
        let pods = self.path().join("pods");
        let kill_group = |file: PathBuf| {
            let Ok(text) = std::fs::read_to_string(&file) else {
                return;
            };
            match text.trim().parse::<u32>() {
                Ok(pgid) if pgid > 1 => {
                    // The shell's builtin kill: procps-ng's /bin/kill turns some `-KILL -PGID` calls
                    // into kill(-1), which ends every process of the machine.
                    let _ = Command::new("sh")
                        .args([
                            "-c",
                            "kill -s KILL -- -\"$1\" 2>/dev/null",
                            "sh",
                            &pgid.to_string(),
                        ])
                        .status();
                }
                _ => {}
            }
        };
        for pod in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
            kill_group(pod.path().join("sup.pid"));
            for c in std::fs::read_dir(pod.path().join("c"))
                .into_iter()
                .flatten()
                .flatten()
            {
                kill_group(c.path().join("pid"));
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
    pub async fn start(to: SocketAddr) -> Self {
        Self::start_at(0, to).await
    }

    /// A relay on a given local port (to bring a cut relay back).
    pub async fn start_at(port: u16, to: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
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
        Self {
            port,
            tasks,
            accept,
        }
    }

    /// Make the device unreachable: stop accepting and drop every relayed connection.
    pub async fn cut(&self) {
        self.accept.abort();
        for t in self.tasks.lock().await.drain(..) {
            t.abort();
        }
    }
}

/// PIDs of processes whose command line contains `marker`.
pub fn pids_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd).contains(marker)
        {
            out.push(pid);
        }
    }
    out
}
