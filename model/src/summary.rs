//! What a proxy tells the controller about its traffic, every few seconds, on its push
//! stream ([`crate::push::ProxyFrame::Summary`]): one sample per source -> destination edge
//! since the last summary, and the replies the proxy wrote itself (its errors, with their
//! `x-ferry-cause`).
//!
//! Latency travels as histogram bucket counts, never as percentiles: buckets of many proxies
//! and many intervals add up, percentiles do not. The bounds are Istio's (Envoy's default
//! buckets, milliseconds), so a p99 read here and one Prometheus computes from
//! `istio_request_duration_milliseconds` agree.

use serde::{Deserialize, Serialize};

use crate::Str;

/// How often a proxy sends a summary.
pub const SUMMARY_INTERVAL_MS: u64 = 5_000;

/// Upper bounds (ms) of the latency buckets; one more bucket counts everything slower.
pub const LATENCY_BOUNDS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Buckets per sample: one per bound and the overflow.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// The Envoy response flags a summary counts (what `response_flags` can hold).
pub const RESPONSE_FLAGS: [&str; 14] = [
    "NR", "UH", "NC", "UF", "UC", "UO", "UT", "URX", "FI", "RBAC", "RL", "UAEX", "DI", "DC",
];

/// Edges one summary carries at most (a frame stays far below the controller's 1 MiB frame
/// limit); a proxy with more counts the rest in [`TrafficSummary::dropped_edges`].
pub const MAX_SUMMARY_EDGES: usize = 1_000;

/// Proxy-made errors one summary carries at most (the most recent).
pub const MAX_SUMMARY_ERRORS: usize = 50;

/// What a node of the service graph is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NodeKind {
    /// A gateway's proxy: where traffic enters the mesh.
    Gateway,
    /// The Pods of one Deployment (or other owner), as Istio's `*_workload` labels name it.
    Workload,
    Service,
    /// A caller the destination could not identify (plaintext from outside the mesh).
    Unknown,
}

/// A node of the graph: kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeRef {
    pub kind: NodeKind,
    pub namespace: Str,
    pub name: Str,
}

impl NodeRef {
    pub fn new(kind: NodeKind, namespace: &str, name: &str) -> NodeRef {
        NodeRef {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn unknown() -> NodeRef {
        NodeRef::new(NodeKind::Unknown, "unknown", "unknown")
    }

    /// `kind/namespace/name`: the node's id in the dashboard's API.
    pub fn id(&self) -> String {
        let kind = match self.kind {
            NodeKind::Gateway => "gateway",
            NodeKind::Workload => "workload",
            NodeKind::Service => "service",
            NodeKind::Unknown => "unknown",
        };
        format!("{kind}/{}/{}", self.namespace, self.name)
    }
}

/// Which end of an edge measured it (Istio's `reporter` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Reporter {
    /// The caller's proxy (a gateway or a sidecar's outbound side).
    Source,
    /// The callee's sidecar (its inbound side).
    Destination,
}

/// The identity of an edge: who called which Service, served by which workload.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeKey {
    pub reporter: Reporter,
    pub source: NodeRef,
    /// None when no Service was chosen (no route, a redirect, a direct reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<NodeRef>,
    /// None when the endpoint's Pod is unknown (or no endpoint was tried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<NodeRef>,
}

/// Counts of one edge over one interval; they add up across proxies and intervals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeCounts {
    pub requests: u64,
    /// Responses 400-499.
    pub client_errors: u64,
    /// Responses 500-599, and requests that got no response at all.
    pub server_errors: u64,
    /// Requests that went (or came) over the mesh's mutual TLS.
    pub mtls_requests: u64,
    /// Requests per latency bucket ([`LATENCY_BOUNDS_MS`], then the overflow).
    pub latency_buckets: Vec<u64>,
    /// Requests per response flag, in [`RESPONSE_FLAGS`] order; empty when none had one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<u64>,
    /// TCP connections relayed (TCPRoute, TLS passthrough, a sidecar's opaque TCP) that
    /// ended in the interval, and their bytes each way (to the client: sent).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tcp_connections: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tcp_bytes_sent: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tcp_bytes_received: u64,
}

impl EdgeCounts {
    /// Adds `other` in: the sum is what one proxy over both intervals would have counted.
    /// Whether anything happened on the edge (requests or connections).
    pub fn is_empty(&self) -> bool {
        self.requests == 0 && self.tcp_connections == 0
    }

    pub fn add(&mut self, other: &EdgeCounts) {
        self.requests += other.requests;
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
        self.mtls_requests += other.mtls_requests;
        self.tcp_connections += other.tcp_connections;
        self.tcp_bytes_sent += other.tcp_bytes_sent;
        self.tcp_bytes_received += other.tcp_bytes_received;
        add_counts(&mut self.latency_buckets, &other.latency_buckets);
        add_counts(&mut self.flags, &other.flags);
    }

    /// The latency below which `quantile` (0..1) of the requests finished, interpolated
    /// linearly inside the bucket that holds it (as Prometheus' `histogram_quantile`).
    pub fn latency_quantile_ms(&self, quantile: f64) -> Option<f64> {
        let total: u64 = self.latency_buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = quantile * total as f64;
        let mut below = 0u64;
        for (index, count) in self.latency_buckets.iter().enumerate() {
            if *count > 0 && (below + count) as f64 >= rank {
                let lower = if index == 0 {
                    0.0
                } else {
                    LATENCY_BOUNDS_MS[index - 1]
                };
                let Some(upper) = LATENCY_BOUNDS_MS.get(index) else {
                    return Some(lower); // the overflow bucket has no upper bound
                };
                let within = (rank - below as f64) / *count as f64;
                return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
            }
            below += count;
        }
        LATENCY_BOUNDS_MS.last().copied()
    }
}

fn add_counts(into: &mut Vec<u64>, other: &[u64]) {
    if into.len() < other.len() {
        into.resize(other.len(), 0);
    }
    for (sum, count) in into.iter_mut().zip(other) {
        *sum += count;
    }
}

/// One edge's counts since the proxy's previous summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeSample {
    #[serde(flatten)]
    pub key: EdgeKey,
    #[serde(flatten)]
    pub counts: EdgeCounts,
}

/// A reply the proxy wrote itself with an error status (no route, no endpoint, overflow,
/// denied, timed out...): what the dashboard lists under a node as its recent errors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyError {
    pub at_unix_ms: u64,
    pub status: u16,
    /// The reply's `x-ferry-cause`: a cause code and the object that decided.
    pub cause: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(flatten)]
    pub edge: EdgeKey,
}

/// Everything a proxy reports in one summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSummary {
    /// The time the counts cover, in milliseconds.
    pub interval_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<EdgeSample>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProxyError>,
    /// Edges left out of this summary (over [`MAX_SUMMARY_EDGES`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_edges: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(buckets: &[(usize, u64)]) -> EdgeCounts {
        let mut latency_buckets = vec![0; LATENCY_BUCKETS];
        for (index, count) in buckets {
            latency_buckets[*index] = *count;
        }
        EdgeCounts {
            requests: latency_buckets.iter().sum(),
            latency_buckets,
            ..EdgeCounts::default()
        }
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_as_prometheus_does() {
        // 90 requests in (1, 5] ms, 10 in (25, 50] ms.
        let edge = counts(&[(2, 90), (5, 10)]);
        let p50 = edge.latency_quantile_ms(0.5).unwrap();
        assert!((p50 - (1.0 + 4.0 * 50.0 / 90.0)).abs() < 1e-9, "{p50}");
        let p99 = edge.latency_quantile_ms(0.99).unwrap();
        assert!((p99 - (25.0 + 25.0 * 0.9)).abs() < 1e-9, "{p99}");
        assert_eq!(EdgeCounts::default().latency_quantile_ms(0.99), None);
    }

    #[test]
    fn counts_of_two_proxies_add_up() {
        let mut sum = counts(&[(2, 3)]);
        let mut other = counts(&[(2, 1), (4, 1)]);
        other.server_errors = 1;
        other.flags = vec![0, 1];
        sum.add(&other);
        assert_eq!(sum.requests, 5);
        assert_eq!(sum.server_errors, 1);
        assert_eq!(sum.latency_buckets[2], 4);
        assert_eq!(sum.latency_buckets[4], 1);
        assert_eq!(sum.flags, vec![0, 1]);
    }

    #[test]
    fn a_sample_is_flat_camel_case_json() {
        let sample = EdgeSample {
            key: EdgeKey {
                reporter: Reporter::Source,
                source: NodeRef::new(NodeKind::Gateway, "infra", "ferry-gateway"),
                service: Some(NodeRef::new(NodeKind::Service, "weather", "weather")),
                workload: None,
            },
            counts: counts(&[(0, 2)]),
        };
        let json = serde_json::to_value(&sample).unwrap();
        assert_eq!(json["reporter"], "source");
        assert_eq!(json["source"]["kind"], "gateway");
        assert_eq!(json["requests"], 2);
        let back: EdgeSample = serde_json::from_value(json).unwrap();
        assert_eq!(back, sample);
    }
}
