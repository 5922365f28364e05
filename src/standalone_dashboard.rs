//! `ferry gateway --config DIR --dashboard ADDR`: the controller's dashboard for one
//! standalone gateway — its own traffic, its manifest files, itself as the only proxy — so
//! the examples show the picture without a cluster.

use ferry_controller::dashboard::{server, Dashboard, ProxyView, Source};
use ferry_controller::{Inputs, Options};
use ferry_gateway::Engine;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A standalone gateway has no push stream to wait on: its summaries are taken every second.
const SUMMARY_INTERVAL: Duration = Duration::from_secs(1);

pub struct FilesSource {
    proxy: String,
    options: Options,
    engine: Arc<Engine>,
    /// The objects of the last read of the files, valid or not (an invalid set's messages
    /// are what the dashboard must show), and the reasons it was refused.
    last_read: Mutex<(Option<Arc<Inputs>>, Vec<String>)>,
}

impl FilesSource {
    pub fn new(proxy: String, options: Options, engine: Arc<Engine>) -> Arc<FilesSource> {
        Arc::new(FilesSource {
            proxy,
            options,
            engine,
            last_read: Mutex::new((None, Vec::new())),
        })
    }

    /// The loader read the files: `refused` lists why the set was not applied (empty: it was).
    pub fn read(&self, inputs: &Inputs, refused: Vec<String>) {
        *self.last_read.lock().expect("read lock") = (Some(Arc::new(inputs.clone())), refused);
    }
}

impl Source for FilesSource {
    fn inputs(&self) -> Option<Arc<Inputs>> {
        self.last_read.lock().expect("read lock").0.clone()
    }

    fn options(&self) -> Options {
        self.options.clone()
    }

    fn proxies(&self) -> Vec<ProxyView> {
        let reasons = self.last_read.lock().expect("read lock").1.clone();
        let version = self.engine.active().map_or(0, |s| s.version);
        let sync = match (reasons.is_empty(), version) {
            (false, _) => "NACK",
            (true, 0) => "STALE",
            (true, _) => "SYNCED",
        };
        vec![ProxyView {
            proxy: self.proxy.clone(),
            scope: "standalone".into(),
            sync,
            sent_version: version,
            acked_version: version,
            reasons,
            last_summary_unix_ms: None,
        }]
    }

    fn statuses_written(&self) -> bool {
        false
    }
}

/// Binds the dashboard and feeds it this gateway's traffic.
pub async fn start(addr: SocketAddr, source: Arc<FilesSource>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--dashboard {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let edges = source.engine.metrics.edges.clone();
    let proxy = source.proxy.clone();
    let dashboard = Dashboard::new(source);
    tokio::spawn(server::serve(listener, dashboard.clone()));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SUMMARY_INTERVAL);
        loop {
            ticks.tick().await;
            if let Some(summary) = edges.take() {
                dashboard.record(&proxy, &summary);
            }
        }
    });
    Ok(bound)
}
