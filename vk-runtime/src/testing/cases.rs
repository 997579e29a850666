//! The cases of the conformance suite, one method each on [`Harness`].

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{
    ConformanceError, Harness, Result, check, container, exited, fail, restarts, running, state,
};
use crate::provider::{ExecIo, OutputChunk, OutputStream, output_channel};
use crate::{ContainerState, LogOptions, PodRef};

impl Harness {
    async fn delete(&mut self, case: &'static str, pod: &PodRef) -> Result<()> {
        let grace = Duration::from_secs(3);
        let start = Instant::now();
        self.call(case, self.p.delete_pod(pod, grace)).await?;
        let took = start.elapsed();
        check(case, took <= grace + Duration::from_secs(2), || {
            format!("delete took {took:?} with a grace of {grace:?}")
        })?;
        let listed = self.call(case, self.p.list_pods()).await?;
        check(case, !listed.contains(pod), || {
            format!("{pod} still listed after delete")
        })?;
        let status = self.call(case, self.p.pod_status(pod)).await?;
        check(case, status.is_none(), || {
            format!("{pod} still has a status after delete: {status:?}")
        })
    }

    /// Create -> Running with a pod IP -> listed -> delete within grace -> forgotten.
    pub async fn create_run_delete(&mut self) -> Result<()> {
        const CASE: &str = "create-run-delete";
        let pod = self.pod(
            vec![],
            vec![container("main", &["sh", "-c", "echo started; sleep 3600"])],
            "Always",
        );
        self.create(CASE, &pod).await?;
        let r = &pod.pod_ref;
        let s = self
            .wait_for(CASE, r, "main Running with a pod IP", |s| {
                running(s, "main") && s.pod_ip.is_some()
            })
            .await?;
        check(CASE, !s.finished, || {
            "a running pod reported finished".into()
        })?;
        let listed = self.call(CASE, self.p.list_pods()).await?;
        check(CASE, listed.contains(r), || {
            format!("{r} not in list_pods {listed:?}")
        })?;
        let status = self.call(CASE, self.p.pod_status(r)).await?;
        check(
            CASE,
            status.as_ref().is_some_and(|s| running(s, "main")),
            || format!("pod_status: {status:?}"),
        )?;
        self.delete(CASE, r).await
    }

    /// Init containers run one at a time, in order, to completion before any main container starts.
    pub async fn init_order(&mut self) -> Result<()> {
        const CASE: &str = "init-order";
        let init = vec![
            container("first", &["sh", "-c", "echo one; sleep 0.2"]),
            container("second", &["sh", "-c", "echo two"]),
        ];
        let pod = self.pod(init, vec![container("main", &["sleep", "3600"])], "Always");
        self.create(CASE, &pod).await?;
        let r = &pod.pod_ref;
        self.wait_for(CASE, r, "main Running", |s| running(s, "main"))
            .await?;
        for s in self.seen.get(r).into_iter().flatten() {
            let started = |n| !matches!(state(s, n), None | Some(ContainerState::Waiting { .. }));
            if started("second") {
                check(CASE, exited(s, "first") == Some(0), || {
                    format!("second started before first completed: {s:?}")
                })?;
            }
            if started("main") {
                check(
                    CASE,
                    exited(s, "first") == Some(0) && exited(s, "second") == Some(0),
                    || format!("main started before init containers completed: {s:?}"),
                )?;
            }
        }
        self.delete(CASE, r).await
    }

    /// Exit codes, restartPolicy Never / OnFailure / Always, `finished` and restart counts.
    pub async fn restart_policies(&mut self) -> Result<()> {
        const CASE: &str = "restart-policies";
        let never = self.pod(
            vec![],
            vec![container("main", &["sh", "-c", "echo bye; exit 3"])],
            "Never",
        );
        self.create(CASE, &never).await?;
        let s = self
            .wait_for(CASE, &never.pod_ref, "finished (Never)", |s| s.finished)
            .await?;
        check(
            CASE,
            exited(&s, "main") == Some(3) && restarts(&s, "main") == 0,
            || format!("Never: want exit 3 and no restart: {s:?}"),
        )?;
        self.delete(CASE, &never.pod_ref).await?;

        let ok = self.pod(vec![], vec![container("main", &["true"])], "OnFailure");
        self.create(CASE, &ok).await?;
        let s = self
            .wait_for(CASE, &ok.pod_ref, "finished (OnFailure, exit 0)", |s| {
                s.finished
            })
            .await?;
        check(
            CASE,
            exited(&s, "main") == Some(0) && restarts(&s, "main") == 0,
            || format!("OnFailure exit 0: {s:?}"),
        )?;
        self.delete(CASE, &ok.pod_ref).await?;

        let failing = self.pod(
            vec![],
            vec![container("main", &["sh", "-c", "exit 3"])],
            "OnFailure",
        );
        self.create(CASE, &failing).await?;
        let s = self
            .wait_for(
                CASE,
                &failing.pod_ref,
                "a restart (OnFailure, exit 3)",
                |s| restarts(s, "main") >= 1,
            )
            .await?;
        let last = s
            .containers
            .first()
            .and_then(|c| c.last_termination.clone());
        check(
            CASE,
            matches!(last, Some(ContainerState::Terminated { exit_code: 3, .. })),
            || format!("OnFailure: lastState should be exit 3: {s:?}"),
        )?;
        check(
            CASE,
            !self.seen[&failing.pod_ref].iter().any(|s| s.finished),
            || "OnFailure with a failing container reported finished".into(),
        )?;
        self.delete(CASE, &failing.pod_ref).await?;

        let always = self.pod(vec![], vec![container("main", &["true"])], "Always");
        self.create(CASE, &always).await?;
        self.wait_for(CASE, &always.pod_ref, "a restart (Always, exit 0)", |s| {
            restarts(s, "main") >= 1
        })
        .await?;
        check(
            CASE,
            !self.seen[&always.pod_ref].iter().any(|s| s.finished),
            || "Always reported finished".into(),
        )?;
        self.delete(CASE, &always.pod_ref).await
    }

    async fn read_log(&self, r: &PodRef, opts: LogOptions) -> Result<String> {
        const CASE: &str = "logs";
        let mut stream = self.call(CASE, self.p.logs(r, "main", &opts)).await?;
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + self.cfg.timeout;
        loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => {
                    return Err(fail(
                        CASE,
                        format!(
                            "log stream ({opts:?}) did not end; got {:?}",
                            String::from_utf8_lossy(&out)
                        ),
                    ));
                }
                Ok(None) => break,
                Ok(Some(Ok(chunk))) => out.extend_from_slice(&chunk),
                Ok(Some(Err(e))) => return Err(fail(CASE, format!("log stream error: {e}"))),
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Follow ends when the container ends; tail, limit, timestamps; no previous without a restart.
    pub async fn logs(&mut self) -> Result<()> {
        const CASE: &str = "logs";
        let pod = self.pod(
            vec![],
            vec![container(
                "main",
                &["sh", "-c", "echo one; echo two; sleep 0.5; echo three"],
            )],
            "Never",
        );
        self.create(CASE, &pod).await?;
        let r = pod.pod_ref.clone();
        self.wait_for(CASE, &r, "main started", |s| {
            running(s, "main") || exited(s, "main").is_some()
        })
        .await?;
        let followed = self
            .read_log(
                &r,
                LogOptions {
                    follow: true,
                    ..Default::default()
                },
            )
            .await?;
        check(CASE, followed == "one\ntwo\nthree\n", || {
            format!("follow: {followed:?}")
        })?;
        self.wait_for(CASE, &r, "finished", |s| s.finished).await?;
        let tail = self
            .read_log(
                &r,
                LogOptions {
                    tail_lines: Some(1),
                    ..Default::default()
                },
            )
            .await?;
        check(CASE, tail == "three\n", || {
            format!("tail_lines 1: {tail:?}")
        })?;
        let limited = self
            .read_log(
                &r,
                LogOptions {
                    limit_bytes: Some(3),
                    ..Default::default()
                },
            )
            .await?;
        check(CASE, limited == "one", || {
            format!("limit_bytes 3: {limited:?}")
        })?;
        let stamped = self
            .read_log(
                &r,
                LogOptions {
                    timestamps: true,
                    ..Default::default()
                },
            )
            .await?;
        let ok = stamped.lines().count() == 3
            && stamped.lines().all(|l| {
                l.split_once(' ')
                    .is_some_and(|(ts, _)| ts.parse::<jiff::Timestamp>().is_ok())
            });
        check(CASE, ok, || format!("timestamps: {stamped:?}"))?;
        let previous = self
            .p
            .logs(
                &r,
                "main",
                &LogOptions {
                    previous: true,
                    ..Default::default()
                },
            )
            .await;
        check(CASE, previous.is_err(), || {
            "previous logs of a container that never restarted".into()
        })?;
        self.delete(CASE, &r).await
    }

    async fn run_exec(
        &self,
        r: &PodRef,
        argv: &[&str],
        stdin: Option<&str>,
    ) -> Result<(i32, String, String)> {
        const CASE: &str = "exec";
        let (out_tx, err_tx, mut output) = output_channel(16, true, true);
        let stdin_rx = stdin.map(|text| {
            let (tx, rx) = mpsc::channel(4);
            // Sent, then the sender drops: EOF after the text.
            let _ = tx.try_send(Bytes::from(text.to_string()));
            rx
        });
        let io = ExecIo {
            stdin: stdin_rx,
            stdout: out_tx,
            stderr: err_tx,
            resize: None,
            tty: false,
        };
        let command = argv.iter().map(|s| s.to_string()).collect();
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut keep = |(stream, chunk): OutputChunk| match stream {
            OutputStream::Stdout => stdout.extend_from_slice(&chunk),
            OutputStream::Stderr => stderr.extend_from_slice(&chunk),
        };
        let exec = self.p.exec(r, "main", command, io);
        tokio::pin!(exec);
        let deadline = tokio::time::Instant::now() + self.cfg.timeout;
        let code = loop {
            tokio::select! {
                res = &mut exec => break res.map_err(|source| ConformanceError::Provider { case: CASE, source })?,
                Some(chunk) = output.recv() => keep(chunk),
                () = tokio::time::sleep_until(deadline) => return Err(fail(CASE, format!("exec {argv:?} did not return"))),
            }
        };
        while let Ok(chunk) = output.try_recv() {
            keep(chunk);
        }
        Ok((
            code,
            String::from_utf8_lossy(&stdout).into_owned(),
            String::from_utf8_lossy(&stderr).into_owned(),
        ))
    }

    /// Exit codes, stdout and stderr, stdin to EOF with `cat`, the container's environment.
    pub async fn exec(&mut self) -> Result<()> {
        const CASE: &str = "exec";
        let mut pod = self.pod(
            vec![],
            vec![container("main", &["sleep", "3600"])],
            "Always",
        );
        pod.env
            .insert("main".into(), vec![("GREETING".into(), "hello".into())]);
        self.create(CASE, &pod).await?;
        let r = pod.pod_ref.clone();
        self.wait_for(CASE, &r, "main Running", |s| running(s, "main"))
            .await?;
        let cases: [(&[&str], Option<&str>, i32, &str); 5] = [
            (&["sh", "-c", "exit 7"], None, 7, ""),
            (&["echo", "hi"], None, 0, "hi\n"),
            (&["false"], None, 1, ""),
            (&["cat"], Some("abc"), 0, "abc"),
            (
                &["sh", "-c", "echo a; echo b >&2; echo c"],
                None,
                0,
                "a\nc\n",
            ),
        ];
        for (argv, stdin, want_code, want_out) in cases {
            let (code, out, _) = self.run_exec(&r, argv, stdin).await?;
            check(CASE, code == want_code && out == want_out, || {
                format!("{argv:?}: got {code} {out:?}, want {want_code} {want_out:?}")
            })?;
        }
        let (code, _, err) = self.run_exec(&r, &["no-such-command-xyz"], None).await?;
        check(CASE, code == 127 && err.contains("not found"), || {
            format!("unknown command: {code} {err:?}")
        })?;
        let (code, out, _) = self.run_exec(&r, &["env"], None).await?;
        check(
            CASE,
            code == 0 && out.lines().any(|l| l == "GREETING=hello"),
            || format!("env: {code} {out:?}"),
        )?;
        self.delete(CASE, &r).await
    }
}
