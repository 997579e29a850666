//! JSON patch (RFC 6902): a list of add/remove/replace/move/copy/test operations.
//!
//! One deliberate deviation from the RFC, matching kube-apiserver (evanphx/json-patch): a `test` of a
//! missing path against `null` succeeds. Controllers rely on it (kube-runtime adds the first finalizer
//! with `test /metadata/finalizers == null` then `add`).

use serde_json::Value;

use crate::errors::ApiError;

pub fn apply(target: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let mut ops: Vec<Value> = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut doc = target.clone();
    // Drop `test null` ops whose path does not exist (they pass on the real server), keeping order.
    ops.retain(|op| {
        let is_null_test = op.get("op").and_then(Value::as_str) == Some("test")
            && op.get("value").is_some_and(Value::is_null);
        let path = op.get("path").and_then(Value::as_str).unwrap_or("");
        !(is_null_test && doc.pointer(path).is_none())
    });
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops))
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    json_patch::patch(&mut doc, &patch).map_err(|e| {
        ApiError::new(
            422,
            "Invalid",
            format!("the server rejected our request due to an error in our request: {e}"),
        )
    })?;
    Ok(doc)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    #[test]
    fn ops_and_failed_test() {
        let t = json!({"metadata": {"finalizers": ["a", "b"]}});
        let out = super::apply(&t, br#"[{"op":"test","path":"/metadata/finalizers/0","value":"a"},{"op":"remove","path":"/metadata/finalizers/0"}]"#).unwrap();
        assert_eq!(out, json!({"metadata": {"finalizers": ["b"]}}));
        let err = super::apply(
            &t,
            br#"[{"op":"test","path":"/metadata/finalizers/0","value":"z"}]"#,
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
    }

    #[test]
    fn test_null_on_missing_path_passes_like_the_real_apiserver() {
        let t = json!({"metadata": {"name": "x"}});
        let out = super::apply(&t, br#"[{"op":"test","path":"/metadata/finalizers","value":null},{"op":"add","path":"/metadata/finalizers","value":["f"]}]"#).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["f"]));
        let present = json!({"metadata": {"finalizers": ["g"]}});
        assert!(
            super::apply(
                &present,
                br#"[{"op":"test","path":"/metadata/finalizers","value":null}]"#
            )
            .is_err()
        );
    }
}
