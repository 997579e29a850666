//! What the error stream carries when a command ends. v4 and later: a `metav1.Status` JSON, whose
//! `NonZeroExitCode` reason and `ExitCode` cause kubectl turns into its own exit code. v1-v3: the
//! error message as plain text, and nothing on success.

use serde_json::{Value, json};

use crate::provider::ProviderError;

/// The Status JSON for the outcome of a command.
pub fn status_json(outcome: &Result<i32, ProviderError>) -> Value {
    match outcome {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(e) => {
            let message = format!("error executing command in container: {e}");
            json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("Internal error occurred: {message}"),
                "reason": "InternalError",
                "details": {"causes": [{"message": message}]},
                "code": 500,
            })
        }
    }
}

/// Bytes to write on the error stream before closing it, if any.
pub fn error_payload(status_errors: bool, outcome: &Result<i32, ProviderError>) -> Option<Vec<u8>> {
    if status_errors {
        return serde_json::to_vec(&status_json(outcome)).ok();
    }
    let status = status_json(outcome);
    status
        .get("message")
        .and_then(Value::as_str)
        .map(|m| m.as_bytes().to_vec())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn success_status() {
        let bytes = error_payload(true, &Ok(0)).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"metadata":{},"status":"Success"}"#
        );
        assert_eq!(error_payload(false, &Ok(0)), None);
    }

    #[test]
    fn non_zero_exit_code_status() {
        let v: Value = serde_json::from_slice(&error_payload(true, &Ok(7)).unwrap()).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "7");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .starts_with("command terminated with non-zero exit code")
        );
        let text = String::from_utf8(error_payload(false, &Ok(7)).unwrap()).unwrap();
        assert!(text.contains("non-zero exit code"));
    }

    #[test]
    fn provider_error_status() {
        let outcome = Err(ProviderError::Unavailable("host down".into()));
        let v = status_json(&outcome);
        assert_eq!(v["reason"], "InternalError");
        assert_eq!(v["code"], 500);
        assert!(v["message"].as_str().unwrap().contains("host down"));
        let text = String::from_utf8(error_payload(false, &outcome).unwrap()).unwrap();
        assert!(text.contains("host down"));
    }
}
