//! The tries of one request: deadline, endpoint choice, retry decisions and backoff.

use ferry_model::{RetryOn, RoutePolicy};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::compiled::CompiledCluster;
use crate::upstream::breaker::Admission;
use crate::upstream::outlier::Outcome;

/// How a try ended badly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Status(u16),
    Connect,
    /// Connection reset or closed before a complete response.
    Reset,
    /// An HTTP/2 upstream refused the stream (RST_STREAM REFUSED_STREAM): it never
    /// processed the request, so a retry is always safe.
    RefusedStream,
    /// The per-try (or overall) timeout expired.
    Timeout,
}

/// Envoy's retry_on semantics: `5xx` also covers connect failures, resets and timeouts;
/// `gateway-error` covers 502/503/504, connect failures and timeouts.
pub fn retriable(on: &RetryOn, failure: Failure) -> bool {
    match failure {
        Failure::Status(code) => {
            (on.server_error && code >= 500)
                || (on.gateway_error && matches!(code, 502..=504))
                || (on.retriable_4xx && code == 409)
                || on.status_codes.contains(&code)
        }
        Failure::Connect => on.connect_failure || on.server_error || on.gateway_error,
        Failure::Reset => on.reset || on.server_error,
        Failure::RefusedStream => on.refused_stream || on.reset || on.server_error,
        Failure::Timeout => on.server_error || on.gateway_error,
    }
}

/// Full-jitter exponential backoff before retry number `retry` (1-based).
pub fn backoff(base_ms: u64, max_ms: u64, retry: u32) -> Duration {
    let ceiling = base_ms
        .saturating_mul(1 << retry.saturating_sub(1).min(16))
        .min(max_ms);
    Duration::from_millis(if ceiling == 0 {
        0
    } else {
        rand::random_range(0..=ceiling)
    })
}

/// Per-request try bookkeeping.
#[derive(Default)]
pub struct Tries {
    /// Retries performed so far.
    pub retries: u32,
    pub deadline: Option<Instant>,
    /// Endpoint indices already tried.
    pub tried: smallvec::SmallVec<[usize; 4]>,
    /// The endpoint of the try in progress.
    pub current: Option<(usize, SocketAddr)>,
    /// The endpoint of the latest try, kept for error messages.
    pub last_address: Option<SocketAddr>,
    pub admission: Option<Admission>,
    /// A retry slot of the cluster's budget is held.
    holds_retry_slot: bool,
    /// The last failure, when the request ended after retries.
    pub last_failure: Option<Failure>,
}

impl Tries {
    pub fn start(&mut self, cluster: &CompiledCluster, index: usize, address: SocketAddr) {
        cluster.state.begin(index);
        self.current = Some((index, address));
        self.last_address = Some(address);
        self.tried.push(index);
    }

    /// The endpoint of the try in progress.
    pub fn current_endpoint<'c>(
        &self,
        cluster: &'c CompiledCluster,
    ) -> Option<&'c ferry_model::Endpoint> {
        let (index, _) = self.current?;
        cluster.cluster.endpoints.get(index)
    }

    /// Ends the try in progress, feeding its outcome to outlier detection.
    pub fn finish(&mut self, cluster: &CompiledCluster, outcome: Option<Outcome>) {
        if let Some((index, _)) = self.current.take() {
            cluster.state.end(index, outcome);
        }
    }

    /// Time left before the overall deadline; Some(ZERO) once it passed.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The read timeout for the next try: the per-try limit, cut to the overall deadline.
    pub fn try_timeout(&self, policy: &RoutePolicy) -> Option<Duration> {
        let per_try = policy.per_try_timeout_ms.map(Duration::from_millis);
        shortest(per_try, self.remaining())
    }

    /// The longest wait for the next bytes of a response: the try's limit, or the
    /// cluster's read timeout when that is shorter.
    pub fn read_timeout(
        &self,
        policy: &RoutePolicy,
        cluster: Option<&ferry_model::ClusterPolicy>,
    ) -> Option<Duration> {
        let read = cluster.and_then(|c| c.read_timeout_ms.map(Duration::from_millis));
        shortest(self.try_timeout(policy), read)
    }

    /// Decides whether `failure` earns another try, and if so books it (retry count, budget
    /// slot). The caller marks the Pingora error retriable.
    pub fn book_retry(
        &mut self,
        policy: &RoutePolicy,
        cluster: &Arc<CompiledCluster>,
        failure: Failure,
        body_truncated: bool,
    ) -> bool {
        self.last_failure = Some(failure);
        let Some(retry) = &policy.retry else {
            return false;
        };
        let allowed = self.retries < retry.attempts
            && retriable(&retry.retry_on, failure)
            && !body_truncated
            && self.remaining() != Some(Duration::ZERO);
        if !allowed {
            return false;
        }
        if !self.holds_retry_slot {
            let cluster_policy = &cluster.cluster.policy;
            if !cluster.state.try_begin_retry(
                cluster_policy.retry_budget.as_ref(),
                cluster_policy.limits.max_retries,
            ) {
                return false; // retry budget exhausted: do not multiply an outage
            }
            self.holds_retry_slot = true;
        }
        self.retries += 1;
        true
    }

    pub fn release(&mut self, cluster: &CompiledCluster) {
        self.finish(cluster, None);
        if std::mem::take(&mut self.holds_retry_slot) {
            cluster.state.end_retry();
        }
    }
}

fn shortest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_on_semantics() {
        let five = RetryOn {
            server_error: true,
            ..RetryOn::default()
        };
        assert!(retriable(&five, Failure::Status(500)));
        assert!(retriable(&five, Failure::Reset));
        assert!(!retriable(&five, Failure::Status(404)));
        let gateway = RetryOn {
            gateway_error: true,
            ..RetryOn::default()
        };
        assert!(retriable(&gateway, Failure::Status(503)));
        assert!(!retriable(&gateway, Failure::Status(500)));
        assert!(retriable(&gateway, Failure::Timeout));
        let codes = RetryOn {
            status_codes: vec![418].into(),
            ..RetryOn::default()
        };
        assert!(retriable(&codes, Failure::Status(418)));
        assert!(!retriable(&codes, Failure::Connect));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..100 {
            assert!(backoff(25, 250, 1) <= Duration::from_millis(25));
            assert!(backoff(25, 250, 3) <= Duration::from_millis(100));
            assert!(backoff(25, 250, 10) <= Duration::from_millis(250));
        }
    }
}
