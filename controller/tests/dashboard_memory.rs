//! The dashboard's memory bound, measured: 1,000 simulated proxies, 10 edges each (10,000
//! edges), every proxy sending a summary every 5 s for 10 simulated minutes (the whole
//! 10-minute window), the summaries decoded from the push stream's JSON lines as the
//! controller decodes them. A counting allocator (stats_alloc) measures what the traffic windows hold.
//!
//! `cargo test -p ferry-controller --test dashboard_memory -- --nocapture` prints the figure.

use ferry_controller::dashboard::traffic::{Traffic, Window, EDGE_BYTES, MAX_EDGES};
use ferry_model::push::{encode_line, LineDecoder, ProxyFrame, MAX_PROXY_FRAME_BYTES};
use ferry_model::summary::{
    EdgeCounts, EdgeKey, EdgeSample, NodeKind, NodeRef, Reporter, TrafficSummary, LATENCY_BUCKETS,
    SUMMARY_INTERVAL_MS,
};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated and not freed since `region` began.
fn live(region: &Region<'_, System>) -> isize {
    let change = region.change();
    change.bytes_allocated as isize - change.bytes_deallocated as isize + change.bytes_reallocated
}

const PROXIES: usize = 1_000;
const EDGES_PER_PROXY: usize = 10;

/// Proxy `p`'s summary: its workload calls 10 Services' workloads, with some errors.
fn summary_of(p: usize) -> TrafficSummary {
    let edges = (0..EDGES_PER_PROXY)
        .map(|e| {
            let mut latency_buckets = vec![0; LATENCY_BUCKETS];
            latency_buckets[3] = 40;
            latency_buckets[6] = 2;
            EdgeSample {
                key: EdgeKey {
                    reporter: Reporter::Source,
                    source: NodeRef::new(NodeKind::Workload, "shop", &format!("client-{p}")),
                    service: Some(NodeRef::new(NodeKind::Service, "shop", &format!("svc-{e}"))),
                    workload: Some(NodeRef::new(
                        NodeKind::Workload,
                        "shop",
                        &format!("svc-{e}-v1"),
                    )),
                },
                counts: EdgeCounts {
                    requests: 42,
                    server_errors: 1,
                    mtls_requests: 42,
                    latency_buckets,
                    ..EdgeCounts::default()
                },
            }
        })
        .collect();
    TrafficSummary {
        interval_ms: SUMMARY_INTERVAL_MS,
        edges,
        ..TrafficSummary::default()
    }
}

/// What the controller's stream reader gets: the frame, encoded and decoded again.
fn over_the_wire(summary: TrafficSummary) -> TrafficSummary {
    let line = encode_line(&ProxyFrame::Summary { summary });
    assert!(line.len() < MAX_PROXY_FRAME_BYTES);
    let mut decoder = LineDecoder::with_limit(MAX_PROXY_FRAME_BYTES);
    match decoder.push::<ProxyFrame>(&line).unwrap().pop() {
        Some(ProxyFrame::Summary { summary }) => summary,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_thousand_proxies_and_ten_thousand_edges_fit_the_stated_bound() {
    let summaries: Vec<TrafficSummary> =
        (0..PROXIES).map(|p| over_the_wire(summary_of(p))).collect();
    let region = Region::new(ALLOCATOR);
    let mut traffic = Traffic::default();
    let start = 1_800_000_000_000u64;
    let rounds = 10 * 60 * 1000 / SUMMARY_INTERVAL_MS;
    for round in 0..rounds {
        let now = start + round * SUMMARY_INTERVAL_MS;
        for summary in &summaries {
            traffic.record(summary, now);
        }
    }
    let held = live(&region) as usize;
    let end = start + rounds * SUMMARY_INTERVAL_MS;
    assert_eq!(traffic.edge_count(), PROXIES * EDGES_PER_PROXY);
    assert!(traffic.edge_count() <= MAX_EDGES);
    let per_edge = held / traffic.edge_count();
    println!(
        "{PROXIES} proxies, {} edges, {rounds} summaries each: {:.1} MiB held ({per_edge} bytes per edge, of which {EDGE_BYTES} windows)",
        traffic.edge_count(),
        held as f64 / (1024.0 * 1024.0),
    );
    // The bound docs/dashboard.md states: 10,000 edges in under 40 MiB.
    assert!(held < 40 * 1024 * 1024, "{held} bytes");
    // The windows still add up: one edge saw 42 requests every 5 s.
    let edges = traffic.edges(Window::OneMinute, end - 1);
    assert_eq!(edges.len(), PROXIES * EDGES_PER_PROXY);
    assert!(
        edges.iter().all(|(_, c)| c.requests >= 42 * 10),
        "{:?}",
        edges[0].1
    );
    let more = Region::new(ALLOCATOR);
    for summary in &summaries {
        traffic.record(summary, end);
    }
    let grown = live(&more);
    assert!(
        grown < 1024 * 1024,
        "more summaries grew the windows by {grown} bytes"
    );
}
