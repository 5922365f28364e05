//! Memory-based load shedding: the proxy's resident memory, read every quarter second, turns
//! shedding on past the threshold (and off again below 90% of it), as Envoy's overload
//! manager does with its heap monitor. While shedding, a share of the idle connections is
//! closed at each tick, newest connections take only idle places, and keep-alive connections
//! close after their response.

use std::sync::Arc;
use std::time::Duration;

use super::Admission;

const TICK: Duration = Duration::from_millis(250);
/// Idle connections closed per tick while shedding, as a share of those held.
const REAP_SHARE: usize = 10;

/// Runs until the process exits (spawn it); does nothing when the threshold is 0.
pub async fn watch(admission: Arc<Admission>) {
    let threshold = admission.limits().overload_memory_bytes;
    if threshold == 0 {
        return;
    }
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        let Some(rss) = resident_bytes() else {
            tracing::warn!("cannot read /proc/self/statm: memory-based load shedding is off");
            return;
        };
        let shedding = admission.under_pressure();
        let now = if shedding {
            rss > threshold / 10 * 9
        } else {
            rss > threshold
        };
        if now != shedding {
            tracing::warn!(rss, threshold, shedding = now, "memory-based load shedding");
            admission.set_overloaded(now);
        }
        if now {
            let share = (admission.open() / REAP_SHARE).max(1);
            for _ in 0..share {
                if !admission.reap_one() {
                    break;
                }
            }
        }
    }
}

/// This process's resident set size.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process_resident_memory() {
        let rss = super::resident_bytes().expect("linux");
        assert!(rss > 1 << 20 && rss < 1 << 40, "{rss}");
    }
}
