//! Container environment resolution, as the kubelet does it (upstream `makeEnvironmentVariables`).
//!
//! For each container (init containers included): `envFrom` first (ConfigMaps and Secrets, optional
//! prefix, keys that are no valid variable names skipped and reported), then `env` in order. A later
//! definition of a name overrides the earlier value but keeps the first position, so the result is
//! deterministic (the kubelet itself hands the runtime a Go map's random order). Literal values expand
//! `$(NAME)` against what is defined so far (`$$` escapes); `valueFrom` values are taken verbatim.
//! Every ConfigMap and Secret is fetched at most once per pod.

mod downward;
mod expand;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

pub use downward::{field_value, resource_value, scaled_ceil};
pub use expand::{expand, is_env_var_name};

use downward::DownwardError;

/// Where ConfigMaps and Secrets come from (an informer cache, the API, or a map in tests).
#[async_trait]
pub trait EnvSource: Send + Sync {
    /// The ConfigMap, `None` when it does not exist.
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, EnvError>;
    /// The Secret, `None` when it does not exist.
    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, EnvError>;
}

/// What a `configMapRef`/`secretRef` or key selector refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    ConfigMap,
    Secret,
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ConfigMap => "ConfigMap",
            Self::Secret => "Secret",
        })
    }
}

/// Why a container's environment cannot be built. Every variant makes the container wait with reason
/// [`EnvError::reason`] until the pod is synced again (the missing object may appear).
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("container {container}: configmap \"{name}\" not found in namespace {ns}")]
    MissingConfigMap {
        container: String,
        ns: String,
        name: String,
    },
    #[error("container {container}: secret \"{name}\" not found in namespace {ns}")]
    MissingSecret {
        container: String,
        ns: String,
        name: String,
    },
    #[error("container {container}: couldn't find key {key} in {kind} {ns}/{name}")]
    MissingKey {
        container: String,
        kind: ObjectKind,
        ns: String,
        name: String,
        key: String,
    },
    #[error("container {container}: env {var}: unsupported fieldPath {path}")]
    UnsupportedFieldPath {
        container: String,
        var: String,
        path: String,
    },
    #[error("container {container}: env {var}: unsupported resource {resource}")]
    UnsupportedResource {
        container: String,
        var: String,
        resource: String,
    },
    #[error("container {container}: env {var}: no container named {target} in the pod")]
    UnknownContainer {
        container: String,
        var: String,
        target: String,
    },
    #[error("container {container}: env {var}: invalid quantity {value:?}")]
    InvalidQuantity {
        container: String,
        var: String,
        value: String,
    },
    /// The source could not be asked (API error, cache not synced); returned by [`EnvSource`]s.
    #[error("cannot read {kind} {ns}/{name}")]
    Lookup {
        kind: ObjectKind,
        ns: String,
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl EnvError {
    /// The container waiting reason (and Event reason) the kubelet uses for all of these.
    pub fn reason(&self) -> &'static str {
        "CreateContainerConfigError"
    }

    /// The container whose environment failed; `None` for lookup failures, which concern the pod.
    pub fn container(&self) -> Option<&str> {
        match self {
            Self::MissingConfigMap { container, .. }
            | Self::MissingSecret { container, .. }
            | Self::MissingKey { container, .. }
            | Self::UnsupportedFieldPath { container, .. }
            | Self::UnsupportedResource { container, .. }
            | Self::UnknownContainer { container, .. }
            | Self::InvalidQuantity { container, .. } => Some(container),
            Self::Lookup { .. } => None,
        }
    }

    fn downward(container: &str, var: &str, err: DownwardError) -> Self {
        let (container, var) = (container.to_string(), var.to_string());
        match err {
            DownwardError::UnsupportedField(path) => Self::UnsupportedFieldPath {
                container,
                var,
                path,
            },
            DownwardError::UnsupportedResource(resource) => Self::UnsupportedResource {
                container,
                var,
                resource,
            },
            DownwardError::UnknownContainer(target) => Self::UnknownContainer {
                container,
                var,
                target,
            },
            DownwardError::InvalidQuantity(value) => Self::InvalidQuantity {
                container,
                var,
                value,
            },
        }
    }
}

/// Knobs of [`resolve_pod_env_with`].
#[derive(Clone, Debug, Default)]
pub struct EnvOptions {
    /// The node's allocatable resources, the value of a `limits.*` resourceFieldRef whose limit is unset.
    pub node_allocatable: Option<BTreeMap<String, Quantity>>,
}

/// `envFrom` keys skipped because they are no valid variable names (an `InvalidEnvironmentVariableNames`
/// Warning Event in the kubelet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedKeys {
    pub container: String,
    pub kind: ObjectKind,
    pub name: String,
    /// Sorted, prefix applied.
    pub keys: Vec<String>,
}

/// The result of [`resolve_pod_env_with`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvedEnv {
    /// Container name -> ordered (name, value).
    pub env: BTreeMap<String, Vec<(String, String)>>,
    pub skipped: Vec<SkippedKeys>,
}

/// Resolve the environment of every container and init container of `pod`.
///
/// # Errors
/// The first missing non-optional ConfigMap, Secret or key, an unsupported downward API reference, or
/// a failed lookup; see [`EnvError`].
pub async fn resolve_pod_env(
    pod: &Pod,
    source: &dyn EnvSource,
) -> Result<BTreeMap<String, Vec<(String, String)>>, EnvError> {
    Ok(resolve_pod_env_with(pod, source, &EnvOptions::default())
        .await?
        .env)
}

/// [`resolve_pod_env`] with options, also reporting skipped `envFrom` keys.
///
/// # Errors
/// As [`resolve_pod_env`].
pub async fn resolve_pod_env_with(
    pod: &Pod,
    source: &dyn EnvSource,
    opts: &EnvOptions,
) -> Result<ResolvedEnv, EnvError> {
    let mut resolver = Resolver {
        pod,
        source,
        opts,
        ns: pod.metadata.namespace.as_deref().unwrap_or("default"),
        cache: HashMap::new(),
        out: ResolvedEnv::default(),
    };
    // Collected first: a lazy iterator held across an await makes the future not provably Send.
    let containers: Vec<&Container> = pod
        .spec
        .iter()
        .flat_map(|s| {
            s.init_containers
                .iter()
                .flatten()
                .chain(s.containers.iter())
        })
        .collect();
    for container in containers {
        let env = resolver.container(container).await?;
        resolver.out.env.insert(container.name.clone(), env);
    }
    Ok(resolver.out)
}

/// A fetched ConfigMap's or Secret's data, `None` when it does not exist.
type Data = Option<BTreeMap<String, String>>;

struct Resolver<'a> {
    pod: &'a Pod,
    source: &'a dyn EnvSource,
    opts: &'a EnvOptions,
    ns: &'a str,
    cache: HashMap<(ObjectKind, String), Data>,
    out: ResolvedEnv,
}

/// Ordered variables: a redefinition replaces the value in place.
#[derive(Default)]
struct Vars {
    list: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl Vars {
    fn set(&mut self, name: String, value: String) {
        match self.index.get(&name) {
            Some(&i) => self.list[i].1 = value,
            None => {
                self.index.insert(name.clone(), self.list.len());
                self.list.push((name, value));
            }
        }
    }
    fn get(&self, name: &str) -> Option<String> {
        self.index.get(name).map(|&i| self.list[i].1.clone())
    }
}

impl Resolver<'_> {
    async fn fetch(&mut self, kind: ObjectKind, name: &str) -> Result<&Data, EnvError> {
        let key = (kind, name.to_string());
        if !self.cache.contains_key(&key) {
            let data = match kind {
                ObjectKind::ConfigMap => self
                    .source
                    .config_map(self.ns, name)
                    .await?
                    .map(|cm| cm.data.unwrap_or_default()),
                // Secret bytes are already base64-decoded; invalid UTF-8 is replaced, as env values are text.
                ObjectKind::Secret => self.source.secret(self.ns, name).await?.map(|s| {
                    s.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                        .collect()
                }),
            };
            self.cache.insert(key.clone(), data);
        }
        Ok(self.cache.get(&key).unwrap_or(&None))
    }

    fn missing(&self, container: &str, kind: ObjectKind, name: &str) -> EnvError {
        let (container, ns, name) = (container.to_string(), self.ns.to_string(), name.to_string());
        match kind {
            ObjectKind::ConfigMap => EnvError::MissingConfigMap {
                container,
                ns,
                name,
            },
            ObjectKind::Secret => EnvError::MissingSecret {
                container,
                ns,
                name,
            },
        }
    }

    async fn container(&mut self, c: &Container) -> Result<Vec<(String, String)>, EnvError> {
        let mut vars = Vars::default();
        for from in c.env_from.iter().flatten() {
            let (kind, name, optional) = match (&from.config_map_ref, &from.secret_ref) {
                (Some(r), _) => (ObjectKind::ConfigMap, &r.name, r.optional.unwrap_or(false)),
                (None, Some(r)) => (ObjectKind::Secret, &r.name, r.optional.unwrap_or(false)),
                (None, None) => continue,
            };
            let Some(data) = self.fetch(kind, name).await?.clone() else {
                if optional {
                    continue;
                }
                return Err(self.missing(&c.name, kind, name));
            };
            let prefix = from.prefix.as_deref().unwrap_or("");
            let mut invalid = Vec::new();
            for (key, value) in data {
                let key = format!("{prefix}{key}");
                if is_env_var_name(&key) {
                    vars.set(key, value)
                } else {
                    invalid.push(key)
                }
            }
            if !invalid.is_empty() {
                invalid.sort();
                self.out.skipped.push(SkippedKeys {
                    container: c.name.clone(),
                    kind,
                    name: name.clone(),
                    keys: invalid,
                });
            }
        }
        for var in c.env.iter().flatten() {
            let literal = var.value.as_deref().unwrap_or("");
            let value = if !literal.is_empty() {
                expand(literal, |name| vars.get(name))
            } else if let Some(from) = &var.value_from {
                let key_ref = match (&from.config_map_key_ref, &from.secret_key_ref) {
                    (Some(r), _) => Some((
                        ObjectKind::ConfigMap,
                        &r.name,
                        &r.key,
                        r.optional.unwrap_or(false),
                    )),
                    (None, Some(r)) => Some((
                        ObjectKind::Secret,
                        &r.name,
                        &r.key,
                        r.optional.unwrap_or(false),
                    )),
                    (None, None) => None,
                };
                if let Some((kind, name, key, optional)) = key_ref {
                    // Outer None: no such object; inner None: no such key.
                    let found = self
                        .fetch(kind, name)
                        .await?
                        .as_ref()
                        .map(|d| d.get(key).cloned());
                    match found {
                        Some(Some(v)) => v,
                        _ if optional => continue,
                        None => return Err(self.missing(&c.name, kind, name)),
                        Some(None) => {
                            let (container, ns) = (c.name.clone(), self.ns.to_string());
                            return Err(EnvError::MissingKey {
                                container,
                                kind,
                                ns,
                                name: name.clone(),
                                key: key.clone(),
                            });
                        }
                    }
                } else if let Some(sel) = &from.field_ref {
                    field_value(self.pod, sel)
                        .map_err(|e| EnvError::downward(&c.name, &var.name, e))?
                } else if let Some(sel) = &from.resource_field_ref {
                    let allocatable = self.opts.node_allocatable.as_ref();
                    resource_value(self.pod, c, sel, allocatable)
                        .map_err(|e| EnvError::downward(&c.name, &var.name, e))?
                } else {
                    String::new()
                }
            } else {
                String::new()
            };
            vars.set(var.name.clone(), value);
        }
        Ok(vars.list)
    }
}
