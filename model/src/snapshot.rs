use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::{Cluster, Filter, ListenerTls, Meta, Redirect, RouteMatch, RoutePolicy, Str};

/// One immutable, complete routing configuration for a proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Snapshot {
    /// Set by whoever publishes the snapshot; increases with every change.
    pub version: u64,
    pub listeners: Arc<[Listener]>,
    pub clusters: Arc<[Cluster]>,
    /// Mesh scopes: the PeerAuthentications a sidecar resolves its inbound mode from.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub peer_authentications: Arc<[crate::identity::PeerAuthenticationPolicy]>,
    /// The AuthorizationPolicies this proxy enforces (gateway: before routing; sidecar: on
    /// inbound requests), already narrowed to the proxy's workload.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub authorization: Arc<[crate::authz::AuthzPolicy]>,
    /// The RequestAuthentications this proxy enforces (where AuthorizationPolicy is).
    #[serde(default, skip_serializing_if = "is_empty")]
    pub request_authentication: Arc<[crate::jwt::JwtPolicy]>,
    /// Mesh scopes: destinations a sidecar lets out beyond the Services it knows by
    /// ClusterIP (ServiceEntries, VirtualService `tls`/`tcp` routes), per port.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub outbound: Arc<[crate::OutboundPort]>,
    /// Mesh scopes: the outbound traffic policy a Sidecar resource sets for this workload
    /// (true: REGISTRY_ONLY), over the sidecar's `--outbound-traffic-policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_only: Option<bool>,
}

impl Snapshot {
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| &*c.name == name)
    }

    pub fn outbound_port(&self, port: u16) -> Option<&crate::OutboundPort> {
        self.outbound.iter().find(|o| o.port == port)
    }
}

/// A port the proxy listens on, with its virtual hosts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    pub name: Str,
    pub port: u16,
    /// Objects that asked for this port (Gateway listeners, Istio Gateway servers, Ingress).
    pub sources: Arc<[Meta]>,
    pub virtual_hosts: Arc<[VirtualHost]>,
    /// Present when the listener terminates TLS (HTTPS, or TLS terminated before a stream
    /// route); absent for plain HTTP, TCP and TLS passthrough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// Present on a port that relays whole connections (TCP, TLS) instead of serving HTTP
    /// requests; its `virtual_hosts` are then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<crate::StreamRoutes>,
    /// On an HTTPS port: TLS connections whose server name one of these routes matches pass
    /// through untouched to its backends (ingress-nginx `ssl-passthrough`); the others are
    /// terminated and served as HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passthrough: Option<crate::StreamRoutes>,
}

/// Routes for one hostname pattern on a listener.
///
/// `hostname` is an exact name (`foo.example.com`), a wildcard (`*.example.com`) or `*`.
/// A request is served by the most specific virtual host only, as Gateway API requires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualHost {
    pub hostname: Str,
    /// Already in precedence order: the proxy takes the first route that matches.
    pub routes: Arc<[Route]>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The route object (HTTPRoute, VirtualService, Ingress) this came from.
    pub meta: Meta,
    /// Stable name for metrics and logs: `<namespace>/<name>/rule/<n>/match/<m>`.
    pub name: Str,
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub filters: Arc<[Filter]>,
    pub action: Action,
    #[serde(default, skip_serializing_if = "RoutePolicy::is_empty")]
    pub policy: RoutePolicy,
}

fn is_empty<T>(items: &Arc<[T]>) -> bool {
    items.is_empty()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Forward to one of the weighted backends.
    Forward(Arc<[WeightedBackend]>),
    Redirect(Redirect),
    /// Answer directly, e.g. 500 for a rule whose backends are all invalid.
    Direct {
        status: u16,
        body: Str,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedBackend {
    pub weight: u32,
    pub target: BackendTarget,
    /// Filters that apply only when this backend is picked.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub filters: Arc<[Filter]>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendTarget {
    Cluster(Str),
    /// A reference that could not be resolved: requests picking it get `status`,
    /// and `reason` is shown in logs and in the response's cause header.
    Invalid {
        status: u16,
        reason: Str,
    },
}
