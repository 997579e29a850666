//! Where node keys and certificates live: one Secret of type `kubernetes.io/tls` per node and kind, in
//! the operator's namespace, labelled with the node and the kind, owned by whatever the caller names
//! (the VirtualNode), so deleting the owner deletes them. A restarted operator reads them back.
//!
//! Which of them exist is asked of one label-selected metadata LIST shared by every lookup in the few
//! seconds after it ([`SecretIndex`]): a fleet coming up looks for two Secrets per node, mostly absent,
//! and a GET each would be two requests per node for nothing.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};
use tracing::warn;

use super::pem::CertKind;

/// Where and how Secrets are written.
#[derive(Clone)]
pub struct SecretStore {
    pub client: Client,
    pub namespace: String,
    /// Label key whose value is the node name (e.g. `fleetlet.dev/virtual-node`).
    pub node_label: String,
    /// Label key whose value is `client` or `serving` (e.g. `fleetlet.dev/certificate`).
    pub kind_label: String,
    pub field_manager: String,
    pub index: SecretIndex,
}

/// How long one LIST answers lookups. A Secret written by this process meanwhile is added to it; one
/// written by another (a shard changing hands) may be missed, which costs a needless new certificate,
/// never a wrong one.
const INDEX_FRESH: Duration = Duration::from_secs(10);

/// The names of the certificate Secrets that existed at the last LIST, while it is fresh.
#[derive(Clone, Debug, Default)]
pub struct SecretIndex(Arc<tokio::sync::Mutex<Option<Listed>>>);

/// When the LIST was answered, and the names in it (`None`: it failed, so every Secret may exist and
/// is read; the failure is not retried per lookup while fresh).
type Listed = (Instant, Option<HashSet<String>>);

/// A key and its certificate chain, PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPairPem {
    pub key_pem: String,
    pub cert_pem: String,
}

/// Secret name for `node`'s `kind` certificate: `<node>-<kind>-cert`, shortened with a hash when the
/// node name is too long for a Secret name.
pub fn secret_name(node: &str, kind: CertKind) -> String {
    let suffix = format!("-{}-cert", kind.as_str());
    if node.len() + suffix.len() <= 253 {
        return format!("{node}{suffix}");
    }
    let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let keep = 253 - suffix.len() - 17;
    let head: String = node.chars().take(keep).collect();
    format!("{head}-{hash:016x}{suffix}")
}

impl SecretStore {
    fn api(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Whether the Secret `name` may exist: from a fresh LIST (one at a time; lookups arriving
    /// meanwhile wait for it), or `true` when the LIST fails (the caller's GET then tells).
    async fn may_exist(&self, name: &str) -> bool {
        let mut index = self.index.0.lock().await;
        if let Some((at, names)) = index.as_ref()
            && at.elapsed() < INDEX_FRESH
        {
            return names.as_ref().is_none_or(|n| n.contains(name));
        }
        let listed = self
            .api()
            .list_metadata(&ListParams::default().labels(&self.node_label))
            .await;
        match listed {
            Ok(list) => {
                let names: HashSet<String> = list
                    .items
                    .into_iter()
                    .filter_map(|s| s.metadata.name)
                    .collect();
                let found = names.contains(name);
                *index = Some((Instant::now(), Some(names)));
                found
            }
            Err(e) => {
                warn!(error = %e, "listing certificate Secrets failed; reading the Secret instead");
                *index = Some((Instant::now(), None));
                true
            }
        }
    }

    /// The stored pair, if any.
    ///
    /// # Errors
    /// API errors other than NotFound.
    pub async fn load(
        &self,
        node: &str,
        kind: CertKind,
    ) -> Result<Option<KeyPairPem>, kube::Error> {
        let name = secret_name(node, kind);
        if !self.may_exist(&name).await {
            return Ok(None);
        }
        let Some(secret) = self.api().get_opt(&name).await? else {
            return Ok(None);
        };
        let data = secret.data.unwrap_or_default();
        let text = |k: &str| {
            data.get(k)
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        };
        Ok(match (text("tls.key"), text("tls.crt")) {
            (Some(key_pem), Some(cert_pem)) => Some(KeyPairPem { key_pem, cert_pem }),
            _ => None,
        })
    }

    /// Write (create or replace the content of) the Secret with server-side apply.
    ///
    /// # Errors
    /// API errors.
    pub async fn save(
        &self,
        node: &str,
        kind: CertKind,
        pair: &KeyPairPem,
        owner: Option<&OwnerReference>,
    ) -> Result<(), kube::Error> {
        let name = secret_name(node, kind);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (self.node_label.clone(), node.to_string()),
                    (self.kind_label.clone(), kind.as_str().to_string()),
                ])),
                owner_references: owner.map(|o| vec![o.clone()]),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(BTreeMap::from([
                (
                    "tls.crt".into(),
                    ByteString(pair.cert_pem.clone().into_bytes()),
                ),
                (
                    "tls.key".into(),
                    ByteString(pair.key_pem.clone().into_bytes()),
                ),
            ])),
            ..Default::default()
        };
        let mut value = serde_json::to_value(&secret).map_err(kube::Error::SerdeError)?;
        value["apiVersion"] = "v1".into();
        value["kind"] = "Secret".into();
        self.api()
            .patch(
                &name,
                &PatchParams::apply(&self.field_manager).force(),
                &Patch::Apply(value),
            )
            .await?;
        if let Some((_, Some(names))) = self.index.0.lock().await.as_mut() {
            names.insert(name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_valid_and_distinct() {
        assert_eq!(
            secret_name("edge-0", CertKind::Client),
            "edge-0-client-cert"
        );
        assert_eq!(
            secret_name("edge-0", CertKind::Serving),
            "edge-0-serving-cert"
        );
        let long = "a".repeat(250);
        let (a, b) = (
            secret_name(&long, CertKind::Serving),
            secret_name(&format!("{long}b"), CertKind::Serving),
        );
        assert!(a.len() <= 253 && b.len() <= 253);
        assert_ne!(a, b);
    }
}
