use serde::{Deserialize, Serialize};
use std::fmt;

use crate::Str;

/// Provenance of an IR node: the Kubernetes object it was translated from.
///
/// Kept on every route and cluster so logs, metrics, `/config_dump` and status reports can
/// name the object a user wrote rather than an internal index.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Meta {
    pub kind: Str,
    pub namespace: Str,
    pub name: Str,
}

impl Meta {
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        Meta {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}
