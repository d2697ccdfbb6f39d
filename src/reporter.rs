//! What the coordinator tells the outside, from its own records: the stats
//! line (every `log.stats_interval_ms`), the status file (every second) and
//! the per-partition view the metrics endpoint publishes with it.
//!
//! `partition_state` is the one rule that turns a partition's records into
//! its status (`flowing`, `retrying`, `blocked`, as the README's `status`
//! documents them); it is pure and unit-tested. The reporter only reads what
//! the coordinator owns: it never talks to Kafka or MySQL, and a status
//! file that cannot be written is logged at debug and skipped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info};

use crate::error::Class;
use crate::retry::{human, Outage};
use crate::status::{
    unix_millis, unix_seconds, PartitionStatus, ServiceStatus, Stats, StatsSnapshot,
};
use crate::worker::Flow;

/// How often the status file is rewritten.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// A write that has not returned for this long shows as "retrying" in the
/// status (the driver's own read timeout is much longer).
const SLOW_WRITE: Duration = Duration::from_secs(10);

/// One partition as the coordinator records it, lent to the reporter.
#[derive(Debug, Clone, Copy)]
pub struct PartitionView<'a> {
    pub partition: i32,
    /// As the worker last reported it, or blocked by the coordinator.
    pub flow: &'a Flow,
    /// This partition's fetches failing (the broker answers for others).
    pub fetch_outage: Option<&'a Outage>,
    pub fetch_offset: i64,
    /// The next offset the worker has applied (the fetch offset before it
    /// reported any).
    pub applied_offset: i64,
    pub committed_offset: Option<i64>,
    pub high_watermark: Option<i64>,
    /// Unix milliseconds when the worker's write in progress began; 0
    /// between writes.
    pub writing_since: u64,
}

/// A partition's state in the status: `flowing`, `retrying` or `blocked`,
/// and, unless flowing, since when, at which offset, of which class, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub state: &'static str,
    pub since: Option<SystemTime>,
    pub at: Option<i64>,
    pub class: Option<Class>,
    pub error: Option<String>,
}

/// The state `view` is in at `now_ms` (unix milliseconds), the broker
/// away for everyone when `broker_outage` is set. What holds the partition
/// is told in this order: its worker's report (retrying or blocked at a
/// record), its own fetch failures, a write that has not returned for
/// `SLOW_WRITE`, the broker away.
pub fn partition_state(
    view: &PartitionView<'_>,
    broker_outage: Option<&Outage>,
    now_ms: u64,
) -> PartitionState {
    let slow = (view.writing_since != 0
        && now_ms.saturating_sub(view.writing_since) >= SLOW_WRITE.as_millis() as u64)
        .then_some(view.writing_since);
    let kafka = view
        .fetch_outage
        .or(if slow.is_some() { None } else { broker_outage });
    match (view.flow, kafka, slow) {
        (Flow::Retrying(stall) | Flow::Blocked(stall), _, _) => PartitionState {
            state: if matches!(view.flow, Flow::Retrying(_)) {
                "retrying"
            } else {
                "blocked"
            },
            since: Some(stall.since),
            at: Some(stall.offset),
            class: Some(stall.class),
            error: Some(stall.error.clone()),
        },
        (Flow::Flowing, Some(outage), _) => PartitionState {
            state: "retrying",
            since: Some(outage.since),
            at: Some(view.fetch_offset),
            class: Some(Class::Technical),
            error: Some(format!("kafka: {}", outage.reason)),
        },
        (Flow::Flowing, None, Some(since)) => PartitionState {
            state: "retrying",
            since: Some(UNIX_EPOCH + Duration::from_millis(since)),
            at: Some(view.applied_offset),
            class: Some(Class::Technical),
            error: Some(format!(
                "mysql: a write has not returned for {}",
                human(Duration::from_millis(now_ms.saturating_sub(since)))
            )),
        },
        (Flow::Flowing, None, None) => PartitionState {
            state: "flowing",
            since: None,
            at: None,
            class: None,
            error: None,
        },
    }
}

/// The stats line and the status file, each at its interval.
pub struct Reporter {
    stats: Arc<Stats>,
    stats_interval: Duration,
    status: ServiceStatus,
    status_file: Option<PathBuf>,
    last_status: Instant,
    last_stats: Instant,
    last_stats_snapshot: StatsSnapshot,
}

impl Reporter {
    pub fn new(
        stats: Arc<Stats>,
        stats_interval: Duration,
        status: ServiceStatus,
        status_file: Option<PathBuf>,
        now: Instant,
    ) -> Reporter {
        Reporter {
            stats,
            stats_interval,
            status,
            status_file,
            last_status: now - STATUS_INTERVAL,
            last_stats: now,
            last_stats_snapshot: StatsSnapshot::default(),
        }
    }

    /// Logs the stats line and rewrites the status file when they are due.
    pub fn tick(
        &mut self,
        now: Instant,
        partitions: &[PartitionView<'_>],
        broker_outage: Option<&Outage>,
    ) {
        if now.duration_since(self.last_stats) >= self.stats_interval {
            self.log_stats(now, partitions);
        }
        if now.duration_since(self.last_status) >= STATUS_INTERVAL {
            self.last_status = now;
            self.write_status(partitions, broker_outage);
        }
    }

    /// The stats line: rates since the last one, lag, partitions retrying
    /// or blocked, counters.
    pub fn log_stats(&mut self, now: Instant, partitions: &[PartitionView<'_>]) {
        let secs = now.duration_since(self.last_stats).as_secs_f64().max(0.001);
        let s = self.stats.snapshot();
        let prev = self.last_stats_snapshot;
        info!(
            "stats: {:.0} records/s, {:.0} rows/s, lag {}, blocked partitions {}, dead letters {} (+{}), retries {} (+{}), offset resets {}",
            (s.records_applied - prev.records_applied) as f64 / secs,
            (s.rows_written - prev.rows_written) as f64 / secs,
            lag(partitions),
            stopped(partitions),
            s.dead_letters,
            s.dead_letters - prev.dead_letters,
            s.retries,
            s.retries - prev.retries,
            s.offset_resets,
        );
        self.last_stats = now;
        self.last_stats_snapshot = s;
    }

    fn write_status(&mut self, partitions: &[PartitionView<'_>], broker_outage: Option<&Outage>) {
        self.status.updated_at = unix_seconds(SystemTime::now());
        let now_ms = unix_millis(SystemTime::now());
        self.status.stats = self.stats.snapshot();
        self.status.stats.blocked_partitions = stopped(partitions) as u64;
        self.status.partitions = partitions
            .iter()
            .map(|view| {
                let state = partition_state(view, broker_outage, now_ms);
                let status = PartitionStatus {
                    partition: view.partition,
                    state: state.state.to_string(),
                    blocked_since: state.since.map(unix_seconds),
                    blocked_at_offset: state.at,
                    error_class: state.class.map(|c| c.to_string()),
                    last_error: state.error,
                    fetch_offset: view.fetch_offset,
                    applied_offset: view.applied_offset,
                    committed_offset: view.committed_offset,
                    high_watermark: view.high_watermark,
                };
                (view.partition, status)
            })
            .collect();
        self.stats.partitions.publish(&self.status.partitions);
        let Some(path) = &self.status_file else {
            return;
        };
        if let Err(e) = self.status.write(path) {
            debug!("cannot write status file {}: {e}", path.display());
        }
    }

    /// At stop: the status file goes (`status` then says "not running").
    pub fn clear(&self) {
        if let Some(path) = &self.status_file {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Partitions retrying or blocked.
fn stopped(partitions: &[PartitionView<'_>]) -> usize {
    partitions.iter().filter(|p| !p.flow.is_flowing()).count()
}

/// Records in the log not applied yet, over every partition.
fn lag(partitions: &[PartitionView<'_>]) -> i64 {
    partitions
        .iter()
        .map(|p| {
            p.high_watermark
                .map_or(0, |h| (h - p.applied_offset).max(0))
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::Stall;

    const NOW_MS: u64 = 1_000_000_000;

    fn view(flow: &Flow) -> PartitionView<'_> {
        PartitionView {
            partition: 0,
            flow,
            fetch_outage: None,
            fetch_offset: 50,
            applied_offset: 40,
            committed_offset: Some(30),
            high_watermark: Some(60),
            writing_since: 0,
        }
    }

    fn stall(class: Class) -> Stall {
        Stall {
            since: UNIX_EPOCH + Duration::from_secs(7),
            offset: 41,
            class,
            error: "mysql error 2013".into(),
        }
    }

    fn outage(reason: &str) -> Outage {
        Outage::begin(Instant::now(), reason.into())
    }

    /// (state, offset, class, error) of a state.
    fn summary(s: &PartitionState) -> (&'static str, Option<i64>, Option<Class>, Option<&str>) {
        (s.state, s.at, s.class, s.error.as_deref())
    }

    #[test]
    fn a_partition_with_nothing_wrong_is_flowing() {
        let flow = Flow::Flowing;
        let state = partition_state(&view(&flow), None, NOW_MS);
        assert_eq!(summary(&state), ("flowing", None, None, None));
        assert_eq!(state.since, None);
    }

    #[test]
    fn the_workers_report_says_retrying_or_blocked_and_wins() {
        let broker = outage("all brokers down");
        for (flow, expected) in [
            (Flow::Retrying(stall(Class::Technical)), "retrying"),
            (Flow::Blocked(stall(Class::Fatal)), "blocked"),
            (Flow::Blocked(stall(Class::Business)), "blocked"),
        ] {
            let mut v = view(&flow);
            v.writing_since = NOW_MS - 60_000;
            let state = partition_state(&v, Some(&broker), NOW_MS);
            let class = flow.stall().map(|s| s.class);
            assert_eq!(
                summary(&state),
                (expected, Some(41), class, Some("mysql error 2013"))
            );
            assert_eq!(state.since, Some(UNIX_EPOCH + Duration::from_secs(7)));
        }
    }

    #[test]
    fn a_partitions_fetch_failures_come_before_a_slow_write() {
        let flow = Flow::Flowing;
        let fetch = outage("no leader");
        let mut v = view(&flow);
        v.fetch_outage = Some(&fetch);
        v.writing_since = NOW_MS - 60_000;
        let state = partition_state(&v, Some(&outage("down")), NOW_MS);
        assert_eq!(
            summary(&state),
            (
                "retrying",
                Some(50),
                Some(Class::Technical),
                Some("kafka: no leader")
            )
        );
    }

    #[test]
    fn a_write_that_does_not_return_shows_after_ten_seconds_and_before_the_broker() {
        let flow = Flow::Flowing;
        let broker = outage("all brokers down");
        let mut v = view(&flow);
        v.writing_since = NOW_MS - 9_000;
        let state = partition_state(&v, None, NOW_MS);
        assert_eq!(state.state, "flowing", "not yet slow");
        v.writing_since = NOW_MS - 12_000;
        let state = partition_state(&v, Some(&broker), NOW_MS);
        assert_eq!(
            summary(&state),
            (
                "retrying",
                Some(40),
                Some(Class::Technical),
                Some("mysql: a write has not returned for 12.0s")
            )
        );
        assert_eq!(
            state.since,
            Some(UNIX_EPOCH + Duration::from_millis(NOW_MS - 12_000))
        );
    }

    #[test]
    fn the_broker_away_holds_every_flowing_partition() {
        let flow = Flow::Flowing;
        let broker = outage("fetch failed: timed out");
        let state = partition_state(&view(&flow), Some(&broker), NOW_MS);
        assert_eq!(
            summary(&state),
            (
                "retrying",
                Some(50),
                Some(Class::Technical),
                Some("kafka: fetch failed: timed out")
            )
        );
    }

    #[test]
    fn lag_and_stopped_count_over_partitions() {
        let flowing = Flow::Flowing;
        let blocked = Flow::Blocked(stall(Class::Fatal));
        let mut behind = view(&blocked);
        behind.applied_offset = 70;
        let views = [view(&flowing), view(&blocked), behind];
        // 60 - 40 twice; a partition applied past the watermark counts 0.
        assert_eq!(lag(&views), 40);
        assert_eq!(stopped(&views), 2);
    }
}
