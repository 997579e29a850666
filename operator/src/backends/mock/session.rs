//! Interactive capabilities of the mock: `exec` (the built-in commands), `attach` (the main process's
//! stdin and output from now on) and `port-forward` (every port of a mock pod runs an echo server:
//! bytes sent come back unchanged until the client closes its side).

use std::convert::Infallible;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use vk_runtime::provider::{BytePipe, ExecIo, TermSize};
use vk_runtime::{ContainerState, ProviderError};

use super::pod::{MockPod, Runs, Which};
use super::shell::{self, Io, SessionOutput};

/// Terminal resizes are accepted and ignored; the future never finishes on its own.
async fn drain_resize(resize: Option<mpsc::Receiver<TermSize>>) -> Infallible {
    if let Some(mut rx) = resize {
        while rx.recv().await.is_some() {}
    }
    std::future::pending().await
}

fn not_running(pod: &MockPod, name: &str) -> ProviderError {
    ProviderError::InvalidInput(format!(
        "container {name} is not running in pod {}",
        pod.pod_ref
    ))
}

fn find(pod: &MockPod, name: &str) -> Result<Which, ProviderError> {
    pod.find(name)
        .ok_or_else(|| ProviderError::NotFound(format!("container {name} in pod {}", pod.pod_ref)))
}

/// Run `command` in a running container with the session's streams; its exit code.
pub async fn exec(
    pod: Arc<MockPod>,
    name: &str,
    command: Vec<String>,
    io: ExecIo,
) -> Result<i32, ProviderError> {
    let which = find(&pod, name)?;
    if !matches!(
        pod.runs(which),
        Some(Runs {
            state: ContainerState::Running { .. },
            ..
        })
    ) {
        return Err(not_running(&pod, name));
    }
    let fs = pod.fs(which).ok_or_else(|| not_running(&pod, name))?;
    let ExecIo {
        mut stdin,
        stdout,
        stderr,
        resize,
        tty,
    } = io;
    let out = SessionOutput {
        stdout,
        stderr,
        tty,
    };
    let cancel = pod.cancel.child_token();
    let mut io = Io {
        stdin: stdin.as_mut(),
        out: &out,
        env: pod.env_of(name),
        cancel: &cancel,
        tty,
        fs: &fs,
    };
    let code = tokio::select! {
        code = shell::run_argv(&command, &mut io) => code,
        never = drain_resize(resize) => match never {},
    };
    Ok(code)
}

/// Attach to a running container's main process: its output from now on goes to the session, the
/// session's stdin to the process (when it reads stdin). Returns the process's exit code once it ends.
pub async fn attach(pod: Arc<MockPod>, name: &str, io: ExecIo) -> Result<i32, ProviderError> {
    let which = find(&pod, name)?;
    let Some(Runs {
        state: ContainerState::Running { .. },
        current: Some(run),
        ..
    }) = pod.runs(which)
    else {
        return Err(not_running(&pod, name));
    };
    let ExecIo {
        stdin,
        stdout,
        stderr,
        resize,
        tty,
    } = io;
    // With a terminal there is one output stream.
    let stderr = if tty { stdout.clone() } else { stderr };
    run.subscribe(stdout, stderr);
    let (process_stdin, once) = pod.stdin(which);
    let forward = async {
        if let (Some(mut from), Some(to)) = (stdin, process_stdin) {
            while let Some(chunk) = from.recv().await {
                if to.send(chunk).await.is_err() {
                    break;
                }
            }
            drop(to);
            if once {
                pod.close_stdin(which);
            }
        }
        std::future::pending::<Infallible>().await
    };
    let code = tokio::select! {
        code = run.wait() => code,
        never = forward => match never {},
        never = drain_resize(resize) => match never {},
    };
    Ok(code)
}

/// Echo bytes back until the client closes its side or the pod stops.
pub async fn port_forward(
    pod: Arc<MockPod>,
    stream: Box<dyn BytePipe>,
) -> Result<(), ProviderError> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let echo = async {
        // A client that disconnects mid-stream is the normal end of a session.
        let _ = tokio::io::copy(&mut reader, &mut writer).await;
        let _ = writer.shutdown().await;
    };
    tokio::select! {
        () = echo => {}
        () = pod.cancel.cancelled() => {}
    }
    Ok(())
}
