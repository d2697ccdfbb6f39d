//! Every Kafka call kafka2mysql makes, behind one small interface of our own
//! types (`Broker`): fetch, earliest and latest offsets, the group's committed
//! offsets, commit. Only the coordinator thread holds a `Broker`.
//!
//! Two clients implement it, chosen by `kafka.client`:
//! - `librdkafka` (the default, `librdkafka.rs`): Kafka 0.11 to 4.x, TLS and
//!   SASL, every codec, transactional topics read committed;
//! - `kafka-rust` (`kafka_rust.rs`): the pure-Rust `kafka` crate, for Kafka
//!   0.10 to 3.9 in plaintext. What it cannot read (LZ4 and ZSTD batches, a
//!   broker that rejects its protocol versions) it reports as such instead
//!   of losing records; `kafka_wire.rs` holds the few requests it makes
//!   itself to find out why the crate's answer was short.
//!
//! The contract both keep: `fetch` returns an outcome for every requested
//! partition on its own, so one partition's error never costs another
//! partition a record; records come in offset order, at or after the
//! requested offset; `next_offset` never passes a record that was not
//! returned.
//!
//! Nothing here decides what a failure means: a partition's fetch that
//! failed comes back as the `Error` it was (`FetchOutcome::Failed`), and
//! `error::Policy` classifies it.
//!
//! Group assignment (`kafka.assignment = "group"`, librdkafka only): the
//! client joins the group, and the group's rebalances reach the coordinator
//! as `Rebalance` events from `rebalance`, which it must ask every turn (it
//! serves the membership: heartbeats and `max.poll.interval.ms` depend on
//! it). The client never takes or gives up a partition by itself: the
//! coordinator completes each event with `assign` (after it started the
//! workers) or `unassign` (after it stopped them and committed), and the
//! group waits for that call.
//!
//! `fake.rs` (tests only) is a scripted broker that keeps the same contract,
//! for the coordinator's unit tests.

#[cfg(test)]
pub mod fake;
mod kafka_rust;
mod kafka_wire;
mod librdkafka;

use std::collections::BTreeMap;

use crate::config::{Assignment, ClientKind, Config};
use crate::error::Error;
use crate::record::Record;

/// One partition to fetch from, at the offset the coordinator wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchRequest {
    pub partition: i32,
    pub offset: i64,
    /// The bytes of records the partition may take now (its room in the
    /// memory budget, `budget.rs`). The records handed out stop at the first
    /// that reaches it; librdkafka keeps the rest queued, `kafka-rust`
    /// fetches its fixed size and hands it all out.
    pub max_bytes: usize,
}

/// What one partition's fetch gave.
#[derive(Debug)]
pub enum FetchOutcome {
    /// Records at or after the requested offset, in offset order (possibly
    /// none). `next_offset` is where reading goes on: one past the last
    /// record, or further when the log holds only what is not a record there
    /// (transaction markers, aborted transactions, compacted gaps), or the
    /// requested offset when nothing came. `high_watermark` is the log end as
    /// last seen, when known.
    Records {
        records: Vec<Record>,
        next_offset: i64,
        high_watermark: Option<i64>,
    },
    /// The fetch of this partition failed. What happened, not what to do:
    /// `Error::OffsetOutOfRange` (the requested offset is no longer, or not
    /// yet, in the log), `Error::Unreadable` (records this client cannot
    /// read, a codec it lacks), `Error::PartitionFetch` (no leader, the
    /// leader moved, a timeout). `error::Policy` says what each means.
    Failed(Error),
}

impl FetchOutcome {
    /// No record now; the partition's position stays `next_offset`.
    pub fn nothing(next_offset: i64) -> FetchOutcome {
        FetchOutcome::Records {
            records: Vec::new(),
            next_offset,
            high_watermark: None,
        }
    }

    pub fn out_of_range() -> FetchOutcome {
        FetchOutcome::Failed(Error::OffsetOutOfRange)
    }

    pub fn unreadable(reason: String) -> FetchOutcome {
        FetchOutcome::Failed(Error::Unreadable(reason))
    }

    pub fn fetch_failed(reason: String) -> FetchOutcome {
        FetchOutcome::Failed(Error::PartitionFetch(reason))
    }
}

#[derive(Debug)]
pub struct PartitionFetch {
    pub partition: i32,
    pub outcome: FetchOutcome,
}

/// The log bounds of every partition of the topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogBounds {
    pub earliest: BTreeMap<i32, i64>,
    pub latest: BTreeMap<i32, i64>,
}

/// A change of the partitions the group gives this process, waiting for the
/// coordinator to complete it (group assignment only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebalance {
    /// These partitions are this member's now: start them, then `assign`.
    Assigned(Vec<i32>),
    /// These partitions go to another member: stop them, commit, then
    /// `unassign`. `lost`: the group already gave them away (this member's
    /// session expired), so a commit is refused.
    Revoked { partitions: Vec<i32>, lost: bool },
}

/// The group as the broker describes it, for `status` (group assignment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupView {
    /// The group's state (`Stable`, `PreparingRebalance`, `Empty`, ...).
    pub state: String,
    /// Each member: its id, client host and the topic's partitions it owns.
    pub members: Vec<GroupMember>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub host: String,
    pub partitions: Vec<i32>,
}

/// The Kafka calls of the service. `Send` because the service connects on
/// one thread and hands the broker to the coordinator thread.
pub trait Broker: Send {
    /// The topic's partitions, sorted; a setup error when the topic does not
    /// exist. Never creates the topic.
    fn partitions(&mut self) -> Result<Vec<i32>, Error>;

    /// Forgets cached metadata after an error (leader moved, topic gone).
    fn reload_metadata(&mut self) -> Result<(), Error>;

    /// Earliest and latest offsets of every partition.
    fn log_bounds(&mut self) -> Result<LogBounds, Error>;

    /// The group's committed next offsets; `None` where nothing is committed.
    fn committed_offsets(&mut self) -> Result<BTreeMap<i32, Option<i64>>, Error>;

    /// Commits next offsets to the group and waits for the answer.
    fn commit(&mut self, offsets: &[(i32, i64)]) -> Result<(), Error>;

    /// Sends a commit without waiting for its answer, which
    /// `commit_answer` then gives: the coordinator goes on fetching
    /// meanwhile (a commit is a round trip to the group coordinator, and
    /// waiting for each one held the coordinator a third of a drain). At
    /// most one commit is in flight: one begun while another is in flight
    /// no longer awaits that one's answer. By default the commit is made
    /// whole here, and its answer is the result.
    fn commit_begin(&mut self, offsets: &[(i32, i64)]) -> Result<(), Error> {
        self.commit(offsets)
    }

    /// The answer to the commit `commit_begin` sent, waiting up to `wait`
    /// for it; `None` while it has not come.
    fn commit_answer(&mut self, _wait: std::time::Duration) -> Option<Result<(), Error>> {
        Some(Ok(()))
    }

    /// Fetches the given partitions, waiting up to `kafka.fetch_max_wait`
    /// when none has data. `Err` means the whole request failed (no broker
    /// reachable); otherwise every requested partition has an outcome.
    fn fetch(&mut self, requests: &[FetchRequest]) -> Result<Vec<PartitionFetch>, Error>;

    /// Reads one record at or after `offset` of a partition, to prove that
    /// fetching works (`kafka2mysql check`); `None` when the partition has
    /// nothing there yet.
    fn probe_fetch(&mut self, partition: i32, offset: i64) -> Result<Option<i64>, Error>;

    /// The topic's identity where the client can tell it (Kafka's topic id),
    /// so that a topic deleted and created again under the same name is seen
    /// as a new log.
    fn topic_id(&mut self) -> Result<Option<String>, Error>;

    /// Partitions whose committed offset, at the last `committed_offsets`,
    /// was found to belong to an earlier topic of the same name: a position
    /// stored elsewhere for them (the offset table) is stale too.
    fn stale_commits(&self) -> Vec<i32> {
        Vec::new()
    }

    /// Whether the client reads `partition` now: false for a partition out
    /// of the window of a client that reads many partitions in turn
    /// (`budget.rs`), and while that window is open to every partition, for
    /// a partition with no records queued. The coordinator lends such a
    /// partition nothing from the memory budget's pool.
    fn reading(&self, _partition: i32) -> bool {
        true
    }

    /// Serves the group membership and returns the next rebalance the group
    /// waits on. Static assignment: never one.
    fn rebalance(&mut self) -> Option<Rebalance> {
        None
    }

    /// Completes an assignment: reads each partition from its start offset.
    /// Static assignment reads a partition from its first fetch instead.
    fn assign(&mut self, _starts: &[(i32, i64)]) -> Result<(), Error> {
        Ok(())
    }

    /// Completes a revocation: reads these partitions no more.
    fn unassign(&mut self, _partitions: &[i32]) -> Result<(), Error> {
        Ok(())
    }

    /// Leaves the group at stop, so that the partitions move at once
    /// instead of after the session timeout; bounded in time.
    fn leave_group(&mut self) {}

    /// The group's members and what each owns, as the broker describes the
    /// group (`status`); `None` where the client cannot ask.
    fn group_view(&mut self) -> Result<Option<GroupView>, Error> {
        Ok(None)
    }
}

/// Connects with the client that `kafka.client` names, and loads the
/// topic's metadata. Fails when no broker answers, when the credentials are
/// refused (a setup error, exit 2), or when the topic does not exist.
///
/// This client never joins the group, whatever `kafka.assignment` says: the
/// commands (`check`, `status`, `reset-offsets`) use it without moving a
/// running member's partitions. `run` uses `join`.
pub fn connect(config: &Config) -> Result<Box<dyn Broker>, Error> {
    match config.kafka.client {
        ClientKind::Librdkafka => Ok(Box::new(librdkafka::Librdkafka::connect(config, false)?)),
        ClientKind::KafkaRust => Ok(Box::new(kafka_rust::KafkaRust::connect(config)?)),
    }
}

/// `connect` for the service: with `kafka.assignment = "group"` the client
/// also subscribes to the topic, as a member of `kafka.group`.
pub fn join(config: &Config) -> Result<Box<dyn Broker>, Error> {
    match (config.kafka.assignment, config.kafka.client) {
        (Assignment::Group, ClientKind::Librdkafka) => {
            Ok(Box::new(librdkafka::Librdkafka::connect(config, true)?))
        }
        _ => connect(config),
    }
}
