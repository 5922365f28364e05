//! ServiceEntry in the mesh: what a sidecar lets out and where it sends it. Per host and port,
//! by the port's protocol:
//!
//! - HTTP: a virtual host (the host and the entry's addresses) on the port's listener, with
//!   the routes of VirtualServices for the host or a default route to the entry's cluster;
//!   with `resolution: NONE` the connection goes on to the address dialled instead;
//! - TLS / HTTPS: a connection-level route chosen by the ClientHello's server name;
//! - TCP (and any other protocol): a connection-level route for the entry's `addresses`
//!   (every address on the port when it has none, as in Istio).
//!
//! Every entry is validated here (once per translation) and its problems reported on it; an
//! invalid entry serves nothing, so REGISTRY_ONLY keeps refusing its hosts.

use ferry_model::{Action, BackendTarget, Meta, Route, RouteMatch, StreamRoute, WeightedBackend};
use std::collections::BTreeSet;

use crate::inputs::istio::ServiceEntry;
use crate::translate::report::Condition;
use crate::translate::services::entries::{
    port_protocol, resolution, visible_from, EntryProtocol, Resolution,
};
use crate::translate::table::{PortProtocol, RouteOrder};
use crate::translate::{meta_of, Context};

/// A problem that makes an entry unusable: (field, message).
type Problem = (String, String);

/// The entry's problems; empty when it can be served.
pub(crate) fn problems(entry: &ServiceEntry) -> Vec<Problem> {
    let spec = &entry.spec;
    let mut out = Vec::new();
    let mut problem = |field: &str, message: String| out.push((field.to_string(), message));
    if spec.hosts.is_empty() {
        problem("spec.hosts", "at least one host is required".into());
    }
    if spec.ports.is_empty() {
        problem("spec.ports", "at least one port is required".into());
    }
    for (i, port) in spec.ports.iter().enumerate() {
        if port.number == 0 || port.number > 65_535 {
            problem(
                &format!("spec.ports[{i}].number"),
                format!("{} is not a port", port.number),
            );
        }
    }
    let resolved = resolution(entry);
    if let Err(message) = &resolved {
        problem("spec.resolution", message.clone());
    }
    if let Some(location) = spec.location.as_deref() {
        if !matches!(location, "MESH_EXTERNAL" | "MESH_INTERNAL") {
            problem(
                "spec.location",
                format!("{location} is not one of MESH_EXTERNAL, MESH_INTERNAL"),
            );
        }
    }
    if spec.workload_selector.is_some() && !spec.endpoints.is_empty() {
        problem(
            "spec.workloadSelector",
            "endpoints and workloadSelector cannot both be set".into(),
        );
    }
    if spec.workload_selector.is_some() && resolved != Ok(Resolution::Static) {
        problem(
            "spec.workloadSelector",
            "selects endpoints for resolution STATIC only".into(),
        );
    }
    if resolved == Ok(Resolution::Static) {
        for (i, endpoint) in spec.endpoints.iter().enumerate() {
            let address = endpoint.address.as_deref().unwrap_or_default();
            if address.parse::<std::net::IpAddr>().is_err() {
                problem(
                    &format!("spec.endpoints[{i}].address"),
                    format!("{address:?} is not an IP address (resolution STATIC)"),
                );
            }
        }
    }
    if resolved == Ok(Resolution::Dns) && spec.endpoints.is_empty() {
        for (i, host) in spec.hosts.iter().enumerate() {
            if host.starts_with('*') {
                problem(
                    &format!("spec.hosts[{i}]"),
                    format!("{host}: a wildcard host cannot be resolved (resolution DNS needs endpoints)"),
                );
            }
        }
    }
    let internal = spec.location.as_deref() == Some("MESH_INTERNAL");
    if internal && spec.subject_alt_names.len() > 1 {
        problem(
            "spec.subjectAltNames",
            "Ferry checks one identity per endpoint: give one subjectAltName (or none, to use \
             the endpoints' serviceAccount)"
                .into(),
        );
    }
    out
}

/// Reports every entry: its problems (it is then not served), or Accepted.
pub(crate) fn report(cx: &mut Context<'_>) {
    for entry in &cx.inputs.service_entries {
        let meta = meta_of("ServiceEntry", &entry.metadata);
        let found = problems(entry);
        if found.is_empty() {
            cx.reports
                .push(&meta, Condition::ok("Valid", "Accepted", "registered"));
        }
        for (field, message) in found {
            cx.reports.push(
                &meta,
                Condition::error("Valid", "Invalid", message).field(field),
            );
        }
        let external = entry.spec.location.as_deref() != Some("MESH_INTERNAL");
        if external && !entry.spec.subject_alt_names.is_empty() {
            let message = "identities are checked on mesh mTLS, which MESH_EXTERNAL endpoints \
                           do not speak: not applied (use a DestinationRule's tls.subjectAltNames)";
            cx.reports.push(
                &meta,
                Condition::warn("Valid", "NotApplied", message).field("spec.subjectAltNames"),
            );
        }
    }
}

/// Serves the entries `client_namespace` sees; `routed` are the hosts VirtualServices
/// already route (their default route is replaced, as for Services).
pub(crate) fn serve_in_mesh<'a>(
    cx: &mut Context<'a>,
    client_namespace: &str,
    routed: &BTreeSet<String>,
) {
    let inputs = cx.inputs;
    let entries: Vec<&'a ServiceEntry> = inputs
        .service_entries
        .iter()
        .filter(|e| visible_from(e, client_namespace) && problems(e).is_empty())
        .collect();
    for entry in entries {
        let meta = meta_of("ServiceEntry", &entry.metadata);
        let resolution = resolution(entry).unwrap_or(Resolution::None);
        let entry_ns = entry.metadata.namespace.as_deref().unwrap_or("default");
        let hosts: Vec<&String> = (entry.spec.hosts.iter())
            .filter(|h| super::mesh::imported(cx, entry_ns, h))
            .collect();
        for host in hosts {
            for port in &entry.spec.ports {
                let Ok(number) = u16::try_from(port.number) else {
                    continue;
                };
                let served = Served {
                    entry,
                    meta: meta.clone(),
                    host,
                    port: number,
                };
                match (port_protocol(port), resolution) {
                    (EntryProtocol::Http, Resolution::None) => {
                        cx.outbound.http_passthrough(number, host)
                    }
                    (EntryProtocol::Http, _) if routed.contains(host) => {}
                    (EntryProtocol::Http, _) => serve_http(cx, &served),
                    (EntryProtocol::Tls, _) => {
                        let route = stream_route(cx, &served, vec![host.as_str().into()]);
                        cx.outbound.tls(number, route);
                    }
                    (EntryProtocol::Tcp, _) => {
                        let route = stream_route(cx, &served, Vec::new());
                        cx.outbound.tcp(number, entry.spec.addresses.clone(), route);
                    }
                }
            }
        }
    }
}

/// One host and port of an entry.
struct Served<'e> {
    entry: &'e ServiceEntry,
    meta: Meta,
    host: &'e str,
    port: u16,
}

/// The names an HTTP client uses for an entry's host: the host and the entry's addresses.
pub(crate) fn entry_names(entry: &ServiceEntry, host: &str) -> Vec<String> {
    let addresses = entry.spec.addresses.iter().filter(|a| !a.contains('/'));
    std::iter::once(host.to_ascii_lowercase())
        .chain(addresses.cloned())
        .collect()
}

fn serve_http<'a>(cx: &mut Context<'a>, served: &Served<'a>) {
    let _ = cx
        .table
        .listener(served.port, &served.meta, PortProtocol::Http);
    cx.outbound.http_hosts(served.port);
    let route = Route {
        meta: served.meta.clone(),
        name: route_name(served).into(),
        matcher: RouteMatch::default(),
        filters: Vec::new().into(),
        action: Action::Forward(vec![backend(cx, served)].into()),
        policy: Default::default(),
    };
    for name in entry_names(served.entry, served.host) {
        let order = RouteOrder {
            family: 2,
            ..RouteOrder::default()
        };
        cx.table.add(served.port, &name, order, route.clone());
    }
}

fn stream_route<'a>(
    cx: &mut Context<'a>,
    served: &Served<'a>,
    hostnames: Vec<ferry_model::Str>,
) -> StreamRoute {
    StreamRoute {
        meta: served.meta.clone(),
        name: route_name(served).into(),
        hostnames: hostnames.into(),
        backends: vec![backend(cx, served)].into(),
        terminate: false,
        destination_subnets: Vec::new().into(),
    }
}

fn route_name(served: &Served<'_>) -> String {
    format!(
        "{}/{}/{}:{}",
        served.meta.namespace, served.meta.name, served.host, served.port
    )
}

fn backend<'a>(cx: &mut Context<'a>, served: &Served<'a>) -> WeightedBackend {
    let resolved = cx.catalog.resolve_entry(
        served.entry,
        served.host,
        Some(u32::from(served.port)),
        None,
    );
    let target = match resolved {
        Ok(cluster) => BackendTarget::Cluster(cluster),
        Err(e) => BackendTarget::Invalid {
            status: 503,
            reason: e.to_string().into(),
        },
    };
    WeightedBackend {
        weight: 1,
        target,
        filters: Vec::new().into(),
    }
}

/// The HTTP ports the valid entries visible from `from` declare for `host`.
pub(crate) fn http_ports(inputs: &crate::inputs::Inputs, host: &str, from: &str) -> Vec<u16> {
    use crate::translate::services::entries::host_matches;
    let mut ports: Vec<u16> = inputs
        .service_entries
        .iter()
        .filter(|e| visible_from(e, from) && problems(e).is_empty())
        .filter(|e| e.spec.hosts.iter().any(|p| host_matches(p, host)))
        .flat_map(|e| e.spec.ports.iter())
        .filter(|p| port_protocol(p) == EntryProtocol::Http)
        .filter_map(|p| u16::try_from(p.number).ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}
