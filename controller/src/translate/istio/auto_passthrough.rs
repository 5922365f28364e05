//! Istio Gateway servers with `tls.mode: AUTO_PASSTHROUGH` (the east-west gateway of a
//! multi-network mesh): no VirtualService says where a connection goes; its ClientHello names
//! the destination the way the mesh names its clusters in SNI,
//! `outbound_.<port>_.<subset>_.<host>` (`_` for no subset), and the connection is passed,
//! still encrypted (the client's mTLS is with the destination's sidecar), to that Service
//! port's endpoints. Every Service port the server's `hosts` select gets one route per
//! DestinationRule subset besides the whole Service; names nothing selects close the
//! connection, as Envoy has no cluster for them.

use ferry_model::{BackendTarget, Meta, Str, StreamRoute, WeightedBackend};
use std::collections::BTreeSet;

use super::ServedServer;
use crate::translate::hosts::intersect;
use crate::translate::report::Condition;
use crate::translate::services::{service_fqdn, service_of_host, SubsetRef};
use crate::translate::table::RouteOrder;
use crate::translate::Context;

/// The server name the mesh gives a Service port (and subset) in its mTLS connections.
pub(super) fn server_name(port: u16, subset: Option<&str>, host: &str) -> String {
    format!("outbound_.{port}_.{}_.{host}", subset.unwrap_or(""))
}

/// Adds the server's routes: one per selected Service port and subset. ServiceEntry hosts the
/// server selects get none yet: said on the Gateway (`field`: the server's).
pub(super) fn place(cx: &mut Context<'_>, meta: &Meta, server: &ServedServer, field: &str) {
    report_entries(cx, meta, server, field);
    let mut index = 0;
    for service in &cx.inputs.services {
        let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
        let name = service.metadata.name.as_deref().unwrap_or_default();
        let host = service_fqdn(namespace, name);
        if !selected(server, namespace, &host) {
            continue;
        }
        let ports = service.spec.iter().flat_map(|s| s.ports.iter().flatten());
        let ports: Vec<u16> = ports.filter_map(|p| u16::try_from(p.port).ok()).collect();
        let subsets = subsets_of(cx, namespace, name);
        for port in ports {
            for subset in std::iter::once(None).chain(subsets.iter().copied().map(Some)) {
                let port_number = Some(u32::from(port));
                let Ok(cluster) = cx.catalog.resolve(namespace, name, port_number, subset) else {
                    continue;
                };
                let sni = server_name(port, subset.map(|s| s.name), &host);
                cx.table
                    .add_stream(server.port, order(index), route(meta, index, sni, cluster));
                index += 1;
            }
        }
    }
}

/// Istio routes ServiceEntry hosts through AUTO_PASSTHROUGH too; Ferry does not yet, so a
/// server that selects some says which, rather than leave them unreachable without a word.
fn report_entries(cx: &mut Context<'_>, meta: &Meta, server: &ServedServer, field: &str) {
    let mut hosts: Vec<&str> = Vec::new();
    for entry in &cx.inputs.service_entries {
        let namespace = entry.metadata.namespace.as_deref().unwrap_or("default");
        let selected_hosts = entry
            .spec
            .hosts
            .iter()
            .filter(|h| selected(server, namespace, h));
        hosts.extend(selected_hosts.map(String::as_str));
    }
    if hosts.is_empty() {
        return;
    }
    let message = format!(
        "AUTO_PASSTHROUGH routes Kubernetes Services only: ServiceEntry hosts {} get no \
         server name here",
        hosts.join(", ")
    );
    let condition = Condition::warn("Valid", "NotApplied", message);
    cx.reports
        .push(meta, condition.field(format!("{field}.tls.mode")));
}

/// Whether one of the server's `hosts` (`namespace/host` patterns) takes the Service `host`.
fn selected(server: &ServedServer, namespace: &str, host: &str) -> bool {
    server.hosts.iter().any(|(only_in, pattern)| {
        only_in.as_deref().is_none_or(|ns| ns == namespace)
            && intersect(pattern, host).is_some_and(|h| h == host)
    })
}

/// The subsets DestinationRules define for the Service, each name once (the first rule that
/// defines it, in input order).
fn subsets_of<'i>(cx: &Context<'i>, namespace: &str, name: &str) -> Vec<SubsetRef<'i>> {
    let mut seen = BTreeSet::new();
    let mut subsets = Vec::new();
    for rule in &cx.inputs.destination_rules {
        let rule_ns = rule.metadata.namespace.as_deref().unwrap_or("default");
        let names_it = service_of_host(&rule.spec.host, rule_ns)
            .is_some_and(|(ns, service)| ns == namespace && service == name);
        if !names_it {
            continue;
        }
        for subset in &rule.spec.subsets {
            if seen.insert(subset.name.as_str()) {
                subsets.push(SubsetRef {
                    name: &subset.name,
                    labels: &subset.labels,
                    rule,
                });
            }
        }
    }
    subsets
}

/// Generated routes keep the order they were made in (their names are all exact, so order
/// only breaks ties that cannot happen).
fn order(index: usize) -> RouteOrder {
    RouteOrder {
        family: 1,
        rule: index,
        ..RouteOrder::default()
    }
}

fn route(meta: &Meta, index: usize, sni: String, cluster: Str) -> StreamRoute {
    StreamRoute {
        meta: meta.clone(),
        name: format!("{}/{}/auto-passthrough/{index}", meta.namespace, meta.name).into(),
        hostnames: vec![Str::from(sni.as_str())].into(),
        backends: vec![WeightedBackend {
            weight: 1,
            target: BackendTarget::Cluster(cluster),
            filters: Vec::new().into(),
        }]
        .into(),
        terminate: false,
        destination_subnets: Vec::new().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::server_name;

    #[test]
    fn server_names_follow_the_mesh() {
        let host = "reviews.bookinfo.svc.cluster.local";
        assert_eq!(
            server_name(9080, None, host),
            "outbound_.9080_._.reviews.bookinfo.svc.cluster.local"
        );
        assert_eq!(
            server_name(9080, Some("v2"), host),
            "outbound_.9080_.v2_.reviews.bookinfo.svc.cluster.local"
        );
    }
}
