//! A Mock container's filesystem: directories and regular files (bytes and a mode) held in memory,
//! bounded in size, shared by the container's main process and its `exec` sessions for as long as
//! that container runs (a restart starts a fresh one, as a real container's writable layer does).
//!
//! Paths resolve against `/` (the working directory of every Mock process): `.` and empty
//! components are dropped and `..` goes up (staying at `/`), as a kernel does without symlinks.
//! Nothing here blocks or awaits: callers lock the [`SharedFs`] only between awaits.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use bytes::Bytes;

/// The most file content one container holds (sum of file sizes).
pub const MAX_BYTES: u64 = 16 << 20;
/// The most entries (files and directories, `/` included) one container holds.
pub const MAX_ENTRIES: usize = 4096;
/// Directories every container starts with.
pub const SKELETON: [&str; 3] = ["/tmp", "/root", "/home"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FsError {
    #[error("No such file or directory")]
    NotFound,
    #[error("Not a directory")]
    NotADirectory,
    #[error("Is a directory")]
    IsADirectory,
    #[error("File exists")]
    Exists,
    /// Past [`MAX_BYTES`] or [`MAX_ENTRIES`]: the simulated disk is full.
    #[error(
        "No space left on device (the Mock filesystem holds {MAX_BYTES} bytes in {MAX_ENTRIES} entries)"
    )]
    NoSpace,
}

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32, mtime: u64 },
    File { mode: u32, mtime: u64, data: Bytes },
}

impl Node {
    pub fn is_dir(&self) -> bool {
        matches!(self, Node::Dir { .. })
    }
}

/// `/` and the [`SKELETON`], what an untouched filesystem shows.
static PRISTINE: LazyLock<BTreeMap<String, Node>> = LazyLock::new(|| {
    std::iter::once("/")
        .chain(SKELETON)
        .map(|p| {
            (
                p.to_string(),
                Node::Dir {
                    mode: 0o755,
                    mtime: 0,
                },
            )
        })
        .collect()
});

/// The filesystem of one container. Until its first change it allocates nothing (it shows
/// [`PRISTINE`]): most Mock containers never touch theirs.
#[derive(Debug, Clone, Default)]
pub struct MemFs {
    /// Normalized absolute path -> entry; `/` is always a directory. Empty: pristine.
    nodes: BTreeMap<String, Node>,
    bytes: u64,
}

/// A container's filesystem as its processes share it.
pub type SharedFs = Arc<Mutex<MemFs>>;

/// A fresh filesystem ([`SKELETON`]) to share.
pub fn shared() -> SharedFs {
    Arc::new(Mutex::new(MemFs::default()))
}

/// Lock a shared filesystem (a panicked holder cannot leave it half-changed: every change is one step).
pub fn lock(fs: &SharedFs) -> MutexGuard<'_, MemFs> {
    fs.lock().unwrap_or_else(|e| e.into_inner())
}

/// `path` as a normalized absolute path (`/a/b`, or `/`).
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The parent of a normalized path (`/` for `/` itself).
fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

impl MemFs {
    /// The entries as they are seen.
    fn view(&self) -> &BTreeMap<String, Node> {
        if self.nodes.is_empty() {
            &PRISTINE
        } else {
            &self.nodes
        }
    }

    /// The entries to change.
    fn nodes_mut(&mut self) -> &mut BTreeMap<String, Node> {
        if self.nodes.is_empty() {
            self.nodes = PRISTINE.clone();
        }
        &mut self.nodes
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.view().get(&normalize(path))
    }

    /// The content of the regular file at `path`.
    pub fn read(&self, path: &str) -> Result<Bytes, FsError> {
        match self.get(path) {
            Some(Node::File { data, .. }) => Ok(data.clone()),
            Some(Node::Dir { .. }) => Err(FsError::IsADirectory),
            None => Err(self.missing(&normalize(path))),
        }
    }

    /// Why `path` (absent) cannot be found: a file where a directory should be, or nothing.
    fn missing(&self, path: &str) -> FsError {
        let mut p = parent(path);
        loop {
            match self.view().get(p) {
                Some(Node::File { .. }) => return FsError::NotADirectory,
                Some(Node::Dir { .. }) => return FsError::NotFound,
                None if p == "/" => return FsError::NotFound,
                None => p = parent(p),
            }
        }
    }

    /// Create directory `path` and missing parents (`mkdir -p`); an existing directory is kept.
    pub fn mkdir_all(&mut self, path: &str, mode: u32, mtime: u64) -> Result<(), FsError> {
        let path = normalize(path);
        if let Some(Node::File { .. }) = self.view().get(&path) {
            return Err(FsError::Exists);
        }
        self.ensure_dir(&path, mode, mtime)
    }

    /// Directory `path` (normalized) and its parents exist afterwards; a file in the way is an error.
    fn ensure_dir(&mut self, path: &str, mode: u32, mtime: u64) -> Result<(), FsError> {
        match self.view().get(path) {
            Some(Node::Dir { .. }) => return Ok(()),
            Some(Node::File { .. }) => return Err(FsError::NotADirectory),
            None => {}
        }
        self.ensure_dir(parent(path), 0o755, mtime)?;
        self.room_for(1, 0)?;
        self.nodes_mut()
            .insert(path.to_string(), Node::Dir { mode, mtime });
        Ok(())
    }

    /// Write regular file `path` (replacing a file there), creating missing parent directories.
    pub fn write(&mut self, path: &str, data: Bytes, mode: u32, mtime: u64) -> Result<(), FsError> {
        let path = normalize(path);
        let old = match self.view().get(&path) {
            Some(Node::Dir { .. }) => return Err(FsError::IsADirectory),
            Some(Node::File { data, .. }) => Some(data.len() as u64),
            None => None,
        };
        let new_entries = usize::from(old.is_none());
        let freed = old.unwrap_or(0);
        if self.bytes - freed + data.len() as u64 > MAX_BYTES {
            return Err(FsError::NoSpace);
        }
        self.ensure_dir(parent(&path), 0o755, mtime)?;
        self.room_for(new_entries, 0)?;
        self.bytes = self.bytes - freed + data.len() as u64;
        self.nodes_mut()
            .insert(path, Node::File { mode, mtime, data });
        Ok(())
    }

    fn room_for(&self, entries: usize, bytes: u64) -> Result<(), FsError> {
        if self.view().len() + entries > MAX_ENTRIES || self.bytes + bytes > MAX_BYTES {
            return Err(FsError::NoSpace);
        }
        Ok(())
    }

    /// `path` and everything under it, parents before children, in name order.
    pub fn walk(&self, path: &str) -> Result<Vec<(String, Node)>, FsError> {
        let path = normalize(path);
        let node = self
            .view()
            .get(&path)
            .ok_or_else(|| self.missing(&path))?
            .clone();
        let mut out = vec![(path.clone(), node)];
        let prefix = if path == "/" {
            "/".to_string()
        } else {
            format!("{path}/")
        };
        out.extend(
            self.view()
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, n)| (k.clone(), n.clone())),
        );
        // `/a/b` sorts after `/a/b-c/x`, so parents-first needs a component-wise order.
        out.sort_by(|(a, _), (b, _)| a.split('/').cmp(b.split('/')));
        Ok(out)
    }

    /// Bytes of file content held.
    pub fn used(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_like_a_kernel_without_symlinks() {
        assert_eq!(normalize("tmp//x/./y/"), "/tmp/x/y");
        assert_eq!(normalize("/../../etc"), "/etc");
        assert_eq!(normalize("/a/b/../c"), "/a/c");
        assert_eq!(normalize(""), "/");
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
    }

    #[test]
    fn files_and_directories() {
        let mut fs = MemFs::default();
        assert!(fs.get("/tmp").is_some_and(Node::is_dir));
        fs.write("/tmp/d/a", Bytes::from_static(b"\0\x01"), 0o600, 5)
            .expect("write");
        assert!(fs.get("/tmp/d").is_some_and(Node::is_dir));
        assert_eq!(fs.read("tmp/d/../d/a").expect("read").as_ref(), b"\0\x01");
        assert_eq!(fs.read("/tmp/d"), Err(FsError::IsADirectory));
        assert_eq!(fs.read("/tmp/nope"), Err(FsError::NotFound));
        assert_eq!(fs.read("/tmp/d/a/x"), Err(FsError::NotADirectory));
        assert_eq!(
            fs.write("/tmp/d", Bytes::new(), 0o644, 0),
            Err(FsError::IsADirectory)
        );
        assert_eq!(fs.mkdir_all("/tmp/d/a", 0o755, 0), Err(FsError::Exists));
        assert_eq!(
            fs.mkdir_all("/tmp/d/a/sub", 0o755, 0),
            Err(FsError::NotADirectory)
        );
        assert_eq!(
            fs.write("/tmp/d/a/f", Bytes::new(), 0o644, 0),
            Err(FsError::NotADirectory)
        );
        // Overwriting accounts the difference.
        fs.write("/tmp/d/a", Bytes::from_static(b"x"), 0o644, 0)
            .expect("overwrite");
        assert_eq!(fs.used(), 1);
    }

    #[test]
    fn walk_lists_parents_first() {
        let mut fs = MemFs::default();
        for p in ["/tmp/a/b-c/x", "/tmp/a/b/y", "/tmp/ab"] {
            fs.write(p, Bytes::new(), 0o644, 0).expect("write");
        }
        let names: Vec<String> = fs
            .walk("/tmp/a")
            .expect("walk")
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(
            names,
            [
                "/tmp/a",
                "/tmp/a/b",
                "/tmp/a/b/y",
                "/tmp/a/b-c",
                "/tmp/a/b-c/x"
            ]
        );
        assert_eq!(fs.walk("/nope").map(|_| ()), Err(FsError::NotFound));
        assert_eq!(fs.walk("/").expect("root")[0].0, "/");
    }

    #[test]
    fn limits_are_errors_not_crashes() {
        let mut fs = MemFs::default();
        let big = Bytes::from(vec![0u8; MAX_BYTES as usize]);
        fs.write("/tmp/big", big.clone(), 0o644, 0)
            .expect("exactly the limit");
        assert_eq!(
            fs.write("/tmp/one", Bytes::from_static(b"1"), 0o644, 0),
            Err(FsError::NoSpace)
        );
        // Replacing the big file with a smaller one frees room.
        fs.write("/tmp/big", Bytes::from_static(b"1"), 0o644, 0)
            .expect("shrink");
        let mut fs = MemFs::default();
        let start = PRISTINE.len();
        for i in start..MAX_ENTRIES {
            fs.write(&format!("/tmp/f{i}"), Bytes::new(), 0o644, 0)
                .expect("within the entry limit");
        }
        assert_eq!(
            fs.write("/tmp/last", Bytes::new(), 0o644, 0),
            Err(FsError::NoSpace)
        );
        assert_eq!(fs.mkdir_all("/tmp/dir", 0o755, 0), Err(FsError::NoSpace));
    }
}
