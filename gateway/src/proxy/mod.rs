//! The Pingora `ProxyHttp` implementation: thin hooks over the compiled snapshot and the
//! pure functions in `compiled`, `rewrite` and `decide`.

mod admit;
mod context;
mod decide;
mod facts;
pub mod http1;
pub mod mirror;
mod observe;
mod policy;
mod request_series;
mod respond;
mod tries;

use async_trait::async_trait;
use bytes::Bytes;
use ferry_model::{Filter, UpstreamProtocol};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::Duration;

use crate::header_names::X_FORWARDED_FOR;
use crate::metrics::Metrics;
use crate::rewrite::{apply_header_mods, rewrite_path};
use crate::store::SnapshotStore;
use crate::telemetry::Telemetry;
use crate::upstream::outlier::Outcome;
pub use context::RequestCtx;
use decide::Decision;
use facts::RequestFacts;
use mirror::{MirrorClient, MAX_MIRROR_BODY};
pub use respond::CAUSE_HEADER;
use tries::Failure;

/// Istio's default connectTimeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct FerryProxy {
    store: Arc<SnapshotStore>,
    metrics: Arc<Metrics>,
    telemetry: Arc<Telemetry>,
    mirrors: MirrorClient,
    /// Set for a sidecar: the local port inbound connections are redirected to. Its
    /// connections arrive redirected by iptables, so the listener that applies is the one
    /// for the port the app dialled (the original destination), not the local one.
    inbound_port: Option<u16>,
}

/// Where a request entered the proxy.
struct Entry {
    /// The listener (route table) that applies.
    port: u16,
    /// Captured outbound: the IP the app dialled.
    dialled_ip: Option<std::net::IpAddr>,
    /// Captured inbound: the app's address.
    inbound: Option<std::net::SocketAddr>,
}

impl FerryProxy {
    pub fn new(
        store: Arc<SnapshotStore>,
        metrics: Arc<Metrics>,
        telemetry: Arc<Telemetry>,
        inbound_port: Option<u16>,
    ) -> Self {
        FerryProxy {
            store,
            metrics,
            telemetry,
            mirrors: MirrorClient::default(),
            inbound_port,
        }
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

impl Entry {
    /// `original`: the original destination of a captured connection; `inbound_port`: a
    /// sidecar's inbound capture port.
    fn of(
        local_port: u16,
        original: Option<std::net::SocketAddr>,
        inbound_port: Option<u16>,
    ) -> Entry {
        match original {
            Some(original) if Some(local_port) == inbound_port => Entry {
                port: original.port(),
                dialled_ip: None,
                inbound: Some(std::net::SocketAddr::from((
                    [127, 0, 0, 1],
                    original.port(),
                ))),
            },
            Some(original) => Entry {
                port: original.port(),
                dialled_ip: Some(original.ip()),
                inbound: None,
            },
            None => Entry {
                port: local_port,
                dialled_ip: None,
                inbound: None,
            },
        }
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
        if inbound.is_some() {
            ctx.inbound = inbound;
            return Ok(false); // to the app, whatever the request
        }
        let Some(snapshot) = self.store.load() else {
            let reply = Decision::reply(503, "NR no configuration applied yet");
            return reply.send(session).await.map(|_| true);
        };
        ctx.snapshot = Some(snapshot.clone());
        let client_ip = client_ip(session);
        let facts = RequestFacts::of(session.req_header(), client_ip);
        let decision = decide::decide(&snapshot, &facts, port, dialled_ip);
        match decision {
            Decision::Reply(reply) => {
                ctx.route = reply.route.clone();
                reply.send(session).await.map(|_| true)
            }
            Decision::Forward(forward) => {
                ctx.mirror = decide::mirror_for(&snapshot, &forward, session.req_header());
                ctx.route = Some(forward.route.clone());
                ctx.backend = Some(forward.backend);
                let facts = RequestFacts::of(session.req_header(), client_ip);
                match admit::admit(&facts, ctx, forward).await {
                    Some(reply) => reply.send(session).await.map(|_| true),
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
        let mut peer = HttpPeer::new(address, false, String::new());
        if cluster.cluster.protocol == UpstreamProtocol::H2c {
            peer.options.set_http_version(2, 2);
        }
        let policy = &cluster.cluster.policy;
        peer.options.connection_timeout = Some(
            policy
                .connect_timeout_ms
                .map_or(CONNECT_TIMEOUT, Duration::from_millis),
        );
        peer.options.idle_timeout = policy.idle_timeout_ms.map(Duration::from_millis);
        peer.options.read_timeout = ctx.tries.try_timeout(&route.route.policy);
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
        if let Some(cluster) = &ctx.cluster {
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
        if matches!(e.etype(), ErrorType::HTTPStatus(_)) && e.retry() {
            return e; // our own retriable-status error, already booked
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
        let code = failure_status(error);
        if code > 0 && session.as_downstream().response_written().is_none() {
            session.set_keepalive(None);
            let reply = Decision::reply(code, failure_cause(error, ctx));
            if let Err(e) = reply.send(session).await {
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
    fn flush_mirror(&self, ctx: &mut RequestCtx) {
        if let Some(pending) = ctx.mirror.take() {
            let body = std::mem::take(&mut ctx.mirror_body).freeze();
            self.mirrors.send(pending, body);
        }
    }
}

/// The status for a proxying error, as Envoy answers: 503 when the upstream could not be
/// reached or dropped the request (connect failure, reset), 502 when it answered with
/// something that is not valid HTTP, 504 on timeouts, 400 for bad downstream requests, 0
/// when the client is gone.
fn failure_status(error: &Error) -> u16 {
    use pingora_core::ErrorSource;
    match (error.etype(), error.esource()) {
        (ErrorType::HTTPStatus(code), _) => *code,
        (ErrorType::ReadTimedout | ErrorType::WriteTimedout, _) => 504,
        (
            ErrorType::InvalidHTTPHeader
            | ErrorType::H1Error
            | ErrorType::InvalidH2
            | ErrorType::H2Downgrade,
            ErrorSource::Upstream,
        ) => 502,
        (_, ErrorSource::Upstream) => 503,
        (
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
            ErrorSource::Downstream,
        ) => 0,
        (_, ErrorSource::Downstream) => 400,
        _ => 500,
    }
}

/// Envoy-style flag (UF connect failure, UT timeout, UC upstream connection error; URX when
/// retries were spent) and what failed.
fn failure_cause(error: &Error, ctx: &RequestCtx) -> String {
    let timeout = matches!(
        error.etype(),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
    );
    let connect = matches!(
        error.etype(),
        ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
            | ErrorType::BindError
    );
    let flag = match (ctx.tries.retries > 0, timeout, connect) {
        (true, _, _) => "URX",
        (_, true, _) => "UT",
        (_, _, true) => "UF",
        _ => "UC",
    };
    let cluster = ctx
        .cluster
        .as_ref()
        .map_or_else(|| "-".to_string(), |c| c.cluster.meta.to_string());
    let endpoint = ctx
        .tries
        .last_address
        .map_or_else(|| "-".to_string(), |e| e.to_string());
    format!(
        "{flag} {cluster} endpoint {endpoint}: {}",
        error.etype().as_str()
    )
}

/// Upstream requests carry an origin-form URI and a Host header; Pingora derives HTTP/2's
/// `:authority` from Host when the upstream speaks h2.
fn normalize_to_origin_form(upstream: &mut RequestHeader) -> Result<()> {
    if let Some(authority) = upstream.uri.authority().map(|a| a.as_str().to_string()) {
        if upstream.headers.get(http::header::HOST).is_none() {
            upstream.insert_header("host", authority)?;
        }
        let path = upstream
            .uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string());
        set_uri(upstream, &path)?;
    }
    Ok(())
}

fn set_path(upstream: &mut RequestHeader, path: &str) -> Result<()> {
    let uri = match upstream.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    set_uri(upstream, &uri)
}

fn set_uri(upstream: &mut RequestHeader, uri: &str) -> Result<()> {
    let parsed = uri.parse::<http::Uri>().map_err(|e| {
        Error::explain(
            ErrorType::InvalidHTTPHeader,
            format!("rewritten URI {uri:?}: {e}"),
        )
    })?;
    upstream.set_uri(parsed);
    Ok(())
}

/// X-Forwarded-For gets the client address appended; X-Forwarded-Proto names the scheme the
/// client used (https when the listener terminated TLS).
fn set_forwarded_headers(session: &Session, upstream: &mut RequestHeader) -> Result<()> {
    if let Some(client) = session
        .as_downstream()
        .client_addr()
        .and_then(|a| a.as_inet())
    {
        let ip = ip_text(client.ip());
        let value = match upstream
            .headers
            .get(&X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
        {
            Some(existing) => format!("{existing}, {ip}"),
            None => ip,
        };
        upstream.insert_header(X_FORWARDED_FOR.as_str(), value)?;
    }
    let over_tls = session
        .as_downstream()
        .digest()
        .is_some_and(|d| d.ssl_digest.is_some());
    let scheme = if over_tls { "https" } else { "http" };
    upstream.insert_header("x-forwarded-proto", scheme)?;
    Ok(())
}

/// An address as X-Forwarded-For text. IPv4's `Display` runs the `fmt` machinery (about
/// 1,300 instructions, on every proxied request); its four octets written directly cost a
/// tenth of that.
fn ip_text(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (index, octet) in v4.octets().into_iter().enumerate() {
        if index > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .as_downstream()
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// Pingora keeps the request body for retries up to a limit; past it a retry cannot resend it.
fn retry_buffer_truncated(session: &Session) -> bool {
    session.as_ref().retry_buffer_truncated()
}

/// Classifies an error raised while a request was in flight upstream.
fn failure_of(error: &Error) -> Failure {
    match error.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => Failure::Timeout,
        ErrorType::H2Error if is_refused_stream(error) => Failure::RefusedStream,
        _ => Failure::Reset,
    }
}

/// Pingora keeps the h2 library error as the cause of an `H2Error`.
fn is_refused_stream(error: &Error) -> bool {
    error
        .cause
        .as_ref()
        .and_then(|cause| cause.downcast_ref::<h2::Error>())
        .is_some_and(|h2| h2.is_remote() && h2.reason() == Some(h2::Reason::REFUSED_STREAM))
}

#[cfg(test)]
mod tests {
    use super::ip_text;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn ip_text_writes_what_display_writes() {
        for octet in 0..=255u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(octet, 0, 10, octet.wrapping_mul(7)));
            assert_eq!(ip_text(ip), ip.to_string());
        }
        let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
        assert_eq!(ip_text(v6), "fd00::1");
    }
}
