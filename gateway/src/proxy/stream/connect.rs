//! Choosing a connection's backend and dialling it: weighted choice among the route's
//! backends, the cluster's connection limit (DestinationRule `tcp.maxConnections`), then up
//! to three endpoints within the connect timeout, each failure counted for outlier detection.

use ferry_model::{BackendTarget, Endpoint, StreamRoute};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::compiled::{CompiledCluster, CompiledSnapshot};
use crate::upstream::outlier::Outcome;

/// Endpoints tried for one connection before giving up (Envoy's TCP proxy default
/// `max_connect_attempts` is 1; a retry on another endpoint hides one bad Pod).
const CONNECT_ATTEMPTS: usize = 3;
/// Istio's default `connectTimeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection was not forwarded, as Envoy's response flags name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No route for the server name (or an invalid backend reference).
    NoRoute,
    /// The cluster has no endpoints.
    NoHealthyUpstream,
    /// `maxConnections` reached.
    Overflow,
    /// No endpoint accepted the connection in time.
    ConnectFailure,
    /// The endpoint requires mesh mTLS, which connection-level routes do not originate yet:
    /// refused rather than sent in plaintext to a workload that expects mTLS.
    MeshTlsRequired,
    /// An AuthorizationPolicy denied the connection.
    Denied,
}

impl Refusal {
    pub fn flag(self) -> &'static str {
        match self {
            Refusal::NoRoute => "NR",
            Refusal::NoHealthyUpstream => "UH",
            Refusal::Overflow => "UO",
            Refusal::ConnectFailure | Refusal::MeshTlsRequired => "UF",
            Refusal::Denied => "RBAC",
        }
    }
}

/// A dialled backend, and what the connection holds on to while it lasts.
pub struct Backend {
    pub stream: TcpStream,
    pub cluster: Arc<CompiledCluster>,
    pub endpoint: Endpoint,
    pub idle_timeout_ms: Option<u64>,
    /// The cluster's connection slot, freed when dropped.
    _permit: Option<OwnedSemaphorePermit>,
    /// The endpoint's index, for the in-flight count.
    index: usize,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.cluster.state.end(self.index, None);
    }
}

type Failed = (Refusal, Option<Arc<CompiledCluster>>);

/// Picks the route's backend and connects to one of its endpoints (for an
/// original-destination cluster, to `original`: where a sidecar's client was going).
pub async fn backend(
    snapshot: &CompiledSnapshot,
    route: &StreamRoute,
    original: Option<std::net::SocketAddr>,
) -> Result<Backend, Failed> {
    let cluster = pick_cluster(snapshot, route).ok_or((Refusal::NoRoute, None))?;
    let failed = |refusal| (refusal, Some(cluster.clone()));
    let permit = cluster
        .state
        .breaker
        .connection_slot_now()
        .map_err(|_| failed(Refusal::Overflow))?;
    let policy = &cluster.cluster.policy;
    let timeout = policy
        .connect_timeout_ms
        .map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from_millis);
    if cluster.cluster.original_destination {
        let address = original.ok_or_else(|| failed(Refusal::NoHealthyUpstream))?;
        return dial_original(cluster.clone(), address, timeout, permit)
            .await
            .ok_or_else(|| failed(Refusal::ConnectFailure));
    }
    let mut tried = Vec::with_capacity(CONNECT_ATTEMPTS);
    while tried.len() < CONNECT_ATTEMPTS {
        let Some((index, endpoint)) = cluster.pick(None, &tried) else {
            return Err(failed(Refusal::NoHealthyUpstream));
        };
        if tried.contains(&index) {
            break; // every endpoint tried
        }
        tried.push(index);
        if endpoint.mtls.is_some() {
            return Err(failed(Refusal::MeshTlsRequired));
        }
        cluster.state.begin(index);
        match tokio::time::timeout(timeout, TcpStream::connect(endpoint.address)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                if let Some(keepalive) = &policy.tcp_keepalive {
                    crate::upstream::keepalive::apply(&stream, keepalive);
                }
                return Ok(Backend {
                    stream,
                    endpoint: endpoint.clone(),
                    idle_timeout_ms: policy.idle_timeout_ms,
                    cluster: cluster.clone(),
                    _permit: permit,
                    index,
                });
            }
            _ => {
                tracing::debug!(endpoint = %endpoint.address, "TCP connect failed");
                cluster.state.end(index, Some(Outcome::ConnectFailure));
            }
        }
    }
    Err(failed(Refusal::ConnectFailure))
}

/// Dials the address the client was going to (ServiceEntry `resolution: NONE`).
async fn dial_original(
    cluster: Arc<CompiledCluster>,
    address: std::net::SocketAddr,
    timeout: Duration,
    permit: Option<OwnedSemaphorePermit>,
) -> Option<Backend> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .ok()?
        .ok()?;
    let _ = stream.set_nodelay(true);
    if let Some(keepalive) = &cluster.cluster.policy.tcp_keepalive {
        crate::upstream::keepalive::apply(&stream, keepalive);
    }
    // No endpoint of the cluster's list: its in-flight count is the cluster's only.
    let index = usize::MAX;
    cluster.state.begin(index);
    Some(Backend {
        stream,
        endpoint: Endpoint {
            address,
            pod: None,
            workload: None,
            mtls: None,
        },
        idle_timeout_ms: cluster.cluster.policy.idle_timeout_ms,
        cluster,
        _permit: permit,
        index,
    })
}

/// The weighted choice of the route's backends; None for an invalid reference.
fn pick_cluster(snapshot: &CompiledSnapshot, route: &StreamRoute) -> Option<Arc<CompiledCluster>> {
    let total: u64 = route.backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut point = rand::random::<u64>() % total;
    let chosen = route.backends.iter().find(|b| {
        let weight = u64::from(b.weight);
        let here = point < weight;
        point = point.saturating_sub(weight);
        here
    })?;
    match &chosen.target {
        BackendTarget::Cluster(name) => snapshot.cluster(name).cloned(),
        BackendTarget::Invalid { reason, .. } => {
            tracing::debug!(route = %route.name, "invalid backend: {reason}");
            None
        }
    }
}
