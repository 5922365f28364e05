//! Choosing an endpoint: round robin, random, least request (power of two choices), or a
//! consistent-hash ring on which moving one endpoint moves only its share of keys.

use ferry_model::{Endpoint, LoadBalancer};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Virtual nodes per endpoint on the hash ring.
const RING_REPLICAS: usize = 160;

pub enum Balancer {
    RoundRobin(AtomicUsize),
    Random,
    LeastRequest,
    /// (hash, endpoint index), sorted by hash.
    Ring(Vec<(u64, usize)>),
}

impl Balancer {
    pub fn new(policy: &LoadBalancer, endpoints: &[Endpoint]) -> Self {
        match policy {
            LoadBalancer::RoundRobin => Balancer::RoundRobin(AtomicUsize::new(0)),
            LoadBalancer::Random => Balancer::Random,
            LoadBalancer::LeastRequest => Balancer::LeastRequest,
            LoadBalancer::ConsistentHash(_) => Balancer::Ring(ring(endpoints)),
        }
    }

    /// Picks among `candidates` (indices into the endpoint list, never empty). `active`
    /// holds in-flight requests per endpoint; `key` is the request's hash key, if any.
    pub fn pick(&self, candidates: &[usize], active: &[AtomicU32], key: Option<u64>) -> usize {
        match self {
            Balancer::RoundRobin(cursor) => {
                candidates[cursor.fetch_add(1, Ordering::Relaxed) % candidates.len()]
            }
            Balancer::Random => candidates[rand::random_range(0..candidates.len())],
            Balancer::LeastRequest => least_request(candidates, active),
            Balancer::Ring(ring) => match key {
                Some(key) => on_ring(ring, key, candidates),
                None => candidates[rand::random_range(0..candidates.len())],
            },
        }
    }
}

fn least_request(candidates: &[usize], active: &[AtomicU32]) -> usize {
    let a = candidates[rand::random_range(0..candidates.len())];
    let b = candidates[rand::random_range(0..candidates.len())];
    let load = |i: usize| active.get(i).map_or(0, |n| n.load(Ordering::Relaxed));
    if load(b) < load(a) {
        b
    } else {
        a
    }
}

/// The first candidate at or after `key` going round the ring.
fn on_ring(ring: &[(u64, usize)], key: u64, candidates: &[usize]) -> usize {
    let start = ring.partition_point(|(h, _)| *h < key);
    (0..ring.len())
        .map(|offset| ring[(start + offset) % ring.len()].1)
        .find(|i| candidates.contains(i))
        .unwrap_or(candidates[0])
}

fn ring(endpoints: &[Endpoint]) -> Vec<(u64, usize)> {
    let mut ring: Vec<(u64, usize)> = endpoints
        .iter()
        .enumerate()
        .flat_map(|(i, e)| (0..RING_REPLICAS).map(move |r| (hash_of(&(e.address, r)), i)))
        .collect();
    ring.sort_unstable();
    ring
}

/// A hash that is stable for the life of the process (the ring and the keys must agree).
pub fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn endpoints(n: u16) -> Vec<Endpoint> {
        (0..n)
            .map(|i| Endpoint {
                address: SocketAddr::from(([10, 0, 0, i as u8 + 1], 80)),
                pod: None,
                workload: None,
                mtls: None,
            })
            .collect()
    }

    #[test]
    fn ring_moves_only_the_removed_endpoints_keys() {
        let before = endpoints(5);
        let after: Vec<Endpoint> = before[..4].to_vec();
        let (ring_before, ring_after) = (ring(&before), ring(&after));
        let all: Vec<usize> = (0..5).collect();
        let kept: Vec<usize> = (0..4).collect();
        let mut moved = 0;
        for key in 0..10_000u64 {
            let key = hash_of(&key);
            let a = on_ring(&ring_before, key, &all);
            let b = on_ring(&ring_after, key, &kept);
            if a != b {
                assert_eq!(a, 4, "only keys of the removed endpoint may move");
                moved += 1;
            }
        }
        assert!(
            (1000..3000).contains(&moved),
            "about a fifth of keys moved: {moved}"
        );
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let active: Vec<AtomicU32> = vec![AtomicU32::new(10), AtomicU32::new(0)];
        let picks: usize = (0..1000)
            .filter(|_| least_request(&[0, 1], &active) == 1)
            .count();
        assert!(picks > 700, "{picks}");
    }
}
