//! What the proxy tells about each request: Istio metrics, the access log and trace spans.

pub mod access_log;
pub mod context;
pub mod edges;
pub mod istio;
pub mod tracer;

use prometheus::IntCounter;

pub use access_log::{AccessLog, AccessLogFormat};
pub use istio::{ProxyIdentity, RequestLabels};
pub use tracer::{RequestSpan, Tracing, TracingOptions};

#[derive(Clone, Debug)]
pub struct TelemetryOptions {
    pub identity: ProxyIdentity,
    /// Record Istio's request metrics (off only to measure what they cost).
    pub istio_metrics: bool,
    pub access_log: AccessLogFormat,
    pub tracing: Option<TracingOptions>,
}

impl Default for TelemetryOptions {
    fn default() -> Self {
        TelemetryOptions {
            identity: ProxyIdentity::default(),
            istio_metrics: true,
            access_log: AccessLogFormat::Json,
            tracing: None,
        }
    }
}

/// The access log and tracer of a running proxy (metrics live in [`crate::metrics`]).
pub struct Telemetry {
    pub istio_metrics: bool,
    pub access_log: Option<AccessLog>,
    pub tracing: Option<Tracing>,
}

impl Telemetry {
    pub fn start(options: &TelemetryOptions, dropped_lines: IntCounter) -> Result<Self, String> {
        let tracing = options.tracing.as_ref().map(Tracing::start).transpose()?;
        Ok(Telemetry {
            istio_metrics: options.istio_metrics,
            access_log: AccessLog::start(options.access_log, dropped_lines),
            tracing,
        })
    }
}

/// Envoy response flags, comma-separated, "-" when none: from the cause code of a reply
/// the proxy wrote itself, plus facts only the request knows.
pub fn response_flags(cause: Option<&str>, delay_injected: bool, downstream_gone: bool) -> String {
    let mut flags: Vec<&str> = Vec::new();
    if let Some(code) = cause.and_then(|c| c.split(' ').next()) {
        if matches!(
            code,
            "NR" | "UH" | "NC" | "UF" | "UC" | "UO" | "UT" | "URX" | "FI" | "RBAC" | "RL" | "UAEX"
        ) {
            flags.push(code);
        }
    }
    if delay_injected {
        flags.push("DI");
    }
    if downstream_gone {
        flags.push("DC");
    }
    if flags.is_empty() {
        "-".to_string()
    } else {
        flags.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_come_from_causes_and_request_facts() {
        assert_eq!(response_flags(None, false, false), "-");
        assert_eq!(
            response_flags(Some("UO Service/a/b: overflow"), false, false),
            "UO"
        );
        assert_eq!(response_flags(Some("DR HTTPRoute/a/b"), false, false), "-");
        assert_eq!(
            response_flags(Some("FI VirtualService/a/b"), true, false),
            "FI,DI"
        );
        assert_eq!(response_flags(None, false, true), "DC");
    }
}
