//! Istio Gateway servers with `tls.mode: AUTO_PASSTHROUGH` (the east-west gateway of a
//! multi-network mesh): no VirtualService says where a connection goes; its ClientHello names
//! the destination the way the mesh names its clusters in SNI,
//! `outbound_.<port>_.<subset>_.<host>` (`_` for no subset), and the connection is passed,
//! still encrypted (the client's mTLS is with the destination's sidecar), to that Service
//! port's endpoints. Every Service port the server's `hosts` select gets one route per
//! DestinationRule subset besides the whole Service; names nothing selects close the
//! connection, as Envoy has no cluster for them.

use ferry_model::{BackendTarget, Meta, Str, StreamRoute, WeightedBackend};
use k8s_openapi::api::core::v1::Service;
use std::collections::BTreeSet;

use super::ServedServer;
use crate::translate::hosts::intersect;
use crate::translate::services::{service_of_host, SubsetRef};
use crate::translate::table::RouteOrder;
use crate::translate::Context;

/// The mesh's cluster-local domain, as Services' hosts are written in the SNI.
const CLUSTER_DOMAIN: &str = "svc.cluster.local";

/// The server name the mesh gives a Service port (and subset) in its mTLS connections.
pub(super) fn server_name(port: u16, subset: Option<&str>, host: &str) -> String {
    format!("outbound_.{port}_.{}_.{host}", subset.unwrap_or(""))
}

/// Adds the server's routes: one per selected Service port and subset.
pub(super) fn place(cx: &mut Context<'_>, meta: &Meta, server: &ServedServer) {
    let services: Vec<&Service> = cx
        .inputs
        .services
        .iter()
        .filter(|s| selected(server, s))
        .collect();
    let mut index = 0;
    for service in services {
        let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
        let name = service.metadata.name.as_deref().unwrap_or_default();
        let host = format!("{name}.{namespace}.{CLUSTER_DOMAIN}");
        let ports = service.spec.iter().flat_map(|s| s.ports.iter().flatten());
        let ports: Vec<u16> = ports.filter_map(|p| u16::try_from(p.port).ok()).collect();
        let subsets = subsets_of(cx, namespace, name);
        for port in ports {
            for subset in std::iter::once(None).chain(subsets.iter().map(Some)) {
                let subset_ref = subset.map(|s| SubsetRef {
                    name: s.name,
                    labels: s.labels,
                    rule: s.rule,
                });
                let Ok(cluster) =
                    cx.catalog
                        .resolve(namespace, name, Some(u32::from(port)), subset_ref)
                else {
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

/// Whether one of the server's `hosts` (`namespace/host` patterns) takes the Service.
fn selected(server: &ServedServer, service: &Service) -> bool {
    let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
    let name = service.metadata.name.as_deref().unwrap_or_default();
    let host = format!("{name}.{namespace}.{CLUSTER_DOMAIN}");
    server.hosts.iter().any(|(only_in, pattern)| {
        only_in.as_deref().is_none_or(|ns| ns == namespace)
            && intersect(pattern, &host).is_some_and(|h| h == host)
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
