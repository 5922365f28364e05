//! `ferry_requests_total` and `ferry_request_duration_seconds` series, looked up once per
//! worker thread and label set. A lookup by label values hashes four strings and takes the
//! vector's lock on every request; the cache keys on the route and cluster objects themselves
//! and holds them, so a cached address is never reused by another object.

use prometheus::{Histogram, IntCounter};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::compiled::{CompiledCluster, CompiledRoute};
use crate::metrics::Metrics;

/// Entries kept per worker before the cache starts over (routes x clusters x codes in use).
const MAX_ENTRIES: usize = 4096;

#[derive(Hash, PartialEq, Eq)]
struct Key {
    metrics: u64,
    port: u16,
    route: usize,
    cluster: usize,
    code: u16,
}

pub struct RequestSeries {
    pub requests: IntCounter,
    pub duration: Histogram,
    _route: Option<Arc<CompiledRoute>>,
    _cluster: Option<Arc<CompiledCluster>>,
}

type Cache = HashMap<Key, Arc<RequestSeries>, foldhash::fast::RandomState>;

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// The series of a request on `port` that ended with `code` (0: no response).
pub fn series(
    metrics: &Metrics,
    port: u16,
    route: Option<&Arc<CompiledRoute>>,
    cluster: Option<&Arc<CompiledCluster>>,
    code: u16,
) -> Arc<RequestSeries> {
    let key = Key {
        metrics: metrics.id,
        port,
        route: route.map_or(0, |r| Arc::as_ptr(r) as usize),
        cluster: cluster.map_or(0, |c| Arc::as_ptr(c) as usize),
        code,
    };
    if let Some(found) = CACHE.with(|cache| cache.borrow().get(&key).cloned()) {
        return found;
    }
    let made = Arc::new(lookup(metrics, port, route, cluster, code));
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(key, made.clone());
    });
    made
}

fn lookup(
    metrics: &Metrics,
    port: u16,
    route: Option<&Arc<CompiledRoute>>,
    cluster: Option<&Arc<CompiledCluster>>,
    code: u16,
) -> RequestSeries {
    let listener = port.to_string();
    let status = http::StatusCode::from_u16(code).ok();
    let code = status.as_ref().map_or("0", |s| s.as_str());
    let route_name = route.map_or("none", |r| &r.route.name);
    let backend = cluster.map_or("none", |c| &c.cluster.name);
    RequestSeries {
        requests: metrics.requests.with_label_values(&[
            listener.as_str(),
            route_name,
            backend,
            code,
        ]),
        duration: metrics
            .request_duration
            .with_label_values(&[listener.as_str()]),
        _route: route.cloned(),
        _cluster: cluster.cloned(),
    }
}
