//! The dashboard's live traffic: every proxy's summaries added into rolling 1-minute and
//! 10-minute windows per edge, in memory bounded by the number of edges.
//!
//! An edge keeps 6 slots of 10 s (the 1-minute window) and 10 slots of 1 min (the 10-minute
//! window), each a fixed array of 32-bit counters (64-bit for TCP bytes): 16 slots of 176
//! bytes ([`EDGE_BYTES`] per edge, about 2.8 KB) whatever the number of proxies or requests, so 10,000 edges hold about
//! 28 MB plus their names. At most [`MAX_EDGES`] edges are kept (later ones are counted as
//! dropped) and an edge silent for 10 minutes is forgotten. Proxy-made errors are kept in one
//! ring of the [`MAX_ERRORS`] most recent.

use ferry_model::summary::{
    EdgeCounts, EdgeKey, ProxyError, TrafficSummary, LATENCY_BUCKETS, RESPONSE_FLAGS,
};
use std::collections::{HashMap, VecDeque};

/// Edges the controller keeps windows for.
pub const MAX_EDGES: usize = 10_000;
/// Proxy-made errors kept for the node pages.
pub const MAX_ERRORS: usize = 500;

/// The windows of one edge, in bytes (its key's names come on top).
pub const EDGE_BYTES: usize = std::mem::size_of::<EdgeWindows>();
// The bound docs/dashboard.md states rests on this (16 slots of at most 176 bytes).
const _: () = assert!(EDGE_BYTES <= 16 * 176 + 8);

const FINE_SLOT_MS: u64 = 10_000;
const FINE_SLOTS: usize = 6;
const COARSE_SLOT_MS: u64 = 60_000;
const COARSE_SLOTS: usize = 10;

/// The windows the API answers for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    OneMinute,
    TenMinutes,
}

impl Window {
    pub fn parse(text: &str) -> Option<Window> {
        match text {
            "1m" => Some(Window::OneMinute),
            "10m" => Some(Window::TenMinutes),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Window::OneMinute => "1m",
            Window::TenMinutes => "10m",
        }
    }

    fn slot_ms(self) -> u64 {
        match self {
            Window::OneMinute => FINE_SLOT_MS,
            Window::TenMinutes => COARSE_SLOT_MS,
        }
    }

    fn slots(self) -> usize {
        match self {
            Window::OneMinute => FINE_SLOTS,
            Window::TenMinutes => COARSE_SLOTS,
        }
    }

    /// How much time the window's slots cover at `now_ms`: the full slots and the part of
    /// the current one that has passed (rates divide by this).
    pub fn covered_ms(self, now_ms: u64) -> u64 {
        (self.slots() as u64 - 1) * self.slot_ms() + now_ms % self.slot_ms()
    }
}

/// One slot's counts: fixed size, so an edge's memory does not grow with its traffic.
#[derive(Clone, Copy, Default)]
struct Tally {
    /// Which slot of time this is (time / slot length); 0: never used.
    epoch: u32,
    requests: u32,
    client_errors: u32,
    server_errors: u32,
    mtls_requests: u32,
    latency: [u32; LATENCY_BUCKETS],
    flags: [u32; RESPONSE_FLAGS.len()],
    tcp_connections: u32,
    /// Bytes can pass 4 GiB a minute on one edge: 64 bits.
    tcp_bytes_sent: u64,
    tcp_bytes_received: u64,
}

impl Tally {
    fn add(&mut self, counts: &EdgeCounts) {
        let add =
            |into: &mut u32, n: u64| *into = into.saturating_add(n.min(u32::MAX as u64) as u32);
        add(&mut self.requests, counts.requests);
        add(&mut self.client_errors, counts.client_errors);
        add(&mut self.server_errors, counts.server_errors);
        add(&mut self.mtls_requests, counts.mtls_requests);
        for (into, n) in self.latency.iter_mut().zip(&counts.latency_buckets) {
            add(into, *n);
        }
        for (into, n) in self.flags.iter_mut().zip(&counts.flags) {
            add(into, *n);
        }
        add(&mut self.tcp_connections, counts.tcp_connections);
        self.tcp_bytes_sent = self.tcp_bytes_sent.saturating_add(counts.tcp_bytes_sent);
        self.tcp_bytes_received = self
            .tcp_bytes_received
            .saturating_add(counts.tcp_bytes_received);
    }

    fn add_into(&self, counts: &mut EdgeCounts) {
        counts.requests += u64::from(self.requests);
        counts.client_errors += u64::from(self.client_errors);
        counts.server_errors += u64::from(self.server_errors);
        counts.mtls_requests += u64::from(self.mtls_requests);
        counts.tcp_connections += u64::from(self.tcp_connections);
        counts.tcp_bytes_sent += self.tcp_bytes_sent;
        counts.tcp_bytes_received += self.tcp_bytes_received;
        counts.latency_buckets.resize(LATENCY_BUCKETS, 0);
        for (sum, n) in counts.latency_buckets.iter_mut().zip(&self.latency) {
            *sum += u64::from(*n);
        }
        if self.flags.iter().any(|f| *f > 0) {
            counts.flags.resize(RESPONSE_FLAGS.len(), 0);
            for (sum, n) in counts.flags.iter_mut().zip(&self.flags) {
                *sum += u64::from(*n);
            }
        }
    }
}

/// Both windows of one edge.
struct EdgeWindows {
    fine: [Tally; FINE_SLOTS],
    coarse: [Tally; COARSE_SLOTS],
    last_ms: u64,
}

impl EdgeWindows {
    fn new() -> Box<EdgeWindows> {
        Box::new(EdgeWindows {
            fine: [Tally::default(); FINE_SLOTS],
            coarse: [Tally::default(); COARSE_SLOTS],
            last_ms: 0,
        })
    }

    fn add(&mut self, counts: &EdgeCounts, now_ms: u64) {
        slot(&mut self.fine, now_ms, FINE_SLOT_MS).add(counts);
        slot(&mut self.coarse, now_ms, COARSE_SLOT_MS).add(counts);
        self.last_ms = now_ms;
    }

    fn sum(&self, window: Window, now_ms: u64) -> EdgeCounts {
        let slots: &[Tally] = match window {
            Window::OneMinute => &self.fine,
            Window::TenMinutes => &self.coarse,
        };
        let current = epoch(now_ms, window.slot_ms());
        let oldest = current.saturating_sub(window.slots() as u32 - 1);
        let mut counts = EdgeCounts::default();
        for tally in slots
            .iter()
            .filter(|t| t.epoch >= oldest && t.epoch <= current)
        {
            tally.add_into(&mut counts);
        }
        counts
    }
}

fn epoch(now_ms: u64, slot_ms: u64) -> u32 {
    (now_ms / slot_ms) as u32 + 1 // never 0: 0 marks an unused slot
}

/// The slot for `now_ms` in a ring, cleared when it last held an older period.
fn slot<const N: usize>(ring: &mut [Tally; N], now_ms: u64, slot_ms: u64) -> &mut Tally {
    let epoch = epoch(now_ms, slot_ms);
    let tally = &mut ring[epoch as usize % N];
    if tally.epoch != epoch {
        *tally = Tally {
            epoch,
            ..Tally::default()
        };
    }
    tally
}

/// Every edge's windows and the recent proxy-made errors.
#[derive(Default)]
pub struct Traffic {
    edges: HashMap<EdgeKey, Box<EdgeWindows>>,
    errors: VecDeque<ProxyError>,
    /// Edges left out: over [`MAX_EDGES`] here, or over a proxy's own limit.
    dropped_edges: u64,
    summaries: u64,
}

impl Traffic {
    /// Adds one proxy's summary at `now_ms`.
    pub fn record(&mut self, summary: &TrafficSummary, now_ms: u64) {
        self.summaries += 1;
        self.dropped_edges += summary.dropped_edges;
        for sample in &summary.edges {
            if !self.edges.contains_key(&sample.key) && !self.room_for_an_edge(now_ms) {
                self.dropped_edges += 1;
                continue;
            }
            self.edges
                .entry(sample.key.clone())
                .or_insert_with(EdgeWindows::new)
                .add(&sample.counts, now_ms);
        }
        for error in &summary.errors {
            if self.errors.len() == MAX_ERRORS {
                self.errors.pop_front();
            }
            self.errors.push_back(error.clone());
        }
    }

    /// Whether one more edge may be kept (silent ones are forgotten first, at the bound).
    fn room_for_an_edge(&mut self, now_ms: u64) -> bool {
        if self.edges.len() >= MAX_EDGES {
            self.forget_silent(now_ms);
        }
        self.edges.len() < MAX_EDGES
    }

    /// Every edge with traffic in `window`, summed over proxies and slots.
    pub fn edges(&mut self, window: Window, now_ms: u64) -> Vec<(EdgeKey, EdgeCounts)> {
        self.forget_silent(now_ms);
        let mut edges: Vec<(EdgeKey, EdgeCounts)> = self
            .edges
            .iter()
            .map(|(key, windows)| (key.clone(), windows.sum(window, now_ms)))
            .filter(|(_, counts)| !counts.is_empty())
            .collect();
        edges.sort_by(|a, b| a.0.cmp(&b.0));
        edges
    }

    /// The most recent proxy-made errors, newest first.
    pub fn errors(&self) -> impl Iterator<Item = &ProxyError> {
        self.errors.iter().rev()
    }

    pub fn dropped_edges(&self) -> u64 {
        self.dropped_edges
    }

    pub fn edge_count(&self) -> usize {
        self.edges.len()
    }

    pub fn summaries(&self) -> u64 {
        self.summaries
    }

    /// Drops edges that saw nothing for the 10-minute window: they would only show zeros.
    fn forget_silent(&mut self, now_ms: u64) {
        let horizon = COARSE_SLOT_MS * COARSE_SLOTS as u64;
        self.edges
            .retain(|_, windows| now_ms.saturating_sub(windows.last_ms) < horizon);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::summary::{EdgeSample, NodeKind, NodeRef, Reporter};

    fn sample(workload: &str, requests: u64, errors: u64) -> EdgeSample {
        let mut latency_buckets = vec![0; LATENCY_BUCKETS];
        latency_buckets[2] = requests;
        EdgeSample {
            key: EdgeKey {
                reporter: Reporter::Source,
                source: NodeRef::new(NodeKind::Gateway, "infra", "gw"),
                service: Some(NodeRef::new(NodeKind::Service, "weather", "weather")),
                workload: Some(NodeRef::new(NodeKind::Workload, "weather", workload)),
            },
            counts: EdgeCounts {
                requests,
                server_errors: errors,
                latency_buckets,
                ..EdgeCounts::default()
            },
        }
    }

    fn summary(samples: Vec<EdgeSample>) -> TrafficSummary {
        TrafficSummary {
            interval_ms: 5_000,
            edges: samples,
            ..TrafficSummary::default()
        }
    }

    #[test]
    fn proxies_add_up_and_old_slots_leave_the_one_minute_window() {
        let mut traffic = Traffic::default();
        let start = 1_000_000_000;
        traffic.record(&summary(vec![sample("v1", 90, 1)]), start);
        traffic.record(&summary(vec![sample("v1", 10, 0)]), start + 1);
        let edges = traffic.edges(Window::OneMinute, start + 2);
        assert_eq!(edges.len(), 1);
        assert_eq!(edges[0].1.requests, 100);
        assert_eq!(edges[0].1.server_errors, 1);
        assert_eq!(edges[0].1.latency_buckets[2], 100);
        // 70 s later: out of the 1-minute window, still in the 10-minute one.
        let later = start + 70_000;
        assert!(traffic.edges(Window::OneMinute, later).is_empty());
        assert_eq!(traffic.edges(Window::TenMinutes, later)[0].1.requests, 100);
        // 11 minutes later: forgotten.
        assert!(traffic
            .edges(Window::TenMinutes, start + 660_000)
            .is_empty());
        assert_eq!(traffic.edge_count(), 0);
    }

    #[test]
    fn edges_over_the_bound_are_dropped_and_counted() {
        let mut traffic = Traffic::default();
        let now = 5_000_000;
        let samples = (0..MAX_EDGES + 3)
            .map(|i| sample(&format!("w{i}"), 1, 0))
            .collect();
        traffic.record(&summary(samples), now);
        assert_eq!(traffic.edge_count(), MAX_EDGES);
        assert_eq!(traffic.dropped_edges(), 3);
    }
}
