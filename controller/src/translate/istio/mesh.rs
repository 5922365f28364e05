//! The mesh scope, what a sidecar serves outbound: one listener per Service port (the port the
//! app dialled), a virtual host per name of each Service (`name` in the sidecar's own
//! namespace, `name.ns`, `name.ns.svc`, the cluster-local FQDN, the ClusterIP), and either the
//! routes of the HTTPRoutes parented by the Service and the VirtualServices bound to `mesh`
//! for that host, or a default route to the Service. The sidecar matches an outbound connection to a listener by its original
//! destination port and to a virtual host by Host header (or by the ClusterIP it dialled).

use ferry_model::{Action, BackendTarget, Meta, Route, RouteMatch, WeightedBackend};
use k8s_openapi::api::core::v1::Service;
use std::collections::BTreeSet;

use super::http;
use crate::inputs::istio::VirtualService;
use crate::translate::report::Condition;
use crate::translate::services::service_of_host;
use crate::translate::table::{PortProtocol, RouteOrder};
use crate::translate::{meta_of, Context};

pub(crate) fn translate(cx: &mut Context<'_>, client_namespace: &str) {
    let options = cx.options;
    cx.egress_hosts = super::sidecar::in_force(
        &cx.inputs.sidecars,
        client_namespace,
        &options.gateway_labels,
        &options.root_namespace,
    )
    .and_then(super::sidecar::egress_hosts);
    let mut routed = crate::translate::gateway_api::mesh::translate(cx, client_namespace);
    let (services, entry_hosts) = mesh_virtual_services(cx, client_namespace);
    routed.extend(services);
    super::entries::serve_in_mesh(cx, client_namespace, &entry_hosts);
    for service in &cx.inputs.services {
        let Some(cluster_ip) = cluster_ip(service) else {
            continue;
        };
        let meta = meta_of("Service", &service.metadata);
        if !imported(cx, &meta.namespace, &service_fqdn(&meta)) {
            continue;
        }
        let key = (meta.namespace.to_string(), meta.name.to_string());
        let names = service_names(&meta, &cluster_ip, client_namespace);
        for port in service_ports(service) {
            // Two Services on one port share the listener; virtual hosts keep them apart.
            let _ = cx.table.listener(port, &meta, PortProtocol::Http);
            if routed.contains(&key) {
                continue;
            }
            let route = default_route(cx, &meta, port);
            for name in &names {
                let order = RouteOrder {
                    family: 2,
                    ..RouteOrder::default()
                };
                cx.table.add(port, name, order, route.clone());
            }
        }
    }
}

/// Adds the routes of VirtualServices that apply to sidecars (no `gateways`, or `mesh` among
/// them) to the virtual hosts of the Services and ServiceEntry hosts they name. Returns those
/// Services and hosts: their default route is replaced, as in Istio.
fn mesh_virtual_services(
    cx: &mut Context<'_>,
    client_namespace: &str,
) -> (BTreeSet<(String, String)>, BTreeSet<String>) {
    let mut services: Vec<(usize, &VirtualService)> = cx
        .inputs
        .virtual_services
        .iter()
        .enumerate()
        .filter(|(_, vs)| {
            vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh")
        })
        .collect();
    services.sort_by_key(|(load, vs)| (RouteOrder::age_of(&vs.metadata), *load));
    let mut routed = BTreeSet::new();
    let mut entry_hosts = BTreeSet::new();
    for (load, vs) in services {
        let meta = meta_of("VirtualService", &vs.metadata);
        super::mesh_stream::place(cx, vs, &meta, client_namespace);
        let compiled = http::compile(cx, vs, &meta);
        let age = RouteOrder::age_of(&vs.metadata);
        for host in &vs.spec.hosts {
            if let Some((entry, _)) = cx.catalog.entry_for_host(host, client_namespace, None) {
                let entry_ns = entry.metadata.namespace.as_deref().unwrap_or("default");
                if !imported(cx, entry_ns, host) {
                    continue;
                }
                let target = EntryHost {
                    entry,
                    host,
                    load,
                    age: &age,
                };
                // A VirtualService of tcp/tls routes only leaves the host's HTTP default.
                let http = !vs.spec.http.is_empty();
                if http && route_entry_host(cx, &compiled, &meta, &target) {
                    entry_hosts.insert(host.clone());
                }
                continue;
            }
            let Some((namespace, name)) = service_of_host(host, &meta.namespace) else {
                let message = format!("host {host}: no Service or ServiceEntry declares it");
                cx.reports.push(
                    &meta,
                    Condition::warn("Valid", "ReferenceNotFound", message).field("spec.hosts"),
                );
                continue;
            };
            let Some(service) = cx.catalog.service(&namespace, &name) else {
                let message = format!("host {host}: no Service {namespace}/{name}");
                cx.reports.push(
                    &meta,
                    Condition::warn("Valid", "ReferenceNotFound", message).field("spec.hosts"),
                );
                continue;
            };
            let Some(cluster_ip) = cluster_ip(service) else {
                continue;
            };
            let service_meta = meta_of("Service", &service.metadata);
            if !imported(cx, &namespace, &service_fqdn(&service_meta)) {
                continue;
            }
            let names = service_names(&service_meta, &cluster_ip, client_namespace);
            for port in service_ports(service) {
                let applying = compiled
                    .iter()
                    .filter(|c| c.gateways.is_empty() || c.gateways.iter().any(|g| g == "mesh"));
                for c in applying {
                    let order = c.order(&age, load);
                    for name in &names {
                        cx.table.add(port, name, order.clone(), c.route.clone());
                    }
                }
            }
            if !vs.spec.http.is_empty() {
                routed.insert((namespace, name));
            }
        }
        cx.reports.push(
            &meta,
            Condition::ok("Valid", "Accepted", "applied to sidecars"),
        );
    }
    (routed, entry_hosts)
}

/// A ServiceEntry host a mesh VirtualService names.
struct EntryHost<'e> {
    entry: &'e crate::inputs::istio::ServiceEntry,
    host: &'e str,
    load: usize,
    age: &'e (bool, String),
}

/// Adds the VirtualService's routes to the HTTP ports the host's entries declare. False when
/// there are none the routes can apply to (reported on the VirtualService).
fn route_entry_host(
    cx: &mut Context<'_>,
    compiled: &[super::CompiledHttp],
    meta: &Meta,
    target: &EntryHost<'_>,
) -> bool {
    use crate::translate::services::entries::{resolution, Resolution};
    if resolution(target.entry) == Ok(Resolution::None) {
        let message = format!(
            "host {}: its ServiceEntry has resolution NONE, so sidecars send its connections to \
             the address dialled; http routes for it are not applied",
            target.host
        );
        cx.reports.push(
            meta,
            Condition::warn("Valid", "NotApplied", message).field("spec.http"),
        );
        return false;
    }
    let from = cx
        .options
        .mesh_namespace
        .as_deref()
        .unwrap_or(&meta.namespace);
    let ports = super::entries::http_ports(cx.inputs, target.host, from);
    let names = super::entries::entry_names(target.entry, target.host);
    for &port in &ports {
        let _ = cx.table.listener(port, meta, PortProtocol::Http);
        cx.outbound.http_hosts(port);
        let applying = compiled
            .iter()
            .filter(|c| c.gateways.is_empty() || c.gateways.iter().any(|g| g == "mesh"));
        for c in applying {
            let order = c.order(target.age, target.load);
            for name in &names {
                cx.table.add(port, name, order.clone(), c.route.clone());
            }
        }
    }
    !ports.is_empty()
}

fn default_route(cx: &mut Context<'_>, service: &Meta, port: u16) -> Route {
    let target = match cx.catalog.resolve(
        &service.namespace,
        &service.name,
        Some(u32::from(port)),
        None,
    ) {
        Ok(cluster) => BackendTarget::Cluster(cluster),
        Err(e) => BackendTarget::Invalid {
            status: 503,
            reason: e.to_string().into(),
        },
    };
    Route {
        meta: service.clone(),
        name: format!("{}/{}/mesh/{port}", service.namespace, service.name).into(),
        matcher: RouteMatch::default(),
        filters: Vec::new().into(),
        action: Action::Forward(
            vec![WeightedBackend {
                weight: 1,
                target,
                filters: Vec::new().into(),
            }]
            .into(),
        ),
        policy: Default::default(),
    }
}

/// Whether the Sidecar resource in force (if any) imports a host of `namespace`.
pub(crate) fn imported(cx: &Context<'_>, namespace: &str, host: &str) -> bool {
    cx.egress_hosts
        .as_ref()
        .is_none_or(|scope| scope.allows(namespace, host))
}

fn service_fqdn(service: &Meta) -> String {
    crate::translate::services::service_fqdn(&service.namespace, &service.name)
}

/// The names a client in `client_namespace` may use for the Service.
pub(crate) fn service_names(
    service: &Meta,
    cluster_ip: &str,
    client_namespace: &str,
) -> Vec<String> {
    let (ns, name) = (&service.namespace, &service.name);
    let mut names = vec![
        format!("{name}.{ns}"),
        format!("{name}.{ns}.svc"),
        format!("{name}.{ns}.svc.cluster.local"),
        cluster_ip.to_string(),
    ];
    if **ns == *client_namespace {
        names.push(name.to_string());
    }
    names
}

/// A Service's virtual IP; None for headless Services (clients dial Pod IPs directly).
pub(crate) fn cluster_ip(service: &Service) -> Option<String> {
    let ip = service.spec.as_ref()?.cluster_ip.as_ref()?;
    (!ip.is_empty() && ip != "None").then(|| ip.clone())
}

pub(crate) fn service_ports(service: &Service) -> Vec<u16> {
    let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
    ports
        .into_iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| u16::try_from(p.port).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::inputs::{parse_manifests, Inputs};
    use crate::translate::{translate, Options};
    use ferry_model::{Action, BackendTarget, Snapshot};

    const SERVICES: &str = "
apiVersion: v1
kind: Service
metadata: {name: weather, namespace: weather}
spec: {clusterIP: 10.96.0.20, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: other}
spec: {clusterIP: 10.96.0.21, ports: [{name: http, port: 80}, {name: admin, port: 9000}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: weather}
spec: {clusterIP: None, ports: [{port: 5432}]}
";

    fn mesh(extra: &str) -> Snapshot {
        let yaml = format!("{SERVICES}---\n{extra}");
        let inputs = Inputs::from_objects(parse_manifests(&yaml, "test").unwrap());
        let options = Options {
            mesh_namespace: Some("weather".into()),
            ..Options::default()
        };
        translate(&inputs, &options).snapshot
    }

    fn hosts(snapshot: &Snapshot, port: u16) -> Vec<String> {
        let listener = snapshot.listeners.iter().find(|l| l.port == port).unwrap();
        listener
            .virtual_hosts
            .iter()
            .map(|v| v.hostname.to_string())
            .collect()
    }

    fn first_cluster(snapshot: &Snapshot, port: u16, host: &str) -> String {
        let listener = snapshot.listeners.iter().find(|l| l.port == port).unwrap();
        let vhost = listener
            .virtual_hosts
            .iter()
            .find(|v| &*v.hostname == host)
            .unwrap();
        match &vhost.routes[0].action {
            Action::Forward(backends) => match &backends[0].target {
                BackendTarget::Cluster(name) => name.to_string(),
                other => format!("{other:?}"),
            },
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn every_service_port_is_a_listener_with_the_names_a_client_may_use() {
        let snapshot = mesh("");
        let on_80 = hosts(&snapshot, 80);
        for name in [
            "weather",
            "weather.weather",
            "weather.weather.svc.cluster.local",
            "10.96.0.20",
        ] {
            assert!(
                on_80.contains(&name.to_string()),
                "{name} missing: {on_80:?}"
            );
        }
        assert!(
            !on_80.contains(&"ratings".to_string()),
            "short names only in the sidecar's namespace"
        );
        assert!(on_80.contains(&"ratings.other".to_string()));
        assert!(hosts(&snapshot, 9000).contains(&"10.96.0.21".to_string()));
        assert!(
            snapshot.listeners.iter().all(|l| l.port != 5432),
            "headless Services are dialled by Pod IP"
        );
        assert_eq!(
            first_cluster(&snapshot, 80, "weather"),
            "weather/weather:80"
        );
    }

    #[test]
    fn a_service_parented_httproute_replaces_the_default_route() {
        let snapshot = mesh(
            "
apiVersion: v1
kind: Service
metadata: {name: weather-v2, namespace: weather}
spec: {clusterIP: 10.96.0.22, ports: [{name: http, port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: canary, namespace: weather}
spec:
  parentRefs: [{group: \"\", kind: Service, name: weather, port: 80}]
  rules: [{backendRefs: [{name: weather-v2, port: 80}]}]
",
        );
        assert_eq!(
            first_cluster(&snapshot, 80, "weather"),
            "weather/weather-v2:80"
        );
        assert_eq!(
            first_cluster(&snapshot, 80, "10.96.0.20"),
            "weather/weather-v2:80"
        );
        let vhost = snapshot.listeners[0]
            .virtual_hosts
            .iter()
            .find(|v| &*v.hostname == "weather")
            .unwrap();
        assert_eq!(vhost.routes.len(), 1, "the default route is gone");
    }

    #[test]
    fn a_mesh_virtual_service_applies_and_a_gateway_one_does_not() {
        let snapshot = mesh(
            "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: to-ratings, namespace: weather}
spec:
  hosts: [weather]
  http: [{route: [{destination: {host: ratings.other.svc.cluster.local, port: {number: 80}}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge-only, namespace: other}
spec:
  hosts: [ratings.other.svc.cluster.local]
  gateways: [some-gateway]
  http: [{route: [{destination: {host: weather.weather.svc.cluster.local}}]}]
",
        );
        assert_eq!(first_cluster(&snapshot, 80, "weather"), "other/ratings:80");
        assert_eq!(
            first_cluster(&snapshot, 80, "ratings.other"),
            "other/ratings:80",
            "gateway-bound VS ignored"
        );
    }
}
