//! ingress-nginx `ssl-passthrough`: TLS connections for the Ingress's hosts are not
//! terminated but passed, by the server name of their ClientHello, to the backend of the
//! host's `/` path (else its first path) on the Ingress TLS port; the port's other names stay
//! HTTPS. The cleartext port serves the Ingress as usual (its redirects included), as
//! ingress-nginx does; on the TLS port none of its HTTP settings apply — the bytes are the
//! backend's.

use ferry_model::{Meta, StreamRoute, WeightedBackend};
use k8s_openapi::api::networking::v1::{HTTPIngressPath, Ingress};

use crate::translate::report::Condition;
use crate::translate::table::{PortProtocol, RouteOrder};
use crate::translate::Context;

const FIELD: &str = "metadata.annotations['nginx.ingress.kubernetes.io/ssl-passthrough']";

/// Adds the passthrough routes of `ingress`; returns the hosts passed through (their HTTP
/// routes stay off the TLS port: a client naming another host in its ClientHello must not
/// reach them terminated).
pub(super) fn add(
    cx: &mut Context<'_>,
    ingress: &Ingress,
    meta: &Meta,
    load: usize,
) -> Vec<String> {
    let port = cx.options.ingress_tls_port;
    if port == 0 {
        let message = "this proxy serves no Ingress TLS port: nothing to pass through";
        cx.reports.push(
            meta,
            Condition::warn("Valid", "NotApplied", message).field(FIELD),
        );
        return Vec::new();
    }
    if let Err(message) = cx.table.listener(port, meta, PortProtocol::Https) {
        cx.reports.push(
            meta,
            Condition::warn("Accepted", "PortConflict", message).field(FIELD),
        );
        return Vec::new();
    }
    let rules = ingress
        .spec
        .as_ref()
        .and_then(|s| s.rules.as_deref())
        .unwrap_or(&[]);
    let mut hosts = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        let field = format!("spec.rules[{index}]");
        let Some(host) = rule.host.as_deref().filter(|h| !h.is_empty()) else {
            let message = "ssl-passthrough routes by the ClientHello's server name: a rule without host is not passed through";
            cx.reports.push(
                meta,
                Condition::warn("Valid", "NotApplied", message).field(field),
            );
            continue;
        };
        let paths = rule
            .http
            .as_ref()
            .map(|h| h.paths.as_slice())
            .unwrap_or(&[]);
        let Some((p_index, path)) = root_or_first(paths) else {
            continue;
        };
        let backend_field = format!("{field}.http.paths[{p_index}].backend");
        let target = super::backend_target(cx, &path.backend, meta, &backend_field);
        let route = StreamRoute {
            meta: meta.clone(),
            name: format!("{}/{}/passthrough/{index}", meta.namespace, meta.name).into(),
            hostnames: vec![host.into()].into(),
            backends: vec![WeightedBackend {
                weight: 1,
                target,
                filters: Vec::new().into(),
            }]
            .into(),
            terminate: false,
            destination_subnets: Vec::new().into(),
        };
        let order = RouteOrder {
            family: 2,
            age: RouteOrder::age_of(&ingress.metadata),
            load,
            name: meta.to_string(),
            rule: index,
            ..RouteOrder::default()
        };
        cx.table.add_passthrough(port, order, route);
        hosts.push(host.to_ascii_lowercase());
    }
    hosts
}

/// ingress-nginx passes a host through to the backend of its `/` path.
fn root_or_first(paths: &[HTTPIngressPath]) -> Option<(usize, &HTTPIngressPath)> {
    let root = paths
        .iter()
        .enumerate()
        .find(|(_, p)| p.path.as_deref().unwrap_or("/") == "/");
    root.or_else(|| paths.iter().enumerate().next())
}
