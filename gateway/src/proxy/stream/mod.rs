//! Connection-level listeners: TCP (a port to weighted backends), TLS passed through by
//! server name (the ClientHello is read, not answered), and TLS terminated here with the
//! connection's bytes then forwarded as TCP. One route is chosen per connection.

mod connect;
pub mod hello;
mod record;
pub mod relay;

use ferry_model::{StreamRoute, StreamRoutes};
use rustls::ServerConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::http1::Http1Proxy;
use crate::compiled::CompiledSnapshot;
use connect::{Backend, Refusal};
use record::Connection;

/// How long a relayed connection may stay silent both ways (Envoy's TCP proxy default is
/// one hour; Istio's `tcpKeepalive` keeps longer ones alive at the socket level).
const DEFAULT_IDLE: Duration = Duration::from_secs(3600);

/// Serves one accepted connection of a connection-level port.
pub(crate) async fn serve(
    mut tcp: TcpStream,
    client: SocketAddr,
    port: u16,
    tls: Option<Arc<ServerConfig>>,
    app: &Http1Proxy,
) {
    let Some(snapshot) = app.store.load() else {
        return;
    };
    let Some(routes) = snapshot.stream_routes(port) else {
        return; // the port changed kind since the connection was accepted
    };
    // The proxy's own address costs a syscall: asked only when something will use it.
    let local = needs_local_address(app, &snapshot, routes)
        .then(|| tcp.local_addr().ok())
        .flatten();
    let mut connection = Connection::new(Some(client), local, port, SystemTime::now());
    if !routes.by_server_name {
        return forward(app, &snapshot, routes, tcp, &[], connection).await;
    }
    // The handshake's time limit covers the ClientHello and, when terminated, the rest.
    let deadline = Instant::now() + app.limits().timeouts.tls_handshake;
    let hello = match tokio::time::timeout_at(deadline.into(), hello::read(&mut tcp)).await {
        Ok(Ok(hello)) => hello,
        Ok(Err(e)) => return tracing::debug!(port, "TLS listener: {e}"),
        Err(_) => return app.count_timeout("tls_handshake"),
    };
    connection.server_name = hello.server_name.clone();
    let terminate = routes
        .route_for(hello.server_name.as_deref(), connection.local_ip())
        .is_some_and(|r| r.terminate);
    match (terminate, tls) {
        (false, _) => forward(app, &snapshot, routes, tcp, &hello.bytes, connection).await,
        (true, Some(config)) => {
            // The hello already read is replayed into the handshake.
            let replayed = hello::Replay::new(hello.bytes, tcp);
            let accept = tokio_rustls::TlsAcceptor::from(config).accept(replayed);
            let session = match tokio::time::timeout_at(deadline.into(), accept).await {
                Ok(Ok(session)) => session,
                Ok(Err(e)) => return tracing::debug!(port, "TLS handshake failed: {e}"),
                Err(_) => return app.count_timeout("tls_handshake"),
            };
            forward(app, &snapshot, routes, session, &[], connection).await;
        }
        (true, None) => tracing::warn!(port, "a terminating route on a port without certificates"),
    }
}

/// An HTTPS port's connection whose server name may pass through: reads the ClientHello
/// and relays the connection when a passthrough route matches its name (None back).
/// Otherwise the socket and the bytes read come back, for the TLS handshake to replay.
pub(crate) async fn pass_through(
    mut tcp: TcpStream,
    client: SocketAddr,
    port: u16,
    app: &Http1Proxy,
    slot: &crate::admission::Slot,
) -> Option<(TcpStream, Vec<u8>)> {
    let deadline = Instant::now() + app.limits().timeouts.tls_handshake;
    let hello = match tokio::time::timeout_at(deadline.into(), hello::read(&mut tcp)).await {
        Ok(Ok(hello)) => hello,
        Ok(Err(e)) => {
            tracing::debug!(port, "HTTPS listener: {e}");
            return None;
        }
        Err(_) => {
            app.count_timeout("tls_handshake");
            return None;
        }
    };
    let snapshot = app.store.load()?;
    let passed = snapshot.passthrough_routes(port).filter(|routes| {
        routes
            .route_for(hello.server_name.as_deref(), None)
            .is_some()
    });
    let Some(routes) = passed else {
        return Some((tcp, hello.bytes));
    };
    // A relayed connection is busy for its whole life, never reaped as idle.
    if !slot.begin() {
        return None;
    }
    let mut connection = Connection::new(Some(client), None, port, SystemTime::now());
    connection.server_name = hello.server_name.clone();
    forward(app, &snapshot, routes, tcp, &hello.bytes, connection).await;
    None
}

/// Picks the route and a backend, sends what was read already, then relays both ways.
async fn forward<C>(
    app: &Http1Proxy,
    snapshot: &CompiledSnapshot,
    routes: &StreamRoutes,
    client: C,
    already_read: &[u8],
    connection: Connection,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    if !connection.authorized(snapshot) {
        return connection.refused(app, Refusal::Denied, started);
    }
    let route = routes.route_for(connection.server_name.as_deref(), connection.local_ip());
    relay_by(
        app,
        snapshot,
        route,
        client,
        already_read,
        connection,
        started,
    )
    .await;
}

/// Dials the route's backend, sends what was read already, then relays both ways.
async fn relay_by<C>(
    app: &Http1Proxy,
    snapshot: &CompiledSnapshot,
    route: Option<&StreamRoute>,
    client: C,
    already_read: &[u8],
    mut connection: Connection,
    started: Instant,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    connection.route = route.map(|r| r.name.clone());
    let Some(route) = route else {
        return connection.refused(app, Refusal::NoRoute, started);
    };
    let mut backend = match connect::backend(snapshot, route, connection.original).await {
        Ok(backend) => backend,
        Err((refusal, cluster)) => {
            connection.cluster = cluster;
            return connection.refused(app, refusal, started);
        }
    };
    connection.upstream(&backend);
    let mut first = Vec::new();
    if let Some(version) = backend.cluster.cluster.policy.proxy_protocol {
        let (client, local) = connection.ends();
        first = crate::proxy_protocol::send::header(version, client, local);
    }
    first.extend_from_slice(already_read);
    if backend.stream.write_all(&first).await.is_err() {
        return connection.refused(app, Refusal::ConnectFailure, started);
    }
    let series = connection.opened(app);
    let idle = idle_timeout(&backend);
    let totals = relay::relay(client, &mut backend.stream, idle, &series.counters()).await;
    connection.closed(app, &series, totals, already_read.len() as u64, started);
    // Dropping `backend` frees the cluster's connection slot and in-flight count.
}

/// Relays a sidecar's captured outbound connection by a connection-level route (a
/// ServiceEntry's, a mesh VirtualService's `tls`/`tcp` route). `original` is where the client
/// was going; `already_read` what was taken from the client to choose the route (a
/// ClientHello), sent first.
pub async fn serve_outbound(
    app: &Http1Proxy,
    snapshot: &CompiledSnapshot,
    route: &StreamRoute,
    outbound: Outbound,
) {
    let started = Instant::now();
    let mut connection = Connection::new(
        Some(outbound.client),
        Some(outbound.original),
        outbound.original.port(),
        SystemTime::now(),
    );
    connection.original = Some(outbound.original);
    connection.server_name = outbound.server_name;
    let read = outbound.already_read;
    relay_by(
        app,
        snapshot,
        Some(route),
        outbound.tcp,
        &read,
        connection,
        started,
    )
    .await;
}

/// A captured outbound connection and what is known of it.
pub struct Outbound {
    pub tcp: TcpStream,
    pub client: SocketAddr,
    pub original: SocketAddr,
    pub server_name: Option<String>,
    pub already_read: Vec<u8>,
}

/// The cluster's idle timeout (DestinationRule `connectionPool.tcp.idleTimeout`), else an
/// hour.
fn idle_timeout(backend: &Backend) -> Duration {
    backend
        .idle_timeout_ms
        .map_or(DEFAULT_IDLE, Duration::from_millis)
}

/// The access log, AuthorizationPolicy (`destination.ip`) and PROXY protocol headers need
/// the address the client reached.
fn needs_local_address(
    app: &Http1Proxy,
    snapshot: &CompiledSnapshot,
    routes: &StreamRoutes,
) -> bool {
    if app.telemetry.access_log.is_some()
        || !snapshot.source.authorization.is_empty()
        || routes.by_destination()
    {
        return true;
    }
    let clusters = routes.routes.iter().flat_map(|r| r.backends.iter());
    clusters
        .filter_map(|b| match &b.target {
            ferry_model::BackendTarget::Cluster(name) => snapshot.cluster(name),
            ferry_model::BackendTarget::Invalid { .. } => None,
        })
        .any(|c| c.cluster.policy.proxy_protocol.is_some())
}
