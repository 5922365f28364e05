//! The built-in dashboard: the live service graph, routes and policies per node, Gateways
//! with their statuses, proxies with their sync state and every validation message.
//!
//! One engine serves both places that have something to show: the controller (every proxy's
//! summaries, the cluster's objects) and a standalone `ferry gateway --dashboard` (its own
//! traffic, its manifest files). What differs is behind [`Source`]. The API (`/api/...`,
//! docs/dashboard.md) is JSON; the UI is static files built from `dashboard/` and embedded
//! at compile time ([`assets`]). Nothing here changes anything, and no Secret is read.

pub mod assets;
pub mod cluster;
pub mod replicas;
pub mod server;
pub mod traffic;
pub mod views;

use ferry_model::summary::TrafficSummary;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Inputs, Options};
pub use traffic::{Traffic, Window};

/// Where the dashboard's objects and proxies come from.
pub trait Source: Send + Sync + 'static {
    /// The objects as last read (None before the first complete read).
    fn inputs(&self) -> Option<Arc<Inputs>>;
    /// How the objects are translated for the routes shown.
    fn options(&self) -> Options;
    /// The proxies and their sync state.
    fn proxies(&self) -> Vec<ProxyView>;
    /// Whether the objects' statuses are written by a controller (shown as written); else
    /// the dashboard shows the statuses Ferry computes for them.
    fn statuses_written(&self) -> bool;
}

/// A shared source (the controller keeps its handle to feed it) is a source.
impl<T: Source + ?Sized> Source for Arc<T> {
    fn inputs(&self) -> Option<Arc<Inputs>> {
        (**self).inputs()
    }
    fn options(&self) -> Options {
        (**self).options()
    }
    fn proxies(&self) -> Vec<ProxyView> {
        (**self).proxies()
    }
    fn statuses_written(&self) -> bool {
        (**self).statuses_written()
    }
}

/// One proxy as the dashboard lists it (`ferry proxy-status` words for its state).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyView {
    pub proxy: String,
    pub scope: String,
    /// SYNCED, STALE or NACK.
    pub sync: &'static str,
    pub sent_version: u64,
    pub acked_version: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_summary_unix_ms: Option<u64>,
}

/// Proxies whose last summary time is kept (the push port's connection limit).
const MAX_PROXIES: usize = 16_384;

/// The dashboard's state: traffic windows, and what was derived from the last inputs.
pub struct Dashboard {
    source: Box<dyn Source>,
    traffic: Mutex<Traffic>,
    /// When each proxy last sent a summary (only proxies that did; pruned to the connected).
    last_summary: Mutex<BTreeMap<String, u64>>,
    derived: Mutex<Option<Arc<views::Derived>>>,
}

impl Dashboard {
    pub fn new(source: impl Source) -> Arc<Dashboard> {
        Arc::new(Dashboard {
            source: Box::new(source),
            traffic: Mutex::new(Traffic::default()),
            last_summary: Mutex::new(BTreeMap::new()),
            derived: Mutex::new(None),
        })
    }

    /// Adds a proxy's summary to the windows.
    pub fn record(&self, proxy: &str, summary: &TrafficSummary) {
        let now = now_ms();
        self.traffic
            .lock()
            .expect("traffic lock")
            .record(summary, now);
        let mut last = self.last_summary.lock().expect("summary lock");
        if last.len() < MAX_PROXIES || last.contains_key(proxy) {
            last.insert(proxy.to_string(), now);
        }
    }

    fn proxies(&self) -> Vec<ProxyView> {
        let mut proxies = self.source.proxies();
        let mut last = self.last_summary.lock().expect("summary lock");
        last.retain(|name, _| proxies.iter().any(|p| &p.proxy == name));
        for proxy in &mut proxies {
            proxy.last_summary_unix_ms = last.get(&proxy.proxy).copied();
        }
        proxies
    }

    /// Translation, findings and statuses of the current inputs, computed once per inputs.
    fn derived(&self) -> Option<Arc<views::Derived>> {
        let inputs = self.source.inputs()?;
        let mut cached = self.derived.lock().expect("derived lock");
        if let Some(derived) = cached.as_ref().filter(|d| Arc::ptr_eq(&d.inputs, &inputs)) {
            return Some(derived.clone());
        }
        let derived = Arc::new(views::Derived::new(
            inputs,
            &self.source.options(),
            self.source.statuses_written(),
        ));
        *cached = Some(derived.clone());
        Some(derived)
    }
}

#[async_trait::async_trait]
impl server::Answer for Dashboard {
    async fn answer(
        &self,
        api: &str,
        query: &std::collections::HashMap<String, String>,
    ) -> Result<serde_json::Value, server::Refused> {
        use http::StatusCode;
        let now = now_ms();
        let traffic = |window| {
            let mut traffic = self.traffic.lock().expect("traffic lock");
            views::TrafficView::of(&mut traffic, window, now)
        };
        let objects = || {
            self.derived().ok_or_else(|| {
                server::Refused::new(StatusCode::SERVICE_UNAVAILABLE, "objects not read yet")
            })
        };
        Ok(match api {
            "graph" => {
                let window = server::window(query)?;
                views::graph(&traffic(window), window, now)
            }
            "export" => {
                let window = server::window(query)?;
                views::export(&traffic(window), window, now)
            }
            "node" => {
                let id = query.get("id").ok_or_else(|| {
                    server::Refused::new(StatusCode::BAD_REQUEST, "id: kind/namespace/name")
                })?;
                let view = traffic(Window::OneMinute);
                let (node, mut page) = views::node(&view, id, now)
                    .ok_or_else(|| server::Refused::new(StatusCode::NOT_FOUND, "no such node"))?;
                if let Some(derived) = self.derived() {
                    views::node_config(&derived, &node, &mut page);
                }
                page
            }
            "gateways" => views::gateways(objects()?.as_ref()),
            "messages" => views::messages(objects()?.as_ref()),
            "proxies" => views::proxies(&self.proxies()),
            "overview" => self.overview(),
            _ => {
                return Err(server::Refused::new(
                    StatusCode::NOT_FOUND,
                    server::API_INDEX.trim(),
                ))
            }
        })
    }
}

impl Dashboard {
    fn overview(&self) -> serde_json::Value {
        let traffic = self.traffic.lock().expect("traffic lock");
        serde_json::json!({
            "mode": if self.source.statuses_written() { "cluster" } else { "standalone" },
            "replicas": 1,
            "edgesKept": traffic.edge_count(),
            "edgeLimit": traffic::MAX_EDGES,
            "bytesPerEdge": traffic::EDGE_BYTES,
            "droppedEdges": traffic.dropped_edges(),
            "summariesReceived": traffic.summaries(),
            "assetsBuilt": assets::BUILT,
        })
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
