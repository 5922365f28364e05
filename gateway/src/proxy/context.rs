//! Per-request state carried between Pingora's phases.

use bytes::BytesMut;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::tries::Tries;
use crate::compiled::{CompiledCluster, CompiledRoute, CompiledSnapshot};
use crate::proxy::mirror::PendingMirror;
use crate::telemetry::context::Formats;
use crate::telemetry::RequestSpan;

pub struct RequestCtx {
    pub started: Instant,
    /// Wall-clock start, for logs and spans.
    pub started_at: SystemTime,
    /// Counted in `ferry_active_requests` (request_filter ran).
    pub counted_active: bool,
    pub request_id: Option<String>,
    /// This request's span (or, without tracing, the caller's context for the logs).
    pub span: Option<RequestSpan>,
    pub trace_formats: Formats,
    /// Tracing is on: upstream requests carry this proxy's span.
    pub tracing: bool,
    /// A fault delay was applied (response flag DI).
    pub delay_injected: bool,
    /// The snapshot version pinned for this request's whole life.
    pub snapshot: Option<Arc<CompiledSnapshot>>,
    pub listener_port: u16,
    /// Sidecar inbound: the app's address (127.0.0.1 and the port the client dialled). No
    /// routing: the request goes to the app, and metrics report as its destination.
    pub inbound: Option<std::net::SocketAddr>,
    /// The downstream peer's SPIFFE ID, when it came over mesh mTLS.
    pub peer_identity: Option<Arc<str>>,
    pub route: Option<Arc<CompiledRoute>>,
    /// Index of the chosen backend in the route's Forward list.
    pub backend: Option<usize>,
    pub cluster: Option<Arc<CompiledCluster>>,
    pub tries: Tries,
    /// Consistent-hash key of the request, when the cluster hashes.
    pub hash_key: Option<u64>,
    /// Set-Cookie to add to the response (consistent hashing on a cookie with a TTL).
    pub set_cookie: Option<String>,
    /// Ask the upstream to close the connection after this request (maxRequestsPerConnection).
    pub close_upstream: bool,
    /// The request's Origin, when the route's CORS policy allows it.
    pub cors_origin: Option<String>,
    pub mirror: Option<PendingMirror>,
    pub mirror_body: BytesMut,
    /// Request body bytes received so far (for `--max-request-body`).
    pub body_bytes: u64,
    /// The full cause of a reply the proxy wrote with the code alone (for the access log).
    pub local_cause: Option<String>,
    /// Header changes RequestAuthentication asks for, made on the upstream request.
    pub auth_edits: Vec<super::jwt::HeaderEdit>,
    /// The request's place under its route's concurrency limit, given back when it ends.
    pub in_flight: Option<crate::in_flight::Permit>,
    /// The upstream answered a status the route replaces with a custom error page.
    pub error_page: Option<u16>,
}

impl Default for RequestCtx {
    fn default() -> Self {
        RequestCtx {
            started: Instant::now(),
            started_at: SystemTime::now(),
            counted_active: false,
            request_id: None,
            span: None,
            trace_formats: Formats::default(),
            tracing: false,
            delay_injected: false,
            snapshot: None,
            listener_port: 0,
            inbound: None,
            peer_identity: None,
            route: None,
            backend: None,
            cluster: None,
            tries: Tries::default(),
            hash_key: None,
            set_cookie: None,
            close_upstream: false,
            cors_origin: None,
            mirror: None,
            mirror_body: BytesMut::new(),
            body_bytes: 0,
            local_cause: None,
            auth_edits: Vec::new(),
            in_flight: None,
            error_page: None,
        }
    }
}

impl Drop for RequestCtx {
    /// Whatever way the request ended, give back endpoint and retry slots.
    fn drop(&mut self) {
        if let Some(cluster) = self.cluster.take() {
            self.tries.release(&cluster);
        }
    }
}
