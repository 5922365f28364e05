//! Ferry's own resources (`policy.ferry.dev`), as Ferry reads them: unknown fields are
//! rejected with their path, like the Istio kinds.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// The API group of Ferry's own kinds.
pub const GROUP: &str = "policy.ferry.dev";

/// LocalRateLimitPolicy: a token bucket per proxy on the routes of its targets (Gateway API
/// policy attachment: `targetRefs` in the policy's namespace).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalRateLimitPolicy {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: LocalRateLimitSpec,
    /// Written by the controller; read back only to keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalRateLimitSpec {
    /// Gateway, HTTPRoute, GRPCRoute (gateway.networking.k8s.io), VirtualService
    /// (networking.istio.io), Ingress (networking.k8s.io) or Service (core: group "").
    pub target_refs: Vec<TargetRef>,
    pub limit: Limit,
    /// Requests allowed at once after a quiet spell; default: `limit.requests`.
    #[serde(default)]
    pub burst: Option<u32>,
    /// What requests share a bucket; default: all requests of the target (`Route`).
    #[serde(default)]
    pub key: Option<Key>,
    /// The status of a limited request; default 429.
    #[serde(default)]
    pub status_code: Option<u16>,
    /// Client address ranges the limit does not apply to.
    #[serde(default)]
    pub exempt_source_ranges: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    pub name: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limit {
    pub requests: u32,
    pub unit: Unit,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unit {
    #[default]
    Second,
    Minute,
    Hour,
}

impl Unit {
    pub fn millis(self) -> u64 {
        match self {
            Unit::Second => 1_000,
            Unit::Minute => 60_000,
            Unit::Hour => 3_600_000,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Key {
    #[serde(rename = "type")]
    pub type_: KeyType,
    /// With `type: Header`: the header whose value picks the bucket.
    #[serde(default)]
    pub header: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyType {
    #[default]
    Route,
    #[serde(rename = "ClientIP")]
    ClientIp,
    Header,
}
