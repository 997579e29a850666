//! The short control scripts the operator runs on a device: install and start a pod, stop and remove it,
//! read every pod's state at once (the status poll), read or follow a log, read the device's resources
//! and usage. Each is plain POSIX `sh` built from constants and quoted values.
//!
//! Layout on the device, under `$HOME/<stateDir>/pods/<uid>/`: `meta` (namespace, name, uid, node), `spec`
//! (`policy P`, `init NAME`, `main NAME` lines), `boot` (the boot id when started: processes of another
//! boot are gone), `run.sh`, `sup.pid`, `phase`, `stop`, and `c/<container>/` as [`super::runner`] says,
//! plus `idx` (log size over time, written by the poll, for log timestamps).

use std::time::Duration;

use super::plan::PodPlan;
use super::quote::{QuoteError, quote};

/// Shell prologue setting `B` to the pods directory.
fn base(state_dir: &str) -> Result<String, QuoteError> {
    Ok(format!(
        "B=\"$HOME\"/{}/pods\n",
        quote(state_dir, "stateDir")?
    ))
}

const BOOT: &str = "cur=; [ -r /proc/sys/kernel/random/boot_id ] && read -r cur < /proc/sys/kernel/random/boot_id\n";

/// Install `plan` for VirtualNode `node` (its `run.sh` comes on stdin) and start its supervisor; nothing
/// when it already runs.
///
/// # Errors
/// [`QuoteError`] for unquotable values.
pub fn install(state_dir: &str, node: &str, plan: &PodPlan) -> Result<String, QuoteError> {
    let r = &plan.pod_ref;
    let mut spec = vec![format!("policy {}", plan.policy.as_str())];
    spec.extend(plan.init.iter().map(|c| format!("init {}", c.name)));
    spec.extend(plan.main.iter().map(|c| format!("main {}", c.name)));
    spec.extend(
        plan.init
            .iter()
            .chain(&plan.main)
            .map(|c| format!("image {} {}", c.name, c.image.replace(['\n', '\r'], " "))),
    );
    let spec = spec
        .iter()
        .map(|l| quote(l, "spec"))
        .collect::<Result<Vec<_>, _>>()?
        .join(" ");
    Ok(format!(
        r#"set -u; umask 077
{base}P="$B"/{uid}
command -v setsid >/dev/null 2>&1 || {{ echo "setsid is not installed on the device" >&2; exit 3; }}
if [ -f "$P/sup.pid" ]; then cat >/dev/null; exit 0; fi
mkdir -p "$P/c" || exit 1
cat > "$P/run.sh.t" && mv -f "$P/run.sh.t" "$P/run.sh" || exit 1
printf '%s\n' {spec} > "$P/spec" || exit 1
{BOOT}printf '%s\n' "$cur" > "$P/boot"
printf '%s\n' {ns} {name} {uid} {node} > "$P/meta" || exit 1
setsid sh "$P/run.sh" supervise </dev/null >>"$P/sup.log" 2>&1 &
echo $! > "$P/sup.pid"
"#,
        base = base(state_dir)?,
        uid = quote(&r.uid, "uid")?,
        ns = quote(&r.namespace, "namespace")?,
        name = quote(&r.name, "name")?,
        node = quote(node, "node")?,
    ))
}

/// Stop pod `uid`: no more restarts, SIGTERM to every container's process group, SIGKILL after
/// `grace`, then remove its state. Processes of an earlier boot are not signalled (their PIDs may be
/// someone else's now).
///
/// # Errors
/// [`QuoteError`] for unquotable values.
pub fn delete(state_dir: &str, uid: &str, grace: Duration) -> Result<String, QuoteError> {
    let tenths = grace.as_millis().div_ceil(100);
    Ok(format!(
        r#"{base}P="$B"/{uid}
[ -d "$P" ] || exit 0
: > "$P/stop"
{BOOT}pb=; [ -f "$P/boot" ] && read -r pb < "$P/boot"
if [ "$pb" = "$cur" ]; then
  # Signal process group $2, only when it is a plain number above 1 (never 0, -1 or garbage).
  pg() {{ case $2 in ''|*[!0-9]*|0|1) return 1 ;; esac; kill -"$1" -"$2" 2>/dev/null; }}
  s=; [ -f "$P/sup.pid" ] && read -r s < "$P/sup.pid"
  pg KILL "$s"
  sig() {{
    r=1
    for f in "$P"/c/*/pid; do
      [ -f "$f" ] || continue
      [ -f "${{f%/pid}}/exit" ] && continue
      p=; read -r p < "$f"
      pg "$1" "$p" && r=0
    done
    return $r
  }}
  if sig TERM; then
    i=0
    while sig 0 && [ "$i" -lt {tenths} ]; do
      if sleep 0.1 2>/dev/null; then i=$((i + 1)); else sleep 1; i=$((i + 10)); fi
    done
    sig KILL
  fi
fi
rm -rf "$P"
"#,
        base = base(state_dir)?,
        uid = quote(uid, "uid")?,
    ))
}

/// Every pod's state in one go (see [`super::state::parse`] for the format). `now_ms` (the operator's
/// clock) stamps growth of running containers' logs in their `idx`.
///
/// # Errors
/// [`QuoteError`] for an unquotable state dir.
pub fn poll(state_dir: &str, now_ms: i64) -> Result<String, QuoteError> {
    Ok(format!(
        r#"{base}{BOOT}now={now_ms}
echo "boot $cur"
r() {{ v=; [ -f "$1" ] && read -r v < "$1"; }}
for p in "$B"/*; do
  [ -f "$p/meta" ] || continue
  echo "pod ${{p##*/}}"
  while read -r l; do echo "meta $l"; done < "$p/meta"
  [ -f "$p/spec" ] && while read -r l; do echo "spec $l"; done < "$p/spec"
  r "$p/boot"; pb=$v; r "$p/sup.pid"; s=$v
  a=0; [ -n "$s" ] && [ "$pb" = "$cur" ] && kill -0 "$s" 2>/dev/null && a=1
  [ -n "$s" ] || a=2
  r "$p/phase"; echo "sup $a ${{v:--}}"
  [ -e "$p/stop" ] && echo stop
  for d in "$p"/c/*; do
    [ -d "$d" ] || continue
    r "$d/pid"; pid=${{v:-0}}
    al=0; [ "$pid" != 0 ] && [ "$pb" = "$cur" ] && kill -0 "$pid" 2>/dev/null && al=1
    r "$d/started"; st=${{v:--}}; r "$d/exit"; ex=${{v:--}}; r "$d/finished"; fi=${{v:--}}
    r "$d/restarts"; rs=${{v:-0}}; r "$d/prev"; pv=${{v:--}}
    echo "c ${{d##*/}} $pid $al $st $ex $fi $rs $pv"
    if [ -f "$d/log" ] && [ ! -e "$d/idx.done" ]; then
      sz=$(wc -c < "$d/log"); sz=$((sz + 0)); r "$d/idx.last"
      [ "$sz" != "${{v:-0}}" ] && echo "$now $sz" >> "$d/idx" && echo "$sz" > "$d/idx.last"
      [ "$ex" != - ] && : > "$d/idx.done"
    fi
  done
done
echo end
"#,
        base = base(state_dir)?,
    ))
}

/// Run `argv` inside container `container` of pod `uid` (its env and working directory).
///
/// # Errors
/// [`QuoteError`] for unquotable values.
pub fn exec(
    state_dir: &str,
    uid: &str,
    container: &str,
    argv: &[String],
) -> Result<String, QuoteError> {
    Ok(format!(
        "{base}exec sh \"$B\"/{uid}/run.sh exec {c} {argv}\n",
        base = base(state_dir)?,
        uid = quote(uid, "uid")?,
        c = quote(container, "container")?,
        argv = super::quote::join(argv, "command")?,
    ))
}

/// Where [`tracked`] notes the PID of the stream `nonce` of pod `uid`.
fn pid_file(uid: &str, nonce: &str) -> Result<String, QuoteError> {
    Ok(format!(
        "\"$B\"/{uid}/x/{nonce}",
        uid = quote(uid, "uid")?,
        nonce = quote(nonce, "nonce")?,
    ))
}

/// `script` (exec or attach of pod `uid`), first noting its PID under `nonce`, so that
/// [`end_tracked`] can end it when its client goes away. (Closing the SSH channel does not: sshd
/// keeps the session, and the command, until the command exits; the SSH `signal` request is refused
/// for root logins.) The PID is the shell's: an exec replaces it with the command, attach's follow
/// loop runs in it.
///
/// # Errors
/// [`QuoteError`] for unquotable values.
pub fn tracked(
    state_dir: &str,
    uid: &str,
    nonce: &str,
    script: &str,
) -> Result<String, QuoteError> {
    let f = pid_file(uid, nonce)?;
    Ok(format!(
        "{base}mkdir -p \"$B\"/{uid}/x 2>/dev/null && echo $$ > {f} 2>/dev/null\n{script}",
        base = base(state_dir)?,
        uid = quote(uid, "uid")?,
    ))
}

/// End the stream [`tracked`] under `nonce` (SIGTERM) if it still runs, and forget its PID. sshd starts
/// every session's command in a session of its own, so the PID is its process group's and the whole
/// group is signalled (a pipeline's other processes too); a plain PID is the fallback.
///
/// # Errors
/// [`QuoteError`] for unquotable values.
pub fn end_tracked(state_dir: &str, uid: &str, nonce: &str) -> Result<String, QuoteError> {
    let f = pid_file(uid, nonce)?;
    Ok(format!(
        "{base}f={f}\nif [ -r \"$f\" ]; then read -r pid < \"$f\" && {{ kill -TERM \"-$pid\" 2>/dev/null || kill -TERM \"$pid\" 2>/dev/null; }}; rm -f \"$f\"; fi\nexit 0\n",
        base = base(state_dir)?,
    ))
}

/// Forget the PID of the stream [`tracked`] under `nonce` (it ended by itself).
///
/// # Errors
/// [`QuoteError`] for unquotable values.
pub fn untrack(state_dir: &str, uid: &str, nonce: &str) -> Result<String, QuoteError> {
    Ok(format!(
        "{base}rm -f {f}\n",
        base = base(state_dir)?,
        f = pid_file(uid, nonce)?,
    ))
}

/// Which log of a container to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRead {
    pub previous: bool,
    pub tail_lines: Option<u64>,
    pub follow: bool,
    /// Exit with the run's exit code once it ends (attach).
    pub exit_code: bool,
}

/// Print a log: a header (`size N`, `start S`, `idx MS SIZE` lines, `fin SECS`, then `--`), the log's
/// bytes from offset S to N (S is 0, or where the last `tail_lines` lines start), and with `follow` every byte appended until the
/// container's run ends. Exit 4 when there is no such log.
///
/// # Errors
/// [`QuoteError`] for unquotable values.
pub fn log(
    state_dir: &str,
    uid: &str,
    container: &str,
    what: LogRead,
) -> Result<String, QuoteError> {
    let (file, idx) = if what.previous {
        ("log.prev", "idx.prev")
    } else {
        ("log", "idx")
    };
    // Attach shows the bytes only.
    let header = if what.exit_code { " >/dev/null" } else { "" };
    let exit_code = if what.exit_code {
        "e=0; [ -f \"$d/exit\" ] && read -r e < \"$d/exit\"; exit \"$e\"\n"
    } else {
        ""
    };
    let start = what.tail_lines.map_or_else(
        || "st=0".to_string(),
        |n| format!("t=$(head -c \"$sz\" \"$f\" | tail -n {n} | wc -c); st=$((sz - t))"),
    );
    let follow = if what.follow && !what.previous {
        r#"off=$sz
while :; do
  e=0; [ -f "$d/exit" ] && e=1
  [ -f "$f" ] || exit 0
  sz=$(wc -c < "$f") || exit 0; sz=$((sz + 0))
  [ "$sz" -lt "$off" ] && exit 0
  if [ "$sz" -gt "$off" ]; then tail -c +$((off + 1)) "$f" | head -c $((sz - off)); off=$sz; fi
  [ $e = 1 ] && break
  sleep 0.2 2>/dev/null || sleep 1
done
"#
    } else {
        ""
    };
    let fin = if what.previous {
        r#"pv=; [ -f "$d/prev" ] && read -r pv < "$d/prev"; echo "fin ${pv##* }""#
    } else {
        r#"fi=; [ -f "$d/finished" ] && read -r fi < "$d/finished"; echo "fin ${fi:--}""#
    };
    Ok(format!(
        r#"{base}d="$B"/{uid}/c/{c}; f="$d/{file}"
[ -f "$f" ] || exit 4
sz=$(wc -c < "$f") || exit 4; sz=$((sz + 0))
{start}
{{
echo "size $sz"
echo "start $st"
[ -f "$d/{idx}" ] && while read -r l; do echo "idx $l"; done < "$d/{idx}"
{fin}
echo --
}}{header}
tail -c +$((st + 1)) "$f" | head -c $((sz - st))
{follow}{exit_code}"#,
        base = base(state_dir)?,
        uid = quote(uid, "uid")?,
        c = quote(container, "container")?,
    ))
}

/// The device's resources: `nproc`, `/proc/meminfo`, `uname -m` and `-r`, os-release, machine-id, and
/// the size of the filesystem holding the home directory.
pub const RESOURCES: &str = r#"echo "nproc $(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)"
echo "arch $(uname -m)"
echo "kernel $(uname -r)"
echo "os $(uname -s)"
[ -r /proc/meminfo ] && while read -r k v u; do [ "$k" = MemTotal: ] && echo "memkb $v"; done < /proc/meminfo
[ -r /etc/os-release ] && while IFS= read -r l; do case $l in PRETTY_NAME=*) echo "pretty ${l#PRETTY_NAME=}";; esac; done < /etc/os-release
[ -r /etc/machine-id ] && echo "machine $(cat /etc/machine-id)"
echo "diskkb $(df -Pk "$HOME" 2>/dev/null | awk 'NR==2 {print $2}')"
"#;

/// Usage figures: the `cpu` line of `/proc/stat`, `MemTotal`/`MemAvailable`, the clock tick, and for
/// every running container `ct UID NAME utime stime rss_kb` from `/proc/<pid>/stat` and `status`.
///
/// # Errors
/// [`QuoteError`] for an unquotable state dir.
pub fn stats(state_dir: &str) -> Result<String, QuoteError> {
    Ok(format!(
        r#"{base}read -r l < /proc/stat; echo "$l"
while read -r k v u; do case $k in MemTotal:|MemAvailable:) echo "$k $v";; esac; done < /proc/meminfo
echo "hz $(getconf CLK_TCK 2>/dev/null || echo 100)"
for f in "$B"/*/c/*/pid; do
  [ -f "$f" ] || continue; d=${{f%/pid}}; [ -f "$d/exit" ] && continue
  p=; read -r p < "$f"; [ -r "/proc/$p/stat" ] || continue
  read -r st < "/proc/$p/stat" || continue
  rss=0; while read -r k v u; do [ "$k" = VmRSS: ] && rss=$v; done < "/proc/$p/status"
  c=${{d##*/}}; u=${{d%/c/*}}; u=${{u##*/}}
  echo "ct $u $c ${{st##*) }} $rss"
done
"#,
        base = base(state_dir)?,
    ))
}
