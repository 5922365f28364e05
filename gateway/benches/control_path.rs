//! Control-path benchmarks: compiling + swapping a snapshot, and matching a request, at 10,
//! 1k and 10k routes.
//!
//! Routes are spread as a gateway fleet sees them: one host per 10 routes (`svc-N.example.com`),
//! paths mixing exact, prefix and (one in ten) regex matches, plus a header match on some.
//! The `one_host` groups put every route on a single host, as one big Ingress or HTTPRoute
//! does: from 32 routes a host's routes are found through its path index, not a scan.
//!
//!   cargo bench -p ferry-gateway --bench control_path

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ferry_gateway::compiled::{CompiledSnapshot, RequestView};
use ferry_gateway::store::SnapshotStore;
use ferry_model::{
    Action, BackendTarget, Cluster, Endpoint, HeaderMatch, Listener, Meta, PathMatch, Route,
    RouteMatch, ServiceId, Snapshot, StringMatch, UpstreamProtocol, VirtualHost, WeightedBackend,
};
use std::hint::black_box;
use std::sync::Arc;

const SIZES: [usize; 3] = [10, 1_000, 10_000];
const PORT: u16 = 8080;

fn route(i: usize) -> Route {
    let path = match i % 10 {
        0 => PathMatch::Regex(format!("/api/v{i}/items/[0-9]+").into()),
        1..=4 => PathMatch::Exact(format!("/exact/{i}").into()),
        _ => PathMatch::SegmentPrefix(format!("/prefix/{i}").into()),
    };
    let headers: Arc<[HeaderMatch]> = if i % 10 == 3 {
        vec![HeaderMatch {
            name: "x-canary".into(),
            value: StringMatch::Exact("yes".into()),
        }]
        .into()
    } else {
        Vec::new().into()
    };
    Route {
        meta: Meta::new("HTTPRoute", "bench", &format!("r{i}")),
        name: format!("bench/r{i}/rule/0/match/0").into(),
        matcher: RouteMatch {
            path,
            headers,
            ..RouteMatch::default()
        },
        filters: Vec::new().into(),
        action: Action::Forward(
            vec![WeightedBackend {
                weight: 1,
                target: BackendTarget::Cluster(format!("bench/svc-{}:80", i % 100).into()),
                filters: Vec::new().into(),
            }]
            .into(),
        ),
        policy: Default::default(),
    }
}

/// `routes` routes, `per_host` of them on each host.
fn snapshot(routes: usize, per_host: usize, version: u64) -> Snapshot {
    let hosts = routes.div_ceil(per_host);
    let virtual_hosts: Vec<VirtualHost> = (0..hosts)
        .map(|h| VirtualHost {
            hostname: format!("svc-{h}.example.com").into(),
            routes: (h * per_host..((h + 1) * per_host).min(routes))
                .map(route)
                .collect::<Vec<_>>()
                .into(),
        })
        .collect();
    let clusters: Vec<Cluster> = (0..100)
        .map(|c| Cluster {
            name: format!("bench/svc-{c}:80").into(),
            meta: Meta::new("Service", "bench", &format!("svc-{c}")),
            service: ServiceId {
                namespace: "bench".into(),
                name: format!("svc-{c}").into(),
            },
            protocol: UpstreamProtocol::Http1,
            endpoints: (0..3)
                .map(|e| Endpoint {
                    address: format!("10.0.{c}.{}:8080", e + 1).parse().unwrap(),
                    pod: None,
                    workload: None,
                    mtls: None,
                })
                .collect::<Vec<_>>()
                .into(),
            policy: Default::default(),
            tls: None,
            dns: Vec::new().into(),
            original_destination: false,
        })
        .collect();
    Snapshot {
        version,
        outbound: Vec::new().into(),
        registry_only: None,
        peer_authentications: Vec::new().into(),
        authorization: Vec::new().into(),
        request_authentication: Vec::new().into(),
        listeners: vec![Listener {
            name: "http".into(),
            port: PORT,
            sources: Vec::new().into(),
            virtual_hosts: virtual_hosts.into(),
            tls: None,
            stream: None,
            passthrough: None,
        }]
        .into(),
        clusters: clusters.into(),
    }
}

fn compile_and_swap_routes(c: &mut Criterion, name: &str, per_host: impl Fn(usize) -> usize) {
    let mut group = c.benchmark_group(name);
    group.sample_size(20);
    for size in SIZES {
        let per_host = per_host(size);
        let store = SnapshotStore::default();
        let first = Arc::new(
            CompiledSnapshot::compile(Arc::new(snapshot(size, per_host, 1)), None).unwrap(),
        );
        store.swap(first);
        let next = Arc::new(snapshot(size, per_host, 2));
        group.bench_with_input(BenchmarkId::from_parameter(size), &next, |b, next| {
            b.iter(|| {
                let previous = store.load();
                let compiled =
                    CompiledSnapshot::compile(next.clone(), previous.as_deref()).unwrap();
                store.swap(Arc::new(compiled));
            })
        });
    }
    group.finish();
}

/// Requests that hit the last route of a host (the longest scan within it), a regex route
/// and a miss.
fn match_requests(c: &mut Criterion, name: &str, per_host: impl Fn(usize) -> usize) {
    let mut group = c.benchmark_group(name);
    let headers = http::HeaderMap::new();
    for size in SIZES {
        let per_host = per_host(size);
        let compiled =
            CompiledSnapshot::compile(Arc::new(snapshot(size, per_host, 1)), None).unwrap();
        let last = size - 1;
        let host = format!("svc-{}.example.com", last / per_host);
        let regex_route = (last / 10) * 10;
        let regex_host = format!("svc-{}.example.com", regex_route / per_host);
        let regex_path = format!("/api/v{regex_route}/items/42");
        let last_path = format!("/prefix/{last}/x");
        let cases = [
            (host.as_str(), last_path.as_str(), true),
            (regex_host.as_str(), regex_path.as_str(), true),
            (host.as_str(), "/nowhere", false),
        ];
        group.bench_with_input(BenchmarkId::from_parameter(size), &cases, |b, cases| {
            b.iter(|| {
                for (host, path, hit) in cases {
                    let request = RequestView {
                        port: PORT,
                        host,
                        path,
                        query: None,
                        method: "GET",
                        headers: &headers,
                    };
                    let found = compiled.route(black_box(&request)).is_some();
                    assert_eq!(found, *hit, "{host}{path}");
                }
            })
        });
    }
    group.finish();
}

fn compile_and_swap(c: &mut Criterion) {
    compile_and_swap_routes(c, "compile_and_swap", |_| 10);
}

fn compile_and_swap_one_host(c: &mut Criterion) {
    compile_and_swap_routes(c, "compile_and_swap_one_host", |size| size);
}

fn match_mixed_hosts(c: &mut Criterion) {
    match_requests(c, "match_3_requests_10_routes_per_host", |_| 10);
}

fn match_one_host(c: &mut Criterion) {
    match_requests(c, "match_3_requests_one_host", |size| size);
}

criterion_group!(
    benches,
    compile_and_swap,
    compile_and_swap_one_host,
    match_mixed_hosts,
    match_one_host
);
criterion_main!(benches);
