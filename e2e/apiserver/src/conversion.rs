//! Resources that are another group's view of the same stored objects, as kube-apiserver serves them.
//!
//! `events.k8s.io/v1` Events are stored as core `v1` Events: an Event created through either API is listed,
//! watched and patched through both (`kubectl get events` shows what `events.k8s.io` clients wrote). The field
//! mapping follows kube-apiserver's conversion (pkg/apis/events/v1): `regarding` <-> `involvedObject`,
//! `note` <-> `message`, `reportingController` <-> `reportingComponent`, `deprecatedSource` <-> `source`,
//! `deprecatedFirstTimestamp`/`deprecatedLastTimestamp`/`deprecatedCount` <-> `firstTimestamp`/`lastTimestamp`/
//! `count`; every other field has the same name in both.

use serde_json::{Map, Value};

/// How a resource served under one name is stored under another.
#[derive(Debug, Clone, Copy)]
pub struct StorageAlias {
    /// The storage key of the resource holding the objects (see `ResourceDef::key`).
    pub key: &'static str,
    /// The served shape -> the stored shape.
    pub to_storage: fn(Value) -> Value,
    /// The stored shape -> the served shape.
    pub from_storage: fn(Value) -> Value,
}

/// `events.k8s.io` Events, stored as core Events.
pub const EVENTS_V1: StorageAlias = StorageAlias {
    key: "events",
    to_storage: event_to_core,
    from_storage: event_from_core,
};

/// `(events.k8s.io field, core field)` pairs that differ in name.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(obj: Value, pairs: impl Iterator<Item = (&'static str, &'static str)>) -> Value {
    let Value::Object(mut m) = obj else {
        return obj;
    };
    let moved: Vec<(&str, Option<Value>)> = pairs.map(|(from, to)| (to, m.remove(from))).collect();
    let mut out = Map::new();
    for (to, v) in moved {
        if let Some(v) = v {
            out.insert(to.to_string(), v);
        }
    }
    m.extend(out);
    Value::Object(m)
}

fn event_to_core(obj: Value) -> Value {
    let mut v = rename(obj, EVENT_FIELDS.iter().copied());
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), "v1".into());
    }
    v
}

fn event_from_core(obj: Value) -> Value {
    let mut v = rename(obj, EVENT_FIELDS.iter().map(|(a, b)| (*b, *a)));
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), "events.k8s.io/v1".into());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_round_trip_both_ways() {
        let v1 = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "regarding": {"kind": "VirtualNode", "name": "edge-0"},
            "note": "DeviceBackend \"x\" does not exist", "reason": "BackendNotFound",
            "reportingController": "fleetlet", "reportingInstance": "fleetlet-0",
            "series": {"count": 2, "lastObservedTime": "2026-01-01T00:00:00.000000Z"},
            "type": "Warning", "action": "Reconcile",
        });
        let core = event_to_core(v1.clone());
        assert_eq!(core["involvedObject"]["name"], "edge-0");
        assert_eq!(core["message"], v1["note"]);
        assert_eq!(core["reportingComponent"], "fleetlet");
        assert_eq!(core["series"]["count"], 2);
        assert!(core.get("regarding").is_none() && core.get("note").is_none());
        assert_eq!(event_from_core(core), v1);
        let core = json!({"apiVersion": "v1", "kind": "Event", "count": 3, "source": {"component": "kubelet"}});
        let v1 = event_from_core(core.clone());
        assert_eq!(v1["deprecatedCount"], 3);
        assert_eq!(v1["deprecatedSource"]["component"], "kubelet");
        assert_eq!(event_to_core(v1), core);
    }
}
