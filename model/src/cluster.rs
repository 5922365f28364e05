use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::{ClusterPolicy, Meta, Str};

/// A set of interchangeable upstream endpoints: one Service port, optionally narrowed to a
/// DestinationRule subset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// Unique key referenced by routes, e.g. `default/reviews:9080` or `default/reviews:9080/v2`.
    pub name: Str,
    /// The Service (or DestinationRule for subsets) this cluster comes from.
    pub meta: Meta,
    pub protocol: UpstreamProtocol,
    /// Ready endpoints only; an empty list means "no healthy upstream" (503).
    pub endpoints: Arc<[Endpoint]>,
    #[serde(default, skip_serializing_if = "is_default_policy")]
    pub policy: ClusterPolicy,
}

fn is_default_policy(policy: &ClusterPolicy) -> bool {
    policy == &ClusterPolicy::default()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub address: SocketAddr,
    /// The Pod behind the endpoint, when the EndpointSlice named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Str>,
}

/// How the proxy talks to the upstream: decided by the Service port's appProtocol or name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// HTTP/2 over cleartext with prior knowledge.
    H2c,
}
