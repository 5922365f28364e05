//! TLSRoute and TCPRoute: connection-level routes on TLS and TCP listeners. They attach like
//! HTTPRoutes (parentRefs, allowedRoutes, hostname intersection, listener isolation), read in
//! their HTTPRoute form (same parentRefs, hostnames and backendRefs), and become one
//! [`StreamRoute`] per port with the hostnames the route serves there.

use ferry_model::{Meta, StreamRoute, WeightedBackend};
use gateway_api::apis::experimental::httproutes::HttpRoute;
use gateway_api::apis::experimental::tcproutes::TcpRoute;
use gateway_api::apis::standard::tlsroutes::TlsRoute;
use serde::Serialize;
use std::collections::BTreeMap;

use super::filters::resolve_service_ref;
use super::rules::RefFailure;
use super::Placement;
use crate::translate::report::Condition;
use crate::translate::table::RouteOrder;
use crate::translate::Context;

/// A TLSRoute or TCPRoute in HTTPRoute form: the fields both kinds share with HTTPRoute
/// (parentRefs, hostnames, rules[].backendRefs, rules[].name) carry over; TCPRoute has no
/// hostnames.
pub fn as_http_route<T: Serialize>(route: &T) -> Result<HttpRoute, String> {
    let mut value = serde_json::to_value(route).map_err(|e| e.to_string())?;
    value["kind"] = "HTTPRoute".into();
    if let Some(status) = value.as_object_mut() {
        status.remove("status");
    }
    serde_json::from_value(value).map_err(|e| format!("spec: {e}"))
}

pub fn tls_as_http_route(route: &TlsRoute) -> Result<HttpRoute, String> {
    as_http_route(route)
}

pub fn tcp_as_http_route(route: &TcpRoute) -> Result<HttpRoute, String> {
    as_http_route(route)
}

/// A route's backends, resolved once and placed on every port it attaches to.
pub(super) struct StreamRules {
    backends: Vec<WeightedBackend>,
    pub ref_failure: RefFailure,
}

/// Resolves the rule's backendRefs. A connection has nothing to match rules on, so a route
/// with several rules is refused on its status rather than served by a guess.
pub(super) fn compile(cx: &mut Context<'_>, route: &HttpRoute, meta: &Meta) -> StreamRules {
    let rules = route.spec.rules.as_deref().unwrap_or_default();
    if rules.len() > 1 {
        let message = format!(
            "{} rules: a {} routes whole connections, which have nothing to choose among \
             rules by; put every backendRef in one rule",
            rules.len(),
            meta.kind
        );
        // No parent named: it counts against every parent (the route is not served).
        let condition =
            Condition::warn("Accepted", "UnsupportedValue", message).field("spec.rules");
        cx.reports.push(meta, condition);
        return StreamRules {
            backends: Vec::new(),
            ref_failure: None,
        };
    }
    let mut failure: RefFailure = None;
    let refs = rules
        .first()
        .and_then(|r| r.backend_refs.as_deref())
        .unwrap_or_default();
    let backends = refs
        .iter()
        .enumerate()
        .map(|(index, reference)| {
            let field = format!("spec.rules[0].backendRefs[{index}]");
            let target = match resolve_service_ref(cx, meta, reference.into()) {
                Ok(cluster) => ferry_model::BackendTarget::Cluster(cluster),
                Err((reason, message)) => {
                    failure.get_or_insert((reason, format!("{field}: {message}")));
                    ferry_model::BackendTarget::Invalid {
                        status: 500,
                        reason: message.into(),
                    }
                }
            };
            WeightedBackend {
                weight: reference.weight.unwrap_or(1).max(0) as u32,
                target,
                filters: Default::default(),
            }
        })
        .collect();
    StreamRules {
        backends,
        ref_failure: failure,
    }
}

impl StreamRules {
    /// One StreamRoute per port, serving the hostnames the route attached with there.
    pub(super) fn add(
        &self,
        cx: &mut Context<'_>,
        targets: &[Placement],
        meta: &Meta,
        route: &HttpRoute,
    ) {
        // One route per port and termination mode (a port may pass some names through and
        // terminate others).
        let mut hosts_per_port: BTreeMap<(u16, bool), Vec<String>> = BTreeMap::new();
        for target in targets {
            let hosts = hosts_per_port
                .entry((target.port, target.terminate))
                .or_default();
            if !hosts.contains(&target.host) {
                hosts.push(target.host.clone());
            }
        }
        for ((port, terminate), hosts) in hosts_per_port {
            let order = RouteOrder {
                family: 0,
                rank: [0; 5],
                age: RouteOrder::age_of(&route.metadata),
                load: 0,
                name: format!("{}/{}", meta.namespace, meta.name),
                rule: 0,
                matched: 0,
            };
            let stream_route = StreamRoute {
                meta: meta.clone(),
                name: format!("{}/{}/rule/0", meta.namespace, meta.name).into(),
                hostnames: hosts.into_iter().map(Into::into).collect(),
                backends: self.backends.clone().into(),
                terminate,
                destination_subnets: Vec::new().into(),
            };
            cx.table.add_stream(port, order, stream_route);
        }
    }
}

/// A TLSRoute or TCPRoute whose parent is a Service (the mesh's GAMMA form) is told that only
/// Gateways serve them: sidecars route TCP by Istio VirtualService `tcp`/`tls` routes.
pub(super) fn report_service_parents(cx: &mut Context<'_>, route: &HttpRoute, meta: &Meta) {
    for (index, parent) in route.spec.parent_refs.iter().flatten().enumerate() {
        if parent.kind.as_deref() != Some("Service") {
            continue;
        }
        let namespace = parent.namespace.as_deref().unwrap_or(&meta.namespace);
        let message = format!(
            "a {} with a Service parent (mesh) is not served; attach it to a Gateway",
            meta.kind
        );
        let condition = Condition::warn("Accepted", "UnsupportedValue", message)
            .field(format!("spec.parentRefs[{index}]"))
            .parent(super::parent_label(namespace, parent));
        cx.reports.push(meta, condition);
    }
}

/// A TCP port forwards every connection to one route, the oldest; any other route on the
/// port is told so on its status.
pub(super) fn report_shadowed_tcp_routes(cx: &mut Context<'_>) {
    for (unused, used, port) in cx.table.shadowed_tcp_routes() {
        let message = format!(
            "port {port} forwards its connections to {used} (the oldest route there): a TCP \
             listener has nothing to choose between routes by"
        );
        cx.reports
            .push(&unused, Condition::warn("Accepted", "Conflicted", message));
    }
}
