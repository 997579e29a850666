//! Writes that fan out from one commit: registering/unregistering a CRD's resource (and dropping
//! its objects), emptying a deleted namespace, and orphaning dependents for `propagationPolicy: Orphan`.

use std::sync::Arc;

use serde_json::Value;

use super::{EventType, State};
use crate::crd;
use crate::resources::ResourceDef;

impl State {
    pub(super) fn sync_crd(&mut self, etype: EventType, crd_obj: &Value) {
        let Some(new_def) = crd::registry::def_from_crd(crd_obj) else {
            return;
        };
        let key = new_def.key();
        self.defs.retain(|d| d.key() != key);
        if etype == EventType::Deleted {
            let gone: Vec<Value> = self
                .objects
                .remove(&key)
                .map(|m| m.into_values().collect())
                .unwrap_or_default();
            for o in gone {
                self.commit(&new_def, EventType::Deleted, o, None);
            }
        } else {
            self.defs.push(Arc::new(new_def));
        }
    }

    pub(super) fn delete_namespace_contents(&mut self, ns: &str) {
        let defs: Vec<Arc<ResourceDef>> =
            self.defs.iter().filter(|d| d.namespaced).cloned().collect();
        for def in defs {
            let victims: Vec<Value> = self
                .objects
                .get(&def.key())
                .map(|m| {
                    m.iter()
                        .filter(|((n, _), _)| n == ns)
                        .map(|(_, v)| v.clone())
                        .collect()
                })
                .unwrap_or_default();
            for v in victims {
                self.commit(&def, EventType::Deleted, v, None);
            }
        }
    }

    pub(super) fn orphan_dependents(&mut self, owner_uid: &str) {
        let defs = self.defs.clone();
        for def in defs {
            let deps: Vec<Value> = self
                .objects
                .get(&def.key())
                .map(|m| {
                    m.values()
                        .filter(|v| crate::controllers::gc::owned_by(v, owner_uid))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            for d in deps {
                let mut new = d.clone();
                if let Some(refs) = new
                    .pointer_mut("/metadata/ownerReferences")
                    .and_then(Value::as_array_mut)
                {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
                }
                self.commit(&def, EventType::Modified, new, Some(d));
            }
        }
    }
}
