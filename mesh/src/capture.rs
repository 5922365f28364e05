//! The sidecar's capture listeners. `ferry sidecar-init` redirects the pod's outbound TCP to
//! the outbound port and its inbound TCP to the inbound port; here each connection is sent on:
//!
//! - outbound to a mesh Service (a ClusterIP the snapshot knows on that port) speaking HTTP:
//!   through the same HTTP engine as the gateway, routed by the dialled port and Host header
//!   (VirtualService routes, DestinationRule policies), to an endpoint;
//! - outbound anywhere else, or not HTTP: copied as opaque TCP to the original destination
//!   (Istio's ALLOW_ANY), or refused with REGISTRY_ONLY;
//! - inbound: to the app at the address the client dialled (the pod IP, never loopback, so an
//!   app port bound to 127.0.0.1 only is not exposed), HTTP through the engine (Istio's
//!   request metrics with reporter=destination), anything else as opaque TCP.
//!
//! The sidecar runs as the uid `sidecar-init` exempts, so its own connections are not
//! captured again.

use pingora_core::protocols::l4::ext::get_original_dest;
use pingora_core::protocols::GetSocketDigest;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

use crate::accept::{self as mesh_accept, Opening};
use ferry_gateway::compiled::CompiledSnapshot;
use ferry_gateway::downstream::{
    authorizes_connection, l4_stream, read_client_hello, relay_outbound, serve_http_on,
    serve_tls_session, OpenConnection, Outbound, Slot,
};
use ferry_gateway::Engine;
use ferry_model::{effective_mtls_mode, MtlsMode};

/// Where captured traffic arrives and what happens to destinations outside the mesh.
#[derive(Clone, Debug)]
pub struct CaptureOptions {
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    /// REGISTRY_ONLY: connections to destinations the mesh does not know are closed.
    pub registry_only: bool,
    /// The pod's namespace and labels: which PeerAuthentications apply to its inbound ports.
    pub namespace: String,
    pub labels: Vec<(String, String)>,
}

/// How long a client may take to send its first bytes before its connection is treated as
/// opaque TCP (a server-first protocol such as MySQL never sends first).
const SNIFF_TIMEOUT: Duration = Duration::from_millis(500);

/// Binds both capture ports and serves them until the process ends.
pub async fn serve(engine: Arc<Engine>, options: CaptureOptions) -> std::io::Result<()> {
    let outbound = ferry_gateway::listeners::listen(options.outbound)?;
    let inbound = ferry_gateway::listeners::listen(options.inbound)?;
    tracing::info!(outbound = %options.outbound, inbound = %options.inbound, "capture listeners bound");
    let registry_only = options.registry_only;
    let workload = Arc::new((options.namespace.clone(), options.labels.clone()));
    tokio::spawn(accept(
        inbound,
        engine.clone(),
        move |engine, connection| inbound_connection(engine, connection, workload.clone()),
    ));
    accept(outbound, engine, move |engine, connection| {
        outbound_connection(engine, connection, registry_only)
    })
    .await;
    Ok(())
}

/// A captured connection, on the worker that serves it.
struct Connection {
    tcp: TcpStream,
    /// Where the client was going (SO_ORIGINAL_DST).
    original: SocketAddr,
    worker: usize,
    /// Its place among the connections the proxy holds (idle ones are reaped under pressure).
    slot: Arc<Slot>,
}

async fn accept<F, Fut>(listener: TcpListener, engine: Arc<Engine>, handle: F)
where
    F: Fn(Arc<Engine>, Connection) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let local = listener.local_addr().ok();
    let port = local.map_or(0, |a| a.port()).to_string();
    let accepted = engine.metrics.connections.with_label_values(&[&port]);
    let open = engine
        .metrics
        .active_connections
        .with_label_values(&[&port]);
    let mut draining = engine.shutdown_watch();
    loop {
        let (tcp, peer) = tokio::select! {
            result = listener.accept() => match result {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = until_draining(&mut draining) => {
                tracing::info!(%port, "draining: no new connections");
                return;
            }
        };
        // A connection made straight to the capture port (not redirected) reports that port
        // as its original destination: forwarding it there would loop.
        let original = get_original_dest(tcp.as_raw_fd()).ok().flatten();
        let local_port = local.map(|l| l.port());
        let Some(original) = original.filter(|o| Some(o.port()) != local_port) else {
            tracing::debug!(%peer, "connection not redirected by sidecar-init: closed");
            continue;
        };
        accepted.inc();
        let Ok(slot) = engine.admission().admit(Some(peer.ip())) else {
            continue; // over the connection limits: closed, counted by reason
        };
        let _ = tcp.set_nodelay(true);
        let open = OpenConnection::count(&open);
        let (handle, connection_engine) = (handle.clone(), engine.clone());
        let task_slot = slot.clone();
        let task = engine.workers().serve(tcp, move |worker, tcp| async move {
            let connection = Connection {
                tcp,
                original,
                worker,
                slot: task_slot,
            };
            handle(connection_engine, connection).await;
            drop(open);
        });
        if let Some(task) = task {
            slot.set_abort(task);
        }
    }
}

async fn outbound_connection(engine: Arc<Engine>, connection: Connection, registry_only: bool) {
    let original = connection.original;
    let Some(snapshot) = engine.store.load() else {
        return unregistered(connection, registry_only, Vec::new()).await;
    };
    if snapshot.serves_host(original.port(), &original.ip().to_string()) {
        return to_a_service(&engine, &snapshot, connection).await;
    }
    // A Sidecar resource's outboundTrafficPolicy overrides the flag.
    let registry_only = snapshot.source.registry_only.unwrap_or(registry_only);
    outside_the_services(&engine, &snapshot, connection, registry_only).await;
}

/// A connection to a Service's ClusterIP: a VirtualService `tcp` route naming the address
/// takes it whole; otherwise HTTP is served by the engine, TLS may be routed by server name
/// (`tls` routes), and anything else goes on to the address dialled.
async fn to_a_service(
    engine: &Engine,
    snapshot: &Arc<CompiledSnapshot>,
    mut connection: Connection,
) {
    let original = connection.original;
    let outbound = snapshot.source.outbound_port(original.port());
    if let Some(route) = outbound.and_then(|o| o.tcp_route_naming(original.ip())) {
        return relay(engine, snapshot, route, connection, None, Vec::new()).await;
    }
    if speaks_http(&connection.tcp).await {
        return serve_http(engine, connection).await;
    }
    let tls_routes = outbound.filter(|o| !o.tls.is_empty());
    if let Some(outbound) = tls_routes {
        if first_bytes(&connection.tcp).await == First::Tls {
            let Some((server_name, hello)) = read_client_hello(engine, &mut connection.tcp).await
            else {
                return;
            };
            return match outbound.tls_route(server_name.as_deref(), original.ip()) {
                Some(route) => relay(engine, snapshot, route, connection, server_name, hello).await,
                None => passthrough(connection, original, &hello).await,
            };
        }
    }
    passthrough(connection, original, &[]).await
}

/// A destination that is no Service's ClusterIP: a ServiceEntry's, matched by address (TCP),
/// server name (TLS) or Host header (HTTP); anything else is unregistered.
async fn outside_the_services(
    engine: &Engine,
    snapshot: &Arc<CompiledSnapshot>,
    mut connection: Connection,
    registry_only: bool,
) {
    let original = connection.original;
    let port = original.port();
    let Some(outbound) = snapshot.source.outbound_port(port) else {
        return unregistered(connection, registry_only, Vec::new()).await;
    };
    if let Some(route) = outbound.tcp_route(original.ip()) {
        return relay(engine, snapshot, route, connection, None, Vec::new()).await;
    }
    // Only a port something could match is sniffed (above): an unknown server-first
    // protocol (a database that speaks first) is not kept waiting for bytes never sent.
    match first_bytes(&connection.tcp).await {
        First::Tls if !outbound.tls.is_empty() => {
            let Some((server_name, hello)) = read_client_hello(engine, &mut connection.tcp).await
            else {
                return;
            };
            match outbound.tls_route(server_name.as_deref(), original.ip()) {
                Some(route) => relay(engine, snapshot, route, connection, server_name, hello).await,
                None => unregistered(connection, registry_only, hello).await,
            }
        }
        First::Http => match request_host(&connection.tcp).await {
            Some(host) if snapshot.serves_host(port, &host) => serve_http(engine, connection).await,
            Some(host) if outbound.passes_http_host(&host) => {
                passthrough(connection, original, &[]).await
            }
            _ if registry_only => refuse_http(connection).await,
            _ => passthrough(connection, original, &[]).await,
        },
        _ => unregistered(connection, registry_only, Vec::new()).await,
    }
}

/// A destination the mesh does not know: passed through (ALLOW_ANY) or closed
/// (REGISTRY_ONLY). `already_read` is what was taken from the client to look at it.
async fn unregistered(connection: Connection, registry_only: bool, already_read: Vec<u8>) {
    let original = connection.original;
    if registry_only {
        tracing::debug!(%original, "REGISTRY_ONLY: destination outside the mesh refused");
        return;
    }
    passthrough(connection, original, &already_read).await;
}

/// REGISTRY_ONLY answers an HTTP client for an unregistered host with 502, as Istio's
/// BlackHoleCluster does, rather than a bare reset.
async fn refuse_http(mut connection: Connection) {
    use tokio::io::AsyncWriteExt;
    tracing::debug!(original = %connection.original, "REGISTRY_ONLY: HTTP host outside the mesh refused");
    let response = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    let _ = connection.tcp.write_all(response).await;
    let _ = connection.tcp.shutdown().await;
}

async fn relay(
    engine: &Engine,
    snapshot: &CompiledSnapshot,
    route: &ferry_model::StreamRoute,
    connection: Connection,
    server_name: Option<String>,
    already_read: Vec<u8>,
) {
    if !connection.slot.begin() {
        return;
    }
    let Ok(client) = connection.tcp.peer_addr() else {
        return;
    };
    let outbound = Outbound {
        tcp: connection.tcp,
        client,
        original: connection.original,
        server_name,
        already_read,
    };
    relay_outbound(engine, connection.worker, snapshot, route, outbound).await;
}

async fn until_draining(draining: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *draining.borrow_and_update() {
            return;
        }
        if draining.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Inbound traffic goes to the app at the pod address the client dialled: HTTP through the
/// engine (metrics with reporter=destination), anything else as TCP. The sidecar's own
/// connection is not captured again (sidecar-init exempts its uid).
///
/// The port's PeerAuthentication mode decides first: mesh mTLS (a ClientHello with Ferry's
/// mesh ALPN names) is terminated unless DISABLE; anything else is refused under STRICT.
async fn inbound_connection(
    engine: Arc<Engine>,
    connection: Connection,
    workload: Arc<(String, Vec<(String, String)>)>,
) {
    let port = connection.original.port();
    let mode = engine.store.load().map_or(MtlsMode::Permissive, |s| {
        let (namespace, labels) = &*workload;
        effective_mtls_mode(&s.source.peer_authentications, namespace, labels, port)
    });
    let opening = mesh_accept::opening(&connection.tcp).await;
    match (opening, mode) {
        (Opening::MeshTls, MtlsMode::Strict | MtlsMode::Permissive) => {
            return serve_mtls(&engine, connection).await;
        }
        (_, MtlsMode::Strict) => {
            tracing::debug!(%port, "STRICT mTLS: a connection without mesh mTLS refused");
            refused(&engine, "plaintext_under_strict");
            return;
        }
        _ => {}
    }
    // A silent client has already had its sniffing time: opaque TCP without waiting again.
    if opening != Opening::Silent && speaks_http(&connection.tcp).await {
        return serve_http(&engine, connection).await;
    }
    // Opaque TCP: AuthorizationPolicy decides on the connection (a denied one is closed).
    let source = connection.tcp.peer_addr().ok();
    if !authorizes_connection(&engine, source, connection.original) {
        tracing::debug!(port, "AuthorizationPolicy: TCP connection denied");
        refused(&engine, "rbac_tcp");
        return;
    }
    let original = connection.original;
    passthrough(connection, original, &[]).await;
}

fn refused(engine: &Engine, reason: &str) {
    engine
        .metrics
        .mtls_refused
        .with_label_values(&[reason])
        .inc();
}

/// Terminates mesh mTLS and serves the HTTP inside to the app; the peer's SPIFFE ID reaches
/// the request's metrics and access log.
async fn serve_mtls(engine: &Engine, connection: Connection) {
    let stream = l4_stream(connection.tcp);
    if let Some(digest) = stream.get_socket_digest() {
        let _ = digest.original_dst.set(Some(connection.original.into()));
    }
    match mesh_accept::accept(&engine.identity, stream).await {
        Ok((session, peer)) => {
            tracing::debug!(%peer, port = connection.original.port(), "mesh mTLS accepted");
            serve_tls_session(engine, session, connection.worker, &connection.slot).await;
        }
        Err(e) => {
            tracing::debug!(port = connection.original.port(), "mesh mTLS refused: {e}");
            refused(engine, "handshake");
        }
    }
}

async fn serve_http(engine: &Engine, connection: Connection) {
    let stream = l4_stream(connection.tcp);
    if let Some(digest) = stream.get_socket_digest() {
        // Known already; the proxy reads it to pick the listener.
        let _ = digest.original_dst.set(Some(connection.original.into()));
    }
    serve_http_on(engine, stream, connection.worker, &connection.slot).await;
}

/// Copies bytes both ways until either side closes. Opaque TCP is never reaped as idle: the
/// proxy cannot tell its silences from a protocol's.
async fn passthrough(connection: Connection, destination: SocketAddr, already_read: &[u8]) {
    use tokio::io::AsyncWriteExt;
    if !connection.slot.begin() {
        return;
    }
    let mut client = connection.tcp;
    match TcpStream::connect(destination).await {
        Ok(mut upstream) => {
            let _ = upstream.set_nodelay(true);
            if upstream.write_all(already_read).await.is_err() {
                return;
            }
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(%destination, "passthrough ended: {e}");
            }
        }
        Err(e) => tracing::debug!(%destination, "passthrough connect failed: {e}"),
    }
}

/// Whether the client's first bytes are an HTTP/1 request line or the HTTP/2 preface.
async fn speaks_http(tcp: &TcpStream) -> bool {
    let mut buf = [0u8; 16];
    let deadline = tokio::time::Instant::now() + SNIFF_TIMEOUT;
    loop {
        let peeked = match tokio::time::timeout_at(deadline, tcp.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return false,
        };
        match classify(&buf[..peeked]) {
            Some(http) => return http,
            // A prefix of a method: wait for more bytes (peek returns at once when data is
            // there, so give the client a moment).
            None if peeked > 0 => tokio::time::sleep(Duration::from_millis(1)).await,
            None => return false, // closed
        }
    }
}

/// What a client's first bytes say.
#[derive(Debug, PartialEq, Eq)]
enum First {
    Tls,
    Http,
    Other,
}

async fn first_bytes(tcp: &TcpStream) -> First {
    let mut byte = [0u8; 1];
    let peeked = tokio::time::timeout(SNIFF_TIMEOUT, tcp.peek(&mut byte)).await;
    match peeked {
        // A TLS handshake record.
        Ok(Ok(1)) if byte[0] == 0x16 => First::Tls,
        Ok(Ok(1)) if speaks_http(tcp).await => First::Http,
        _ => First::Other,
    }
}

/// The Host of the client's first request (lower case, without its port), peeked so the
/// request stays unread; None when the head does not arrive or names no host.
async fn request_host(tcp: &TcpStream) -> Option<String> {
    let mut buf = vec![0u8; MAX_PEEKED_HEAD];
    let deadline = tokio::time::Instant::now() + SNIFF_TIMEOUT;
    loop {
        let peeked = tokio::time::timeout_at(deadline, tcp.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        match host_of_head(&buf[..peeked]) {
            Head::Host(host) => return Some(host),
            Head::Incomplete if peeked > 0 && peeked < buf.len() => {
                tokio::time::sleep(Duration::from_millis(1)).await
            }
            _ => return None,
        }
    }
}

/// Request heads larger than this are not looked into (their host counts as unknown).
const MAX_PEEKED_HEAD: usize = 16 * 1024;

enum Head {
    Host(String),
    Incomplete,
    NoHost,
}

fn host_of_head(bytes: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Head::Incomplete,
        Err(_) => return Head::NoHost,
    }
    let host = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .and_then(|h| std::str::from_utf8(h.value).ok());
    match host {
        Some(host) => Head::Host(strip_port(host.trim()).to_ascii_lowercase()),
        None => Head::NoHost,
    }
}

/// `example.com:8080` -> `example.com`; `[2001:db8::1]:80` -> `2001:db8::1`.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

const METHODS: [&[u8]; 10] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
    b"PRI * HTTP/2.0",
];

/// Some(true): HTTP; Some(false): not HTTP; None: too few bytes to tell.
fn classify(head: &[u8]) -> Option<bool> {
    let mut undecided = false;
    for method in METHODS {
        let n = head.len().min(method.len());
        if head[..n] == method[..n] {
            if n == method.len() {
                return Some(true);
            }
            undecided = true;
        }
    }
    (!undecided).then_some(false)
}

#[cfg(test)]
mod tests {
    use super::{classify, host_of_head, strip_port, Head};

    #[test]
    fn the_host_of_a_request_head_is_found_without_its_port() {
        let host = |bytes: &[u8]| match host_of_head(bytes) {
            Head::Host(h) => Some(h),
            _ => None,
        };
        assert_eq!(
            host(b"GET / HTTP/1.1\r\nHost: API.Example.com:8080\r\n\r\n").as_deref(),
            Some("api.example.com")
        );
        assert!(matches!(
            host_of_head(b"GET / HTTP/1.1\r\nHost: a"),
            Head::Incomplete
        ));
        assert!(matches!(
            host_of_head(b"GET / HTTP/1.1\r\n\r\n"),
            Head::NoHost
        ));
        assert_eq!(strip_port("[2001:db8::1]:80"), "2001:db8::1");
        assert_eq!(strip_port("example.com"), "example.com");
    }

    #[test]
    fn http_is_told_from_other_protocols_as_soon_as_possible() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(true));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), Some(true));
        assert_eq!(classify(b"PO"), None, "a prefix of POST and PUT");
        assert_eq!(
            classify(b"\x16\x03\x01\x02"),
            Some(false),
            "a TLS ClientHello"
        );
        assert_eq!(classify(b"GETX"), Some(false));
        assert_eq!(classify(b""), None);
    }
}
