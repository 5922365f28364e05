//! Applying snapshots: compile off the request path, swap atomically, follow listeners,
//! keep the last good snapshot when a change is rejected.

use ferry_model::Snapshot;
use pingora_core::apps::HttpServerOptions;
use pingora_core::server::configuration::ServerConf;
use pingora_proxy::{http_proxy, HttpProxy};
use serde::Serialize;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

use crate::admission::Admission;
use crate::compiled::CompiledSnapshot;
use crate::listeners::Listeners;
use crate::mesh_connect::MeshClients;
use crate::mesh_identity::WorkloadIdentity;
use crate::metrics::Metrics;
use crate::proxy::http1::{Http1Options, Http1Proxy};
use crate::proxy::FerryProxy;
use crate::store::SnapshotStore;
use crate::telemetry::{Telemetry, TelemetryOptions};
use crate::workers::Workers;

/// A change that was not applied, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Rejection {
    pub at_unix_ms: u128,
    pub reasons: Vec<String>,
}

/// What /config_dump shows besides the snapshot itself.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EngineStatus {
    /// Translator reports (status conditions) for the applied configuration, kept as JSON
    /// text: a parsed `Value` tree costs several times its text size, and with 1,000 routes
    /// that alone was most of a MiB of resident memory.
    pub reports: Option<Arc<serde_json::value::RawValue>>,
    pub last_rejected: Option<Rejection>,
    pub listener_errors: Vec<String>,
}

pub struct Engine {
    pub store: Arc<SnapshotStore>,
    pub metrics: Arc<Metrics>,
    pub telemetry: Arc<Telemetry>,
    /// This proxy's workload certificate and the mesh roots (empty until installed): what
    /// it presents and checks in mesh mTLS, inbound and to meshed endpoints.
    pub identity: Arc<WorkloadIdentity>,
    listeners: Listeners,
    workers: Arc<Workers>,
    /// The connection limits every listener's accepted connections go through.
    admission: Arc<Admission>,
    limits: crate::limits::Limits,
    status: Mutex<EngineStatus>,
    last_version: AtomicU64,
    /// Serializes apply() calls so listener reconciliation follows swap order.
    applying: tokio::sync::Mutex<()>,
    /// A sidecar: snapshot ports are routing keys, not ports to bind.
    captured: bool,
    /// Set once the first snapshot is swapped in and its listeners are bound.
    ready: std::sync::atomic::AtomicBool,
    /// Answers for the names snapshots ask the proxy to resolve (ServiceEntry DNS hosts).
    dns: crate::dns::Dns,
    /// The applied snapshot as received, before DNS answers filled its clusters: what is
    /// compiled again when an answer changes. None when it names nothing to resolve.
    unresolved: Mutex<Option<Arc<Snapshot>>>,
    /// The server side of the mesh's mTLS with this proxy's workload identity, for
    /// listeners that terminate it (Istio ISTIO_MUTUAL gateway servers).
    mesh_server: Arc<rustls::ServerConfig>,
    /// Wakes the DNS refresher when a snapshot with other names arrives.
    dns_changed: Arc<tokio::sync::Notify>,
    _shutdown: watch::Sender<bool>,
}

impl Engine {
    /// Must run inside the Tokio runtime (listeners and the trace exporter are its tasks).
    /// `workers`: threads serving connections (0: one per core).
    pub fn new(
        bind_ip: IpAddr,
        telemetry: &TelemetryOptions,
        workers: usize,
        http1: Http1Options,
    ) -> Result<Arc<Self>, String> {
        Self::build(bind_ip, telemetry, None, workers, http1)
    }

    /// A sidecar's engine: binds no snapshot ports (its capture listeners are
    /// [`crate::sidecar`]'s) and routes each connection by the port the app dialled.
    /// `inbound_port`: where inbound connections are redirected; requests arriving there go
    /// to the app and are reported with `reporter="destination"`.
    pub fn new_sidecar(
        telemetry: &TelemetryOptions,
        inbound_port: u16,
        workers: usize,
        http1: Http1Options,
    ) -> Result<Arc<Self>, String> {
        Self::build(
            IpAddr::from([127, 0, 0, 1]),
            telemetry,
            Some(inbound_port),
            workers,
            http1,
        )
    }

    fn build(
        bind_ip: IpAddr,
        telemetry: &TelemetryOptions,
        inbound_port: Option<u16>,
        workers: usize,
        mut http1: Http1Options,
    ) -> Result<Arc<Self>, String> {
        http1.limits = http1.limits.capped_by_open_files();
        let workers = Arc::new(
            Workers::start(workers).map_err(|e| format!("cannot start worker threads: {e}"))?,
        );
        let captured = inbound_port.is_some();
        let store = Arc::new(SnapshotStore::default());
        let identity = Arc::new(WorkloadIdentity::default());
        let mesh_server = identity.server_config();
        let metrics = Arc::new(Metrics::new(
            telemetry.identity.clone(),
            identity.clone(),
            !captured,
        ));
        let telemetry = Arc::new(Telemetry::start(
            telemetry,
            metrics.access_log_dropped.clone(),
        )?);
        let conf = Arc::new(ServerConf::default());
        let mesh = Arc::new(MeshClients::new(identity.clone()));
        let apps: Arc<[_]> = (0..workers.count())
            .map(|_| {
                let ferry = FerryProxy::new(
                    store.clone(),
                    metrics.clone(),
                    telemetry.clone(),
                    inbound_port,
                    mesh.clone(),
                    &http1,
                );
                let pingora = Arc::new(proxy_app(&conf, ferry, &http1));
                Arc::new(Http1Proxy::new(
                    pingora,
                    store.clone(),
                    metrics.clone(),
                    telemetry.clone(),
                    inbound_port,
                    http1.clone(),
                    mesh.clone(),
                ))
            })
            .collect();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let admission = Admission::new(http1.limits.connections, metrics.admission.clone());
        tokio::spawn(crate::admission::memory::watch(admission.clone()));
        let listeners = Listeners::new(
            bind_ip,
            apps,
            shutdown_rx,
            metrics.clone(),
            workers.clone(),
            admission.clone(),
        );
        Ok(Arc::new(Engine {
            store,
            telemetry,
            identity,
            listeners,
            workers,
            admission,
            limits: http1.limits.clone(),
            metrics,
            status: Mutex::new(EngineStatus::default()),
            last_version: AtomicU64::new(0),
            applying: tokio::sync::Mutex::new(()),
            captured,
            ready: Default::default(),
            dns: Default::default(),
            unresolved: Mutex::new(None),
            mesh_server,
            dns_changed: Default::default(),
            _shutdown: shutdown_tx,
        }))
        .inspect(|engine| {
            tokio::spawn(refresh_dns(Arc::downgrade(engine)));
        })
    }

    /// Compiles and activates `snapshot` (its version is assigned here when 0).
    /// On failure nothing changes and the reasons are recorded.
    pub async fn apply(
        &self,
        mut snapshot: Snapshot,
        reports: serde_json::Value,
    ) -> Result<u64, Vec<String>> {
        let _guard = self.applying.lock().await;
        if snapshot.version == 0 {
            snapshot.version = self.last_version.load(Ordering::SeqCst) + 1;
        }
        let version = snapshot.version;
        let snapshot = self.resolve_names(snapshot).await;
        let previous = self.store.load();
        let mesh = Some(&self.mesh_server);
        let snapshot = Arc::new(snapshot);
        let compiled =
            match CompiledSnapshot::compile_with_mesh(snapshot, previous.as_deref(), mesh) {
                Ok(compiled) => Arc::new(compiled),
                Err(e) => {
                    let reasons = vec![e.to_string()];
                    self.reject(reasons.clone());
                    return Err(reasons);
                }
            };
        let ports = compiled.ports();
        self.store.swap(compiled);
        self.last_version.store(version, Ordering::SeqCst);
        let listener_errors = match self.captured {
            true => Vec::new(),
            false => self.listeners.reconcile(&ports).await,
        };
        self.record_applied(version, reports, listener_errors).await;
        Ok(version)
    }

    /// `snapshot` with its DNS clusters' endpoints filled from fresh answers; the snapshot as
    /// received is kept for the refresher.
    async fn resolve_names(&self, snapshot: Snapshot) -> Snapshot {
        let names = crate::dns::names(&snapshot);
        if names.is_empty() {
            *self.unresolved.lock().expect("unresolved") = None;
            return snapshot;
        }
        self.dns.refresh(&names).await;
        let filled = self.dns.fill(&snapshot);
        *self.unresolved.lock().expect("unresolved") = Some(Arc::new(snapshot));
        self.dns_changed.notify_one();
        filled
    }

    /// Asks again the names whose answers are due and, when one changed, serves the same
    /// snapshot version with the new endpoints (other clusters keep their state).
    async fn refresh_names(&self) {
        let _guard = self.applying.lock().await;
        let Some(unresolved) = self.unresolved.lock().expect("unresolved").clone() else {
            return;
        };
        if !self.dns.refresh(&crate::dns::names(&unresolved)).await {
            return;
        }
        let filled = self.dns.fill(&unresolved);
        let previous = self.store.load();
        let mesh = Some(&self.mesh_server);
        match CompiledSnapshot::compile_with_mesh(Arc::new(filled), previous.as_deref(), mesh) {
            Ok(compiled) => {
                self.store.swap(Arc::new(compiled));
                tracing::info!("DNS answers changed: endpoints updated");
            }
            Err(e) => tracing::error!("DNS refresh not applied: {e}"),
        }
    }

    async fn record_applied(
        &self,
        version: u64,
        reports: serde_json::Value,
        listener_errors: Vec<String>,
    ) {
        self.metrics.swaps.inc();
        self.metrics.snapshot_version.set(version as i64);
        self.metrics
            .listener_bind_errors
            .inc_by(listener_errors.len() as u64);
        self.metrics
            .listeners
            .set(self.listeners.count().await as i64);
        let mut status = self.status.lock().expect("status lock");
        status.reports = serde_json::value::to_raw_value(&reports)
            .ok()
            .map(Arc::from);
        status.listener_errors = listener_errors;
        self.ready.store(true, Ordering::SeqCst);
        tracing::info!(version, "snapshot applied");
    }

    /// Records a change that was not applied; the active snapshot keeps serving.
    pub fn reject(&self, reasons: Vec<String>) {
        for reason in &reasons {
            tracing::error!("configuration rejected, last good snapshot kept: {reason}");
        }
        self.metrics.rejections.inc();
        let at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        self.status.lock().expect("status lock").last_rejected = Some(Rejection {
            at_unix_ms,
            reasons,
        });
    }

    /// Ready (for `/ready` and readiness probes) once a snapshot serves and its listeners are
    /// bound, so a probe never passes before the ports it checks exist.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Starts draining: accept loops stop taking connections and keep-alive connections
    /// close after their current request.
    pub fn begin_drain(&self) {
        let _ = self._shutdown.send(true);
    }

    /// Downstream connections still open, on every listener.
    pub fn open_connections(&self) -> i64 {
        use prometheus::core::Collector;
        self.metrics
            .active_connections
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|m| m.get_gauge().get_value() as i64)
            .sum()
    }

    /// Tells in-flight HTTP sessions when the process is shutting down.
    pub fn shutdown_watch(&self) -> watch::Receiver<bool> {
        self._shutdown.subscribe()
    }

    /// The connection limits, for accept loops other than the snapshot's listeners.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// The limits this engine applies to its clients (shown in /config_dump).
    pub fn limits(&self) -> &crate::limits::Limits {
        &self.limits
    }

    /// The threads that serve connections, for accept loops other than the snapshot's
    /// listeners.
    pub fn workers(&self) -> &Workers {
        &self.workers
    }

    /// Worker `worker`'s HTTP server (Ferry's HTTP/1 loop over Pingora's proxy), for accept
    /// loops other than the snapshot's listeners.
    pub fn http_app(&self, worker: usize) -> Arc<Http1Proxy> {
        self.listeners.app(worker)
    }

    pub fn status(&self) -> EngineStatus {
        self.status.lock().expect("status lock").clone()
    }

    /// The snapshot currently served, if any.
    pub fn active(&self) -> Option<Arc<Snapshot>> {
        self.store.load().map(|c| c.source.clone())
    }
}

/// Pingora's HTTP proxy around `ferry`: HTTP/1.1 and, on cleartext listeners, HTTP/2 with
/// prior knowledge (h2c).
fn proxy_app(
    conf: &Arc<ServerConf>,
    ferry: FerryProxy,
    http1: &Http1Options,
) -> HttpProxy<FerryProxy> {
    let mut proxy = http_proxy(conf, ferry);
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    options.keepalive_request_limit = http1.max_requests_per_connection;
    options.h2_idle_timeout = Some(http1.limits.timeouts.idle);
    proxy.server_options = Some(options);
    proxy.h2_options = Some(http1.limits.h2_options());
    proxy
}

/// Keeps DNS answers fresh for as long as the engine lives: sleeps until the earliest answer
/// is due (or a snapshot names other hosts), then refreshes.
async fn refresh_dns(engine: std::sync::Weak<Engine>) {
    const IDLE: std::time::Duration = std::time::Duration::from_secs(3600);
    loop {
        let Some(strong) = engine.upgrade() else {
            return;
        };
        let due = strong
            .dns
            .next_refresh()
            .unwrap_or_else(|| tokio::time::Instant::now() + IDLE);
        let wake = strong.dns_changed.clone();
        drop(strong);
        let changed = wake.notified();
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = changed => continue,
        }
        match engine.upgrade() {
            Some(strong) => strong.refresh_names().await,
            None => return,
        }
    }
}
