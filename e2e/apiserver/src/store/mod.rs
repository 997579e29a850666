//! The object store: every object as a `serde_json::Value` in memory, one global monotonically
//! increasing resourceVersion, and a bounded event history that watches resume from.
//!
//! All writes go through [`Store::create`], [`Store::mutate`] and [`Store::delete`] under one lock, so
//! every write gets the next resourceVersion and its watch event in commit order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::errors::{ApiError, Cause};
use crate::resources::{self, ResourceDef};
use crate::{kinds, meta};

mod cascade;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    /// [`ResourceDef::key`] of the changed object's resource.
    pub resource: String,
    pub etype: EventType,
    pub object: Value,
    pub old: Option<Value>,
}

/// `DeleteOptions` the store understands.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    pub grace: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub propagation: Option<String>,
}

/// What a delete did.
#[derive(Debug)]
pub struct Deleted {
    pub object: Value,
    /// False when the object stays (finalizers or graceful deletion pending).
    pub removed: bool,
}

type Objects = BTreeMap<(String, String), Value>;

struct State {
    rv: u64,
    defs: Vec<Arc<ResourceDef>>,
    objects: HashMap<String, Objects>,
    history: VecDeque<Arc<Event>>,
    /// Every event with rv > floor is still in `history`.
    floor: u64,
    cap: usize,
}

pub struct Store {
    state: Mutex<State>,
    tick: watch::Sender<u64>,
}

const NS_KEY: &str = "namespaces";

impl Store {
    pub fn new(history: usize) -> Store {
        let defs = resources::builtins().into_iter().map(Arc::new).collect();
        let store = Store {
            state: Mutex::new(State {
                rv: 0,
                defs,
                objects: HashMap::new(),
                history: VecDeque::new(),
                floor: 0,
                cap: history.max(1),
            }),
            tick: watch::channel(0).0,
        };
        if let Some(def) = store.find_def("", "v1", NS_KEY) {
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let obj =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                if let Err(e) = store.create(&def, obj) {
                    tracing::error!(error = %e, "creating built-in namespace");
                }
            }
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver that changes whenever an event is committed (value: the latest rv).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tick.subscribe()
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    pub fn find_def(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.lock()
            .defs
            .iter()
            .find(|d| {
                d.group == group && d.plural == plural && d.versions.iter().any(|v| v == version)
            })
            .cloned()
    }

    pub fn def_by_key(&self, key: &str) -> Option<Arc<ResourceDef>> {
        self.lock().defs.iter().find(|d| d.key() == key).cloned()
    }

    pub fn defs(&self) -> Vec<Arc<ResourceDef>> {
        self.lock().defs.clone()
    }

    pub fn get(&self, def: &ResourceDef, ns: &str, name: &str) -> Result<Value, ApiError> {
        let st = self.lock();
        st.objects
            .get(&def.key())
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, name))
    }

    /// All objects of a resource (in one namespace when `ns` is given), sorted by namespace/name,
    /// with the resourceVersion they were read at.
    pub fn list(&self, def: &ResourceDef, ns: Option<&str>) -> (Vec<Value>, u64) {
        let st = self.lock();
        let items = st
            .objects
            .get(&def.key())
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| ns.is_none_or(|x| x == n))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default();
        (items, st.rv)
    }

    /// Like [`Store::list`], but only the objects `keep` accepts are copied out: controllers that look
    /// for the few objects needing work scan under the lock without cloning the rest.
    pub fn list_where(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        keep: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let st = self.lock();
        st.objects
            .get(&def.key())
            .map(|m| {
                m.iter()
                    .filter(|((n, _), v)| ns.is_none_or(|x| x == n) && keep(v))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Events committed after `rv`; `None` when some of them are no longer kept (410 Expired).
    /// Also returns the resourceVersion the answer is complete up to.
    pub fn events_since(&self, rv: u64) -> Option<(Vec<Arc<Event>>, u64)> {
        let st = self.lock();
        if rv < st.floor {
            return None;
        }
        let start = st.history.partition_point(|e| e.rv <= rv);
        Some((st.history.iter().skip(start).cloned().collect(), st.rv))
    }

    /// The oldest resourceVersion a watch can still resume from.
    pub fn floor(&self) -> u64 {
        self.lock().floor
    }

    pub fn create(&self, def: &ResourceDef, mut obj: Value) -> Result<Value, ApiError> {
        let mut st = self.lock();
        let ns = meta::namespace(&obj).to_string();
        if def.namespaced {
            if ns.is_empty() {
                return Err(ApiError::bad_request(
                    "the namespace of the object is required",
                ));
            }
            if !st.exists(NS_KEY, "", &ns) {
                return Err(ApiError::namespace_not_found(&ns));
            }
        } else {
            meta::meta_mut(&mut obj).remove("namespace");
        }
        let mut name = meta::name(&obj).to_string();
        if name.is_empty()
            && let Some(prefix) = meta::str_at(&obj, &["metadata", "generateName"])
        {
            name = format!("{prefix}{}", random_suffix());
            meta::meta_mut(&mut obj).insert("name".into(), json!(name));
        }
        kinds::validate_name(def, &name)?;
        if st.exists(&def.key(), &ns, &name) {
            return Err(ApiError::already_exists(def, &name));
        }
        kinds::prepare_create(def, &mut obj);
        let m = meta::meta_mut(&mut obj);
        m.insert("uid".into(), json!(meta::uid()));
        m.insert("creationTimestamp".into(), json!(meta::now()));
        m.insert("generation".into(), json!(1));
        for k in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
            "selfLink",
        ] {
            m.remove(k);
        }
        let committed = st.commit(def, EventType::Added, obj, None);
        self.notify(&st);
        Ok(committed)
    }

    /// Read-modify-write of one object: `f` gets the current object and returns the desired one.
    /// A non-empty `metadata.resourceVersion` in the result must match the stored one (409 otherwise).
    /// Completes a pending deletion when the result has no finalizers left.
    pub fn mutate(
        &self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        f: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let mut st = self.lock();
        let old = st
            .get(&def.key(), ns, name)
            .ok_or_else(|| ApiError::not_found(def, name))?;
        let mut new = f(&old)?;
        let rv = meta::str_at(&new, &["metadata", "resourceVersion"]).unwrap_or("");
        if !rv.is_empty()
            && rv != meta::str_at(&old, &["metadata", "resourceVersion"]).unwrap_or("")
        {
            return Err(ApiError::conflict(def, name));
        }
        if meta::name(&new) != name && !meta::name(&new).is_empty() {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta::name(&new)
            )));
        }
        // Server-owned metadata cannot be changed by an update.
        let om = old.get("metadata").cloned().unwrap_or_default();
        let m = meta::meta_mut(&mut new);
        m.insert("name".into(), json!(name));
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "generation",
        ] {
            match om.get(k) {
                Some(v) => m.insert(k.into(), v.clone()),
                None => m.remove(k),
            };
        }
        m.insert(
            "resourceVersion".into(),
            om.get("resourceVersion").cloned().unwrap_or_default(),
        );
        if meta::spec_changed(&old, &new) {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta::meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        let terminating = old.pointer("/metadata/deletionTimestamp").is_some();
        if terminating && meta::finalizers(&new).is_empty() && !kinds::graceful_pending(def, &new) {
            let out = new.clone();
            st.commit(def, EventType::Deleted, new, Some(old));
            self.notify(&st);
            return Ok(out);
        }
        if meta::unchanged(&old, &new) {
            return Ok(old);
        }
        let committed = st.commit(def, EventType::Modified, new, Some(old));
        self.notify(&st);
        Ok(committed)
    }

    pub fn delete(
        &self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Deleted, ApiError> {
        let mut st = self.lock();
        let old = st
            .get(&def.key(), ns, name)
            .ok_or_else(|| ApiError::not_found(def, name))?;
        if let Some(uid) = &opts.uid
            && uid != meta::uid_of(&old)
        {
            return Err(ApiError::precondition(
                def,
                name,
                &format!(
                    "the UID in the precondition ({uid}) does not match the UID in record ({}). The object might have been deleted and then recreated",
                    meta::uid_of(&old)
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version {
            let cur = meta::str_at(&old, &["metadata", "resourceVersion"]).unwrap_or("");
            if rv != cur {
                return Err(ApiError::precondition(
                    def,
                    name,
                    &format!(
                        "the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({cur}). The object might have been modified"
                    ),
                ));
            }
        }
        if opts.propagation.as_deref() == Some("Orphan") {
            st.orphan_dependents(meta::uid_of(&old));
        }
        let (obj, removed) = match kinds::deletion_plan(def, &old, opts) {
            kinds::DeletionPlan::Keep(new) => {
                let changed = !meta::same_content(&old, &new);
                let obj = if changed {
                    st.commit(def, EventType::Modified, new, Some(old))
                } else {
                    old
                };
                (obj, false)
            }
            kinds::DeletionPlan::Remove(last) => {
                let last = match last {
                    Some(l) => st.commit(def, EventType::Modified, l, Some(old)),
                    None => old,
                };
                if def.is("", NS_KEY) {
                    st.delete_namespace_contents(name);
                }
                st.commit(def, EventType::Deleted, last.clone(), None);
                (last, true)
            }
        };
        self.notify(&st);
        Ok(Deleted {
            object: obj,
            removed,
        })
    }

    /// Every stored object with its resource, for controllers that scan (GC, scheduler).
    pub fn scan(&self, mut f: impl FnMut(&ResourceDef, &Value)) {
        let st = self.lock();
        // Aliases (events.k8s.io Events) would visit their storage resource's objects a second time.
        for def in st.defs.iter().filter(|d| d.storage.is_none()) {
            if let Some(m) = st.objects.get(&def.key()) {
                m.values().for_each(|v| f(def, v));
            }
        }
    }

    fn notify(&self, st: &State) {
        self.tick.send_replace(st.rv);
    }
}

impl State {
    fn exists(&self, key: &str, ns: &str, name: &str) -> bool {
        self.objects
            .get(key)
            .is_some_and(|m| m.contains_key(&(ns.to_string(), name.to_string())))
    }

    fn get(&self, key: &str, ns: &str, name: &str) -> Option<Value> {
        self.objects
            .get(key)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    /// Assigns the next resourceVersion, stores (or removes) the object and records the event.
    fn commit(
        &mut self,
        def: &ResourceDef,
        etype: EventType,
        mut obj: Value,
        old: Option<Value>,
    ) -> Value {
        self.rv += 1;
        meta::meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let key = (
            meta::namespace(&obj).to_string(),
            meta::name(&obj).to_string(),
        );
        let map = self.objects.entry(def.key()).or_default();
        if etype == EventType::Deleted {
            map.remove(&key);
        } else {
            map.insert(key, obj.clone());
        }
        self.history.push_back(Arc::new(Event {
            rv: self.rv,
            resource: def.key(),
            etype,
            object: obj.clone(),
            old,
        }));
        while self.history.len() > self.cap {
            if let Some(e) = self.history.pop_front() {
                self.floor = e.rv;
            }
        }
        if def.is("apiextensions.k8s.io", "customresourcedefinitions") {
            self.sync_crd(etype, &obj);
        }
        obj
    }
}

fn random_suffix() -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHA[rand::random_range(0..ALPHA.len())] as char)
        .collect()
}

/// A 422 cause for a required field.
pub fn required(field: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired",
        field: field.into(),
        message: "Required value".into(),
    }
}
