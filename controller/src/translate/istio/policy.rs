//! VirtualService http[] policies: timeout, retries, fault, corsPolicy.

use ferry_model::{
    Cors, Fault, FaultAbort, FaultDelay, RetryOn, RetryPolicy, RoutePolicy, StringMatch,
};

use crate::inputs::istio::{self, HttpRoute};
use crate::translate::duration::parse_ms;

/// Envoy's default retry backoff (base 25 ms, at most 10x).
pub const BACKOFF_BASE_MS: u64 = 25;

/// A field and what is wrong with it.
pub type Problem = (String, String);

pub fn route_policy(http: &HttpRoute, field: &str) -> Result<RoutePolicy, Problem> {
    let duration = |value: &Option<String>, name: &str| {
        value
            .as_deref()
            .map(parse_ms)
            .transpose()
            .map_err(|e| (format!("{field}.{name}"), e))
    };
    let (retry, per_try_timeout_ms) = match &http.retries {
        None => (Some(istio_default_retry()), None),
        Some(r) => (
            retry(r, field)?,
            duration(&r.per_try_timeout, "retries.perTryTimeout")?,
        ),
    };
    Ok(RoutePolicy {
        timeout_ms: duration(&http.timeout, "timeout")?,
        per_try_timeout_ms,
        retry,
        fault: http.fault.as_ref().map(|f| fault(f, field)).transpose()?,
        cors: http
            .cors_policy
            .as_ref()
            .map(|c| cors(c, field))
            .transpose()?,
        source_ranges: None,
        rate_limits: Vec::new().into(),
        concurrency_limit: None,
        max_request_body_bytes: None,
        basic_auth: None,
        ext_auth: None,
        error_pages: None,
        satisfy_any: false,
    })
}

/// Istio retries every route by default: 2 attempts on connect failure, refused stream and 503.
fn istio_default_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 2,
        retry_on: RetryOn {
            connect_failure: true,
            refused_stream: true,
            status_codes: vec![503].into(),
            ..RetryOn::default()
        },
        backoff_base_ms: BACKOFF_BASE_MS,
        backoff_max_ms: BACKOFF_BASE_MS * 10,
    }
}

fn retry(r: &istio::Retries, field: &str) -> Result<Option<RetryPolicy>, Problem> {
    let attempts = r.attempts.unwrap_or(2);
    if attempts <= 0 {
        return Ok(None);
    }
    let retry_on = match r.retry_on.as_deref() {
        Some(text) => parse_retry_on(text).map_err(|e| (format!("{field}.retries.retryOn"), e))?,
        None => istio_default_retry().retry_on,
    };
    let base = match &r.backoff {
        Some(b) => parse_ms(b).map_err(|e| (format!("{field}.retries.backoff"), e))?,
        None => BACKOFF_BASE_MS,
    };
    Ok(Some(RetryPolicy {
        attempts: attempts as u32,
        retry_on,
        backoff_base_ms: base,
        backoff_max_ms: base * 10,
    }))
}

/// Envoy's retry_on names plus bare status codes. gRPC conditions (cancelled, unavailable...)
/// are accepted and have no effect until gRPC routing lands.
pub fn parse_retry_on(text: &str) -> Result<RetryOn, String> {
    let mut on = RetryOn::default();
    let mut codes = Vec::new();
    for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match token {
            "5xx" => on.server_error = true,
            "gateway-error" => on.gateway_error = true,
            "connect-failure" => on.connect_failure = true,
            "refused-stream" => on.refused_stream = true,
            "reset" | "reset-before-request" => on.reset = true,
            "retriable-4xx" => on.retriable_4xx = true,
            "retriable-status-codes" | "retriable-headers" | "envoy-ratelimited" => {}
            "cancelled" | "deadline-exceeded" | "internal" | "resource-exhausted"
            | "unavailable" => {}
            code => codes.push(
                code.parse::<u16>()
                    .ok()
                    .filter(|c| (100..600).contains(c))
                    .ok_or_else(|| format!("unknown retryOn condition {code:?}"))?,
            ),
        }
    }
    on.status_codes = codes.into();
    Ok(on)
}

fn per_million(percent: Option<&istio::Percent>, legacy: Option<i32>) -> u32 {
    match (percent, legacy) {
        (Some(p), _) => (p.value.clamp(0.0, 100.0) * 10_000.0).round() as u32,
        (None, Some(p)) => (p.clamp(0, 100) as u32) * 10_000,
        (None, None) => 1_000_000, // unspecified: every request, as Istio does
    }
}

fn fault(f: &istio::FaultInjection, field: &str) -> Result<Fault, Problem> {
    let delay = match &f.delay {
        Some(d) => {
            let text = d.fixed_delay.as_deref().ok_or_else(|| {
                (
                    format!("{field}.fault.delay.fixedDelay"),
                    "fixedDelay is required".to_string(),
                )
            })?;
            let delay_ms =
                parse_ms(text).map_err(|e| (format!("{field}.fault.delay.fixedDelay"), e))?;
            Some(FaultDelay {
                delay_ms,
                per_million: per_million(d.percentage.as_ref(), d.percent),
            })
        }
        None => None,
    };
    let abort = match &f.abort {
        Some(a) => {
            let status = a.http_status.filter(|s| (200..600).contains(s)).ok_or_else(|| {
                (format!("{field}.fault.abort.httpStatus"), "httpStatus between 200 and 599 is required (grpcStatus is not supported yet)".to_string())
            })?;
            Some(FaultAbort {
                status: status as u16,
                per_million: per_million(a.percentage.as_ref(), None),
            })
        }
        None => None,
    };
    Ok(Fault { delay, abort })
}

fn cors(c: &istio::CorsPolicy, field: &str) -> Result<Cors, Problem> {
    let mut origins = Vec::new();
    for (i, m) in c.allow_origins.iter().enumerate() {
        let origin = match (&m.exact, &m.prefix, &m.regex) {
            (Some(v), None, None) => StringMatch::Exact(v.as_str().into()),
            (None, Some(v), None) => StringMatch::Prefix(v.as_str().into()),
            (None, None, Some(v)) => StringMatch::Regex(v.as_str().into()),
            _ => {
                return Err((
                    format!("{field}.corsPolicy.allowOrigins[{i}]"),
                    "exactly one of exact, prefix, regex".into(),
                ))
            }
        };
        origins.push(origin);
    }
    origins.extend(
        c.allow_origin
            .iter()
            .map(|o| StringMatch::Exact(o.as_str().into())),
    );
    let max_age_seconds = c
        .max_age
        .as_deref()
        .map(|m| parse_ms(m).map(|ms| ms / 1000))
        .transpose()
        .map_err(|e| (format!("{field}.corsPolicy.maxAge"), e))?;
    Ok(Cors {
        allow_origins: origins.into(),
        allow_methods: c.allow_methods.iter().map(|m| m.as_str().into()).collect(),
        allow_headers: c.allow_headers.iter().map(|m| m.as_str().into()).collect(),
        expose_headers: c.expose_headers.iter().map(|m| m.as_str().into()).collect(),
        max_age_seconds,
        allow_credentials: c.allow_credentials.unwrap_or(false),
        forward_refused_preflights: true,
    })
}
