//! JSON patch (RFC 6902): a list of add/remove/replace/move/copy/test operations.

use serde_json::Value;

use crate::errors::ApiError;

pub fn apply(target: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let patch: json_patch::Patch = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut doc = target.clone();
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
}
