//! Quoting properties: every argv element, env value and working directory reaches the process byte
//! for byte, whatever it contains (`;`, `$()`, backticks, braces, quotes, newlines, non-ASCII, globs),
//! both through the quoting functions with a local `sh` and end to end through a real sshd and the
//! pod supervisor; NUL and invalid env names are refused.

#![allow(clippy::unwrap_used)]

mod ssh_support;

use std::process::Command;
use std::time::Duration;

use fleetlet::backends::ssh::quote::{env_assignments, join};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ssh_support::{Sshd, StateDir};
use vk_runtime::provider::{ExecIo, output_channel};
use vk_runtime::testing::{ConformanceConfig, Harness, container};
use vk_runtime::{ContainerState, LogOptions, Provider, ProviderError};

const PIECES: &[&str] = &[
    ";", "$(id)", "`id`", "${HOME}", "{a,b}", "'", "\"", "\\", "\n", "\t", " ", "*", "?", "[a]",
    "~", "#", "!", "&", "|", ">", "<", "%", "=", "-", "--", "é", "日本", "🦀", "\r", "$", "$$",
    "a", "Z", "0",
];

fn nasty(rng: &mut StdRng) -> String {
    let n = rng.random_range(0..8);
    (0..n)
        .map(|_| PIECES[rng.random_range(0..PIECES.len())])
        .collect()
}

fn split_nul(out: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = out
        .split(|b| *b == 0)
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect();
    v.pop();
    v
}

#[test]
fn quoted_words_survive_a_local_sh() {
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..20 {
        let words: Vec<String> = (0..50).map(|_| nasty(&mut rng)).collect();
        let script = format!("printf '%s\\0' {}", join(&words, "argv").unwrap());
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert_eq!(split_nul(&out.stdout), words, "script: {script}");
        let env: Vec<(String, String)> = words
            .iter()
            .enumerate()
            .map(|(i, w)| (format!("V_{i}"), w.clone()))
            .collect();
        let script = format!(
            "env -i {} sh -c 'for i in $(seq 0 49); do eval \"printf \\\"%s\\\\0\\\" \\\"\\$V_$i\\\"\"; done'",
            env_assignments(&env).unwrap()
        );
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert_eq!(split_nul(&out.stdout), words, "env script: {script}");
    }
    assert!(join(&["a\0".into()], "argv").is_err());
    assert!(env_assignments(&[("A;B".into(), "v".into())]).is_err());
}

async fn exec(p: &dyn Provider, r: &vk_runtime::PodRef, argv: Vec<String>) -> (i32, Vec<u8>) {
    let (tx, _, mut rx) = output_channel(64, true, false);
    let io = ExecIo {
        stdin: None,
        stdout: tx,
        stderr: None,
        resize: None,
        tty: false,
    };
    let collector = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some((_, b)) = rx.recv().await {
            out.extend_from_slice(&b);
        }
        out
    });
    let code = p.exec(r, "main", argv, io).await.unwrap();
    (code, collector.await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_reach_remote_processes_byte_for_byte() {
    let sshd = Sshd::start();
    let state = StateDir::new();
    let p = sshd.provider(&state.0);
    let mut h = Harness::new(
        p.clone(),
        ConformanceConfig {
            namespace: "quoting".into(),
            timeout: Duration::from_secs(30),
        },
    );
    let mut rng = StdRng::seed_from_u64(42);
    let words: Vec<String> = (0..40).map(|_| nasty(&mut rng)).collect();
    let wd = format!("{}/wd $(x) 'q' é", state.path().display());

    // The container's own command (through run.sh), its env and working directory.
    let mut argv = vec!["printf".to_string(), "%s\\0".to_string()];
    argv.extend(words.iter().cloned());
    let argv_refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut c = container("main", &argv_refs);
    c.working_dir = Some(wd.clone());
    let mut pod = h.pod(vec![], vec![c], "Never");
    pod.env.insert(
        "main".into(),
        words
            .iter()
            .enumerate()
            .map(|(i, w)| (format!("V_{i}"), w.clone()))
            .collect(),
    );
    p.create_pod(&pod).await.unwrap();
    let r = pod.pod_ref.clone();
    let done = h
        .wait_for("quoting", &r, "finished", |s| s.finished)
        .await
        .unwrap();
    assert!(matches!(
        done.containers[0].state,
        ContainerState::Terminated { exit_code: 0, .. }
    ));
    let mut logs = p.logs(&r, "main", &LogOptions::default()).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut logs).await {
        out.extend_from_slice(&chunk.unwrap());
    }
    // A kubelet expands `$(VAR)` in command and args (`$$` escapes `$`); nothing else changes.
    let expanded: Vec<String> = words
        .iter()
        .map(|w| vk_runtime::pod::env::expand(w, |_| None))
        .collect();
    assert_eq!(split_nul(&out), expanded, "container argv");

    // exec in the same context: argv, env values, working directory.
    let mut argv = vec!["printf".to_string(), "%s\\0".to_string()];
    argv.extend(words.iter().cloned());
    let (code, out) = exec(p.as_ref(), &r, argv).await;
    assert_eq!((code, split_nul(&out)), (0, words.clone()), "exec argv");
    let script = (0..words.len())
        .map(|i| format!("\"$V_{i}\""))
        .collect::<Vec<_>>()
        .join(" ");
    let (code, out) = exec(
        p.as_ref(),
        &r,
        vec!["sh".into(), "-c".into(), format!("printf '%s\\0' {script}")],
    )
    .await;
    assert_eq!((code, split_nul(&out)), (0, words.clone()), "env values");
    let (code, out) = exec(p.as_ref(), &r, vec!["pwd".into()]).await;
    assert_eq!(
        (code, String::from_utf8(out).unwrap()),
        (0, format!("{wd}\n")),
        "workingDir"
    );

    // Refused before anything reaches the device.
    let nul = h.pod(vec![], vec![container("main", &["echo", "a\0b"])], "Never");
    assert!(matches!(
        p.create_pod(&nul).await,
        Err(ProviderError::InvalidInput(_))
    ));
    let mut bad_env = h.pod(vec![], vec![container("main", &["true"])], "Never");
    bad_env
        .env
        .insert("main".into(), vec![("A;rm".into(), "x".into())]);
    assert!(matches!(
        p.create_pod(&bad_env).await,
        Err(ProviderError::InvalidInput(_))
    ));
    let r2 = bad_env.pod_ref.clone();
    assert!(matches!(
        p.exec(
            &r,
            "main",
            vec!["a\0".into()],
            ExecIo {
                stdin: None,
                stdout: None,
                stderr: None,
                resize: None,
                tty: false
            }
        )
        .await,
        Err(ProviderError::InvalidInput(_))
    ));
    assert!(!p.list_pods().await.unwrap().contains(&r2));
    p.delete_pod(&r, Duration::ZERO).await.unwrap();
}
