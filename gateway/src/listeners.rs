//! Listener ports that follow the snapshot: accept loops are added and removed at run time
//! and hand each accepted connection to a worker thread (crate::workers) that serves it with
//! Pingora's HTTP proxy app, after a TLS handshake on HTTPS ports. A port's TLS settings
//! (certificates) change in place for new connections.

use arc_swap::ArcSwap;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use rustls::ServerConfig;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use crate::admission::{Admission, Slot};
use crate::downstream_io::{DownstreamIo, PlainTcp, TlsTransport};
use crate::metrics::Metrics;
use crate::proxy::http1::Http1Proxy;
use crate::proxy_protocol;
use crate::workers::Workers;

/// The accept queue asked of the kernel, which caps it at `net.core.somaxconn` (4,096 on
/// current kernels). A plain bind asks for 128: a burst of a few hundred connects while
/// the accept loop is busy overflows that, and the kernel then drops the handshake's last
/// ACK, so a client that waits for the server to speak first (TLS, a silent attacker)
/// hangs until SYN-ACK retransmissions (1, 3, 7, 15 s) get it queued.
const ACCEPT_BACKLOG: u32 = 65_535;

/// A listening socket with that accept queue (and SO_REUSEADDR, as a plain bind has).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// The HTTP server of each worker thread.
type Apps = Arc<[Arc<Http1Proxy>]>;

pub struct Listeners {
    bind_ip: IpAddr,
    admission: Arc<Admission>,
    /// One app per worker (see crate::workers).
    apps: Apps,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    workers: Arc<Workers>,
    active: Mutex<BTreeMap<u16, ActiveListener>>,
}

/// What each port should serve.
pub type WantedPorts = BTreeMap<u16, PortService>;

/// How a port serves its connections.
#[derive(Clone)]
pub struct PortService {
    /// Terminate TLS with this configuration first.
    pub tls: Option<Arc<ServerConfig>>,
    /// Relay whole connections by the port's stream routes (TCP, TLS passthrough or TLS
    /// terminated here) instead of serving HTTP.
    pub stream: bool,
    /// An HTTPS port that passes some server names through: the ClientHello is read first.
    pub passthrough: bool,
}

struct ActiveListener {
    /// One accept loop per worker.
    tasks: Vec<JoinHandle<()>>,
    service: Arc<ArcSwap<PortService>>,
}

impl Listeners {
    pub fn new(
        bind_ip: IpAddr,
        apps: Apps,
        shutdown: watch::Receiver<bool>,
        metrics: Arc<Metrics>,
        workers: Arc<Workers>,
        admission: Arc<Admission>,
    ) -> Self {
        assert_eq!(apps.len(), workers.count(), "one app per worker");
        Listeners {
            bind_ip,
            admission,
            apps,
            shutdown,
            metrics,
            workers,
            active: Mutex::new(BTreeMap::new()),
        }
    }

    /// Binds ports newly wanted, closes ports no longer wanted and updates the TLS settings of
    /// the rest. Connections already accepted on a closed port finish normally. Returns one
    /// message per port that failed.
    pub async fn reconcile(&self, wanted: &WantedPorts) -> Vec<String> {
        let mut active = self.active.lock().await;
        active.retain(|port, listener| match wanted.get(port) {
            Some(service) => {
                listener.service.store(Arc::new(service.clone()));
                true
            }
            None => {
                listener.tasks.iter().for_each(JoinHandle::abort);
                tracing::info!(port, "listener closed");
                false
            }
        });
        let mut errors = Vec::new();
        let new_ports: Vec<_> = wanted
            .iter()
            .filter(|(p, _)| !active.contains_key(p))
            .collect();
        for (port, service) in new_ports {
            let port = *port;
            let bound = listen(SocketAddr::new(self.bind_ip, port)).and_then(|l| l.into_std());
            match bound {
                Ok(listener) => {
                    let (tls, stream) = (service.tls.is_some(), service.stream);
                    tracing::info!(port, tls, stream, "listener bound");
                    let service = Arc::new(ArcSwap::from_pointee(service.clone()));
                    let tasks = self.accept_on_workers(listener, &service);
                    active.insert(port, ActiveListener { tasks, service });
                }
                Err(e) => {
                    tracing::error!(port, "cannot bind listener: {e}");
                    errors.push(format!("port {port}: {e}"));
                }
            }
        }
        errors
    }

    /// Starts one accept loop per worker on the listening socket (its descriptor cloned
    /// into each worker's runtime): a connection is served on the worker that accepted it,
    /// with no hand-over to another thread (no wake-up, no second epoll registration).
    fn accept_on_workers(
        &self,
        listener: std::net::TcpListener,
        service: &Arc<ArcSwap<PortService>>,
    ) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::with_capacity(self.workers.count());
        for worker in 0..self.workers.count() {
            let socket = match listener.try_clone() {
                Ok(socket) => socket,
                Err(e) => {
                    tracing::error!(worker, "cannot share a listening socket: {e}");
                    continue;
                }
            };
            let context = AcceptContext {
                app: self.apps[worker].clone(),
                shutdown: self.shutdown.clone(),
                metrics: self.metrics.clone(),
                admission: self.admission.clone(),
            };
            let task = accept_loop(socket, service.clone(), context);
            tasks.push(self.workers.spawn_on(worker, task));
        }
        tasks
    }

    /// The app of worker `worker`.
    pub fn app(&self, worker: usize) -> Arc<Http1Proxy> {
        self.apps[worker].clone()
    }

    pub async fn count(&self) -> usize {
        self.active.lock().await.len()
    }
}

/// What an accept loop (on one worker) serves each connection with.
struct AcceptContext {
    /// The worker's own app.
    app: Arc<Http1Proxy>,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    admission: Arc<Admission>,
}

async fn accept_loop(
    listener: std::net::TcpListener,
    service: Arc<ArcSwap<PortService>>,
    context: AcceptContext,
) {
    // Registered with the worker's reactor here, on the worker.
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => return tracing::error!("cannot register a listening socket: {e}"),
    };
    let port = listener.local_addr().map_or(0, |a| a.port());
    let label = port.to_string();
    let accepted = context.metrics.connections.with_label_values(&[&label]);
    let open = context
        .metrics
        .active_connections
        .with_label_values(&[&label]);
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                accepted.inc();
                // Behind PROXY protocol the socket's peer is the load balancer: the client is
                // counted against its limit once the header names it.
                let proxied = context.app.limits().client_address.proxy_protocol;
                let known_client = (!proxied).then_some(peer.ip());
                // Over the limits: closed at once (counted by reason), never queued.
                let Ok(slot) = context.admission.admit(known_client) else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let app = context.app.clone();
                let shutdown = context.shutdown.clone();
                let open = OpenConnection::count(&open);
                let service = service.load_full();
                let task_slot = slot.clone();
                let task = tokio::spawn(async move {
                    let app = &app;
                    let mut tcp = tcp;
                    let client = match proxied {
                        false => Client::Socket(peer),
                        // Boxed: every connection's task would otherwise keep room for it.
                        true => {
                            match Box::pin(proxied_client(&mut tcp, peer, app, &task_slot)).await {
                                Some(client) => Client::Reported(client),
                                None => return,
                            }
                        }
                    };
                    let tls = service.tls.clone();
                    if service.stream {
                        // A relayed connection is busy for its whole life, never reaped as
                        // idle (the handshake timeout bounds a silent one).
                        // Boxed: the task of every HTTP connection would otherwise keep room
                        // for a relayed connection's state (the idle keep-alive connection
                        // went from 1.1 to 6.6 KiB).
                        if task_slot.begin() {
                            let peer = client.address();
                            let relay = crate::proxy::stream::serve(tcp, peer, port, tls, app);
                            Box::pin(relay).await;
                        }
                    } else {
                        match (service.passthrough, tls) {
                            (true, Some(tls)) => {
                                let shutdown = &shutdown;
                                let serve = serve_or_pass_through(
                                    tcp, client, port, tls, app, shutdown, &task_slot,
                                );
                                Box::pin(serve).await
                            }
                            (_, tls) => {
                                serve_connection(tcp, client, tls, app, &shutdown, &task_slot).await
                            }
                        }
                    }
                    drop(open);
                });
                slot.set_abort(task.abort_handle());
            }
            Err(e) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Who a connection is from.
#[derive(Clone, Copy)]
enum Client {
    /// The socket's peer (no PROXY protocol): read from the socket when asked for.
    Socket(SocketAddr),
    /// Named by a PROXY protocol header (or the load balancer itself, when the header named
    /// nobody): what every path reads as the client's address.
    Reported(SocketAddr),
}

impl Client {
    fn address(self) -> SocketAddr {
        match self {
            Client::Socket(a) | Client::Reported(a) => a,
        }
    }
}

/// Reads the PROXY protocol header within the handshake time limit and counts the client it
/// names against its connection limit. The socket's peer when the header names nobody (the
/// load balancer's health checks); None when the connection must close (counted by reason).
async fn proxied_client(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    app: &Http1Proxy,
    slot: &Slot,
) -> Option<SocketAddr> {
    let timeout = app.limits().timeouts.tls_handshake;
    let client = match tokio::time::timeout(timeout, proxy_protocol::read::read(tcp)).await {
        Ok(Ok(reported)) => reported.unwrap_or(peer),
        Ok(Err(e)) => {
            app.count_proxy_protocol_refused(e.reason());
            tracing::debug!(%peer, "connection refused: {e}");
            return None;
        }
        Err(_) => {
            app.count_timeout("proxy_protocol");
            return None;
        }
    };
    slot.claim_client(client.ip()).ok().map(|()| client)
}

/// Counts a connection in `ferry_active_connections` until dropped, also when its worker
/// never got to serve it.
pub struct OpenConnection(prometheus::IntGauge);

impl OpenConnection {
    pub fn count(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        OpenConnection(gauge.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Pingora's stream over an accepted socket, with the socket details its digest reports.
pub fn l4_stream(tcp: TcpStream) -> L4Stream {
    let digest = SocketDigest::from_raw_fd(tcp.as_raw_fd());
    l4_stream_with(tcp, digest)
}

fn l4_stream_with(tcp: TcpStream, digest: SocketDigest) -> L4Stream {
    let mut stream = L4Stream::from(tcp);
    stream.set_socket_digest(digest);
    stream
}

/// An HTTPS port with passthrough server names: the ClientHello decides. A name one of the
/// port's passthrough routes matches is relayed untouched; any other connection is
/// terminated here with the hello replayed into the handshake, and served as HTTP.
async fn serve_or_pass_through(
    tcp: TcpStream,
    client: Client,
    port: u16,
    tls: Arc<ServerConfig>,
    app: &Http1Proxy,
    shutdown: &watch::Receiver<bool>,
    slot: &Arc<Slot>,
) {
    let passed = crate::proxy::stream::pass_through(tcp, client.address(), port, app, slot);
    let Some((tcp, hello)) = passed.await else {
        return; // relayed, or closed
    };
    let mut stream = match client {
        Client::Socket(_) => l4_stream(tcp),
        Client::Reported(client) => {
            let digest = crate::downstream_io::digest_with_client(tcp.as_raw_fd(), client);
            l4_stream_with(tcp, digest)
        }
    };
    stream.rewind(&hello);
    serve_tls(stream, tls, app, shutdown, slot).await
}

/// Takes the socket itself: a future keeps room for its arguments even after they are moved
/// on. A cleartext connection is served on the socket (`PlainTcp`), a TLS session over
/// Pingora's stream; the socket digest is made when asked for
/// (`DownstreamIo::get_socket_digest`), which the loop does once per connection.
async fn serve_connection(
    tcp: TcpStream,
    client: Client,
    tls: Option<Arc<ServerConfig>>,
    app: &Http1Proxy,
    shutdown: &watch::Receiver<bool>,
    slot: &Arc<Slot>,
) {
    match tls {
        None => {
            let plain = match client {
                Client::Socket(_) => PlainTcp::new(tcp),
                Client::Reported(client) => PlainTcp::with_client(tcp, client),
            };
            app.serve(Box::new(DownstreamIo::new(plain)), shutdown, slot)
                .await
        }
        // Boxed: an async fn keeps room for every branch's locals, and a cleartext
        // connection's task should not carry a TLS session's.
        Some(tls) => {
            let stream = match client {
                Client::Socket(_) => l4_stream(tcp),
                Client::Reported(client) => {
                    let digest = crate::downstream_io::digest_with_client(tcp.as_raw_fd(), client);
                    l4_stream_with(tcp, digest)
                }
            };
            Box::pin(serve_tls(stream, tls, app, shutdown, slot)).await
        }
    }
}

async fn serve_tls(
    stream: L4Stream,
    tls: Arc<ServerConfig>,
    app: &Http1Proxy,
    shutdown: &watch::Receiver<bool>,
    slot: &Arc<Slot>,
) {
    // A client that connects and never finishes its handshake must not hold a task forever.
    let timeout = app.limits().timeouts.tls_handshake;
    let handshake = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(session)) => {
            let io = DownstreamIo::new(TlsTransport::new(session));
            app.serve(Box::new(io), shutdown, slot).await;
        }
        Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
        Err(_) => {
            app.count_timeout("tls_handshake");
            tracing::debug!("TLS handshake timed out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::listen;
    use std::time::Duration;
    use tokio::net::TcpStream;

    /// A burst of connects while nobody accepts is queued whole and accepted at once later,
    /// where a plain bind's 128 would leave the rest waiting for SYN-ACK retransmissions.
    #[tokio::test]
    async fn a_burst_of_connects_waits_in_the_accept_queue() {
        const BURST: usize = 600;
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        for _ in 0..BURST {
            // Past a full queue the kernel drops SYNs and connect waits on retransmissions.
            let connect = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(address));
            clients.push(connect.await.expect("queued").unwrap());
        }
        let mut accepted = 0;
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(300), listener.accept()).await
        {
            accepted += 1;
        }
        assert_eq!(accepted, BURST);
    }
}
