//! The proxy's side of the dashboard's live graph: counts per source -> destination edge,
//! taken (and reset) into a [`TrafficSummary`] every few seconds and sent to the controller.
//!
//! A request costs a few relaxed atomic adds: the Istio series cache hands each request an
//! [`EdgeTally`] made once per label set, which already knows the edge's counters, the
//! status class, the response flags and whether the hop was mutual TLS. Memory is bounded:
//! at most [`MAX_EDGES`] edges are kept, later ones are only counted as dropped.

use ferry_model::summary::{
    EdgeCounts, EdgeKey, EdgeSample, NodeKind, NodeRef, ProxyError, Reporter, TrafficSummary,
    LATENCY_BOUNDS_MS, LATENCY_BUCKETS, MAX_SUMMARY_EDGES, MAX_SUMMARY_ERRORS, RESPONSE_FLAGS,
};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::istio::RequestLabels;

/// Edges a proxy keeps counters for (its Services times their workloads, as seen by it).
pub const MAX_EDGES: usize = 4_096;

/// One edge's counters since the last summary.
#[derive(Default)]
pub struct EdgeCounters {
    requests: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    mtls_requests: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS],
    flags: [AtomicU64; RESPONSE_FLAGS.len()],
    tcp_connections: AtomicU64,
    tcp_bytes_sent: AtomicU64,
    tcp_bytes_received: AtomicU64,
}

impl EdgeCounters {
    /// Moves the counts out, leaving zeros (None when nothing happened).
    fn take(&self) -> Option<EdgeCounts> {
        let requests = self.requests.swap(0, Relaxed);
        let tcp_connections = self.tcp_connections.swap(0, Relaxed);
        if requests == 0 && tcp_connections == 0 {
            return None;
        }
        let flags: Vec<u64> = self.flags.iter().map(|f| f.swap(0, Relaxed)).collect();
        Some(EdgeCounts {
            requests,
            client_errors: self.client_errors.swap(0, Relaxed),
            server_errors: self.server_errors.swap(0, Relaxed),
            mtls_requests: self.mtls_requests.swap(0, Relaxed),
            latency_buckets: self.latency.iter().map(|b| b.swap(0, Relaxed)).collect(),
            flags: if flags.iter().all(|f| *f == 0) {
                Vec::new()
            } else {
                flags
            },
            tcp_connections,
            tcp_bytes_sent: self.tcp_bytes_sent.swap(0, Relaxed),
            tcp_bytes_received: self.tcp_bytes_received.swap(0, Relaxed),
        })
    }
}

/// What one label set adds to its edge per request, worked out once per label set.
pub struct EdgeTally {
    counters: Option<Arc<EdgeCounters>>,
    status: StatusClass,
    mtls: bool,
    flags: Box<[u8]>,
}

#[derive(Clone, Copy)]
enum StatusClass {
    Success,
    ClientError,
    ServerError,
}

impl EdgeTally {
    pub fn record(&self, duration_ms: f64) {
        let Some(counters) = &self.counters else {
            return; // over the edge limit: counted as dropped when it was made
        };
        counters.requests.fetch_add(1, Relaxed);
        match self.status {
            StatusClass::Success => {}
            StatusClass::ClientError => _ = counters.client_errors.fetch_add(1, Relaxed),
            StatusClass::ServerError => _ = counters.server_errors.fetch_add(1, Relaxed),
        }
        if self.mtls {
            counters.mtls_requests.fetch_add(1, Relaxed);
        }
        counters.latency[latency_bucket(duration_ms)].fetch_add(1, Relaxed);
        for flag in self.flags.iter() {
            counters.flags[usize::from(*flag)].fetch_add(1, Relaxed);
        }
    }
}

impl EdgeTally {
    /// A relayed TCP connection ended (`failed`: it never reached a backend; its flag, from
    /// the labels, says why).
    pub fn connection(&self, bytes_sent: u64, bytes_received: u64, failed: bool) {
        let Some(counters) = &self.counters else {
            return;
        };
        counters.tcp_connections.fetch_add(1, Relaxed);
        counters.tcp_bytes_sent.fetch_add(bytes_sent, Relaxed);
        counters
            .tcp_bytes_received
            .fetch_add(bytes_received, Relaxed);
        if failed {
            counters.server_errors.fetch_add(1, Relaxed);
            for flag in self.flags.iter() {
                counters.flags[usize::from(*flag)].fetch_add(1, Relaxed);
            }
        }
    }
}

fn latency_bucket(duration_ms: f64) -> usize {
    LATENCY_BOUNDS_MS
        .iter()
        .position(|bound| duration_ms <= *bound)
        .unwrap_or(LATENCY_BOUNDS_MS.len())
}

/// All edges of this proxy, and its recent proxy-made errors.
pub struct EdgeRecorder {
    /// This proxy as a caller: a gateway, or a sidecar's workload.
    caller: NodeRef,
    /// This proxy's workload as the callee of a sidecar's inbound requests.
    callee: NodeRef,
    edges: RwLock<HashMap<EdgeKey, Arc<EdgeCounters>, foldhash::fast::RandomState>>,
    dropped_edges: AtomicU64,
    errors: Mutex<VecDeque<ProxyError>>,
    last_taken: Mutex<Instant>,
}

impl EdgeRecorder {
    /// `gateway`: this proxy is where traffic enters (its calls come from a gateway node).
    pub fn new(gateway: bool, namespace: &str, workload: &str) -> EdgeRecorder {
        let kind = if gateway {
            NodeKind::Gateway
        } else {
            NodeKind::Workload
        };
        EdgeRecorder {
            caller: NodeRef::new(kind, namespace, workload),
            callee: NodeRef::new(NodeKind::Workload, namespace, workload),
            edges: RwLock::new(HashMap::default()),
            dropped_edges: AtomicU64::new(0),
            errors: Mutex::new(VecDeque::new()),
            last_taken: Mutex::new(Instant::now()),
        }
    }

    /// The tally for requests with these labels (made once per label set by the caller's
    /// cache, or per request when Istio's metrics are off).
    pub fn tally(&self, labels: &RequestLabels) -> EdgeTally {
        let code = labels.response_code;
        EdgeTally {
            counters: self.counters(self.key(labels)),
            status: match code {
                400..=499 => StatusClass::ClientError,
                0 | 500..=599 => StatusClass::ServerError,
                _ => StatusClass::Success,
            },
            mtls: labels.peer_identity.is_some() || labels.upstream_identity.is_some(),
            flags: labels
                .response_flags
                .split(',')
                .filter_map(|flag| RESPONSE_FLAGS.iter().position(|f| *f == flag))
                .map(|index| index as u8)
                .collect(),
        }
    }

    /// Keeps a reply the proxy wrote itself with an error status, for the node's page.
    pub fn proxy_error(&self, labels: &RequestLabels, cause: &str, route: Option<&str>) {
        let error = ProxyError {
            at_unix_ms: unix_ms(),
            status: labels.response_code,
            cause: cause.to_string(),
            route: route.map(str::to_string),
            edge: self.key(labels),
        };
        let mut errors = self.errors.lock().expect("errors lock");
        if errors.len() == MAX_SUMMARY_ERRORS {
            errors.pop_front();
        }
        errors.push_back(error);
    }

    /// Everything counted since the last call, as one summary (None when nothing was).
    pub fn take(&self) -> Option<TrafficSummary> {
        let interval_ms = {
            let mut last = self.last_taken.lock().expect("taken lock");
            let elapsed = last.elapsed();
            *last = Instant::now();
            elapsed.as_millis() as u64
        };
        let mut summary = TrafficSummary {
            interval_ms,
            errors: self.errors.lock().expect("errors lock").drain(..).collect(),
            dropped_edges: self.dropped_edges.swap(0, Relaxed),
            ..TrafficSummary::default()
        };
        for (key, counters) in self.edges.read().expect("edges lock").iter() {
            let Some(counts) = counters.take() else {
                continue;
            };
            if summary.edges.len() == MAX_SUMMARY_EDGES {
                summary.dropped_edges += 1;
                continue;
            }
            summary.edges.push(EdgeSample {
                key: key.clone(),
                counts,
            });
        }
        let empty = summary.edges.is_empty() && summary.errors.is_empty();
        (!empty || summary.dropped_edges > 0).then_some(summary)
    }

    fn counters(&self, key: EdgeKey) -> Option<Arc<EdgeCounters>> {
        if let Some(counters) = self.edges.read().expect("edges lock").get(&key) {
            return Some(counters.clone());
        }
        let mut edges = self.edges.write().expect("edges lock");
        if edges.len() >= MAX_EDGES && !edges.contains_key(&key) {
            self.dropped_edges.fetch_add(1, Relaxed);
            return None;
        }
        Some(edges.entry(key).or_default().clone())
    }

    /// The edge of a request: outbound from this proxy to a Service's workload, or inbound to
    /// this sidecar's workload from its (mTLS-identified or unknown) caller.
    fn key(&self, labels: &RequestLabels) -> EdgeKey {
        if labels.inbound {
            return EdgeKey {
                reporter: Reporter::Destination,
                source: labels
                    .peer_identity
                    .as_deref()
                    .map_or_else(NodeRef::unknown, caller_of_spiffe_id),
                service: None,
                workload: Some(self.callee.clone()),
            };
        }
        EdgeKey {
            reporter: Reporter::Source,
            source: self.caller.clone(),
            service: labels
                .service
                .as_ref()
                .map(|s| NodeRef::new(NodeKind::Service, &s.namespace, &s.name)),
            workload: labels
                .workload
                .as_ref()
                .map(|w| NodeRef::new(NodeKind::Workload, &w.namespace, &w.name)),
        }
    }
}

/// An mTLS caller known only by its SPIFFE ID (`spiffe://td/ns/N/sa/S`): its namespace and
/// ServiceAccount, as Kiali shows such a source.
fn caller_of_spiffe_id(id: &str) -> NodeRef {
    let mut parts = id.split('/').skip(3);
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("ns"), Some(namespace), Some("sa"), Some(account)) => {
            NodeRef::new(NodeKind::Unknown, namespace, &format!("sa:{account}"))
        }
        _ => NodeRef::new(NodeKind::Unknown, "unknown", id),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::{ServiceId, Workload};

    fn labels(code: u16, workload: &str, flags: &str) -> RequestLabels {
        RequestLabels {
            inbound: false,
            service: Some(ServiceId {
                namespace: "weather".into(),
                name: "weather".into(),
            }),
            workload: Some(Arc::new(Workload {
                name: workload.into(),
                namespace: "weather".into(),
                app: None,
                version: None,
                canonical_service: "weather".into(),
                canonical_revision: "latest".into(),
            })),
            peer_identity: None,
            upstream_identity: None,
            grpc: false,
            response_code: code,
            grpc_status: None,
            response_flags: flags.into(),
        }
    }

    #[test]
    fn requests_add_up_per_edge_and_a_summary_resets_them() {
        let recorder = EdgeRecorder::new(true, "infra", "ferry-gateway");
        let ok = recorder.tally(&labels(200, "weather-v1", "-"));
        for _ in 0..9 {
            ok.record(3.0);
        }
        recorder.tally(&labels(503, "weather-v1", "UO")).record(0.2);
        recorder
            .tally(&labels(200, "weather-v2", "-"))
            .record(700.0);
        let summary = recorder.take().expect("traffic was recorded");
        assert_eq!(summary.edges.len(), 2);
        let v1 = summary
            .edges
            .iter()
            .find(|e| e.key.workload.as_ref().unwrap().name.as_ref() == "weather-v1")
            .unwrap();
        assert_eq!(v1.key.source.kind, NodeKind::Gateway);
        assert_eq!(v1.counts.requests, 10);
        assert_eq!(v1.counts.server_errors, 1);
        assert_eq!(v1.counts.latency_buckets[2], 9); // (1, 5] ms
        assert_eq!(v1.counts.latency_buckets[0], 1); // <= 0.5 ms
        assert_eq!(v1.counts.flags[5], 1); // UO
        assert!(recorder.take().is_none(), "counts were reset");
    }

    #[test]
    fn relayed_connections_count_with_their_bytes() {
        let recorder = EdgeRecorder::new(true, "infra", "gw");
        recorder
            .tally(&labels(0, "db", "-"))
            .connection(300, 100, false);
        recorder
            .tally(&labels(0, "db", "UF"))
            .connection(0, 0, true);
        let summary = recorder.take().unwrap();
        let mut counts = EdgeCounts::default();
        summary.edges.iter().for_each(|e| counts.add(&e.counts));
        assert_eq!(counts.requests, 0);
        assert_eq!(counts.tcp_connections, 2);
        assert_eq!(
            (counts.tcp_bytes_sent, counts.tcp_bytes_received),
            (300, 100)
        );
        assert_eq!(counts.server_errors, 1);
        assert_eq!(counts.flags[3], 1); // UF
    }

    #[test]
    fn edges_beyond_the_limit_are_counted_as_dropped() {
        let recorder = EdgeRecorder::new(false, "a", "client");
        for i in 0..=MAX_EDGES {
            recorder
                .tally(&labels(200, &format!("w{i}"), "-"))
                .record(1.0);
        }
        let summary = recorder.take().unwrap();
        assert_eq!(summary.edges.len(), MAX_SUMMARY_EDGES);
        assert_eq!(
            summary.dropped_edges as usize,
            1 + MAX_EDGES - MAX_SUMMARY_EDGES
        );
    }

    #[test]
    fn inbound_callers_are_named_by_their_spiffe_id() {
        let recorder = EdgeRecorder::new(false, "shop", "cart");
        let mut inbound = labels(200, "cart", "-");
        inbound.inbound = true;
        inbound.peer_identity = Some("spiffe://cluster.local/ns/shop/sa/web".into());
        recorder.tally(&inbound).record(1.0);
        let edge = &recorder.take().unwrap().edges[0];
        assert_eq!(edge.key.reporter, Reporter::Destination);
        assert_eq!(&*edge.key.source.name, "sa:web");
        assert_eq!(edge.counts.mtls_requests, 1);
        assert_eq!(&*edge.key.workload.as_ref().unwrap().name, "cart");
    }

    #[test]
    fn proxy_errors_are_kept_most_recent_first_out() {
        let recorder = EdgeRecorder::new(true, "infra", "gw");
        for _ in 0..MAX_SUMMARY_ERRORS + 5 {
            recorder.proxy_error(&labels(503, "w", "UH"), "UH Service/weather/weather", None);
        }
        let summary = recorder.take().unwrap();
        assert_eq!(summary.errors.len(), MAX_SUMMARY_ERRORS);
        assert_eq!(summary.errors[0].cause, "UH Service/weather/weather");
    }
}
