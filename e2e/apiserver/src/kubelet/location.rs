//! Where kube-apiserver sends `pods/{log,exec,attach,portforward}` and `nodes/NAME/proxy/...`
//! (kubernetes `pkg/registry/core/pod/strategy.go` LogLocation/streamLocation/PortForwardLocation
//! and the node connection info): the node's preferred address and kubelet port, the kubelet path
//! (`/containerLogs|exec|attach/NS/POD/CONTAINER`, `/portForward/NS/POD`) and the re-encoded query
//! (`stdin/stdout/stderr` become `input/output/error`, `ports` becomes `port`). Pure functions over
//! the stored objects.

use serde_json::Value;

use crate::errors::ApiError;
use crate::meta;

/// The kubelet port when a Node does not publish one.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;

/// Address types tried in order (kube-apiserver `--kubelet-preferred-address-types` as kubeadm
/// sets it).
const PREFERRED_ADDRESS_TYPES: &[&str] = &["InternalIP", "ExternalIP", "Hostname"];

/// A pod subresource served by the kubelet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodAction {
    Log,
    Exec,
    Attach,
    PortForward,
}

impl PodAction {
    pub fn from_subresource(sub: &str) -> Option<PodAction> {
        match sub {
            "log" => Some(PodAction::Log),
            "exec" => Some(PodAction::Exec),
            "attach" => Some(PodAction::Attach),
            "portforward" => Some(PodAction::PortForward),
            _ => None,
        }
    }

    pub fn subresource(self) -> &'static str {
        match self {
            PodAction::Log => "log",
            PodAction::Exec => "exec",
            PodAction::Attach => "attach",
            PodAction::PortForward => "portforward",
        }
    }
}

/// A kubelet endpoint: the node's address and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// The kubelet endpoint a Node advertises.
pub fn node_endpoint(node: &Value) -> Result<Endpoint, ApiError> {
    let addresses: Vec<(&str, &str)> = meta::at(node, &["status", "addresses"])
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| {
                    Some((
                        x.get("type")?.as_str()?,
                        x.get("address")?.as_str().filter(|s| !s.is_empty())?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let host = PREFERRED_ADDRESS_TYPES
        .iter()
        .find_map(|t| addresses.iter().find(|(ty, _)| ty == t).map(|(_, a)| *a))
        .ok_or_else(|| {
            let known: Vec<String> = addresses
                .iter()
                .map(|(t, a)| format!("{{{t} {a}}}"))
                .collect();
            ApiError::internal(format!(
                "no preferred addresses found; known addresses: [{}]",
                known.join(" ")
            ))
        })?;
    let port = meta::at(
        node,
        &["status", "daemonEndpoints", "kubeletEndpoint", "Port"],
    )
    .and_then(Value::as_u64)
    .and_then(|p| u16::try_from(p).ok())
    .filter(|p| *p > 0)
    .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok(Endpoint {
        host: host.to_string(),
        port,
    })
}

/// The values of query parameter `key`, in order.
fn values<'a>(query: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    query
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn first<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    values(query, key).into_iter().next()
}

/// A boolean query parameter as apimachinery converts it: present and not `false`/`0` is true.
fn flag(query: &[(String, String)], key: &str) -> bool {
    first(query, key).is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "false" | "0"))
}

fn int(query: &[(String, String)], key: &str) -> Result<Option<i64>, ApiError> {
    first(query, key)
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("strconv.ParseInt: parsing {v:?}: invalid syntax"))
            })
        })
        .transpose()
}

fn invalid_log_options(pod: &str, field: &str, message: String) -> ApiError {
    ApiError::new(
        422,
        "Invalid",
        format!("PodLogOptions \"{pod}\" is invalid: {field}: {message}"),
    )
}

/// Container names of the pod: containers, init containers, ephemeral containers.
fn container_names(pod: &Value) -> Vec<String> {
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .filter_map(|k| meta::at(pod, &["spec", k]).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
        .collect()
}

/// The container a request means: the named one (which must exist), else the only one.
pub fn container(pod: &Value, wanted: Option<&str>) -> Result<String, ApiError> {
    let name = meta::name(pod);
    let all = container_names(pod);
    match wanted.filter(|w| !w.is_empty()) {
        Some(w) if all.iter().any(|c| c == w) => Ok(w.to_string()),
        Some(w) => Err(ApiError::bad_request(format!(
            "container {w} is not valid for pod {name}"
        ))),
        None => {
            let main: Vec<&Value> = meta::at(pod, &["spec", "containers"])
                .and_then(Value::as_array)
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            match main.as_slice() {
                [only] => Ok(only
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()),
                [] => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}"
                ))),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    all.join(" ")
                ))),
            }
        }
    }
}

/// Encodes pairs in the order given (callers sort keys as Go's `url.Values.Encode` does).
fn encode(pairs: &[(&str, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The kubelet's query for pod logs, validated like kube-apiserver validates PodLogOptions.
fn log_query(pod: &str, query: &[(String, String)]) -> Result<String, ApiError> {
    let since_seconds = int(query, "sinceSeconds")?;
    let since_time = first(query, "sinceTime")
        .map(|t| {
            meta::parse_ts(t).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "parsing time {t:?} as \"2006-01-02T15:04:05Z07:00\": cannot parse"
                ))
            })
        })
        .transpose()?;
    let tail_lines = int(query, "tailLines")?;
    let limit_bytes = int(query, "limitBytes")?;
    if since_seconds.is_some() && since_time.is_some() {
        return Err(invalid_log_options(
            pod,
            "sinceSeconds",
            "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified".into(),
        ));
    }
    if let Some(s) = since_seconds.filter(|s| *s < 1) {
        return Err(invalid_log_options(
            pod,
            "sinceSeconds",
            format!("Invalid value: {s}: must be greater than 0"),
        ));
    }
    if let Some(t) = tail_lines.filter(|t| *t < 0) {
        return Err(invalid_log_options(
            pod,
            "tailLines",
            format!("Invalid value: {t}: must be greater than or equal to 0"),
        ));
    }
    if let Some(l) = limit_bytes.filter(|l| *l < 1) {
        return Err(invalid_log_options(
            pod,
            "limitBytes",
            format!("Invalid value: {l}: must be greater than 0"),
        ));
    }
    let mut out: Vec<(&str, String)> = Vec::new();
    if flag(query, "follow") {
        out.push(("follow", "true".into()));
    }
    if let Some(l) = limit_bytes {
        out.push(("limitBytes", l.to_string()));
    }
    if flag(query, "previous") {
        out.push(("previous", "true".into()));
    }
    if let Some(s) = since_seconds {
        out.push(("sinceSeconds", s.to_string()));
    }
    if let Some(t) = since_time {
        out.push(("sinceTime", t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()));
    }
    if let Some(t) = tail_lines {
        out.push(("tailLines", t.to_string()));
    }
    if flag(query, "timestamps") {
        out.push(("timestamps", "true".into()));
    }
    Ok(encode(&out))
}

/// exec/attach: `command` kept, `stdin/stdout/stderr` renamed `input/output/error`.
fn stream_query(action: PodAction, query: &[(String, String)]) -> String {
    let mut out: Vec<(&str, String)> = Vec::new();
    if action == PodAction::Exec {
        for c in values(query, "command") {
            out.push(("command", c.to_string()));
        }
    }
    for (from, to) in [
        ("stderr", "error"),
        ("stdin", "input"),
        ("stdout", "output"),
    ] {
        if flag(query, from) {
            out.push((to, "1".into()));
        }
    }
    if flag(query, "tty") {
        out.push(("tty", "1".into()));
    }
    encode(&out)
}

/// port-forward: every `ports` value, joined with commas into one `port`.
fn port_forward_query(query: &[(String, String)]) -> Result<String, ApiError> {
    let mut ports = Vec::new();
    for v in values(query, "ports") {
        for p in v.split(',') {
            let port: u16 = p.trim().parse().map_err(|_| {
                ApiError::bad_request(format!("strconv.ParseInt: parsing {p:?}: invalid syntax"))
            })?;
            ports.push(port.to_string());
        }
    }
    if ports.is_empty() {
        return Ok(String::new());
    }
    Ok(encode(&[("port", ports.join(","))]))
}

/// The kubelet path and query for `action` on `pod`, and the node it runs on; `Ok(None)` for the
/// logs of a pod without a node (kube-apiserver answers those with an empty body).
pub fn pod_location(
    action: PodAction,
    pod: &Value,
    query: &[(String, String)],
) -> Result<Option<(String, String)>, ApiError> {
    let name = meta::name(pod);
    let ns = meta::namespace(pod);
    let container = match action {
        PodAction::PortForward => String::new(),
        _ => container(pod, first(query, "container"))?,
    };
    let node = meta::str_at(pod, &["spec", "nodeName"]).unwrap_or_default();
    if node.is_empty() {
        return match action {
            PodAction::Log => Ok(None),
            _ => Err(ApiError::bad_request(format!(
                "pod {name} does not have a host assigned"
            ))),
        };
    }
    let (path, q) = match action {
        PodAction::Log => (
            format!("/containerLogs/{ns}/{name}/{container}"),
            log_query(name, query)?,
        ),
        PodAction::Exec | PodAction::Attach => {
            let verb = if action == PodAction::Exec {
                "exec"
            } else {
                "attach"
            };
            (
                format!("/{verb}/{ns}/{name}/{container}"),
                stream_query(action, query),
            )
        }
        PodAction::PortForward => (
            format!("/portForward/{ns}/{name}"),
            port_forward_query(query)?,
        ),
    };
    let target = if q.is_empty() {
        path
    } else {
        format!("{path}?{q}")
    };
    Ok(Some((node.to_string(), target)))
}

#[cfg(test)]
#[path = "location_tests.rs"]
mod tests;
