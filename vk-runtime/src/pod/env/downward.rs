//! The downward API for environment variables: `fieldRef` (pod metadata, spec and status fields) and
//! `resourceFieldRef` (a container's CPU, memory and ephemeral-storage requests and limits), computed as
//! the kubelet computes them (upstream `podFieldSelectorRuntimeValue`, `ExtractContainerResourceValue`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Why a downward API reference cannot be resolved. The caller adds which container and variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownwardError {
    UnsupportedField(String),
    UnsupportedResource(String),
    UnknownContainer(String),
    InvalidQuantity(String),
}

/// The value of a `fieldRef`. Status fields come from the pod object (empty while not yet known).
pub fn field_value(pod: &Pod, sel: &ObjectFieldSelector) -> Result<String, DownwardError> {
    if sel.api_version.as_deref().is_some_and(|v| v != "v1") {
        return Err(DownwardError::UnsupportedField(format!(
            "{} (apiVersion {:?})",
            sel.field_path, sel.api_version
        )));
    }
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let path = sel.field_path.as_str();
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => host_ips(pod).into_iter().next().unwrap_or_default(),
        "status.hostIPs" => host_ips(pod).join(","),
        "status.podIP" => pod_ips(pod).into_iter().next().unwrap_or_default(),
        "status.podIPs" => pod_ips(pod).join(","),
        "status.phase" => status.and_then(|s| s.phase.clone()).unwrap_or_default(),
        _ => {
            if let Some(key) = subscript(path, "metadata.labels") {
                meta.labels
                    .as_ref()
                    .and_then(|m| m.get(key))
                    .cloned()
                    .unwrap_or_default()
            } else if let Some(key) = subscript(path, "metadata.annotations") {
                meta.annotations
                    .as_ref()
                    .and_then(|m| m.get(key))
                    .cloned()
                    .unwrap_or_default()
            } else {
                return Err(DownwardError::UnsupportedField(path.to_string()));
            }
        }
    };
    Ok(value)
}

/// `metadata.labels['key']` -> `key`.
fn subscript<'a>(path: &'a str, field: &str) -> Option<&'a str> {
    path.strip_prefix(field)?
        .strip_prefix("['")?
        .strip_suffix("']")
}

/// `key="value"` lines sorted by key, as the kubelet formats a whole label or annotation map.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    let lines: Vec<String> = map
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    lines.join("\n")
}

fn pod_ips(pod: &Pod) -> Vec<String> {
    let status = pod.status.as_ref();
    let ips: Vec<String> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .map(|p| p.ip.clone())
        .collect();
    if ips.is_empty() {
        status.and_then(|s| s.pod_ip.clone()).into_iter().collect()
    } else {
        ips
    }
}

fn host_ips(pod: &Pod) -> Vec<String> {
    let status = pod.status.as_ref();
    let ips: Vec<String> = status
        .and_then(|s| s.host_ips.as_ref())
        .into_iter()
        .flatten()
        .map(|p| p.ip.clone())
        .collect();
    if ips.is_empty() {
        status.and_then(|s| s.host_ip.clone()).into_iter().collect()
    } else {
        ips
    }
}

/// The value of a `resourceFieldRef` for `container` (or the container the selector names).
///
/// Fallback, since node allocatable is not always known here: an unset limit is the node's
/// allocatable amount when `allocatable` has it (what the kubelet does), else the container's request,
/// else `0`. An unset request is `0`.
pub fn resource_value(
    pod: &Pod,
    container: &Container,
    sel: &ResourceFieldSelector,
    allocatable: Option<&BTreeMap<String, Quantity>>,
) -> Result<String, DownwardError> {
    let target = match sel.container_name.as_deref() {
        None | Some("") => container,
        Some(name) => find_container(pod, name)
            .ok_or_else(|| DownwardError::UnknownContainer(name.to_string()))?,
    };
    let (kind, resource) = sel
        .resource
        .split_once('.')
        .filter(|(k, r)| {
            matches!(*k, "limits" | "requests")
                && matches!(*r, "cpu" | "memory" | "ephemeral-storage")
        })
        .ok_or_else(|| DownwardError::UnsupportedResource(sel.resource.clone()))?;
    let resources = target.resources.as_ref();
    let request = resources
        .and_then(|r| r.requests.as_ref())
        .and_then(|m| m.get(resource));
    let limit = resources
        .and_then(|r| r.limits.as_ref())
        .and_then(|m| m.get(resource));
    let value = if kind == "limits" {
        limit
            .or_else(|| allocatable.and_then(|a| a.get(resource)))
            .or(request)
    } else {
        request
    };
    let zero = Quantity("0".into());
    let value = value.unwrap_or(&zero);
    let divisor = sel
        .divisor
        .as_ref()
        .filter(|d| parse(&d.0).is_some_and(|d| d.mantissa != 0));
    let one = Quantity("1".into());
    let divisor = divisor.unwrap_or(&one);
    // CPU in millicores, everything else in whole units; both rounded up, then divided rounding up.
    let scale = if resource == "cpu" { 3 } else { 0 };
    let invalid = |q: &Quantity| DownwardError::InvalidQuantity(q.0.clone());
    let v = scaled_ceil(value, scale).ok_or_else(|| invalid(value))?;
    let d = scaled_ceil(divisor, scale).ok_or_else(|| invalid(divisor))?;
    if d <= 0 {
        return Err(invalid(divisor));
    }
    Ok(ceil_div(v, d).to_string())
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b != 0 && ((a < 0) == (b < 0)) {
        q + 1
    } else {
        q
    }
}

/// A parsed quantity: `mantissa * 10^exp10 * 2^exp2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    pub mantissa: i128,
    pub exp10: i32,
    pub exp2: i32,
}

/// Parses a Kubernetes quantity (`1.5`, `250m`, `64Gi`, `1e3`, `2k`).
pub fn parse(s: &str) -> Option<Parsed> {
    let s = s.trim();
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    let (negative, num) = match num.as_bytes().first() {
        Some(b'-') => (true, &num[1..]),
        Some(b'+') => (false, &num[1..]),
        _ => (false, num),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty()
        || !(int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    let digits = format!("{int}{frac}");
    let mut mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    if negative {
        mantissa = -mantissa;
    }
    let mut exp10 = -i32::try_from(frac.len()).ok()?;
    let mut exp2 = 0;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        other => {
            let exp = other.strip_prefix(['e', 'E'])?;
            exp10 += exp.parse::<i32>().ok()?;
        }
    }
    Some(Parsed {
        mantissa,
        exp10,
        exp2,
    })
}

/// `ceil(q * 10^scale)`, `None` when unparsable or out of range.
pub fn scaled_ceil(q: &Quantity, scale: i32) -> Option<i128> {
    let p = parse(&q.0)?;
    let mut num = p
        .mantissa
        .checked_mul(2i128.checked_pow(u32::try_from(p.exp2).ok()?)?)?;
    let mut den: i128 = 1;
    let exp10 = p.exp10.checked_add(scale)?;
    let pow = 10i128.checked_pow(exp10.unsigned_abs())?;
    if exp10 >= 0 {
        num = num.checked_mul(pow)?;
    } else {
        den = pow;
    }
    Some(ceil_div(num, den))
}
