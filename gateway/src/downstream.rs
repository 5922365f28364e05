//! What the mesh's capture listeners (`ferry-mesh`) need from the engine: Pingora's stream
//! over an accepted socket, and serving HTTP on a connection through a worker's engine, in
//! cleartext or inside a terminated (mesh mTLS) session.

use pingora_core::protocols::l4::stream::Stream as L4Stream;
use tokio_rustls::server::TlsStream;

use std::sync::Arc;

pub use crate::admission::Slot;
use crate::downstream_io::{DownstreamIo, TlsTransport};
use crate::engine::Engine;
pub use crate::listeners::{l4_stream, OpenConnection};

/// Serves the HTTP requests of a cleartext connection until it closes or the engine drains.
pub async fn serve_http_on(engine: &Engine, stream: L4Stream, worker: usize, slot: &Arc<Slot>) {
    let shutdown = engine.shutdown_watch();
    engine
        .http_app(worker)
        .serve(Box::new(DownstreamIo::new(stream)), &shutdown, slot)
        .await;
}

/// Serves the HTTP requests inside a terminated TLS session; a verified client certificate's
/// SPIFFE ID reaches each request's metrics and access log.
pub async fn serve_tls_session(
    engine: &Engine,
    session: TlsStream<L4Stream>,
    worker: usize,
    slot: &Arc<Slot>,
) {
    let shutdown = engine.shutdown_watch();
    let io = DownstreamIo::new(TlsTransport::new(session));
    engine
        .http_app(worker)
        .serve(Box::new(io), &shutdown, slot)
        .await;
}

/// Whether the AuthorizationPolicies of a sidecar's snapshot let an inbound TCP connection
/// (not HTTP, not mTLS) from `source` to the app at `destination` through.
pub fn authorizes_connection(
    engine: &Engine,
    source: Option<std::net::SocketAddr>,
    destination: std::net::SocketAddr,
) -> bool {
    let Some(snapshot) = engine.store.load() else {
        return true; // nothing applied yet: no policy exists to enforce
    };
    let peer = crate::proxy::authz::Peer {
        identity: None,
        destination_ip: Some(destination.ip()),
        port: destination.port(),
        sni: None,
        client_address: Default::default(), // a connection has no X-Forwarded-For
    };
    crate::proxy::authz::allows_connection(&snapshot, &peer, source.map(|s| s.ip()))
}

pub use crate::proxy::stream::Outbound;

/// Relays a sidecar's captured outbound connection by a connection-level route of the
/// snapshot's `outbound` section (a ServiceEntry's TLS or TCP port), with Istio's TCP metrics.
pub async fn relay_outbound(
    engine: &Engine,
    worker: usize,
    snapshot: &crate::compiled::CompiledSnapshot,
    route: &ferry_model::StreamRoute,
    outbound: Outbound,
) {
    let app = engine.http_app(worker);
    crate::proxy::stream::serve_outbound(&app, snapshot, route, outbound).await;
}

/// Reads a TLS ClientHello from `tcp` (bounded by the engine's handshake timeout): its
/// server name and the bytes read, to send on first.
pub async fn read_client_hello(
    engine: &Engine,
    tcp: &mut tokio::net::TcpStream,
) -> Option<(Option<String>, Vec<u8>)> {
    let limit = engine.limits().timeouts.tls_handshake;
    let read = tokio::time::timeout(limit, crate::proxy::stream::hello::read(tcp)).await;
    match read {
        Ok(Ok(hello)) => Some((hello.server_name, hello.bytes)),
        Ok(Err(e)) => {
            tracing::debug!("outbound TLS: {e}");
            None
        }
        Err(_) => None,
    }
}
