//! Small helpers over `serde_json::Value` objects: metadata accessors, timestamps, uids, and the
//! "did anything outside metadata/status change" test that drives `metadata.generation`.

use serde_json::{Map, Value};

/// RFC 3339 second-precision UTC timestamp, as Kubernetes `metav1.Time` serialises.
pub fn now() -> String {
    ts(jiff::Timestamp::now())
}

pub fn ts(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `now + secs`, formatted like [`now`].
pub fn now_plus(secs: i64) -> String {
    let t = jiff::Timestamp::now();
    ts(t.checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap_or(t))
}

/// Parses a Kubernetes timestamp (Time or MicroTime).
pub fn parse_ts(s: &str) -> Option<jiff::Timestamp> {
    s.parse().ok()
}

/// A random RFC 4122 version-4 UUID string.
pub fn uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

pub fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    Some(cur)
}

pub fn name(v: &Value) -> &str {
    str_at(v, &["metadata", "name"]).unwrap_or("")
}

pub fn namespace(v: &Value) -> &str {
    str_at(v, &["metadata", "namespace"]).unwrap_or("")
}

pub fn uid_of(v: &Value) -> &str {
    str_at(v, &["metadata", "uid"]).unwrap_or("")
}

/// Mutable `metadata` map, created if missing.
pub fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    obj_mut(v, "metadata")
}

/// Mutable child map `key` of `v`, created (replacing a non-object) if missing.
pub fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    let m = match v {
        Value::Object(m) => m,
        _ => unreachable_map(),
    };
    let e = m
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !e.is_object() {
        *e = Value::Object(Map::new());
    }
    match e {
        Value::Object(m) => m,
        _ => unreachable_map(),
    }
}

fn unreachable_map() -> ! {
    unreachable!("value was just made an object")
}

pub fn finalizers(v: &Value) -> Vec<String> {
    at(v, &["metadata", "finalizers"])
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub fn labels(v: &Value) -> Map<String, Value> {
    at(v, &["metadata", "labels"])
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Whether anything outside `metadata` and `status` differs — the rule for bumping `generation`.
pub fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Map<String, Value> {
        let mut m = v.as_object().cloned().unwrap_or_default();
        for k in ["metadata", "status", "kind", "apiVersion"] {
            m.remove(k);
        }
        m
    };
    strip(old) != strip(new)
}

/// Whether a write changes nothing at all, `managedFields` included: kube-apiserver compares the
/// encoded objects, so a write that only changes who manages what (a first server-side apply of the
/// same values by a new manager) is stored, with a new resourceVersion.
pub fn unchanged(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut c = v.clone();
        if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        c
    };
    strip(old) == strip(new)
}

/// Whether two objects differ ignoring `resourceVersion` and `managedFields` (a no-op update).
pub fn same_content(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut c = v.clone();
        if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        c
    };
    strip(old) == strip(new)
}
