//! How long to wait before the next attempt: exponential backoff from
//! `retry.backoff_initial_ms`, doubling, capped at `retry.backoff_max_ms`.
//! Attempts are counted by the caller per error class (see `worker.rs`); the
//! waits come from here only, so tests run with millisecond backoff.
//!
//! `Outage` decides how often a lasting fault is logged: its first failure
//! at once, then at growing intervals with the count of retries between,
//! and one line with its length when it clears.

use std::time::{Duration, Instant, SystemTime};

use crate::config::RetryConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn from_config(retry: &RetryConfig) -> Backoff {
        Backoff {
            initial: retry.backoff_initial,
            max: retry.backoff_max,
        }
    }

    /// The wait after failed attempt number `attempt` (1-based):
    /// initial, 2 x initial, 4 x initial, ... never above `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1).min(31))
            .unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// The first repeat line of a lasting fault comes this long after its start;
/// each next one twice as long after the previous, up to `OUTAGE_LINE_MAX`.
const OUTAGE_LINE_FIRST: Duration = Duration::from_secs(10);
const OUTAGE_LINE_MAX: Duration = Duration::from_secs(600);

/// One fault while it lasts (a partition that cannot be fetched, the broker
/// or the database away).
#[derive(Debug, Clone)]
pub struct Outage {
    started: Instant,
    pub since: SystemTime,
    /// Failed attempts since the start, and since the last line.
    pub retries: u64,
    unlogged: u64,
    next_line: Instant,
    gap: Duration,
    /// The latest failure's text.
    pub reason: String,
}

impl Outage {
    /// A fault's first failure; the caller logs it in full.
    pub fn begin(now: Instant, reason: String) -> Outage {
        Outage {
            started: now,
            since: SystemTime::now(),
            retries: 1,
            unlogged: 0,
            next_line: now + OUTAGE_LINE_FIRST,
            gap: OUTAGE_LINE_FIRST,
            reason,
        }
    }

    /// One more failure. `Some(n)`: a line is due, `n` failures since the
    /// last one.
    pub fn again(&mut self, now: Instant, reason: String) -> Option<u64> {
        self.retries += 1;
        self.unlogged += 1;
        self.reason = reason;
        if now < self.next_line {
            return None;
        }
        self.gap = (self.gap * 2).min(OUTAGE_LINE_MAX);
        self.next_line = now + self.gap;
        Some(std::mem::take(&mut self.unlogged))
    }

    pub fn lasted(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }
}

/// A duration as an operator reads it: `45s`, `12m05s`, `3h20m`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{:.1}s", d.as_secs_f64()),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lasting_fault_is_logged_at_growing_intervals() {
        let t0 = Instant::now();
        let mut outage = Outage::begin(t0, "down".into());
        // A retry every second for an hour.
        let lines: Vec<(u64, u64)> = (1..3600u64)
            .filter_map(|s| {
                outage
                    .again(t0 + Duration::from_secs(s), format!("down {s}"))
                    .map(|n| (s, n))
            })
            .collect();
        let at: Vec<u64> = lines.iter().map(|l| l.0).collect();
        assert_eq!(at, vec![10, 30, 70, 150, 310, 630, 1230, 1830, 2430, 3030]);
        assert_eq!(
            lines[0].1, 10,
            "each line counts the retries since the last"
        );
        assert_eq!(lines[1].1, 20);
        assert_eq!(outage.retries, 3600);
        assert_eq!(outage.reason, "down 3599");
        assert_eq!(
            outage.lasted(t0 + Duration::from_secs(3600)).as_secs(),
            3600
        );
    }

    #[test]
    fn durations_read_as_an_operator_reads_them() {
        assert_eq!(human(Duration::from_millis(4200)), "4.2s");
        assert_eq!(human(Duration::from_secs(725)), "12m05s");
        assert_eq!(human(Duration::from_secs(12_000)), "3h20m");
    }

    #[test]
    fn doubles_then_caps() {
        let b = Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_millis(1000),
        };
        let waits: Vec<u128> = (1..=6).map(|a| b.delay(a).as_millis()).collect();
        assert_eq!(waits, vec![200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(b.delay(0).as_millis(), 200);
        assert_eq!(b.delay(200).as_millis(), 1000);
    }
}
