//! The remote-command protocol of `/exec` and `/attach` over both transports: which streams a
//! request asks for, subprotocol negotiation, the error stream's Status, resize decoding, and the
//! sessions that turn a connection into an [`ExecIo`] for the provider and report its exit code.

mod negotiate;
mod resize;
mod spdy;
mod status;
mod ws;

use std::time::Duration;

use futures::future::BoxFuture;

use crate::provider::{ExecIo, ProviderError};

pub use negotiate::{
    NegotiationError, SpdyProtocol, negotiate as negotiate_protocol, negotiate_spdy,
};
pub use resize::ResizeDecoder;
pub use spdy::serve_spdy;
pub use status::{error_payload, status_json};
pub use ws::serve_ws;

/// How long a client has to open every stream it asked for (the kubelet's value).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the output pumps may take to drain after the command ended.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Chunks of output a session buffers between the provider and the connection (both streams).
pub const OUTPUT_QUEUE: usize = 32;
/// How long the client gets to close the connection after everything was written.
pub const LINGER: Duration = Duration::from_secs(5);

/// The provider call (exec or attach) that a session drives; it gets the streams and returns the
/// exit code once the command ended.
pub type Runner = Box<dyn FnOnce(ExecIo) -> BoxFuture<'static, Result<i32, ProviderError>> + Send>;

/// The streams a request asked for: query parameters `input`, `output`, `error`, `tty` (`1`/`true`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionsError {
    #[error("you must specify at least 1 of stdin, stdout, stderr")]
    NoStreams,
    #[error("you must specify a command")]
    NoCommand,
}

fn truthy(v: &str) -> bool {
    v == "1" || v.eq_ignore_ascii_case("true")
}

impl StreamOptions {
    /// Read the options from decoded query pairs. With a TTY stderr is merged into stdout, so a
    /// stderr request is dropped, as the kubelet does.
    pub fn from_query(pairs: &[(String, String)]) -> Result<Self, OptionsError> {
        let flag = |names: &[&str]| {
            pairs
                .iter()
                .any(|(k, v)| names.contains(&k.as_str()) && truthy(v))
        };
        let tty = flag(&["tty"]);
        let opts = Self {
            stdin: flag(&["input", "stdin"]),
            stdout: flag(&["output", "stdout"]),
            stderr: flag(&["error", "stderr"]) && !tty,
            tty,
        };
        if !opts.stdin && !opts.stdout && !opts.stderr {
            return Err(OptionsError::NoStreams);
        }
        Ok(opts)
    }
}

/// The `command` query values of an exec request, in order.
pub fn command_from_query(pairs: &[(String, String)]) -> Result<Vec<String>, OptionsError> {
    let command: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if command.is_empty() {
        return Err(OptionsError::NoCommand);
    }
    Ok(command)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_from_query() {
        let opts =
            StreamOptions::from_query(&q(&[("input", "1"), ("output", "1"), ("error", "true")]))
                .unwrap();
        assert_eq!(
            opts,
            StreamOptions {
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false
            }
        );
        let tty = StreamOptions::from_query(&q(&[("output", "1"), ("error", "1"), ("tty", "1")]))
            .unwrap();
        assert_eq!(
            tty,
            StreamOptions {
                stdin: false,
                stdout: true,
                stderr: false,
                tty: true
            }
        );
        assert_eq!(
            StreamOptions::from_query(&q(&[("tty", "1")])),
            Err(OptionsError::NoStreams)
        );
        assert_eq!(
            StreamOptions::from_query(&q(&[("output", "0")])),
            Err(OptionsError::NoStreams)
        );
    }

    #[test]
    fn command_keeps_order() {
        let pairs = q(&[
            ("command", "sh"),
            ("output", "1"),
            ("command", "-c"),
            ("command", "echo a; b"),
        ]);
        assert_eq!(
            command_from_query(&pairs).unwrap(),
            vec!["sh", "-c", "echo a; b"]
        );
        assert_eq!(
            command_from_query(&q(&[("output", "1")])),
            Err(OptionsError::NoCommand)
        );
    }
}
