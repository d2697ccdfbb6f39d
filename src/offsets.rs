//! Offset bookkeeping (docs/architecture.md, "Offsets"), pure and unit-tested: which
//! partitions a command works on, where a partition starts, where it goes after OffsetOutOfRange, and which applied
//! offsets are due for a commit.
//!
//! Exactly-once never rewinds silently: a stored offset outside the log
//! stops the partition (`Rewind::Refused`) unless
//! `mysql.exactly_once_auto_reset` lets `offset_reset` decide.
//!
//! Invariant: only offsets that a worker reported as applied are ever handed
//! out for a commit; the committed value is the next offset to read.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::config::{Config, Delivery, OffsetReset};
use crate::error::Error;

/// Why a partition starts where it does (logged at start, per partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartReason {
    /// The stored offset lies within [earliest, latest].
    Stored,
    /// Nothing stored: `offset_reset` decided.
    NoStoredOffset(OffsetReset),
    /// The stored offset lies outside [earliest, latest]: `offset_reset` decided.
    StoredOutOfRange { stored: i64, reset: OffsetReset },
    /// Exactly-once: the stored offset lies outside [earliest, latest] and
    /// nothing may move it but the operator.
    StoredOutOfRangeRefused { stored: i64 },
}

impl std::fmt::Display for StartReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartReason::Stored => f.write_str("stored offset"),
            StartReason::NoStoredOffset(r) => {
                write!(f, "no stored offset, offset_reset = {}", reset_name(*r))
            }
            StartReason::StoredOutOfRange { stored, reset } => write!(
                f,
                "stored offset {stored} is out of range, offset_reset = {}",
                reset_name(*reset)
            ),
            StartReason::StoredOutOfRangeRefused { stored } => write!(
                f,
                "stored offset {stored} is out of range, and exactly-once does not move it by itself"
            ),
        }
    }
}

/// Whether a stored offset outside the log may be moved by `offset_reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewind {
    /// At-least-once, or exactly-once with `mysql.exactly_once_auto_reset`.
    ByOffsetReset,
    /// Exactly-once: moving on would skip records or apply them a second
    /// time, so the partition stops until the operator picks a position.
    Refused,
}

impl Rewind {
    pub fn from_config(config: &Config) -> Rewind {
        match config.mysql.delivery {
            Delivery::ExactlyOnce if !config.mysql.exactly_once_auto_reset => Rewind::Refused,
            _ => Rewind::ByOffsetReset,
        }
    }
}

/// Why an exactly-once partition stops at `requested`, and what the operator
/// can do about it.
pub fn refused_rewind_message(
    partition: i32,
    requested: i64,
    earliest: i64,
    latest: i64,
) -> String {
    let why = if requested > latest {
        "past the log end (the log was truncated by an unclean leader election, or the topic \
         was recreated): reading it from the start would apply its records a second time"
    } else {
        "below the log start (records were deleted before they were applied): \
         going on from the log start skips them"
    };
    format!(
        "exactly-once: offset {requested} is {why}; log {earliest}..{latest}; nothing is written \
         for this partition until a position is chosen with: kafka2mysql reset-offsets \
         --partition {partition} --to earliest|latest|OFFSET (or set \
         mysql.exactly_once_auto_reset = true to let kafka.offset_reset decide)"
    )
}

/// Where an exactly-once partition's stored position was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredIn {
    OffsetTable,
    /// The Kafka group's offset is ahead of the offset table's: at-least-once
    /// ran since exactly-once last wrote (or the table has no row).
    Group,
}

/// Exactly-once: the position to resume from, of the offset table's and the
/// Kafka group's, is the one further along the log. While exactly-once runs,
/// the table is written with the rows and the group only after them, so the
/// group is never ahead; a group ahead of the table was moved by an
/// at-least-once period, and the stale table would apply that period again.
pub fn exactly_once_stored(table: Option<i64>, group: Option<i64>) -> (Option<i64>, StoredIn) {
    match (table, group) {
        (Some(t), Some(g)) if g > t => (Some(g), StoredIn::Group),
        (Some(t), _) => (Some(t), StoredIn::OffsetTable),
        (None, g) => (g, StoredIn::Group),
    }
}

/// The next offset a partition resumes from as stored, and where it was
/// found (for the start's log line): the Kafka group's (`group`) or, in
/// exactly-once mode, the further along of it and the offset table's
/// (`in_table`), unless the group's commit belongs to an earlier topic of the
/// same name (`stale`), which makes the table's row stale too
/// (`mysql::tables::table_position` says when).
pub fn stored_position(
    delivery: Delivery,
    group: Option<i64>,
    in_table: Option<i64>,
    stale: bool,
) -> (Option<i64>, String) {
    match delivery {
        Delivery::ExactlyOnce if stale => (
            None,
            "offset table, of a deleted topic of the same name".to_string(),
        ),
        Delivery::ExactlyOnce => match (exactly_once_stored(in_table, group), in_table) {
            ((stored, StoredIn::OffsetTable), _) => (stored, "offset table".to_string()),
            ((stored, StoredIn::Group), Some(t)) => (
                stored,
                format!("kafka group, ahead of the offset table's {t}: at-least-once ran since"),
            ),
            ((stored, StoredIn::Group), None) => (stored, "kafka group".to_string()),
        },
        Delivery::AtLeastOnce => (group, "kafka group".to_string()),
    }
}

/// `kafka.partitions`, checked against the topic's partitions, or all of
/// them: the partitions every command works on (`run`, `check`, `status`,
/// `reset-offsets`).
pub fn select_partitions(config: &Config, available: &[i32]) -> Result<Vec<i32>, Error> {
    if config.kafka.partitions.is_empty() {
        return Ok(available.to_vec());
    }
    for p in &config.kafka.partitions {
        if !available.contains(p) {
            return Err(Error::Setup(format!(
                "kafka.partitions: topic {} has no partition {p} (it has {:?})",
                config.kafka.topic, available
            )));
        }
    }
    let mut chosen = config.kafka.partitions.clone();
    chosen.sort_unstable();
    Ok(chosen)
}

pub fn reset_name(r: OffsetReset) -> &'static str {
    match r {
        OffsetReset::Earliest => "earliest",
        OffsetReset::Latest => "latest",
        OffsetReset::Fail => "fail",
    }
}

/// The start offset of a partition, or an error when `offset_reset = fail`
/// or `rewind` refuses to move a stored offset that cannot be used.
pub fn start_position(
    stored: Option<i64>,
    earliest: i64,
    latest: i64,
    reset: OffsetReset,
    rewind: Rewind,
) -> Result<(i64, StartReason), StartReason> {
    let reason = match stored {
        Some(s) if s >= earliest && s <= latest => return Ok((s, StartReason::Stored)),
        Some(s) if rewind == Rewind::Refused => {
            return Err(StartReason::StoredOutOfRangeRefused { stored: s })
        }
        Some(s) => StartReason::StoredOutOfRange { stored: s, reset },
        None => StartReason::NoStoredOffset(reset),
    };
    match reset {
        OffsetReset::Earliest => Ok((earliest, reason)),
        OffsetReset::Latest => Ok((latest, reason)),
        OffsetReset::Fail => Err(reason),
    }
}

/// Where a running partition goes after OffsetOutOfRange at `requested`:
/// `Some((new_offset, skipped))`, or `None` when `offset_reset = fail` or
/// `rewind` refuses. `skipped` counts the offsets between the requested and
/// the new position that will never be read (0 when the new position is
/// behind the request).
pub fn out_of_range_position(
    requested: i64,
    earliest: i64,
    latest: i64,
    reset: OffsetReset,
    rewind: Rewind,
) -> Option<(i64, i64)> {
    if rewind == Rewind::Refused {
        return None;
    }
    let new = match reset {
        OffsetReset::Earliest => {
            // Records were deleted below `earliest`; a request past the end
            // (topic recreated) starts again at the beginning too.
            earliest
        }
        OffsetReset::Latest => latest,
        OffsetReset::Fail => return None,
    };
    Some((new, (new - requested).max(0)))
}

/// One partition's offsets as the coordinator tracks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// Everything below is in MySQL.
    pub applied: i64,
    /// Last value committed to the Kafka group, if any.
    pub committed: Option<i64>,
}

/// How often every partition's offset is committed again, changed or not.
/// The broker drops a group's offset `offsets.retention.minutes` after its
/// last commit when the group has no members, which is always the case
/// here; this is below the smallest retention Kafka accepts (1 minute).
pub const REFRESH_EVERY: Duration = Duration::from_secs(30);

/// Applied and committed offsets of every assigned partition, and when the
/// next commit is due.
#[derive(Debug)]
pub struct OffsetBook {
    partitions: BTreeMap<i32, PartitionOffsets>,
    records_since_commit: u64,
    last_commit: Instant,
    /// The last commit that sent every partition (see `REFRESH_EVERY`).
    last_refresh: Instant,
    every_messages: u64,
    interval: Duration,
}

impl OffsetBook {
    pub fn new(every_messages: u64, interval: Duration, now: Instant) -> OffsetBook {
        OffsetBook {
            partitions: BTreeMap::new(),
            records_since_commit: 0,
            last_commit: now,
            last_refresh: now,
            every_messages,
            interval,
        }
    }

    /// Registers a partition at its start offset, with the group's committed
    /// value (which may differ from the start when it was out of range).
    pub fn start(&mut self, partition: i32, start: i64, committed: Option<i64>) {
        self.partitions.insert(
            partition,
            PartitionOffsets {
                applied: start,
                committed,
            },
        );
    }

    /// Forgets a partition this process no longer owns (a revocation).
    pub fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// A worker applied everything below `next_offset`.
    pub fn applied(&mut self, partition: i32, next_offset: i64, records: u64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.applied = next_offset;
            self.records_since_commit += records;
        }
    }

    pub fn get(&self, partition: i32) -> Option<&PartitionOffsets> {
        self.partitions.get(&partition)
    }

    /// The offsets that differ from what the group has.
    pub fn pending(&self) -> Vec<(i32, i64)> {
        self.partitions
            .iter()
            .filter(|(_, p)| p.committed != Some(p.applied))
            .map(|(&id, p)| (id, p.applied))
            .collect()
    }

    fn refresh_due(&self, now: Instant) -> bool {
        now.duration_since(self.last_refresh) >= REFRESH_EVERY
    }

    /// What a commit at `now` sends: the pending offsets, and every
    /// partition's when a refresh is due.
    pub fn to_commit(&self, now: Instant) -> Vec<(i32, i64)> {
        if self.refresh_due(now) {
            self.partitions
                .iter()
                .map(|(&id, p)| (id, p.applied))
                .collect()
        } else {
            self.pending()
        }
    }

    pub fn commit_due(&self, now: Instant) -> bool {
        // Called on every turn of the coordinator's loop: no allocation here.
        if self.refresh_due(now) {
            return true;
        }
        if self
            .partitions
            .values()
            .all(|p| p.committed == Some(p.applied))
        {
            return false;
        }
        self.records_since_commit >= self.every_messages
            || now.duration_since(self.last_commit) >= self.interval
    }

    /// Records a successful commit of `offsets`, made at `now` from
    /// `to_commit(now)`.
    pub fn committed(&mut self, offsets: &[(i32, i64)], now: Instant) {
        for &(id, offset) in offsets {
            if let Some(p) = self.partitions.get_mut(&id) {
                p.committed = Some(offset);
            }
        }
        self.records_since_commit = 0;
        self.last_commit = now;
        if self.refresh_due(now) {
            self.last_refresh = now;
        }
    }

    /// A failed commit is retried at the next interval, not in a tight loop;
    /// a failed refresh at the next refresh.
    pub fn commit_failed(&mut self, now: Instant) {
        self.last_commit = now;
        if self.refresh_due(now) {
            self.last_refresh = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `start_position` as at-least-once calls it.
    fn start_position_alo(
        stored: Option<i64>,
        earliest: i64,
        latest: i64,
        reset: OffsetReset,
    ) -> Result<(i64, StartReason), StartReason> {
        start_position(stored, earliest, latest, reset, Rewind::ByOffsetReset)
    }

    #[test]
    fn start_positions() {
        use OffsetReset::*;
        let start_position = start_position_alo;
        assert_eq!(
            start_position(Some(5), 0, 10, Earliest),
            Ok((5, StartReason::Stored))
        );
        assert_eq!(
            start_position(Some(10), 0, 10, Fail),
            Ok((10, StartReason::Stored))
        );
        assert_eq!(
            start_position(None, 3, 10, Earliest),
            Ok((3, StartReason::NoStoredOffset(Earliest)))
        );
        assert_eq!(
            start_position(None, 3, 10, Latest),
            Ok((10, StartReason::NoStoredOffset(Latest)))
        );
        assert_eq!(
            start_position(Some(1), 3, 10, Earliest),
            Ok((
                3,
                StartReason::StoredOutOfRange {
                    stored: 1,
                    reset: Earliest
                }
            ))
        );
        assert_eq!(
            start_position(Some(11), 3, 10, Latest),
            Ok((
                10,
                StartReason::StoredOutOfRange {
                    stored: 11,
                    reset: Latest
                }
            ))
        );
        assert_eq!(
            start_position(None, 0, 0, Fail),
            Err(StartReason::NoStoredOffset(Fail))
        );
    }

    #[test]
    fn exactly_once_never_moves_a_stored_offset_outside_the_log() {
        use OffsetReset::*;
        for reset in [Earliest, Latest, Fail] {
            for stored in [2, 11] {
                assert_eq!(
                    start_position(Some(stored), 3, 10, reset, Rewind::Refused),
                    Err(StartReason::StoredOutOfRangeRefused { stored })
                );
                assert_eq!(
                    out_of_range_position(stored, 3, 10, reset, Rewind::Refused),
                    None
                );
            }
        }
        // In range, or nothing stored yet (a first start): as always.
        assert_eq!(
            start_position(Some(10), 3, 10, Earliest, Rewind::Refused),
            Ok((10, StartReason::Stored))
        );
        assert_eq!(
            start_position(None, 3, 10, Latest, Rewind::Refused),
            Ok((10, StartReason::NoStoredOffset(Latest)))
        );
        let past = refused_rewind_message(4, 11, 3, 10);
        assert!(past.contains("offset 11 is past the log end"), "{past}");
        assert!(
            past.contains("kafka2mysql reset-offsets --partition 4 --to"),
            "{past}"
        );
        let below = refused_rewind_message(4, 2, 3, 10);
        assert!(below.contains("offset 2 is below the log start"), "{below}");
    }

    #[test]
    fn the_further_of_offset_table_and_group_wins_in_exactly_once() {
        use StoredIn::*;
        assert_eq!(
            exactly_once_stored(Some(100), Some(40)),
            (Some(100), OffsetTable)
        );
        assert_eq!(
            exactly_once_stored(Some(100), Some(100)),
            (Some(100), OffsetTable)
        );
        assert_eq!(
            exactly_once_stored(Some(100), None),
            (Some(100), OffsetTable)
        );
        assert_eq!(
            exactly_once_stored(Some(100), Some(250)),
            (Some(250), Group)
        );
        assert_eq!(exactly_once_stored(None, Some(7)), (Some(7), Group));
        assert_eq!(exactly_once_stored(None, None), (None, Group));
    }

    #[test]
    fn out_of_range_moves_and_counts_skipped() {
        use OffsetReset::*;
        let out_of_range_position = |requested, earliest, latest, reset| {
            out_of_range_position(requested, earliest, latest, reset, Rewind::ByOffsetReset)
        };
        assert_eq!(
            out_of_range_position(100, 150, 300, Earliest),
            Some((150, 50))
        );
        assert_eq!(out_of_range_position(400, 0, 10, Earliest), Some((0, 0)));
        assert_eq!(
            out_of_range_position(100, 150, 300, Latest),
            Some((300, 200))
        );
        assert_eq!(out_of_range_position(100, 150, 300, Fail), None);
    }

    #[test]
    fn commits_are_due_by_count_or_interval_and_only_for_applied_offsets() {
        let t0 = Instant::now();
        let mut book = OffsetBook::new(100, Duration::from_secs(5), t0);
        book.start(0, 10, Some(10));
        book.start(1, 0, None);
        assert_eq!(book.pending(), vec![(1, 0)]);
        book.committed(&book.pending(), t0);
        assert!(
            !book.commit_due(t0 + Duration::from_secs(20)),
            "nothing new"
        );

        book.applied(0, 60, 50);
        assert!(!book.commit_due(t0));
        book.applied(0, 110, 50);
        assert!(book.commit_due(t0));
        assert_eq!(book.pending(), vec![(0, 110)]);
        book.committed(&[(0, 110)], t0);

        book.applied(1, 3, 3);
        assert!(!book.commit_due(t0 + Duration::from_secs(4)));
        assert!(book.commit_due(t0 + Duration::from_secs(5)));
        assert_eq!(book.pending(), vec![(1, 3)]);
    }

    #[test]
    fn every_offset_is_committed_again_before_the_broker_can_expire_it() {
        let t0 = Instant::now();
        let mut book = OffsetBook::new(100, Duration::from_secs(5), t0);
        book.start(0, 10, Some(10));
        book.start(1, 7, Some(7));
        let before = t0 + REFRESH_EVERY - Duration::from_millis(1);
        assert!(!book.commit_due(before), "nothing changed yet");
        assert_eq!(book.to_commit(before), vec![]);

        // A busy partition's commits do not postpone the idle one's refresh.
        book.applied(0, 20, 10);
        book.committed(&book.to_commit(before), before);
        let at = t0 + REFRESH_EVERY;
        assert!(book.commit_due(at));
        assert_eq!(book.to_commit(at), vec![(0, 20), (1, 7)]);
        book.committed(&book.to_commit(at), at);
        assert!(!book.commit_due(at + Duration::from_secs(10)));

        // A failed refresh is tried again at the next one, not at every turn.
        let next = at + REFRESH_EVERY;
        assert!(book.commit_due(next));
        book.commit_failed(next);
        assert!(!book.commit_due(next + Duration::from_secs(1)));
        assert!(book.commit_due(next + REFRESH_EVERY));
    }

    #[test]
    fn a_position_moved_backwards_is_committed_too() {
        let t0 = Instant::now();
        let mut book = OffsetBook::new(1, Duration::from_secs(5), t0);
        book.start(0, 500, Some(500));
        book.applied(0, 0, 0);
        assert_eq!(book.pending(), vec![(0, 0)]);
    }
}
