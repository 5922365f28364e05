//! VirtualService `tls` and `tcp` routes for sidecars (no `gateways`, or `mesh` among them).
//! A route applies to the ports of the VirtualService's hosts (Services, ServiceEntry hosts):
//! `tcp` routes to connections to the host's addresses (a Service's ClusterIP, an entry's
//! `addresses`; an entry without addresses: any address on the port, as in Istio), `tls`
//! routes to connections whose ClientHello names one of the match's `sniHosts`. A match's
//! `port` narrows the ports. Routes are kept in Istio's first-match order and come before the
//! entries' own default routes.

use ferry_model::{Meta, Str, StreamRoute};
use std::collections::BTreeSet;

use super::stream::L4Rule;
use crate::inputs::istio::VirtualService;
use crate::translate::report::Condition;
use crate::translate::services::service_of_host;
use crate::translate::Context;

/// Where one host of the VirtualService is reached.
struct Destination {
    addresses: Vec<String>,
    ports: Vec<u16>,
}

/// Adds the VirtualService's connection-level routes to the sidecar's outbound section.
pub(super) fn place(
    cx: &mut Context<'_>,
    vs: &VirtualService,
    meta: &Meta,
    client_namespace: &str,
) {
    if vs.spec.tls.is_empty() && vs.spec.tcp.is_empty() {
        return;
    }
    let rules = super::stream::compile(cx, vs, meta);
    let destinations: Vec<Destination> = vs
        .spec
        .hosts
        .iter()
        .filter_map(|host| destination_of(cx, host, &meta.namespace, client_namespace))
        .collect();
    let mut placed = BTreeSet::new();
    for rule in rules.iter().filter(|r| for_sidecars(r)) {
        for destination in &destinations {
            let ports = destination
                .ports
                .iter()
                .filter(|p| rule.port.is_none_or(|wanted| wanted == u32::from(**p)));
            for &port in ports {
                let route = stream_route(rule, meta);
                match rule.sni_hosts {
                    Some(_) => cx.outbound.tls(port, route),
                    None => {
                        let Some(addresses) = narrowed(&destination.addresses, rule) else {
                            continue;
                        };
                        cx.outbound.tcp(port, addresses, route)
                    }
                }
                placed.insert((rule.kind(), rule.rule));
            }
        }
    }
    report_unplaced(cx, meta, &rules, &placed);
}

/// A tcp route's addresses with its `destinationSubnets`: the host's addresses in them, or
/// the subnets themselves for a host without addresses; None when none is left.
fn narrowed(addresses: &[String], rule: &L4Rule<'_>) -> Option<Vec<String>> {
    if rule.destination_subnets.is_empty() {
        return Some(addresses.to_vec());
    }
    if addresses.is_empty() {
        return Some(
            rule.destination_subnets
                .iter()
                .map(|s| s.trim().to_string())
                .collect(),
        );
    }
    let subnets = super::stream::subnets(rule);
    let inside = |a: &String| {
        a.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| subnets.iter().any(|block| block.contains(ip)))
    };
    let kept: Vec<String> = addresses.iter().filter(|a| inside(a)).cloned().collect();
    (!kept.is_empty()).then_some(kept)
}

fn for_sidecars(rule: &L4Rule<'_>) -> bool {
    rule.gateways.is_empty() || rule.gateways.iter().any(|g| g == "mesh")
}

fn stream_route(rule: &L4Rule<'_>, meta: &Meta) -> StreamRoute {
    let hostnames: Vec<Str> = rule
        .sni_hosts
        .unwrap_or_default()
        .iter()
        .map(|h| Str::from(h.to_ascii_lowercase()))
        .collect();
    StreamRoute {
        meta: meta.clone(),
        name: format!(
            "{}/{}/{}/{}/mesh",
            meta.namespace,
            meta.name,
            rule.kind(),
            rule.rule
        )
        .into(),
        hostnames: hostnames.into(),
        backends: rule.backends.clone().into(),
        terminate: false,
        destination_subnets: super::stream::subnets(rule),
    }
}

/// A ServiceEntry host (its addresses and ports) or a Service (its ClusterIP and ports).
fn destination_of(
    cx: &Context<'_>,
    host: &str,
    vs_namespace: &str,
    client_namespace: &str,
) -> Option<Destination> {
    if let Some((entry, _)) = cx.catalog.entry_for_host(host, client_namespace, None) {
        let entry_ns = entry.metadata.namespace.as_deref().unwrap_or("default");
        if !super::mesh::imported(cx, entry_ns, host) {
            return None;
        }
        return Some(Destination {
            addresses: entry.spec.addresses.clone(),
            ports: entry
                .spec
                .ports
                .iter()
                .filter_map(|p| u16::try_from(p.number).ok())
                .collect(),
        });
    }
    let (namespace, name) = service_of_host(host, vs_namespace)?;
    let service = cx.catalog.service(&namespace, &name)?;
    let fqdn = crate::translate::services::service_fqdn(&namespace, &name);
    if !super::mesh::imported(cx, &namespace, &fqdn) {
        return None;
    }
    Some(Destination {
        addresses: vec![super::mesh::cluster_ip(service)?],
        ports: super::mesh::service_ports(service),
    })
}

/// A sidecar-bound route no host port takes is said so, never dropped silently.
fn report_unplaced(
    cx: &mut Context<'_>,
    meta: &Meta,
    rules: &[L4Rule<'_>],
    placed: &BTreeSet<(&str, usize)>,
) {
    let mut told = BTreeSet::new();
    for rule in rules.iter().filter(|r| for_sidecars(r)) {
        let key = (rule.kind(), rule.rule);
        if placed.contains(&key) || !told.insert(key) {
            continue;
        }
        let message = "not applied to sidecars: no port of a Service or ServiceEntry among the \
                       VirtualService's hosts matches";
        let field = format!("spec.{}[{}]", rule.kind(), rule.rule);
        cx.reports.push(
            meta,
            Condition::warn("Valid", "NoMatchingPort", message).field(field),
        );
    }
}
