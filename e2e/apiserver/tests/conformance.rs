//! Replays the recorded kube-apiserver scenarios (transcripts/*.json) against the test apiserver
//! and compares what matters: status codes, Status reason/code/details, which fields are set or
//! ignored, conditions merged vs replaced, watch event types and order — not uids, timestamps or
//! resourceVersion values (recorded uids/resourceVersions/continue tokens are mapped to ours).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use fleetlet_test_apiserver::TestApiServer;
use serde_json::{Value, json};

fn load(name: &str) -> Value {
    let path = format!("{}/transcripts/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The parts of a response that must match the real apiserver.
fn essence(v: &Value, recorded: &Value) -> Value {
    let kind = v["kind"].as_str().unwrap_or("");
    if kind == "Status" {
        let d = &v["details"];
        let causes: Vec<Value> = d["causes"]
            .as_array()
            .map(|c| c.iter().map(|c| json!([c["field"], c["reason"]])).collect())
            .unwrap_or_default();
        let message = if v["reason"] == "Invalid" {
            Value::Null
        } else {
            v["message"].clone()
        };
        return json!({"status": v["status"], "reason": v["reason"], "code": v["code"], "message": message,
            "details": {"name": d["name"], "group": d["group"], "kind": d["kind"], "causes": causes}});
    }
    if kind == "APIResourceList" {
        let mut names: Vec<Value> = v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                json!([
                    r["name"],
                    r["namespaced"],
                    r["kind"],
                    r["shortNames"],
                    r["categories"]
                ])
            })
            .collect();
        names.sort_by_key(|n| n.to_string());
        return json!({"groupVersion": v["groupVersion"], "resources": names});
    }
    if kind.ends_with("List") {
        let names: Vec<Value> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].clone())
            .collect();
        return json!({"kind": kind, "items": names, "continue": v["metadata"]["continue"].is_string()});
    }
    let m = &v["metadata"];
    let conds: Vec<Value> = v["status"]["conditions"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| json!([c["type"], c["status"], c["reason"]]))
                .collect()
        })
        .unwrap_or_default();
    let generation = if recorded["metadata"]["generation"].is_null() {
        Value::Null
    } else {
        m["generation"].clone()
    };
    let spec = if v["apiVersion"]
        .as_str()
        .unwrap_or("")
        .contains("example.dev")
    {
        v["spec"].clone()
    } else {
        Value::Null
    };
    json!({
        "kind": kind, "apiVersion": v["apiVersion"], "name": m["name"], "namespace": m["namespace"],
        "labels": m["labels"], "finalizers": m["finalizers"], "generation": generation,
        "deleting": m["deletionTimestamp"].is_string(), "grace": m["deletionGracePeriodSeconds"],
        "nodeName": v["spec"]["nodeName"], "phase": v["status"]["phase"], "conditions": conds,
        "capacity": v["status"]["capacity"], "data": v["data"], "spec": spec,
        "certificate": v["status"]["certificate"].is_string(), "ready": v["status"]["ready"],
        "allowed": v["status"]["allowed"], "authenticated": v["status"]["authenticated"], "error": v["status"]["error"],
    })
}

/// Recorded -> actual values of uids, resourceVersions and continue tokens.
#[derive(Default)]
struct Map(HashMap<String, String>);

impl Map {
    fn learn(&mut self, rec: &Value, act: &Value) {
        for p in [
            "/metadata/uid",
            "/metadata/resourceVersion",
            "/metadata/continue",
            "/details/uid",
        ] {
            if let (Some(r), Some(a)) = (
                rec.pointer(p).and_then(Value::as_str),
                act.pointer(p).and_then(Value::as_str),
            ) {
                self.0.insert(r.to_string(), a.to_string());
            }
        }
    }

    /// Puts recorded uids back into an error message (they appear inside its text).
    fn unmap_message(&self, v: &mut Value) {
        if let Some(m) = v.get("message").and_then(Value::as_str) {
            let mut m = m.to_string();
            for (rec, act) in self.0.iter().filter(|(_, a)| a.len() >= 32) {
                m = m.replace(act.as_str(), rec);
            }
            v["message"] = json!(m);
        }
    }

    fn body(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => json!(self.0.get(s).cloned().unwrap_or_else(|| s.clone())),
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), self.body(v))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(|v| self.body(v)).collect()),
            other => other.clone(),
        }
    }

    fn path(&self, p: &str) -> String {
        let Some((base, q)) = p.split_once('?') else {
            return p.to_string();
        };
        let q: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => format!(
                    "{k}={}",
                    self.0.get(v).cloned().unwrap_or_else(|| v.to_string())
                ),
                None => kv.to_string(),
            })
            .collect();
        format!("{base}?{}", q.join("&"))
    }
}

/// Replays `exchanges` (by index), watches last, and compares.
async fn replay(s: &TestApiServer, file: &str, skip: &[usize]) {
    let t = load(file);
    let base = common::Api::of(s);
    let mut map = Map::default();
    let mut watches = Vec::new();
    for (i, ex) in t["exchanges"].as_array().unwrap().iter().enumerate() {
        if skip.contains(&i) {
            continue;
        }
        let (req, rec) = (&ex["request"], &ex["response"]);
        if rec.get("events").is_some() {
            watches.push(ex.clone());
            continue;
        }
        let method = req["method"].as_str().unwrap();
        let ct = req["contentType"].as_str();
        let body = match &req["body"] {
            Value::Null => None,
            Value::String(s) => Some(s.clone().into_bytes()),
            b => Some(serde_json::to_vec(&map.body(b)).unwrap()),
        };
        let path = map.path(req["path"].as_str().unwrap());
        let want = (
            rec["status"].as_u64().unwrap() as u16,
            essence(&rec["body"], &rec["body"]),
        );
        let mut got = common::call(&base, method, &path, ct, body.clone()).await;
        if method == "POST"
            && matches!(
                rec["body"]["kind"].as_str(),
                Some("CertificateSigningRequest" | "CustomResourceDefinition")
            )
        {
            // Create responses: the real CRD gets its conditions asynchronously (this server sets
            // them at once), and the recorded CSR create response carries conditions that were
            // only added later by /approval (a recording artefact: create resets CSR status).
            got.1["status"]["conditions"] = rec["body"]["status"]["conditions"].clone();
        }
        if method == "GET" {
            // Controllers act asynchronously: give a GET a bounded time to reach the recorded state.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while (got.0, essence(&got.1, &rec["body"])) != want
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
                got = common::call(&base, method, &path, ct, None).await;
            }
        }
        map.unmap_message(&mut got.1);
        assert_eq!(
            (got.0, essence(&got.1, &rec["body"])),
            want,
            "{file} #{i} {:?}: {method} {path}\n{}",
            ex["note"],
            got.1
        );
        map.learn(&rec["body"], &got.1);
    }
    for ex in watches {
        let path = map.path(ex["request"]["path"].as_str().unwrap());
        let want: Vec<Value> = ex["response"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].clone())
            .collect();
        let (code, mut w) = common::watch(&base, &path).await;
        assert_eq!(code, 200, "{file} watch {path}");
        let got: Vec<Value> = w
            .collect(want.len() + 1, Duration::from_secs(4))
            .await
            .iter()
            .map(|e| e["type"].clone())
            .collect();
        assert_eq!(got, want, "{file} watch {path}");
    }
}

#[tokio::test]
async fn errors() {
    let s = TestApiServer::start().await;
    // #5: anonymous access is forbidden on a real cluster; this server serves unauthenticated
    // requests as the admin user, so there is no anonymous identity to replay.
    replay(&s, "errors.json", &[5]).await;
}

#[tokio::test]
async fn node_lease() {
    let s = TestApiServer::start().await;
    replay(&s, "node-lease.json", &[]).await;
}

#[tokio::test]
async fn pod_lifecycle() {
    let s = TestApiServer::start().await;
    replay(&s, "pod-lifecycle.json", &[]).await;
}

#[tokio::test]
async fn crd_finalizer_events() {
    let s = TestApiServer::start().await;
    replay(&s, "crd-finalizer-events.json", &[]).await;
}

#[tokio::test]
async fn csr() {
    let s = TestApiServer::start().await;
    replay(&s, "csr.json", &[6]).await;
    // The recording approved rec-bad (reason "Test") without recording the request; do it here.
    let (_, csr) = common::get(
        &common::Api::of(&s),
        "/apis/certificates.k8s.io/v1/certificatesigningrequests/rec-bad",
    )
    .await;
    let mut approved = csr.clone();
    approved["status"]["conditions"] =
        json!([{"type": "Approved", "status": "True", "reason": "Test", "message": ""}]);
    let (code, _) = common::send_json(
        &common::Api::of(&s),
        "PUT",
        "/apis/certificates.k8s.io/v1/certificatesigningrequests/rec-bad/approval",
        "application/json",
        &approved,
    )
    .await;
    assert_eq!(code, 200);
    replay(&s, "csr.json", &[0, 1, 2, 3, 4, 5]).await;
}

#[tokio::test]
async fn node_identity_reviews() {
    let s = TestApiServer::start().await;
    // Everything but the TokenReview and SubjectAccessReview is made as `system:node:rec-node` and
    // shows NodeRestriction/Node authorization, which this server deliberately lacks (it has no
    // authorization besides the pluggable SAR answer). The reviews' answers do not depend on the caller.
    let t = load("node-identity.json");
    let n = t["exchanges"].as_array().unwrap().len();
    replay(&s, "node-identity.json", &(0..n - 2).collect::<Vec<_>>()).await;
}

#[tokio::test]
async fn kubelet_proxy_errors() {
    let s = TestApiServer::start_with(fleetlet_test_apiserver::Options {
        scheduler: false,
        ..Default::default()
    })
    .await;
    // The recording's node advertises 127.0.0.1:1, where nothing listens; its pod runs there.
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "rec-node"}});
    let (code, _) = common::send_json(
        &common::Api::of(&s),
        "POST",
        "/api/v1/nodes",
        "application/json",
        &node,
    )
    .await;
    assert_eq!(code, 201);
    let status = json!({"status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 1}}}});
    let (code, _) = common::send_json(
        &common::Api::of(&s),
        "PATCH",
        "/api/v1/nodes/rec-node/status",
        "application/merge-patch+json",
        &status,
    )
    .await;
    assert_eq!(code, 200);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "rec-pod2"},
        "spec": {"nodeName": "rec-node", "containers": [{"name": "main", "image": "busybox"}]}});
    let (code, _) = common::send_json(
        &common::Api::of(&s),
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        &pod,
    )
    .await;
    assert_eq!(code, 201);
    replay(&s, "kubelet-proxy-errors.json", &[]).await;
}

#[tokio::test]
async fn pagination_watch_timeout() {
    let s = TestApiServer::start().await;
    // The recording omits creating its three ConfigMaps; create them as the recorded list shows.
    for i in 0..3 {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("page-{i}"), "labels": {"rec": "page"}}});
        let (code, _) = common::send_json(
            &common::Api::of(&s),
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            &cm,
        )
        .await;
        assert_eq!(code, 201);
    }
    replay(&s, "pagination-watch-timeout.json", &[]).await;
    // The timed watch ends by itself, cleanly.
    let rv = common::get(
        &common::Api::of(&s),
        "/api/v1/namespaces/default/configmaps",
    )
    .await
    .1["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let started = std::time::Instant::now();
    let (_, mut w) = common::watch(
        &common::Api::of(&s),
        &format!(
            "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=1"
        ),
    )
    .await;
    assert!(w.collect(1, Duration::from_secs(5)).await.is_empty());
    assert!(w.ended && started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn watch_expired() {
    let s = TestApiServer::start_with(fleetlet_test_apiserver::Options {
        watch_history: 5,
        ..Default::default()
    })
    .await;
    let base = common::Api::of(&s);
    // #0's setup is not recorded: a ConfigMap modified three times, watched from before the changes.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "old"}, "data": {"i": "x"}});
    let (_, created) = common::send_json(
        &base,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        &cm,
    )
    .await;
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..3 {
        let p = json!({"data": {"i": i.to_string()}});
        common::send_json(
            &base,
            "PATCH",
            "/api/v1/namespaces/default/configmaps/old",
            "application/merge-patch+json",
            &p,
        )
        .await;
    }
    let (_, mut w) = common::watch(
        &base,
        &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"),
    )
    .await;
    let types: Vec<Value> = w
        .collect(3, Duration::from_secs(3))
        .await
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    let recorded: Vec<Value> = load("watch-expired.json")["exchanges"][0]["response"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    assert_eq!(types, recorded);
    replay(&s, "watch-expired.json", &[0]).await;
    // Past the kept history: the watch answers an ERROR event with a 410 Expired Status.
    for i in 0..10 {
        let p = json!({"data": {"i": format!("more-{i}")}});
        common::send_json(
            &base,
            "PATCH",
            "/api/v1/namespaces/default/configmaps/old",
            "application/merge-patch+json",
            &p,
        )
        .await;
    }
    let (_, mut w) = common::watch(
        &base,
        &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"),
    )
    .await;
    let ev = w.next(Duration::from_secs(3)).await.unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(
        (
            ev["object"]["code"].as_u64(),
            ev["object"]["reason"].as_str()
        ),
        (Some(410), Some("Expired"))
    );
}

#[tokio::test]
async fn discovery() {
    let s = TestApiServer::start().await;
    let t = load("discovery.json");
    for ex in t["exchanges"].as_array().unwrap() {
        let path = ex["request"]["path"].as_str().unwrap();
        let rec = &ex["response"]["body"];
        let (code, got) = common::get(&common::Api::of(&s), path).await;
        assert_eq!(code, 200, "{path}");
        match rec["kind"].as_str() {
            Some("APIResourceList") => {
                // Every resource served here must look as the real one does (the real server serves more).
                let real: HashMap<String, &Value> = rec["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| (r["name"].as_str().unwrap().to_string(), r))
                    .collect();
                assert_eq!(got["groupVersion"], rec["groupVersion"]);
                for r in got["resources"].as_array().unwrap() {
                    let name = r["name"].as_str().unwrap();
                    let want = real
                        .get(name)
                        .unwrap_or_else(|| panic!("{path}: {name} not served by kube-apiserver"));
                    let mut wv: Vec<_> = want["verbs"]
                        .as_array()
                        .unwrap()
                        .clone()
                        .into_iter()
                        .map(|v| v.to_string())
                        .collect();
                    let mut gv: Vec<_> = r["verbs"]
                        .as_array()
                        .unwrap()
                        .clone()
                        .into_iter()
                        .map(|v| v.to_string())
                        .collect();
                    wv.sort();
                    gv.sort();
                    assert_eq!(
                        (&r["namespaced"], &r["kind"], gv, &r["shortNames"]),
                        (&want["namespaced"], &want["kind"], wv, &want["shortNames"]),
                        "{path} {name}"
                    );
                }
            }
            Some("APIGroupList") => {
                for g in got["groups"].as_array().unwrap() {
                    let want = rec["groups"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|x| x["name"] == g["name"])
                        .unwrap();
                    assert_eq!(
                        g["preferredVersion"], want["preferredVersion"],
                        "{}",
                        g["name"]
                    );
                }
            }
            Some("APIVersions") => assert_eq!(got["versions"], rec["versions"]),
            _ => assert!(got["gitVersion"].is_string(), "{path}"),
        }
    }
}
