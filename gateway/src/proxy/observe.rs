//! The telemetry of one request: request id and trace context on the way in; metrics,
//! access log line and span on the way out.

use http::header::HOST;
use opentelemetry::KeyValue;
use pingora_core::{Error, ErrorSource, ErrorType};
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use std::time::{Duration, SystemTime};

use super::context::RequestCtx;
use super::request_series;
use crate::header_lookup::{self, HeaderLookup};
use crate::header_names::{GRPC_STATUS, X_FERRY_CAUSE, X_REQUEST_ID};
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

/// A finished request as every report sees it, whichever loop served it.
pub struct Exchange<'a> {
    pub method: &'a str,
    pub authority: &'a str,
    pub path_and_query: &'a str,
    pub protocol: &'static str,
    pub headers: &'a dyn HeaderLookup,
    /// Status written to the client (0: none).
    pub code: u16,
    /// The cause header of a reply the proxy wrote itself.
    pub cause: Option<&'a str>,
    pub grpc_status: Option<u16>,
    pub downstream_gone: bool,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub client: Option<std::net::SocketAddr>,
    pub local: Option<std::net::SocketAddr>,
}

/// Records the finished request everywhere it is reported: Ferry's request metrics, Istio's,
/// the access log and the span.
pub fn report(
    exchange: &Exchange<'_>,
    ctx: &mut RequestCtx,
    metrics: &Metrics,
    telemetry: &Telemetry,
) {
    if std::mem::take(&mut ctx.counted_active) {
        metrics.active_requests.dec();
    }
    let duration = ctx.started.elapsed();
    let series = request_series::series(
        metrics,
        ctx.listener_port,
        ctx.route.as_ref(),
        ctx.cluster.as_ref(),
        exchange.code,
    );
    series.requests.inc();
    series.duration.observe(duration.as_secs_f64());
    let flags = response_flags(exchange.cause, ctx.delay_injected, exchange.downstream_gone);
    record_edge(metrics, telemetry, ctx, exchange, &flags, duration);
    if let Some(log) = &telemetry.access_log {
        log_access(log, ctx, exchange, &flags, duration);
    }
    end_span(ctx, exchange, &flags);
}

/// Records a request Pingora served.
pub fn finish(
    session: &Session,
    error: Option<&Error>,
    ctx: &mut RequestCtx,
    metrics: &Metrics,
    telemetry: &Telemetry,
) {
    let response = session.as_downstream().response_written();
    let request = session.req_header();
    let downstream = session.as_downstream();
    let local_cause = ctx.local_cause.take();
    let exchange = Exchange {
        method: request.method.as_str(),
        authority: authority(request),
        path_and_query: request.uri.path_and_query().map_or("/", |p| p.as_str()),
        protocol: protocol(session),
        headers: &request.headers,
        code: response.map_or(0, |r| r.status.as_u16()),
        cause: local_cause.as_deref().or_else(|| {
            response
                .and_then(|r| r.headers.get(&X_FERRY_CAUSE))
                .and_then(|v| v.to_str().ok())
        }),
        grpc_status: response
            .and_then(|r| r.headers.get(&GRPC_STATUS))
            .and_then(|v| v.to_str().ok()?.parse().ok()),
        downstream_gone: downstream_gone(error),
        bytes_received: downstream.body_bytes_read() as u64,
        bytes_sent: downstream.body_bytes_sent() as u64,
        client: downstream.client_addr().and_then(|a| a.as_inet()).copied(),
        local: downstream.server_addr().and_then(|a| a.as_inet()).copied(),
    };
    report(&exchange, ctx, metrics, telemetry);
}

fn log_access(
    log: &AccessLog,
    ctx: &RequestCtx,
    exchange: &Exchange<'_>,
    flags: &str,
    duration: Duration,
) {
    let header = |name: &str| header_lookup::first_text(exchange.headers, name);
    log.log(&Entry {
        start_time: rfc3339(ctx.started_at),
        method: exchange.method,
        authority: exchange.authority,
        path: exchange.path_and_query,
        protocol: exchange.protocol,
        response_code: exchange.code,
        response_flags: flags,
        response_code_details: exchange.cause.unwrap_or("-"),
        bytes_received: exchange.bytes_received,
        bytes_sent: exchange.bytes_sent,
        duration: duration.as_millis() as u64,
        upstream_host: ctx.tries.last_address,
        upstream_cluster: ctx.cluster.as_ref().map(|c| &*c.cluster.name),
        route_name: ctx.route.as_ref().map(|r| &*r.route.name),
        request_id: ctx.request_id.as_deref(),
        trace_id: ctx.span.as_ref().map(|s| s.context.trace_id_hex()),
        user_agent: header("user-agent"),
        x_forwarded_for: header("x-forwarded-for"),
        downstream_remote_address: exchange.client.map(|a| a.to_string()),
        downstream_local_address: exchange.local.map(|a| a.to_string()),
        downstream_peer_uri_san: ctx.peer_identity.as_deref(),
        upstream_peer_uri_san: upstream_identity(ctx),
    });
}

/// The SPIFFE ID the last try's endpoint presented (it is checked against this at the
/// handshake), when it was reached over mesh mTLS.
fn upstream_identity(ctx: &RequestCtx) -> Option<&str> {
    let cluster = ctx.cluster.as_ref()?;
    let index = *ctx.tries.tried.last()?;
    cluster.cluster.endpoints.get(index)?.mtls.as_deref()
}

fn end_span(ctx: &mut RequestCtx, exchange: &Exchange<'_>, flags: &str) {
    let Some(span) = ctx.span.take() else {
        return;
    };
    let route_name = ctx.route.as_ref().map(|r| &*r.route.name);
    let path = exchange.path_and_query.split('?').next().unwrap_or("/");
    let mut attributes = vec![
        KeyValue::new("http.request.method", exchange.method.to_string()),
        KeyValue::new("url.path", path.to_string()),
        KeyValue::new("server.address", exchange.authority.to_string()),
        KeyValue::new("http.response.status_code", i64::from(exchange.code)),
        KeyValue::new("response_flags", flags.to_string()),
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
    let name = format!("{} {}", exchange.method, route_name.unwrap_or("no route"));
    let failed = exchange.code >= 500 || exchange.code == 0;
    span.finish(name, attributes, failed, SystemTime::now());
}

/// Istio's request metrics and the dashboard's edge counts (one series lookup serves both),
/// and the reply for the dashboard's recent errors when the proxy wrote it itself.
fn record_edge(
    metrics: &Metrics,
    telemetry: &Telemetry,
    ctx: &RequestCtx,
    exchange: &Exchange<'_>,
    flags: &str,
    duration: Duration,
) {
    let labels = request_labels(ctx, exchange, flags);
    if let Some(cause) = exchange.cause.filter(|_| exchange.code >= 400) {
        let route = ctx.route.as_ref().map(|r| &*r.route.name);
        metrics.edges.proxy_error(&labels, cause, route);
    }
    let duration_ms = duration.as_secs_f64() * 1000.0;
    if telemetry.istio_metrics {
        metrics.istio.record(
            labels,
            duration_ms,
            exchange.bytes_received,
            exchange.bytes_sent,
        );
    } else {
        metrics.edges.tally(&labels).record(duration_ms);
    }
}

fn request_labels(ctx: &RequestCtx, exchange: &Exchange<'_>, flags: &str) -> RequestLabels {
    let grpc = header_lookup::first_text(exchange.headers, "content-type")
        .is_some_and(|t| t.starts_with("application/grpc"));
    let endpoint = ctx.cluster.as_ref().and_then(|cluster| {
        let index = *ctx.tries.tried.last()?;
        cluster.cluster.endpoints.get(index)
    });
    RequestLabels {
        inbound: ctx.inbound.is_some(),
        service: ctx.cluster.as_ref().map(|c| c.cluster.service.clone()),
        workload: endpoint.and_then(|e| e.workload.clone()),
        peer_identity: ctx.peer_identity.clone(),
        upstream_identity: endpoint.and_then(|e| e.mtls.clone()),
        grpc,
        response_code: exchange.code,
        grpc_status: exchange.grpc_status,
        response_flags: flags.to_string(),
    }
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

pub(crate) fn rfc3339(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
