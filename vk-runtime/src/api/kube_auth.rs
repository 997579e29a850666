//! An [`Authorizer`] backed by the cluster: TokenReview for bearer tokens and SubjectAccessReview on
//! `nodes/<subresource>` of this node, with answers cached briefly (the kubelet's webhook defaults:
//! tokens 2 min, allowed 5 min, denied 30 s) in bounded caches.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;

use super::auth::{AuthError, Authorizer, Decision, RequestAttributes, UserInfo};

const TOKEN_TTL: Duration = Duration::from_secs(120);
const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);
const MAX_ENTRIES: usize = 4096;

/// A small TTL cache; cleared whole when full (answers are cheap to ask again).
struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(v, _)| v.clone())
    }

    fn put(&self, key: K, value: V, ttl: Duration) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                let now = Instant::now();
                entries.retain(|_, (_, until)| *until > now);
                if entries.len() >= MAX_ENTRIES {
                    entries.clear();
                }
            }
            entries.insert(key, (value, Instant::now() + ttl));
        }
    }
}

/// TokenReview + SubjectAccessReview against the apiserver, for one node.
pub struct KubeAuthorizer {
    client: kube::Client,
    node_name: String,
    tokens: TtlCache<String, Option<UserInfo>>,
    decisions: TtlCache<(UserInfo, RequestAttributes), Decision>,
}

impl KubeAuthorizer {
    /// `client` needs `create` on tokenreviews and subjectaccessreviews (a node identity has both).
    pub fn new(client: kube::Client, node_name: impl Into<String>) -> Self {
        Self {
            client,
            node_name: node_name.into(),
            tokens: TtlCache::new(),
            decisions: TtlCache::new(),
        }
    }

    /// The SubjectAccessReview asked for `user` doing `attrs` on this node.
    pub fn review_for(&self, user: &UserInfo, attrs: &RequestAttributes) -> SubjectAccessReview {
        SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                groups: Some(user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(attrs.verb.to_string()),
                    resource: Some(attrs.resource.to_string()),
                    subresource: Some(attrs.subresource.to_string()),
                    name: Some(self.node_name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

#[async_trait]
impl Authorizer for KubeAuthorizer {
    async fn authenticate_token(&self, token: &str) -> Result<Option<UserInfo>, AuthError> {
        if let Some(cached) = self.tokens.get(&token.to_string()) {
            return Ok(cached);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Backend(e.to_string()))?;
        let user = answer
            .status
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user)
            .map(|u| UserInfo {
                name: u.username.unwrap_or_default(),
                uid: u.uid.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
                extra: u.extra.unwrap_or_default().into_iter().collect(),
            });
        self.tokens.put(token.to_string(), user.clone(), TOKEN_TTL);
        Ok(user)
    }

    async fn authorize(
        &self,
        user: &UserInfo,
        attrs: &RequestAttributes,
    ) -> Result<Decision, AuthError> {
        let key = (user.clone(), attrs.clone());
        if let Some(cached) = self.decisions.get(&key) {
            return Ok(cached);
        }
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &self.review_for(user, attrs))
            .await
            .map_err(|e| AuthError::Backend(e.to_string()))?;
        let status = answer.status.unwrap_or_default();
        let (decision, ttl) = if status.allowed {
            (Decision::Allow, ALLOWED_TTL)
        } else {
            (
                Decision::Deny {
                    reason: status.reason.unwrap_or_default(),
                },
                DENIED_TTL,
            )
        };
        self.decisions.put(key, decision.clone(), ttl);
        Ok(decision)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cache_expires_and_stays_bounded() {
        let cache = TtlCache::new();
        cache.put("a".to_string(), 1, Duration::from_secs(60));
        cache.put("b".to_string(), 2, Duration::ZERO);
        assert_eq!(cache.get(&"a".to_string()), Some(1));
        assert_eq!(cache.get(&"b".to_string()), None);
        for i in 0..(MAX_ENTRIES * 2) {
            cache.put(i.to_string(), i, Duration::from_secs(60));
        }
        assert!(cache.entries.lock().unwrap().len() <= MAX_ENTRIES);
    }
}
