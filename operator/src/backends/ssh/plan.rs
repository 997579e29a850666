//! What a pod asks the SSH backend to run, checked and resolved before anything reaches the device:
//! each container's argv (`command` + `args`, `$(VAR)` expanded against its env as a kubelet does),
//! env, working directory, and the pod's restart policy. Names that become paths on the device (pod
//! UID, container names) are validated here, so no remote path can escape the pod's state directory.

use k8s_openapi::api::core::v1::Container;
use vk_runtime::{PodRef, ResolvedPod};

use super::quote::{QuoteError, valid_env_name};

/// Why a pod cannot run on an SSH device (the pod fails; it never will).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("pod has no spec")]
    NoSpec,
    #[error("pod UID {0:?} is not usable as a directory name")]
    Uid(String),
    #[error("container name {0:?} is not a DNS label")]
    ContainerName(String),
    #[error(
        "container {0:?} has no command or args: the ssh backend runs processes, it does not pull images"
    )]
    NoCommand(String),
    #[error("container {container:?}: {source}")]
    Quote {
        container: String,
        #[source]
        source: QuoteError,
    },
    #[error("unsupported restartPolicy {0:?}")]
    RestartPolicy(String),
}

/// A pod's restart policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Always,
    OnFailure,
    Never,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::OnFailure => "OnFailure",
            Self::Never => "Never",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Always" => Some(Self::Always),
            "OnFailure" => Some(Self::OnFailure),
            "Never" => Some(Self::Never),
            _ => None,
        }
    }

    /// Whether a container of this kind that exited with `code` runs again.
    pub fn restarts(self, init: bool, code: i32) -> bool {
        match self {
            Self::Never => false,
            Self::OnFailure => code != 0,
            Self::Always => !init || code != 0,
        }
    }
}

/// One container, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPlan {
    pub name: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub image: String,
}

/// One pod, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPlan {
    pub pod_ref: PodRef,
    pub policy: Policy,
    pub init: Vec<ContainerPlan>,
    pub main: Vec<ContainerPlan>,
}

/// Whether `s` is a DNS label (container names; also keeps remote paths plain).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `uid` can name the pod's state directory.
pub fn is_safe_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 128
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn container(c: &Container, env: &[(String, String)]) -> Result<ContainerPlan, PlanError> {
    if !is_dns_label(&c.name) {
        return Err(PlanError::ContainerName(c.name.clone()));
    }
    let quote_err = |source| PlanError::Quote {
        container: c.name.clone(),
        source,
    };
    for (name, _) in env {
        if !valid_env_name(name) {
            return Err(quote_err(QuoteError::EnvName { name: name.clone() }));
        }
    }
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let argv: Vec<String> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .map(|a| vk_runtime::pod::env::expand(a, lookup))
        .collect();
    if argv.is_empty() {
        return Err(PlanError::NoCommand(c.name.clone()));
    }
    let all = argv
        .iter()
        .chain(env.iter().map(|(_, v)| v))
        .chain(c.working_dir.iter());
    if all.into_iter().any(|s| s.contains('\0')) {
        return Err(quote_err(QuoteError::Nul {
            what: "command, args, env or workingDir".into(),
        }));
    }
    Ok(ContainerPlan {
        name: c.name.clone(),
        argv,
        env: env.to_vec(),
        working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        image: c.image.clone().unwrap_or_default(),
    })
}

/// Resolve `pod` into what runs on the device.
///
/// # Errors
/// A [`PlanError`] for a pod this backend can never run.
pub fn plan(pod: &ResolvedPod) -> Result<PodPlan, PlanError> {
    let spec = pod.pod.spec.as_ref().ok_or(PlanError::NoSpec)?;
    if !is_safe_uid(&pod.pod_ref.uid) {
        return Err(PlanError::Uid(pod.pod_ref.uid.clone()));
    }
    let policy_name = spec.restart_policy.as_deref().unwrap_or("Always");
    let policy = Policy::parse(policy_name)
        .ok_or_else(|| PlanError::RestartPolicy(policy_name.to_string()))?;
    let resolve = |c: &Container| {
        let env = pod.env.get(&c.name).map(Vec::as_slice).unwrap_or_default();
        container(c, env)
    };
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(resolve)
        .collect::<Result<Vec<_>, _>>()?;
    let main = spec
        .containers
        .iter()
        .map(resolve)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PodPlan {
        pod_ref: pod.pod_ref.clone(),
        policy,
        init,
        main,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Pod, PodSpec};
    use std::collections::BTreeMap;

    fn pod(c: Container, env: Vec<(String, String)>) -> ResolvedPod {
        let name = c.name.clone();
        ResolvedPod {
            pod_ref: PodRef {
                namespace: "ns".into(),
                name: "p".into(),
                uid: "0a-b".into(),
            },
            pod: Pod {
                spec: Some(PodSpec {
                    containers: vec![c],
                    ..Default::default()
                }),
                ..Default::default()
            },
            env: BTreeMap::from([(name, env)]),
        }
    }

    fn c(name: &str, command: &[&str], args: &[&str]) -> Container {
        Container {
            name: name.into(),
            command: (!command.is_empty()).then(|| command.iter().map(|s| s.to_string()).collect()),
            args: (!args.is_empty()).then(|| args.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn argv_is_command_then_args_expanded() {
        let p = plan(&pod(
            c(
                "main",
                &["echo"],
                &["$(GREETING)", "$$(GREETING)", "$(MISSING)"],
            ),
            vec![("GREETING".into(), "hi there".into())],
        ))
        .unwrap();
        assert_eq!(
            p.main[0].argv,
            ["echo", "hi there", "$(GREETING)", "$(MISSING)"]
        );
        assert_eq!(p.policy, Policy::Always);
    }

    #[test]
    fn refuses_what_cannot_run() {
        assert!(matches!(
            plan(&pod(c("main", &[], &[]), vec![])),
            Err(PlanError::NoCommand(_))
        ));
        assert!(matches!(
            plan(&pod(c("Main", &["x"], &[]), vec![])),
            Err(PlanError::ContainerName(_))
        ));
        assert!(matches!(
            plan(&pod(c("m", &["a\0b"], &[]), vec![])),
            Err(PlanError::Quote { .. })
        ));
        assert!(matches!(
            plan(&pod(c("m", &["x"], &[]), vec![("1X".into(), "v".into())])),
            Err(PlanError::Quote { .. })
        ));
        let mut bad_uid = pod(c("m", &["x"], &[]), vec![]);
        bad_uid.pod_ref.uid = "../x".into();
        assert!(matches!(plan(&bad_uid), Err(PlanError::Uid(_))));
    }

    #[test]
    fn restart_rules() {
        assert!(Policy::Always.restarts(false, 0));
        assert!(!Policy::Always.restarts(true, 0));
        assert!(Policy::Always.restarts(true, 1));
        assert!(!Policy::OnFailure.restarts(false, 0));
        assert!(Policy::OnFailure.restarts(false, 2));
        assert!(!Policy::Never.restarts(true, 1));
    }
}
