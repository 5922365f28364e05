//! Prometheus metrics of the engine.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Requests by listener port, route, backend cluster and status code.
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub snapshot_version: IntGauge,
    pub swaps: IntCounter,
    pub rejections: IntCounter,
    pub listeners: IntGauge,
    pub listener_bind_errors: IntCounter,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
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
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(snapshot_version.clone()),
            Box::new(swaps.clone()),
            Box::new(rejections.clone()),
            Box::new(listeners.clone()),
            Box::new(listener_bind_errors.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        Metrics {
            registry,
            requests,
            request_duration,
            snapshot_version,
            swaps,
            rejections,
            listeners,
            listener_bind_errors,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
