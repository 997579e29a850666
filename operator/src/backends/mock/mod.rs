//! The Mock backend (work in progress).

use std::time::Duration;

use fleetlet_crds::MockBackend;
use vk_runtime::{
    BackendPodStatus, Health, NodeResources, PodNotifier, PodRef, Provider, ProviderError,
    ResolvedPod,
};

/// A simulated device.
pub struct MockProvider {}

impl MockProvider {
    pub fn new(_spec: &MockBackend, _node: &str) -> Self {
        Self {}
    }
    pub fn update(&self, _spec: &MockBackend) {}
}

#[async_trait::async_trait]
impl Provider for MockProvider {
    async fn node_resources(&self) -> Result<NodeResources, ProviderError> {
        Ok(NodeResources::default())
    }
    async fn health(&self) -> Health {
        Health::healthy()
    }
    fn set_notifier(&self, _: PodNotifier) {}
    async fn create_pod(&self, _pod: &ResolvedPod) -> Result<(), ProviderError> {
        Ok(())
    }
    async fn delete_pod(&self, _: &PodRef, _: Duration) -> Result<(), ProviderError> {
        Ok(())
    }
    async fn pod_status(&self, _: &PodRef) -> Result<Option<BackendPodStatus>, ProviderError> {
        Ok(None)
    }
    async fn list_pods(&self) -> Result<Vec<PodRef>, ProviderError> {
        Ok(vec![])
    }
}
