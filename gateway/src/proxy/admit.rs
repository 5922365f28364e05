//! Admitting a forwarded request (CORS preflight, faults, circuit breaker, first endpoint)
//! and running its later tries (backoff, endpoint choice, retry booking).

use ferry_model::LoadBalancer;
use pingora_core::{Error, ErrorType, Result};
use std::net::SocketAddr;
use std::sync::Arc;

use super::decide::{no_endpoints, Decision, Forward, Reply};
use super::facts::RequestFacts;
use super::policy;
use super::tries::{backoff, Failure};
use super::RequestCtx;
use crate::compiled::{CompiledCluster, CompiledRoute};
use crate::upstream::outlier::Outcome;

/// Prepares the first try, or returns the reply the proxy gives itself instead.
pub async fn admit(
    req: &RequestFacts<'_>,
    ctx: &mut RequestCtx,
    forward: Forward,
) -> Option<Reply> {
    let Forward {
        route,
        cluster,
        in_flight,
        ..
    } = forward;
    ctx.in_flight = in_flight;
    // Known from here on, also when the proxy answers itself (overflow, fault, timeout):
    // metrics, access log and trace name the destination, as Envoy's cluster stats do.
    let cluster = &*ctx.cluster.insert(cluster);
    let rule = &route.route.policy;
    let meta = &route.route.meta;
    if let Some(cors) = &rule.cors {
        ctx.cors_origin = policy::allowed_origin(cors, req.headers);
        // A preflight from an allowed origin is answered with the policy's headers; one from
        // another origin without any (the browser then refuses), unless the policy forwards it.
        let answered = ctx.cors_origin.is_some() || !cors.forward_refused_preflights;
        if answered && policy::is_preflight(req) {
            let (cause, headers) = match ctx.cors_origin.as_deref() {
                Some(origin) => (
                    "preflight answered",
                    policy::preflight_headers(cors, origin, req.headers),
                ),
                None => ("preflight from an origin not allowed", Vec::new()),
            };
            let mut reply = Decision::reply(200, format!("CORS {meta}: {cause}")).for_route(&route);
            reply.headers = headers.into_iter().map(|(n, v)| (n.into(), v)).collect();
            reply.body.clear();
            return Some(reply);
        }
    }
    if let Some(fault) = &rule.fault {
        let (delay, abort) = policy::fault_for(fault);
        if let Some(delay) = delay {
            ctx.delay_injected = true;
            tokio::time::sleep(delay).await;
        }
        if let Some(status) = abort {
            return Some(
                Decision::reply(status, format!("FI {meta}: fault injected")).for_route(&route),
            );
        }
    }
    ctx.tries.deadline = rule
        .timeout_ms
        .map(|ms| ctx.started + std::time::Duration::from_millis(ms));
    let admission = match ctx.tries.remaining() {
        Some(left) => match tokio::time::timeout(left, cluster.state.breaker.admit()).await {
            Ok(admitted) => admitted,
            Err(_) => {
                return Some(
                    Decision::reply(
                        504,
                        format!(
                            "UT {}: timed out waiting for a connection",
                            cluster.cluster.meta
                        ),
                    )
                    .for_route(&route),
                )
            }
        },
        None => cluster.state.breaker.admit().await,
    };
    match admission {
        Ok(admission) => ctx.tries.admission = Some(admission),
        Err(overflow) => {
            return Some(
                Decision::reply(503, format!("UO {}: {overflow}", cluster.cluster.meta))
                    .for_route(&route),
            );
        }
    }
    if let LoadBalancer::ConsistentHash(on) = &cluster.cluster.policy.load_balancer {
        (ctx.hash_key, ctx.set_cookie) = policy::hash_key(on, req);
    }
    let Some((index, endpoint)) = cluster.pick(ctx.hash_key, &[]) else {
        return Some(Decision::reply(503, no_endpoints(cluster)).for_route(&route));
    };
    ctx.tries.start(cluster, index, endpoint.address);
    None
}

/// The endpoint for a retry, after its backoff. Fails with 504 past the deadline.
pub async fn next_try(
    ctx: &mut RequestCtx,
    route: &CompiledRoute,
    cluster: &Arc<CompiledCluster>,
) -> Result<SocketAddr> {
    if let Some(retry) = &route.route.policy.retry {
        let mut pause = backoff(
            retry.backoff_base_ms,
            retry.backoff_max_ms,
            ctx.tries.retries,
        );
        if let Some(left) = ctx.tries.remaining() {
            pause = pause.min(left);
        }
        tokio::time::sleep(pause).await;
    }
    if ctx.tries.remaining() == Some(std::time::Duration::ZERO) {
        return Error::e_explain(
            ErrorType::ReadTimedout,
            "request timeout reached before the retry",
        );
    }
    let tried = ctx.tries.tried.clone();
    let Some((index, endpoint)) = cluster.pick(ctx.hash_key, &tried) else {
        return Error::e_explain(ErrorType::HTTPStatus(503), "no endpoint left to retry on");
    };
    ctx.tries.start(cluster, index, endpoint.address);
    Ok(endpoint.address)
}

/// Books a retry after `failure` if the route's policy and the cluster's budget allow it,
/// ending the failed try. `truncated`: the request body is no longer held whole, so it cannot
/// be sent again.
pub fn retry_after(ctx: &mut RequestCtx, failure: Failure, truncated: bool) -> bool {
    let (Some(route), Some(cluster)) = (ctx.route.clone(), ctx.cluster.clone()) else {
        return false;
    };
    let booked = ctx
        .tries
        .book_retry(&route.route.policy, &cluster, failure, truncated);
    if booked {
        ctx.tries.finish(&cluster, Some(outcome_of(failure)));
    }
    booked
}

pub fn finish_try(ctx: &mut RequestCtx, outcome: Option<Outcome>) {
    if let Some(cluster) = ctx.cluster.clone() {
        ctx.tries.finish(&cluster, outcome);
    }
}

/// What a failed try tells outlier detection.
pub fn outcome_of(failure: Failure) -> Outcome {
    match failure {
        Failure::Status(code) => Outcome::Status(code),
        Failure::Timeout => Outcome::Status(504),
        Failure::Connect | Failure::Reset | Failure::RefusedStream => Outcome::ConnectFailure,
    }
}
