//! VirtualService `tls` and `tcp` routes on Gateway servers of protocol TLS (PASSTHROUGH:
//! routed by the ClientHello's server name; SIMPLE/MUTUAL: terminated here, then the `tcp`
//! routes) and TCP. Each match becomes one [`StreamRoute`] per server port, in Istio's
//! first-match order (VirtualServices by age, routes and matches in document order).

use ferry_model::authz::IpBlock;
use ferry_model::{Meta, Str, StreamRoute, WeightedBackend};

use super::{ServedGateway, ServedServer};
use crate::inputs::istio::VirtualService;
use crate::translate::hosts::intersect;
use crate::translate::report::Condition;
use crate::translate::table::{PortProtocol, RouteOrder};
use crate::translate::Context;

/// One match of a `tls` or `tcp` route, reduced to what placing it needs.
pub(super) struct L4Rule<'v> {
    pub rule: usize,
    pub matched: usize,
    pub port: Option<u32>,
    pub gateways: &'v [String],
    /// `sniHosts` (tls routes); None for tcp routes.
    pub sni_hosts: Option<&'v [String]>,
    /// `destinationSubnets`, checked: blocks the destination address must be in.
    pub destination_subnets: &'v [String],
    pub backends: Vec<WeightedBackend>,
}

impl L4Rule<'_> {
    pub fn kind(&self) -> &'static str {
        match self.sni_hosts {
            Some(_) => "tls",
            None => "tcp",
        }
    }
}

/// Places the VirtualService's `tls` and `tcp` routes on the bound gateways' servers; true
/// when any was placed.
pub(super) fn place(
    cx: &mut Context<'_>,
    bound: &[&ServedGateway],
    vs: &VirtualService,
    meta: &Meta,
    load: usize,
) -> bool {
    let rules = compile(cx, vs, meta);
    let age = RouteOrder::age_of(&vs.metadata);
    let mut placed_rules = std::collections::BTreeSet::new();
    for gateway in bound {
        for rule in rules.iter().filter(|r| applies_to(r, gateway)) {
            for server in gateway.servers.iter().filter(|s| takes(s, rule)) {
                let Some(hostnames) = hostnames(server, rule, &vs.spec.hosts, &meta.namespace)
                else {
                    continue;
                };
                let order = RouteOrder {
                    family: 1,
                    age: age.clone(),
                    load,
                    rule: rule.rule,
                    matched: rule.matched,
                    ..RouteOrder::default()
                };
                let kind = rule.kind();
                let route = StreamRoute {
                    meta: meta.clone(),
                    name: format!("{}/{}/{kind}/{}", meta.namespace, meta.name, rule.rule).into(),
                    hostnames: hostnames.into(),
                    backends: rule.backends.clone().into(),
                    terminate: server.protocol == PortProtocol::TlsTerminate,
                    destination_subnets: subnets(rule),
                };
                cx.table.add_stream(server.port, order, route);
                placed_rules.insert((kind, rule.rule));
            }
        }
    }
    report_unplaced(cx, meta, &rules, &placed_rules);
    !placed_rules.is_empty()
}

/// A route no server of the bound gateways takes is said so, never dropped silently.
fn report_unplaced(
    cx: &mut Context<'_>,
    meta: &Meta,
    rules: &[L4Rule<'_>],
    placed: &std::collections::BTreeSet<(&str, usize)>,
) {
    let mut told = std::collections::BTreeSet::new();
    for rule in rules {
        let (kind, wants) = match rule.sni_hosts {
            Some(_) => (
                "tls",
                "a TLS PASSTHROUGH server whose hosts include its sniHosts",
            ),
            None => (
                "tcp",
                "a TCP (or TLS SIMPLE/MUTUAL) server whose hosts match the VirtualService's",
            ),
        };
        if placed.contains(&(kind, rule.rule)) || !told.insert((kind, rule.rule)) {
            continue;
        }
        let message = format!("not served: no bound Gateway has {wants} on its port");
        let field = format!("spec.{kind}[{}]", rule.rule);
        cx.reports.push(
            meta,
            Condition::warn("Valid", "NoMatchingServer", message).field(field),
        );
    }
}

pub(super) fn compile<'v>(
    cx: &mut Context<'_>,
    vs: &'v VirtualService,
    meta: &Meta,
) -> Vec<L4Rule<'v>> {
    let mut rules = Vec::new();
    for (index, tls) in vs.spec.tls.iter().enumerate() {
        let field = format!("spec.tls[{index}]");
        if tls.matches.is_empty() {
            let message = "a tls route needs a match with sniHosts";
            cx.reports.push(
                meta,
                Condition::error("Valid", "Invalid", message).field(field),
            );
            continue;
        }
        let backends = super::http::weighted_backends(cx, meta, &tls.route, &field);
        for (matched, m) in tls.matches.iter().enumerate() {
            if m.narrows_unapplied() || m.sni_hosts.is_empty() {
                continue; // reported with the field (not_applied) or by validation below
            }
            let at = format!("{field}.match[{matched}].destinationSubnets");
            if !subnets_valid(cx, meta, &m.destination_subnets, &at) {
                continue;
            }
            rules.push(L4Rule {
                rule: index,
                matched,
                port: m.port,
                gateways: &m.gateways,
                sni_hosts: Some(&m.sni_hosts),
                destination_subnets: &m.destination_subnets,
                backends: backends.clone(),
            });
        }
        for (matched, m) in tls.matches.iter().enumerate() {
            if m.sni_hosts.is_empty() {
                let message = "a tls match needs sniHosts";
                let field = format!("{field}.match[{matched}].sniHosts");
                cx.reports.push(
                    meta,
                    Condition::error("Valid", "Invalid", message).field(field),
                );
            }
        }
    }
    for (index, tcp) in vs.spec.tcp.iter().enumerate() {
        let field = format!("spec.tcp[{index}]");
        let backends = super::http::weighted_backends(cx, meta, &tcp.route, &field);
        if tcp.matches.is_empty() {
            rules.push(tcp_rule(index, 0, None, &[], backends));
            continue;
        }
        for (matched, m) in tcp.matches.iter().enumerate() {
            let at = format!("{field}.match[{matched}].destinationSubnets");
            if !m.narrows_unapplied() && subnets_valid(cx, meta, &m.destination_subnets, &at) {
                let mut rule = tcp_rule(index, matched, m.port, &m.gateways, backends.clone());
                rule.destination_subnets = &m.destination_subnets;
                rules.push(rule);
            }
        }
    }
    rules
}

fn tcp_rule(
    rule: usize,
    matched: usize,
    port: Option<u32>,
    gateways: &[String],
    backends: Vec<WeightedBackend>,
) -> L4Rule<'_> {
    L4Rule {
        rule,
        matched,
        port,
        gateways,
        sni_hosts: None,
        destination_subnets: &[],
        backends,
    }
}

/// Each block must be an address or CIDR range; a match with a bad one is not used (it
/// would match more than it says) and is reported.
fn subnets_valid(cx: &mut Context<'_>, meta: &Meta, subnets: &[String], field: &str) -> bool {
    let bad: Vec<&String> = subnets
        .iter()
        .filter(|s| IpBlock::parse(s.trim()).is_none())
        .collect();
    if let Some(first) = bad.first() {
        let message = format!("{first:?} is not an address or CIDR range: the match is not used");
        // A warning: the match is left out, the rest of the configuration still serves.
        cx.reports.push(
            meta,
            Condition::warn("Valid", "Invalid", message).field(field),
        );
    }
    bad.is_empty()
}

/// The match's blocks, parsed once (checked by [`subnets_valid`] before).
pub(super) fn subnets(rule: &L4Rule<'_>) -> std::sync::Arc<[IpBlock]> {
    rule.destination_subnets
        .iter()
        .filter_map(|s| IpBlock::parse(s.trim()))
        .collect()
}

/// A match naming gateways applies only to those.
fn applies_to(rule: &L4Rule<'_>, gateway: &ServedGateway) -> bool {
    rule.gateways.is_empty()
        || rule.gateways.iter().any(|g| {
            let namespace = gateway.key.split_once('/').map_or("", |(ns, _)| ns);
            super::gateway_key(g, namespace) == gateway.key
        })
}

/// `tls` routes go to passthrough servers; `tcp` routes to TCP servers and to TLS servers
/// that terminate; a match's port narrows either.
fn takes(server: &ServedServer, rule: &L4Rule<'_>) -> bool {
    let kind_fits = match rule.sni_hosts {
        Some(_) => server.protocol == PortProtocol::TlsPassthrough,
        None => matches!(
            server.protocol,
            PortProtocol::Tcp | PortProtocol::TlsTerminate
        ),
    };
    kind_fits && rule.port.is_none_or(|p| p == u32::from(server.port))
}

/// The server names the route serves on this server: its `sniHosts` (tls) or the
/// VirtualService's hosts (tcp), intersected with the server's hosts. None: no overlap.
fn hostnames(
    server: &ServedServer,
    rule: &L4Rule<'_>,
    vs_hosts: &[String],
    vs_ns: &str,
) -> Option<Vec<Str>> {
    let wanted = rule.sni_hosts.unwrap_or(vs_hosts);
    let mut out: Vec<Str> = Vec::new();
    for (ns, server_host) in &server.hosts {
        if ns.as_deref().is_some_and(|ns| ns != vs_ns) {
            continue;
        }
        for host in wanted {
            if let Some(h) = intersect(server_host, host) {
                if !out.iter().any(|o| **o == *h) {
                    out.push(h.into());
                }
            }
        }
    }
    if out.is_empty() {
        return None;
    }
    // A TCP port has no server names to tell connections apart by.
    if server.protocol == PortProtocol::Tcp {
        return Some(vec!["*".into()]);
    }
    Some(out)
}
