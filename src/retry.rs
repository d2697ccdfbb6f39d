//! Whether and when to try again, in the manner of cargo's
//! `util/network/retry.rs`: the caller makes an attempt, and on a failure
//! asks its `RetryState` (`next`, with the `error::Verdict`), which counts
//! the attempts and answers a `Decision`; the caller sleeps. Every retry loop
//! of the service keeps one: start-up (`service.rs`), each partition's fetch
//! and the broker client (`coordinator.rs`), each write and each record
//! (`worker.rs`).
//!
//! `Backoff` is the waits: exponential from `retry.backoff_initial_ms`,
//! doubling, capped at `retry.backoff_max_ms` (or lower: `Backoff::capped`).
//! They come from here only, so tests run with millisecond backoff.
//!
//! `Outage` decides how often a lasting fault is logged: its first failure
//! at once, then at growing intervals with the count of retries between,
//! and one line with its length when it clears.

use std::time::{Duration, Instant, SystemTime};

use crate::config::RetryConfig;
use crate::error::{Class, Verdict};

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

    /// No wait longer than `cap`.
    pub fn capped(self, cap: Duration) -> Backoff {
        Backoff {
            initial: self.initial.min(cap),
            max: self.max.min(cap),
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

/// What to do after a failed attempt. The caller sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again after this wait (zero when waiting changes nothing).
    RetryAfter(Duration),
    /// The attempts are spent, and the failure is of a kind that is tried
    /// for ever: the caller reports itself stuck (the partition retrying or
    /// blocked) and tries again after this wait.
    Stuck(Duration),
    /// Not retried (any more): the caller handles the error.
    GiveUp,
}

/// What happens when a `RetryState`'s attempts are spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenSpent {
    /// Keep trying at `Backoff::max` (`Decision::Stuck`).
    Stuck,
    /// Hand the error back (`Decision::GiveUp`).
    GiveUp,
}

/// The attempts of one retry loop: which classes are retried, how many
/// retries at growing waits, and what comes after them.
#[derive(Debug, Clone)]
pub struct RetryState {
    backoff: Backoff,
    retried: &'static [Class],
    /// Retries at growing waits; `None`: for ever.
    retries: Option<u32>,
    when_spent: WhenSpent,
    failures: u32,
}

impl RetryState {
    /// Failures of the `retried` classes are tried again for ever, at
    /// growing waits; others are given up at once.
    pub fn for_ever(backoff: Backoff, retried: &'static [Class]) -> RetryState {
        RetryState {
            backoff,
            retried,
            retries: None,
            when_spent: WhenSpent::GiveUp,
            failures: 0,
        }
    }

    /// Failures of the `retried` classes are tried again `retries` times at
    /// growing waits, then as `when_spent` says; others are given up at once.
    pub fn limited(
        backoff: Backoff,
        retried: &'static [Class],
        retries: u32,
        when_spent: WhenSpent,
    ) -> RetryState {
        RetryState {
            backoff,
            retried,
            retries: Some(retries),
            when_spent,
            failures: 0,
        }
    }

    /// One more failed attempt, of this verdict. A failure that waiting does
    /// not change (`Verdict::wait` false: a record that cannot be mapped)
    /// would fail every retry alike: all the attempts are counted as made at
    /// once, and spent.
    pub fn next(&mut self, verdict: Verdict) -> Decision {
        if !self.retried.contains(&verdict.class) {
            return Decision::GiveUp;
        }
        self.failures += 1;
        if !verdict.wait {
            if let Some(retries) = self.retries {
                self.failures = self.failures.max(retries + 1);
            }
        }
        match self.retries {
            Some(retries) if self.failures > retries => match self.when_spent {
                WhenSpent::GiveUp => Decision::GiveUp,
                WhenSpent::Stuck => Decision::Stuck(self.backoff.max),
            },
            _ if !verdict.wait => Decision::RetryAfter(Duration::ZERO),
            _ => Decision::RetryAfter(self.backoff.delay(self.failures)),
        }
    }

    /// Failed attempts so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// An attempt succeeded: the next failure starts over.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    pub fn backoff(&self) -> Backoff {
        self.backoff
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

    fn verdict(class: Class, wait: bool) -> Verdict {
        Verdict {
            class,
            reconnect: false,
            wait,
        }
    }

    fn millis(decision: Decision) -> String {
        match decision {
            Decision::RetryAfter(d) => format!("retry {}", d.as_millis()),
            Decision::Stuck(d) => format!("stuck {}", d.as_millis()),
            Decision::GiveUp => "give up".to_string(),
        }
    }

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
        }
    }

    #[test]
    fn a_write_retries_then_is_stuck_and_gives_back_what_it_does_not_retry() {
        let mut state = RetryState::limited(
            backoff(),
            &[Class::Technical, Class::Fatal],
            3,
            WhenSpent::Stuck,
        );
        let decisions: Vec<String> = (0..5)
            .map(|_| millis(state.next(verdict(Class::Technical, true))))
            .collect();
        assert_eq!(
            decisions,
            vec![
                "retry 100",
                "retry 200",
                "retry 400",
                "stuck 500",
                "stuck 500"
            ]
        );
        assert_eq!(state.failures(), 5);
        assert_eq!(state.next(verdict(Class::Business, true)), Decision::GiveUp);
        assert_eq!(state.failures(), 5, "a failure given back is not counted");
        state.succeeded();
        assert_eq!(millis(state.next(verdict(Class::Fatal, true))), "retry 100");
    }

    #[test]
    fn a_record_is_tried_as_often_as_configured_then_given_up() {
        let mut state = RetryState::limited(backoff(), &[Class::Business], 2, WhenSpent::GiveUp);
        assert_eq!(
            millis(state.next(verdict(Class::Business, true))),
            "retry 100"
        );
        assert_eq!(
            millis(state.next(verdict(Class::Business, true))),
            "retry 200"
        );
        assert_eq!(state.next(verdict(Class::Business, true)), Decision::GiveUp);
        assert_eq!(state.failures(), 3);
    }

    #[test]
    fn a_failure_that_waiting_does_not_change_spends_every_attempt_at_once() {
        let mut state = RetryState::limited(backoff(), &[Class::Business], 2, WhenSpent::GiveUp);
        assert_eq!(
            state.next(verdict(Class::Business, false)),
            Decision::GiveUp
        );
        assert_eq!(
            state.failures(),
            3,
            "counted as the three attempts configured"
        );
        // Without a limit it is retried at once.
        let mut state = RetryState::for_ever(backoff(), &[Class::Technical]);
        assert_eq!(
            state.next(verdict(Class::Technical, false)),
            Decision::RetryAfter(Duration::ZERO)
        );
    }

    #[test]
    fn for_ever_never_gives_up_on_what_it_retries() {
        let mut state = RetryState::for_ever(backoff(), &[Class::Technical]);
        let last = (0..100)
            .map(|_| state.next(verdict(Class::Technical, true)))
            .last();
        assert_eq!(last, Some(Decision::RetryAfter(Duration::from_millis(500))));
        assert_eq!(state.next(verdict(Class::Fatal, true)), Decision::GiveUp);
    }

    #[test]
    fn capped_lowers_both_ends() {
        let b = backoff().capped(Duration::from_millis(50));
        assert_eq!((b.initial.as_millis(), b.max.as_millis()), (50, 50));
        assert_eq!(backoff().capped(Duration::from_secs(5)), backoff());
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
