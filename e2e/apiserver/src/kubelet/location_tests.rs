#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;

fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pod(containers: &[&str], node: &str) -> Value {
    let cs: Vec<Value> = containers.iter().map(|c| json!({"name": c})).collect();
    json!({"metadata": {"name": "web", "namespace": "ns1"},
           "spec": {"nodeName": node, "containers": cs, "initContainers": [{"name": "init"}]}})
}

#[test]
fn log_location_keeps_every_option() {
    let p = pod(&["app"], "n1");
    let (node, target) = pod_location(
        PodAction::Log,
        &p,
        &q(&[
            ("container", "app"),
            ("follow", "true"),
            ("previous", "true"),
            ("timestamps", "true"),
            ("tailLines", "2"),
            ("limitBytes", "10"),
            ("sinceSeconds", "5"),
        ]),
    )
    .unwrap()
    .unwrap();
    assert_eq!(node, "n1");
    assert_eq!(
        target,
        "/containerLogs/ns1/web/app?follow=true&limitBytes=10&previous=true&sinceSeconds=5&tailLines=2&timestamps=true"
    );
    let (_, target) = pod_location(
        PodAction::Log,
        &p,
        &q(&[
            ("sinceTime", "2024-05-01T10:00:00.5+02:00"),
            ("follow", "false"),
        ]),
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        target,
        "/containerLogs/ns1/web/app?sinceTime=2024-05-01T08%3A00%3A00Z"
    );
}

#[test]
fn log_options_are_validated() {
    let p = pod(&["app"], "n1");
    let err = |pairs: &[(&str, &str)]| pod_location(PodAction::Log, &p, &q(pairs)).unwrap_err();
    let e = err(&[("sinceSeconds", "5"), ("sinceTime", "2024-05-01T10:00:00Z")]);
    assert_eq!((e.code, e.reason), (422, "Invalid"));
    assert_eq!(err(&[("tailLines", "-1")]).code, 422);
    assert_eq!(err(&[("limitBytes", "0")]).code, 422);
    assert_eq!(err(&[("tailLines", "x")]).code, 400);
    assert!(
        pod_location(PodAction::Log, &pod(&["app"], ""), &[])
            .unwrap()
            .is_none()
    );
}

#[test]
fn container_is_chosen_like_kube_apiserver() {
    assert_eq!(container(&pod(&["a"], "n"), None).unwrap(), "a");
    let e = container(&pod(&["a", "b"], "n"), None).unwrap_err();
    assert_eq!(
        e.message,
        "a container name must be specified for pod web, choose one of: [a b init]"
    );
    let e = container(&pod(&["a"], "n"), Some("zz")).unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (400, "container zz is not valid for pod web")
    );
    assert_eq!(container(&pod(&["a"], "n"), Some("init")).unwrap(), "init");
}

#[test]
fn exec_attach_and_port_forward_params() {
    let p = pod(&["app"], "n1");
    let (_, t) = pod_location(
        PodAction::Exec,
        &p,
        &q(&[
            ("command", "sh"),
            ("command", "-c"),
            ("command", "echo a b"),
            ("stdin", "true"),
            ("stdout", "true"),
            ("stderr", "true"),
            ("tty", "false"),
        ]),
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        t,
        "/exec/ns1/web/app?command=sh&command=-c&command=echo+a+b&error=1&input=1&output=1"
    );
    let (_, t) = pod_location(
        PodAction::Attach,
        &p,
        &q(&[("command", "x"), ("stdout", "1"), ("tty", "true")]),
    )
    .unwrap()
    .unwrap();
    assert_eq!(t, "/attach/ns1/web/app?output=1&tty=1");
    let (_, t) = pod_location(
        PodAction::PortForward,
        &p,
        &q(&[("ports", "80"), ("ports", "8080")]),
    )
    .unwrap()
    .unwrap();
    assert_eq!(t, "/portForward/ns1/web?port=80%2C8080");
    let (_, t) = pod_location(PodAction::PortForward, &p, &[])
        .unwrap()
        .unwrap();
    assert_eq!(t, "/portForward/ns1/web");
    let e = pod_location(PodAction::Exec, &pod(&["app"], ""), &[]).unwrap_err();
    assert_eq!(e.message, "pod web does not have a host assigned");
}

#[test]
fn node_endpoints() {
    let node = json!({"status": {
        "addresses": [{"type": "Hostname", "address": "edge"}, {"type": "InternalIP", "address": "10.0.0.7"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 20001}}}});
    assert_eq!(
        node_endpoint(&node).unwrap(),
        Endpoint {
            host: "10.0.0.7".into(),
            port: 20001
        }
    );
    let bare = json!({"status": {"addresses": [{"type": "Hostname", "address": "edge"}]}});
    assert_eq!(
        node_endpoint(&bare).unwrap(),
        Endpoint {
            host: "edge".into(),
            port: DEFAULT_KUBELET_PORT
        }
    );
    let e = node_endpoint(&json!({"status": {}})).unwrap_err();
    assert_eq!(
        e.message,
        "no preferred addresses found; known addresses: []"
    );
}
