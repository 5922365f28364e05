//! Requests in progress per (limit, client address), for ingress-nginx's
//! `limit-connections` (nginx's `limit_conn` keyed by `$binary_remote_addr`, which counts a
//! connection while one of its requests is being processed). A request holds a [`Permit`]
//! from admission until it ends, whatever way; the count goes down when the permit drops.
//! An entry exists only while a request holds it, so the table is bounded by the requests
//! in progress.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};

const SHARDS: usize = 16;

pub struct InFlight {
    shards: [Mutex<HashMap<u64, u32>>; SHARDS],
    hasher: std::collections::hash_map::RandomState,
}

/// One request's place in the count; leaving it (drop) frees the place.
#[derive(Debug)]
pub struct Permit {
    key: u64,
}

/// The proxy's table, shared by every route and kept across snapshot swaps (requests in
/// progress outlive the snapshot that admitted them).
pub fn in_flight() -> &'static InFlight {
    static TABLE: OnceLock<InFlight> = OnceLock::new();
    TABLE.get_or_init(InFlight::new)
}

impl InFlight {
    fn new() -> InFlight {
        InFlight {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            hasher: Default::default(),
        }
    }

    /// A place for a request of `client` under the limit `name` allowing `max` at once,
    /// or None when all are taken.
    pub fn try_enter(
        &'static self,
        name: &str,
        client: Option<IpAddr>,
        max: u32,
    ) -> Option<Permit> {
        let key = self.hasher.hash_one((name, client));
        let mut shard = self.shard(key);
        let count = shard.entry(key).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Permit { key })
    }

    /// Requests in progress under `name` from `client` (tests, admin).
    pub fn count(&self, name: &str, client: Option<IpAddr>) -> u32 {
        let key = self.hasher.hash_one((name, client));
        self.shard(key).get(&key).copied().unwrap_or(0)
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, HashMap<u64, u32>> {
        let shard = &self.shards[(key as usize) % SHARDS];
        shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn leave(&self, key: u64) {
        let mut shard = self.shard(key);
        if let Some(count) = shard.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                shard.remove(&key);
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        in_flight().leave(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_taken_and_given_back() {
        let client = Some("192.0.2.7".parse().unwrap());
        let other = Some("192.0.2.8".parse().unwrap());
        let table = in_flight();
        let first = table.try_enter("Ingress/t/a", client, 2).expect("first");
        let second = table.try_enter("Ingress/t/a", client, 2).expect("second");
        assert!(
            table.try_enter("Ingress/t/a", client, 2).is_none(),
            "a third waits"
        );
        assert!(
            table.try_enter("Ingress/t/a", other, 2).is_some(),
            "per client"
        );
        assert!(
            table.try_enter("Ingress/t/b", client, 2).is_some(),
            "per limit"
        );
        drop(first);
        let third = table
            .try_enter("Ingress/t/a", client, 2)
            .expect("a place came back");
        assert_eq!(table.count("Ingress/t/a", client), 2);
        drop((second, third));
        assert_eq!(table.count("Ingress/t/a", client), 0);
        let key = table.hasher.hash_one(("Ingress/t/a", client));
        assert!(
            !table.shard(key).contains_key(&key),
            "no entry without a request"
        );
    }
}
