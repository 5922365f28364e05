//! A route's local rate limits against the proxy's limiter, and the reply of a limited
//! request with the IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers:
//! `RateLimit-Policy` names the quota, `RateLimit` what is left) and `Retry-After`.

use std::net::IpAddr;
use std::time::Duration;

use ferry_model::{ConcurrencyLimit, RateLimit, RateLimitKey};

use super::decide::{Decision, Reply};
use super::facts::RequestFacts;
use crate::in_flight::{in_flight, Permit};
use crate::rate_limit::{limiter, Verdict};

/// The reply for a request one of `limits` refuses, if any does. `client`: the client's
/// address after trusted proxies.
pub fn check(
    req: &RequestFacts<'_>,
    limits: &[RateLimit],
    client: Option<IpAddr>,
) -> Option<Reply> {
    for limit in limits {
        if client.is_some_and(|ip| limit.exempt.iter().any(|b| b.contains(ip))) {
            continue;
        }
        let verdict = match &limit.key {
            RateLimitKey::Route => limiter().check(limit, ()),
            RateLimitKey::ClientIp => limiter().check(limit, client),
            RateLimitKey::Header(name) => {
                limiter().check(limit, crate::header_lookup::joined(req.headers, name))
            }
        };
        if let Verdict::Limited { retry_after } = verdict {
            return Some(limited(limit, retry_after));
        }
    }
    None
}

/// A place for the request under `limit` (None: the client is exempt), or the reply when
/// the client has `max` requests in progress already.
pub fn enter(limit: &ConcurrencyLimit, client: Option<IpAddr>) -> Result<Option<Permit>, Reply> {
    if client.is_some_and(|ip| limit.exempt.iter().any(|b| b.contains(ip))) {
        return Ok(None);
    }
    match in_flight().try_enter(&limit.name, client, limit.max) {
        Some(permit) => Ok(Some(permit)),
        None => {
            let cause = format!(
                "RL {}: {} requests of this client in progress already",
                limit.name, limit.max
            );
            let mut reply = Decision::reply(limit.status, cause);
            reply.body = "concurrency_limited".into();
            Err(reply)
        }
    }
}

fn limited(limit: &RateLimit, retry_after: Duration) -> Reply {
    let seconds = retry_after.as_millis().div_ceil(1000).max(1);
    let mut reply = Decision::reply(limit.status, format!("RL {}: local rate limit", limit.name));
    reply.body = "local_rate_limited".into();
    let window = Duration::from_millis(limit.window_ms).as_secs().max(1);
    let headers = [
        (
            "ratelimit-policy",
            format!("\"{}\";q={};w={window}", limit.name, limit.requests),
        ),
        ("ratelimit", format!("\"{}\";r=0;t={seconds}", limit.name)),
        ("retry-after", seconds.to_string()),
    ];
    reply
        .headers
        .extend(headers.map(|(name, value)| (name.into(), value)));
    reply
}
