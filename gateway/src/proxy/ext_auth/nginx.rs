//! nginx's `auth_request` (ingress-nginx `auth-url`): a GET with the request's headers goes
//! to a fixed URL. A 2xx answer lets it through, with the answer's `response_headers`
//! copied into it; 401 and 403 are the client's answer (a 401 becomes a redirect to the
//! sign-in page when there is one); anything else, or no answer in time, is 500: the
//! request never goes out unchecked.

use bytes::Bytes;
use ferry_model::ExtAuth;
use http_body_util::{BodyExt, Empty};

use super::{client, NOT_PASSED, TIMEOUT};
use crate::proxy::decide::{Decision, Reply};
use crate::proxy::facts::RequestFacts;
use crate::proxy::jwt::HeaderEdit;

/// Asks the auth service about `req`: the header edits for the forwarded request, or the
/// reply the client gets instead. `scheme` is the client's (`http` or `https`).
pub(super) async fn check(
    auth: &ExtAuth,
    req: &RequestFacts<'_>,
    scheme: &str,
    meta: &ferry_model::Meta,
) -> Result<Vec<HeaderEdit>, Reply> {
    let original = original_url(req, scheme);
    let request = subrequest(auth, req, &original).map_err(|e| failed(meta, &e))?;
    let answer = tokio::time::timeout(TIMEOUT, client().request(request)).await;
    let response = match answer {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => return Err(failed(meta, &e.to_string())),
        Err(_) => return Err(failed(meta, "no answer in time")),
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    // Drain the body so the connection can be reused (bounded by the timeout above).
    let _ = tokio::time::timeout(TIMEOUT, response.into_body().collect()).await;
    match status {
        200..=299 => Ok(copied(auth, &headers)),
        401 => Err(unauthenticated(auth, meta, &headers, &original)),
        403 => Err(Decision::reply(
            403,
            format!("UAEX {meta}: the auth service refused"),
        )),
        other => Err(failed(meta, &format!("the auth service answered {other}"))),
    }
}

fn original_url(req: &RequestFacts<'_>, scheme: &str) -> String {
    match req.query {
        Some(query) => format!("{scheme}://{}{}?{query}", req.authority, req.path),
        None => format!("{scheme}://{}{}", req.authority, req.path),
    }
}

fn subrequest(
    auth: &ExtAuth,
    req: &RequestFacts<'_>,
    original: &str,
) -> Result<http::Request<Empty<Bytes>>, String> {
    let uri: http::Uri = auth.url.parse().map_err(|e| format!("auth url: {e}"))?;
    let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let method = auth.method.as_deref().unwrap_or("GET");
    let mut request = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", host);
    req.headers.for_each(&mut |name, value| {
        if !NOT_PASSED.contains(&name) && !name.starts_with("x-original-") {
            request = std::mem::take(&mut request).header(name, value);
        }
    });
    let mut builder = request;
    let uri_and_query = match &auth.request_redirect {
        Some(given) => Some(given.to_string()),
        None => original
            .splitn(4, '/')
            .nth(3)
            .map(|rest| format!("/{rest}")),
    };
    builder = builder
        .header("x-original-url", original)
        .header("x-original-method", req.method)
        .header(
            "x-auth-request-redirect",
            uri_and_query.unwrap_or_else(|| "/".into()),
        )
        .header("x-forwarded-host", req.authority);
    if let Some(ip) = req.client_ip {
        builder = builder.header("x-real-ip", ip.to_string());
    }
    builder.body(Empty::new()).map_err(|e| e.to_string())
}

/// The answer's headers named in `response_headers`, set on the forwarded request.
fn copied(auth: &ExtAuth, headers: &http::HeaderMap) -> Vec<HeaderEdit> {
    auth.response_headers
        .iter()
        .filter_map(|name| {
            let value = headers.get(&**name)?.to_str().ok()?;
            Some(HeaderEdit::Set(
                name.to_ascii_lowercase().into(),
                value.to_string(),
            ))
        })
        .collect()
}

fn unauthenticated(
    auth: &ExtAuth,
    meta: &ferry_model::Meta,
    headers: &http::HeaderMap,
    original: &str,
) -> Reply {
    if let Some(signin) = &auth.signin {
        let separator = if signin.contains('?') { '&' } else { '?' };
        let location = format!(
            "{signin}{separator}{}={}",
            auth.redirect_param,
            escape(original)
        );
        let mut reply = Decision::reply(302, format!("UAEX {meta}: sign in first"));
        reply.body.clear();
        reply.headers.push(("location".into(), location));
        return reply;
    }
    let mut reply = Decision::reply(
        401,
        format!("UAEX {meta}: the auth service asked for credentials"),
    );
    if let Some(challenge) = headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
    {
        reply
            .headers
            .push(("www-authenticate".into(), challenge.to_string()));
    }
    reply
}

fn failed(meta: &ferry_model::Meta, why: &str) -> Reply {
    Decision::reply(
        500,
        format!("UAEX {meta}: external authentication failed: {why}"),
    )
}

/// Percent-encoding of a URL as a query value.
fn escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_url_is_escaped_into_the_sign_in_redirect() {
        assert_eq!(
            escape("https://a.example/x?y=1"),
            "https%3A%2F%2Fa.example%2Fx%3Fy%3D1"
        );
    }
}
