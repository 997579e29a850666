//! JSON merge patch (RFC 7386): maps merge recursively, `null` deletes, lists are replaced whole.

use serde_json::Value;

use crate::errors::ApiError;

pub fn apply(target: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut doc = target.clone();
    json_patch::merge(&mut doc, &patch);
    Ok(doc)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    #[test]
    fn replaces_lists_and_deletes_nulls() {
        let t = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        let out = super::apply(&t, br#"{"a": {"b": null, "d": 3}, "l": [3]}"#).unwrap();
        assert_eq!(out, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }
}
