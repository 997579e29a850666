//! The four PATCH content types kube-apiserver accepts: JSON merge (RFC 7386), JSON patch (RFC 6902),
//! strategic merge, and server-side apply. Each turns (current object, patch body) into the desired
//! object; the caller then stores it through the normal update path. `managedFields`: [`apply`] for
//! server-side apply, [`update`] for every other write.

pub mod apply;
pub mod json;
pub mod merge;
pub mod strategic;
pub mod update;

/// How a list field merges.
#[derive(Debug, Clone, PartialEq)]
pub enum ListStrategy {
    /// The patch's list replaces the stored one (atomic).
    Replace,
    /// Items are merged by these key fields.
    MergeKeys(Vec<String>),
    /// A list of scalars merged as a set (union).
    MergePrimitive,
}

/// The list strategy for field `field` under the path `path` (field names, list indices omitted).
pub type KeyFn<'a> = &'a dyn Fn(&[String], &str, &[serde_json::Value]) -> ListStrategy;

/// A patch content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}
