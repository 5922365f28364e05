//! The telemetry of one request: request id and trace context on the way in; metrics,
//! access log line and span on the way out.

use http::header::{CONTENT_TYPE, HOST, USER_AGENT};
use http::HeaderName;
use opentelemetry::KeyValue;
use pingora_core::{Error, ErrorSource, ErrorType};
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use std::time::{Duration, SystemTime};

use super::context::RequestCtx;
use crate::header_names::{GRPC_STATUS, X_FERRY_CAUSE, X_FORWARDED_FOR, X_REQUEST_ID};
use crate::metrics::Metrics;
use crate::telemetry::access_log::{AccessLog, Entry};
use crate::telemetry::context;
use crate::telemetry::{response_flags, RequestLabels, RequestSpan, Telemetry};

/// Gives the request an id (kept when the client sent one) and a span, before routing, so
/// local replies, upstream requests and mirrors all carry them.
pub fn begin(session: &mut Session, ctx: &mut RequestCtx, telemetry: &Telemetry) {
    let header = session.req_header_mut();
    let request_id = match header
        .headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
    {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            let _ = header.insert_header(X_REQUEST_ID.as_str(), &id);
            id
        }
    };
    ctx.request_id = Some(request_id);
    let (parent, formats) = context::extract(&header.headers);
    ctx.trace_formats = formats;
    ctx.span = match (&telemetry.tracing, parent) {
        (Some(tracing), parent) => {
            Some(tracing.start_span(header.method.to_string(), parent.as_ref(), ctx.started_at))
        }
        (None, Some(parent)) => Some(RequestSpan::untraced(parent)),
        (None, None) => None,
    };
    ctx.tracing = telemetry.tracing.is_some();
}

/// Replaces the trace headers of the upstream request with this proxy's span (tracing on);
/// without tracing they pass through untouched.
pub fn propagate(upstream: &mut RequestHeader, ctx: &RequestCtx) {
    if !ctx.tracing {
        return;
    }
    if let Some(span) = &ctx.span {
        context::inject(&span.context, ctx.trace_formats, |name, value| {
            let _ = upstream.insert_header(name, value);
        });
    }
}

/// What the finished request amounted to, shared by every report.
struct Outcome<'a> {
    code: u16,
    /// The cause header of a reply the proxy wrote itself.
    cause: Option<&'a str>,
    flags: String,
    duration: Duration,
    bytes_received: u64,
    bytes_sent: u64,
}

/// Records the finished request everywhere it is reported.
pub fn finish(
    session: &Session,
    error: Option<&Error>,
    ctx: &mut RequestCtx,
    metrics: &Metrics,
    telemetry: &Telemetry,
) {
    let response = session.as_downstream().response_written();
    let cause = response
        .and_then(|r| r.headers.get(&X_FERRY_CAUSE))
        .and_then(|v| v.to_str().ok());
    let outcome = Outcome {
        code: response.map_or(0, |r| r.status.as_u16()),
        cause,
        flags: response_flags(cause, ctx.delay_injected, downstream_gone(error)),
        duration: ctx.started.elapsed(),
        bytes_received: session.as_downstream().body_bytes_read() as u64,
        bytes_sent: session.as_downstream().body_bytes_sent() as u64,
    };
    if telemetry.istio_metrics {
        record_istio(metrics, ctx, session, &outcome);
    }
    if let Some(log) = &telemetry.access_log {
        log_access(log, ctx, session, &outcome);
    }
    end_span(ctx, session, &outcome);
}

fn log_access(log: &AccessLog, ctx: &RequestCtx, session: &Session, outcome: &Outcome<'_>) {
    let request = session.req_header();
    let header = |name: &HeaderName| request.headers.get(name).and_then(|v| v.to_str().ok());
    let downstream = session.as_downstream();
    log.log(&Entry {
        start_time: rfc3339(ctx.started_at),
        method: request.method.as_str(),
        authority: authority(request),
        path: request.uri.path_and_query().map_or("/", |p| p.as_str()),
        protocol: protocol(session),
        response_code: outcome.code,
        response_flags: &outcome.flags,
        response_code_details: outcome.cause.unwrap_or("-"),
        bytes_received: outcome.bytes_received,
        bytes_sent: outcome.bytes_sent,
        duration: outcome.duration.as_millis() as u64,
        upstream_host: ctx.tries.last_address,
        upstream_cluster: ctx.cluster.as_ref().map(|c| &*c.cluster.name),
        route_name: ctx.route.as_ref().map(|r| &*r.route.name),
        request_id: ctx.request_id.as_deref(),
        trace_id: ctx.span.as_ref().map(|s| s.context.trace_id_hex()),
        user_agent: header(&USER_AGENT),
        x_forwarded_for: header(&X_FORWARDED_FOR),
        downstream_remote_address: downstream.client_addr().map(|a| a.to_string()),
        downstream_local_address: downstream.server_addr().map(|a| a.to_string()),
    });
}

fn end_span(ctx: &mut RequestCtx, session: &Session, outcome: &Outcome<'_>) {
    let Some(span) = ctx.span.take() else {
        return;
    };
    let request = session.req_header();
    let route_name = ctx.route.as_ref().map(|r| &*r.route.name);
    let mut attributes = vec![
        KeyValue::new("http.request.method", request.method.to_string()),
        KeyValue::new("url.path", request.uri.path().to_string()),
        KeyValue::new("server.address", authority(request).to_string()),
        KeyValue::new("http.response.status_code", i64::from(outcome.code)),
        KeyValue::new("response_flags", outcome.flags.clone()),
        KeyValue::new(
            "guid:x-request-id",
            ctx.request_id.clone().unwrap_or_default(),
        ),
    ];
    if let Some(route) = route_name {
        attributes.push(KeyValue::new("ferry.route", route.to_string()));
    }
    if let Some(host) = ctx.tries.last_address {
        attributes.push(KeyValue::new("upstream_address", host.to_string()));
    }
    if let Some(cluster) = &ctx.cluster {
        attributes.push(KeyValue::new(
            "upstream_cluster",
            cluster.cluster.name.to_string(),
        ));
    }
    let name = format!("{} {}", request.method, route_name.unwrap_or("no route"));
    let failed = outcome.code >= 500 || outcome.code == 0;
    span.finish(name, attributes, failed, SystemTime::now());
}

fn record_istio(metrics: &Metrics, ctx: &RequestCtx, session: &Session, outcome: &Outcome<'_>) {
    let response = session.as_downstream().response_written();
    let grpc = session
        .req_header()
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/grpc"));
    let endpoint = ctx.cluster.as_ref().and_then(|cluster| {
        let index = *ctx.tries.tried.last()?;
        cluster.cluster.endpoints.get(index)
    });
    metrics.istio.record(
        RequestLabels {
            inbound: ctx.inbound.is_some(),
            service: ctx.cluster.as_ref().map(|c| c.cluster.service.clone()),
            workload: endpoint.and_then(|e| e.workload.clone()),
            grpc,
            response_code: outcome.code,
            grpc_status: response
                .and_then(|r| r.headers.get(&GRPC_STATUS))
                .and_then(|v| v.to_str().ok()?.parse().ok()),
            response_flags: outcome.flags.clone(),
        },
        outcome.duration.as_secs_f64() * 1000.0,
        outcome.bytes_received,
        outcome.bytes_sent,
    );
}

/// The client went away before the response was complete.
fn downstream_gone(error: Option<&Error>) -> bool {
    error.is_some_and(|e| {
        e.esource() == &ErrorSource::Downstream
            && matches!(
                e.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            )
    })
}

fn authority(request: &RequestHeader) -> &str {
    request
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| request.headers.get(HOST).and_then(|v| v.to_str().ok()))
        .unwrap_or("-")
}

fn protocol(session: &Session) -> &'static str {
    if session.as_downstream().is_http2() {
        "HTTP/2"
    } else {
        match session.req_header().version {
            http::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        }
    }
}

fn rfc3339(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
