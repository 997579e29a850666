//! `tar` for the Mock: what `kubectl cp` runs (`tar cf - SRC`, `tar -xmf - -C DIR`, with
//! `--no-same-permissions --no-same-owner`), on a container's [`MemFs`]. Pure: arguments in,
//! archive bytes or filesystem changes and diagnostics out; the shell streams the bytes.
//!
//! Archives are ustar (GNU long names and PAX paths are read). Only `-` (standard input/output)
//! is an archive file. Extraction refuses, before writing anything, an archive with an absolute
//! member name or a `..` component; members other than files and directories (links, devices) are
//! skipped with an error, as the Mock filesystem has none.

use std::io::Read;

use bytes::Bytes;
use tar::{Archive, Builder, EntryType, Header};

use crate::backends::mock::fs::{self, FsError, MemFs, Node};

/// The largest archive `tar x` reads: a full filesystem with a header and padding per entry.
pub const MAX_ARCHIVE: u64 = fs::MAX_BYTES + (fs::MAX_ENTRIES as u64 + 8) * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TarError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}: Cannot open: {1}")]
    Open(String, FsError),
    #[error("{0}: refusing a member with an absolute name")]
    Absolute(String),
    #[error("{0}: refusing a member whose name contains '..'")]
    DotDot(String),
    #[error("this does not look like a tar archive ({0})")]
    Corrupt(String),
    #[error("the archive exceeds {MAX_ARCHIVE} bytes, more than the Mock filesystem holds")]
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Extract,
    List,
}

/// A parsed `tar` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarArgs {
    pub op: Op,
    /// `-C DIR`.
    pub dir: Option<String>,
    /// What to archive (create).
    pub paths: Vec<String>,
    /// `--no-same-permissions`: extracted modes lose the umask (022) bits.
    pub umask: bool,
    /// `-m`: extracted files are dated now, not with the archive's times.
    pub touch: bool,
    pub verbose: bool,
}

fn usage(msg: impl Into<String>) -> TarError {
    TarError::Usage(msg.into())
}

/// Parse GNU-style arguments: a leading bundle without a dash (`cf`, `xmf`), dashed bundles
/// (`-xmf -`), `-C DIR`, and the long options kubectl uses.
pub fn parse(args: &[String]) -> Result<TarArgs, TarError> {
    let (mut op, mut file, mut dir) = (None, None::<String>, None);
    let (mut umask, mut touch, mut verbose) = (false, false, false);
    let mut paths = Vec::new();
    let mut rest = args
        .iter()
        .cloned()
        .collect::<std::collections::VecDeque<_>>();
    let mut first = true;
    while let Some(arg) = rest.pop_front() {
        let bundle = match arg.as_str() {
            a if a.starts_with("--") => {
                let (name, value) = match a.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (a, None),
                };
                let mut take = || value.clone().or_else(|| rest.pop_front());
                match name {
                    "--create" => op = Some(Op::Create),
                    "--extract" | "--get" => op = Some(Op::Extract),
                    "--list" => op = Some(Op::List),
                    "--file" => file = take(),
                    "--directory" => dir = take(),
                    "--no-same-permissions" => umask = true,
                    "--same-permissions" | "--preserve-permissions" => umask = false,
                    "--touch" => touch = true,
                    "--verbose" => verbose = true,
                    "--no-same-owner" | "--same-owner" | "--dereference" => {}
                    _ => return Err(usage(format!("unrecognized option '{a}'"))),
                }
                first = false;
                continue;
            }
            a if a.len() > 1 && a.starts_with('-') => a[1..].to_string(),
            a if first && !a.is_empty() => a.to_string(),
            _ => {
                paths.push(arg);
                continue;
            }
        };
        let dashed = !first || arg.starts_with('-');
        first = false;
        for (i, c) in bundle.char_indices() {
            match c {
                'c' => op = Some(Op::Create),
                'x' => op = Some(Op::Extract),
                't' => op = Some(Op::List),
                'm' => touch = true,
                'v' => verbose = true,
                'p' => umask = false,
                'h' | 'o' => {}
                'f' | 'C' => {
                    // Dashed: the rest of the bundle, else the next argument; old style: the next one.
                    let attached = &bundle[i + c.len_utf8()..];
                    let value = if dashed && !attached.is_empty() {
                        Some(attached.to_string())
                    } else {
                        rest.pop_front()
                    };
                    let value = value
                        .ok_or_else(|| usage(format!("option requires an argument -- '{c}'")))?;
                    if c == 'f' {
                        file = Some(value);
                    } else {
                        dir = Some(value);
                    }
                    if dashed {
                        break;
                    }
                }
                _ => return Err(usage(format!("invalid option -- '{c}'"))),
            }
        }
    }
    let op = op.ok_or_else(|| usage("You must specify one of the '-ctx' options"))?;
    if file.as_deref().is_some_and(|f| f != "-") {
        return Err(usage(
            "the Mock's tar reads and writes archives on standard input/output only (-f -)",
        ));
    }
    match op {
        Op::Create if paths.is_empty() => {
            return Err(usage("Cowardly refusing to create an empty archive"));
        }
        Op::Extract | Op::List if !paths.is_empty() => {
            return Err(usage(
                "selecting members is not supported by the Mock's tar",
            ));
        }
        _ => {}
    }
    Ok(TarArgs {
        op,
        dir,
        paths,
        umask,
        touch,
        verbose,
    })
}

/// `path` resolved against `-C DIR` (or `/`).
fn resolve(dir: Option<&str>, path: &str) -> String {
    match dir {
        Some(d) if !path.starts_with('/') => fs::normalize(&format!("{d}/{path}")),
        _ => fs::normalize(path),
    }
}

/// What `tar c` made: the archive, the member names, and one message per path that failed.
pub struct Created {
    pub archive: Vec<u8>,
    pub names: Vec<String>,
    pub errors: Vec<String>,
}

/// Archive `args.paths` of `fs`. Member names are the paths as given without leading `/`.
pub fn create(fs: &MemFs, args: &TarArgs) -> Created {
    let mut out = Created {
        archive: Vec::new(),
        names: Vec::new(),
        errors: Vec::new(),
    };
    let mut builder = Builder::new(Vec::new());
    for given in &args.paths {
        let top = given.trim_start_matches('/').trim_end_matches('/');
        let root = resolve(args.dir.as_deref(), given);
        let nodes = match fs.walk(&root) {
            Ok(n) => n,
            Err(e) => {
                out.errors.push(format!("{given}: Cannot stat: {e}"));
                continue;
            }
        };
        for (path, node) in nodes {
            let rel = path[root.len()..].trim_start_matches('/');
            let mut name = match (top.is_empty(), rel.is_empty()) {
                (true, true) => continue,
                (true, false) => rel.to_string(),
                (false, true) => top.to_string(),
                (false, false) => format!("{top}/{rel}"),
            };
            let mut header = Header::new_ustar();
            header.set_uid(0);
            header.set_gid(0);
            let data = match node {
                Node::Dir { mode, mtime } => {
                    name.push('/');
                    header.set_entry_type(EntryType::Directory);
                    header.set_mode(mode);
                    header.set_mtime(mtime);
                    Bytes::new()
                }
                Node::File { mode, mtime, data } => {
                    header.set_entry_type(EntryType::Regular);
                    header.set_mode(mode);
                    header.set_mtime(mtime);
                    data
                }
            };
            header.set_size(data.len() as u64);
            if let Err(e) = builder.append_data(&mut header, &name, data.as_ref()) {
                out.errors.push(format!("{name}: {e}"));
                continue;
            }
            out.names.push(name);
        }
    }
    match builder.into_inner() {
        Ok(archive) => out.archive = archive,
        Err(e) => out.errors.push(e.to_string()),
    }
    out
}

/// One member read from an archive.
#[derive(Debug)]
struct Member {
    name: String,
    kind: EntryType,
    mode: u32,
    mtime: u64,
    data: Bytes,
}

/// Every member of `archive`, or why the archive is refused as a whole.
fn members(archive: &[u8]) -> Result<Vec<Member>, TarError> {
    let mut ar = Archive::new(archive);
    let corrupt = |e: std::io::Error| TarError::Corrupt(e.to_string());
    let mut out = Vec::new();
    for entry in ar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let name = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| TarError::Corrupt("a member name is not UTF-8".into()))?;
        if name.starts_with('/') {
            return Err(TarError::Absolute(name));
        }
        if name.split('/').any(|c| c == "..") {
            return Err(TarError::DotDot(name));
        }
        let mode = entry.header().mode().map_err(corrupt)? & 0o7777;
        let mtime = entry.header().mtime().map_err(corrupt)?;
        let mut data = Vec::new();
        if kind.is_file() || kind == EntryType::Continuous {
            entry.read_to_end(&mut data).map_err(corrupt)?;
        }
        out.push(Member {
            name,
            kind,
            mode,
            mtime,
            data: Bytes::from(data),
        });
    }
    Ok(out)
}

/// What `tar x`/`tar t` did: member names, and one message per member that could not be written.
#[derive(Debug, Default)]
pub struct Extracted {
    pub names: Vec<String>,
    pub errors: Vec<String>,
}

/// Extract `archive` into `fs` under `-C DIR` (or `/`); `now` dates files with `-m`. The
/// archive is checked as a whole first: a refused archive changes nothing.
pub fn extract(
    fs: &mut MemFs,
    archive: &[u8],
    args: &TarArgs,
    now: u64,
) -> Result<Extracted, TarError> {
    let dir = args.dir.as_deref();
    if let Some(d) = dir {
        match fs.get(d) {
            Some(n) if n.is_dir() => {}
            Some(_) => return Err(TarError::Open(d.into(), FsError::NotADirectory)),
            None => return Err(TarError::Open(d.into(), FsError::NotFound)),
        }
    }
    let members = members(archive)?;
    let mut out = Extracted::default();
    for m in members {
        out.names.push(m.name.clone());
        if args.op == Op::List {
            continue;
        }
        let path = resolve(dir, &m.name);
        let mode = if args.umask { m.mode & !0o022 } else { m.mode };
        let mtime = if args.touch { now } else { m.mtime };
        let done = if m.kind.is_dir() {
            fs.mkdir_all(&path, mode, mtime)
        } else if m.kind.is_file() || m.kind == EntryType::Continuous {
            fs.write(&path, m.data, mode, mtime)
        } else {
            out.errors.push(format!(
                "{}: Cannot create: the Mock filesystem holds only files and directories",
                m.name
            ));
            continue;
        };
        if let Err(e) = done {
            out.errors.push(format!("{}: Cannot open: {e}", m.name));
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "tar_tests.rs"]
mod tests;
