//! Authorization of API requests, as a kube-apiserver with `--authorization-mode=Node,RBAC` and the
//! NodeRestriction admission plugin treats node identities (user `system:node:<name>` in group
//! `system:nodes`): [`node`] is the Node authorizer together with the bootstrap `system:node` RBAC
//! rules, [`noderestriction`] the admission plugin that checks the objects a node writes.
//! Everyone else is allowed everything: this server has no RBAC for other users (requests without
//! credentials are the admin; SubjectAccessReviews keep their pluggable answer).
//!
//! A denied request gets kube-apiserver's 403 `Status`: `<resource> "<name>" is forbidden: User
//! "<user>" cannot <verb> resource "<resource>" in API group "<group>" in the namespace "<ns>"`
//! (or `at the cluster scope`), followed by `: <reason>` when the Node authorizer gave one.

pub mod node;
pub mod noderestriction;

use crate::errors::ApiError;
use crate::server::UserInfo;
use crate::store::Store;

/// The group of node identities.
pub const NODES_GROUP: &str = "system:nodes";
/// The user name prefix of node identities.
pub const NODE_USER_PREFIX: &str = "system:node:";

/// What a request asks to do, named as kube-apiserver's authorizer attributes name it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    pub group: String,
    /// Plural resource; empty for a non-resource request (discovery, health).
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    /// The object's name: from the path, or for list/watch from a `metadata.name=` field
    /// selector (as kube-apiserver's request info does); empty for create.
    pub name: String,
    /// The request's `fieldSelector`, for rules scoped by it.
    pub field_selector: String,
    /// The request path, for non-resource requests.
    pub path: String,
}

impl Attributes {
    /// Whether the field selector requires `field` to equal `value`.
    pub fn selects(&self, field: &str, value: &str) -> bool {
        selector_value(&self.field_selector, field) == Some(value)
    }
}

/// The value an `=`/`==` requirement of a field selector gives `field`.
pub fn selector_value<'a>(selector: &'a str, field: &str) -> Option<&'a str> {
    selector.split(',').find_map(|req| {
        let (k, v) = req.split_once('=')?;
        (k.trim() == field && !k.ends_with('!')).then(|| v.trim_start_matches('=').trim())
    })
}

/// Why a request was allowed or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Not allowed; the reason (possibly empty) is appended to the 403 message.
    Deny(String),
}

impl Decision {
    fn deny(reason: impl Into<String>) -> Decision {
        Decision::Deny(reason.into())
    }
}

/// The node a user is: `Some(name)` for `system:node:<name>` in group `system:nodes` (the name
/// may be empty: an unidentifiable node), `None` for everyone else.
pub fn node_identity(user: &UserInfo) -> Option<&str> {
    let name = user.username.strip_prefix(NODE_USER_PREFIX)?;
    user.groups.iter().any(|g| g == NODES_GROUP).then_some(name)
}

/// Allows or refuses a request (see the module docs).
pub fn authorize(store: &Store, user: &UserInfo, attrs: &Attributes) -> Result<(), ApiError> {
    let Some(node) = node_identity(user) else {
        return Ok(());
    };
    match node::authorize(store, node, &user.username, attrs) {
        Decision::Allow => Ok(()),
        Decision::Deny(reason) => Err(forbidden(&user.username, attrs, &reason)),
    }
}

/// kube-apiserver's 403 for a request the authorizers refused.
pub fn forbidden(username: &str, a: &Attributes, reason: &str) -> ApiError {
    let mut msg = if a.resource.is_empty() {
        format!("User {username:?} cannot {} path {:?}", a.verb, a.path)
    } else {
        let resource = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let scope = if a.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {:?}", a.namespace)
        };
        format!(
            "User {username:?} cannot {} resource {resource:?} in API group {:?} {scope}",
            a.verb, a.group
        )
    };
    if !reason.is_empty() {
        msg = format!("{msg}: {reason}");
    }
    ApiError::forbidden(&a.group, &a.resource, &a.name, msg)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            username: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn node_identities() {
        assert_eq!(
            node_identity(&user("system:node:a", &["system:nodes"])),
            Some("a")
        );
        assert_eq!(
            node_identity(&user("system:node:", &["system:nodes"])),
            Some("")
        );
        assert_eq!(node_identity(&user("system:node:a", &[])), None);
        assert_eq!(node_identity(&user("admin", &["system:nodes"])), None);
    }

    #[test]
    fn field_selectors() {
        let s = "metadata.namespace=x,spec.nodeName==edge-0";
        assert_eq!(selector_value(s, "spec.nodeName"), Some("edge-0"));
        assert_eq!(selector_value(s, "metadata.name"), None);
        assert_eq!(selector_value("spec.nodeName!=a", "spec.nodeName"), None);
    }

    #[test]
    fn forbidden_wording() {
        let a = Attributes {
            verb: "get".into(),
            resource: "secrets".into(),
            namespace: "default".into(),
            name: "nope".into(),
            ..Default::default()
        };
        let e = forbidden(
            "system:node:rec-node",
            &a,
            "no relationship found between node 'rec-node' and this object",
        );
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "secrets \"nope\" is forbidden: User \"system:node:rec-node\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'rec-node' and this object"
        );
        let a = Attributes {
            verb: "list".into(),
            resource: "nodes".into(),
            ..Default::default()
        };
        assert_eq!(
            forbidden("system:anonymous", &a, "").message,
            "nodes is forbidden: User \"system:anonymous\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
        );
    }
}
