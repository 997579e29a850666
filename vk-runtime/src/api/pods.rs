//! The node's pods as the API sees them: [`PodLookup`] (implemented by the pod controller) finds a
//! pod's UID from namespace/name and lists the node's pods; routes `/pods`, `/runningpods`,
//! `/healthz`.

use axum::Extension;
use axum::Json;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use super::AppState;
use super::errors::ApiError;
use crate::provider::PodRef;

/// The pods bound to this node, as the pod controller knows them.
pub trait PodLookup: Send + Sync + 'static {
    /// The pod `namespace/name` on this node, if any.
    fn lookup(&self, namespace: &str, name: &str) -> Option<PodRef>;

    /// Every pod bound to this node (for `/pods`).
    fn pods(&self) -> Vec<Pod>;
}

fn pod_list(items: Vec<Pod>) -> Value {
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
}

/// `GET /pods`: the node's pods as a PodList.
pub async fn pods(Extension(state): Extension<AppState>) -> Json<Value> {
    Json(pod_list(state.api.pods.pods()))
}

/// `GET /runningpods`: what the backend runs now, as a PodList of bare pods.
pub async fn running_pods(Extension(state): Extension<AppState>) -> Result<Json<Value>, ApiError> {
    let refs = state.api.provider.list_pods().await?;
    let items = refs
        .into_iter()
        .map(|r| Pod {
            metadata: ObjectMeta {
                name: Some(r.name),
                namespace: Some(r.namespace),
                uid: Some(r.uid),
                ..Default::default()
            },
            ..Default::default()
        })
        .collect();
    Ok(Json(pod_list(items)))
}

/// `GET /healthz`.
pub async fn healthz() -> &'static str {
    "ok"
}
