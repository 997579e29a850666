//! Issue 3, `kubectl cp` (exec + tar) against a Mock pod: a binary file and a directory copied
//! to the pod and back byte for byte, with the default kubectl, 1.27 (SPDY only) and 1.33, over
//! the default transport and SPDY; `--retries` (a `tar | tail -c+N` pipeline); and the failures a
//! user must see cleanly: a hostile archive with `..`, a missing source, a full filesystem.
//! Runs against the test apiserver, or a real cluster with FLEETLET_E2E_KUBECONFIG.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context as _;
use fleetlet_e2e::cluster::{Cluster, unique};
use fleetlet_e2e::kubelet::{
    KUBECTLS, Run, Transport, create_and_wait, kubectl, kubectl_binary, mock_pod, running,
};
use fleetlet_e2e::kubelet_checks::{Setup, exec_transport_ok, setup};
use tokio::io::AsyncWriteExt;

const NS: &str = "default";

/// A local scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `kubectl` with `args`, asserting exit 0; its stdout.
async fn ok(c: &Cluster, name: &str, t: Transport, args: &[&str]) -> anyhow::Result<String> {
    let r = kubectl(c, name, t, args, None).await?;
    anyhow::ensure!(r.code == 0, "{name} {t:?} {args:?}: {r:?}");
    Ok(r.stdout)
}

/// Runs `kubectl` with binary `stdin`.
async fn kubectl_bytes(c: &Cluster, args: &[&str], stdin: &[u8]) -> anyhow::Result<Run> {
    let mut child = tokio::process::Command::new(kubectl_binary("kubectl")?)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut pipe = child.stdin.take().context("no stdin")?;
    pipe.write_all(stdin).await?;
    drop(pipe);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .context("kubectl did not finish within 60 s")??;
    Ok(Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn same_file(a: &Path, b: &Path) -> anyhow::Result<()> {
    let (x, y) = (std::fs::read(a)?, std::fs::read(b)?);
    anyhow::ensure!(
        x == y,
        "{} ({} bytes) differs from {} ({} bytes)",
        b.display(),
        y.len(),
        a.display(),
        x.len()
    );
    Ok(())
}

/// `%2F` -> `/` (what the kubelet sees in `command=` parameters).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let (mut out, mut i) = (Vec::new(), 0);
    while i < b.len() {
        match (
            b[i],
            s.get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok()),
        ) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The commands kubectl had the kubelet exec, in order (None on a real cluster).
fn exec_commands(c: &Cluster) -> Option<Vec<Vec<String>>> {
    let records = c.apiserver.as_ref()?.kubelet_requests();
    Some(
        records
            .into_iter()
            .filter(|r| r.subresource == "exec")
            .map(|r| {
                let query = r.target.split_once('?').map(|(_, q)| q).unwrap_or_default();
                query
                    .split('&')
                    .filter_map(|kv| kv.strip_prefix("command="))
                    .map(decode)
                    .collect()
            })
            .collect(),
    )
}

/// A running Mock pod named from `prefix` whose only container sleeps; its name.
async fn sleeping_pod(c: &Cluster, node: &str, prefix: &str) -> anyhow::Result<String> {
    let pod = unique(prefix);
    create_and_wait(
        c,
        mock_pod(
            NS,
            &pod,
            node,
            &[("main", &["sleep", "infinity"])],
            "Always",
        ),
        "cp pod running",
        running,
    )
    .await?;
    Ok(pod)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_cp_both_directions() -> anyhow::Result<()> {
    let Setup { c, node, _op } = setup().await?;
    let pod = sleeping_pod(&c, &node, "cp").await?;
    let scratch = Scratch(std::env::temp_dir().join(unique("fleetlet-cp")));
    let local = scratch.0.join("local");
    std::fs::create_dir_all(local.join("dir/sub"))?;
    // Every byte value, in an order that is not a simple cycle, past one 32 KiB stream frame.
    let binary: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(local.join("bin.dat"), &binary)?;
    std::fs::write(local.join("dir/a.txt"), b"first file\n")?;
    std::fs::write(local.join("dir/sub/b.bin"), [0u8, 255, 10, 13, 0])?;
    let back = scratch.0.join("back");
    std::fs::create_dir_all(&back)?;

    let mut expected: Vec<Vec<String>> = Vec::new();
    for name in KUBECTLS {
        for t in Transport::ALL {
            let tag = unique("x");
            for what in ["bin", "dir"] {
                let p = format!("/tmp/{tag}-{what}");
                expected.push(vec!["test".into(), "-d".into(), p.clone()]);
                expected.extend(
                    [
                        vec!["tar", "-xmf", "-", "-C", "/tmp"],
                        vec!["tar", "cf", "-", &p],
                    ]
                    .map(|v| v.into_iter().map(String::from).collect()),
                );
            }
            let remote = |what: &str| format!("{NS}/{pod}:/tmp/{tag}-{what}");
            let here = |what: &str| back.join(format!("{tag}-{what}"));
            let path = |p: &Path| p.to_str().map(str::to_string).context("non-UTF-8 path");
            // A binary file to the pod and back.
            ok(
                &c,
                name,
                t,
                &["cp", &path(&local.join("bin.dat"))?, &remote("bin")],
            )
            .await?;
            exec_transport_ok(&c, name, t, "exec")?;
            ok(&c, name, t, &["cp", &remote("bin"), &path(&here("bin"))?]).await?;
            same_file(&local.join("bin.dat"), &here("bin"))
                .with_context(|| format!("{name} {t:?}: binary file"))?;
            // A directory with two files (one nested) to the pod and back.
            ok(
                &c,
                name,
                t,
                &["cp", &path(&local.join("dir"))?, &remote("dir")],
            )
            .await?;
            ok(&c, name, t, &["cp", &remote("dir"), &path(&here("dir"))?]).await?;
            for f in ["a.txt", "sub/b.bin"] {
                same_file(&local.join("dir").join(f), &here("dir").join(f))
                    .with_context(|| format!("{name} {t:?}: dir/{f}"))?;
            }
        }
    }
    // Every kubectl version runs the same commands (the ones the Mock's builtins implement).
    if let Some(cmds) = exec_commands(&c) {
        assert_eq!(cmds, expected);
    }

    // Into an existing directory: kubectl's `test -d` succeeds and the file keeps its name.
    let d = Transport::Default;
    ok(
        &c,
        "kubectl",
        d,
        &[
            "cp",
            &local.join("dir/a.txt").display().to_string(),
            &format!("{NS}/{pod}:/tmp"),
        ],
    )
    .await?;
    let got = ok(&c, "kubectl", d, &["exec", &pod, "--", "cat", "/tmp/a.txt"]).await?;
    assert_eq!(got, "first file\n");

    // --retries: kubectl runs `sh -c "tar cf - SRC | tail -c+N"`.
    let retried = back.join("retried");
    let src = format!("{NS}/{pod}:/tmp/a.txt");
    ok(
        &c,
        "kubectl",
        d,
        &["cp", "--retries=2", &src, &retried.display().to_string()],
    )
    .await?;
    same_file(&local.join("dir/a.txt"), &retried)?;
    if let Some(cmds) = exec_commands(&c) {
        let last = cmds.last().cloned().unwrap_or_default();
        assert_eq!(
            last,
            ["sh", "-c", "tar cf - /tmp/a.txt | tail -c+0"],
            "{cmds:?}"
        );
    }
    Ok(())
}

/// A tar archive whose member names are written as given (`..`, absolute), as a hostile client's.
fn hostile_archive(names: &[&str]) -> anyhow::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for name in names {
        let mut h = tar::Header::new_ustar();
        h.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(4);
        h.set_cksum();
        b.append(&h, &b"evil"[..])?;
    }
    Ok(b.into_inner()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_cp_failures_are_clean() -> anyhow::Result<()> {
    let Setup { c, node, _op } = setup().await?;
    let pod = sleeping_pod(&c, &node, "cpfail").await?;
    let d = Transport::Default;
    let exec = |args: &[&str]| {
        let mut a = vec!["exec", pod.as_str(), "--"];
        a.extend_from_slice(args);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let c = &c;
        async move {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            kubectl(c, "kubectl", d, &a, None).await
        }
    };

    // A hostile archive is refused as a whole: nothing is written, tar exits 2.
    for bad in ["../../etc/evil", "/etc/evil"] {
        let ar = hostile_archive(&["fine", bad])?;
        let r = kubectl_bytes(
            &c,
            &["exec", "-i", &pod, "--", "tar", "-xmf", "-", "-C", "/tmp"],
            &ar,
        )
        .await?;
        assert_eq!(r.code, 2, "{bad}: {r:?}");
        assert!(
            r.stderr.contains(&format!("tar: {bad}: refusing a member")),
            "{bad}: {r:?}"
        );
        for p in ["/etc/evil", "/tmp/fine"] {
            assert_eq!(
                run(exec(&["test", "-e", p])).await?.code,
                1,
                "{bad}: {p} written"
            );
        }
    }

    let scratch = Scratch(std::env::temp_dir().join(unique("fleetlet-cpfail")));
    std::fs::create_dir_all(&scratch.0)?;
    let out = scratch.0.join("out").display().to_string();
    // A missing source in the pod: no local file appears, and tar's complaint is all kubectl may
    // print. kubectl runs the exec in a goroutine it does not wait for once the archive on stdout is
    // complete: whether tar's exit status (2) reaches it first, making it exit 2 with "command
    // terminated with exit code 2", or it exits 0 with an empty archive, is a race inside kubectl (as
    // with a real pod), and so is printing the exec's stderr. The node's side of it (stderr before
    // the archive, in order, then the exit status) is checked with `exec`, where kubectl waits for
    // every stream.
    let complaint = "tar: /tmp/nope: Cannot stat: No such file or directory";
    let r = run(exec(&["tar", "cf", "-", "/tmp/nope"])).await?;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.starts_with(complaint), "{r:?}");
    let r = run(vec![
        "cp".into(),
        format!("{NS}/{pod}:/tmp/nope"),
        out.clone(),
    ])
    .await?;
    let printed = r.stdout.clone() + &r.stderr;
    assert!(
        r.code == 0 || (r.code == 2 && r.stderr.contains("command terminated with exit code 2")),
        "{r:?}"
    );
    assert!(
        printed.is_empty()
            || printed.starts_with(complaint)
            || printed.starts_with("command terminated with exit code 2"),
        "{r:?}"
    );
    assert!(!Path::new(&out).exists(), "{r:?}");

    // Past the Mock filesystem's 16 MiB: the copy fails with tar's message, the pod goes on.
    let big = scratch.0.join("big");
    std::fs::write(&big, vec![7u8; (16 << 20) + 1])?;
    let r = run(vec![
        "cp".into(),
        big.display().to_string(),
        format!("{NS}/{pod}:/tmp/big"),
    ])
    .await?;
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("tar: big: Cannot open: No space left on device"),
        "{r:?}"
    );
    let r = run(exec(&["echo", "still", "here"])).await?;
    assert_eq!((r.code, r.stdout.as_str()), (0, "still here\n"), "{r:?}");
    Ok(())
}
