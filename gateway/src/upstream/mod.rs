//! Per-cluster runtime state: circuit breaker, load balancer, outlier detection, and the
//! in-flight counts that least-request balancing and the retry budget need.

pub mod balancer;
pub mod breaker;
pub mod keepalive;
pub mod outlier;

use ferry_model::{Cluster, RetryBudget};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use balancer::Balancer;
use breaker::Breaker;
use outlier::{Outcome, Outlier};

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct EndpointStatus {
    pub active_requests: u32,
    pub ejected: bool,
}

pub struct ClusterState {
    pub breaker: Breaker,
    balancer: Balancer,
    outlier: Outlier,
    /// In-flight requests per endpoint.
    active: Vec<AtomicU32>,
    active_requests: AtomicU32,
    active_retries: AtomicU32,
    /// Requests sent on each pooled upstream connection (by socket fd), for
    /// maxRequestsPerConnection.
    connection_uses: Mutex<HashMap<i32, u32>>,
}

impl ClusterState {
    pub fn new(cluster: &Cluster) -> Self {
        let policy = &cluster.policy;
        let endpoints = cluster.endpoints.len();
        ClusterState {
            breaker: Breaker::new(&policy.limits),
            balancer: Balancer::new(&policy.load_balancer, &cluster.endpoints),
            outlier: Outlier::new(policy.outlier.clone(), endpoints),
            active: (0..endpoints).map(|_| AtomicU32::new(0)).collect(),
            active_requests: AtomicU32::new(0),
            active_retries: AtomicU32::new(0),
            connection_uses: Mutex::new(HashMap::new()),
        }
    }

    /// An endpoint index for a new try: not ejected, and not tried before by this request
    /// when another choice exists. None when the cluster has no endpoints.
    pub fn pick(&self, key: Option<u64>, tried: &[usize]) -> Option<usize> {
        if self.active.is_empty() {
            return None;
        }
        // Inline lists: this runs for every request (no allocation with up to 16 endpoints).
        type Candidates = smallvec::SmallVec<[usize; 16]>;
        let eligible = self.outlier.eligible();
        let fresh: Candidates = (0..self.active.len())
            .filter(|i| eligible[*i] && !tried.contains(i))
            .collect();
        let candidates = if fresh.is_empty() {
            (0..self.active.len())
                .filter(|i| eligible[*i])
                .collect::<Candidates>()
        } else {
            fresh
        };
        let candidates = if candidates.is_empty() {
            (0..self.active.len()).collect()
        } else {
            candidates
        };
        Some(self.balancer.pick(&candidates, &self.active, key))
    }

    /// Run-time state of each endpoint: in-flight requests and ejection.
    pub fn endpoint_status(&self) -> Vec<EndpointStatus> {
        self.active
            .iter()
            .enumerate()
            .map(|(i, n)| EndpointStatus {
                active_requests: n.load(Ordering::Acquire),
                ejected: self.outlier.is_ejected(i),
            })
            .collect()
    }

    pub fn begin(&self, endpoint: usize) {
        self.active_requests.fetch_add(1, Ordering::AcqRel);
        if let Some(n) = self.active.get(endpoint) {
            n.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub fn end(&self, endpoint: usize, outcome: Option<Outcome>) {
        self.active_requests.fetch_sub(1, Ordering::AcqRel);
        if let Some(n) = self.active.get(endpoint) {
            n.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(outcome) = outcome {
            self.outlier.record(endpoint, outcome);
        }
    }

    /// Takes a retry slot if concurrent retries stay within the limit: the retry budget when
    /// one is configured (it takes precedence, as in Envoy), else the connection pool's
    /// maxRetries, else a default budget. Release with `end_retry`.
    pub fn try_begin_retry(&self, budget: Option<&RetryBudget>, max_retries: Option<u32>) -> bool {
        let from_budget = |b: &RetryBudget| {
            let active = self.active_requests.load(Ordering::Acquire);
            (active.saturating_mul(b.percent) / 100).max(b.min_retry_concurrency)
        };
        let allowed = match (budget, max_retries) {
            (Some(b), _) => from_budget(b),
            (None, Some(max)) => max,
            (None, None) => from_budget(&RetryBudget::default()),
        };
        let current = self.active_retries.fetch_add(1, Ordering::AcqRel);
        if current >= allowed {
            self.active_retries.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Counts a request on connection `fd` (a new connection when not `reused`); true when
    /// this is the last request `limit` allows on it.
    pub fn last_use_of_connection(&self, fd: i32, reused: bool, limit: u32) -> bool {
        let mut uses = self
            .connection_uses
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let count = if reused {
            uses.get(&fd).copied().unwrap_or(0) + 1
        } else {
            1
        };
        if count >= limit {
            uses.remove(&fd);
            true
        } else {
            uses.insert(fd, count);
            false
        }
    }

    pub fn end_retry(&self) {
        self.active_retries.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::{ClusterPolicy, Limits, Meta, UpstreamProtocol};

    fn state(max_retries: Option<u32>) -> ClusterState {
        let policy = ClusterPolicy {
            limits: Limits {
                max_retries,
                ..Limits::default()
            },
            ..ClusterPolicy::default()
        };
        let cluster = Cluster {
            name: "c".into(),
            meta: Meta::new("Service", "ns", "c"),
            service: Default::default(),
            protocol: UpstreamProtocol::Http1,
            endpoints: Vec::new().into(),
            policy,
            tls: None,
            dns: Vec::new().into(),
            original_destination: false,
        };
        ClusterState::new(&cluster)
    }

    #[test]
    fn retry_limits_budget_first_then_max_retries() {
        let s = state(Some(1));
        assert!(s.try_begin_retry(None, Some(1)));
        assert!(
            !s.try_begin_retry(None, Some(1)),
            "maxRetries caps concurrent retries"
        );
        s.end_retry();
        let budget = RetryBudget {
            percent: 20,
            min_retry_concurrency: 2,
        };
        let s = state(Some(1));
        assert!(
            s.try_begin_retry(Some(&budget), Some(1)) && s.try_begin_retry(Some(&budget), Some(1)),
            "a budget overrides maxRetries"
        );
        assert!(!s.try_begin_retry(Some(&budget), Some(1)));
        for _ in 0..100 {
            s.begin(0);
        }
        assert!(
            s.try_begin_retry(Some(&budget), None),
            "20% of 100 active requests allows 20"
        );
    }
}
