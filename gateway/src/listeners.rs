//! Listener ports that follow the snapshot: accept loops are added and removed at run time
//! and hand each accepted connection to Pingora's HTTP proxy app.

use pingora_core::apps::ServerApp;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use crate::downstream_io::DownstreamIo;
use crate::metrics::Metrics;

pub struct Listeners<A> {
    bind_ip: IpAddr,
    app: Arc<A>,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    active: Mutex<BTreeMap<u16, JoinHandle<()>>>,
}

impl<A: ServerApp + Send + Sync + 'static> Listeners<A> {
    pub fn new(
        bind_ip: IpAddr,
        app: Arc<A>,
        shutdown: watch::Receiver<bool>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Listeners {
            bind_ip,
            app,
            shutdown,
            metrics,
            active: Mutex::new(BTreeMap::new()),
        }
    }

    /// Binds ports newly wanted and closes ports no longer wanted. Connections already
    /// accepted on a closed port finish normally. Returns one message per port that failed.
    pub async fn reconcile(&self, wanted: &BTreeSet<u16>) -> Vec<String> {
        let mut active = self.active.lock().await;
        active.retain(|port, task| {
            let keep = wanted.contains(port);
            if !keep {
                task.abort();
                tracing::info!(port, "listener closed");
            }
            keep
        });
        let mut errors = Vec::new();
        for port in wanted
            .iter()
            .filter(|p| !active.contains_key(p))
            .copied()
            .collect::<Vec<_>>()
        {
            match TcpListener::bind(SocketAddr::new(self.bind_ip, port)).await {
                Ok(listener) => {
                    tracing::info!(port, "listener bound");
                    let task = tokio::spawn(accept_loop(
                        listener,
                        self.app.clone(),
                        self.shutdown.clone(),
                        self.metrics.clone(),
                    ));
                    active.insert(port, task);
                }
                Err(e) => {
                    tracing::error!(port, "cannot bind listener: {e}");
                    errors.push(format!("port {port}: {e}"));
                }
            }
        }
        errors
    }

    pub async fn count(&self) -> usize {
        self.active.lock().await.len()
    }
}

async fn accept_loop<A: ServerApp + Send + Sync + 'static>(
    listener: TcpListener,
    app: Arc<A>,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) {
    let port = listener.local_addr().map_or(0, |a| a.port()).to_string();
    let accepted = metrics.connections.with_label_values(&[&port]);
    let open = metrics.active_connections.with_label_values(&[&port]);
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                let _ = tcp.set_nodelay(true);
                let digest = SocketDigest::from_raw_fd(tcp.as_raw_fd());
                let mut stream = L4Stream::from(tcp);
                stream.set_socket_digest(digest);
                let app = app.clone();
                let shutdown = shutdown.clone();
                accepted.inc();
                let open = open.clone();
                open.inc();
                tokio::spawn(async move {
                    app.process_new(Box::new(DownstreamIo::new(stream)), &shutdown)
                        .await;
                    open.dec();
                });
            }
            Err(e) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
