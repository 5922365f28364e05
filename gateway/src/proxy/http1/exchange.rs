//! One request on the fast path: the same decision code as Pingora's path (`decide`,
//! `admit`, retries and their booking), then the tries against the chosen endpoints.

use bytes::Buf;
use ferry_model::{Filter, UpstreamProtocol};
use pingora_core::{Error, ErrorType};
use std::time::Duration;

use super::body;
use super::fallback::Reason;
use super::head::BodyFraming;
use super::relay::{self, Relayed, TryFailure};
use super::upstream_head::new_request_id;
use super::write::{self, LocalReply};
use super::{Conn, Http1Proxy, Next};
use crate::disclosure::{self, Disclosure};
use crate::header_lookup;
use crate::proxy::admit;
use crate::proxy::decide::{self, Decision, Forward, Reply};
use crate::proxy::facts::RequestFacts;
use crate::proxy::observe::{self, Exchange};
use crate::proxy::tries::Failure;
use crate::proxy::{failure_cause, failure_status, RequestCtx};
use crate::telemetry::context as trace_context;
use crate::telemetry::RequestSpan;

/// Request bodies up to this size are read whole before the first try, so a retry can send
/// them again (Pingora's retry buffer holds as much).
const RETRY_BODY_LIMIT: u64 = 64 * 1024;

/// What the request amounted to, for the reports.
struct Served {
    code: u16,
    cause: Option<String>,
    grpc_status: Option<u16>,
    bytes_received: u64,
    bytes_sent: u64,
    downstream_gone: bool,
    next: Next,
    /// Bytes of the read buffer this request used (head and body); the rest is the next
    /// pipelined request.
    consumed: usize,
}

impl Http1Proxy {
    pub(super) async fn serve_request(&self, conn: &mut Conn) -> Next {
        if let Some(reason) = self.head_fallback(conn) {
            return Next::Fallback(reason);
        }
        if let Some(app) = conn.entry.inbound {
            return self.serve_inbound(conn, app).await;
        }
        let Some(snapshot) = self.store.load() else {
            let reply = Decision::reply(503, "NR no configuration applied yet");
            return self.answer(conn, RequestCtx::default(), reply).await;
        };
        let lookup = conn.lookup();
        let facts = conn.facts(&lookup);
        if let Some(reply) = self.oversized_body(conn) {
            let ctx = self.request_ctx(conn, &facts);
            return self.answer(conn, ctx, reply).await;
        }
        let (port, dialled_ip) = (conn.entry.port, conn.entry.dialled_ip);
        let client_address = self.options.limits.client_address;
        let forward = match decide::decide(&snapshot, &facts, port, dialled_ip, client_address) {
            Decision::Reply(reply) => {
                let mut ctx = self.request_ctx(conn, &facts);
                ctx.route = reply.route.clone();
                return self.answer(conn, ctx, reply).await;
            }
            Decision::Forward(forward) => forward,
        };
        let mut forward = forward;
        if let Some(reason) = forward_fallback(&forward) {
            return Next::Fallback(reason);
        }
        if let Some(reply) =
            crate::proxy::ext_auth::authorize(&snapshot, &mut forward, &facts).await
        {
            let mut ctx = self.request_ctx(conn, &facts);
            ctx.route = reply.route.clone();
            return self.answer(conn, ctx, reply).await;
        }
        let mut ctx = self.request_ctx(conn, &facts);
        ctx.snapshot = Some(snapshot);
        ctx.auth_edits = std::mem::take(&mut forward.auth_edits);
        ctx.route = Some(forward.route.clone());
        ctx.backend = Some(forward.backend);
        if let Some(reply) = admit::admit(&facts, &mut ctx, forward).await {
            return self.answer(conn, ctx, reply).await;
        }
        self.send_upstream(conn, ctx).await
    }

    /// Writes the upstream head, tries the endpoints, relays the answer and reports it.
    pub(super) async fn send_upstream(&self, conn: &mut Conn, mut ctx: RequestCtx) -> Next {
        self.build_upstream_head(conn, &ctx);
        let served = self.forward(conn, &mut ctx).await;
        self.finish(conn, &mut ctx, served)
    }

    /// Reports the request and drops it from the read buffer.
    fn finish(&self, conn: &mut Conn, ctx: &mut RequestCtx, served: Served) -> Next {
        report_exchange(self, conn, ctx, &served);
        conn.buf.advance(served.consumed.min(conn.buf.len()));
        served.next
    }

    /// Requests this loop leaves to Pingora, known from the head alone.
    fn head_fallback(&self, conn: &Conn) -> Option<Reason> {
        let head = &conn.head;
        let target = head.target.of(&conn.buf);
        if self.options.force_fallback {
            Some(Reason::Forced)
        } else if head.upgrade {
            Some(Reason::Upgrade)
        } else if head.expect_continue {
            Some(Reason::ExpectContinue)
        } else if head.authority.is_none() && !target.starts_with(b"/") {
            Some(Reason::TargetForm) // `*` and CONNECT's authority form
        } else if head.body == BodyFraming::Chunked {
            Some(Reason::ChunkedBody)
        } else {
            None
        }
    }

    /// A Content-Length over `--max-request-body`: 413 before anything is forwarded
    /// (chunked bodies are Pingora's path, which counts them as they arrive).
    fn oversized_body(&self, conn: &Conn) -> Option<Reply> {
        let limit = self.options.limits.body_limit()?;
        let BodyFraming::Length(length) = conn.head.body else {
            return None;
        };
        (length > limit).then(|| {
            self.metrics.request_body_too_large.inc();
            Decision::reply(413, crate::proxy::body_limit::cause(limit))
        })
    }

    pub(super) fn request_ctx(&self, conn: &Conn, facts: &RequestFacts<'_>) -> RequestCtx {
        let mut ctx = RequestCtx::default();
        self.metrics.active_requests.inc();
        ctx.counted_active = true;
        ctx.listener_port = conn.entry.port;
        // A client that proved a mesh identity (an ISTIO_MUTUAL gateway port): its SPIFFE ID
        // reaches the access log and Istio's source labels; inbound, AuthorizationPolicy too.
        ctx.peer_identity = crate::downstream_io::peer_identity(conn.ssl.as_deref());
        ctx.request_id = Some(
            match header_lookup::first_text(facts.headers, "x-request-id") {
                Some(id) if !id.is_empty() => id.to_string(),
                _ => new_request_id(),
            },
        );
        // With tracing on, this proxy's span joins the caller's trace and becomes the
        // upstream's parent; without, the caller's context only names the trace in the access
        // log and its headers pass through untouched (as `observe::begin` on Pingora's path).
        let (parent, formats) = trace_context::extract(facts.headers);
        ctx.trace_formats = formats;
        ctx.tracing = self.telemetry.tracing.is_some();
        ctx.span = match &self.telemetry.tracing {
            Some(tracer) => {
                Some(tracer.start_span(facts.method.to_string(), parent.as_ref(), ctx.started_at))
            }
            None => parent.map(RequestSpan::untraced),
        };
        ctx
    }

    /// Writes a reply of the proxy's own and reports it.
    pub(super) async fn answer(&self, conn: &mut Conn, mut ctx: RequestCtx, reply: Reply) -> Next {
        let close = !conn.head.keep_alive || conn.head.body != BodyFraming::None || conn.draining();
        conn.unread_body = conn.head.body != BodyFraming::None;
        let served = send_reply(conn, reply, close, &self.options.disclosure).await;
        self.finish(conn, &mut ctx, served)
    }

    /// Tries endpoints until one answers (or retries are spent), then relays the answer.
    async fn forward(&self, conn: &mut Conn, ctx: &mut RequestCtx) -> Served {
        let body = match self.take_body(conn).await {
            Ok(body) => body,
            Err(served) => return served,
        };
        loop {
            let Some((_, address)) = ctx.tries.current else {
                let error = Error::explain(ErrorType::InternalError, "no endpoint");
                return self.failed(conn, ctx, &error).await;
            };
            match relay::try_endpoint(self, conn, ctx, address, &body).await {
                Ok(Relayed::Done(outcome)) => return served(conn, outcome),
                Ok(Relayed::ErrorPage(status)) => return self.error_page(conn, ctx, status).await,
                Ok(Relayed::Retry) => {} // booked on the status
                Err(TryFailure { failure, error }) => {
                    if failure == Failure::Connect {
                        self.count_connect_failure(ctx);
                    }
                    if !admit::retry_after(ctx, failure, body.truncated) {
                        admit::finish_try(ctx, Some(admit::outcome_of(failure)));
                        return self.failed(conn, ctx, &error).await;
                    }
                }
            }
            let (Some(route), Some(cluster)) = (ctx.route.clone(), ctx.cluster.clone()) else {
                let error = Error::explain(ErrorType::InternalError, "no route");
                return self.failed(conn, ctx, &error).await;
            };
            if let Err(error) = admit::next_try(ctx, &route, &cluster).await {
                return self.failed(conn, ctx, &error).await;
            }
        }
    }

    fn count_connect_failure(&self, ctx: &RequestCtx) {
        if let Some(cluster) = &ctx.cluster {
            self.metrics
                .upstream_connect_failures
                .with_label_values(&[&*cluster.cluster.name])
                .inc();
        }
    }

    /// The request body, read whole when small enough to be sent again on a retry.
    async fn take_body(&self, conn: &mut Conn) -> Result<relay::Body, Served> {
        let BodyFraming::Length(length) = conn.head.body else {
            return Ok(relay::Body::default());
        };
        let in_buffer = (conn.buf.len() - conn.head.len) as u64;
        if length <= RETRY_BODY_LIMIT && in_buffer < length {
            let want = conn.head.len + length as usize;
            let read = body::read_at_least(&mut conn.io, &mut conn.buf, want);
            if !matches!(
                tokio::time::timeout(self.options.limits.timeouts.idle, read).await,
                Ok(Ok(()))
            ) {
                return Err(client_gone());
            }
        }
        let in_buffer = ((conn.buf.len() - conn.head.len) as u64).min(length);
        Ok(relay::Body {
            in_buffer: in_buffer as usize,
            rest: length - in_buffer,
            truncated: length > RETRY_BODY_LIMIT,
        })
    }

    /// The route's custom error page for an upstream answer of `status`; the connection
    /// closes after it when the request had a body (its bytes were sent upstream).
    async fn error_page(&self, conn: &mut Conn, ctx: &mut RequestCtx, status: u16) -> Served {
        let (Some(snapshot), Some(route)) = (ctx.snapshot.clone(), ctx.route.clone()) else {
            let error = Error::explain(ErrorType::InternalError, "no route");
            return self.failed(conn, ctx, &error).await;
        };
        let reply = {
            let lookup = conn.lookup();
            let facts = conn.facts(&lookup);
            let original = crate::proxy::error_pages::Original {
                host: facts.authority,
                uri: std::str::from_utf8(conn.head.target.of(&conn.buf)).unwrap_or("/"),
                accept: header_lookup::first_text(facts.headers, "accept"),
                request_id: ctx.request_id.as_deref(),
                client_ip: facts.client_ip,
                head: facts.method == "HEAD",
            };
            let cluster = ctx.cluster.as_deref();
            crate::proxy::error_pages::page(&snapshot, &route, cluster, status, &original).await
        };
        let close = !conn.head.keep_alive || conn.head.body != BodyFraming::None || conn.draining();
        send_reply(conn, reply, close, &self.options.disclosure).await
    }

    /// The reply for a request whose tries failed; the connection closes after it, as on
    /// Pingora's path.
    async fn failed(&self, conn: &mut Conn, ctx: &mut RequestCtx, error: &Error) -> Served {
        let reply = Decision::reply(failure_status(error), failure_cause(error, ctx));
        send_reply(conn, reply, true, &self.options.disclosure).await
    }
}

/// Writes a reply of the proxy's own (a HEAD request gets its head only), with the full
/// cause for clients `disclosure` trusts and the code alone for others; the access log gets
/// the full cause either way.
async fn send_reply(conn: &mut Conn, reply: Reply, close: bool, disclosure: &Disclosure) -> Served {
    let head_only = conn.head.method.of(&conn.buf) == b"HEAD";
    let full = {
        let lookup = conn.lookup();
        disclosure.tells_full_cause(&disclosure::Client {
            ip: conn.client.map(|c| c.ip()),
            mesh_peer: crate::downstream_io::peer_identity_str(conn.ssl.as_deref()).is_some(),
            headers: &lookup,
        })
    };
    let (cause, body) = match full {
        true => (reply.cause.as_str(), reply.body.as_str()),
        false => disclosure::public_reply(&reply.cause, &reply.body),
    };
    let body_len = body.len() as u64;
    conn.out.clear();
    write::write_local_reply(
        &mut conn.out,
        &LocalReply {
            status: reply.status,
            cause,
            body,
            headers: &reply.headers,
            head_only,
            close,
            minor_version: conn.head.minor_version,
        },
    );
    let sent = body::send_all(&mut conn.io, &conn.out).await;
    let downstream_gone = sent.is_err();
    Served {
        code: reply.status,
        bytes_sent: if head_only { 0 } else { body_len },
        cause: Some(reply.cause),
        grpc_status: None,
        bytes_received: 0,
        downstream_gone,
        next: if close || downstream_gone {
            Next::Close
        } else {
            Next::KeepAlive
        },
        consumed: conn.head.len,
    }
}

fn served(conn: &Conn, served: relay::Outcome) -> Served {
    Served {
        code: served.code,
        cause: None,
        grpc_status: served.grpc_status,
        bytes_received: served.bytes_received,
        bytes_sent: served.bytes_sent,
        downstream_gone: served.downstream_gone,
        next: served.next,
        consumed: conn.head.len + served.body_in_buffer,
    }
}

fn report_exchange(proxy: &Http1Proxy, conn: &Conn, ctx: &mut RequestCtx, served: &Served) {
    let head_bytes = &conn.buf[..conn.head.len];
    let lookup = conn.head.lookup(head_bytes);
    let exchange = Exchange {
        method: conn.head.method(head_bytes),
        authority: conn.head.host(head_bytes),
        path_and_query: conn.head.target(head_bytes),
        protocol: if conn.head.minor_version == 0 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        },
        headers: &lookup,
        code: served.code,
        cause: served.cause.as_deref(),
        grpc_status: served.grpc_status,
        downstream_gone: served.downstream_gone,
        bytes_received: served.bytes_received,
        bytes_sent: served.bytes_sent,
        client: conn.client,
        local: conn.local,
    };
    observe::report(&exchange, ctx, &proxy.metrics, &proxy.telemetry);
}

/// Routes whose features only Pingora's path has.
fn forward_fallback(forward: &Forward) -> Option<Reason> {
    if forward.cluster.cluster.protocol == UpstreamProtocol::H2c {
        return Some(Reason::H2Upstream);
    }
    let mirrors = forward
        .route
        .filters_for(Some(forward.backend))
        .any(|f| matches!(f, Filter::Mirror(_)));
    mirrors.then_some(Reason::Mirror)
}

fn client_gone() -> Served {
    Served {
        code: 0,
        cause: None,
        grpc_status: None,
        bytes_received: 0,
        bytes_sent: 0,
        downstream_gone: true,
        next: Next::Close,
        consumed: 0,
    }
}

/// Per-read limit: the route's per-try timeout cut to the request's deadline, or the
/// cluster's read timeout when shorter.
pub(super) fn try_timeout(ctx: &RequestCtx) -> Option<Duration> {
    let cluster = ctx.cluster.as_ref().map(|c| &c.cluster.policy);
    ctx.route
        .as_ref()
        .and_then(|route| ctx.tries.read_timeout(&route.route.policy, cluster))
}

/// The longest wait for the upstream to take the next bytes of the request.
pub(super) fn send_timeout(ctx: &RequestCtx) -> Option<Duration> {
    let cluster = ctx.cluster.as_ref()?;
    cluster
        .cluster
        .policy
        .send_timeout_ms
        .map(Duration::from_millis)
}
