//! The `status` each Gateway API object should carry, computed from the translator's reports
//! (pure: the cluster module writes it, only when it changed).
//!
//! Conditions follow the Gateway API spec: GatewayClass `Accepted` and `supportedFeatures`
//! (crate::features); Gateway `Accepted` and
//! `Programmed` plus one entry per listener (`Accepted`, `Programmed`, `ResolvedRefs`,
//! `Conflicted`, `supportedKinds`, `attachedRoutes`); HTTPRoute one `parents[]` entry per
//! parentRef this controller handles, with `Accepted` and `ResolvedRefs`.

use ferry_model::Meta;
use gateway_api::apis::experimental::httproutes::{HttpRoute, HttpRouteParentRefs};
use gateway_api::apis::standard::gateways::{Gateway, GatewayListeners};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};

use crate::applied::Applied;
use crate::translate::{meta_of, route_parent_label, Report, CONTROLLER_NAME};
use crate::Inputs;

/// One object's desired status. Conditions carry no `lastTransitionTime` yet: the writer
/// stamps it, keeping the previous time for a condition whose status did not change.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredStatus {
    pub object: Meta,
    /// The object's uid, when known: an object deleted and created again under the same name
    /// is another object, whose (empty) status must be written even if it equals the last.
    pub uid: Option<String>,
    pub status: Value,
}

/// Kinds whose statuses depend on the Gateway (proxy) that serves them.
const PER_GATEWAY_KINDS: &[&str] = &[
    "Gateway",
    "HTTPRoute",
    "GRPCRoute",
    "TLSRoute",
    "TCPRoute",
    "BackendTLSPolicy",
];

/// The reports statuses are written from in a cluster, where each Gateway API Gateway has a
/// proxy of its own (the controller deploys one per Gateway): its listeners and routes are
/// translated in that Gateway's scope, as its proxy is, so two Gateways may use one port
/// with different protocols. Everything else comes from one translation of all inputs.
pub fn reports_per_proxy(inputs: &Inputs) -> Vec<Report> {
    use crate::{translate, Options};
    let everything = translate(inputs, &Options::default()).reports;
    let per_gateway = |r: &Report| PER_GATEWAY_KINDS.contains(&&*r.object.kind);
    let mut reports: Vec<Report> = everything.into_iter().filter(|r| !per_gateway(r)).collect();
    let mut seen: std::collections::BTreeSet<Report> = Default::default();
    for gateway in &inputs.gateways {
        let meta = meta_of("Gateway", &gateway.metadata);
        let options = Options {
            only_gateway: Some(format!("{}/{}", meta.namespace, meta.name)),
            ..Options::default()
        };
        let scoped = translate(inputs, &options).reports.into_iter();
        reports.extend(scoped.filter(|r| per_gateway(r) && seen.insert(r.clone())));
    }
    reports
}

/// `applied`: which Gateways a proxy serves (Programmed waits for that).
pub fn desired(inputs: &Inputs, reports: &[Report], applied: &Applied) -> Vec<DesiredStatus> {
    let mut out = Vec::new();
    let routes = all_routes(inputs);
    for class in &inputs.gateway_classes {
        if class.spec.controller_name != CONTROLLER_NAME {
            continue;
        }
        let meta = meta_of("GatewayClass", &class.metadata);
        let generation = class.metadata.generation;
        let conditions = object_conditions(reports, &meta, None, generation);
        let features = crate::features::status_value();
        let status = json!({ "conditions": conditions, "supportedFeatures": features });
        push(&mut out, meta, &class.metadata.uid, status);
    }
    for gateway in &inputs.gateways {
        let meta = meta_of("Gateway", &gateway.metadata);
        if !reports.iter().any(|r| r.object == meta) {
            continue; // not a Gateway of ours
        }
        let status = gateway_status(inputs, &routes, reports, gateway, &meta, applied);
        push(&mut out, meta, &gateway.metadata.uid, status);
    }
    for (kind, route) in &routes {
        let meta = meta_of(kind, &route.metadata);
        let parents = route_parents(reports, route, &meta);
        if !parents.is_empty() {
            push(
                &mut out,
                meta,
                &route.metadata.uid,
                json!({ "parents": parents }),
            );
        }
    }
    for policy in &inputs.backend_tls_policies {
        let meta = meta_of("BackendTLSPolicy", &policy.metadata);
        let conditions = object_conditions(reports, &meta, None, policy.metadata.generation);
        let ancestors: Vec<Value> = policy_ancestors(&routes, reports, policy)
            .into_iter()
            .map(|gateway| {
                json!({
                    "ancestorRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                     "namespace": &*gateway.namespace, "name": &*gateway.name},
                    "controllerName": CONTROLLER_NAME,
                    "conditions": conditions,
                })
            })
            .collect();
        let status = json!({ "ancestors": ancestors });
        push(&mut out, meta, &policy.metadata.uid, status);
    }
    for policy in &inputs.rate_limit_policies {
        let meta = meta_of("LocalRateLimitPolicy", &policy.metadata);
        let status = rate_limit_policy_status(reports, policy, &meta);
        push(&mut out, meta, &policy.metadata.uid, status);
    }
    for rejected in &inputs.rejected {
        if let Some((meta, status)) = rejected_status(rejected, reports) {
            push(&mut out, meta, &None, status);
        }
    }
    for (kind, metadata) in istio_objects(inputs) {
        let meta = meta_of(kind, metadata);
        let status = istio_status(reports, &meta, metadata.generation);
        push(&mut out, meta, &metadata.uid, status);
    }
    out
}

/// Istio objects with the kind their statuses and reports name them by.
fn istio_objects(inputs: &Inputs) -> impl Iterator<Item = (&str, &ObjectMeta)> {
    let gateways = inputs.istio_gateways.iter();
    let virtual_services = inputs.virtual_services.iter();
    let destination_rules = inputs.destination_rules.iter();
    let service_entries = inputs.service_entries.iter();
    let sidecars = inputs.sidecars.iter();
    let peer_authentications = inputs.peer_authentications.iter();
    let authorization_policies = inputs.authorization_policies.iter();
    let request_authentications = inputs.request_authentications.iter();
    (gateways.map(|o| ("Gateway.networking.istio.io", &o.metadata)))
        .chain(virtual_services.map(|o| ("VirtualService", &o.metadata)))
        .chain(destination_rules.map(|o| ("DestinationRule", &o.metadata)))
        .chain(service_entries.map(|o| ("ServiceEntry", &o.metadata)))
        .chain(sidecars.map(|o| ("Sidecar", &o.metadata)))
        .chain(peer_authentications.map(|o| ("PeerAuthentication", &o.metadata)))
        .chain(authorization_policies.map(|o| ("AuthorizationPolicy", &o.metadata)))
        .chain(request_authentications.map(|o| (o.kind.as_str(), &o.metadata)))
}

/// Istio objects carry `validationMessages`, as istiod's analyzers write them, with the
/// finding's reason as the type name and Ferry's message (naming the field) beside it; an
/// object with nothing to say gets an empty list, so a fixed problem disappears.
fn istio_status(reports: &[Report], object: &Meta, generation: Option<i64>) -> Value {
    let messages: Vec<Value> = reports
        .iter()
        .filter(|r| r.object == *object && !r.status)
        .map(|r| {
            let level = match r.severity {
                crate::Severity::Error => "ERROR",
                crate::Severity::Warning => "WARNING",
                crate::Severity::Info => "INFO",
            };
            let mut message = r.message.clone();
            if let Some(field) = &r.field {
                message = format!("{field}: {message}");
            }
            json!({"level": level, "type": {"code": "FERRY", "name": r.reason}, "message": message})
        })
        .collect();
    json!({"observedGeneration": generation.unwrap_or(0), "validationMessages": messages})
}

/// The status of an object that could not be read: Istio objects get a validation message,
/// Gateway API routes a parent status (Accepted False) for each of Ferry's Gateways they
/// name. Other kinds are only logged (they have no status Ferry could own).
fn rejected_status(
    rejected: &crate::inputs::Rejected,
    reports: &[Report],
) -> Option<(Meta, Value)> {
    let read = crate::cluster::reads(&rejected.group, &rejected.kind);
    let generation = rejected.generation.unwrap_or(0);
    match rejected.group.as_str() {
        "networking.istio.io" | "security.istio.io" => {
            let kind = if rejected.kind == "Gateway" {
                "Gateway.networking.istio.io"
            } else {
                rejected.kind.as_str()
            };
            let name = if read {
                "SchemaError"
            } else {
                "UnsupportedKind"
            };
            let message = json!({"level": "ERROR", "type": {"code": "FERRY", "name": name}, "message": rejected.message});
            let status = json!({"observedGeneration": generation, "validationMessages": [message]});
            Some((Meta::new(kind, &rejected.namespace, &rejected.name), status))
        }
        "gateway.networking.k8s.io" => {
            let parents: Vec<Value> = rejected
                .parent_refs
                .as_array()?
                .iter()
                .filter(|parent| {
                    let name = parent["name"].as_str().unwrap_or_default();
                    let namespace = parent["namespace"].as_str().unwrap_or(&rejected.namespace);
                    let gateway = Meta::new("Gateway", namespace, name);
                    parent["kind"].as_str().unwrap_or("Gateway") == "Gateway"
                        && reports.iter().any(|r| r.object == gateway)
                })
                .map(|parent| {
                    let reason = if read { "UnsupportedValue" } else { "UnsupportedKind" };
                    json!({
                        "parentRef": parent,
                        "controllerName": CONTROLLER_NAME,
                        "conditions": [condition("Accepted", false, reason, &rejected.message, Some(generation))],
                    })
                })
                .collect();
            if parents.is_empty() {
                return None;
            }
            let meta = Meta::new(&rejected.kind, &rejected.namespace, &rejected.name);
            Some((meta, json!({"parents": parents})))
        }
        _ => None,
    }
}

/// A BackendTLSPolicy's ancestors: the Gateways of Ferry's whose routes send traffic to a
/// Service it targets.
fn policy_ancestors(
    routes: &[(&'static str, HttpRoute)],
    reports: &[Report],
    policy: &gateway_api::apis::standard::backendtlspolicies::BackendTlsPolicy,
) -> Vec<Meta> {
    let namespace = policy.metadata.namespace.as_deref().unwrap_or("default");
    let targeted = |ns: &str, name: &str| {
        ns == namespace
            && policy
                .spec
                .target_refs
                .iter()
                .any(|t| t.group.is_empty() && t.kind == "Service" && t.name == name)
    };
    let mut out: Vec<Meta> = Vec::new();
    for (_, route) in routes {
        let route_ns = route.metadata.namespace.as_deref().unwrap_or("default");
        let sends = route.spec.rules.iter().flatten().any(|rule| {
            rule.backend_refs.iter().flatten().any(|b| {
                b.kind.as_deref().unwrap_or("Service") == "Service"
                    && targeted(b.namespace.as_deref().unwrap_or(route_ns), &b.name)
            })
        });
        if !sends {
            continue;
        }
        for parent in route.spec.parent_refs.iter().flatten() {
            let gateway = Meta::new(
                "Gateway",
                parent.namespace.as_deref().unwrap_or(route_ns),
                &parent.name,
            );
            let ours = reports.iter().any(|r| r.object == gateway);
            if ours
                && parent.kind.as_deref().unwrap_or("Gateway") == "Gateway"
                && !out.contains(&gateway)
            {
                out.push(gateway);
            }
        }
    }
    out
}

/// Every route kind in its HTTPRoute form (which keeps parentRefs and hostnames), with kinds.
fn all_routes(inputs: &Inputs) -> Vec<(&'static str, HttpRoute)> {
    use crate::translate::stream_route_as_http_route as stream;
    let http = inputs.http_routes.iter().map(|r| ("HTTPRoute", r.clone()));
    let grpc = inputs
        .grpc_routes
        .iter()
        .filter_map(|r| crate::translate::grpc_as_http_route(r).ok())
        .map(|r| ("GRPCRoute", r));
    let tls = inputs.tls_routes.iter().filter_map(|r| stream(r).ok());
    let tcp = inputs.tcp_routes.iter().filter_map(|r| stream(r).ok());
    let streams = tls
        .map(|r| ("TLSRoute", r))
        .chain(tcp.map(|r| ("TCPRoute", r)));
    http.chain(grpc).chain(streams).collect()
}

fn push(out: &mut Vec<DesiredStatus>, object: Meta, uid: &Option<String>, status: Value) {
    let uid = uid.clone();
    out.push(DesiredStatus {
        object,
        uid,
        status,
    });
}

fn gateway_status(
    inputs: &Inputs,
    routes: &[(&str, HttpRoute)],
    reports: &[Report],
    gateway: &Gateway,
    meta: &Meta,
    applied: &Applied,
) -> Value {
    let generation = gateway.metadata.generation;
    let mut conditions = object_conditions(reports, meta, None, generation);
    let waiting_for = if !applied.serves(gateway) {
        // Translated fine, not yet applied by a proxy.
        Some(format!(
            "waiting for a proxy of this Gateway to apply generation {}",
            generation.unwrap_or(0)
        ))
    } else if !matches!(applied, Applied::Assumed)
        && !service_has_ready_endpoint(inputs, gateway, meta, applied)
    {
        // Applied, but the Service clients are sent to (the Gateway's address) routes
        // nowhere yet: a client dialling it now could wait on a dropped SYN.
        Some("waiting for the Gateway's Service to have a ready endpoint".to_string())
    } else {
        None
    };
    if let Some(message) = waiting_for {
        let programmed = |c: &&mut Value| c["type"] == "Programmed" && c["status"] == "True";
        for pending in conditions.iter_mut().filter(programmed) {
            *pending = condition("Programmed", false, "Pending", &message, generation);
        }
    }
    let listeners: Vec<Value> = gateway
        .spec
        .listeners
        .iter()
        .map(|l| listener_status(routes, reports, meta, l, generation))
        .collect();
    json!({
        "addresses": gateway_addresses(inputs, gateway, meta),
        "conditions": conditions,
        "listeners": listeners,
    })
}

/// The label Gateway API implementations put on what they deploy for a Gateway; Ferry's
/// Helm chart puts it on the gateway Service.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// Where clients reach the Gateway: the LoadBalancer ingress of its Service, else the
/// Service's external IPs, else — for a NodePort Service — the nodes' addresses (external
/// before internal; clients add the node port), else its cluster IP.
fn gateway_addresses(inputs: &Inputs, gateway: &Gateway, meta: &Meta) -> Vec<Value> {
    let Some(service) = gateway_service(inputs, gateway, meta) else {
        return Vec::new();
    };
    let address = |kind: &str, value: &str| json!({"type": kind, "value": value});
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default();
    let from_lb: Vec<Value> = ingress
        .iter()
        .filter_map(|i| match (&i.ip, &i.hostname) {
            (Some(ip), _) => Some(address("IPAddress", ip)),
            (None, Some(host)) => Some(address("Hostname", host)),
            _ => None,
        })
        .collect();
    if !from_lb.is_empty() {
        return from_lb;
    }
    let spec = service.spec.as_ref();
    let external = spec
        .and_then(|s| s.external_ips.clone())
        .unwrap_or_default();
    if !external.is_empty() {
        return external.iter().map(|ip| address("IPAddress", ip)).collect();
    }
    let node_port = spec.and_then(|s| s.type_.as_deref()) == Some("NodePort");
    let nodes = node_addresses(inputs);
    if node_port && !nodes.is_empty() {
        return nodes.iter().map(|ip| address("IPAddress", ip)).collect();
    }
    spec.and_then(|s| s.cluster_ip.as_deref())
        .filter(|ip| *ip != "None")
        .map(|ip| vec![address("IPAddress", ip)])
        .unwrap_or_default()
}

fn listener_status(
    routes: &[(&str, HttpRoute)],
    reports: &[Report],
    gateway: &Meta,
    listener: &GatewayListeners,
    generation: Option<i64>,
) -> Value {
    let parent = format!("listener {}", listener.name);
    let problem_of = |kind: &str| {
        reports.iter().find(|r| {
            r.object == *gateway
                && r.parent.as_deref() == Some(&parent)
                && r.condition == kind
                && !r.status
        })
    };
    let (accepted, programmed, resolved, conflicted) = (
        problem_of("Accepted"),
        problem_of("Programmed"),
        problem_of("ResolvedRefs"),
        problem_of("Conflicted"),
    );
    let ok = |kind: &str, message: &str| condition(kind, true, kind, message, generation);
    let failed = |kind: &str, r: &Report| condition(kind, false, r.reason, &r.message, generation);
    let conditions = vec![
        accepted.map_or_else(
            || ok("Accepted", "listener accepted"),
            |r| failed("Accepted", r),
        ),
        programmed.map_or_else(
            || ok("Programmed", "listener programmed"),
            |r| failed("Programmed", r),
        ),
        resolved.map_or_else(
            || ok("ResolvedRefs", "references resolved"),
            |r| failed("ResolvedRefs", r),
        ),
        match conflicted {
            Some(r) => condition("Conflicted", true, r.reason, &r.message, generation),
            None => condition(
                "Conflicted",
                false,
                "NoConflicts",
                "no conflicts",
                generation,
            ),
        },
    ];
    // Routes attached to a listener whose references did not resolve still count (the
    // spec's attachedRoutes); an invalid or conflicted listener takes none.
    let attached = if accepted.is_some() || conflicted.is_some() {
        0
    } else {
        attached_routes(routes, reports, gateway, listener)
    };
    json!({
        "name": listener.name,
        "supportedKinds": crate::translate::listener_supported_kinds(listener)
            .into_iter()
            .map(|kind| json!({"group": "gateway.networking.k8s.io", "kind": kind}))
            .collect::<Vec<_>>(),
        "attachedRoutes": attached,
        "conditions": conditions,
    })
}

/// Routes accepted by this Gateway whose parentRef selects the listener (no sectionName or
/// port, or matching ones).
fn attached_routes(
    routes: &[(&str, HttpRoute)],
    reports: &[Report],
    gateway: &Meta,
    listener: &GatewayListeners,
) -> usize {
    routes
        .iter()
        .filter(|(kind, route)| {
            let meta = meta_of(kind, &route.metadata);
            route.spec.parent_refs.iter().flatten().any(|p| {
                let namespace = p.namespace.as_deref().unwrap_or(&meta.namespace);
                *namespace == *gateway.namespace
                    && *p.name == *gateway.name
                    && p.section_name.as_ref().is_none_or(|s| *s == listener.name)
                    && p.port.is_none_or(|port| port == listener.port)
                    && accepted_by(reports, &meta, &route_parent_label(namespace, p))
            }) && attaches_to(kind, route, listener)
        })
        .count()
}

/// A route accepted by the Gateway attaches to those of its listeners that take its kind and
/// share a hostname with it (the spec's attachedRoutes counts only those).
fn attaches_to(kind: &str, route: &HttpRoute, listener: &GatewayListeners) -> bool {
    let hostnames = route.spec.hostnames.clone().unwrap_or_default();
    crate::translate::listener_supported_kinds(listener).contains(&kind)
        && !crate::translate::intersect_hostnames(listener.hostname.as_deref(), &hostnames)
            .is_empty()
}

fn accepted_by(reports: &[Report], route: &Meta, parent: &str) -> bool {
    reports.iter().any(|r| {
        r.object == *route
            && r.parent.as_deref() == Some(parent)
            && r.condition == "Accepted"
            && r.status
    })
}

/// The Services labelled with the Gateway's name in its namespace.
fn gateway_services<'i>(
    inputs: &'i Inputs,
    gateway: &'i Meta,
) -> impl Iterator<Item = &'i Service> + 'i {
    inputs.services.iter().filter(|s| {
        s.metadata.namespace.as_deref() == Some(&gateway.namespace)
            && s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(GATEWAY_NAME_LABEL))
                .is_some_and(|name| **name == *gateway.name)
    })
}

/// The Service clients reach the Gateway through: the one the controller deployed for this
/// Gateway object, else one someone else labelled with its name (the chart's shared
/// gateway). A deployed Service of a deleted namesake is not it (its address is not ours).
fn gateway_service<'i>(
    inputs: &'i Inputs,
    gateway: &Gateway,
    meta: &'i Meta,
) -> Option<&'i Service> {
    let uid = gateway.metadata.uid.as_deref().unwrap_or_default();
    let own = |s: &&Service| crate::deploy::is_deployed_for(&s.metadata, uid);
    let others = |s: &&Service| !crate::deploy::is_deployed(&s.metadata);
    gateway_services(inputs, meta)
        .find(own)
        .or_else(|| gateway_services(inputs, meta).find(others))
}

/// Whether the Gateway's Service can take connections.
///
/// A Gateway this controller deploys needs the Service made for this very Gateway object
/// (owner uid: a deleted namesake's Service and its endpoints may linger, and its draining
/// proxies still ACK) with a ready endpoint — and, once any slice shows an endpoint
/// controller at work, a slice of its own: a Service without one yet routes nowhere.
/// Otherwise (the chart's shared gateway, a Service of the user's) a ready endpoint, or no
/// slice at all (nothing publishes endpoints), or no Service Ferry knows of, lets it through.
fn service_has_ready_endpoint(
    inputs: &Inputs,
    gateway: &Gateway,
    meta: &Meta,
    applied: &Applied,
) -> bool {
    let deployed_here =
        matches!(applied, Applied::KnownAndDeployed(_)) && crate::deploy::deploys(inputs, gateway);
    match gateway_service(inputs, gateway, meta) {
        Some(service) if deployed_here => {
            let when_no_slice = !endpoint_controller_runs(inputs);
            crate::deploy::is_deployed(&service.metadata)
                && endpoints_ready(inputs, service, when_no_slice)
        }
        Some(service) => endpoints_ready(inputs, service, true),
        None => !deployed_here,
    }
}

/// Whether `service`'s EndpointSlices list a ready endpoint; `when_none`: the answer when it
/// has no slice at all.
fn endpoints_ready(inputs: &Inputs, service: &Service, when_none: bool) -> bool {
    let mut slices = inputs
        .endpoint_slices
        .iter()
        .filter(|slice| slice_of(slice, service));
    let ready = |slice: &EndpointSlice| {
        slice
            .endpoints
            .iter()
            .any(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
    };
    match slices.next() {
        None => when_none,
        Some(first) => ready(first) || slices.any(ready),
    }
}

/// A slice belongs to a Service by its owner reference when it has one (the endpoint
/// controller's do: a re-created namesake's old slices are not its own), else by the
/// `kubernetes.io/service-name` label.
fn slice_of(slice: &EndpointSlice, service: &Service) -> bool {
    let same_namespace = slice.metadata.namespace == service.metadata.namespace;
    let named = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/service-name"))
        == service.metadata.name.as_ref();
    let owners = slice
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default();
    let owned = owners.is_empty()
        || owners
            .iter()
            .any(|o| o.kind == "Service" && Some(&o.uid) == service.metadata.uid.as_ref());
    same_namespace && named && owned
}

/// The endpoint-slice controller labels the slices it writes; seeing one means Services get
/// slices here, so a deployed Service without any is not routable yet.
fn endpoint_controller_runs(inputs: &Inputs) -> bool {
    inputs.endpoint_slices.iter().any(|slice| {
        slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("endpointslice.kubernetes.io/managed-by"))
            .is_some_and(|by| by == "endpointslice-controller.k8s.io")
    })
}

/// One address per node: ExternalIP when it has one, else InternalIP.
fn node_addresses(inputs: &Inputs) -> Vec<String> {
    inputs
        .nodes
        .iter()
        .filter_map(|node| {
            let addresses = node.status.as_ref()?.addresses.as_ref()?;
            let of = |kind: &str| {
                addresses
                    .iter()
                    .find(|a| a.type_ == kind)
                    .map(|a| a.address.clone())
            };
            of("ExternalIP").or_else(|| of("InternalIP"))
        })
        .collect()
}

fn route_parents(reports: &[Report], route: &HttpRoute, meta: &Meta) -> Vec<Value> {
    let generation = route.metadata.generation;
    route
        .spec
        .parent_refs
        .iter()
        .flatten()
        .filter_map(|parent| {
            let namespace = parent.namespace.as_deref().unwrap_or(&meta.namespace);
            let label = route_parent_label(namespace, parent);
            let conditions = object_conditions(reports, meta, Some(&label), generation);
            (!conditions.is_empty()).then(|| {
                json!({
                    "parentRef": parent_ref(parent, namespace),
                    "controllerName": CONTROLLER_NAME,
                    "conditions": conditions,
                })
            })
        })
        .collect()
}

fn parent_ref(parent: &HttpRouteParentRefs, namespace: &str) -> Value {
    let mut value = json!({
        "group": parent.group.as_deref().unwrap_or("gateway.networking.k8s.io"),
        "kind": parent.kind.as_deref().unwrap_or("Gateway"),
        "namespace": namespace,
        "name": parent.name,
    });
    if let Some(section) = &parent.section_name {
        value["sectionName"] = section.clone().into();
    }
    if let Some(port) = parent.port {
        value["port"] = port.into();
    }
    value
}

/// One condition per type from the reports about `object` (and `parent`, when given); the
/// first failing report of a type wins over successes, as a condition is false when any
/// part of it fails. Route-wide rule errors (no parent) count against every parent.
fn object_conditions(
    reports: &[Report],
    object: &Meta,
    parent: Option<&str>,
    generation: Option<i64>,
) -> Vec<Value> {
    let relevant: Vec<&Report> = reports
        .iter()
        .filter(|r| r.object == *object && (r.parent.as_deref() == parent || r.parent.is_none()))
        .collect();
    let mut types: Vec<&str> = relevant.iter().map(|r| r.condition).collect();
    types.sort();
    types.dedup();
    types
        .into_iter()
        .filter(|t| *t != "Valid" || relevant.iter().any(|r| r.condition == *t && !r.status))
        .filter_map(|t| {
            let of_type = relevant.iter().filter(|r| r.condition == t);
            let chosen = of_type
                .clone()
                .find(|r| !r.status)
                .or_else(|| of_type.clone().next())?;
            Some(condition(
                t,
                chosen.status,
                chosen.reason,
                &chosen.message,
                generation,
            ))
        })
        .collect()
}

/// Policy attachment status: one ancestor per target, with its `Accepted` condition
/// (Accepted, Conflicted, Invalid, InvalidKind or TargetNotFound).
fn rate_limit_policy_status(
    reports: &[Report],
    policy: &crate::inputs::ferry::LocalRateLimitPolicy,
    meta: &Meta,
) -> Value {
    let generation = policy.metadata.generation;
    let accepted: Vec<&Report> = reports
        .iter()
        .filter(|r| r.object == *meta && r.condition == "Accepted")
        .collect();
    let ancestors: Vec<Value> = policy
        .spec
        .target_refs
        .iter()
        .enumerate()
        .map(|(index, target)| {
            let field = format!("spec.targetRefs[{index}]");
            let named = format!("{}/{}/{}", target.kind, meta.namespace, target.name);
            let report = accepted
                .iter()
                .find(|r| r.field.as_deref() == Some(field.as_str()))
                .or_else(|| {
                    accepted
                        .iter()
                        .find(|r| r.parent.as_deref() == Some(named.as_str()))
                })
                .or_else(|| accepted.iter().find(|r| r.parent.is_none() && !r.status));
            let condition = match report {
                Some(r) => condition("Accepted", r.status, r.reason, &r.message, generation),
                None => condition(
                    "Accepted",
                    false,
                    "Pending",
                    "not translated yet",
                    generation,
                ),
            };
            json!({
                "ancestorRef": {"group": target.group, "kind": target.kind,
                                "namespace": &*meta.namespace, "name": target.name},
                "controllerName": CONTROLLER_NAME,
                "conditions": [condition],
            })
        })
        .collect();
    json!({ "ancestors": ancestors })
}

fn condition(
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Value {
    json!({
        "type": kind,
        "status": if status { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "observedGeneration": generation.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::parse_manifests;
    use crate::{translate, Options};

    fn statuses(yaml: &str) -> Vec<DesiredStatus> {
        let inputs = Inputs::from_objects(parse_manifests(yaml, "test").unwrap());
        let output = translate(&inputs, &Options::default());
        desired(&inputs, &output.reports, &Applied::Assumed)
    }

    fn of<'a>(all: &'a [DesiredStatus], kind: &str, name: &str) -> &'a Value {
        &all.iter()
            .find(|s| &*s.object.kind == kind && &*s.object.name == name)
            .unwrap()
            .status
    }

    const BASE: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public, namespace: infra}
spec:
  gatewayClassName: ferry
  listeners:
  - {name: http, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
  - {name: udp, port: 9000, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{name: public, namespace: infra, sectionName: http}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: shop}
spec:
  parentRefs: [{name: public, namespace: infra}]
  rules: [{backendRefs: [{name: missing, port: 80}]}]
";

    #[test]
    fn a_gateway_no_proxy_has_applied_is_accepted_but_pending() {
        let inputs = Inputs::from_objects(parse_manifests(BASE, "test").unwrap());
        let output = translate(&inputs, &Options::default());
        let none = crate::applied::AppliedGateways::new();
        let all = desired(&inputs, &output.reports, &Applied::Known(&none));
        let conditions = &of(&all, "Gateway", "public")["conditions"];
        assert_eq!(conditions[0]["type"], "Accepted");
        assert_eq!(conditions[0]["status"], "True");
        assert_eq!(conditions[1]["type"], "Programmed");
        assert_eq!(conditions[1]["status"], "False");
        assert_eq!(conditions[1]["reason"], "Pending");
    }

    #[test]
    fn gateway_listeners_report_their_own_conditions_and_attached_routes() {
        let all = statuses(BASE);
        let gateway = of(&all, "Gateway", "public");
        let types: Vec<(&str, &str)> = gateway["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
            .collect();
        assert_eq!(types, vec![("Accepted", "True"), ("Programmed", "True")]);
        let http = &gateway["listeners"][0];
        assert_eq!(http["attachedRoutes"], 2);
        assert_eq!(http["conditions"][0]["status"], "True");
        let udp = &gateway["listeners"][1];
        assert_eq!(udp["conditions"][0]["reason"], "UnsupportedProtocol");
        assert_eq!(udp["attachedRoutes"], 0);
    }

    /// Each Gateway has a proxy of its own in a cluster: one Gateway's HTTPS on 443 does not
    /// conflict with another's TLS passthrough on 443 (it would on one shared proxy).
    #[test]
    fn gateways_of_their_own_proxies_do_not_conflict_over_a_port() {
        let yaml = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: infra}
spec:
  gatewayClassName: ferry
  listeners:
  - {name: http, port: 443, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tls, namespace: infra}
spec:
  gatewayClassName: ferry
  listeners:
  - {name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}}
";
        let inputs = Inputs::from_objects(parse_manifests(yaml, "test").unwrap());
        let shared = translate(&inputs, &Options::default()).reports;
        assert!(
            shared.iter().any(|r| r.reason == "ProtocolConflict"),
            "one shared proxy: {shared:?}"
        );
        let reports = super::reports_per_proxy(&inputs);
        assert!(
            !reports.iter().any(|r| r.reason == "ProtocolConflict"),
            "{reports:?}"
        );
        let all = desired(&inputs, &reports, &Applied::Assumed);
        for name in ["web", "tls"] {
            let listener = &of(&all, "Gateway", name)["listeners"][0];
            assert_eq!(listener["conditions"][1]["type"], "Programmed");
            assert_eq!(
                listener["conditions"][1]["status"], "True",
                "{name}: {listener}"
            );
        }
    }

    /// Programmed waits for the Gateway's Service to route somewhere: slices that list no
    /// ready endpoint keep it Pending; a ready endpoint, or no slice at all (nothing
    /// publishes endpoints), let it through.
    #[test]
    fn programmed_waits_for_a_ready_endpoint_of_the_gateway_service() {
        let gateway = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public, namespace: infra, uid: u1, generation: 1}
spec:
  gatewayClassName: ferry
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: v1
kind: Service
metadata: {name: public-ferry, namespace: infra, labels: {gateway.networking.k8s.io/gateway-name: public}}
spec: {ports: [{port: 80}]}
";
        let slice = |ready: bool| {
            format!(
                "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {{name: public-ferry-1, namespace: infra, labels: {{kubernetes.io/service-name: public-ferry}}}}\n\
                 addressType: IPv4\nendpoints: [{{addresses: [10.0.0.9], conditions: {{ready: {ready}}}}}]\n"
            )
        };
        let applied = crate::applied::AppliedGateways::from([(
            "infra/public".to_string(),
            crate::applied::AppliedGeneration {
                uid: "u1".into(),
                generation: 1,
            },
        )]);
        let programmed = |yaml: &str| {
            let inputs = Inputs::from_objects(parse_manifests(yaml, "test").unwrap());
            let reports = super::reports_per_proxy(&inputs);
            let all = desired(&inputs, &reports, &Applied::Known(&applied));
            of(&all, "Gateway", "public")["conditions"][1]["status"].clone()
        };
        assert_eq!(programmed(&format!("{gateway}{}", slice(false))), "False");
        assert_eq!(programmed(&format!("{gateway}{}", slice(true))), "True");
        assert_eq!(programmed(gateway), "True");
    }

    /// A Gateway the controller deploys is Programmed only through the Service made for this
    /// Gateway object, once that Service has a ready endpoint: not through a deleted
    /// namesake's Service (its draining proxies still ACK), nor before the Service exists or
    /// has a slice where an endpoint controller runs.
    #[test]
    fn a_deployed_gateway_waits_for_its_own_service_to_route() {
        let gateway = "
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: ferry}
spec: {controllerName: ferry.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public, namespace: infra, uid: u1, generation: 1}
spec:
  gatewayClassName: ferry
  listeners: [{name: http, port: 80, protocol: HTTP}]
";
        let service = |owner: &str| {
            format!(
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: public-ferry, namespace: infra, uid: s-{owner},\n\
                 \x20 labels: {{gateway.networking.k8s.io/gateway-name: public, app.kubernetes.io/managed-by: ferry-controller}},\n\
                 \x20 ownerReferences: [{{apiVersion: gateway.networking.k8s.io/v1, kind: Gateway, name: public, uid: {owner}}}]}}\n\
                 spec: {{ports: [{{port: 80}}]}}\n"
            )
        };
        let slice = |name: &str, service: &str, service_uid: &str| {
            format!(
                "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {{name: {name}, namespace: infra,\n\
                 \x20 labels: {{kubernetes.io/service-name: {service}, endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io}},\n\
                 \x20 ownerReferences: [{{apiVersion: v1, kind: Service, name: {service}, uid: {service_uid}}}]}}\n\
                 addressType: IPv4\nendpoints: [{{addresses: [10.0.0.9], conditions: {{ready: true}}}}]\n"
            )
        };
        let applied = crate::applied::AppliedGateways::from([(
            "infra/public".to_string(),
            crate::applied::AppliedGeneration {
                uid: "u1".into(),
                generation: 1,
            },
        )]);
        let programmed = |yaml: String| {
            let inputs = Inputs::from_objects(parse_manifests(&yaml, "test").unwrap());
            let reports = super::reports_per_proxy(&inputs);
            let all = desired(&inputs, &reports, &Applied::KnownAndDeployed(&applied));
            of(&all, "Gateway", "public")["conditions"][1]["status"].clone()
        };
        let other = slice("dns-1", "kube-dns", "s-dns");
        assert_eq!(programmed(gateway.to_string()), "False", "no Service yet");
        let stale = format!(
            "{gateway}{}{}",
            service("u0"),
            slice("public-ferry-1", "public-ferry", "s-u0")
        );
        assert_eq!(
            programmed(stale),
            "False",
            "only a deleted namesake's Service"
        );
        let no_slice = format!("{gateway}{}{other}", service("u1"));
        assert_eq!(
            programmed(no_slice),
            "False",
            "its Service has no slice yet"
        );
        let own = format!(
            "{gateway}{}{}",
            service("u1"),
            slice("public-ferry-2", "public-ferry", "s-u1")
        );
        assert_eq!(programmed(own), "True");
        let old_slice = format!(
            "{gateway}{}{}",
            service("u1"),
            slice("public-ferry-1", "public-ferry", "s-u0")
        );
        assert_eq!(programmed(old_slice), "False", "a slice of the old Service");
        let no_endpoint_controller = format!("{gateway}{}", service("u1"));
        assert_eq!(
            programmed(no_endpoint_controller),
            "True",
            "nothing publishes slices"
        );
    }

    /// A LocalRateLimitPolicy's status has one ancestor per target, each with its own
    /// Accepted condition: applied, conflicting with an older policy, or not found.
    #[test]
    fn rate_limit_policies_report_each_target_as_an_ancestor() {
        let yaml = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: shop}
spec: {rules: [{backendRefs: [{name: app, port: 80}]}]}
---
apiVersion: policy.ferry.dev/v1alpha1
kind: LocalRateLimitPolicy
metadata: {name: first, namespace: shop, creationTimestamp: '2026-01-01T00:00:00Z'}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}]
  limit: {requests: 5, unit: Second}
---
apiVersion: policy.ferry.dev/v1alpha1
kind: LocalRateLimitPolicy
metadata: {name: second, namespace: shop, creationTimestamp: '2026-02-01T00:00:00Z'}
spec:
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: missing}
  limit: {requests: 1, unit: Minute}
";
        let all = statuses(yaml);
        let condition = |policy: &str, ancestor: usize| {
            let status = of(&all, "LocalRateLimitPolicy", policy);
            let entry = &status["ancestors"][ancestor];
            let c = &entry["conditions"][0];
            (
                entry["ancestorRef"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        };
        let row = |name: &str, status: &str, reason: &str| {
            (name.to_string(), status.to_string(), reason.to_string())
        };
        assert_eq!(condition("first", 0), row("api", "True", "Accepted"));
        assert_eq!(condition("second", 0), row("api", "False", "Conflicted"));
        assert_eq!(
            condition("second", 1),
            row("missing", "False", "TargetNotFound")
        );
        let status = of(&all, "LocalRateLimitPolicy", "first");
        assert_eq!(status["ancestors"][0]["controllerName"], CONTROLLER_NAME);
    }

    #[test]
    fn tls_and_tcp_listeners_take_their_own_route_kinds() {
        let yaml = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: ferry
  listeners:
  - {name: tls, port: 9443, protocol: TLS, tls: {mode: Passthrough}, allowedRoutes: {namespaces: {from: All}}}
  - {name: tcp, port: 5432, protocol: TCP, allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: db, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  hostnames: [db.example.com]
  rules: [{backendRefs: [{name: db, port: 5432}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: pg, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: infra, sectionName: tcp}]
  rules: [{backendRefs: [{name: db, port: 5432}]}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {ports: [{port: 5432}]}
";
        let all = statuses(yaml);
        let gateway = of(&all, "Gateway", "edge");
        let kinds = |i: usize| gateway["listeners"][i]["supportedKinds"][0]["kind"].clone();
        assert_eq!(kinds(0), "TLSRoute");
        assert_eq!(kinds(1), "TCPRoute");
        assert_eq!(gateway["listeners"][0]["attachedRoutes"], 1);
        assert_eq!(gateway["listeners"][1]["attachedRoutes"], 1);
        for (kind, name) in [("TLSRoute", "db"), ("TCPRoute", "pg")] {
            let parent = &of(&all, kind, name)["parents"][0];
            assert_eq!(parent["conditions"][0]["type"], "Accepted", "{kind}");
            assert_eq!(
                parent["conditions"][0]["status"], "True",
                "{kind}: {parent}"
            );
        }
    }

    #[test]
    fn listener_conditions_name_conflicts_and_unresolved_certificates() {
        let yaml = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: ferry
  listeners:
  - {name: web, port: 8443, protocol: HTTP}
  - {name: secure, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: gone}]}}
  - {name: web-again, port: 8443, protocol: HTTP}
";
        let all = statuses(yaml);
        let gateway = of(&all, "Gateway", "edge");
        let listener = |index: usize| {
            let conditions = gateway["listeners"][index]["conditions"]
                .as_array()
                .unwrap();
            conditions
                .iter()
                .map(|c| {
                    let field = |k: &str| c[k].as_str().unwrap().to_string();
                    (field("type"), field("status"), field("reason"))
                })
                .collect::<Vec<_>>()
        };
        let row = |t: &str, s: &str, r: &str| (t.to_string(), s.to_string(), r.to_string());
        assert_eq!(
            listener(0),
            vec![
                row("Accepted", "True", "Accepted"),
                row("Programmed", "True", "Programmed"),
                row("ResolvedRefs", "True", "ResolvedRefs"),
                row("Conflicted", "False", "NoConflicts"),
            ]
        );
        assert!(listener(1).contains(&row("Conflicted", "True", "ProtocolConflict")));
        assert!(listener(1).contains(&row("Programmed", "False", "Invalid")));
        assert!(listener(2).contains(&row("Conflicted", "True", "HostnameConflict")));
        assert_eq!(gateway["conditions"][0]["reason"], "ListenersNotValid");
    }

    #[test]
    fn an_https_listener_with_a_missing_secret_has_resolved_refs_false() {
        let yaml = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: ferry
  listeners:
  - {name: secure, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: gone}]}}
";
        let all = statuses(yaml);
        let gateway = of(&all, "Gateway", "edge");
        let conditions = &gateway["listeners"][0]["conditions"];
        assert_eq!(conditions[1]["type"], "Programmed");
        assert_eq!(conditions[1]["status"], "False");
        assert_eq!(conditions[2]["type"], "ResolvedRefs");
        assert_eq!(conditions[2]["status"], "False");
        assert_eq!(conditions[2]["reason"], "InvalidCertificateRef");
        assert_eq!(
            gateway["conditions"][1]["status"], "False",
            "no listener is programmed"
        );
    }

    #[test]
    fn istio_objects_get_validation_messages_naming_the_field() {
        let yaml = "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, protocol: HTTP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop, generation: 3}
spec:
  hosts: [reviews.example.com]
  gateways: [public]
  http: [{match: [{uri: {prefix: /a, exact: /a}}], directResponse: {status: 200}}]
";
        let all = statuses(yaml);
        let status = of(&all, "VirtualService", "reviews");
        assert_eq!(status["observedGeneration"], 3);
        let messages = status["validationMessages"].as_array().unwrap();
        assert!(!messages.is_empty(), "{status}");
        assert!(
            messages[0]["message"].as_str().unwrap().contains("spec."),
            "{status}"
        );
    }

    #[test]
    fn the_gateway_address_comes_from_its_service_load_balancer() {
        let service = "
---
apiVersion: v1
kind: Service
metadata:
  name: public-gateway
  namespace: infra
  labels: {gateway.networking.k8s.io/gateway-name: public}
spec: {type: LoadBalancer, clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}
status: {loadBalancer: {ingress: [{ip: 203.0.113.7}]}}
";
        let all = statuses(&format!("{BASE}{service}"));
        let addresses = &of(&all, "Gateway", "public")["addresses"];
        assert_eq!(
            addresses,
            &json!([{"type": "IPAddress", "value": "203.0.113.7"}])
        );
        let node_port = service
            .replace("type: LoadBalancer", "type: NodePort")
            .replace("ingress: [{ip: 203.0.113.7}]", "ingress: []");
        let node = "
---
apiVersion: v1
kind: Node
metadata: {name: node-1}
status: {addresses: [{type: InternalIP, address: 192.168.1.10}, {type: Hostname, address: node-1}]}
";
        let all = statuses(&format!("{BASE}{node_port}{node}"));
        let addresses = &of(&all, "Gateway", "public")["addresses"];
        assert_eq!(
            addresses,
            &json!([{"type": "IPAddress", "value": "192.168.1.10"}])
        );
        let pending = statuses(&format!(
            "{BASE}{}",
            service.replace("ingress: [{ip: 203.0.113.7}]", "ingress: []")
        ));
        let addresses = &of(&pending, "Gateway", "public")["addresses"];
        assert_eq!(
            addresses,
            &json!([{"type": "IPAddress", "value": "10.96.0.10"}])
        );
    }

    #[test]
    fn routes_get_one_parent_entry_with_the_spec_reasons() {
        let all = statuses(BASE);
        let web = &of(&all, "HTTPRoute", "web")["parents"][0];
        assert_eq!(web["parentRef"]["sectionName"], "http");
        assert_eq!(web["controllerName"], CONTROLLER_NAME);
        let broken = &of(&all, "HTTPRoute", "broken")["parents"][0];
        let resolved = broken["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "ResolvedRefs")
            .unwrap();
        assert_eq!(resolved["status"], "False");
        assert_eq!(resolved["reason"], "BackendNotFound");
    }
}
