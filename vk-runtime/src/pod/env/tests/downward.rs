//! Downward API tests: fieldRef and resourceFieldRef values, quantity parsing.

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};

use super::*;

#[tokio::test]
async fn field_refs() {
    let src = source();
    let paths = [
        ("metadata.name", "web-0"),
        ("metadata.namespace", "shop"),
        ("metadata.uid", "uid-1"),
        ("metadata.labels['app']", "web"),
        ("metadata.labels['none']", ""),
        ("metadata.labels", "app=\"web\"\ntier=\"front\""),
        ("metadata.annotations['a']", ""),
        ("spec.nodeName", "node-a"),
        ("spec.serviceAccountName", "sa"),
        ("status.hostIP", "192.168.1.2"),
        ("status.hostIPs", "192.168.1.2"),
        ("status.podIP", "10.1.0.5"),
        ("status.podIPs", "10.1.0.5,fd00::5"),
    ];
    let env: Vec<EnvVar> = paths
        .iter()
        .enumerate()
        .map(|(i, (p, _))| from(&format!("V{i}"), field(p)))
        .collect();
    let got = resolve_one(container("app", env), &src).await.unwrap();
    for (i, (path, want)) in paths.iter().enumerate() {
        assert_eq!(got[i].1, *want, "{path}");
    }
    let err = resolve_one(container("app", vec![from("X", field("spec.bogus"))]), &src)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EnvError::UnsupportedFieldPath { var, path, .. } if var == "X" && path == "spec.bogus"),
        "{err:?}"
    );
}

fn with_resources(
    mut c: Container,
    limits: &[(&str, &str)],
    requests: &[(&str, &str)],
) -> Container {
    let map = |p: &[(&str, &str)]| {
        Some(
            p.iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect(),
        )
    };
    c.resources = Some(ResourceRequirements {
        limits: map(limits),
        requests: map(requests),
        ..Default::default()
    });
    c
}

#[tokio::test]
async fn resource_field_refs_round_up_with_divisors() {
    let src = source();
    let cases = [
        ("limits.cpu", None, "2"),
        ("limits.cpu", Some("1m"), "1500"),
        ("requests.cpu", None, "1"),
        ("requests.cpu", Some("1m"), "250"),
        ("limits.memory", None, "134217728"),
        ("limits.memory", Some("1Mi"), "128"),
        ("requests.memory", Some("1Gi"), "1"),
        ("limits.ephemeral-storage", Some("1G"), "2"),
        ("requests.ephemeral-storage", None, "0"),
        ("limits.cpu", Some("0"), "2"),
    ];
    let env: Vec<EnvVar> = cases
        .iter()
        .enumerate()
        .map(|(i, (r, d, _))| from(&format!("V{i}"), resource(r, *d)))
        .collect();
    let c = with_resources(
        container("app", env),
        &[
            ("cpu", "1500m"),
            ("memory", "128Mi"),
            ("ephemeral-storage", "1.5G"),
        ],
        &[("cpu", "0.25"), ("memory", "64Mi")],
    );
    let got = resolve_one(c, &src).await.unwrap();
    for (i, (res, div, want)) in cases.iter().enumerate() {
        assert_eq!(got[i].1, *want, "{res} / {div:?}");
    }
}

#[tokio::test]
async fn unset_limits_fall_back_to_allocatable_then_request() {
    let src = source();
    let env = vec![
        from("CPU", resource("limits.cpu", None)),
        from("MEM", resource("limits.memory", Some("1Mi"))),
    ];
    let c = with_resources(container("app", env), &[], &[("memory", "100Mi")]);
    let p = pod(vec![c]);
    let plain = resolve_pod_env(&p, &src).await.unwrap();
    assert_eq!(plain["app"], pairs(&[("CPU", "0"), ("MEM", "100")]));
    let opts = EnvOptions {
        node_allocatable: Some([("cpu".to_string(), Quantity("16".into()))].into()),
    };
    let with = resolve_pod_env_with(&p, &src, &opts).await.unwrap();
    assert_eq!(with.env["app"], pairs(&[("CPU", "16"), ("MEM", "100")]));

    let bad = container("app", vec![from("X", resource("limits.gpu", None))]);
    assert!(matches!(
        resolve_one(bad, &src).await,
        Err(EnvError::UnsupportedResource { .. })
    ));
    let mut other = resource("limits.cpu", None);
    if let Some(sel) = other.resource_field_ref.as_mut() {
        sel.container_name = Some("ghost".into());
    }
    assert!(matches!(
        resolve_one(container("app", vec![from("X", other)]), &src).await,
        Err(EnvError::UnknownContainer { .. })
    ));
}

#[test]
fn quantity_parsing() {
    let q = |s: &str, scale| crate::pod::env::downward::scaled_ceil(&Quantity(s.into()), scale);
    assert_eq!(q("1", 3), Some(1000));
    assert_eq!(q("0.5m", 3), Some(1));
    assert_eq!(q("64Gi", 0), Some(64 << 30));
    assert_eq!(q("1e3", 0), Some(1000));
    assert_eq!(q("2k", 0), Some(2000));
    assert_eq!(q("1E", 0), Some(1_000_000_000_000_000_000));
    assert_eq!(q("100n", 3), Some(1));
    assert_eq!(q("abc", 0), None);
    assert_eq!(q("1Zi", 0), None);
}
