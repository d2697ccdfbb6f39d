//! How long to wait before the next attempt: exponential backoff from
//! `retry.backoff_initial_ms`, doubling, capped at `retry.backoff_max_ms`.
//! Attempts are counted by the caller per error class (see `worker.rs`); the
//! waits come from here only, so tests run with millisecond backoff.

use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

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
