//! Ferry's own HTTP/1.x request loop, on pingora-core's public API.
//!
//! Pingora's generic proxy path costs about twice nginx's CPU per request (a fresh session, a
//! task pair joined by channels, header maps cloned and regrown, ~96 allocations: see
//! bench/RESULTS.md). This loop serves the common request itself: buffers reused per
//! connection, the head parsed into offsets, the same `decide` / `admit` / telemetry as the
//! Pingora path, the upstream request written with one write over a per-worker connection
//! pool. Whatever it does not implement is handed to Pingora's proxy for that request, with
//! the bytes already read (`fallback::Reason` lists why, counted in
//! `ferry_http1_fallback_total`); the connection comes back here afterwards.

mod body;
mod buffers;
mod chunked;
mod exchange;
mod fallback;
#[cfg(test)]
mod fuzz;
mod head;
mod inbound;
mod pool;
mod relay;
mod response;
mod span;
mod upstream_head;
mod write;

use bytes::BytesMut;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Stream, ALPN};
use pingora_proxy::HttpProxy;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

pub use fallback::Reason as FallbackReason;
pub use head::HeadLimits;

use super::facts::RequestFacts;
use super::request_series;
use super::{Entry, FerryProxy};
use crate::admission::Slot;
use crate::downstream_io::{self, DownstreamIo, PlainTcp};
use crate::metrics::Metrics;
use crate::store::SnapshotStore;
use crate::telemetry::Telemetry;
use head::{Refusal, RequestHead};
use write::{HeaderEdits, LocalReply};

/// The HTTP/2 cleartext preface's first bytes: such connections go to Pingora's HTTP/2.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Clone, Debug, Default)]
pub struct Http1Options {
    /// Head sizes, timeouts, connection and HTTP/2 limits (crate::limits).
    pub limits: crate::limits::Limits,
    /// Who is told the full cause of a reply the proxy writes itself (crate::disclosure).
    pub disclosure: crate::disclosure::Disclosure,
    /// Every request goes to the Pingora path (the differential tests compare the two).
    pub force_fallback: bool,
    /// Requests served on one downstream connection before it is closed (nginx's
    /// `keepalive_requests`); None: no limit.
    pub max_requests_per_connection: Option<u32>,
}

/// One worker's HTTP/1 server: Ferry's loop first, Pingora's proxy for the rest.
pub struct Http1Proxy {
    pub(super) store: Arc<SnapshotStore>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) telemetry: Arc<Telemetry>,
    pub(super) inbound_port: Option<u16>,
    pub(super) connector: TransportConnector,
    pub(super) options: Http1Options,
    /// Mutual TLS to meshed endpoints.
    pub(super) mesh: Arc<crate::mesh_connect::MeshClients>,
    pingora: Arc<HttpProxy<FerryProxy>>,
}

/// A downstream connection and the buffers it reuses from request to request.
pub(super) struct Conn {
    pub io: Stream,
    /// Bytes read from the client: the current head (and body prefix), then anything
    /// pipelined after it.
    pub buf: BytesMut,
    pub head: RequestHead,
    /// A head being written (upstream request, downstream response).
    pub out: Vec<u8>,
    pub edits: HeaderEdits,
    /// Bytes read from the upstream.
    pub upstream_buf: BytesMut,
    pub client: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    pub entry: Entry,
    pub tls: bool,
    /// The TLS session (client certificate), when the listener terminated TLS.
    pub ssl: Option<std::sync::Arc<pingora_core::protocols::tls::SslDigest>>,
    /// Turns true when the process drains: the current response says `Connection: close`.
    pub shutdown: watch::Receiver<bool>,
    /// Requests served on this connection, the current one included.
    pub served: u32,
    pub max_requests: Option<u32>,
    /// The connection's place among those the proxy holds (crate::admission).
    pub slot: Arc<Slot>,
    /// The proxy answered before reading the request's body: the close lingers (see
    /// [`lingering_close`]).
    pub unread_body: bool,
}

impl Conn {
    /// The current request's headers, for lookups by name.
    pub fn lookup(&self) -> head::HeadLookup<'_> {
        self.head.lookup(&self.buf[..self.head.len])
    }

    /// What `decide` and the policies read of the current request.
    pub fn facts<'a>(&'a self, lookup: &'a head::HeadLookup<'a>) -> RequestFacts<'a> {
        let bytes = &self.buf[..self.head.len];
        let (path, query) = self.head.path_and_query(bytes);
        RequestFacts {
            authority: self.head.host(bytes),
            path,
            query,
            method: self.head.method(bytes),
            headers: lookup,
            client_ip: self.client.map(|c| c.ip()),
            tls: self.ssl.as_deref(),
        }
    }

    /// The current response is the connection's last: the process drains or sheds load, or
    /// the connection's request limit is reached.
    pub fn draining(&self) -> bool {
        *self.shutdown.borrow()
            || self.max_requests.is_some_and(|max| self.served >= max)
            || self.slot.shedding()
    }
}

/// What became of a request on the connection.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Read the next request.
    KeepAlive,
    Close,
    /// Pingora serves this request (the head is still in the buffer).
    Fallback(fallback::Reason),
}

impl Http1Proxy {
    pub fn new(
        pingora: Arc<HttpProxy<FerryProxy>>,
        store: Arc<SnapshotStore>,
        metrics: Arc<Metrics>,
        telemetry: Arc<Telemetry>,
        inbound_port: Option<u16>,
        options: Http1Options,
        mesh: Arc<crate::mesh_connect::MeshClients>,
    ) -> Self {
        // Every reason shows in the metrics from the start, at zero.
        for reason in FallbackReason::ALL {
            metrics
                .http1_fallbacks
                .with_label_values(&[reason.as_str()]);
        }
        Http1Proxy {
            store,
            metrics,
            telemetry,
            inbound_port,
            connector: TransportConnector::new(None),
            options,
            mesh,
            pingora,
        }
    }

    /// Pingora's proxy of this worker (HTTP/2, and what this loop hands over).
    pub fn pingora(&self) -> &Arc<HttpProxy<FerryProxy>> {
        &self.pingora
    }

    /// Serves a downstream connection until it closes. `slot` is its place among the
    /// connections the proxy holds: idle between requests (reapable under pressure), busy
    /// while one is served.
    pub async fn serve(&self, io: Stream, shutdown: &watch::Receiver<bool>, slot: &Arc<Slot>) {
        if matches!(io.selected_alpn_proto(), Some(ALPN::H2)) {
            // An HTTP/2 connection's streams are Pingora's: it is never reaped (its idle
            // timeout and stream limits bound it instead).
            if slot.begin() {
                let io = downstream_io::watch_http2(io, &self.metrics.http2_abuse);
                self.pingora.process_new(io, shutdown).await;
            }
            return;
        }
        let mut conn = self.connection(io, shutdown, slot);
        loop {
            let next = match self.read_head(&mut conn, shutdown).await {
                HeadRead::Ready if !slot.begin() => return close(&mut conn.io).await,
                HeadRead::Ready => {
                    conn.served += 1;
                    buffers::lend(&mut conn);
                    // Boxed: a future is as large as its largest await point, and an idle
                    // keep-alive connection should hold only the read wait below, not the
                    // whole exchange's state (16 KiB per connection unboxed).
                    let next = Box::pin(self.serve_request(&mut conn)).await;
                    buffers::give_back(&mut conn);
                    next
                }
                HeadRead::Closed => return,
                HeadRead::TimedOut => return Box::pin(self.request_timeout(&mut conn)).await,
                // Boxed (rare paths): an idle connection's task should not keep room for them.
                HeadRead::Http2 if !slot.begin() => return,
                HeadRead::Http2 => return Box::pin(self.serve_http2(conn, shutdown)).await,
                HeadRead::Refused(refusal) => {
                    return Box::pin(self.refuse(&mut conn, refusal)).await
                }
            };
            slot.end();
            match next {
                Next::KeepAlive if !conn.draining() => continue,
                Next::KeepAlive | Next::Close if conn.unread_body => {
                    return Box::pin(lingering_close(&mut conn)).await
                }
                Next::KeepAlive | Next::Close => return close(&mut conn.io).await,
                Next::Fallback(reason) => {
                    self.metrics
                        .http1_fallbacks
                        .with_label_values(&[reason.as_str()])
                        .inc();
                    if !slot.begin() {
                        return close(&mut conn.io).await;
                    }
                    let back = Box::pin(self.hand_over(conn, shutdown)).await;
                    slot.end();
                    match back {
                        Some(back) => conn = back,
                        None => return,
                    }
                }
            }
        }
    }

    /// A cleartext connection that opened with the HTTP/2 preface: Pingora's HTTP/2 server
    /// reads it again from the start.
    async fn serve_http2(&self, conn: Conn, shutdown: &watch::Receiver<bool>) {
        match downstream_io::unread(conn.io, &conn.buf) {
            Some(io) => {
                let io = downstream_io::watch_http2(io, &self.metrics.http2_abuse);
                self.pingora.process_new(io, shutdown).await;
            }
            None => tracing::debug!("HTTP/2 preface on a connection that cannot replay it"),
        }
    }

    fn connection(&self, io: Stream, shutdown: &watch::Receiver<bool>, slot: &Arc<Slot>) -> Conn {
        // A gateway's plain socket: its addresses read once, the digest neither kept nor boxed.
        let (fresh, kept);
        let digest = match io.as_any().downcast_ref::<DownstreamIo<PlainTcp>>() {
            Some(plain) if !plain.has_digest() => {
                fresh = plain.fresh_socket_digest();
                Some(&fresh)
            }
            _ => {
                kept = io.get_socket_digest();
                kept.as_deref()
            }
        };
        let inet = |a: Option<&pingora_core::protocols::l4::socket::SocketAddr>| {
            a.and_then(|a| a.as_inet()).copied()
        };
        let client = digest.and_then(|d| inet(d.peer_addr()));
        let local = digest.and_then(|d| inet(d.local_addr()));
        let original = self
            .inbound_port
            .and(digest)
            .and_then(|d| inet(d.original_dst()));
        let entry = Entry::of(local.map_or(0, |a| a.port()), original, self.inbound_port);
        let ssl = io.get_ssl_digest();
        Conn {
            tls: ssl.is_some(),
            ssl,
            io,
            buf: BytesMut::new(), // lent when bytes arrive (buffers::read_lent)
            head: RequestHead::default(),
            out: Vec::new(),
            edits: HeaderEdits::default(),
            upstream_buf: BytesMut::new(),
            client,
            local,
            entry,
            shutdown: shutdown.clone(),
            served: 0,
            max_requests: self.options.max_requests_per_connection,
            slot: slot.clone(),
            unread_body: false,
        }
    }

    /// Reads until a whole head is in the buffer. A new connection has the request-header
    /// timeout for its first head; a keep-alive connection waits up to the idle timeout for
    /// a next request's first byte, then has the request-header timeout for the rest.
    async fn read_head(&self, conn: &mut Conn, shutdown: &watch::Receiver<bool>) -> HeadRead {
        let timeouts = &self.options.limits.timeouts;
        let mut deadline = None;
        loop {
            let preface = conn.buf.starts_with(&H2_PREFACE[..4]) && !conn.tls;
            match preface.then(|| preface_state(&conn.buf)) {
                Some(Some(true)) => return HeadRead::Http2,
                Some(None) => {} // too few bytes to tell: read more
                // A request (whose method may be PRI: the parser answers it).
                _ if !conn.buf.is_empty() => {
                    buffers::lend_header_list(&mut conn.head.headers);
                    match conn.head.parse(&conn.buf, &self.options.limits.http1) {
                        Ok(true) => return HeadRead::Ready,
                        Ok(false) => {}
                        Err(refusal) => return HeadRead::Refused(refusal),
                    }
                }
                _ if *shutdown.borrow() => return HeadRead::Closed,
                _ => {}
            }
            let idle = conn.buf.is_empty() && conn.served > 0;
            let until = *deadline.get_or_insert_with(|| {
                Instant::now()
                    + if idle {
                        timeouts.idle
                    } else {
                        timeouts.request_header
                    }
            });
            match read_more(conn, until).await {
                Read::More if idle => deadline = None, // the head's own deadline starts now
                Read::More => {}
                Read::Closed => return HeadRead::Closed,
                Read::TimedOut if conn.buf.is_empty() && conn.served > 0 => {
                    self.count_timeout("idle");
                    return HeadRead::Closed;
                }
                Read::TimedOut => return HeadRead::TimedOut,
            }
        }
    }

    /// Head sizes, timeouts, connection and HTTP/2 limits this server applies.
    pub fn limits(&self) -> &crate::limits::Limits {
        &self.options.limits
    }

    /// A connection closed under `--proxy-protocol` for its header (`reason`).
    pub fn count_proxy_protocol_refused(&self, reason: &str) {
        let refused = &self.metrics.proxy_protocol_refused;
        refused.with_label_values(&[reason]).inc();
    }

    /// Counts a client connection closed for taking too long in `phase`.
    pub fn count_timeout(&self, phase: &str) {
        self.metrics
            .downstream_timeouts
            .with_label_values(&[phase])
            .inc();
    }

    /// A client that did not send its whole request head in time: 408 when it sent part of
    /// one (RFC 9110 section 15.5.9), a silent close when it sent nothing.
    async fn request_timeout(&self, conn: &mut Conn) {
        self.count_timeout("request_header");
        if conn.buf.is_empty() {
            return close(&mut conn.io).await;
        }
        let refusal = Refusal {
            status: 408,
            reason: "request head not received in time",
        };
        self.refuse(conn, refusal).await
    }

    /// Answers a head that cannot be served (400, 414, 431, 505) and closes.
    async fn refuse(&self, conn: &mut Conn, refusal: Refusal) {
        tracing::debug!(
            status = refusal.status,
            "request refused: {}",
            refusal.reason
        );
        let cause = format!("DPE {}", refusal.reason);
        let reply = LocalReply {
            status: refusal.status,
            cause: &cause,
            body: &cause,
            headers: &[],
            head_only: false,
            close: true,
            minor_version: 1,
        };
        conn.out.clear();
        write::write_local_reply(&mut conn.out, &reply);
        let _ = body::send_all(&mut conn.io, &conn.out).await;
        request_series::series(&self.metrics, conn.entry.port, None, None, refusal.status)
            .requests
            .inc();
        close(&mut conn.io).await;
    }

    /// Pingora serves the request whose head is in the buffer; the connection comes back when
    /// Pingora would have kept it alive.
    async fn hand_over(&self, conn: Conn, shutdown: &watch::Receiver<bool>) -> Option<Conn> {
        let Conn {
            io,
            buf,
            entry,
            slot,
            ..
        } = conn;
        let mut session = ServerSession::new_http1(io);
        session.set_keepalive(Some(self.options.limits.timeouts.idle.as_secs()));
        session.set_pipelined_prefix(buf);
        let reused = self.pingora.process_new_http(session, shutdown).await?;
        let (io, _) = reused.consume();
        let mut back = self.connection(io, shutdown, &slot);
        back.entry = entry;
        Some(back)
    }
}

enum HeadRead {
    Ready,
    Closed,
    /// The request-header timeout passed.
    TimedOut,
    /// The HTTP/2 cleartext preface.
    Http2,
    Refused(Refusal),
}

enum Read {
    More,
    Closed,
    TimedOut,
}

/// Reads what the client sent next, until `deadline`.
async fn read_more(conn: &mut Conn, deadline: Instant) -> Read {
    let read = buffers::read_lent(&mut conn.io, &mut conn.buf);
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(n)) if n > 0 => Read::More,
        Ok(_) => Read::Closed,
        Err(_) => Read::TimedOut,
    }
}

/// Whether the buffer holds the HTTP/2 preface: `None` while too few bytes tell.
fn preface_state(buf: &[u8]) -> Option<bool> {
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] != H2_PREFACE[..n] {
        return Some(false);
    }
    (n == H2_PREFACE.len()).then_some(true)
}

async fn close(io: &mut Stream) {
    let _ = io.shutdown().await;
}

/// How long, and how many bytes, a close waits out of a body the proxy did not read.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 8 << 20;

/// Closes a connection whose client may still be sending the body of a request the proxy
/// already answered (413, 401...): the response is followed by our FIN, and what the client
/// sends meanwhile is read and dropped until it closes too (or for [`LINGER_TIME`] /
/// [`LINGER_BYTES`]). Closing with unread bytes would send a reset, which can destroy the
/// response in the client's receive buffer before it is read (RFC 9112 section 9.6).
async fn lingering_close(conn: &mut Conn) {
    let _ = conn.io.shutdown().await;
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut dropped = 0;
    let mut scratch = vec![0u8; 16 * 1024];
    while dropped < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, conn.io.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => dropped += n,
            _ => return,
        }
    }
}
