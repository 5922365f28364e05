//! The JSON the dashboard's API answers: built from the traffic windows and from what the
//! current inputs translate to. Only names, numbers, routing facts and statuses leave here:
//! no Secret is read, and route policies (which may hold password hashes) are not shown.

use ferry_model::summary::{
    EdgeCounts, EdgeKey, EdgeSample, NodeKind, NodeRef, ProxyError, Reporter, RESPONSE_FLAGS,
};
use ferry_model::{Action, BackendTarget, Snapshot};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::traffic::{Traffic, Window};
use super::ProxyView;
use crate::analyze::Finding;
use crate::applied::Applied;
use crate::status::{self, DesiredStatus};
use crate::{translate, Inputs, Options};

/// Recent errors a node's page lists at most.
const NODE_ERRORS: usize = 20;

/// Namespaces whose mesh translation is kept at once (node pages of more namespaces
/// translate again).
const MESH_SCOPES_KEPT: usize = 64;

/// What one set of inputs translates to, computed once per inputs.
pub(super) struct Derived {
    pub inputs: Arc<Inputs>,
    options: Options,
    /// The gateways' translation.
    snapshot: Snapshot,
    /// The mesh's translation as a sidecar of each namespace sees it, made when a node page
    /// of that namespace is asked for.
    mesh: Mutex<BTreeMap<String, Arc<Snapshot>>>,
    findings: Vec<Finding>,
    statuses: Vec<DesiredStatus>,
    statuses_written: bool,
}

impl Derived {
    pub fn new(inputs: Arc<Inputs>, options: &Options, statuses_written: bool) -> Derived {
        let snapshot = translate(&inputs, options).snapshot;
        let findings = crate::analyze::analyze(&inputs);
        let reports = status::reports_per_proxy(&inputs);
        let statuses = status::desired(&inputs, &reports, &Applied::Assumed);
        Derived {
            inputs,
            options: options.clone(),
            snapshot,
            mesh: Mutex::new(BTreeMap::new()),
            findings,
            statuses,
            statuses_written,
        }
    }

    /// What a sidecar in `namespace` is given: Service routes, mesh VirtualServices.
    fn mesh_snapshot(&self, namespace: &str) -> Arc<Snapshot> {
        let mut kept = self.mesh.lock().expect("mesh lock");
        if let Some(snapshot) = kept.get(namespace) {
            return snapshot.clone();
        }
        let options = Options {
            mesh_namespace: Some(namespace.to_string()),
            ..self.options.clone()
        };
        let snapshot = Arc::new(translate(&self.inputs, &options).snapshot);
        if kept.len() >= MESH_SCOPES_KEPT {
            kept.clear();
        }
        kept.insert(namespace.to_string(), snapshot.clone());
        snapshot
    }
}

/// One edge of the drawn graph, summed over the edges of the traffic windows it stands for.
type GraphEdges = BTreeMap<(NodeRef, NodeRef), EdgeCounts>;

/// The graph's edges: a caller's requests go to a Service, and from the Service to each
/// workload that served them (so a 90/10 canary is two edges out of the Service). A
/// destination's own report is drawn only for callers no proxy reported (plaintext callers
/// from outside the mesh): every other request was already reported by its caller's proxy.
fn graph_edges(edges: &[(EdgeKey, EdgeCounts)]) -> GraphEdges {
    let mut graph = GraphEdges::new();
    let mut add = |from: &NodeRef, to: &NodeRef, counts: &EdgeCounts| {
        graph
            .entry((from.clone(), to.clone()))
            .or_default()
            .add(counts);
    };
    for (key, counts) in edges {
        match (key.reporter, &key.service, &key.workload) {
            (Reporter::Destination, _, Some(workload)) => {
                if key.source == NodeRef::unknown() {
                    add(&key.source, workload, counts);
                }
            }
            (Reporter::Destination, _, None) => {}
            (Reporter::Source, Some(service), workload) => {
                add(&key.source, service, counts);
                if let Some(workload) = workload {
                    add(service, workload, counts);
                }
            }
            (Reporter::Source, None, Some(workload)) => add(&key.source, workload, counts),
            (Reporter::Source, None, None) => add(&key.source, &unrouted(), counts),
        }
    }
    graph
}

/// Where requests that reached no Service end (no route, redirects, direct replies).
fn unrouted() -> NodeRef {
    NodeRef::new(NodeKind::Unknown, "-", "no service")
}

/// The traffic the views are drawn from: one controller's windows, or several replicas'
/// merged (their edges added up, their errors together).
pub struct TrafficView {
    pub edges: Vec<(EdgeKey, EdgeCounts)>,
    /// Newest first.
    pub errors: Vec<ProxyError>,
    pub dropped_edges: u64,
}

impl TrafficView {
    pub fn of(traffic: &mut Traffic, window: Window, now_ms: u64) -> TrafficView {
        TrafficView {
            edges: traffic.edges(window, now_ms),
            errors: traffic.errors().cloned().collect(),
            dropped_edges: traffic.dropped_edges(),
        }
    }

    /// Adds another replica's view in.
    pub fn merge(&mut self, other: TrafficView) {
        let mut edges: BTreeMap<EdgeKey, EdgeCounts> =
            std::mem::take(&mut self.edges).into_iter().collect();
        for (key, counts) in other.edges {
            edges.entry(key).or_default().add(&counts);
        }
        self.edges = edges.into_iter().collect();
        self.errors.extend(other.errors);
        self.errors.sort_by_key(|e| std::cmp::Reverse(e.at_unix_ms));
        self.dropped_edges += other.dropped_edges;
    }
}

/// The raw windows (`/api/export`): what a view over several replicas adds up.
pub fn export(view: &TrafficView, window: Window, now_ms: u64) -> Value {
    let edges: Vec<EdgeSample> = view
        .edges
        .iter()
        .map(|(key, counts)| EdgeSample {
            key: key.clone(),
            counts: counts.clone(),
        })
        .collect();
    json!({
        "window": window.label(),
        "nowUnixMs": now_ms,
        "edges": edges,
        "errors": view.errors,
        "droppedEdges": view.dropped_edges,
    })
}

impl TrafficView {
    /// A view read back from another replica's `/api/export`.
    pub fn from_export(export: &Value) -> Result<TrafficView, String> {
        let edges: Vec<EdgeSample> =
            serde_json::from_value(export["edges"].clone()).map_err(|e| format!("edges: {e}"))?;
        let errors: Vec<ProxyError> =
            serde_json::from_value(export["errors"].clone()).map_err(|e| format!("errors: {e}"))?;
        Ok(TrafficView {
            edges: edges.into_iter().map(|e| (e.key, e.counts)).collect(),
            errors,
            dropped_edges: export["droppedEdges"].as_u64().unwrap_or(0),
        })
    }
}

pub fn graph(view: &TrafficView, window: Window, now_ms: u64) -> Value {
    let seconds = window.covered_ms(now_ms) as f64 / 1000.0;
    let edges = graph_edges(&view.edges);
    let mut nodes = BTreeSet::new();
    let edges: Vec<Value> = edges
        .iter()
        .map(|((from, to), counts)| {
            nodes.insert(from.clone());
            nodes.insert(to.clone());
            edge_json(from, to, counts, seconds)
        })
        .collect();
    json!({
        "window": window.label(),
        "windowSeconds": seconds,
        "generatedAtUnixMs": now_ms,
        "nodes": nodes.iter().map(node_json).collect::<Vec<_>>(),
        "edges": edges,
        "droppedEdges": view.dropped_edges,
    })
}

fn node_json(node: &NodeRef) -> Value {
    json!({"id": node.id(), "kind": node.kind, "namespace": &*node.namespace, "name": &*node.name})
}

fn edge_json(from: &NodeRef, to: &NodeRef, counts: &EdgeCounts, seconds: f64) -> Value {
    let requests = counts.requests as f64;
    // Errors of a TCP edge are its connections that reached no backend.
    let attempts = (counts.requests + counts.tcp_connections) as f64;
    let percent = |n: u64| round2(100.0 * n as f64 / attempts.max(1.0));
    let flags: BTreeMap<&str, u64> = RESPONSE_FLAGS
        .iter()
        .zip(&counts.flags)
        .filter(|(_, n)| **n > 0)
        .map(|(flag, n)| (*flag, *n))
        .collect();
    json!({
        "id": format!("{}>{}", from.id(), to.id()),
        "source": from.id(),
        "target": to.id(),
        "requests": counts.requests,
        "rps": round2(requests / seconds.max(1.0)),
        "clientErrors": counts.client_errors,
        "serverErrors": counts.server_errors,
        "errorPercent": percent(counts.client_errors + counts.server_errors),
        "serverErrorPercent": percent(counts.server_errors),
        "p50Ms": counts.latency_quantile_ms(0.5).map(round2),
        "p99Ms": counts.latency_quantile_ms(0.99).map(round2),
        "mtlsPercent": percent(counts.mtls_requests),
        "flags": flags,
        "tcpConnections": counts.tcp_connections,
        "tcpBytesPerSecond": round2((counts.tcp_bytes_sent + counts.tcp_bytes_received) as f64 / seconds.max(1.0)),
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A node's page: its edges (last minute) and the replies the proxies wrote for requests to
/// or from it; [`node_config`] adds the routes to it and its Services' policies.
pub fn node(view: &TrafficView, id: &str, now_ms: u64) -> Option<(NodeRef, Value)> {
    let seconds = Window::OneMinute.covered_ms(now_ms) as f64 / 1000.0;
    let graph = graph_edges(&view.edges);
    let node = graph
        .keys()
        .flat_map(|(a, b)| [a, b])
        .find(|n| n.id() == id)
        .cloned()
        .or_else(|| parse_node_id(id))?;
    let touching = |outgoing: bool| -> Vec<Value> {
        graph
            .iter()
            .filter(|((from, to), _)| if outgoing { from == &node } else { to == &node })
            .map(|((from, to), counts)| edge_json(from, to, counts, seconds))
            .collect()
    };
    let errors: Vec<Value> = view
        .errors
        .iter()
        .filter(|e| involves(&e.edge, &node))
        .take(NODE_ERRORS)
        .map(|e| serde_json::to_value(e).unwrap_or_default())
        .collect();
    let page = json!({
        "node": node_json(&node),
        "inbound": touching(false),
        "outbound": touching(true),
        "routes": [],
        "policies": [],
        "services": [],
        "recentErrors": errors,
    });
    Some((node, page))
}

/// The routes to the node (gateways' and, as a sidecar of the node's namespace sees them,
/// the mesh's), its Services' traffic policies, a workload's Services.
pub(super) fn node_config(derived: &Derived, node: &NodeRef, page: &mut Value) {
    let mesh = match node.kind {
        NodeKind::Service | NodeKind::Workload => Some(derived.mesh_snapshot(&node.namespace)),
        _ => None,
    };
    let scopes: Vec<(&Snapshot, &str)> = std::iter::once((&derived.snapshot, "gateway"))
        .chain(mesh.as_deref().map(|m| (m, "mesh")))
        .collect();
    let mut routes = Vec::new();
    let mut policies: Vec<Value> = Vec::new();
    let mut services = BTreeSet::new();
    for (snapshot, scope) in scopes {
        routes.extend(routes_to(snapshot, node, scope));
        for policy in policies_of(snapshot, node) {
            if !policies.iter().any(|p| p["cluster"] == policy["cluster"]) {
                policies.push(policy);
            }
        }
        services.extend(services_of(snapshot, node));
    }
    page["routes"] = routes.into();
    page["policies"] = policies.into();
    page["services"] = services.into_iter().collect::<Vec<_>>().into();
}

fn parse_node_id(id: &str) -> Option<NodeRef> {
    let mut parts = id.splitn(3, '/');
    let kind = match parts.next()? {
        "gateway" => NodeKind::Gateway,
        "workload" => NodeKind::Workload,
        "service" => NodeKind::Service,
        "unknown" => NodeKind::Unknown,
        _ => return None,
    };
    Some(NodeRef::new(kind, parts.next()?, parts.next()?))
}

/// Whether a request's edge touches the node (requests that reached no Service end at the
/// graph's "no service" node).
fn involves(edge: &EdgeKey, node: &NodeRef) -> bool {
    let reached_none = edge.service.is_none() && edge.workload.is_none();
    &edge.source == node
        || edge.service.as_ref() == Some(node)
        || edge.workload.as_ref() == Some(node)
        || (reached_none && *node == unrouted())
}

/// Cluster names whose Service (or, for a workload, whose endpoints) is the node.
fn clusters_of<'a>(snapshot: &'a Snapshot, node: &NodeRef) -> Vec<&'a ferry_model::Cluster> {
    snapshot
        .clusters
        .iter()
        .filter(|cluster| match node.kind {
            NodeKind::Service => {
                cluster.service.namespace == node.namespace && cluster.service.name == node.name
            }
            NodeKind::Workload => cluster.endpoints.iter().any(|e| {
                e.workload
                    .as_ref()
                    .is_some_and(|w| w.namespace == node.namespace && w.name == node.name)
            }),
            _ => false,
        })
        .collect()
}

/// Every route of `scope` that forwards to the node's clusters, with the weight it gives
/// each; a route served under several names of its host (a Service's short name, FQDN,
/// ClusterIP...) is listed once with all of them.
fn routes_to(snapshot: &Snapshot, node: &NodeRef, scope: &str) -> Vec<Value> {
    let clusters: BTreeSet<&str> = clusters_of(snapshot, node)
        .iter()
        .map(|c| &*c.name)
        .collect();
    let mut routes: Vec<Value> = Vec::new();
    for listener in snapshot.listeners.iter() {
        for host in listener.virtual_hosts.iter() {
            for route in host.routes.iter() {
                let Action::Forward(backends) = &route.action else {
                    continue;
                };
                let total: u32 = backends.iter().map(|b| b.weight).sum();
                for backend in backends.iter() {
                    let BackendTarget::Cluster(name) = &backend.target else {
                        continue;
                    };
                    if !clusters.contains(&**name) {
                        continue;
                    }
                    let entry = json!({
                        "object": format!("{} {}/{}", route.meta.kind, route.meta.namespace, route.meta.name),
                        "rule": &*route.name,
                        "listener": listener.port,
                        "cluster": &**name,
                        "weight": backend.weight,
                        "weightPercent": round2(100.0 * f64::from(backend.weight) / f64::from(total.max(1))),
                        "scope": scope,
                    });
                    add_route(&mut routes, entry, &host.hostname);
                }
            }
        }
    }
    routes
}

/// Adds a route entry, or its host to the same entry made for another host name.
fn add_route(routes: &mut Vec<Value>, entry: Value, host: &str) {
    match routes.iter_mut().find(|r| {
        let mut without_hosts = (*r).clone();
        without_hosts.as_object_mut().map(|o| o.remove("hosts"));
        without_hosts == entry
    }) {
        Some(same) => {
            if let Some(hosts) = same["hosts"].as_array_mut() {
                hosts.push(host.into());
            }
        }
        None => {
            let mut entry = entry;
            entry["hosts"] = json!([host]);
            routes.push(entry);
        }
    }
}

/// The traffic policies (DestinationRule, annotations, defaults) of the node's clusters.
fn policies_of(snapshot: &Snapshot, node: &NodeRef) -> Vec<Value> {
    clusters_of(snapshot, node)
        .iter()
        .map(|cluster| {
            json!({
                "cluster": &*cluster.name,
                "from": format!("{} {}/{}", cluster.meta.kind, cluster.meta.namespace, cluster.meta.name),
                "endpoints": cluster.endpoints.len(),
                "upstreamTls": cluster.tls.is_some(),
                "policy": serde_json::to_value(&cluster.policy).unwrap_or_default(),
            })
        })
        .collect()
}

/// For a workload: the Services whose endpoints it serves.
fn services_of(snapshot: &Snapshot, node: &NodeRef) -> Vec<String> {
    if node.kind != NodeKind::Workload {
        return Vec::new();
    }
    let services: BTreeSet<String> = clusters_of(snapshot, node)
        .iter()
        .map(|c| format!("{}/{}", c.service.namespace, c.service.name))
        .collect();
    services.into_iter().collect()
}

/// Every Gateway (Gateway API and Istio) with its listeners, attached routes and conditions.
pub(super) fn gateways(derived: &Derived) -> Value {
    let mut out: Vec<Value> = Vec::new();
    for status in derived
        .statuses
        .iter()
        .filter(|s| &*s.object.kind == "Gateway")
    {
        let object = &status.object;
        let Some(gateway) = derived.inputs.gateways.iter().find(|g| {
            g.metadata.namespace.as_deref() == Some(&*object.namespace)
                && g.metadata.name.as_deref() == Some(&*object.name)
        }) else {
            continue;
        };
        let written = derived
            .statuses_written
            .then(|| serde_json::to_value(&gateway.status).ok())
            .flatten()
            .filter(|v| !v.is_null());
        out.push(json!({
            "api": "gateway.networking.k8s.io",
            "namespace": &*object.namespace,
            "name": &*object.name,
            "className": &gateway.spec.gateway_class_name,
            "listeners": serde_json::to_value(&gateway.spec.listeners).unwrap_or_default(),
            "status": written.clone().unwrap_or_else(|| status.status.clone()),
            "statusSource": if written.is_some() { "written" } else { "computed" },
            "routes": attached_routes(&derived.statuses, &object.namespace, &object.name),
        }));
    }
    for gateway in &derived.inputs.istio_gateways {
        let namespace = gateway.metadata.namespace.clone().unwrap_or_default();
        let name = gateway.metadata.name.clone().unwrap_or_default();
        let object = format!("Gateway {namespace}/{name}");
        out.push(json!({
            "api": "networking.istio.io",
            "namespace": namespace,
            "name": name,
            "selector": gateway.spec.selector,
            "servers": serde_json::to_value(&gateway.spec.servers).unwrap_or_default(),
            "routes": bound_virtual_services(&derived.inputs, &namespace, &name),
            "messages": findings_about(&derived.findings, &object),
        }));
    }
    json!({ "gateways": out })
}

/// Routes whose status names the Gateway as a parent, with that parent's conditions.
fn attached_routes(statuses: &[DesiredStatus], namespace: &str, name: &str) -> Vec<Value> {
    let mut routes = Vec::new();
    for status in statuses {
        let Some(parents) = status.status.get("parents").and_then(Value::as_array) else {
            continue;
        };
        for parent in parents {
            let reference = &parent["parentRef"];
            let parent_namespace = reference["namespace"]
                .as_str()
                .unwrap_or(&status.object.namespace);
            if reference["name"] == name && parent_namespace == namespace {
                routes.push(json!({
                    "kind": &*status.object.kind,
                    "namespace": &*status.object.namespace,
                    "name": &*status.object.name,
                    "sectionName": reference.get("sectionName"),
                    "conditions": parent["conditions"],
                }));
            }
        }
    }
    routes
}

/// VirtualServices whose `gateways` name this Istio Gateway (`name` in its namespace, or
/// `namespace/name`).
fn bound_virtual_services(inputs: &Inputs, namespace: &str, name: &str) -> Vec<Value> {
    let qualified = format!("{namespace}/{name}");
    inputs
        .virtual_services
        .iter()
        .filter_map(|vs| {
            let vs_namespace = vs.metadata.namespace.as_deref().unwrap_or_default();
            let spec = serde_json::to_value(&vs.spec).ok()?;
            let names: Vec<&str> = spec["gateways"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let bound = names
                .iter()
                .any(|g| *g == qualified || (*g == name && vs_namespace == namespace));
            bound.then(|| {
                json!({
                    "kind": "VirtualService",
                    "namespace": vs_namespace,
                    "name": vs.metadata.name.as_deref().unwrap_or_default(),
                    "hosts": spec["hosts"],
                })
            })
        })
        .collect()
}

fn findings_about(findings: &[Finding], object: &str) -> Vec<Value> {
    findings
        .iter()
        .filter(|f| f.object.as_deref() == Some(object))
        .map(|f| serde_json::to_value(f).unwrap_or_default())
        .collect()
}

/// Every validation message of the objects (what `ferry analyze` prints for them).
pub(super) fn messages(derived: &Derived) -> Value {
    let errors = derived
        .findings
        .iter()
        .filter(|f| f.severity == crate::analyze::Level::Error)
        .count();
    json!({
        "errors": errors,
        "warnings": derived.findings.len() - errors,
        "messages": derived.findings,
    })
}

pub(super) fn proxies(proxies: &[ProxyView]) -> Value {
    json!({ "proxies": proxies })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reporter: Reporter, source: NodeRef, workload: &str) -> EdgeKey {
        EdgeKey {
            reporter,
            source,
            service: (reporter == Reporter::Source)
                .then(|| NodeRef::new(NodeKind::Service, "w", "weather")),
            workload: Some(NodeRef::new(NodeKind::Workload, "w", workload)),
        }
    }

    fn counts(requests: u64) -> EdgeCounts {
        EdgeCounts {
            requests,
            ..EdgeCounts::default()
        }
    }

    #[test]
    fn a_canary_is_one_edge_into_the_service_and_two_out_of_it() {
        let gateway = NodeRef::new(NodeKind::Gateway, "infra", "gw");
        let graph = graph_edges(&[
            (key(Reporter::Source, gateway.clone(), "v1"), counts(90)),
            (key(Reporter::Source, gateway.clone(), "v2"), counts(10)),
            // The destinations' own reports of the same requests are not drawn again...
            (
                key(
                    Reporter::Destination,
                    NodeRef::new(NodeKind::Unknown, "infra", "sa:gw"),
                    "v1",
                ),
                counts(90),
            ),
            // ...but a plaintext caller no proxy reported is.
            (
                key(Reporter::Destination, NodeRef::unknown(), "v2"),
                counts(3),
            ),
        ]);
        let service = NodeRef::new(NodeKind::Service, "w", "weather");
        let v1 = NodeRef::new(NodeKind::Workload, "w", "v1");
        let v2 = NodeRef::new(NodeKind::Workload, "w", "v2");
        assert_eq!(graph[&(gateway, service.clone())].requests, 100);
        assert_eq!(graph[&(service.clone(), v1)].requests, 90);
        assert_eq!(graph[&(service, v2.clone())].requests, 10);
        assert_eq!(graph[&(NodeRef::unknown(), v2)].requests, 3);
        assert_eq!(graph.len(), 4);
    }

    #[test]
    fn node_ids_round_trip() {
        let node = NodeRef::new(NodeKind::Workload, "weather", "weather-v1");
        assert_eq!(parse_node_id(&node.id()), Some(node));
        assert_eq!(parse_node_id("pod/a/b"), None);
    }
}
