//! Istio's standard request metrics, with Istio's names, labels and buckets, so existing
//! Kiali graphs, Grafana dashboards and alerts keep working.
//!
//! Label values come from the snapshot (Services, workloads) and from bounded request facts
//! (status, flags, protocol): never raw paths or hosts, so cardinality stays bounded.

use ferry_model::{ServiceId, Workload};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::edges::{EdgeRecorder, EdgeTally};
use crate::mesh_identity::WorkloadIdentity;

/// Envoy's default histogram buckets, which Istio uses for durations (ms) and sizes (bytes);
/// the dashboard's latency buckets are the same.
const BUCKETS: [f64; 19] = ferry_model::summary::LATENCY_BOUNDS_MS;

const LABELS: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// Istio's TCP metrics carry the request labels without the response code and gRPC status.
fn tcp_labels() -> Vec<&'static str> {
    let http_only = ["response_code", "grpc_response_status"];
    LABELS
        .into_iter()
        .filter(|l| !http_only.contains(l))
        .collect()
}

pub const UNKNOWN: &str = "unknown";

/// Who this proxy is, for the `source_*` labels (a gateway reports as the source of the
/// calls it makes, as Istio's gateways do).
#[derive(Clone, Debug)]
pub struct ProxyIdentity {
    pub reporter: &'static str,
    pub workload: String,
    pub namespace: String,
    pub app: String,
    pub version: String,
    pub canonical_service: String,
    pub canonical_revision: String,
    pub principal: String,
    pub cluster: String,
}

impl Default for ProxyIdentity {
    fn default() -> Self {
        ProxyIdentity {
            reporter: "source",
            workload: "ferry-gateway".into(),
            namespace: UNKNOWN.into(),
            app: "ferry-gateway".into(),
            version: UNKNOWN.into(),
            canonical_service: "ferry-gateway".into(),
            canonical_revision: "latest".into(),
            principal: UNKNOWN.into(),
            cluster: "Kubernetes".into(),
        }
    }
}

/// The per-request facts that vary between series.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestLabels {
    /// A sidecar's inbound request: this proxy reports as the destination.
    pub inbound: bool,
    pub service: Option<ServiceId>,
    pub workload: Option<Arc<Workload>>,
    /// Inbound: the client's SPIFFE ID when it came over mesh mTLS.
    pub peer_identity: Option<Arc<str>>,
    /// Outbound: the endpoint's SPIFFE ID when the request went over mesh mTLS.
    pub upstream_identity: Option<Arc<str>>,
    pub grpc: bool,
    pub response_code: u16,
    pub grpc_status: Option<u16>,
    pub response_flags: String,
}

/// The four series of one label set, looked up once and then reused.
struct Series {
    requests: IntCounter,
    duration_ms: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
    /// The dashboard's edge counts.
    edge: EdgeTally,
}

/// The TCP series of one label set: connections opened and closed, bytes each way.
pub struct TcpSeries {
    pub opened: IntCounter,
    pub closed: IntCounter,
    /// Backend to client.
    pub sent: IntCounter,
    /// Client to backend.
    pub received: IntCounter,
    /// The dashboard's edge counts.
    pub edge: EdgeTally,
}

/// Istio's four TCP counters.
struct TcpMetrics {
    opened: IntCounterVec,
    closed: IntCounterVec,
    sent: IntCounterVec,
    received: IntCounterVec,
}

impl TcpMetrics {
    fn new(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str| {
            let counter =
                IntCounterVec::new(Opts::new(name, help), &tcp_labels()).expect("valid metric");
            registry
                .register(Box::new(counter.clone()))
                .expect("unique metric names");
            counter
        };
        TcpMetrics {
            opened: counter(
                "istio_tcp_connections_opened_total",
                "TCP connections opened",
            ),
            closed: counter(
                "istio_tcp_connections_closed_total",
                "TCP connections closed",
            ),
            sent: counter(
                "istio_tcp_sent_bytes_total",
                "Bytes sent to the client on TCP connections (the response side)",
            ),
            received: counter(
                "istio_tcp_received_bytes_total",
                "Bytes received from the client on TCP connections (the request side)",
            ),
        }
    }
}

pub struct IstioMetrics {
    identity: ProxyIdentity,
    /// This proxy's workload certificate: its SPIFFE ID is the local principal of every
    /// series. Read when a series is made; the series cache is dropped when it is installed
    /// again, so no request pays for reading it.
    workload: Arc<WorkloadIdentity>,
    /// The identity generation the cached series were made with.
    series_generation: AtomicU64,
    requests: IntCounterVec,
    duration_ms: HistogramVec,
    request_bytes: HistogramVec,
    response_bytes: HistogramVec,
    /// Resolving 25 label values costs more than the request accounting itself; most
    /// requests reuse a label set seen before. Keys are hashed with a fast non-SipHash
    /// hasher: they come from configuration and status codes, not from clients.
    series: RwLock<HashMap<RequestLabels, Arc<Series>, foldhash::fast::RandomState>>,
    tcp: TcpMetrics,
    tcp_series: RwLock<HashMap<RequestLabels, Arc<TcpSeries>, foldhash::fast::RandomState>>,
    edges: Arc<EdgeRecorder>,
}

impl IstioMetrics {
    pub fn new(
        identity: ProxyIdentity,
        workload: Arc<WorkloadIdentity>,
        edges: Arc<EdgeRecorder>,
        registry: &Registry,
    ) -> Self {
        let histogram = |name: &str, help: &str| {
            let opts = HistogramOpts::new(name, help).buckets(BUCKETS.to_vec());
            HistogramVec::new(opts, &LABELS).expect("valid metric")
        };
        let metrics = IstioMetrics {
            identity,
            series_generation: AtomicU64::new(workload.generation()),
            workload,
            requests: IntCounterVec::new(
                Opts::new(
                    "istio_requests_total",
                    "Requests handled, Istio's standard labels",
                ),
                &LABELS,
            )
            .expect("valid metric"),
            duration_ms: histogram(
                "istio_request_duration_milliseconds",
                "Request duration in milliseconds",
            ),
            request_bytes: histogram("istio_request_bytes", "HTTP request body sizes in bytes"),
            response_bytes: histogram("istio_response_bytes", "HTTP response body sizes in bytes"),
            series: RwLock::new(HashMap::default()),
            tcp: TcpMetrics::new(registry),
            tcp_series: RwLock::new(HashMap::default()),
            edges,
        };
        for collector in [
            Box::new(metrics.requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.duration_ms.clone()),
            Box::new(metrics.request_bytes.clone()),
            Box::new(metrics.response_bytes.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        metrics
    }

    pub fn record(
        &self,
        labels: RequestLabels,
        duration_ms: f64,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        self.refresh_generation();
        let series = self.series_for(labels);
        series.requests.inc();
        series.duration_ms.observe(duration_ms);
        series.request_bytes.observe(request_bytes as f64);
        series.response_bytes.observe(response_bytes as f64);
        series.edge.record(duration_ms);
    }

    fn series_for(&self, labels: RequestLabels) -> Arc<Series> {
        if let Some(series) = self.series.read().expect("series lock").get(&labels) {
            return series.clone();
        }
        let values = self.label_values(&labels);
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let series = Arc::new(Series {
            requests: self.requests.with_label_values(&values),
            duration_ms: self.duration_ms.with_label_values(&values),
            request_bytes: self.request_bytes.with_label_values(&values),
            response_bytes: self.response_bytes.with_label_values(&values),
            edge: self.edges.tally(&labels),
        });
        self.series
            .write()
            .expect("series lock")
            .entry(labels)
            .or_insert(series)
            .clone()
    }

    /// A new workload certificate changes the local principal of every series: the cached
    /// ones are dropped once, by whoever notices first.
    fn refresh_generation(&self) {
        let generation = self.workload.generation();
        if self.series_generation.swap(generation, Ordering::AcqRel) != generation {
            self.series.write().expect("series lock").clear();
            self.tcp_series.write().expect("series lock").clear();
        }
    }

    /// The TCP series for a connection's labels (response code and gRPC status unused).
    pub fn tcp_series(&self, labels: RequestLabels) -> Arc<TcpSeries> {
        self.refresh_generation();
        if let Some(series) = self.tcp_series.read().expect("series lock").get(&labels) {
            return series.clone();
        }
        let values = self.label_values(&labels);
        // Drop response_code and grpc_response_status; the protocol is tcp.
        let values: Vec<&str> = values
            .iter()
            .enumerate()
            .filter(|(i, _)| !matches!(i, 21 | 22))
            .map(|(i, v)| if i == 20 { "tcp" } else { v.as_str() })
            .collect();
        let series = Arc::new(TcpSeries {
            opened: self.tcp.opened.with_label_values(&values),
            closed: self.tcp.closed.with_label_values(&values),
            sent: self.tcp.sent.with_label_values(&values),
            received: self.tcp.received.with_label_values(&values),
            edge: self.edges.tally(&labels),
        });
        self.tcp_series
            .write()
            .expect("series lock")
            .entry(labels)
            .or_insert(series)
            .clone()
    }

    fn label_values(&self, labels: &RequestLabels) -> [String; 25] {
        if labels.inbound {
            return self.destination_label_values(labels);
        }
        let me = &self.identity;
        let workload = labels.workload.as_deref();
        let of_workload = |get: fn(&Workload) -> Option<&str>| {
            workload.and_then(get).unwrap_or(UNKNOWN).to_string()
        };
        let service = labels.service.as_ref();
        let of_service = |get: fn(&ServiceId) -> String| service.map_or(UNKNOWN.to_string(), get);
        [
            me.reporter.to_string(),
            me.workload.clone(),
            me.canonical_service.clone(),
            me.canonical_revision.clone(),
            me.namespace.clone(),
            self.local_principal(),
            me.app.clone(),
            me.version.clone(),
            me.cluster.clone(),
            of_workload(|w| Some(&w.name)),
            of_workload(|w| Some(&w.namespace)),
            principal_or(labels.upstream_identity.as_deref(), UNKNOWN),
            of_workload(|w| w.app.as_deref()),
            of_workload(|w| w.version.as_deref()),
            of_service(ServiceId::fqdn),
            of_workload(|w| Some(&w.canonical_service)),
            of_workload(|w| Some(&w.canonical_revision)),
            of_service(|s| s.name.to_string()),
            of_service(|s| s.namespace.to_string()),
            if workload.is_some() {
                me.cluster.clone()
            } else {
                UNKNOWN.to_string()
            },
            if labels.grpc { "grpc" } else { "http" }.to_string(),
            labels.response_code.to_string(),
            labels.grpc_status.map_or(String::new(), |s| s.to_string()),
            labels.response_flags.clone(),
            UNKNOWN.to_string(), // connection_security_policy: "unknown" at a source reporter
        ]
    }

    /// Inbound, as Istio's sidecars report it: the destination is this workload; the
    /// source is known by its SPIFFE ID over mTLS ("mutual_tls"), unknown in plaintext
    /// ("none").
    fn destination_label_values(&self, labels: &RequestLabels) -> [String; 25] {
        let me = &self.identity;
        let unknown = || UNKNOWN.to_string();
        let policy = if labels.peer_identity.is_some() {
            "mutual_tls"
        } else {
            "none"
        };
        [
            "destination".to_string(),
            unknown(),
            unknown(),
            unknown(),
            unknown(),
            principal_or(labels.peer_identity.as_deref(), UNKNOWN),
            unknown(),
            unknown(),
            unknown(),
            me.workload.clone(),
            me.namespace.clone(),
            self.local_principal(),
            me.app.clone(),
            me.version.clone(),
            unknown(),
            me.canonical_service.clone(),
            me.canonical_revision.clone(),
            unknown(),
            me.namespace.clone(),
            me.cluster.clone(),
            if labels.grpc { "grpc" } else { "http" }.to_string(),
            labels.response_code.to_string(),
            labels.grpc_status.map_or(String::new(), |s| s.to_string()),
            labels.response_flags.clone(),
            policy.to_string(),
        ]
    }
}

impl IstioMetrics {
    /// This proxy's SPIFFE ID once it has a certificate, else the configured principal.
    fn local_principal(&self) -> String {
        self.workload
            .uri()
            .map_or_else(|| self.identity.principal.clone(), |uri| uri.to_string())
    }
}

fn principal_or(identity: Option<&str>, otherwise: &str) -> String {
    identity.unwrap_or(otherwise).to_string()
}
