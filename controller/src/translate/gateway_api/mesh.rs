//! Gateway API's mesh profile (GAMMA): an HTTPRoute (or GRPCRoute) whose parentRef is a
//! Service applies to sidecars' traffic to that Service, on the parentRef's port or on all
//! of the Service's ports. Hostnames play no part: the Service is the parent.

use ferry_model::Meta;
use gateway_api::apis::experimental::httproutes::{HttpRoute, HttpRouteParentRefs};
use std::collections::BTreeSet;

use super::{grpc, rules};
use crate::translate::istio::mesh::{cluster_ip, service_names, service_ports};
use crate::translate::report::Condition;
use crate::translate::table::RouteOrder;
use crate::translate::{meta_of, Context};

/// Whether the Sidecar resource in force (if any) imports the parent Service: a route of a
/// Service it leaves out is not this sidecar's.
fn imported_parent(cx: &Context<'_>, parent: &HttpRouteParentRefs, route_namespace: &str) -> bool {
    let namespace = parent.namespace.as_deref().unwrap_or(route_namespace);
    let fqdn = crate::translate::services::service_fqdn(namespace, &parent.name);
    crate::translate::istio::mesh::imported(cx, namespace, &fqdn)
}

/// Adds the routes of Service-parented routes; returns the Services they cover (whose
/// default route they replace).
pub(crate) fn translate(
    cx: &mut Context<'_>,
    client_namespace: &str,
) -> BTreeSet<(String, String)> {
    let mut routed = BTreeSet::new();
    let routes: Vec<(&str, HttpRoute)> = cx
        .inputs
        .http_routes
        .iter()
        .map(|r| ("HTTPRoute", r.clone()))
        .chain(
            cx.inputs
                .grpc_routes
                .iter()
                .filter_map(|r| grpc::as_http_route(r).ok().map(|h| ("GRPCRoute", h))),
        )
        .collect();
    for (kind, route) in &routes {
        let meta = meta_of(kind, &route.metadata);
        let parents: Vec<&HttpRouteParentRefs> = route
            .spec
            .parent_refs
            .iter()
            .flatten()
            .filter(|p| is_service_ref(p))
            .filter(|p| imported_parent(cx, p, &meta.namespace))
            .collect();
        if parents.is_empty() {
            continue;
        }
        let compiled = rules::compile(cx, route, &meta);
        for parent in parents {
            let namespace = parent
                .namespace
                .clone()
                .unwrap_or_else(|| meta.namespace.to_string());
            let label = format!("Service {namespace}/{}", parent.name);
            match attach(
                cx,
                &meta,
                route,
                &compiled,
                parent,
                &namespace,
                client_namespace,
            ) {
                Ok(()) => {
                    routed.insert((namespace, parent.name.clone()));
                    cx.reports.push(
                        &meta,
                        Condition::ok("Accepted", "Accepted", "applied to sidecars").parent(label),
                    );
                }
                Err((reason, message)) => {
                    cx.reports.push(
                        &meta,
                        Condition::warn("Accepted", reason, message).parent(label),
                    );
                }
            }
        }
    }
    routed
}

fn attach(
    cx: &mut Context<'_>,
    meta: &Meta,
    route: &HttpRoute,
    compiled: &[rules::CompiledRule],
    parent: &HttpRouteParentRefs,
    namespace: &str,
    client_namespace: &str,
) -> Result<(), (&'static str, String)> {
    let service = cx.catalog.service(namespace, &parent.name).ok_or_else(|| {
        (
            "NoMatchingParent",
            format!("no Service {namespace}/{}", parent.name),
        )
    })?;
    let ip = cluster_ip(service).ok_or_else(|| {
        (
            "NoMatchingParent",
            "a headless Service has no ClusterIP to route".to_string(),
        )
    })?;
    let ports: Vec<u16> = service_ports(service)
        .into_iter()
        .filter(|p| parent.port.is_none_or(|wanted| i32::from(*p) == wanted))
        .collect();
    if ports.is_empty() {
        return Err((
            "NoMatchingParent",
            format!(
                "Service {namespace}/{} has no port {:?}",
                parent.name, parent.port
            ),
        ));
    }
    let names = service_names(
        &meta_of("Service", &service.metadata),
        &ip,
        client_namespace,
    );
    let age = RouteOrder::age_of(&route.metadata);
    for port in ports {
        for rule in compiled {
            let order = RouteOrder {
                family: 0,
                rank: rule.rank,
                age: age.clone(),
                name: format!("{}/{}", meta.namespace, meta.name),
                rule: rule.rule,
                matched: rule.matched,
                ..RouteOrder::default()
            };
            for name in &names {
                cx.table.add(port, name, order.clone(), rule.route.clone());
            }
        }
    }
    Ok(())
}

fn is_service_ref(parent: &HttpRouteParentRefs) -> bool {
    matches!(parent.group.as_deref(), Some("") | Some("core"))
        && parent.kind.as_deref() == Some("Service")
}
