//! What Pingora's loop does to the request header it forwards and how it reads its errors:
//! origin-form URIs, path rewrites, forwarding headers, retry classification.

use pingora_core::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use super::forwarded::ip_text;
use super::tries::Failure;
use crate::header_names::X_FORWARDED_FOR;

/// Upstream requests carry an origin-form URI and a Host header; Pingora derives HTTP/2's
/// `:authority` from Host when the upstream speaks h2.
pub(super) fn normalize_to_origin_form(upstream: &mut RequestHeader) -> Result<()> {
    if let Some(authority) = upstream.uri.authority().map(|a| a.as_str().to_string()) {
        if upstream.headers.get(http::header::HOST).is_none() {
            upstream.insert_header("host", authority)?;
        }
        let path = upstream
            .uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string());
        set_uri(upstream, &path)?;
    }
    Ok(())
}

pub(super) fn set_path(upstream: &mut RequestHeader, path: &str) -> Result<()> {
    let uri = match upstream.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    set_uri(upstream, &uri)
}

fn set_uri(upstream: &mut RequestHeader, uri: &str) -> Result<()> {
    let parsed = uri.parse::<http::Uri>().map_err(|e| {
        Error::explain(
            ErrorType::InvalidHTTPHeader,
            format!("rewritten URI {uri:?}: {e}"),
        )
    })?;
    upstream.set_uri(parsed);
    Ok(())
}

/// X-Forwarded-For gets the client address appended; X-Forwarded-Proto names the scheme the
/// client used (https when the listener terminated TLS).
pub(super) fn set_forwarded_headers(session: &Session, upstream: &mut RequestHeader) -> Result<()> {
    if let Some(client) = session
        .as_downstream()
        .client_addr()
        .and_then(|a| a.as_inet())
    {
        let ip = ip_text(client.ip());
        let value = match upstream
            .headers
            .get(&X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
        {
            Some(existing) => format!("{existing}, {ip}"),
            None => ip,
        };
        upstream.insert_header(X_FORWARDED_FOR.as_str(), value)?;
    }
    let over_tls = session
        .as_downstream()
        .digest()
        .is_some_and(|d| d.ssl_digest.is_some());
    let scheme = if over_tls { "https" } else { "http" };
    upstream.insert_header("x-forwarded-proto", scheme)?;
    Ok(())
}

pub(super) fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .as_downstream()
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// Pingora keeps the request body for retries up to a limit; past it a retry cannot resend it.
pub(super) fn retry_buffer_truncated(session: &Session) -> bool {
    session.as_ref().retry_buffer_truncated()
}

/// Classifies an error raised while a request was in flight upstream.
pub(super) fn failure_of(error: &Error) -> Failure {
    match error.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => Failure::Timeout,
        ErrorType::H2Error if is_refused_stream(error) => Failure::RefusedStream,
        _ => Failure::Reset,
    }
}

/// Pingora keeps the h2 library error as the cause of an `H2Error`.
fn is_refused_stream(error: &Error) -> bool {
    error
        .cause
        .as_ref()
        .and_then(|cause| cause.downcast_ref::<h2::Error>())
        .is_some_and(|h2| h2.is_remote() && h2.reason() == Some(h2::Reason::REFUSED_STREAM))
}
