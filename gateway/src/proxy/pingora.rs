//! Pingora's `ProxyHttp` loop: thin hooks over the compiled snapshot and the shared decision
//! code. It serves HTTP/2 and every HTTP/1 request Ferry's own loop (`http1`) hands over.

use async_trait::async_trait;
use bytes::Bytes;
use ferry_model::{Filter, UpstreamProtocol};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::Duration;

use super::body_limit;
use super::decide::{self, Decision, Reply};
use super::facts::RequestFacts;
use super::failure::{failure_cause, failure_status};
use super::mirror::{MirrorClient, MAX_MIRROR_BODY};
use super::pingora_request::{
    client_ip, failure_of, normalize_to_origin_form, retry_buffer_truncated, set_forwarded_headers,
    set_path,
};
use super::tries::Failure;
use super::{admit, observe, policy, Entry, RequestCtx};
use crate::compiled::CompiledCluster;
use crate::disclosure::{self, Disclosure};
use crate::limits::ClientAddress;
use crate::mesh_connect::MeshClients;
use crate::metrics::Metrics;
use crate::rewrite::{apply_header_mods, rewrite_path};
use crate::store::SnapshotStore;
use crate::telemetry::Telemetry;
use crate::upstream::outlier::Outcome;

/// Istio's default connectTimeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a reply sent before the request's body was read waits out the rest of it.
const LINGER_TIME: Duration = Duration::from_secs(2);

pub struct FerryProxy {
    store: Arc<SnapshotStore>,
    metrics: Arc<Metrics>,
    telemetry: Arc<Telemetry>,
    mirrors: MirrorClient,
    /// Set for a sidecar: the local port inbound connections are redirected to. Its
    /// connections arrive redirected by iptables, so the listener that applies is the one
    /// for the port the app dialled (the original destination), not the local one.
    inbound_port: Option<u16>,
    /// Mutual TLS to meshed endpoints.
    mesh: Arc<MeshClients>,
    /// `--max-request-body`, if set.
    body_limit: Option<u64>,
    /// Who is told the full cause of a reply the proxy writes itself.
    disclosure: Disclosure,
    /// Which X-Forwarded-For addresses are believed.
    client_address: ClientAddress,
}

impl FerryProxy {
    pub fn new(
        store: Arc<SnapshotStore>,
        metrics: Arc<Metrics>,
        telemetry: Arc<Telemetry>,
        inbound_port: Option<u16>,
        mesh: Arc<MeshClients>,
        options: &super::http1::Http1Options,
    ) -> Self {
        FerryProxy {
            store,
            metrics,
            telemetry,
            mirrors: MirrorClient::default(),
            inbound_port,
            mesh,
            body_limit: options.limits.body_limit(),
            disclosure: options.disclosure.clone(),
            client_address: options.limits.client_address,
        }
    }

    /// Writes a reply of the proxy's own, with the cause this client may see; the access log
    /// keeps the full cause.
    async fn reply(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        reply: &Reply,
    ) -> Result<bool> {
        let full = self.disclosure.tells_full_cause(&disclosure::Client {
            ip: client_ip(session),
            mesh_peer: ctx.peer_identity.is_some()
                || crate::downstream_io::peer_identity_str(ssl_of(session)).is_some(),
            headers: &session.req_header().headers,
        });
        if !full {
            ctx.local_cause = Some(reply.cause.clone());
        }
        reply.send(session, !full).await?;
        // A reply before the request's body was read: read and drop what the client still
        // sends (bounded), so closing does not reset the connection under the reply.
        if !session.as_downstream_mut().is_body_done() {
            let drain = session.as_downstream_mut().drain_request_body();
            let _ = tokio::time::timeout(LINGER_TIME, drain).await;
        }
        Ok(true)
    }

    /// 413 for a declared body over the limit; true when answered.
    async fn refuse_oversized(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let Some(limit) = self.body_limit else {
            return Ok(false);
        };
        let declared = session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH);
        if !body_limit::declared_over(declared.map(|v| v.as_bytes()), limit) {
            return Ok(false);
        }
        self.metrics.request_body_too_large.inc();
        let reply = Decision::reply(413, body_limit::cause(limit));
        self.reply(session, ctx, &reply).await
    }

    /// AuthorizationPolicy on a sidecar's inbound request, with the mTLS peer's identity.
    /// Returns the header changes RequestAuthentication asks for, or the refusal.
    fn authorize_inbound(
        &self,
        session: &Session,
        ctx: &RequestCtx,
    ) -> std::result::Result<Vec<super::jwt::HeaderEdit>, decide::Reply> {
        // Before the first snapshot nothing says which policies apply: refused, not waved on.
        let Some(snapshot) = self.store.load() else {
            return Err(Decision::reply(503, "NR no configuration applied yet"));
        };
        let facts = RequestFacts::of(session.req_header(), client_ip(session), ssl_of(session));
        let peer = super::authz::Peer {
            identity: ctx.peer_identity.as_deref(),
            destination_ip: ctx.inbound.map(|a| a.ip()),
            port: ctx.listener_port,
            sni: None,
            client_address: self.client_address,
        };
        super::authz::check(&snapshot, &facts, &peer)
    }

    /// The listener port and, for captured connections, the dialled IP (matched as a host
    /// when the Host header names none of the listener's virtual hosts) or, inbound, the app.
    fn entry_of(&self, session: &Session) -> Entry {
        let downstream = session.as_downstream();
        let local_port = downstream
            .server_addr()
            .and_then(|a| a.as_inet())
            .map_or(0, |a| a.port());
        let original = self
            .inbound_port
            .is_some()
            .then(|| {
                let digest = downstream.digest()?.socket_digest.as_ref()?;
                digest.original_dst()?.as_inet().copied()
            })
            .flatten();
        Entry::of(local_port, original, self.inbound_port)
    }
}

#[async_trait]
impl ProxyHttp for FerryProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    /// No downstream modules. Pingora's default registers a disabled response-compression
    /// module that is still built and called for every request; Ferry offers no compression.
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.metrics.active_requests.inc();
        ctx.counted_active = true;
        observe::begin(session, ctx, &self.telemetry);
        let Entry {
            port,
            dialled_ip,
            inbound,
        } = self.entry_of(session);
        ctx.listener_port = port;
        if self.refuse_oversized(session, ctx).await? {
            return Ok(true);
        }
        if inbound.is_some() {
            ctx.inbound = inbound;
            ctx.peer_identity = crate::downstream_io::peer_identity(ssl_of(session));
            if ctx.peer_identity.is_none() {
                // Only a mesh peer's x-forwarded-client-cert is passed on to the app.
                session
                    .req_header_mut()
                    .remove_header("x-forwarded-client-cert");
            }
            match self.authorize_inbound(session, ctx) {
                Ok(edits) => super::jwt::apply(&edits, session.req_header_mut()),
                Err(refused) => return self.reply(session, ctx, &refused).await,
            }
            return Ok(false); // to the app, whatever the request
        }
        // A client that proved a mesh identity (an ISTIO_MUTUAL gateway port): its SPIFFE ID
        // reaches the access log and Istio's source labels.
        ctx.peer_identity = crate::downstream_io::peer_identity(ssl_of(session));
        let Some(snapshot) = self.store.load() else {
            let reply = Decision::reply(503, "NR no configuration applied yet");
            return self.reply(session, ctx, &reply).await;
        };
        ctx.snapshot = Some(snapshot.clone());
        let client_ip = client_ip(session);
        let facts = RequestFacts::of(session.req_header(), client_ip, ssl_of(session));
        let decision = decide::decide(&snapshot, &facts, port, dialled_ip, self.client_address);
        match decision {
            Decision::Reply(reply) => {
                ctx.route = reply.route.clone();
                self.reply(session, ctx, &reply).await
            }
            Decision::Forward(mut forward) => {
                if let Some(reply) =
                    super::ext_auth::authorize(&snapshot, &mut forward, &facts).await
                {
                    ctx.route = reply.route.clone();
                    return self.reply(session, ctx, &reply).await;
                }
                let edits = std::mem::take(&mut forward.auth_edits);
                super::jwt::apply(&edits, session.req_header_mut());
                ctx.mirror = decide::mirror_for(&snapshot, &forward, session.req_header());
                ctx.route = Some(forward.route.clone());
                ctx.backend = Some(forward.backend);
                let facts = RequestFacts::of(session.req_header(), client_ip, ssl_of(session));
                match admit::admit(&facts, ctx, forward).await {
                    Some(reply) => self.reply(session, ctx, &reply).await,
                    None => Ok(false),
                }
            }
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let route_limit = ctx
            .route
            .as_ref()
            .and_then(|r| r.route.policy.max_request_body_bytes);
        let limit = match (self.body_limit, route_limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let (Some(limit), Some(chunk)) = (limit, body.as_ref()) {
            if let Err(e) = body_limit::count(ctx, chunk.len(), limit) {
                self.metrics.request_body_too_large.inc();
                return Err(e);
            }
        }
        if ctx.mirror.is_none() {
            return Ok(());
        }
        if let Some(chunk) = body {
            if ctx.mirror_body.len() + chunk.len() > MAX_MIRROR_BODY {
                ctx.mirror = None; // too large to copy: this request is not mirrored
                return Ok(());
            }
            ctx.mirror_body.extend_from_slice(chunk);
        }
        if end_of_stream {
            self.flush_mirror(ctx);
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        if let Some(app) = ctx.inbound {
            let mut peer = HttpPeer::new(app, false, String::new());
            peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
            return Ok(Box::new(peer));
        }
        let (Some(route), Some(cluster)) = (ctx.route.clone(), ctx.cluster.clone()) else {
            return Error::e_explain(ErrorType::InternalError, "no upstream chosen for request");
        };
        let address = match ctx.tries.current {
            Some((_, address)) => address,
            None => admit::next_try(ctx, &route, &cluster).await?,
        };
        let h2 = cluster.cluster.protocol == UpstreamProtocol::H2c;
        let mtls = ctx
            .tries
            .current_endpoint(&cluster)
            .and_then(|e| e.mtls.clone());
        let security = crate::proxy::mesh_peer::Security::of(cluster.tls.as_ref(), mtls.as_deref());
        let mut peer = crate::proxy::mesh_peer::peer(&self.mesh, address, security, h2)?;
        if h2 {
            peer.options.set_http_version(2, 2);
        }
        let policy = &cluster.cluster.policy;
        peer.options.connection_timeout = Some(
            policy
                .connect_timeout_ms
                .map_or(CONNECT_TIMEOUT, Duration::from_millis),
        );
        peer.options.idle_timeout = policy.idle_timeout_ms.map(Duration::from_millis);
        peer.options.read_timeout = ctx.tries.read_timeout(&route.route.policy, Some(policy));
        peer.options.write_timeout = policy.send_timeout_ms.map(Duration::from_millis);
        peer.options.tcp_keepalive = policy
            .tcp_keepalive
            .as_ref()
            .map(crate::upstream::keepalive::socket_keepalive);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        normalize_to_origin_form(upstream)?;
        let Some(route) = ctx.route.clone() else {
            return Ok(());
        };
        for filter in route.filters_for(ctx.backend) {
            match filter {
                Filter::RequestHeaders(mods) => apply_header_mods(upstream, mods),
                Filter::Rewrite(rewrite) => {
                    if let Some(path) = &rewrite.path {
                        let new_path =
                            rewrite_path(path, &route.route.matcher.path, upstream.uri.path());
                        set_path(upstream, &new_path)?;
                    }
                    if let Some(host) = &rewrite.host {
                        upstream.insert_header("host", &**host)?;
                    }
                }
                Filter::ResponseHeaders(_) | Filter::Mirror(_) => {}
            }
        }
        if ctx.close_upstream {
            // Last request maxRequestsPerConnection allows: the upstream closes after answering.
            upstream.insert_header("connection", "close")?;
        }
        observe::propagate(upstream, ctx);
        set_forwarded_headers(session, upstream)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // `Connection: close` ends an HTTP/1 connection after this request; HTTP/2 forbids the
        // header (RFC 9113 8.2.2), so the limit applies to HTTP/1 upstreams only.
        let http1 = |cluster: &CompiledCluster| cluster.cluster.protocol == UpstreamProtocol::Http1;
        if let Some(cluster) = ctx.cluster.as_ref().filter(|c| http1(c)) {
            if let Some(limit) = cluster.cluster.policy.limits.max_requests_per_connection {
                ctx.close_upstream = cluster.state.last_use_of_connection(fd, reused, limit);
            }
        }
        Ok(())
    }

    /// Sees the upstream's status first: feeds outlier detection, and turns a retriable status
    /// into a retriable error so Pingora tries again (the request body is buffered for that).
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = response.status.as_u16();
        match Failure::Status(status) {
            failure if admit::retry_after(ctx, failure, retry_buffer_truncated(session)) => {
                let mut error =
                    Error::explain(ErrorType::HTTPStatus(status), "retriable upstream status");
                error.set_retry(true);
                Err(error)
            }
            _ => {
                admit::finish_try(ctx, Some(Outcome::Status(status)));
                if super::error_pages::intercepts(ctx.route.as_deref(), status) {
                    // Not relayed: `fail_to_proxy` answers with the error page instead.
                    ctx.error_page = Some(status);
                    let why = "replaced by a custom error page";
                    return Err(Error::explain(ErrorType::HTTPStatus(status), why));
                }
                Ok(())
            }
        }
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(route) = ctx.route.clone() else {
            return Ok(());
        };
        for filter in route.filters_for(ctx.backend) {
            if let Filter::ResponseHeaders(mods) = filter {
                apply_header_mods(response, mods);
            }
        }
        if let (Some(cors), Some(origin)) = (&route.route.policy.cors, &ctx.cors_origin) {
            policy::add_response_headers(cors, origin, response);
        }
        if let Some(cookie) = ctx.set_cookie.take() {
            response.append_header("set-cookie", cookie)?;
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(cluster) = &ctx.cluster {
            self.metrics
                .upstream_connect_failures
                .with_label_values(&[&*cluster.cluster.name])
                .inc();
        }
        let retry = admit::retry_after(ctx, Failure::Connect, retry_buffer_truncated(session));
        if !retry {
            admit::finish_try(ctx, Some(Outcome::ConnectFailure));
        }
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        mut e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        if matches!(e.etype(), ErrorType::HTTPStatus(_)) && (e.retry() || ctx.error_page.is_some())
        {
            return e; // our own status error (a retry, or an error page), already booked
        }
        let failure = failure_of(&e);
        // A stale pooled connection is retried on a fresh one, as Pingora does by default.
        let stale_reuse = client_reused
            && matches!(e.retry, pingora_core::RetryType::ReusedOnly)
            && !session.as_ref().retry_buffer_truncated();
        let retry =
            stale_reuse || admit::retry_after(ctx, failure, retry_buffer_truncated(session));
        if !retry {
            let outcome = if failure == Failure::Timeout {
                Outcome::Status(504)
            } else {
                Outcome::ConnectFailure
            };
            admit::finish_try(ctx, Some(outcome));
            ctx.tries.last_failure = Some(failure);
        }
        e.set_retry(retry);
        e
    }

    /// Errors while proxying: answer with the status Pingora would use (504 for timeouts),
    /// plus a cause naming the cluster and endpoint (unless a response is already under way).
    /// Pingora closes the client connection after a failed proxy attempt whatever we return,
    /// so the reply says `Connection: close`: a client that pooled the connection must not
    /// race the close with its next request.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        error: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if let Some(status) = ctx.error_page.take() {
            return self.error_page(session, ctx, status).await;
        }
        let code = failure_status(error);
        if code > 0 && session.as_downstream().response_written().is_none() {
            session.set_keepalive(None);
            let reply = Decision::reply(code, failure_cause(error, ctx));
            if let Err(e) = self.reply(session, ctx, &reply).await {
                tracing::debug!("could not send error response: {e}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        self.flush_mirror(ctx);
        observe::finish(session, error, ctx, &self.metrics, &self.telemetry);
    }
}

impl FerryProxy {
    /// The route's custom error page for an upstream answer of `status`.
    async fn error_page(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        status: u16,
    ) -> FailToProxy {
        let (Some(snapshot), Some(route)) = (ctx.snapshot.clone(), ctx.route.clone()) else {
            return FailToProxy {
                error_code: 500,
                can_reuse_downstream: false,
            };
        };
        let reply = {
            let req = session.req_header();
            let uri = req.uri.path_and_query().map_or("/", |p| p.as_str());
            let original = super::error_pages::Original {
                host: super::facts::authority_of(req),
                uri,
                accept: req.headers.get("accept").and_then(|v| v.to_str().ok()),
                request_id: ctx.request_id.as_deref(),
                client_ip: client_ip(session),
                head: req.method == http::Method::HEAD,
            };
            let cluster = ctx.cluster.as_deref();
            super::error_pages::page(&snapshot, &route, cluster, status, &original).await
        };
        session.set_keepalive(None);
        if let Err(e) = self.reply(session, ctx, &reply).await {
            tracing::debug!("could not send the error page: {e}");
        }
        FailToProxy {
            error_code: reply.status,
            can_reuse_downstream: false,
        }
    }

    fn flush_mirror(&self, ctx: &mut RequestCtx) {
        if let Some(pending) = ctx.mirror.take() {
            let body = std::mem::take(&mut ctx.mirror_body).freeze();
            self.mirrors.send(pending, body);
        }
    }
}

/// The downstream TLS session, when the listener terminated TLS.
fn ssl_of(session: &Session) -> Option<&pingora_core::protocols::tls::SslDigest> {
    let digest = session.as_downstream().digest()?;
    digest.ssl_digest.as_deref()
}
