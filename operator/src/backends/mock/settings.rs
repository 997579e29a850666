//! The live settings of a mock device (from its `MockBackend`) and what its pods share.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::Duration;

use fleetlet_crds::MockBackend;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use vk_runtime::PodNotifier;

/// The live settings of a mock device, from its `MockBackend`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    pub start_delay: Duration,
    pub exit_after: Option<Duration>,
    pub exit_code: i32,
    pub capacity: Option<BTreeMap<String, Quantity>>,
    pub healthy: bool,
}

impl From<&MockBackend> for Settings {
    fn from(spec: &MockBackend) -> Self {
        Self {
            start_delay: Duration::from_millis(spec.start_delay_ms.unwrap_or(0).into()),
            exit_after: spec
                .exit_after_ms
                .map(|ms| Duration::from_millis(ms.into())),
            exit_code: spec.exit_code.unwrap_or(0),
            capacity: spec.capacity.clone(),
            healthy: spec.healthy.unwrap_or(true),
        }
    }
}

/// What every pod of one device shares.
pub struct Shared {
    pub settings: RwLock<Settings>,
    pub notifier: RwLock<Option<PodNotifier>>,
}

impl Shared {
    pub fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// FNV-1a: a stable hash for IPs, container IDs and stats (std's hasher may change between releases).
pub fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0xff]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}
