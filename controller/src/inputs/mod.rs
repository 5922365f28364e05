//! Typed Kubernetes objects the translator reads, and loading them from YAML/JSON manifests.

pub mod authz;
pub mod ferry;
pub mod istio;
mod load;
pub mod security;

use gateway_api::apis::standard::{
    gatewayclasses::GatewayClass, gateways::Gateway, grpcroutes::GrpcRoute,
    referencegrants::ReferenceGrant,
};
// HTTPRoute is read with the experimental-channel types (a superset) so `retry` is kept.
use gateway_api::apis::experimental::httproutes::HttpRoute;
use gateway_api::apis::experimental::tcproutes::TcpRoute;
use gateway_api::apis::standard::backendtlspolicies::BackendTlsPolicy;
use gateway_api::apis::standard::tlsroutes::TlsRoute;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

pub use load::{
    decode_api_object, load_path, manifest_files, parse_manifests, FieldError, LoadError,
    READ_GROUPS,
};

/// Every object the translator looks at, in the order they were read.
///
/// Document order matters only as the last tie-breaker (Istio merges VirtualServices in
/// creation order and standalone manifests rarely carry creation timestamps).
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    pub gateway_classes: Vec<GatewayClass>,
    pub gateways: Vec<Gateway>,
    pub http_routes: Vec<HttpRoute>,
    pub grpc_routes: Vec<GrpcRoute>,
    pub tls_routes: Vec<TlsRoute>,
    pub tcp_routes: Vec<TcpRoute>,
    pub reference_grants: Vec<ReferenceGrant>,
    pub istio_gateways: Vec<istio::Gateway>,
    pub virtual_services: Vec<istio::VirtualService>,
    pub destination_rules: Vec<istio::DestinationRule>,
    pub service_entries: Vec<istio::ServiceEntry>,
    pub sidecars: Vec<istio::Sidecar>,
    pub peer_authentications: Vec<security::PeerAuthentication>,
    pub authorization_policies: Vec<authz::AuthorizationPolicy>,
    pub request_authentications: Vec<security::RequestAuthentication>,
    pub ingresses: Vec<Ingress>,
    pub ingress_classes: Vec<IngressClass>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub pods: Vec<Pod>,
    pub namespaces: Vec<Namespace>,
    /// Only for Gateway addresses of NodePort Services.
    pub nodes: Vec<Node>,
    /// TLS certificates for HTTPS listeners (kubernetes.io/tls Secrets).
    pub secrets: Vec<Secret>,
    /// CA bundles (`ca.crt`) for BackendTLSPolicy, other keys dropped when read; and the
    /// controller replicas' reports (crate::applied), whole.
    pub config_maps: Vec<ConfigMap>,
    pub backend_tls_policies: Vec<BackendTlsPolicy>,
    pub rate_limit_policies: Vec<ferry::LocalRateLimitPolicy>,
    /// Objects of the API groups Ferry reads that could not be read (a kind Ferry does not
    /// serve, an unknown field...): from the API server only, so their statuses can say why.
    pub rejected: Vec<Rejected>,
    /// Key sets fetched for RequestAuthentication `jwksUri`s (and OpenID discovery), by
    /// [`crate::jwks::KeySource::key`]: filled by whoever fetched them, never read from files.
    pub jwks: std::collections::BTreeMap<String, crate::jwks::FetchedJwks>,
}

/// An object left out because it could not be read, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejected {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub message: String,
    /// `spec.parentRefs` as written (routes of a kind Ferry does not serve get a parent
    /// status saying so).
    pub parent_refs: serde_json::Value,
}

/// One parsed manifest document.
#[derive(Clone, Debug)]
pub enum Object {
    GatewayClass(Box<GatewayClass>),
    Gateway(Box<Gateway>),
    HttpRoute(Box<HttpRoute>),
    GrpcRoute(Box<GrpcRoute>),
    TlsRoute(Box<TlsRoute>),
    TcpRoute(Box<TcpRoute>),
    ReferenceGrant(Box<ReferenceGrant>),
    IstioGateway(Box<istio::Gateway>),
    VirtualService(Box<istio::VirtualService>),
    DestinationRule(Box<istio::DestinationRule>),
    ServiceEntry(Box<istio::ServiceEntry>),
    Sidecar(Box<istio::Sidecar>),
    PeerAuthentication(Box<security::PeerAuthentication>),
    AuthorizationPolicy(Box<authz::AuthorizationPolicy>),
    RequestAuthentication(Box<security::RequestAuthentication>),
    Ingress(Box<Ingress>),
    IngressClass(Box<IngressClass>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Pod(Box<Pod>),
    Namespace(Box<Namespace>),
    Node(Box<Node>),
    Secret(Box<Secret>),
    ConfigMap(Box<ConfigMap>),
    BackendTlsPolicy(Box<BackendTlsPolicy>),
    LocalRateLimitPolicy(Box<ferry::LocalRateLimitPolicy>),
}

impl Inputs {
    pub fn add(&mut self, object: Object) {
        match object {
            Object::GatewayClass(o) => self.gateway_classes.push(*o),
            Object::Gateway(o) => self.gateways.push(*o),
            Object::HttpRoute(o) => self.http_routes.push(*o),
            Object::GrpcRoute(o) => self.grpc_routes.push(*o),
            Object::TlsRoute(o) => self.tls_routes.push(*o),
            Object::TcpRoute(o) => self.tcp_routes.push(*o),
            Object::ReferenceGrant(o) => self.reference_grants.push(*o),
            Object::IstioGateway(o) => self.istio_gateways.push(*o),
            Object::VirtualService(o) => self.virtual_services.push(*o),
            Object::DestinationRule(o) => self.destination_rules.push(*o),
            Object::ServiceEntry(o) => self.service_entries.push(*o),
            Object::Sidecar(o) => self.sidecars.push(*o),
            Object::PeerAuthentication(o) => self.peer_authentications.push(*o),
            Object::AuthorizationPolicy(o) => self.authorization_policies.push(*o),
            Object::RequestAuthentication(o) => self.request_authentications.push(*o),
            Object::Ingress(o) => self.ingresses.push(*o),
            Object::IngressClass(o) => self.ingress_classes.push(*o),
            Object::Service(o) => self.services.push(*o),
            Object::EndpointSlice(o) => self.endpoint_slices.push(*o),
            Object::Pod(o) => self.pods.push(*o),
            Object::Namespace(o) => self.namespaces.push(*o),
            Object::Node(o) => self.nodes.push(*o),
            Object::Secret(mut o) => {
                // Only certificates, keys, CA bundles and htpasswd files (ingress-nginx's
                // basic auth) are read: nothing else is kept.
                let wanted = |key: &String| {
                    matches!(
                        key.as_str(),
                        "tls.crt" | "tls.key" | "ca.crt" | "cacert" | "auth"
                    )
                };
                if let Some(data) = o.data.as_mut() {
                    data.retain(|key, _| wanted(key));
                }
                if let Some(data) = o.string_data.as_mut() {
                    data.retain(|key, _| wanted(key));
                }
                let empty = o.data.as_ref().is_none_or(|d| d.is_empty())
                    && o.string_data.as_ref().is_none_or(|d| d.is_empty());
                if !empty {
                    self.secrets.push(*o)
                }
            }
            Object::ConfigMap(mut o) => {
                // Only CA bundles, Gateway parameters (crate::deploy) and the controller
                // replicas' reports of what their proxies applied are read: the values of
                // other keys are not kept in memory, their names are (a parametersRef
                // ConfigMap's key Ferry does not read is reported by name).
                let report = o
                    .metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(crate::applied::LABEL));
                if let Some(data) = o.data.as_mut().filter(|_| !report) {
                    // The mesh config (`istio` ConfigMap, key `mesh`): its extension providers.
                    let mesh = o.metadata.name.as_deref() == Some("istio");
                    let read = |key: &str| {
                        key == "ca.crt"
                            || (mesh && key == "mesh")
                            || crate::translate::ingress_class::PARAMETER_KEYS.contains(&key)
                            || crate::deploy::PARAMETER_KEYS.contains(&key)
                    };
                    for (_, value) in data.iter_mut().filter(|(key, _)| !read(key)) {
                        *value = String::new();
                    }
                }
                o.binary_data = None;
                self.config_maps.push(*o)
            }
            Object::BackendTlsPolicy(o) => self.backend_tls_policies.push(*o),
            Object::LocalRateLimitPolicy(o) => self.rate_limit_policies.push(*o),
        }
    }

    /// These inputs without the named objects (kind as the translator's reports name it:
    /// `HTTPRoute`, `VirtualService`, `Gateway.networking.istio.io`...).
    pub fn without(&self, objects: &[ferry_model::Meta]) -> Inputs {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        let keep = |kind: &str, m: &ObjectMeta| {
            !objects.iter().any(|o| {
                *o.kind == *kind
                    && *o.namespace == *m.namespace.as_deref().unwrap_or_default()
                    && *o.name == *m.name.as_deref().unwrap_or_default()
            })
        };
        let mut out = self.clone();
        out.gateway_classes
            .retain(|o| keep("GatewayClass", &o.metadata));
        out.gateways.retain(|o| keep("Gateway", &o.metadata));
        out.http_routes.retain(|o| keep("HTTPRoute", &o.metadata));
        out.grpc_routes.retain(|o| keep("GRPCRoute", &o.metadata));
        out.tls_routes.retain(|o| keep("TLSRoute", &o.metadata));
        out.tcp_routes.retain(|o| keep("TCPRoute", &o.metadata));
        out.istio_gateways
            .retain(|o| keep("Gateway.networking.istio.io", &o.metadata));
        out.virtual_services
            .retain(|o| keep("VirtualService", &o.metadata));
        out.destination_rules
            .retain(|o| keep("DestinationRule", &o.metadata));
        out.service_entries
            .retain(|o| keep("ServiceEntry", &o.metadata));
        out.sidecars.retain(|o| keep("Sidecar", &o.metadata));
        out.peer_authentications
            .retain(|o| keep("PeerAuthentication", &o.metadata));
        out.authorization_policies
            .retain(|o| keep("AuthorizationPolicy", &o.metadata));
        out.request_authentications
            .retain(|o| keep("RequestAuthentication", &o.metadata));
        out.ingresses.retain(|o| keep("Ingress", &o.metadata));
        out.backend_tls_policies
            .retain(|o| keep("BackendTLSPolicy", &o.metadata));
        out.rate_limit_policies
            .retain(|o| keep("LocalRateLimitPolicy", &o.metadata));
        out.services.retain(|o| keep("Service", &o.metadata));
        out
    }

    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        let mut inputs = Inputs::default();
        objects.into_iter().for_each(|o| inputs.add(o));
        inputs
    }
}
