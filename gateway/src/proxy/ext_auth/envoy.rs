//! Envoy's HTTP ext_authz, as Gateway API's `ExternalAuth` filter (protocol HTTP) asks:
//! the check carries the request's method and its path under `path_prefix`, with Host,
//! Authorization and the listed headers, and no body (`Content-Length: 0`). 200 lets the
//! request through with the answer's headers (the listed ones, or all but Host and
//! framing) set on it; any other answer is the client's — status, headers and body; no
//! answer, or one that cannot be had, is 403 (the filter fails closed).

use bytes::Bytes;
use ferry_model::ExtAuth;
use http_body_util::{BodyExt, Empty, Limited};

use super::{client, service_base, NOT_PASSED, TIMEOUT};
use crate::compiled::CompiledSnapshot;
use crate::proxy::decide::{Decision, Reply};
use crate::proxy::facts::RequestFacts;
use crate::proxy::jwt::HeaderEdit;

/// A denial's body is relayed up to this size.
const MAX_DENIAL_BODY: usize = 64 << 10;

/// Answer headers never copied into the request or the client's denial (framing and
/// hop-by-hop; Host and the reply's own content type).
const NOT_COPIED: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "date",
    "server",
];

pub(super) async fn check(
    snapshot: &CompiledSnapshot,
    auth: &ExtAuth,
    req: &RequestFacts<'_>,
    meta: &ferry_model::Meta,
) -> Result<Vec<HeaderEdit>, Reply> {
    let base = service_base(snapshot, auth).map_err(|e| failed(meta, &e))?;
    let request = check_request(auth, req, &base).map_err(|e| failed(meta, &e))?;
    let answer = tokio::time::timeout(TIMEOUT, client().request(request)).await;
    let response = match answer {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => return Err(failed(meta, &e.to_string())),
        Err(_) => return Err(failed(meta, "no answer in time")),
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = Limited::new(response.into_body(), MAX_DENIAL_BODY).collect();
    let body = match tokio::time::timeout(TIMEOUT, body).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        _ if status == 200 => Bytes::new(),
        _ => return Err(failed(meta, "the denial's body did not arrive whole")),
    };
    if status == 200 {
        return Ok(allowed_edits(auth, &headers));
    }
    Err(denial(meta, status, &headers, body))
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
    builder.body(Empty::new()).map_err(|e| e.to_string())
}

/// The answer's headers the forwarded request takes: the listed ones, or every one but
/// framing and Host when none is listed.
fn allowed_edits(auth: &ExtAuth, headers: &http::HeaderMap) -> Vec<HeaderEdit> {
    let wanted = |name: &str| match auth.response_headers.is_empty() {
        true => !NOT_COPIED.contains(&name),
        false => auth
            .response_headers
            .iter()
            .any(|listed| listed.eq_ignore_ascii_case(name)),
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

/// The auth service's answer, relayed to the client.
fn denial(meta: &ferry_model::Meta, status: u16, headers: &http::HeaderMap, body: Bytes) -> Reply {
    let status = if (200..=599).contains(&status) {
        status
    } else {
        403
    };
    let mut reply = Decision::reply(status, format!("UAEX {meta}: the auth service denied"));
    reply.body = String::from_utf8_lossy(&body).into_owned();
    for (name, value) in headers {
        if NOT_COPIED.contains(&name.as_str()) {
            continue;
        }
        if let Ok(value) = value.to_str() {
            reply
                .headers
                .push((name.as_str().to_string().into(), value.to_string()));
        }
    }
    reply
}

fn failed(meta: &ferry_model::Meta, why: &str) -> Reply {
    Decision::reply(
        403,
        format!("UAEX {meta}: external authorization failed: {why}"),
    )
}
