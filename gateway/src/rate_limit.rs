//! Local rate limiting: a token bucket per (limit, key) in this proxy. Buckets outlive
//! snapshots (a reload must not hand every client a fresh burst), are refilled lazily when
//! a request looks at them, and are bounded in number: a shard at its cap first drops the
//! buckets that have refilled completely (they hold nothing a new bucket would not), and
//! only then, under a flood of new keys, all of its buckets.
//!
//! Limits are per proxy: N replicas allow N times the rate.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ferry_model::RateLimit;

const SHARDS: usize = 16;
/// Keys per shard: 16 x 8,192 = 131,072 buckets at most (about 12 MiB with their keys).
const SHARD_CAP: usize = 8_192;

/// What the limiter says about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; `remaining` requests are left in the bucket, which is full again after
    /// `reset` (both for the RateLimit header).
    Allowed { remaining: u32, reset: Duration },
    /// Refused; a token comes back after `retry_after`.
    Limited { retry_after: Duration },
}

struct Bucket {
    /// Tokens, in thousandths (integer arithmetic: no drift from float rounding).
    milli_tokens: u64,
    /// When `milli_tokens` was last brought up to date, since the limiter's epoch.
    updated: Duration,
    /// When the bucket is full again if nobody asks meanwhile.
    full_at: Duration,
}

/// Buckets by the keyed hash of (limit name, key): no allocation per request; two keys
/// share a bucket only if their 64-bit SipHash (random per process) collides.
pub struct Limiter {
    shards: Vec<Mutex<HashMap<u64, Bucket>>>,
    hasher: std::collections::hash_map::RandomState,
    epoch: Instant,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            epoch: Instant::now(),
        }
    }
}

/// The proxy's limiter, shared by every snapshot and both HTTP paths.
pub fn limiter() -> &'static Limiter {
    static LIMITER: OnceLock<Limiter> = OnceLock::new();
    LIMITER.get_or_init(Limiter::default)
}

impl Limiter {
    /// Takes a token for `key` under `limit`, now.
    pub fn check(&self, limit: &RateLimit, key: impl Hash) -> Verdict {
        self.check_at(limit, key, self.epoch.elapsed())
    }

    /// As [`Limiter::check`], at `now` (since the limiter's epoch): the clock is the caller's,
    /// so tests drive it.
    pub fn check_at(&self, limit: &RateLimit, key: impl Hash, now: Duration) -> Verdict {
        let rate = Rate::of(limit);
        let bucket_key = self.hasher.hash_one((&*limit.name, key));
        let mut shard = self.shards[(bucket_key % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if shard.len() >= SHARD_CAP && !shard.contains_key(&bucket_key) {
            make_room(&mut shard, now);
        }
        let bucket = shard.entry(bucket_key).or_insert(Bucket {
            milli_tokens: rate.capacity,
            updated: now,
            full_at: now,
        });
        rate.refill(bucket, now);
        let verdict = if bucket.milli_tokens >= 1000 {
            bucket.milli_tokens -= 1000;
            Verdict::Allowed {
                remaining: (bucket.milli_tokens / 1000) as u32,
                reset: rate.time_to_fill(rate.capacity - bucket.milli_tokens),
            }
        } else {
            Verdict::Limited {
                retry_after: rate.time_to_fill(1000 - bucket.milli_tokens),
            }
        };
        bucket.full_at = now + rate.time_to_fill(rate.capacity - bucket.milli_tokens);
        verdict
    }

    /// Buckets held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.len()).unwrap_or(0))
            .sum()
    }
}

/// Drops the buckets idle long enough to be full again (a full bucket is what a new key
/// gets anyway); when none is, the shard starts over.
fn make_room(shard: &mut HashMap<u64, Bucket>, now: Duration) {
    shard.retain(|_, b| b.full_at > now);
    if shard.len() >= SHARD_CAP {
        shard.clear();
    }
}

/// A limit's numbers in thousandths of a token.
struct Rate {
    capacity: u64,
    /// Thousandths of a token gained per millisecond, times `window_ms` (kept as a ratio:
    /// `requests * 1000` per `window_ms`).
    per_window: u64,
    window_ms: u64,
}

impl Rate {
    fn of(limit: &RateLimit) -> Rate {
        Rate {
            capacity: u64::from(limit.burst.max(1)) * 1000,
            per_window: u64::from(limit.requests.max(1)) * 1000,
            window_ms: limit.window_ms.max(1),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Duration) {
        let elapsed_ms = now.saturating_sub(bucket.updated).as_millis() as u64;
        let gained = elapsed_ms.saturating_mul(self.per_window) / self.window_ms;
        if gained == 0 {
            return; // keep `updated`: fractions of a token add up over later calls
        }
        bucket.milli_tokens = (bucket.milli_tokens + gained).min(self.capacity);
        // Advance by the time the gained tokens took, not to `now`, so no fraction is lost.
        let used_ms = gained.saturating_mul(self.window_ms) / self.per_window;
        bucket.updated += Duration::from_millis(used_ms);
        if bucket.milli_tokens == self.capacity {
            bucket.updated = now;
        }
    }

    fn time_to_fill(&self, milli_tokens: u64) -> Duration {
        let ms = (milli_tokens * self.window_ms).div_ceil(self.per_window);
        Duration::from_millis(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::RateLimitKey;

    fn limit(requests: u32, window_ms: u64, burst: u32) -> RateLimit {
        RateLimit {
            name: "Ingress/web/shop".into(),
            requests,
            window_ms,
            burst,
            key: RateLimitKey::ClientIp,
            status: 429,
            exempt: Vec::new().into(),
        }
    }

    fn allowed(limiter: &Limiter, limit: &RateLimit, key: &str, at_ms: u64) -> bool {
        let now = Duration::from_millis(at_ms);
        matches!(limiter.check_at(limit, key, now), Verdict::Allowed { .. })
    }

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = Limiter::default();
        let ten_per_second = limit(10, 1000, 5);
        let burst = (0..8)
            .filter(|_| allowed(&limiter, &ten_per_second, "a", 0))
            .count();
        assert_eq!(burst, 5, "the bucket's size at once");
        // Over the next second, one request every 10 ms: ten get through (one per 100 ms).
        let passed = (1..=100)
            .filter(|i| allowed(&limiter, &ten_per_second, "a", i * 10))
            .count();
        assert_eq!(passed, 10);
    }

    #[test]
    fn keys_have_their_own_buckets_and_fractions_are_not_lost() {
        let limiter = Limiter::default();
        let three_per_second = limit(3, 1000, 2);
        assert!(allowed(&limiter, &three_per_second, "a", 0));
        assert!(allowed(&limiter, &three_per_second, "a", 0));
        assert!(!allowed(&limiter, &three_per_second, "a", 0));
        assert!(allowed(&limiter, &three_per_second, "b", 0), "another key");
        // 333.33 ms per token, asked every 100 ms: the thirds of a token carry over.
        let times: Vec<u64> = (1..=10)
            .map(|i| i * 100)
            .filter(|t| allowed(&limiter, &three_per_second, "a", *t))
            .collect();
        assert_eq!(times, [400, 700, 1000]);
    }

    #[test]
    fn a_full_bucket_gains_nothing_more_as_nginx_limit_req() {
        let limiter = Limiter::default();
        // With room for one token, what comes in while it is full is lost: polled every
        // 100 ms, 3/s lets through at 0, 400 and 800 (nginx's limit_req does the same).
        let three_per_second = limit(3, 1000, 1);
        let times: Vec<u64> = (0..=9)
            .map(|i| i * 100)
            .filter(|t| allowed(&limiter, &three_per_second, "a", *t))
            .collect();
        assert_eq!(times, [0, 400, 800]);
    }

    #[test]
    fn a_limited_request_learns_when_to_come_back() {
        let limiter = Limiter::default();
        let per_minute = limit(60, 60_000, 1);
        assert!(allowed(&limiter, &per_minute, "a", 0));
        let verdict = limiter.check_at(&per_minute, "a", Duration::from_millis(250));
        assert_eq!(
            verdict,
            Verdict::Limited {
                retry_after: Duration::from_millis(750)
            }
        );
    }

    #[test]
    fn a_full_shard_drops_idle_buckets_first() {
        let limiter = Limiter::default();
        let one = limit(1, 1000, 1);
        for i in 0..(SHARDS * SHARD_CAP * 2) {
            allowed(&limiter, &one, &i.to_string(), 0);
        }
        assert!(limiter.len() <= SHARDS * SHARD_CAP, "{}", limiter.len());
    }
}
