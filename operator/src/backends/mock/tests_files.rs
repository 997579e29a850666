#![allow(clippy::unwrap_used)]
//! The Mock's filesystem builtins through the interpreter (`cat FILE`, `test`, `tar`, `tail -c`,
//! pipelines) and through the provider (exec sessions of one container share a filesystem, other
//! containers do not see it): what `kubectl cp` relies on.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetlet_crds::MockBackend;
use k8s_openapi::api::core::v1::Container;
use tokio::sync::mpsc;
use vk_runtime::provider::{ExecIo, OutputStream, output_channel};
use vk_runtime::testing::{ConformanceConfig, Harness};
use vk_runtime::{ContainerState, PodRef, Provider};

use super::MockProvider;
use super::fs::{self, MAX_BYTES};
use super::tests::{sh_in, sh_ordered};

#[tokio::test]
async fn kubectl_cp_commands_round_trip_through_tar() {
    let src = fs::shared();
    let binary: Vec<u8> = (0..=255u8).rev().cycle().take(70_000).collect();
    fs::lock(&src)
        .write("/tmp/d/a.bin", Bytes::from(binary.clone()), 0o644, 1)
        .unwrap();
    fs::lock(&src)
        .write("/tmp/d/b.txt", Bytes::from_static(b"bee\n"), 0o600, 1)
        .unwrap();
    // What `kubectl cp POD:/tmp/d out` runs.
    let (code, archive, err) = sh_in(&src, &["tar", "cf", "-", "/tmp/d"], None, &[]).await;
    assert_eq!((code, err.as_slice()), (0, &b""[..]));
    // `--retries` form: the same bytes from an offset.
    let resume = "tar cf - /tmp/d | tail -c+1001";
    let (code, tail, _) = sh_in(&src, &["sh", "-c", resume], None, &[]).await;
    assert_eq!((code, tail.as_slice()), (0, &archive[1000..]));

    // What `kubectl cp out POD:/root/copy` runs: `test -d`, then tar -x into the parent.
    let dst = fs::shared();
    let (code, _, _) = sh_in(&dst, &["test", "-d", "/root/copy"], None, &[]).await;
    assert_eq!(code, 1);
    let x = [
        "tar",
        "--no-same-permissions",
        "--no-same-owner",
        "-xmf",
        "-",
        "-C",
        "/root",
    ];
    let (code, out, err) = sh_in(&dst, &x, Some(&archive), &[]).await;
    assert_eq!((code, out, err), (0, vec![], vec![]));
    for (t, code) in [("-d", 0), ("-f", 1), ("-e", 0)] {
        let got = sh_in(&dst, &["test", t, "/root/tmp/d"], None, &[]).await.0;
        assert_eq!(got, code, "test {t}");
    }
    let (code, got, _) = sh_in(&dst, &["cat", "/root/tmp/d/a.bin"], None, &[]).await;
    assert_eq!((code, got), (0, binary));
    let (code, got, err) = sh_in(
        &dst,
        &["cat", "/root/tmp/d/b.txt", "-", "/nope"],
        Some(b"in"),
        &[],
    )
    .await;
    assert_eq!((code, got.as_slice()), (1, &b"bee\nin"[..]));
    assert_eq!(err, b"cat: /nope: No such file or directory\n");
    let (code, _, err) = sh_in(&dst, &["cat", "/root"], None, &[]).await;
    assert_eq!(
        (code, err.as_slice()),
        (1, &b"cat: /root: Is a directory\n"[..])
    );
}

#[tokio::test]
async fn tar_failures_are_exit_codes_and_messages() {
    let fs = fs::shared();
    // (argv, stdin, the start of stderr)
    type Case<'a> = (&'a [&'a str], Option<&'a [u8]>, &'a str);
    let cases: &[Case] = &[
        (
            &["tar", "cf", "-", "/nope"],
            None,
            "tar: /nope: Cannot stat: No such file or directory\n",
        ),
        (&["tar", "-xzf", "-"], None, "tar: invalid option -- 'z'\n"),
        (
            &["tar", "xf", "-"],
            Some(&[0x41; 1024]),
            "tar: this does not look like a tar archive",
        ),
        (
            &["tar", "xf", "-"],
            None,
            "tar: this does not look like a tar archive (empty input)\n",
        ),
        (
            &["tar", "xf", "-", "-C", "/tmp/none"],
            Some(&[0; 1024]),
            "tar: /tmp/none: Cannot open: No such file or directory\n",
        ),
        (
            &["test", "-x", "a", "b"],
            None,
            "test: the Mock's test does not know",
        ),
        (
            &["tail", "-n", "1"],
            None,
            "tail: the Mock's tail knows only -c",
        ),
    ];
    for (a, stdin, want) in cases {
        let (code, _, err) = sh_in(&fs, a, *stdin, &[]).await;
        let err = String::from_utf8(err).unwrap();
        assert!(
            code == 2 || (a[0] == "tail" && code == 1),
            "{a:?}: exit {code}"
        );
        assert!(err.starts_with(want), "{a:?}: {err}");
    }
    // Past the archive bound: refused without reading on, nothing written.
    let huge = vec![0u8; (super::shell::tar::MAX_ARCHIVE + 1) as usize];
    let (code, _, err) = sh_in(&fs, &["tar", "xf", "-"], Some(&huge), &[]).await;
    assert_eq!(code, 2);
    assert!(String::from_utf8(err).unwrap().contains("exceeds"));
    assert_eq!(fs::lock(&fs).used(), 0);
}

/// `kubectl cp` stops reading once the archive on stdout is complete: as with GNU tar, a member
/// that cannot be read is reported before the archive, the final verdict after it.
#[tokio::test]
async fn tar_reports_unreadable_members_before_the_archive() {
    let (code, chunks) = sh_ordered(&fs::shared(), &["tar", "cf", "-", "/nope"], None, &[]).await;
    assert_eq!(code, 2);
    let streams: Vec<OutputStream> = chunks.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        streams,
        [
            OutputStream::Stderr,
            OutputStream::Stdout,
            OutputStream::Stderr
        ],
        "{chunks:?}"
    );
    assert!(chunks[0].1.starts_with(b"tar: /nope: Cannot stat"));
    assert!(chunks[2].1.starts_with(b"tar: Exiting with failure status"));
}

#[tokio::test]
async fn a_full_filesystem_fails_the_command_not_the_container() {
    let big = fs::shared();
    fs::lock(&big)
        .write(
            "/tmp/big",
            Bytes::from(vec![1u8; MAX_BYTES as usize]),
            0o644,
            0,
        )
        .unwrap();
    let (_, archive, _) = sh_in(&big, &["tar", "cf", "-", "/tmp/big"], None, &[]).await;
    // Into a filesystem that already holds a byte: no room.
    let dst = fs::shared();
    fs::lock(&dst)
        .write("/tmp/one", Bytes::from_static(b"1"), 0o644, 0)
        .unwrap();
    let (code, _, err) = sh_in(
        &dst,
        &["tar", "-xmf", "-", "-C", "/root"],
        Some(&archive),
        &[],
    )
    .await;
    let err = String::from_utf8(err).unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("tmp/big: Cannot open: No space left on device"),
        "{err}"
    );
    assert!(err.ends_with("tar: Exiting with failure status due to previous errors\n"));
    assert_eq!(sh_in(&dst, &["cat", "/tmp/one"], None, &[]).await.1, b"1");
}

#[tokio::test]
async fn pipelines_stream_between_stages() {
    let fs = fs::shared();
    let run = |body: &'static str| {
        let fs = fs.clone();
        async move {
            let (code, out, err) = sh_in(&fs, &["sh", "-c", body], None, &[]).await;
            (
                code,
                String::from_utf8(out).unwrap(),
                String::from_utf8(err).unwrap(),
            )
        }
    };
    assert_eq!(
        run("echo hello | cat").await,
        (0, "hello\n".into(), "".into())
    );
    assert_eq!(
        run("echo 'a|b' | tail -c 3").await,
        (0, "|b\n".into(), "".into())
    );
    assert_eq!(run("echo x | false").await.0, 1);
    assert_eq!(run("false | echo y").await, (0, "y\n".into(), "".into()));
    assert_eq!(run("echo e >&2 | cat").await, (0, "".into(), "e\n".into()));
    // 4 MiB through a 16-chunk pipe into a reader that stops at once: no deadlock.
    let ended = tokio::time::timeout(Duration::from_secs(10), run("loggen 4M | true")).await;
    assert_eq!(ended.map(|r| r.0).ok(), Some(0));
    let (code, out, _) = run("loggen 1000000 | tail -c 5").await;
    assert_eq!((code, out.as_str()), (0, "xxxx\n"));
}

async fn exec(
    p: &MockProvider,
    pod: &PodRef,
    c: &str,
    cmd: &[&str],
    stdin: Option<Vec<u8>>,
) -> (i32, Vec<u8>) {
    let (out_tx, _, mut out_rx) = output_channel(64, true, false);
    let input = stdin.map(|data| {
        let (tx, rx) = mpsc::channel(1);
        tx.try_send(Bytes::from(data)).unwrap();
        rx
    });
    let io = ExecIo {
        stdin: input,
        stdout: out_tx,
        stderr: None,
        resize: None,
        tty: false,
    };
    let argv = cmd.iter().map(|s| s.to_string()).collect();
    let code = p.exec(pod, c, argv, io).await.unwrap();
    let mut out = Vec::new();
    while let Ok((_, chunk)) = out_rx.try_recv() {
        out.extend_from_slice(&chunk);
    }
    (code, out)
}

#[tokio::test]
async fn exec_sessions_of_a_container_share_its_filesystem() {
    let p = Arc::new(MockProvider::new(&MockBackend::default(), "node-a"));
    let cfg = ConformanceConfig {
        timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let mut h = Harness::new(p.clone(), cfg);
    let idle = |n: &str| Container {
        name: n.into(),
        ..Default::default()
    };
    let pod = h.pod(vec![], vec![idle("a"), idle("b")], "Always");
    p.create_pod(&pod).await.unwrap();
    h.wait_for("mock", &pod.pod_ref, "running", |s| {
        s.containers
            .iter()
            .all(|c| matches!(c.state, ContainerState::Running { .. }))
    })
    .await
    .unwrap();
    let src = fs::shared();
    fs::lock(&src)
        .write("/f", Bytes::from_static(b"\x00\xffdata"), 0o644, 0)
        .unwrap();
    let (_, archive, _) = sh_in(&src, &["tar", "cf", "-", "/f"], None, &[]).await;
    let r = &pod.pod_ref;
    assert_eq!(
        exec(
            &p,
            r,
            "a",
            &["tar", "-xmf", "-", "-C", "/tmp"],
            Some(archive)
        )
        .await
        .0,
        0
    );
    assert_eq!(
        exec(&p, r, "a", &["cat", "/tmp/f"], None).await,
        (0, b"\x00\xffdata".to_vec())
    );
    assert_eq!(exec(&p, r, "b", &["test", "-e", "/tmp/f"], None).await.0, 1);
}

#[tokio::test]
async fn a_restarted_container_starts_with_a_fresh_filesystem() {
    let spec = MockBackend {
        exit_after_ms: Some(1500),
        ..Default::default()
    };
    let p = Arc::new(MockProvider::new(&spec, "node-a"));
    let cfg = ConformanceConfig {
        timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let mut h = Harness::new(p.clone(), cfg);
    let main = Container {
        name: "main".into(),
        ..Default::default()
    };
    let pod = h.pod(vec![], vec![main], "Always");
    p.create_pod(&pod).await.unwrap();
    let run = |restarts: i32| {
        move |s: &vk_runtime::BackendPodStatus| {
            s.containers[0].restart_count == restarts
                && matches!(s.containers[0].state, ContainerState::Running { .. })
        }
    };
    let r = &pod.pod_ref;
    h.wait_for("mock", r, "first run", run(0)).await.unwrap();
    let src = fs::shared();
    fs::lock(&src)
        .write("/f", Bytes::from_static(b"x"), 0o644, 0)
        .unwrap();
    let (_, archive, _) = sh_in(&src, &["tar", "cf", "-", "/f"], None, &[]).await;
    let x = ["tar", "-xmf", "-", "-C", "/tmp"];
    assert_eq!(exec(&p, r, "main", &x, Some(archive)).await.0, 0);
    // Still the first run (1.5 s each): the file is there.
    assert_eq!(
        exec(&p, r, "main", &["test", "-f", "/tmp/f"], None).await.0,
        0
    );
    assert_eq!(
        p.pod_status(r).await.unwrap().unwrap().containers[0].restart_count,
        0
    );
    h.wait_for("mock", r, "second run", run(1)).await.unwrap();
    assert_eq!(
        exec(&p, r, "main", &["test", "-e", "/tmp/f"], None).await.0,
        1
    );
    assert_eq!(
        exec(&p, r, "main", &["test", "-d", "/tmp"], None).await.0,
        0
    );
}
