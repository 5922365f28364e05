//! Envoy's HTTP ext_authz, as Gateway API's `ExternalAuth` filter (protocol HTTP) and
//! Istio's `envoyExtAuthzHttp` providers ask: the check carries the request's method and
//! its path under `path_prefix`, with Host, Authorization, the listed headers and any
//! fixed ones, and no body (`Content-Length: 0`). 200 lets the request through with the
//! answer's listed headers (`*`: all but Host and framing) set on it; any other answer is
//! the client's — status, its listed headers (all when none are) and body; no answer, or
//! one that cannot be had, is 403 or the provider's `status_on_error` (fails closed) unless
//! the provider fails open.

use std::time::Duration;

use bytes::Bytes;
use ferry_model::ExtAuth;
use http_body_util::{BodyExt, Empty, Limited};

use super::{client, service_base, NOT_PASSED, TIMEOUT};
use crate::compiled::CompiledSnapshot;
use crate::header_names::NOT_RELAYED;
use crate::proxy::decide::{Decision, Reply};
use crate::proxy::facts::RequestFacts;
use crate::proxy::jwt::HeaderEdit;

/// A denial's body is relayed up to this size.
const MAX_DENIAL_BODY: usize = 64 << 10;

/// Answer headers `*` does not copy into the forwarded request, beyond [`NOT_RELAYED`]: the
/// request keeps its own Host and body type.
const NOT_FORWARDED: &[&str] = &["host", "content-type"];

pub(super) async fn check(
    snapshot: &CompiledSnapshot,
    auth: &ExtAuth,
    req: &RequestFacts<'_>,
    meta: &ferry_model::Meta,
) -> Result<Vec<HeaderEdit>, Reply> {
    let failed = |why: &str| match auth.fail_open {
        true => Ok(Vec::new()),
        false => Err(failed(auth, meta, why)),
    };
    let timeout = auth.timeout_ms.map_or(TIMEOUT, Duration::from_millis);
    let request = service_base(snapshot, auth).and_then(|base| check_request(auth, req, &base));
    let request = match request {
        Ok(request) => request,
        Err(e) => return failed(&e),
    };
    let response = match tokio::time::timeout(timeout, client().request(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => return failed(&e.to_string()),
        Err(_) => return failed("no answer in time"),
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = Limited::new(response.into_body(), MAX_DENIAL_BODY).collect();
    let body = match tokio::time::timeout(timeout, body).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        _ if status == 200 => Bytes::new(),
        _ => return failed("the denial's body did not arrive whole"),
    };
    if status == 200 {
        return Ok(allowed_edits(auth, &headers));
    }
    Err(denial(auth, meta, status, &headers, body))
}

fn check_request(
    auth: &ExtAuth,
    req: &RequestFacts<'_>,
    base: &str,
) -> Result<http::Request<Empty<Bytes>>, String> {
    let prefix = auth.path_prefix.trim_end_matches('/');
    let uri = match req.query {
        Some(query) => format!("{base}{prefix}{}?{query}", req.path),
        None => format!("{base}{prefix}{}", req.path),
    };
    let mut builder = http::Request::builder()
        .method(req.method)
        .uri(uri)
        .header("host", req.authority)
        .header("content-length", "0");
    let always = ["authorization"];
    let listed = auth.request_headers.iter().map(|h| &**h);
    for name in always.into_iter().chain(listed) {
        if NOT_PASSED.contains(&name) {
            continue;
        }
        let mut n = 0;
        while let Some(value) = req.headers.nth_value(name, n) {
            builder = builder.header(name, value);
            n += 1;
        }
    }
    if let Some(ip) = req.client_ip {
        builder = builder.header("x-forwarded-for", ip.to_string());
    }
    for (name, value) in auth.check_headers.iter() {
        builder = builder.header(&**name, &**value);
    }
    builder.body(Empty::new()).map_err(|e| e.to_string())
}

/// The answer's headers the forwarded request takes: the listed ones (`*`: every one but
/// framing and Host).
fn allowed_edits(auth: &ExtAuth, headers: &http::HeaderMap) -> Vec<HeaderEdit> {
    let all = auth.response_headers.iter().any(|h| &**h == "*");
    let wanted = |name: &str| match all {
        true => !NOT_RELAYED.contains(&name) && !NOT_FORWARDED.contains(&name),
        false => auth.response_headers.iter().any(|listed| **listed == *name),
    };
    headers
        .iter()
        .filter(|(name, _)| wanted(name.as_str()))
        .filter_map(|(name, value)| {
            let value = value.to_str().ok()?;
            Some(HeaderEdit::Set(name.as_str().into(), value.to_string()))
        })
        .collect()
}

/// The auth service's answer, relayed to the client with its listed headers (all when
/// none are listed).
fn denial(
    auth: &ExtAuth,
    meta: &ferry_model::Meta,
    status: u16,
    headers: &http::HeaderMap,
    body: Bytes,
) -> Reply {
    let status = if (200..=599).contains(&status) {
        status
    } else {
        403
    };
    let mut reply = Decision::reply(status, format!("UAEX {meta}: the auth service denied"));
    reply.body = String::from_utf8_lossy(&body).into_owned();
    let listed = |name: &str| {
        auth.denial_headers.is_empty() || auth.denial_headers.iter().any(|h| **h == *name)
    };
    reply.relay_headers(headers, listed);
    reply
}

fn failed(auth: &ExtAuth, meta: &ferry_model::Meta, why: &str) -> Reply {
    Decision::reply(
        auth.status_on_error.unwrap_or(403),
        format!("UAEX {meta}: external authorization failed: {why}"),
    )
}
