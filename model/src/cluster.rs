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
    /// The Service behind the cluster (also for subsets), for metrics and tracing.
    #[serde(default)]
    pub service: ServiceId,
    pub protocol: UpstreamProtocol,
    /// Ready endpoints only; an empty list means "no healthy upstream" (503).
    pub endpoints: Arc<[Endpoint]>,
    #[serde(default, skip_serializing_if = "is_default_policy")]
    pub policy: ClusterPolicy,
    /// TLS originated to the endpoints (not the mesh's mTLS, which endpoints carry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::UpstreamTls>,
    /// Names the proxy resolves itself (a ServiceEntry with `resolution: DNS`): their
    /// addresses join `endpoints`, refreshed when their DNS answers' TTL runs out.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub dns: Arc<[DnsName]>,
    /// Connections go to the address the client dialled (a ServiceEntry with `resolution:
    /// NONE`); `endpoints` is then empty. Only connection-level forwarding uses it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub original_destination: bool,
}

/// A host name and the port its resolved addresses are dialled on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DnsName {
    pub host: Str,
    pub port: u16,
}

fn is_empty<T>(items: &Arc<[T]>) -> bool {
    items.is_empty()
}

fn is_false(value: &bool) -> bool {
    !value
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
    /// The workload the Pod belongs to, when known; shared by all its endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Arc<Workload>>,
    /// Set when the proxy talks to this endpoint over mesh mTLS: the SPIFFE ID the endpoint
    /// must present (its Pod's ServiceAccount). Auto-mTLS sets it for Pods running a Ferry
    /// sidecar whose PeerAuthentication does not DISABLE it; DestinationRule `tls.mode`
    /// ISTIO_MUTUAL forces it, DISABLE clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<Str>,
}

/// A Kubernetes Service by namespace and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceId {
    pub namespace: Str,
    pub name: Str,
}

impl ServiceId {
    /// The cluster-local host name, as Istio's `destination_service` label spells it.
    pub fn fqdn(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }
}

/// Identity of the Pods behind endpoints, as Istio's telemetry labels name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Workload {
    /// The owning Deployment/StatefulSet/DaemonSet/Job, else the Pod itself.
    pub name: Str,
    pub namespace: Str,
    /// The `app` label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<Str>,
    /// The `version` label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Str>,
    /// `service.istio.io/canonical-name`, else `app.kubernetes.io/name`, else `app`, else the
    /// workload name.
    pub canonical_service: Str,
    /// `service.istio.io/canonical-revision`, else `app.kubernetes.io/version`, else
    /// `version`, else `latest`.
    pub canonical_revision: Str,
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
