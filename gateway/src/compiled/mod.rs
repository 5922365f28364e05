//! A snapshot compiled for the request path: host index per listener, regexes built,
//! load-balancing state allocated. Built off the request path, then swapped in whole.

mod matcher;
mod path_index;

use ferry_model::{Action, BackendTarget, Cluster, ListenerTls, Route, Snapshot, Str};
use rustls::ServerConfig;
use std::collections::HashMap;
use std::sync::Arc;

pub use matcher::{CompiledMatch, RequestView};
use path_index::PathIndex;

use crate::listeners::{PortService, WantedPorts};
use crate::upstream::ClusterState;

#[derive(Debug, thiserror::Error)]
#[error("route {route} ({object}): {message}")]
pub struct CompileError {
    pub route: String,
    pub object: String,
    pub message: String,
}

pub struct CompiledSnapshot {
    pub version: u64,
    /// The snapshot as received, for /config_dump.
    pub source: Arc<Snapshot>,
    listeners: HashMap<u16, CompiledListener>,
    clusters: HashMap<Str, Arc<CompiledCluster>>,
    /// RequestAuthentication rules with their keys parsed.
    pub jwt: Vec<crate::proxy::jwt::CompiledJwtPolicy>,
    /// AuthorizationPolicy rules indexed by path, one entry per policy.
    pub authz_index: Vec<Option<crate::proxy::authz_index::RuleIndex>>,
}

/// A listener's TLS settings as the snapshot stated them and as rustls serves them.
struct CompiledTls {
    source: ListenerTls,
    config: Arc<ServerConfig>,
}

struct CompiledListener {
    tls: Option<CompiledTls>,
    /// Connection-level routes (TCP and TLS ports); such a port has no virtual hosts.
    stream: Option<ferry_model::StreamRoutes>,
    /// Server names passed through on an HTTPS port.
    passthrough: Option<ferry_model::StreamRoutes>,
    exact: HashMap<Str, usize>,
    /// (suffix including the leading dot, vhost index), longest suffix first.
    wildcards: Vec<(Str, usize)>,
    catch_all: Option<usize>,
    vhosts: Vec<CompiledVirtualHost>,
}

/// A virtual host's routes in precedence order (the first full match wins), indexed by path
/// when there are enough of them for a scan to cost more than the index.
struct CompiledVirtualHost {
    routes: Vec<Arc<CompiledRoute>>,
    path_index: Option<PathIndex>,
}

pub struct CompiledRoute {
    pub route: Route,
    matcher: CompiledMatch,
    total_weight: u64,
}

/// A cluster plus its runtime state (breaker, balancer, outlier detection).
pub struct CompiledCluster {
    pub cluster: Cluster,
    pub state: ClusterState,
    /// TLS originated to the endpoints, ready to dial.
    pub tls: Option<Arc<crate::upstream_tls::CompiledUpstreamTls>>,
}

impl CompiledSnapshot {
    /// Compiles `snapshot`. Clusters identical to one in `previous` keep its runtime state,
    /// so a config change elsewhere does not reset circuit breakers or ejections.
    pub fn compile(
        snapshot: Arc<Snapshot>,
        previous: Option<&CompiledSnapshot>,
    ) -> Result<Self, CompileError> {
        Self::compile_with_mesh(snapshot, previous, None)
    }

    /// As [`CompiledSnapshot::compile`]; listeners that terminate the mesh's mTLS
    /// (ISTIO_MUTUAL) are served with `mesh`, the proxy's workload-identity TLS (None: such
    /// a listener is an error, as this proxy has no identity to present).
    pub fn compile_with_mesh(
        snapshot: Arc<Snapshot>,
        previous: Option<&CompiledSnapshot>,
        mesh: Option<&Arc<rustls::ServerConfig>>,
    ) -> Result<Self, CompileError> {
        let mut listeners = HashMap::new();
        for listener in snapshot.listeners.iter() {
            let mut compiled = compile_listener(listener)?;
            let previous_tls = previous
                .and_then(|p| p.listeners.get(&listener.port))
                .and_then(|l| l.tls.as_ref());
            compiled.tls = match listener.tls.as_ref().filter(|t| t.mesh) {
                Some(tls) => Some(mesh_tls(listener, tls, mesh)?),
                None => compile_tls(listener, previous_tls)?,
            };
            listeners.insert(listener.port, compiled);
        }
        let clusters = snapshot
            .clusters
            .iter()
            .map(|c| {
                let kept = previous
                    .and_then(|p| p.clusters.get(&c.name))
                    .filter(|old| old.cluster == *c);
                let compiled = kept.cloned().unwrap_or_else(|| {
                    Arc::new(CompiledCluster {
                        cluster: c.clone(),
                        state: ClusterState::new(c),
                        tls: c.tls.as_ref().map(|tls| {
                            Arc::new(crate::upstream_tls::CompiledUpstreamTls::compile(tls))
                        }),
                    })
                });
                (c.name.clone(), compiled)
            })
            .collect();
        Ok(CompiledSnapshot {
            version: snapshot.version,
            jwt: crate::proxy::jwt::compile(&snapshot.request_authentication),
            authz_index: crate::proxy::authz_index::build(&snapshot.authorization),
            source: snapshot,
            listeners,
            clusters,
        })
    }

    /// Every listener port with its TLS configuration and whether it relays connections.
    pub fn ports(&self) -> WantedPorts {
        self.listeners
            .iter()
            .map(|(port, l)| {
                let service = PortService {
                    tls: l.tls.as_ref().map(|t| t.config.clone()),
                    stream: l.stream.is_some(),
                    passthrough: l.passthrough.is_some() && l.tls.is_some(),
                };
                (*port, service)
            })
            .collect()
    }

    /// The connection-level routes of `port`, when it is a TCP or TLS port.
    pub fn stream_routes(&self, port: u16) -> Option<&ferry_model::StreamRoutes> {
        self.listeners.get(&port)?.stream.as_ref()
    }

    /// The server names an HTTPS `port` passes through, if any.
    pub fn passthrough_routes(&self, port: u16) -> Option<&ferry_model::StreamRoutes> {
        self.listeners.get(&port)?.passthrough.as_ref()
    }

    /// Whether the listener on `port` has a virtual host for `host`.
    pub fn serves_host(&self, port: u16, host: &str) -> bool {
        self.listeners
            .get(&port)
            .is_some_and(|l| l.vhost_for(host).is_some())
    }

    /// Whether a request over TLS with this SNI names a Host another server of the port owns
    /// (answered 421: see [`ferry_model::ListenerTls::misdirected`]).
    pub fn misdirected(&self, port: u16, sni: &str, host: &str) -> bool {
        let tls = self.listeners.get(&port).and_then(|l| l.tls.as_ref());
        tls.is_some_and(|tls| tls.source.misdirected(sni, host))
    }

    /// The first route of the most specific virtual host that matches the request.
    pub fn route(&self, request: &RequestView<'_>) -> Option<&Arc<CompiledRoute>> {
        let listener = self.listeners.get(&request.port)?;
        let vhost = listener.vhost_for(request.host)?;
        listener.vhosts[vhost].route(request)
    }

    pub fn clusters(&self) -> impl Iterator<Item = &Arc<CompiledCluster>> {
        self.clusters.values()
    }

    pub fn cluster(&self, name: &str) -> Option<&Arc<CompiledCluster>> {
        self.clusters.get(name)
    }
}

impl CompiledVirtualHost {
    fn new(routes: Vec<Arc<CompiledRoute>>) -> Self {
        let path_index = (routes.len() >= path_index::INDEXED_FROM)
            .then(|| PathIndex::build(routes.iter().map(|r| r.matcher.path_key())));
        CompiledVirtualHost { routes, path_index }
    }

    fn route(&self, request: &RequestView<'_>) -> Option<&Arc<CompiledRoute>> {
        let Some(index) = &self.path_index else {
            return self.routes.iter().find(|r| r.matcher.matches(request));
        };
        index
            .candidates(request.path)
            .into_iter()
            .map(|at| &self.routes[at as usize])
            .find(|r| r.matcher.matches(request))
    }
}

impl CompiledListener {
    fn vhost_for(&self, host: &str) -> Option<usize> {
        if let Some(index) = self.exact.get(host) {
            return Some(*index);
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(&**suffix))
            .map(|(_, index)| *index)
            .or(self.catch_all)
    }
}

/// A listener terminating the mesh's mTLS: the workload-identity configuration (its
/// certificate and roots rotate under it).
fn mesh_tls(
    listener: &ferry_model::Listener,
    tls: &ferry_model::ListenerTls,
    mesh: Option<&Arc<rustls::ServerConfig>>,
) -> Result<CompiledTls, CompileError> {
    let config = mesh.cloned().ok_or_else(|| CompileError {
        route: listener.name.to_string(),
        object: "mesh mTLS".into(),
        message: "ISTIO_MUTUAL needs the proxy's workload identity, which this proxy has no \
                  source for"
            .into(),
    })?;
    Ok(CompiledTls {
        source: tls.clone(),
        config,
    })
}

/// Loads the listener's certificates, reusing the previous configuration when they did not
/// change (a route edit must not re-parse every key).
fn compile_tls(
    listener: &ferry_model::Listener,
    previous: Option<&CompiledTls>,
) -> Result<Option<CompiledTls>, CompileError> {
    let Some(tls) = &listener.tls else {
        return Ok(None);
    };
    if let Some(kept) = previous.filter(|p| p.source == *tls) {
        return Ok(Some(CompiledTls {
            source: tls.clone(),
            config: kept.config.clone(),
        }));
    }
    let mut config = crate::tls::server_config(tls).map_err(|message| CompileError {
        route: listener.name.to_string(),
        object: "TLS certificate".into(),
        message,
    })?;
    if listener.stream.is_some() {
        // Relayed bytes are whatever the client speaks: offering h2 or http/1.1 would
        // claim a protocol the backend may not speak.
        let mut relayed = (*config).clone();
        relayed.alpn_protocols.clear();
        config = Arc::new(relayed);
    }
    Ok(Some(CompiledTls {
        source: tls.clone(),
        config,
    }))
}

fn compile_listener(listener: &ferry_model::Listener) -> Result<CompiledListener, CompileError> {
    let mut compiled = CompiledListener {
        tls: None,
        stream: listener.stream.clone(),
        passthrough: listener.passthrough.clone(),
        exact: HashMap::new(),
        wildcards: Vec::new(),
        catch_all: None,
        vhosts: Vec::new(),
    };
    for (index, vhost) in listener.virtual_hosts.iter().enumerate() {
        let host = vhost.hostname.to_ascii_lowercase();
        if host == "*" {
            compiled.catch_all = Some(index);
        } else if let Some(suffix) = host.strip_prefix('*') {
            compiled.wildcards.push((suffix.into(), index));
        } else {
            compiled.exact.insert(host.into(), index);
        }
        let routes = vhost
            .routes
            .iter()
            .map(compile_route)
            .collect::<Result<Vec<_>, _>>()?;
        compiled.vhosts.push(CompiledVirtualHost::new(routes));
    }
    compiled
        .wildcards
        .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
    Ok(compiled)
}

fn compile_route(route: &Route) -> Result<Arc<CompiledRoute>, CompileError> {
    let matcher = CompiledMatch::compile(&route.matcher).map_err(|message| CompileError {
        route: route.name.to_string(),
        object: route.meta.to_string(),
        message,
    })?;
    let total_weight = match &route.action {
        Action::Forward(backends) => backends.iter().map(|b| u64::from(b.weight)).sum(),
        _ => 0,
    };
    Ok(Arc::new(CompiledRoute {
        route: route.clone(),
        matcher,
        total_weight,
    }))
}

impl CompiledRoute {
    /// Weighted random choice among the route's backends (index into the Forward list).
    pub fn pick_backend(&self, roll: u64) -> Option<usize> {
        let Action::Forward(backends) = &self.route.action else {
            return None;
        };
        if self.total_weight == 0 {
            return None;
        }
        let mut point = roll % self.total_weight;
        for (index, backend) in backends.iter().enumerate() {
            let weight = u64::from(backend.weight);
            if point < weight {
                return Some(index);
            }
            point -= weight;
        }
        None
    }

    pub fn backend_target(&self, index: usize) -> Option<&BackendTarget> {
        match &self.route.action {
            Action::Forward(backends) => backends.get(index).map(|b| &b.target),
            _ => None,
        }
    }
}

impl CompiledCluster {
    /// An endpoint for a try (see `ClusterState::pick`), with its index.
    pub fn pick(
        &self,
        key: Option<u64>,
        tried: &[usize],
    ) -> Option<(usize, &ferry_model::Endpoint)> {
        let index = self.state.pick(key, tried)?;
        self.cluster.endpoints.get(index).map(|e| (index, e))
    }
}

impl CompiledRoute {
    /// Route filters followed by the filters of the chosen backend.
    pub fn filters_for(
        &self,
        backend: Option<usize>,
    ) -> impl Iterator<Item = &ferry_model::Filter> {
        let backend_filters = match (&self.route.action, backend) {
            (Action::Forward(backends), Some(i)) => {
                backends.get(i).map(|b| &b.filters[..]).unwrap_or(&[])
            }
            _ => &[],
        };
        self.route.filters.iter().chain(backend_filters.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::{PathMatch, RouteMatch, StringMatch};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const SEGMENTS: [&str; 7] = ["a", "ab", "api", "v1", "users", "x", "Api"];

    fn random_path(rng: &mut StdRng) -> String {
        let mut path = String::new();
        for _ in 0..rng.random_range(0..4) {
            path.push('/');
            path.push_str(SEGMENTS[rng.random_range(0..SEGMENTS.len())]);
        }
        match rng.random_range(0..6) {
            0 => path.push('/'),
            1 => path.push_str(&rng.random_range(0..20).to_string()),
            2 if path.is_empty() => path.push('/'),
            _ => {}
        }
        path
    }

    fn random_match(rng: &mut StdRng) -> RouteMatch {
        let literal = random_path(rng);
        let path = match rng.random_range(0..6) {
            0 => PathMatch::Any,
            1 => PathMatch::Exact(literal.into()),
            2 => {
                // A string prefix may end inside a path element.
                let cut = rng.random_range(0..=literal.len());
                PathMatch::Prefix(literal[..cut].into())
            }
            3 => PathMatch::SegmentPrefix(literal.trim_end_matches('/').into()),
            _ => {
                let templates = ["{}/[0-9]+", "{}.*", "(/a|/x){}", "{}s?", "{}", "{}/v[0-9]"];
                let template = templates[rng.random_range(0..templates.len())];
                PathMatch::Regex(template.replace("{}", &literal).into())
            }
        };
        RouteMatch {
            path,
            ignore_path_case: rng.random_range(0..10) == 0,
            method: (rng.random_range(0..5) == 0).then(|| StringMatch::Exact("POST".into())),
            ..RouteMatch::default()
        }
    }

    /// The index must pick exactly the route a scan in precedence order picks.
    #[test]
    fn indexed_lookup_agrees_with_a_scan() {
        let mut rng = StdRng::seed_from_u64(20261123);
        let headers = http::HeaderMap::new();
        for _ in 0..300 {
            let matchers: Vec<CompiledMatch> = (0..rng.random_range(1..80))
                .map(|_| CompiledMatch::compile(&random_match(&mut rng)).unwrap())
                .collect();
            let index = PathIndex::build(matchers.iter().map(CompiledMatch::path_key));
            for _ in 0..60 {
                let mut path = random_path(&mut rng);
                if rng.random_range(0..8) == 0 {
                    path = path.to_uppercase();
                }
                let request = RequestView {
                    port: 80,
                    host: "h",
                    path: &path,
                    query: None,
                    method: ["GET", "POST"][rng.random_range(0..2)],
                    headers: &headers,
                };
                let scanned = matchers.iter().position(|m| m.matches(&request));
                let indexed = index
                    .candidates(&path)
                    .into_iter()
                    .map(|at| at as usize)
                    .find(|at| matchers[*at].matches(&request));
                assert_eq!(indexed, scanned, "path {path:?}");
            }
        }
    }
}
