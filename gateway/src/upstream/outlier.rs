//! Outlier detection: endpoints that fail repeatedly are ejected for a while.
//!
//! Checked lazily on each pick instead of on a sweep timer: an ejection ends when its time
//! is up. Each repeated ejection lasts `base_ejection * multiplier`; the multiplier grows by
//! one per ejection and, as in Envoy, shrinks by one per `interval` the endpoint stayed in
//! service, so an endpoint that recovered for good starts again from one base ejection.

use ferry_model::OutlierDetection;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// How a try against an endpoint ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    ConnectFailure,
}

#[derive(Default)]
struct Health {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    times_ejected: AtomicU32,
    /// Milliseconds since `Outlier::epoch`; 0 = not ejected.
    ejected_until_ms: AtomicU64,
}

/// Which endpoints may be picked (see [`Outlier::eligible`]).
pub type Eligible = smallvec::SmallVec<[bool; 16]>;

pub struct Outlier {
    config: Option<OutlierDetection>,
    epoch: Instant,
    endpoints: Vec<Health>,
}

impl Outlier {
    pub fn new(config: Option<OutlierDetection>, endpoints: usize) -> Self {
        Outlier {
            config,
            epoch: Instant::now(),
            endpoints: (0..endpoints).map(|_| Health::default()).collect(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn ejected_at(&self, index: usize, now: u64) -> bool {
        self.endpoints
            .get(index)
            .is_some_and(|h| h.ejected_until_ms.load(Ordering::Acquire) > now)
    }

    /// Whether outlier detection has `index` ejected now (even if min health overrides it).
    pub fn is_ejected(&self, index: usize) -> bool {
        self.ejected_at(index, self.now_ms())
    }

    /// Per endpoint, whether it may take traffic. When ejections would leave fewer healthy
    /// endpoints than `min_health_percent`, ejection is ignored and all serve. Inline for up
    /// to 16 endpoints: this runs for every request.
    pub fn eligible(&self) -> Eligible {
        let now = self.now_ms();
        let healthy: Eligible = (0..self.endpoints.len())
            .map(|i| !self.ejected_at(i, now))
            .collect();
        let min_health = self
            .config
            .as_ref()
            .map_or(0, |c| c.min_health_percent as usize);
        let count = healthy.iter().filter(|h| **h).count();
        if count * 100 < min_health * self.endpoints.len() {
            return smallvec::smallvec![true; self.endpoints.len()];
        }
        healthy
    }

    pub fn record(&self, index: usize, outcome: Outcome) {
        let (Some(config), Some(health)) = (&self.config, self.endpoints.get(index)) else {
            return;
        };
        let (server_error, gateway_error) = match outcome {
            Outcome::ConnectFailure => (true, true),
            Outcome::Status(code) => (code >= 500, matches!(code, 502..=504)),
        };
        let fives = bump(&health.consecutive_5xx, server_error);
        let gateways = bump(&health.consecutive_gateway, gateway_error);
        let tripped = (config.consecutive_5xx > 0 && fives >= config.consecutive_5xx)
            || (config.consecutive_gateway_errors > 0
                && gateways >= config.consecutive_gateway_errors);
        if tripped {
            self.eject(index, config);
        }
    }

    fn eject(&self, index: usize, config: &OutlierDetection) {
        let now = self.now_ms();
        let total = self.endpoints.len();
        let ejected = (0..total).filter(|i| self.ejected_at(*i, now)).count();
        // At most max_ejection_percent of the endpoints, but always at least one.
        if ejected > 0 && (ejected + 1) * 100 > config.max_ejection_percent as usize * total {
            return;
        }
        let health = &self.endpoints[index];
        let previous_end = health.ejected_until_ms.load(Ordering::Acquire);
        let times = next_multiplier(
            health.times_ejected.load(Ordering::Acquire),
            now.saturating_sub(previous_end),
            config.interval_ms,
        );
        health.times_ejected.store(times, Ordering::Release);
        health.ejected_until_ms.store(
            now + config.base_ejection_ms * u64::from(times),
            Ordering::Release,
        );
        health.consecutive_5xx.store(0, Ordering::Release);
        health.consecutive_gateway.store(0, Ordering::Release);
        tracing::info!(
            endpoint = index,
            times,
            "outlier detection ejected an endpoint"
        );
    }
}

/// The ejection multiplier for a new ejection: one more than before, less one for each
/// whole `interval` the endpoint served since its previous ejection ended.
fn next_multiplier(previous: u32, served_ms: u64, interval_ms: u64) -> u32 {
    let decay = served_ms.checked_div(interval_ms).unwrap_or(0);
    let decayed = u64::from(previous).saturating_sub(decay) as u32;
    decayed + 1
}

/// Counts a consecutive failure, or resets the run on anything else.
fn bump(counter: &AtomicU32, failed: bool) -> u32 {
    if failed {
        counter.fetch_add(1, Ordering::AcqRel) + 1
    } else {
        counter.store(0, Ordering::Release);
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(
        consecutive_5xx: u32,
        max_ejection_percent: u32,
        min_health_percent: u32,
    ) -> Option<OutlierDetection> {
        Some(OutlierDetection {
            consecutive_5xx,
            consecutive_gateway_errors: 0,
            interval_ms: 1000,
            base_ejection_ms: 60_000,
            max_ejection_percent,
            min_health_percent,
        })
    }

    #[test]
    fn consecutive_errors_eject_and_success_resets() {
        let outlier = Outlier::new(config(3, 100, 0), 2);
        outlier.record(0, Outcome::Status(500));
        outlier.record(0, Outcome::Status(500));
        outlier.record(0, Outcome::Status(200));
        outlier.record(0, Outcome::Status(503));
        assert_eq!(
            outlier.eligible().to_vec(),
            vec![true, true],
            "success reset the count"
        );
        outlier.record(0, Outcome::Status(503));
        outlier.record(0, Outcome::ConnectFailure);
        assert_eq!(outlier.eligible().to_vec(), vec![false, true]);
    }

    #[test]
    fn max_ejection_percent_and_min_health() {
        let outlier = Outlier::new(config(1, 50, 0), 4);
        for i in 0..4 {
            outlier.record(i, Outcome::Status(500));
        }
        assert_eq!(
            outlier.eligible().iter().filter(|e| !**e).count(),
            2,
            "at most 50% ejected"
        );
        let strict = Outlier::new(config(1, 100, 75), 2);
        strict.record(0, Outcome::Status(500));
        assert_eq!(
            strict.eligible().to_vec(),
            vec![true, true],
            "below min health everything serves"
        );
    }

    #[test]
    fn repeated_ejections_last_longer_and_recovery_decays_the_multiplier() {
        // Ejected right after the previous ejection ended: one base longer each time.
        assert_eq!(next_multiplier(0, 0, 1000), 1);
        assert_eq!(next_multiplier(1, 10, 1000), 2);
        assert_eq!(next_multiplier(2, 999, 1000), 3);
        // Served three intervals in between: the multiplier fell by three first.
        assert_eq!(next_multiplier(5, 3_000, 1000), 3);
        assert_eq!(next_multiplier(2, 60_000, 1000), 1);
        assert_eq!(next_multiplier(4, 5_000, 0), 5, "no interval: no decay");
    }

    #[test]
    fn second_ejection_lasts_twice_the_base() {
        let outlier = Outlier::new(config(1, 100, 0), 2);
        outlier.record(0, Outcome::Status(500));
        let first = outlier.endpoints[0]
            .ejected_until_ms
            .load(Ordering::Acquire);
        outlier.endpoints[0]
            .ejected_until_ms
            .store(outlier.now_ms(), Ordering::Release); // the first ejection just ended
        outlier.record(0, Outcome::Status(500));
        let second = outlier.endpoints[0]
            .ejected_until_ms
            .load(Ordering::Acquire);
        assert!(first.abs_diff(60_000) < 1_000, "first: {first}");
        assert!(second.abs_diff(120_000) < 1_000, "second: {second}");
    }
}
