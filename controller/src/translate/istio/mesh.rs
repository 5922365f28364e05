//! The mesh scope, what a sidecar serves outbound: one listener per Service port (the port the
//! app dialled), a virtual host per name of each Service (`name` in the sidecar's own
//! namespace, `name.ns`, `name.ns.svc`, the cluster-local FQDN, the ClusterIP), and either the
//! routes of the VirtualServices bound to `mesh` for that host or a default route to the
//! Service. The sidecar matches an outbound connection to a listener by its original
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
    let routed = mesh_virtual_services(cx, client_namespace);
    for service in &cx.inputs.services {
        let Some(cluster_ip) = cluster_ip(service) else {
            continue;
        };
        let meta = meta_of("Service", &service.metadata);
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
/// them) to the virtual hosts of the Services they name. Returns those Services: their
/// default route is replaced, as in Istio.
fn mesh_virtual_services(
    cx: &mut Context<'_>,
    client_namespace: &str,
) -> BTreeSet<(String, String)> {
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
    for (load, vs) in services {
        let meta = meta_of("VirtualService", &vs.metadata);
        let compiled = http::compile(cx, vs, &meta);
        let age = RouteOrder::age_of(&vs.metadata);
        for host in &vs.spec.hosts {
            let Some((namespace, name)) = service_of_host(host, &meta.namespace) else {
                continue; // an external host: served by ServiceEntries, not yet
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
            let names = service_names(&service_meta, &cluster_ip, client_namespace);
            for port in service_ports(service) {
                let applying = compiled
                    .iter()
                    .filter(|c| c.gateways.is_empty() || c.gateways.iter().any(|g| g == "mesh"));
                for c in applying {
                    let order = RouteOrder {
                        family: 1,
                        age: age.clone(),
                        load,
                        rule: c.rule,
                        matched: c.matched,
                        ..RouteOrder::default()
                    };
                    for name in &names {
                        cx.table.add(port, name, order.clone(), c.route.clone());
                    }
                }
            }
            routed.insert((namespace, name));
        }
        cx.reports.push(
            &meta,
            Condition::ok("Valid", "Accepted", "applied to sidecars"),
        );
    }
    routed
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

/// The names a client in `client_namespace` may use for the Service.
fn service_names(service: &Meta, cluster_ip: &str, client_namespace: &str) -> Vec<String> {
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
fn cluster_ip(service: &Service) -> Option<String> {
    let ip = service.spec.as_ref()?.cluster_ip.as_ref()?;
    (!ip.is_empty() && ip != "None").then(|| ip.clone())
}

fn service_ports(service: &Service) -> Vec<u16> {
    let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
    ports
        .into_iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| u16::try_from(p.port).ok())
        .collect()
}
