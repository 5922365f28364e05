//! Every connected proxy and where it stands: the version last sent, the version it last
//! ACKed, and the reasons of its last NACK. Served as JSON (`/debug/proxies`, read by
//! `ferry proxy-status`) and as Prometheus metrics.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// One proxy's sync state, as `ferry proxy-status` shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProxyState {
    pub proxy: String,
    /// The Gateway (`namespace/name`) or label scope the proxy serves.
    pub scope: String,
    pub connected_at_unix_ms: u64,
    pub sent_version: u64,
    pub acked_version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nacked_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nack_reasons: Vec<String>,
}

impl ProxyState {
    /// SYNCED when the proxy serves what was sent, NACK when it refused it, STALE while an
    /// answer is outstanding (istioctl proxy-status words).
    pub fn sync(&self) -> &'static str {
        if self.nacked_version == Some(self.sent_version) {
            "NACK"
        } else if self.acked_version == self.sent_version && self.sent_version != 0 {
            "SYNCED"
        } else {
            "STALE"
        }
    }
}

struct Entry {
    state: ProxyState,
    sent_at: Option<Instant>,
}

pub struct Proxies {
    entries: Mutex<BTreeMap<String, Entry>>,
    metrics: PushMetrics,
    /// Woken on every ACK (Gateway statuses wait for them).
    pub acks: tokio::sync::Notify,
}

struct PushMetrics {
    connected: IntGauge,
    pushes: IntCounter,
    acks: IntCounter,
    nacks: IntCounter,
    ack_seconds: Histogram,
}

impl Proxies {
    pub fn new(registry: &Registry) -> Proxies {
        let metrics = PushMetrics {
            connected: IntGauge::new(
                "ferry_controller_connected_proxies",
                "Proxies with an open push stream",
            )
            .unwrap(),
            pushes: IntCounter::new("ferry_controller_pushes_total", "Snapshots sent to proxies")
                .unwrap(),
            acks: IntCounter::new("ferry_controller_acks_total", "Snapshots proxies applied")
                .unwrap(),
            nacks: IntCounter::new(
                "ferry_controller_nacks_total",
                "Snapshots proxies refused (see /debug/proxies for reasons)",
            )
            .unwrap(),
            ack_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "ferry_controller_push_ack_seconds",
                    "Time from sending a snapshot to the proxy's ACK",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            )
            .unwrap(),
        };
        registry
            .register(Box::new(metrics.connected.clone()))
            .unwrap();
        registry.register(Box::new(metrics.pushes.clone())).unwrap();
        registry.register(Box::new(metrics.acks.clone())).unwrap();
        registry.register(Box::new(metrics.nacks.clone())).unwrap();
        registry
            .register(Box::new(metrics.ack_seconds.clone()))
            .unwrap();
        Proxies {
            entries: Mutex::new(BTreeMap::new()),
            metrics,
            acks: tokio::sync::Notify::new(),
        }
    }

    /// A proxy said hello. A reconnect under the same name replaces the old record.
    /// Returns the record's connect time, which [`Proxies::disconnected`] needs.
    pub fn connected(&self, proxy: &str, scope: &str) -> u64 {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let state = ProxyState {
            proxy: proxy.into(),
            scope: scope.into(),
            connected_at_unix_ms: now_ms,
            ..ProxyState::default()
        };
        let mut entries = self.lock();
        entries.insert(
            proxy.into(),
            Entry {
                state,
                sent_at: None,
            },
        );
        self.metrics.connected.set(entries.len() as i64);
        now_ms
    }

    /// The stream ended. `connected_at` guards against removing a newer stream's record.
    pub fn disconnected(&self, proxy: &str, connected_at_unix_ms: u64) {
        let mut entries = self.lock();
        if entries
            .get(proxy)
            .is_some_and(|e| e.state.connected_at_unix_ms == connected_at_unix_ms)
        {
            entries.remove(proxy);
        }
        self.metrics.connected.set(entries.len() as i64);
    }

    pub fn sent(&self, proxy: &str, version: u64) {
        self.metrics.pushes.inc();
        if let Some(entry) = self.lock().get_mut(proxy) {
            entry.state.sent_version = version;
            entry.sent_at = Some(Instant::now());
        }
    }

    /// The highest version any connected proxy of each scope has ACKed.
    pub fn acked_by_scope(&self) -> BTreeMap<String, u64> {
        let mut acked = BTreeMap::new();
        for entry in self.lock().values() {
            let version = acked.entry(entry.state.scope.clone()).or_insert(0);
            *version = (*version).max(entry.state.acked_version);
        }
        acked
    }

    pub fn acked(&self, proxy: &str, version: u64) {
        self.metrics.acks.inc();
        if let Some(entry) = self.lock().get_mut(proxy) {
            entry.state.acked_version = version;
            if version == entry.state.sent_version {
                if let Some(sent_at) = entry.sent_at.take() {
                    self.metrics
                        .ack_seconds
                        .observe(sent_at.elapsed().as_secs_f64());
                }
            }
        }
        self.acks.notify_one();
    }

    pub fn nacked(&self, proxy: &str, version: u64, reasons: Vec<String>) {
        self.metrics.nacks.inc();
        for reason in &reasons {
            tracing::warn!(proxy, version, "proxy refused snapshot: {reason}");
        }
        if let Some(entry) = self.lock().get_mut(proxy) {
            entry.state.nacked_version = Some(version);
            entry.state.nack_reasons = reasons;
        }
    }

    pub fn get(&self, proxy: &str) -> Option<ProxyState> {
        self.lock().get(proxy).map(|e| e.state.clone())
    }

    pub fn list(&self) -> Vec<ProxyState> {
        self.lock().values().map(|e| e.state.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().expect("proxies lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_state_follows_sent_acked_and_nacked_versions() {
        let proxies = Proxies::new(&Registry::new());
        proxies.connected("gw-1", "infra/public");
        assert_eq!(proxies.get("gw-1").unwrap().sync(), "STALE");
        proxies.sent("gw-1", 5);
        proxies.acked("gw-1", 5);
        assert_eq!(proxies.get("gw-1").unwrap().sync(), "SYNCED");
        proxies.sent("gw-1", 6);
        proxies.nacked("gw-1", 6, vec!["HTTPRoute a/b: bad regex".into()]);
        let state = proxies.get("gw-1").unwrap();
        assert_eq!(state.sync(), "NACK");
        assert_eq!(state.acked_version, 5);
        assert_eq!(state.nack_reasons, vec!["HTTPRoute a/b: bad regex"]);
    }

    #[test]
    fn an_old_stream_ending_does_not_remove_a_reconnected_proxy() {
        let proxies = Proxies::new(&Registry::new());
        let old = proxies.connected("gw-1", "s");
        std::thread::sleep(std::time::Duration::from_millis(2));
        proxies.connected("gw-1", "s");
        proxies.disconnected("gw-1", old);
        assert!(proxies.get("gw-1").is_some());
    }
}
