//! Per-cluster runtime state: circuit breaker, load balancer, outlier detection, and the
//! in-flight counts that least-request balancing and the retry budget need.

pub mod balancer;
pub mod breaker;
pub mod outlier;

use ferry_model::{Cluster, RetryBudget};
use std::sync::atomic::{AtomicU32, Ordering};

use balancer::Balancer;
use breaker::Breaker;
use outlier::{Outcome, Outlier};

pub struct ClusterState {
    pub breaker: Breaker,
    balancer: Balancer,
    outlier: Outlier,
    /// In-flight requests per endpoint.
    active: Vec<AtomicU32>,
    active_requests: AtomicU32,
    active_retries: AtomicU32,
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
        }
    }

    /// An endpoint index for a new try: not ejected, and not tried before by this request
    /// when another choice exists. None when the cluster has no endpoints.
    pub fn pick(&self, key: Option<u64>, tried: &[usize]) -> Option<usize> {
        if self.active.is_empty() {
            return None;
        }
        let eligible = self.outlier.eligible();
        let fresh: Vec<usize> = (0..self.active.len())
            .filter(|i| eligible[*i] && !tried.contains(i))
            .collect();
        let candidates = if fresh.is_empty() {
            (0..self.active.len())
                .filter(|i| eligible[*i])
                .collect::<Vec<_>>()
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

    /// Takes a retry slot if the budget (share of active requests, or the connection pool's
    /// maxRetries) allows one more concurrent retry. Release with `end_retry`.
    pub fn try_begin_retry(&self, budget: Option<&RetryBudget>, max_retries: Option<u32>) -> bool {
        let budget = budget.cloned().unwrap_or_default();
        let active = self.active_requests.load(Ordering::Acquire);
        let by_budget = (active * budget.percent / 100).max(budget.min_retry_concurrency);
        let allowed = max_retries.map_or(by_budget, |m| m.min(by_budget.max(m)));
        let current = self.active_retries.fetch_add(1, Ordering::AcqRel);
        if current >= allowed {
            self.active_retries.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    pub fn end_retry(&self) {
        self.active_retries.fetch_sub(1, Ordering::AcqRel);
    }
}
