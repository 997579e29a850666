//! Shell quoting for everything a pod puts on a remote command line: argv elements, env names and
//! values, working directories. Every value is quoted with shlex (POSIX `sh` rules); NUL bytes cannot be
//! passed through a shell at all and are refused, as are env names a shell or `env` would misread.

use std::fmt::Write as _;

/// Why a value cannot be put on a remote command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error("{what} contains a NUL byte, which cannot be passed to a process")]
    Nul { what: String },
    #[error("invalid environment variable name {name:?}")]
    EnvName { name: String },
}

/// `s` as one shell word (`''` for the empty string).
///
/// # Errors
/// [`QuoteError::Nul`] when `s` contains a NUL byte.
pub fn quote(s: &str, what: &str) -> Result<String, QuoteError> {
    shlex::try_quote(s)
        .map(|q| q.into_owned())
        .map_err(|_| QuoteError::Nul { what: what.into() })
}

/// Every element of `argv` quoted and joined with spaces.
///
/// # Errors
/// [`QuoteError::Nul`] naming the first element that contains a NUL byte.
pub fn join(argv: &[String], what: &str) -> Result<String, QuoteError> {
    let mut out = String::new();
    for (i, a) in argv.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&quote(a, &format!("{what}[{i}]"))?);
    }
    Ok(out)
}

/// Whether `name` can be handed to `env NAME=value` unambiguously: the Kubernetes rules
/// (letters, digits, `_`, `-`, `.`, not starting with a digit) minus a leading `-` (an `env` option).
pub fn valid_env_name(name: &str) -> bool {
    vk_runtime::pod::env::is_env_var_name(name) && !name.starts_with('-')
}

/// `NAME=value` pairs quoted for `env`, separated by spaces (empty for no pairs).
///
/// # Errors
/// [`QuoteError::EnvName`] for an invalid name, [`QuoteError::Nul`] for a value with a NUL byte.
pub fn env_assignments(env: &[(String, String)]) -> Result<String, QuoteError> {
    let mut out = String::new();
    for (name, value) in env {
        if !valid_env_name(name) {
            return Err(QuoteError::EnvName { name: name.clone() });
        }
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{}", quote(&format!("{name}={value}"), name)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_nul_and_bad_names() {
        assert!(matches!(quote("a\0b", "x"), Err(QuoteError::Nul { .. })));
        assert!(join(&["ok".into(), "b\0".into()], "command").is_err());
        for bad in ["", "1A", "-x", "A=B", "A B", "..", "ä"] {
            assert!(
                env_assignments(&[(bad.into(), "v".into())]).is_err(),
                "{bad:?} accepted"
            );
        }
        assert!(env_assignments(&[("A.b-c_1".into(), "v".into())]).is_ok());
    }

    #[test]
    fn quotes_what_needs_it() {
        assert_eq!(quote("", "x").unwrap(), "''");
        assert_eq!(quote("plain", "x").unwrap(), "plain");
        let q = quote("a b'c", "x").unwrap();
        assert!(q != "a b'c");
    }
}
