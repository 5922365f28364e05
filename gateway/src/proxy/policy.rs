//! Route policies applied at the edge of a request: fault injection, CORS, hash keys.

use ferry_model::{Cors, Fault, HashOn, StringMatch};
use std::time::Duration;

use super::facts::RequestFacts;
use crate::header_lookup::{self, HeaderLookup};
use crate::rewrite::EditHeaders;
use crate::upstream::balancer::hash_of;

fn roll(per_million: u32) -> bool {
    per_million >= 1_000_000 || rand::random_range(0..1_000_000) < per_million
}

/// The fault to inject on this request, if the dice say so: (delay, abort status).
pub fn fault_for(fault: &Fault) -> (Option<Duration>, Option<u16>) {
    let delay = fault
        .delay
        .as_ref()
        .filter(|d| roll(d.per_million))
        .map(|d| Duration::from_millis(d.delay_ms));
    let abort = fault
        .abort
        .as_ref()
        .filter(|a| roll(a.per_million))
        .map(|a| a.status);
    (delay, abort)
}

/// The request's Origin if the policy allows it.
pub fn allowed_origin(cors: &Cors, headers: &dyn HeaderLookup) -> Option<String> {
    let origin = header_lookup::first_text(headers, "origin")?;
    let allowed = cors.allow_origins.iter().any(|m| match m {
        StringMatch::Exact(v) => &**v == "*" || v.as_ref() == origin,
        StringMatch::Prefix(v) => origin.starts_with(&**v),
        StringMatch::Regex(v) => {
            regex::Regex::new(&format!("^(?:{v})$")).is_ok_and(|re| re.is_match(origin))
        }
        StringMatch::Present => true,
    });
    allowed.then(|| origin.to_string())
}

pub fn is_preflight(req: &RequestFacts<'_>) -> bool {
    req.method == "OPTIONS"
        && req
            .headers
            .nth_value("access-control-request-method", 0)
            .is_some()
}

/// Headers answering a preflight from an allowed origin. A `*` in allowMethods or
/// allowHeaders answers with what the preflight asks for: browsers ignore a literal `*` on a
/// request with credentials, and the echo means the same without them.
pub fn preflight_headers(
    cors: &Cors,
    origin: &str,
    request: &dyn HeaderLookup,
) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("access-control-allow-origin", origin.to_string()),
        ("vary", "Origin".into()),
    ];
    let asked = |name: &str| header_lookup::first_text(request, name).map(str::to_string);
    let allowed = |items: &[ferry_model::Str], asked_for: Option<String>| {
        let any = items.iter().any(|i| &**i == "*");
        match (any, asked_for) {
            (true, Some(asked)) => Some(asked),
            _ if items.is_empty() => None,
            _ => Some(join(items)),
        }
    };
    if let Some(methods) = allowed(&cors.allow_methods, asked("access-control-request-method")) {
        headers.push(("access-control-allow-methods", methods));
    }
    if let Some(names) = allowed(&cors.allow_headers, asked("access-control-request-headers")) {
        headers.push(("access-control-allow-headers", names));
    }
    if !cors.expose_headers.is_empty() {
        headers.push(("access-control-expose-headers", join(&cors.expose_headers)));
    }
    if let Some(age) = cors.max_age_seconds {
        headers.push(("access-control-max-age", age.to_string()));
    }
    if cors.allow_credentials {
        headers.push(("access-control-allow-credentials", "true".into()));
    }
    headers
}

/// CORS headers added to the upstream's response for an allowed origin. The origin is echoed
/// (with `Vary: Origin`) rather than `*`, even when any origin is allowed: a request carrying
/// credentials is refused by browsers on `*`, and the echo is valid for every request.
pub fn add_response_headers(cors: &Cors, origin: &str, response: &mut impl EditHeaders) {
    response.set("access-control-allow-origin", origin);
    response.add("vary", "Origin");
    if !cors.expose_headers.is_empty() {
        response.set("access-control-expose-headers", &join(&cors.expose_headers));
    }
    if cors.allow_credentials {
        response.set("access-control-allow-credentials", "true");
    }
}

fn join(items: &[ferry_model::Str]) -> String {
    items.iter().map(|s| &**s).collect::<Vec<_>>().join(", ")
}

/// The consistent-hash key of a request, and a cookie to issue when the policy names a
/// cookie with a TTL that the request lacks.
pub fn hash_key(on: &HashOn, req: &RequestFacts<'_>) -> (Option<u64>, Option<String>) {
    match on {
        HashOn::Header(name) => (
            req.headers
                .nth_value(&name.to_ascii_lowercase(), 0)
                .map(hash_of),
            None,
        ),
        HashOn::SourceIp => (req.client_ip.map(|ip| hash_of(&ip)), None),
        HashOn::QueryParameter(name) => (query_value(req, name).map(|v| hash_of(v.as_str())), None),
        HashOn::Cookie {
            name,
            path,
            ttl_seconds,
        } => match cookie_value(req, name) {
            Some(value) => (Some(hash_of(value.as_str())), None),
            None => match ttl_seconds {
                Some(ttl) => {
                    let value = format!("{:016x}", rand::random::<u64>());
                    let path = path.as_deref().unwrap_or("/");
                    let cookie = format!("{name}={value}; Path={path}; Max-Age={ttl}; HttpOnly");
                    (Some(hash_of(value.as_str())), Some(cookie))
                }
                None => (None, None),
            },
        },
    }
}

fn query_value(req: &RequestFacts<'_>, name: &str) -> Option<String> {
    req.query?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn cookie_value(req: &RequestFacts<'_>, name: &str) -> Option<String> {
    (0..)
        .map_while(|n| req.headers.nth_value("cookie", n))
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}
