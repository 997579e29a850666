//! The cluster a scenario runs against: a fresh in-process test apiserver per scenario, or the real
//! cluster named by `FLEETLET_E2E_KUBECONFIG` (scenarios then use unique names and clean up).

use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::Context as _;
use fleetlet_test_apiserver::{Options, TestApiServer};
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::fixtures::{mock_backend, virtual_node};
use crate::observe::node_ready;
use crate::wait::eventually;

/// The operator's default namespace (its leader Lease lives there); created by [`Cluster::start_with`].
pub const OPERATOR_NAMESPACE: &str = "fleetlet-system";

/// A cluster to run scenarios against.
pub struct Cluster {
    pub client: Client,
    pub kubeconfig: PathBuf,
    /// The in-process apiserver, when not on a real cluster.
    pub apiserver: Option<TestApiServer>,
    dir: PathBuf,
}

impl Cluster {
    /// The real cluster if `FLEETLET_E2E_KUBECONFIG` is set, else a new test apiserver with default options.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Options::default()).await
    }

    /// As [`Cluster::start`], with options for the test apiserver (ignored on a real cluster).
    pub async fn start_with(opts: Options) -> anyhow::Result<Self> {
        Self::start_at(
            std::env::var_os("FLEETLET_E2E_KUBECONFIG").map(PathBuf::from),
            opts,
        )
        .await
    }

    /// The cluster `kubeconfig` names, or a new test apiserver with `opts` when it is `None` (the
    /// benchmark's choice between `KUBECONFIG` and `--test-apiserver`).
    pub async fn start_at(kubeconfig: Option<PathBuf>, opts: Options) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("fleetlet-e2e-{}", unique("run")));
        std::fs::create_dir_all(&dir)?;
        let (kubeconfig, apiserver) = match kubeconfig {
            Some(path) => (path, None),
            None => {
                let server = TestApiServer::start_with(opts).await;
                let path = dir.join("kubeconfig");
                server.write_kubeconfig(&path)?;
                (path, Some(server))
            }
        };
        let client = client_for(&kubeconfig).await?;
        let cluster = Self {
            client,
            kubeconfig,
            apiserver,
            dir,
        };
        cluster.install_crds().await?;
        cluster.ensure_namespace(OPERATOR_NAMESPACE).await?;
        Ok(cluster)
    }

    /// Whether this is a real cluster.
    pub fn is_real(&self) -> bool {
        self.apiserver.is_none()
    }

    /// A scratch directory for this scenario.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A kubeconfig under which requests are served (and recorded) as `username`, with a fresh bearer
    /// token registered in the test apiserver; `None` on a real cluster.
    pub fn kubeconfig_as(&self, username: &str) -> anyhow::Result<Option<PathBuf>> {
        let Some(api) = self.apiserver.as_ref() else {
            return Ok(None);
        };
        let token = unique("token");
        api.add_token(
            &token,
            fleetlet_test_apiserver::UserInfo {
                username: username.into(),
                uid: String::new(),
                groups: vec![
                    "system:serviceaccounts".into(),
                    "system:authenticated".into(),
                ],
            },
        );
        let path = self.dir.join(format!("kubeconfig-{token}"));
        std::fs::write(&path, api.kubeconfig_for_token(&token))?;
        Ok(Some(path))
    }

    /// Create namespace `name` unless it exists.
    pub async fn ensure_namespace(&self, name: &str) -> anyhow::Result<()> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        if api.get_opt(name).await?.is_none() {
            let ns: Namespace =
                serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
            match api.create(&Default::default(), &ns).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Server-side apply fleetlet's CRDs and wait until they are established.
    pub async fn install_crds(&self) -> anyhow::Result<()> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        for crd in fleetlet_crds::generate::crds() {
            let name = crd.metadata.name.clone().context("CRD without name")?;
            api.patch(
                &name,
                &PatchParams::apply("fleetlet-e2e").force(),
                &Patch::Apply(&crd),
            )
            .await?;
            eventually(
                std::time::Duration::from_secs(30),
                &format!("CRD {name} established"),
                || async {
                    let crd = api.get(&name).await.ok()?;
                    let established = crd
                        .status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    established.then_some(())
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Run `kubectl` (or a versioned `kubectl.1.NN`) against this cluster.
    /// Async, so an in-process test apiserver on the same runtime keeps serving while kubectl runs.
    pub async fn kubectl_with(
        &self,
        binary: &str,
        args: &[&str],
        stdin: Option<&str>,
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Output> {
        use std::process::Stdio;
        use tokio::io::AsyncWriteExt;
        let mut cmd = tokio::process::Command::new(binary);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        cmd.envs(envs.iter().copied());
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {binary}"))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes()).await?;
        }
        Ok(child.wait_with_output().await?)
    }

    /// `kubectl get events -A -o json` about the object named `name`: what a user sees. The operator
    /// writes events.k8s.io/v1 Events; kubectl reads them as core/v1 Events.
    pub async fn events_about(&self, name: &str) -> anyhow::Result<String> {
        let selector = format!("involvedObject.name={name}");
        self.kubectl(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            &selector,
            "-o",
            "json",
        ])
        .await
    }

    /// `kubectl ARGS`, failing with its stderr when it fails.
    pub async fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.kubectl_with("kubectl", args, None, &[]).await?;
        if !out.status.success() {
            anyhow::bail!(
                "kubectl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl apply -f -` with `yaml`; returns the output (Ok) or stderr (Err).
    pub async fn apply(&self, yaml: &str) -> Result<String, String> {
        match self
            .kubectl_with("kubectl", &["apply", "-f", "-"], Some(yaml), &[])
            .await
        {
            Ok(out) if out.status.success() => {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            }
            Ok(out) => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Delete `(kind, name)` objects without waiting, ignoring absent ones (a scenario's cleanup on a
    /// real cluster).
    pub async fn delete_quietly(&self, objects: &[(&str, &str)]) {
        for (kind, name) in objects {
            let _ = self
                .kubectl(&["delete", kind, name, "--ignore-not-found", "--wait=false"])
                .await;
        }
    }

    /// `kubectl apply` a Mock DeviceBackend `backend` and a VirtualNode `node` on it.
    pub async fn apply_mock_node(&self, backend: &str, node: &str) -> anyhow::Result<()> {
        self.apply_mock_nodes(backend, &[node]).await
    }

    /// `kubectl apply` a Mock DeviceBackend `backend` and a VirtualNode on it for each of `nodes`.
    pub async fn apply_mock_nodes(
        &self,
        backend: &str,
        nodes: &[impl AsRef<str>],
    ) -> anyhow::Result<()> {
        let mut yaml = mock_backend(backend);
        for n in nodes {
            yaml.push_str("---\n");
            yaml.push_str(&virtual_node(n.as_ref(), backend));
        }
        self.apply(&yaml).await.map_err(anyhow::Error::msg)?;
        Ok(())
    }

    /// The Node `name` once it is Ready (within `timeout`).
    pub async fn ready_node(
        &self,
        name: &str,
        timeout: std::time::Duration,
    ) -> anyhow::Result<Node> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        eventually(timeout, &format!("Node {name} Ready"), || async {
            nodes.get_opt(name).await.ok().flatten().filter(node_ready)
        })
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client for the cluster a kubeconfig names.
pub async fn client_for(kubeconfig: &Path) -> anyhow::Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// `prefix-xxxxxx` with a random suffix, so scenarios on a shared real cluster never collide.
pub fn unique(prefix: &str) -> String {
    use rand::Rng;
    let n: u32 = rand::rng().random_range(0..0xff_ffff);
    format!("{prefix}-{n:06x}")
}
