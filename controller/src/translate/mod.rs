//! The pure translator: `Inputs` -> snapshot + reports. No I/O, deterministic.

mod authz;
pub(crate) mod duration;
mod ext_authz;
mod gateway_api;
mod hosts;
mod ingress;
pub(crate) use ingress::{class as ingress_class, nginx as ingress_nginx};
mod istio;
mod jwt;
mod labels;
mod mesh_tls;
mod not_applied;
mod outbound;
mod rate_limit_policy;
mod report;
mod security;
mod services;
mod table;
mod tls;
mod upstream_tls;
pub(crate) mod workloads;

use ferry_model::Snapshot;
use serde::Serialize;
use std::collections::BTreeMap;

use crate::inputs::Inputs;
use report::Reports;
pub use report::{Report, Severity};

/// How reports name a route's parent (`Gateway ns/name [sectionName=..] [port=..]`).
pub use gateway_api::parent_label as route_parent_label;

/// A GRPCRoute in its HTTPRoute form (the translator attaches it that way).
pub use gateway_api::grpc::as_http_route as grpc_as_http_route;
pub(crate) use gateway_api::served_class_names;
/// A TLSRoute or TCPRoute in its HTTPRoute form (the translator attaches it that way).
pub use gateway_api::stream::as_http_route as stream_route_as_http_route;
pub(crate) use gateway_api::supported_kinds as listener_supported_kinds;
pub(crate) use hosts::intersect_all as intersect_hostnames;
use services::ServiceCatalog;
use table::RouteTable;

/// The GatewayClass controllerName Ferry answers to.
pub const CONTROLLER_NAME: &str = "ferry.dev/gateway-controller";

/// What this proxy is, which decides which objects it serves.
#[derive(Clone, Debug)]
pub struct Options {
    /// Label pairs of the gateway; an Istio Gateway is served when every pair of its selector
    /// is among them. Several values per key are allowed (`istio=ingressgateway`, `istio=ingress`).
    pub gateway_labels: Vec<(String, String)>,
    /// Port serving Kubernetes Ingress objects.
    pub ingress_port: u16,
    /// Port serving the hosts an Ingress lists under `spec.tls`, over TLS (0: none).
    pub ingress_tls_port: u16,
    /// IngressClass names served, comma-separated (objects with no class are served too).
    pub ingress_class: String,
    /// `namespace/name`: serve only this Gateway API Gateway (a proxy deployment implements
    /// one Gateway). None serves every Gateway of a Ferry class, as standalone mode does.
    pub only_gateway: Option<String>,
    /// Set for a sidecar: the namespace of its pod. The snapshot is then the mesh scope
    /// (Service ports, mesh VirtualServices) instead of gateways.
    pub mesh_namespace: Option<String>,
    /// The mesh's root namespace (Istio's `rootNamespace`): policies there without a
    /// selector apply to the whole mesh.
    pub root_namespace: String,
    /// The namespace of the proxy's authenticated identity, when the controller knows it.
    /// Istio Gateway servers take their TLS key (credentialName) from it only: a proxy never
    /// receives private keys of another namespace (Istio resolves credentialName in the
    /// gateway workload's namespace too).
    pub workload_namespace: Option<String>,
    /// SPIFFE trust domain of workload identities (the endpoints' expected IDs).
    pub trust_domain: String,
}

/// Istio's default `rootNamespace`.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

impl Default for Options {
    fn default() -> Self {
        Options {
            gateway_labels: vec![
                ("istio".into(), "ingressgateway".into()),
                ("istio".into(), "ingress".into()),
            ],
            ingress_port: 8080,
            ingress_tls_port: 8443,
            ingress_class: "ferry".into(),
            only_gateway: None,
            mesh_namespace: None,
            root_namespace: DEFAULT_ROOT_NAMESPACE.into(),
            workload_namespace: None,
            trust_domain: "cluster.local".into(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Output {
    pub snapshot: Snapshot,
    pub reports: Vec<Report>,
}

impl Output {
    /// Reports that make the configuration invalid.
    pub fn errors(&self) -> impl Iterator<Item = &Report> {
        self.reports
            .iter()
            .filter(|r| r.severity == Severity::Error)
    }
}

/// Shared state of one translation run.
pub(crate) struct Context<'a> {
    pub inputs: &'a Inputs,
    pub options: &'a Options,
    pub catalog: ServiceCatalog<'a>,
    pub table: RouteTable,
    pub outbound: outbound::Outbound,
    /// A sidecar's scope: the `egress.hosts` of the Sidecar resource in force, if any.
    pub egress_hosts: Option<istio::sidecar::EgressHosts>,
    pub reports: Reports,
    pub namespace_labels: BTreeMap<&'a str, BTreeMap<String, String>>,
}

pub fn translate(inputs: &Inputs, options: &Options) -> Output {
    let mut cx = Context {
        inputs,
        options,
        catalog: ServiceCatalog::new(
            inputs,
            mesh_tls::MeshTls::new(inputs, &options.trust_domain, &options.root_namespace),
            options.workload_namespace.clone(),
        ),
        table: RouteTable::default(),
        outbound: outbound::Outbound::default(),
        egress_hosts: None,
        reports: Reports::default(),
        namespace_labels: namespace_labels(inputs),
    };
    match &options.mesh_namespace {
        Some(namespace) => istio::mesh::translate(&mut cx, namespace),
        None => {
            gateway_api::translate(&mut cx);
            istio::translate(&mut cx);
            ingress::translate(&mut cx);
        }
    }
    rate_limit_policy::apply(&mut cx);
    istio::entries::report(&mut cx);
    istio::sidecar::report(&mut cx);
    security::translate(&mut cx);
    not_applied::report(&mut cx);
    for problem in std::mem::take(&mut cx.catalog.problems) {
        let condition =
            report::Condition::error("Valid", "Invalid", problem.message).field(problem.field);
        cx.reports.push(&problem.object, condition);
    }
    let peer_authentications = match options.mesh_namespace {
        Some(_) => cx.catalog.mesh_tls_policies().into(),
        None => Vec::new().into(),
    };
    let authorization = authz::compile(&mut cx).into();
    let request_authentication = jwt::compile(&mut cx).into();
    let snapshot = Snapshot {
        version: 0,
        listeners: cx.table.into_listeners().into(),
        clusters: cx.catalog.into_clusters().into(),
        peer_authentications,
        authorization,
        request_authentication,
        outbound: cx.outbound.into_ports().into(),
        registry_only: sidecar_registry_only(inputs, options),
    };
    Output {
        snapshot,
        reports: cx.reports.into_sorted(),
    }
}

/// A sidecar's outbound traffic policy when a Sidecar resource sets one.
fn sidecar_registry_only(inputs: &Inputs, options: &Options) -> Option<bool> {
    let namespace = options.mesh_namespace.as_deref()?;
    let sidecar = istio::sidecar::in_force(
        &inputs.sidecars,
        namespace,
        &options.gateway_labels,
        &options.root_namespace,
    )?;
    istio::sidecar::registry_only(sidecar)
}

fn namespace_labels(inputs: &Inputs) -> BTreeMap<&str, BTreeMap<String, String>> {
    inputs
        .namespaces
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.as_deref()?;
            let mut labels = n.metadata.labels.clone().unwrap_or_default();
            // The API server sets this label on every namespace; standalone files may not.
            labels.insert("kubernetes.io/metadata.name".into(), name.into());
            Some((name, labels))
        })
        .collect()
}

/// `Kind/namespace/name` provenance for an object's metadata.
pub(crate) fn meta_of(
    kind: &str,
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> ferry_model::Meta {
    ferry_model::Meta::new(
        kind,
        metadata.namespace.as_deref().unwrap_or_default(),
        metadata.name.as_deref().unwrap_or_default(),
    )
}
