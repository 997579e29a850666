#![allow(clippy::unwrap_used)]
//! Unit tests of environment resolution with plain values and an in-memory source.

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
    ObjectFieldSelector, PodIP, PodSpec, PodStatus, ResourceFieldSelector, SecretEnvSource,
    SecretKeySelector,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

mod downward;

#[derive(Default)]
struct MemSource {
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
    secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    fetches: Mutex<Vec<String>>,
}

#[async_trait]
impl EnvSource for MemSource {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, EnvError> {
        self.fetches.lock().unwrap().push(format!("cm/{ns}/{name}"));
        Ok(self.config_maps.get(name).map(|d| ConfigMap {
            data: Some(d.clone()),
            ..Default::default()
        }))
    }
    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, EnvError> {
        self.fetches
            .lock()
            .unwrap()
            .push(format!("secret/{ns}/{name}"));
        let data = |d: &BTreeMap<String, Vec<u8>>| {
            d.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone())))
                .collect()
        };
        Ok(self.secrets.get(name).map(|d| Secret {
            data: Some(data(d)),
            ..Default::default()
        }))
    }
}

fn source() -> MemSource {
    let mut s = MemSource::default();
    let cm = [
        ("HOST", "db"),
        ("PORT", "5432"),
        ("1BAD", "x"),
        ("with space", "y"),
    ];
    s.config_maps.insert(
        "cfg".into(),
        cm.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    s.secrets.insert(
        "creds".into(),
        [("password".to_string(), b"s3cret".to_vec())].into(),
    );
    s
}

fn lit(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn from(name: &str, src: EnvVarSource) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(src),
    }
}

fn cm_key(name: &str, key: &str, optional: Option<bool>) -> EnvVarSource {
    EnvVarSource {
        config_map_key_ref: Some(ConfigMapKeySelector {
            name: name.into(),
            key: key.into(),
            optional,
        }),
        ..Default::default()
    }
}

fn secret_key(name: &str, key: &str, optional: Option<bool>) -> EnvVarSource {
    EnvVarSource {
        secret_key_ref: Some(SecretKeySelector {
            name: name.into(),
            key: key.into(),
            optional,
        }),
        ..Default::default()
    }
}

fn field(path: &str) -> EnvVarSource {
    EnvVarSource {
        field_ref: Some(ObjectFieldSelector {
            api_version: None,
            field_path: path.into(),
        }),
        ..Default::default()
    }
}

fn resource(res: &str, divisor: Option<&str>) -> EnvVarSource {
    let sel = ResourceFieldSelector {
        container_name: None,
        divisor: divisor.map(|d| Quantity(d.into())),
        resource: res.into(),
    };
    EnvVarSource {
        resource_field_ref: Some(sel),
        ..Default::default()
    }
}

fn container(name: &str, env: Vec<EnvVar>) -> Container {
    Container {
        name: name.into(),
        env: Some(env),
        ..Default::default()
    }
}

fn pod(containers: Vec<Container>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web-0".into()),
            namespace: Some("shop".into()),
            uid: Some("uid-1".into()),
            labels: Some(
                [
                    ("app".to_string(), "web".to_string()),
                    ("tier".to_string(), "front".to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers,
            node_name: Some("node-a".into()),
            service_account_name: Some("sa".into()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            pod_ip: Some("10.1.0.5".into()),
            pod_ips: Some(vec![
                PodIP {
                    ip: "10.1.0.5".into(),
                },
                PodIP {
                    ip: "fd00::5".into(),
                },
            ]),
            host_ip: Some("192.168.1.2".into()),
            ..Default::default()
        }),
    }
}

async fn resolve_one(c: Container, src: &MemSource) -> Result<Vec<(String, String)>, EnvError> {
    let mut env = resolve_pod_env(&pod(vec![c]), src).await?;
    Ok(env.remove("app").unwrap_or_default())
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn expansion_follows_upstream_cases() {
    let vars = |n: &str| match n {
        "VAR_A" => Some("A".to_string()),
        "VAR_EMPTY" => Some(String::new()),
        _ => None,
    };
    let cases = [
        ("$(VAR_A)", "A"),
        ("___$(VAR_A)___", "___A___"),
        ("$(VAR_A)$(VAR_A)", "AA"),
        ("$(VAR_EMPTY)x", "x"),
        ("$(UNKNOWN)", "$(UNKNOWN)"),
        ("$$(VAR_A)", "$(VAR_A)"),
        ("$$$(VAR_A)", "$A"),
        ("$$$$(VAR_A)", "$$(VAR_A)"),
        ("$(VAR_A", "$(VAR_A"),
        ("$VAR_A", "$VAR_A"),
        ("tail$", "tail$"),
        ("$", "$"),
        ("$()", "$()"),
        ("$é$(VAR_A)", "$éA"),
        ("no refs", "no refs"),
    ];
    for (input, want) in cases {
        assert_eq!(expand(input, vars), want, "input {input:?}");
    }
}

#[test]
fn env_var_names() {
    for ok in ["A", "a_b", "_x", "my.env-name", "-dash", ".a"] {
        assert!(is_env_var_name(ok), "{ok}");
    }
    for bad in ["", "1A", "a b", "a=b", ".", "..", "..a", "é"] {
        assert!(!is_env_var_name(bad), "{bad}");
    }
}

#[tokio::test]
async fn env_from_then_env_with_overrides_in_first_position() {
    let src = source();
    let mut c = container(
        "app",
        vec![
            lit("PORT", "6543"),
            lit("URL", "pg://$(HOST):$(PORT)"),
            lit("HOST", "db2"),
        ],
    );
    c.env_from = Some(vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource {
            name: "cfg".into(),
            optional: None,
        }),
        ..Default::default()
    }]);
    let env = resolve_one(c, &src).await.unwrap();
    assert_eq!(
        env,
        pairs(&[("HOST", "db2"), ("PORT", "6543"), ("URL", "pg://db:6543")])
    );
}

#[tokio::test]
async fn env_from_prefix_secret_and_skipped_keys() {
    let src = source();
    let mut c = container("app", vec![]);
    c.env_from = Some(vec![
        EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: "cfg".into(),
                optional: None,
            }),
            prefix: Some("DB_".into()),
            secret_ref: None,
        },
        EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: "creds".into(),
                optional: None,
            }),
            ..Default::default()
        },
        EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: "absent".into(),
                optional: Some(true),
            }),
            ..Default::default()
        },
    ]);
    let out = resolve_pod_env_with(&pod(vec![c]), &src, &EnvOptions::default())
        .await
        .unwrap();
    let env = &out.env["app"];
    assert_eq!(
        env,
        &pairs(&[
            ("DB_1BAD", "x"),
            ("DB_HOST", "db"),
            ("DB_PORT", "5432"),
            ("password", "s3cret")
        ])
    );
    let skipped = SkippedKeys {
        container: "app".into(),
        kind: ObjectKind::ConfigMap,
        name: "cfg".into(),
        keys: vec!["DB_with space".into()],
    };
    assert_eq!(out.skipped, vec![skipped]);
}

#[tokio::test]
async fn invalid_key_without_prefix_is_skipped() {
    let src = source();
    let mut c = container("app", vec![]);
    c.env_from = Some(vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource {
            name: "cfg".into(),
            optional: None,
        }),
        ..Default::default()
    }]);
    let out = resolve_pod_env_with(&pod(vec![c]), &src, &EnvOptions::default())
        .await
        .unwrap();
    assert_eq!(
        out.skipped[0].keys,
        vec!["1BAD".to_string(), "with space".to_string()]
    );
    assert_eq!(out.env["app"], pairs(&[("HOST", "db"), ("PORT", "5432")]));
}

#[tokio::test]
async fn key_refs_and_optional_references() {
    let src = source();
    let c = container(
        "app",
        vec![
            from("PW", secret_key("creds", "password", None)),
            from("H", cm_key("cfg", "HOST", None)),
            from("GONE", cm_key("nope", "x", Some(true))),
            from("GONE_KEY", secret_key("creds", "nokey", Some(true))),
            lit("NOT_EXPANDED_FROM", "$(PW)"),
        ],
    );
    let env = resolve_one(c, &src).await.unwrap();
    assert_eq!(
        env,
        pairs(&[
            ("PW", "s3cret"),
            ("H", "db"),
            ("NOT_EXPANDED_FROM", "s3cret")
        ])
    );
}

#[tokio::test]
async fn missing_references_name_what_is_missing() {
    let src = source();
    let err = resolve_one(
        container("app", vec![from("X", cm_key("nope", "k", None))]),
        &src,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, EnvError::MissingConfigMap { container, ns, name } if container == "app" && ns == "shop" && name == "nope"),
        "{err:?}"
    );
    assert_eq!(err.reason(), "CreateContainerConfigError");
    assert_eq!(err.container(), Some("app"));

    let err = resolve_one(
        container("app", vec![from("X", secret_key("creds", "user", None))]),
        &src,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, EnvError::MissingKey { kind: ObjectKind::Secret, name, key, .. } if name == "creds" && key == "user"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "container app: couldn't find key user in Secret shop/creds"
    );

    let mut c = container("app", vec![]);
    c.env_from = Some(vec![EnvFromSource {
        secret_ref: Some(SecretEnvSource {
            name: "absent".into(),
            optional: Some(false),
        }),
        ..Default::default()
    }]);
    let err = resolve_one(c, &src).await.unwrap_err();
    assert!(
        matches!(&err, EnvError::MissingSecret { name, .. } if name == "absent"),
        "{err:?}"
    );
}

#[tokio::test]
async fn each_object_is_fetched_once_per_pod() {
    let src = source();
    let mut a = container(
        "app",
        vec![
            from("A", cm_key("cfg", "HOST", None)),
            from("B", cm_key("cfg", "PORT", None)),
        ],
    );
    a.env_from = Some(vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource {
            name: "cfg".into(),
            optional: None,
        }),
        ..Default::default()
    }]);
    let b = container(
        "side",
        vec![
            from("P", secret_key("creds", "password", None)),
            from("Q", cm_key("nope", "x", Some(true))),
        ],
    );
    let mut init = container(
        "init",
        vec![
            from("P", secret_key("creds", "password", None)),
            from("Q", cm_key("nope", "x", Some(true))),
        ],
    );
    init.env_from = Some(vec![]);
    let mut p = pod(vec![a, b]);
    if let Some(spec) = p.spec.as_mut() {
        spec.init_containers = Some(vec![init]);
    }
    let env = resolve_pod_env(&p, &src).await.unwrap();
    assert_eq!(env.keys().collect::<Vec<_>>(), ["app", "init", "side"]);
    let mut fetches = src.fetches.lock().unwrap().clone();
    fetches.sort();
    assert_eq!(
        fetches,
        ["cm/shop/cfg", "cm/shop/nope", "secret/shop/creds"]
    );
}
