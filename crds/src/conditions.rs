//! Conditions as a list-map keyed by `type`, and the one rule for updating them: `lastTransitionTime`
//! moves only when `status` changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::Schema;

/// Schema for `status.conditions`: a list-map keyed by `type`, so server-side apply and strategic merge
/// treat each condition as its own entry.
pub fn conditions_schema(_: &mut schemars::SchemaGenerator) -> Schema {
    let value = serde_json::json!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["type", "status", "lastTransitionTime", "reason", "message"],
            "properties": {
                "type": {"type": "string", "maxLength": 316},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                "reason": {"type": "string", "maxLength": 1024},
                "message": {"type": "string", "maxLength": 32768},
                "lastTransitionTime": {"type": "string", "format": "date-time"},
                "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0}
            }
        }
    });
    Schema::try_from(value).unwrap_or_default()
}

/// A wanted condition, before it is merged with what was there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted<'a> {
    pub type_: &'a str,
    pub status: bool,
    pub reason: &'a str,
    pub message: String,
}

impl<'a> Wanted<'a> {
    pub fn new(type_: &'a str, status: bool, reason: &'a str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// `"True"` / `"False"`.
pub fn status_str(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// Merge `wanted` into `current`: an existing condition of that type keeps its `lastTransitionTime` unless
/// its status changes. Returns whether anything changed.
pub fn set_condition(
    current: &mut Vec<Condition>,
    wanted: Wanted<'_>,
    generation: Option<i64>,
    now: &Time,
) -> bool {
    let status = status_str(wanted.status);
    match current.iter_mut().find(|c| c.type_ == wanted.type_) {
        Some(c) => {
            let mut changed = false;
            if c.status != status {
                c.status = status.to_string();
                c.last_transition_time = now.clone();
                changed = true;
            }
            if c.reason != wanted.reason {
                c.reason = wanted.reason.to_string();
                changed = true;
            }
            if c.message != wanted.message {
                c.message = wanted.message;
                changed = true;
            }
            if c.observed_generation != generation {
                c.observed_generation = generation;
                changed = true;
            }
            changed
        }
        None => {
            current.push(Condition {
                type_: wanted.type_.to_string(),
                status: status.to_string(),
                reason: wanted.reason.to_string(),
                message: wanted.message,
                last_transition_time: now.clone(),
                observed_generation: generation,
            });
            true
        }
    }
}

/// The condition of the given type, if present.
pub fn find<'c>(conditions: &'c [Condition], type_: &str) -> Option<&'c Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of the given type is present and True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).expect("valid"))
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut c = Vec::new();
        assert!(set_condition(
            &mut c,
            Wanted::new("Ready", true, "Running", "ok"),
            Some(1),
            &t(10)
        ));
        assert!(!set_condition(
            &mut c,
            Wanted::new("Ready", true, "Running", "ok"),
            Some(1),
            &t(20)
        ));
        assert_eq!(c[0].last_transition_time, t(10));
        assert!(set_condition(
            &mut c,
            Wanted::new("Ready", true, "Other", "msg"),
            Some(2),
            &t(30)
        ));
        assert_eq!(
            c[0].last_transition_time,
            t(10),
            "reason change is not a transition"
        );
        assert!(set_condition(
            &mut c,
            Wanted::new("Ready", false, "Down", "msg"),
            Some(2),
            &t(40)
        ));
        assert_eq!(c[0].last_transition_time, t(40));
        assert_eq!(c.len(), 1);
        assert!(!is_true(&c, "Ready"));
    }
}
