//! One try against one endpoint: send the request head (and body) with one vectored write,
//! read the response head, then copy the response through by its framing without parsing the
//! body.

use bytes::Buf;
use ferry_model::Filter;
use pingora_core::{Error, ErrorType};
use std::net::SocketAddr;
use std::time::Duration;

use super::body::{copy_body, copy_exact, read_some, within, write_all_vectored, ReadError};
use super::exchange::{send_timeout, try_timeout};
use super::pool::{self, Upstream};
use super::response::{parse_response, Framing, ResponseHead};
use super::{write, Conn, Http1Proxy, Next};
use crate::proxy::mesh_peer::Security;
use crate::proxy::tries::Failure;
use crate::proxy::{admit, policy, RequestCtx};
use crate::rewrite::{apply_header_mods, EditHeaders};
use crate::upstream::outlier::Outcome as EndpointOutcome;

/// Room read into for a response head (a large head grows the buffer; bodies read more).
const HEAD_READ: usize = 4 * 1024;
/// Istio's default connectTimeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The request body: the part already in the read buffer (after the head) and what is still
/// to come from the client.
#[derive(Default)]
pub struct Body {
    pub in_buffer: usize,
    pub rest: u64,
    /// Too large to be held for a retry.
    pub truncated: bool,
}

pub enum Relayed {
    Done(Outcome),
    /// A retriable status; the retry is booked.
    Retry,
    /// A status the route replaces with a custom error page; the upstream's answer is
    /// dropped unread (with its connection).
    ErrorPage(u16),
}

pub struct TryFailure {
    pub failure: Failure,
    pub error: Box<Error>,
}

/// A response relayed to the client.
pub struct Outcome {
    pub code: u16,
    pub grpc_status: Option<u16>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub downstream_gone: bool,
    pub next: Next,
    pub body_in_buffer: usize,
}

fn fail(failure: Failure, etype: ErrorType, context: &'static str) -> TryFailure {
    TryFailure {
        failure,
        error: Error::explain(etype, context).into_up(),
    }
}

pub async fn try_endpoint(
    proxy: &Http1Proxy,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    address: SocketAddr,
    body: &Body,
) -> Result<Relayed, TryFailure> {
    let cluster = ctx.cluster.clone();
    if cluster.is_none() && ctx.inbound.is_none() {
        return Err(fail(
            Failure::Connect,
            ErrorType::InternalError,
            "no cluster",
        ));
    }
    // A sidecar's app (no cluster) is reached in plain text with the defaults.
    let policy = cluster.as_ref().map(|c| &c.cluster.policy);
    let idle_timeout = policy.and_then(|p| p.idle_timeout_ms.map(Duration::from_millis));
    let limit = policy.and_then(|p| p.limits.max_requests_per_connection);
    let mtls = cluster
        .as_ref()
        .and_then(|c| ctx.tries.current_endpoint(c))
        .and_then(|e| e.mtls.clone());
    let security = match &cluster {
        Some(cluster) => Security::of(cluster.tls.as_ref(), mtls.as_deref()),
        None => Security::Plain,
    };
    let key = pool::Key {
        address,
        security: security.pool_class(),
    };
    let mut upstream = match pool::take(key, idle_timeout) {
        Some(upstream) => upstream,
        None => dial(proxy, key, security, policy).await?,
    };
    let resendable = body.rest == 0;
    let response = loop {
        let close_upstream = limit.is_some_and(|limit| upstream.uses >= limit);
        match exchange_head(conn, ctx, &mut upstream, body, close_upstream).await {
            Ok(response) => break (response, close_upstream),
            // A pooled connection the peer closed before answering: nothing was processed,
            // so the request goes again on a fresh connection (not counted as a retry).
            Err(Stale) if upstream.reused && resendable => {
                upstream = dial(proxy, key, security, policy).await?;
            }
            Err(Stale) => {
                return Err(fail(
                    Failure::Reset,
                    ErrorType::ConnectionClosed,
                    "upstream closed the connection",
                ))
            }
            Err(Failed(failure)) => return Err(failure),
        }
    };
    let (response, close_upstream) = response;
    if admit::retry_after(ctx, Failure::Status(response.status), body.truncated) {
        return Ok(Relayed::Retry);
    }
    admit::finish_try(ctx, Some(EndpointOutcome::Status(response.status)));
    if crate::proxy::error_pages::intercepts(ctx.route.as_deref(), response.status) {
        return Ok(Relayed::ErrorPage(response.status));
    }
    Ok(Relayed::Done(
        relay_response(conn, ctx, upstream, response, body, close_upstream).await,
    ))
}

async fn dial(
    proxy: &Http1Proxy,
    key: pool::Key,
    security: Security<'_>,
    policy: Option<&ferry_model::ClusterPolicy>,
) -> Result<Upstream, TryFailure> {
    let connect_failure = |error: Box<Error>| TryFailure {
        failure: Failure::Connect,
        error,
    };
    let mut peer = crate::proxy::mesh_peer::peer(&proxy.mesh, key.address, security, false)
        .map_err(connect_failure)?;
    let connect_timeout_ms = policy.and_then(|p| p.connect_timeout_ms);
    peer.options.connection_timeout =
        Some(connect_timeout_ms.map_or(CONNECT_TIMEOUT, Duration::from_millis));
    peer.options.tcp_keepalive = policy
        .and_then(|p| p.tcp_keepalive.as_ref())
        .map(crate::upstream::keepalive::socket_keepalive);
    pool::connect(&proxy.connector, &peer, key)
        .await
        .map_err(|error| TryFailure {
            failure: Failure::Connect,
            error: error.into_up(),
        })
}

enum HeadError {
    /// The connection was closed or reset before any response byte.
    Stale,
    Failed(TryFailure),
}
use HeadError::{Failed, Stale};

/// Sends the request and reads the response head (skipping interim 1xx responses).
async fn exchange_head(
    conn: &mut Conn,
    ctx: &RequestCtx,
    upstream: &mut Upstream,
    body: &Body,
    close_upstream: bool,
) -> Result<ResponseHead, HeadError> {
    let ending: &[u8] = if close_upstream {
        b"connection: close\r\n\r\n"
    } else {
        b"\r\n"
    };
    let body_start = conn.head.len;
    let prefix = &conn.buf[body_start..body_start + body.in_buffer];
    let send_limit = send_timeout(ctx);
    let parts = [&conn.out[..], ending, prefix];
    match within(send_limit, write_all_vectored(&mut upstream.io, &parts)).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(Failed(send_timed_out())),
        Err(_) => return Err(Stale),
    }
    if body.rest > 0 {
        copy_exact(&mut conn.io, &mut upstream.io, body.rest, send_limit)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::TimedOut => Failed(send_timed_out()),
                _ => Failed(fail(
                    Failure::Reset,
                    ErrorType::WriteError,
                    "request body not delivered",
                )),
            })?;
    }
    let head_request = conn.head.method.of(&conn.buf) == b"HEAD";
    let timeout = try_timeout(ctx);
    conn.upstream_buf.clear();
    loop {
        match parse_response(&conn.upstream_buf, head_request) {
            Ok(Some(head)) if head.status >= 100 && head.status < 200 => {
                conn.upstream_buf.advance(head.len); // interim response: not relayed
                continue;
            }
            Ok(Some(head)) => return Ok(head),
            Ok(None) => {}
            Err(_) => {
                return Err(Failed(fail(
                    Failure::Reset,
                    ErrorType::InvalidHTTPHeader,
                    "invalid response head",
                )))
            }
        }
        let nothing_yet = conn.upstream_buf.is_empty();
        match read_some(&mut upstream.io, &mut conn.upstream_buf, HEAD_READ, timeout).await {
            Ok(0) | Err(ReadError::Io) if nothing_yet => return Err(Stale),
            Ok(0) | Err(ReadError::Io) => {
                return Err(Failed(fail(
                    Failure::Reset,
                    ErrorType::ConnectionClosed,
                    "upstream closed mid-head",
                )))
            }
            Err(ReadError::Timeout) => {
                return Err(Failed(fail(
                    Failure::Timeout,
                    ErrorType::ReadTimedout,
                    "upstream response timed out",
                )))
            }
            Ok(_) => {}
        }
    }
}

fn send_timed_out() -> TryFailure {
    fail(
        Failure::Timeout,
        ErrorType::WriteTimedout,
        "upstream did not take the request in time",
    )
}

/// Writes the response head and copies the body; keeps the upstream connection when the
/// exchange ended cleanly.
async fn relay_response(
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    mut upstream: Upstream,
    response: ResponseHead,
    body: &Body,
    close_upstream: bool,
) -> Outcome {
    // An HTTP/1.0 client knows no chunked coding: it gets the body decoded, ended by the close.
    let dechunk = conn.head.minor_version == 0 && response.framing == Framing::Chunked;
    let close_downstream = !conn.head.keep_alive
        || response.framing == Framing::UntilClose
        || dechunk
        || conn.draining();
    response_edits(conn, ctx, &response);
    if dechunk {
        conn.edits.remove("transfer-encoding");
    }
    conn.out.clear();
    let upstream_bytes = &conn.upstream_buf[..response.len];
    write::write_status_line(
        &mut conn.out,
        response.status,
        Some(response.reason.of(upstream_bytes)),
    );
    write::write_headers(
        &mut conn.out,
        upstream_bytes,
        &response.headers,
        &conn.edits,
        response.connection_lists_names,
    );
    write::connection_header(&mut conn.out, close_downstream, conn.head.minor_version);
    conn.out.extend_from_slice(b"\r\n");
    conn.upstream_buf.advance(response.len);
    let timeout = try_timeout(ctx);
    let copied = copy_body(conn, &mut upstream, &response.framing, timeout, dechunk).await;
    let reusable = copied.complete && !copied.extra && !response.close && !close_upstream;
    if reusable {
        pool::give_back(upstream);
    }
    let downstream_gone = copied.downstream_failed;
    Outcome {
        code: response.status,
        grpc_status: response.grpc_status,
        bytes_received: body.in_buffer as u64 + body.rest,
        bytes_sent: copied.bytes,
        downstream_gone,
        next: if close_downstream || !copied.complete || downstream_gone {
            Next::Close
        } else {
            Next::KeepAlive
        },
        body_in_buffer: body.in_buffer,
    }
}

/// Response header filters, CORS and the hash cookie, as Pingora's `response_filter` adds them.
fn response_edits(conn: &mut Conn, ctx: &RequestCtx, response: &ResponseHead) {
    conn.edits.clear();
    if response.framing == Framing::Chunked && response.has_length {
        conn.edits.remove("content-length");
    }
    let Some(route) = &ctx.route else {
        return;
    };
    for filter in route.filters_for(ctx.backend) {
        if let Filter::ResponseHeaders(mods) = filter {
            apply_header_mods(&mut conn.edits, mods);
        }
    }
    if let (Some(cors), Some(origin)) = (&route.route.policy.cors, &ctx.cors_origin) {
        policy::add_response_headers(cors, origin, &mut conn.edits);
    }
    if let Some(cookie) = &ctx.set_cookie {
        conn.edits.add("set-cookie", cookie);
    }
}
