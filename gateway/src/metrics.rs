//! Prometheus metrics: Istio's standard request metrics and the engine's own `ferry_*`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use std::sync::Arc;

use crate::admission::AdmissionMetrics;

use crate::mesh_identity::WorkloadIdentity;
use crate::telemetry::edges::EdgeRecorder;
use crate::telemetry::istio::{IstioMetrics, ProxyIdentity};

pub struct Metrics {
    /// Unique per process: per-thread caches of series key on it.
    pub id: u64,
    registry: Registry,
    pub istio: IstioMetrics,
    /// The dashboard's per-edge counts, sent to the controller in summaries.
    pub edges: Arc<EdgeRecorder>,
    /// Requests by listener port, route, backend cluster and status code.
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub snapshot_version: IntGauge,
    pub swaps: IntCounter,
    pub rejections: IntCounter,
    pub listeners: IntGauge,
    pub listener_bind_errors: IntCounter,
    pub active_requests: IntGauge,
    /// Downstream connections open now, by listener port.
    pub active_connections: IntGaugeVec,
    /// Downstream connections accepted, by listener port.
    pub connections: IntCounterVec,
    /// Failed connection attempts to upstream endpoints, by cluster.
    pub upstream_connect_failures: IntCounterVec,
    pub access_log_dropped: IntCounter,
    /// Requests the HTTP/1 fast path handed to Pingora's proxy, by reason.
    pub http1_fallbacks: IntCounterVec,
    /// Inbound connections a sidecar refused under its PeerAuthentication, by reason.
    pub mtls_refused: IntCounterVec,
    /// Connections refused or reaped by the connection limits (crate::admission).
    pub admission: AdmissionMetrics,
    /// Client connections closed because a client took too long, by phase.
    pub downstream_timeouts: IntCounterVec,
    /// Requests refused for a body over the limit (413).
    pub request_body_too_large: IntCounter,
    /// HTTP/2 clients caught flooding, and the GOAWAYs h2 sent for abuse, by kind.
    pub http2_abuse: IntCounterVec,
    /// Connections closed for a missing or invalid PROXY protocol header, by reason.
    pub proxy_protocol_refused: IntCounterVec,
}

impl Metrics {
    /// `workload`: the proxy's workload certificate, whose SPIFFE ID Istio's metrics report.
    /// `gateway`: this proxy is a gateway (its calls enter the mesh), not a sidecar.
    pub fn new(identity: ProxyIdentity, workload: Arc<WorkloadIdentity>, gateway: bool) -> Self {
        let registry = Registry::new();
        let edges = Arc::new(EdgeRecorder::new(
            gateway,
            &identity.namespace,
            &identity.workload,
        ));
        let istio = IstioMetrics::new(identity, workload, edges.clone(), &registry);
        let requests = IntCounterVec::new(
            Opts::new(
                "ferry_requests_total",
                "HTTP requests handled, by listener, route, backend and status code",
            ),
            &["listener", "route", "backend", "code"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "ferry_request_duration_seconds",
                "Time from request start to response end",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["listener"],
        )
        .expect("valid metric");
        let snapshot_version =
            IntGauge::new("ferry_snapshot_version", "Version of the active snapshot")
                .expect("valid metric");
        let swaps = IntCounter::new("ferry_snapshot_swaps_total", "Snapshots applied")
            .expect("valid metric");
        let rejections = IntCounter::new(
            "ferry_snapshot_rejections_total",
            "Configuration changes rejected (last good kept)",
        )
        .expect("valid metric");
        let listeners = IntGauge::new("ferry_listeners", "Listener ports currently bound")
            .expect("valid metric");
        let listener_bind_errors = IntCounter::new(
            "ferry_listener_bind_errors_total",
            "Listener ports that could not be bound",
        )
        .expect("valid metric");
        let active_requests =
            IntGauge::new("ferry_active_requests", "Requests in flight").expect("valid metric");
        let active_connections = IntGaugeVec::new(
            Opts::new(
                "ferry_downstream_connections_active",
                "Client connections open now, by listener port",
            ),
            &["listener"],
        )
        .expect("valid metric");
        let connections = IntCounterVec::new(
            Opts::new(
                "ferry_downstream_connections_total",
                "Client connections accepted, by listener port",
            ),
            &["listener"],
        )
        .expect("valid metric");
        let upstream_connect_failures = IntCounterVec::new(
            Opts::new(
                "ferry_upstream_connect_failures_total",
                "Failed connection attempts to upstream endpoints, by cluster",
            ),
            &["cluster"],
        )
        .expect("valid metric");
        let access_log_dropped = IntCounter::new(
            "ferry_access_log_dropped_total",
            "Access log lines dropped because stdout could not keep up",
        )
        .expect("valid metric");
        let http1_fallbacks = IntCounterVec::new(
            Opts::new(
                "ferry_http1_fallback_total",
                "HTTP/1 requests served by Pingora's proxy path instead of Ferry's own, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let mtls_refused = IntCounterVec::new(
            Opts::new(
                "ferry_mtls_inbound_refused_total",
                "Inbound connections a sidecar refused (PeerAuthentication; AuthorizationPolicy on TCP), by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let admission = admission_metrics();
        let downstream_timeouts = IntCounterVec::new(
            Opts::new(
                "ferry_downstream_timeouts_total",
                "Client connections closed for taking too long, by phase (tls_handshake, proxy_protocol, request_header, idle; tcp_idle: a relayed TCP connection silent both ways)",
            ),
            &["phase"],
        )
        .expect("valid metric");
        for phase in [
            "tls_handshake",
            "proxy_protocol",
            "request_header",
            "idle",
            "tcp_idle",
        ] {
            downstream_timeouts.with_label_values(&[phase]);
        }
        let proxy_protocol_refused = IntCounterVec::new(
            Opts::new(
                "ferry_proxy_protocol_refused_total",
                "Client connections closed under --proxy-protocol for the header, by reason (missing: the connection did not start with one; invalid; closed before it)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for reason in ["missing", "invalid", "closed"] {
            proxy_protocol_refused.with_label_values(&[reason]);
        }
        let request_body_too_large = IntCounter::new(
            "ferry_request_body_too_large_total",
            "Requests refused with 413 for a body over --max-request-body",
        )
        .expect("valid metric");
        let http2_abuse = IntCounterVec::new(
            Opts::new(
                "ferry_http2_abuse_total",
                "HTTP/2 client connections ended for abuse, by kind (floods caught by Ferry, GOAWAYs sent by h2)",
            ),
            &["kind"],
        )
        .expect("valid metric");
        for kind in [
            "ping_flood",
            "settings_flood",
            "empty_frame_flood",
            "goaway_enhance_your_calm",
            "goaway_protocol_error",
            "goaway_other_error",
        ] {
            http2_abuse.with_label_values(&[kind]);
        }
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http2_abuse.clone()),
            Box::new(admission.refused.clone()),
            Box::new(admission.reaped.clone()),
            Box::new(admission.overloaded.clone()),
            Box::new(downstream_timeouts.clone()),
            Box::new(proxy_protocol_refused.clone()),
            Box::new(request_body_too_large.clone()),
            Box::new(mtls_refused.clone()),
            Box::new(http1_fallbacks.clone()),
            Box::new(active_requests.clone()),
            Box::new(active_connections.clone()),
            Box::new(connections.clone()),
            Box::new(upstream_connect_failures.clone()),
            Box::new(access_log_dropped.clone()),
            Box::new(request_duration.clone()),
            Box::new(snapshot_version.clone()),
            Box::new(swaps.clone()),
            Box::new(rejections.clone()),
            Box::new(listeners.clone()),
            Box::new(listener_bind_errors.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Metrics {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            registry,
            istio,
            edges,
            requests,
            request_duration,
            snapshot_version,
            swaps,
            rejections,
            listeners,
            listener_bind_errors,
            active_requests,
            active_connections,
            connections,
            upstream_connect_failures,
            access_log_dropped,
            http1_fallbacks,
            mtls_refused,
            admission,
            downstream_timeouts,
            request_body_too_large,
            http2_abuse,
            proxy_protocol_refused,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

fn admission_metrics() -> AdmissionMetrics {
    AdmissionMetrics {
        refused: IntCounterVec::new(
            Opts::new(
                "ferry_downstream_connections_refused_total",
                "Client connections closed at once by the connection limits, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric"),
        reaped: IntCounter::new(
            "ferry_downstream_connections_reaped_total",
            "Idle client connections closed to make room under pressure",
        )
        .expect("valid metric"),
        overloaded: IntGauge::new(
            "ferry_overload_shedding",
            "1 while the proxy sheds load (resident memory past --overload-memory-bytes)",
        )
        .expect("valid metric"),
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(ProxyIdentity::default(), Arc::default(), true)
    }
}
