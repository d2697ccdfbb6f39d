//! One partition's worker: an OS thread that applies its partition's batches
//! to MySQL strictly in offset order, retries by error class, dead-letters bad
//! records, and reports what it applied on the event channel.
//!
//! Architecture invariant: workers never talk to Kafka. They receive owned
//! `Batch`es from the coordinator and send back `WorkerEvent`s; an offset is
//! reported only after the database transaction that holds its row (or its
//! dead letter) has committed.
//!
//! By error class (`error::Policy`; the README's "Errors and what the
//! operator does" is the operator's side of these rules):
//! - technical and fatal errors: retry with backoff up to
//!   `technical_attempts`, then the partition is blocked: it keeps retrying
//!   the same write at `backoff_max_ms`, skips nothing, and resumes by itself;
//! - business errors: a failing batch is retried record by record; a record
//!   that still fails after `business_attempts` goes to the dead-letter table;
//! - `dead_letter_burst` dead letters in a row block the partition instead;
//! - a failure that may be the table's (`error::Alike`: same code, same
//!   column) is held, not dead-lettered at once: `schema_fault_records`
//!   records in a row failing alike block the partition, none of them
//!   dead-lettered, until the table takes the first. It retries as for a
//!   technical error but reports the block as fatal (status `blocked`):
//!   the operator must fix the table;
//! - a duplicate key on a row the table already holds as the record has it
//!   (`Sink::holds`) is a record written before, replayed after a crash in
//!   at-least-once delivery: counted, logged at debug, not written again.
//!
//! Stopping: the coordinator closes the `stop` channel. A worker finishes the
//! write in hand, skips its queued batches and exits; a blocked worker gives up
//! its retry at once (nothing past the failing record was reported, so nothing
//! is lost: it is fetched again at the next start).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use log::{debug, error, info, warn};

use crate::config::Config;
use crate::error::{is_duplicate_key, Alike, Class, Error, Policy};
use crate::metrics::PartitionCounters;
use crate::mysql::sink::{DeadLetter, Sink, WriteSet};
use crate::record::{Mapper, Record, RowOp};
use crate::retry::{human, Backoff, Decision, Outage, RetryState, WhenSpent};
use crate::status::Stats;

/// Records of one partition, in offset order, copied out of a fetch response.
#[derive(Debug, Clone)]
pub struct Batch {
    pub records: Vec<Record>,
    /// Set when the coordinator moved this partition's position (start, or
    /// OffsetOutOfRange): the worker's next offset becomes this value, and
    /// with no records the new position alone is stored and reported.
    pub reset_to: Option<i64>,
    /// With `reset_to`, once the topic was deleted and created again: the
    /// new topic, whose id exactly-once stores with the partition's
    /// position from then on (`Sink::set_topic_id`).
    pub new_topic: Option<NewTopic>,
}

/// A topic deleted and created again under the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Its id, where the client can tell it.
    pub id: Option<String>,
}

impl Batch {
    /// The bytes of its records, as the memory budget counts them
    /// (`budget.rs`).
    pub fn bytes(&self) -> usize {
        self.records.iter().map(Record::size).sum()
    }
}

/// What workers tell the coordinator.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    /// Everything below `next_offset` is in MySQL (as a row or a dead letter).
    Applied {
        partition: i32,
        next_offset: i64,
        records: u64,
    },
    /// The partition's state changed: it stopped making progress, the
    /// error that holds it changed, or it makes progress again.
    State {
        partition: i32,
        flow: Flow,
    },
    Exited {
        partition: i32,
    },
}

/// Where a partition stands. The worker keeps its own and reports each
/// change (`WorkerEvent::State`); the coordinator's map is the one record
/// of every partition's (`coordinator.rs`), which the status shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Flow {
    Flowing,
    /// Stopped at a record by a fault that clears by itself (the database
    /// away, a lock): tried again at `retry.backoff_max_ms`.
    Retrying(Stall),
    /// Stopped at a record until the operator acts (a fatal error, the
    /// dead-letter burst, a fault of the table), tried again meanwhile.
    Blocked(Stall),
}

/// Where and why a partition stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Stall {
    pub since: SystemTime,
    pub offset: i64,
    pub class: Class,
    pub error: String,
}

impl Flow {
    /// Stopped by `stall`: retrying when its class is technical, blocked
    /// otherwise.
    pub fn stopped(stall: Stall) -> Flow {
        match stall.class {
            Class::Technical => Flow::Retrying(stall),
            Class::Business | Class::Fatal => Flow::Blocked(stall),
        }
    }

    #[cfg(test)]
    pub fn stall(&self) -> Option<&Stall> {
        match self {
            Flow::Flowing => None,
            Flow::Retrying(stall) | Flow::Blocked(stall) => Some(stall),
        }
    }

    pub fn is_flowing(&self) -> bool {
        matches!(self, Flow::Flowing)
    }
}

/// The settings a worker needs, taken from `Config`.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub topic: String,
    pub technical_attempts: u32,
    pub business_attempts: u32,
    pub backoff: Backoff,
    pub dead_letter_burst: u32,
    pub schema_fault_records: u32,
    pub policy: Arc<Policy>,
    /// Batches queued behind the one taken join it, into one write, while
    /// it holds fewer bytes than this (`kafka.fetch_max_bytes_per_partition`).
    pub max_batch_bytes: usize,
}

impl WorkerSettings {
    pub fn from_config(config: &Config, policy: Arc<Policy>) -> WorkerSettings {
        WorkerSettings {
            topic: config.kafka.topic.clone(),
            technical_attempts: config.retry.technical_attempts,
            business_attempts: config.retry.business_attempts,
            backoff: Backoff::from_config(&config.retry),
            dead_letter_burst: config.retry.dead_letter_burst,
            schema_fault_records: config.retry.schema_fault_records,
            policy,
            max_batch_bytes: config.kafka.fetch_max_bytes_per_partition as usize,
        }
    }
}

/// The coordinator's end of a worker. Dropping `sender` ends the worker's
/// loop once its queue is drained; `thread` is joined after that.
pub struct WorkerHandle {
    pub sender: Sender<Batch>,
    pub thread: JoinHandle<()>,
    /// Unix milliseconds when the write in progress began; 0 between
    /// writes. A write that does not return (a database that holds the
    /// connection without answering) shows in the status this way.
    pub writing_since: Arc<AtomicU64>,
    /// Bytes of the records sent to this worker and not yet written
    /// (`Batch::bytes`): the coordinator adds, the worker takes off.
    pub held_bytes: Arc<AtomicUsize>,
}

/// Starts the worker thread `partition-N`.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    partition: i32,
    start_offset: i64,
    sink: Box<dyn Sink>,
    mapper: Arc<Mapper>,
    settings: WorkerSettings,
    events: Sender<WorkerEvent>,
    stop: Receiver<()>,
    stats: Arc<Stats>,
) -> std::io::Result<WorkerHandle> {
    // Unbounded: the coordinator sends only while the partition's share of
    // the memory budget and `Budget::queue_batches` allow (`budget.rs`).
    let (sender, receiver) = crossbeam_channel::unbounded();
    let writing_since = Arc::new(AtomicU64::new(0));
    let held_bytes = Arc::new(AtomicUsize::new(0));
    let mut worker = Worker {
        partition,
        counters: stats.partitions.counters(partition),
        next_offset: start_offset,
        stored_offset: start_offset,
        sink,
        mapper,
        settings,
        events,
        stop,
        stats,
        dead_letters_in_a_row: 0,
        flow: Flow::Flowing,
        block_log: None,
        writing_since: Arc::clone(&writing_since),
        held_bytes: Arc::clone(&held_bytes),
        next_batch: None,
        held: None,
        stale_in_last_write: 0,
    };
    let thread = std::thread::Builder::new()
        .name(format!("partition-{partition}"))
        .spawn(move || worker.run(receiver))?;
    Ok(WorkerHandle {
        sender,
        thread,
        writing_since,
        held_bytes,
    })
}

/// Why a retry loop gave up.
enum Abandon {
    /// A business error: the caller decides (record by record, dead letter).
    Business(Error),
    /// The service is stopping.
    Stopped,
}

/// Records that failed alike, one after the other, and are not
/// dead-lettered yet. If `schema_fault_records` of them come in a row, the
/// table is at fault, not the records; they are dead-lettered as soon as a
/// later record is written, fails otherwise, or none comes within
/// `backoff_max` (see `Worker::run`).
struct Held {
    alike: Alike,
    records: Vec<(Record, DeadLetter)>,
}

/// What became of one record on the slow path.
enum Outcome {
    /// Written, dead-lettered, or held (`Worker::held`).
    Done,
    /// It made `schema_fault_records` records failing alike: these, taken
    /// back from `Worker::held`, none of them written.
    SchemaFault(Held),
}

pub struct Worker {
    partition: i32,
    /// Records below this offset are applied already and never applied again.
    next_offset: i64,
    /// The position the sink stored last (the start, then each reported
    /// offset): every write moves it from here (`WriteSet::previous_offset`).
    stored_offset: i64,
    sink: Box<dyn Sink>,
    mapper: Arc<Mapper>,
    settings: WorkerSettings,
    events: Sender<WorkerEvent>,
    stop: Receiver<()>,
    stats: Arc<Stats>,
    /// This partition's share of `stats`, for the metrics endpoint.
    counters: Arc<PartitionCounters>,
    dead_letters_in_a_row: u32,
    /// Flowing, or where and why it stopped, as last reported.
    flow: Flow,
    /// While stopped: how often it is logged.
    block_log: Option<Outage>,
    writing_since: Arc<AtomicU64>,
    held_bytes: Arc<AtomicUsize>,
    /// A batch taken from the queue that cannot join the one before it (it
    /// moves the position): the next to apply.
    next_batch: Option<Batch>,
    held: Option<Held>,
    /// Records of the last write that the stale-write guard left alone
    /// (`Sink::stale_records`): counted apart, not as rows written.
    stale_in_last_write: u64,
}

impl Worker {
    fn run(&mut self, batches: Receiver<Batch>) {
        loop {
            // Held records wait for the next batch, which tells whether the
            // failure was theirs or the table's, no longer than backoff_max.
            let batch = if let Some(batch) = self.next_batch.take() {
                Some(batch)
            } else if self.held.is_some() {
                match batches.recv_timeout(self.settings.backoff.max) {
                    Err(RecvTimeoutError::Timeout) => {
                        if self.flush_held().is_err() {
                            break;
                        }
                        continue;
                    }
                    other => other.ok(),
                }
            } else {
                batches.recv().ok()
            };
            // No batch: the coordinator dropped the sender (stop). Held
            // records were not reported and are fetched again at the next start.
            let Some(batch) = batch else {
                break;
            };
            if self.stopping() {
                break;
            }
            // The partition's turn for a connection first: what queues up
            // while it waits goes into the same write.
            self.sink.reserve();
            let batch = self.coalesce(batch, &batches);
            let bytes = batch.bytes();
            let applied = self.apply_batch(batch);
            self.sink.release();
            self.held_bytes.fetch_sub(bytes, Ordering::Relaxed);
            if applied.is_err() {
                break;
            }
        }
        let _ = self.events.send(WorkerEvent::Exited {
            partition: self.partition,
        });
    }

    /// Joins the batches queued behind `batch` to it while it holds fewer
    /// than `max_batch_bytes`, so that they go to the database in one
    /// transaction: with many partitions each fetch brings few records, and
    /// the queue fills while the worker writes or waits for a connection.
    /// A batch that moves the position waits for the next turn, and one
    /// that only moves it (no records) is applied alone: storing and
    /// reporting the new position by itself is what the coordinator waits
    /// for before it commits that partition again (a recreated topic).
    fn coalesce(&mut self, mut batch: Batch, batches: &Receiver<Batch>) -> Batch {
        if batch.reset_to.is_some() && batch.records.is_empty() {
            return batch;
        }
        let mut bytes = batch.bytes();
        let mut joined = Vec::new();
        while bytes < self.settings.max_batch_bytes {
            let Ok(next) = batches.try_recv() else {
                break;
            };
            if next.reset_to.is_some() {
                self.next_batch = Some(next);
                break;
            }
            bytes += next.bytes();
            joined.push(next.records);
        }
        // One allocation of the final size, not one per batch joined.
        batch
            .records
            .reserve_exact(joined.iter().map(Vec::len).sum());
        for records in joined {
            batch.records.extend(records);
        }
        batch
    }

    fn stopping(&self) -> bool {
        matches!(self.stop.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Sleeps for `wait` unless the service stops first.
    fn sleep(&self, wait: Duration) -> Result<(), Abandon> {
        match self.stop.recv_timeout(wait) {
            Err(RecvTimeoutError::Disconnected) => Err(Abandon::Stopped),
            _ => Ok(()),
        }
    }

    fn report(&mut self, next_offset: i64, records: u64) {
        self.next_offset = next_offset;
        self.stored_offset = next_offset;
        let _ = self.events.send(WorkerEvent::Applied {
            partition: self.partition,
            next_offset,
            records,
        });
    }

    /// Applies one batch; `Err` only when the service is stopping.
    fn apply_batch(&mut self, batch: Batch) -> Result<(), ()> {
        if let Some(offset) = batch.reset_to {
            self.flush_held()?;
            if let Some(topic) = &batch.new_topic {
                self.sink.set_topic_id(topic.id.as_deref());
            }
            self.next_offset = offset;
            if batch.records.is_empty() {
                let write = WriteSet {
                    partition: self.partition,
                    rows: &mut [],
                    dead_letters: &[],
                    next_offset: offset,
                    previous_offset: self.stored_offset,
                };
                return match self.write_with_retry(write, offset, &[]) {
                    Ok(()) => {
                        self.report(offset, 0);
                        Ok(())
                    }
                    Err(Abandon::Stopped) => Err(()),
                    Err(Abandon::Business(e)) => {
                        error!(
                            "partition {}: cannot store position {offset}: {e}",
                            self.partition
                        );
                        Ok(())
                    }
                };
            }
        }
        let floor = self.next_offset;
        let records: Vec<Record> = batch
            .records
            .into_iter()
            .filter(|r| r.offset >= floor)
            .collect();
        let Some(last) = records.last() else {
            return Ok(());
        };
        let next_offset = last.offset + 1;

        // Fast path: map every record; records that cannot be mapped are
        // dead-lettered in the same transaction, unless that would break the
        // dead-letter burst limit (then the slow path blocks at the right
        // record). Held records go in the same transaction: the batch
        // written shows that the table takes records, so they were bad ones.
        let mut rows = Vec::with_capacity(records.len());
        let mut dead_letters = self.held_dead_letters();
        let held = dead_letters.len();
        let mut in_a_row = self.dead_letters_in_a_row + held as u32;
        let mut fast = true;
        for record in &records {
            match self.map(record) {
                Ok(op) => {
                    rows.push((record.offset, op));
                    in_a_row = 0;
                }
                Err((e, attempts)) => {
                    in_a_row += 1;
                    if in_a_row > self.settings.dead_letter_burst {
                        fast = false;
                        break;
                    }
                    dead_letters.push(self.dead_letter(record, &e, attempts));
                }
            }
        }
        if fast {
            let first_offset = dead_letters
                .first()
                .map_or(records[0].offset, |dl| dl.offset);
            let write = WriteSet {
                partition: self.partition,
                rows: &mut rows,
                dead_letters: &dead_letters,
                next_offset,
                previous_offset: self.stored_offset,
            };
            match self.write_with_retry(write, first_offset, &records) {
                Ok(()) => {
                    for dl in &dead_letters {
                        self.log_dead_letter(dl);
                    }
                    self.held = None;
                    self.dead_letters_in_a_row = in_a_row;
                    self.count_applied(&rows, dead_letters.len());
                    self.report(next_offset, (records.len() + held) as u64);
                    return Ok(());
                }
                Err(Abandon::Stopped) => return Err(()),
                Err(Abandon::Business(e)) => {
                    info!(
                        "topic {} partition {} offsets {}..{}: batch failed ({e}); retrying record by record",
                        self.settings.topic, self.partition, records[0].offset, next_offset - 1
                    );
                }
            }
        }
        let mut queue: VecDeque<Record> = records.into();
        while let Some(record) = queue.pop_front() {
            if let Outcome::SchemaFault(held) = self.apply_record(record)? {
                let again = self.wait_out_schema_fault(held)?;
                for record in again.into_iter().rev() {
                    queue.push_front(record);
                }
            }
        }
        Ok(())
    }

    /// Maps a record once. Mapping looks only at the record's bytes, so a
    /// failure would repeat on every attempt: the record retry state counts
    /// them all as made (`RetryState::next`), and returns their number.
    fn map(&self, record: &Record) -> Result<RowOp, (Error, u32)> {
        self.mapper.map(record).map_err(|e| {
            let error = Error::Record(e);
            let mut retry = self.record_retry();
            let decision = retry.next(self.settings.policy.classify(&error));
            debug_assert_eq!(decision, Decision::GiveUp);
            (error, retry.failures())
        })
    }

    /// The attempts of one record on its own: `business_attempts` in all
    /// for a business error, then it is given back (held, dead-lettered).
    fn record_retry(&self) -> RetryState {
        let retries = self.settings.business_attempts.max(1) - 1;
        RetryState::limited(
            self.settings.backoff,
            &[Class::Business],
            retries,
            WhenSpent::GiveUp,
        )
    }

    /// Maps and writes one record in its own transaction, with the held
    /// records' dead letters: `Ok` when it is in the table, also when it
    /// was there already (see `Sink::holds`).
    fn write_record(&mut self, record: &Record) -> Result<RowOp, Abandon> {
        let op = self
            .mapper
            .map(record)
            .map_err(|e| Abandon::Business(Error::Record(e)))?;
        let mut rows = [(record.offset, op)];
        let held = self.held_dead_letters();
        let write = WriteSet {
            partition: self.partition,
            rows: &mut rows,
            dead_letters: &held,
            next_offset: record.offset + 1,
            previous_offset: self.stored_offset,
        };
        let first_offset = held.first().map_or(record.offset, |dl| dl.offset);
        let result = self.write_with_retry(write, first_offset, std::slice::from_ref(record));
        let [(_, op)] = rows;
        match result {
            Err(Abandon::Business(e)) if is_duplicate_key(&e) => {
                // Whatever the sink answers, this record is not written: only
                // the position (exactly-once) and the held dead letters are.
                if !matches!(self.sink.holds(&op), Ok(true)) {
                    return Err(Abandon::Business(e));
                }
                debug!(
                    "topic {} partition {} offset {}: already in the table as the record has it \
                     (written before a restart, or sent twice); not written again: {e}",
                    self.settings.topic, self.partition, record.offset
                );
                let write = WriteSet {
                    partition: self.partition,
                    rows: &mut [],
                    dead_letters: &held,
                    next_offset: record.offset + 1,
                    previous_offset: self.stored_offset,
                };
                self.write_with_retry(write, first_offset, &[])?;
                self.stats.add_already_written(1);
                Ok(RowOp::Skip)
            }
            other => other.map(|()| op),
        }
    }

    /// The slow path: one record in its own transaction, business retries
    /// with backoff, then held (when its failure may be the table's), or a
    /// dead letter (or a block, past the burst limit).
    fn apply_record(&mut self, record: Record) -> Result<Outcome, ()> {
        let mut retry = self.record_retry();
        let mut burst_blocked_since: Option<SystemTime> = None;
        loop {
            let error = match self.write_record(&record) {
                Ok(op) => {
                    if burst_blocked_since.is_some() {
                        self.resume();
                    }
                    let held = self.settle_held();
                    self.dead_letters_in_a_row = 0;
                    self.count_applied(&[(record.offset, op)], held);
                    self.report(record.offset + 1, 1 + held as u64);
                    return Ok(Outcome::Done);
                }
                Err(Abandon::Stopped) => return Err(()),
                Err(Abandon::Business(e)) => e,
            };
            if let Decision::RetryAfter(wait) = retry.next(self.settings.policy.classify(&error)) {
                self.count_retry();
                if self.sleep(wait).is_err() {
                    return Err(());
                }
                continue;
            }
            let attempts = retry.failures();
            let alike = Alike::of(&error, &self.settings.policy)
                .filter(|_| self.settings.schema_fault_records > 0);
            if self.held.as_ref().map(|h| &h.alike) != alike.as_ref() {
                // A failure of another kind: the held records were bad ones.
                self.flush_held()?;
            }
            if let Some(alike) = alike {
                let dl = self.dead_letter(&record, &error, attempts);
                let held = self.held.get_or_insert_with(|| Held {
                    alike,
                    records: Vec::new(),
                });
                held.records.push((record, dl));
                if held.records.len() >= self.settings.schema_fault_records as usize {
                    let held = self.held.take().expect("held above");
                    return Ok(Outcome::SchemaFault(held));
                }
                return Ok(Outcome::Done);
            }
            if self.dead_letters_in_a_row >= self.settings.dead_letter_burst {
                // Circuit breaker: a broken table or mapping must not empty the
                // topic into the dead-letter table.
                let since = *burst_blocked_since.get_or_insert_with(SystemTime::now);
                let message = format!(
                    "{} records in a row went to the dead-letter table (retry.dead_letter_burst); \
                     blocked at this record until it can be written: {error}",
                    self.dead_letters_in_a_row
                );
                self.block(record.offset, since, Class::Business, &message);
                if self.sleep(self.settings.backoff.max).is_err() {
                    return Err(());
                }
                continue;
            }
            let dl = self.dead_letter(&record, &error, attempts);
            self.write_dead_letters(vec![dl])?;
            return Ok(Outcome::Done);
        }
    }

    /// `schema_fault_records` records failed alike: the table changed (a
    /// `NOT NULL` column without a default added, a type narrowed), so the
    /// partition blocks at the first of them, with nothing dead-lettered,
    /// and retries it at `backoff_max`. The block is reported as fatal: it
    /// ends when the operator fixes the table, not by itself. Returns, once the first is written, the
    /// others to apply again; or all of them when the first fails otherwise
    /// now (the fault is gone, what is left is about the records).
    fn wait_out_schema_fault(&mut self, held: Held) -> Result<Vec<Record>, ()> {
        let since = SystemTime::now();
        let Held {
            alike,
            records: mut held,
        } = held;
        let count = held.len();
        loop {
            let (first, dl) = &held[0];
            let message = format!(
                "{count} records in a row failed alike, a fault of the table rather than of the \
                 records (retry.schema_fault_records); none is dead-lettered, retrying until the \
                 table takes this one (the operator must fix the table): {}",
                dl.error
            );
            self.block(first.offset, since, Class::Fatal, &message);
            if self.sleep(self.settings.backoff.max).is_err() {
                return Err(());
            }
            let first = first.clone();
            match self.write_record(&first) {
                Ok(op) => {
                    self.resume();
                    self.dead_letters_in_a_row = 0;
                    self.count_applied(&[(first.offset, op)], 0);
                    self.report(first.offset + 1, 1);
                    return Ok(held.drain(1..).map(|(r, _)| r).collect());
                }
                Err(Abandon::Stopped) => return Err(()),
                Err(Abandon::Business(e)) => {
                    if Alike::of(&e, &self.settings.policy).as_ref() != Some(&alike) {
                        self.resume();
                        return Ok(held.into_iter().map(|(r, _)| r).collect());
                    }
                    held[0].1.error = e.to_string();
                }
            }
        }
    }

    /// The held records' dead letters, to write with the next write.
    fn held_dead_letters(&self) -> Vec<DeadLetter> {
        self.held
            .iter()
            .flat_map(|h| h.records.iter().map(|(_, dl)| dl.clone()))
            .collect()
    }

    /// The held records' dead letters were written with the last write:
    /// log them and count them; returns how many.
    fn settle_held(&mut self) -> usize {
        let Some(held) = self.held.take() else {
            return 0;
        };
        for (_, dl) in &held.records {
            self.log_dead_letter(dl);
        }
        held.records.len()
    }

    /// Dead-letters the held records on their own.
    fn flush_held(&mut self) -> Result<(), ()> {
        let dead_letters = self.held_dead_letters();
        if dead_letters.is_empty() {
            return Ok(());
        }
        self.write_dead_letters(dead_letters)?;
        self.held = None;
        Ok(())
    }

    /// Writes dead letters (in offset order, the last one's offset + 1 then
    /// reported). The dead-letter table itself refusing them blocks rather
    /// than skips.
    fn write_dead_letters(&mut self, dead_letters: Vec<DeadLetter>) -> Result<(), ()> {
        let (first, last) = match (dead_letters.first(), dead_letters.last()) {
            (Some(first), Some(last)) => (first.offset, last.offset),
            _ => return Ok(()),
        };
        let mut blocked_since: Option<SystemTime> = None;
        loop {
            let write = WriteSet {
                partition: self.partition,
                rows: &mut [],
                dead_letters: &dead_letters,
                next_offset: last + 1,
                previous_offset: self.stored_offset,
            };
            match self.write_with_retry(write, first, &[]) {
                Ok(()) => {
                    for dl in &dead_letters {
                        self.log_dead_letter(dl);
                    }
                    self.dead_letters_in_a_row += dead_letters.len() as u32;
                    self.count_applied(&[], dead_letters.len());
                    self.report(last + 1, dead_letters.len() as u64);
                    return Ok(());
                }
                Err(Abandon::Stopped) => return Err(()),
                Err(Abandon::Business(e)) => {
                    let since = *blocked_since.get_or_insert_with(SystemTime::now);
                    self.block(
                        first,
                        since,
                        Class::Fatal,
                        &format!("cannot write dead letter: {e}"),
                    );
                    if self.sleep(self.settings.backoff.max).is_err() {
                        return Err(());
                    }
                }
            }
        }
    }

    /// Writes one write set, retrying technical and fatal failures for ever
    /// (blocked after `technical_attempts`). Business errors go back to the
    /// caller at once. `records` are the records of the write's rows, in
    /// offset order: after a failed attempt they are mapped again, since the
    /// sink may have taken the rows' values (`Sink::apply`).
    fn write_with_retry(
        &mut self,
        mut write: WriteSet<'_>,
        first_offset: i64,
        records: &[Record],
    ) -> Result<(), Abandon> {
        let mut retry = RetryState::limited(
            self.settings.backoff,
            &[Class::Technical, Class::Fatal],
            self.settings.technical_attempts,
            WhenSpent::Stuck,
        );
        let mut blocked_since: Option<SystemTime> = None;
        let started = Instant::now();
        loop {
            let now_ms = crate::status::unix_millis(SystemTime::now());
            self.writing_since.store(now_ms, Ordering::Relaxed);
            let attempt_started = Instant::now();
            let applied = self.sink.apply(write.reborrow());
            self.writing_since.store(0, Ordering::Relaxed);
            let error = match applied {
                Ok(()) => {
                    if !write.rows.is_empty() || !write.dead_letters.is_empty() {
                        self.counters
                            .write_seconds
                            .observe(attempt_started.elapsed());
                    }
                    self.stale_in_last_write = self.sink.stale_records();
                    self.resume();
                    return Ok(());
                }
                Err(e) => e,
            };
            self.map_again(write.rows, records);
            let verdict = self.settings.policy.classify(&error);
            let class = verdict.class;
            let wait = match retry.next(verdict) {
                Decision::GiveUp => return Err(Abandon::Business(error)),
                Decision::RetryAfter(wait) => {
                    self.count_retry();
                    warn!(
                        "topic {} partition {} offset {first_offset}: {class} error, attempt {} of {}, retrying in {:?}: {error}",
                        self.settings.topic, self.partition, retry.failures(), self.settings.technical_attempts, wait
                    );
                    wait
                }
                Decision::Stuck(wait) => {
                    self.count_retry();
                    let since = *blocked_since.get_or_insert_with(SystemTime::now);
                    let advice = if class == Class::Fatal {
                        " (the operator must fix this)"
                    } else {
                        ""
                    };
                    self.block(
                        first_offset,
                        since,
                        class,
                        &format!(
                            "{error}{advice}; blocked for {}s",
                            started.elapsed().as_secs()
                        ),
                    );
                    wait
                }
            };
            self.sleep(wait)?;
        }
    }

    /// Maps the records of `rows` again (`records`, in offset order, holds
    /// them), after a write that may have taken their values. Mapping looks
    /// only at a record's bytes, so each gives the row it gave before.
    fn map_again(&self, rows: &mut [(i64, RowOp)], records: &[Record]) {
        for (offset, op) in rows.iter_mut() {
            let found = records.binary_search_by_key(offset, |r| r.offset);
            debug_assert!(
                found.is_ok(),
                "offset {offset} is among the write's records"
            );
            if let Some(Ok(again)) = found.ok().map(|i| self.mapper.map(&records[i])) {
                *op = again;
            }
        }
    }

    /// Marks the partition blocked. Called at every retry while it stays
    /// so: the first call is logged in full, the later ones at growing
    /// intervals (`retry::Outage`).
    fn block(&mut self, offset: i64, since: SystemTime, class: Class, message: &str) {
        let now = Instant::now();
        let text = match &mut self.block_log {
            None => {
                self.block_log = Some(Outage::begin(now, message.to_string()));
                Some(format!(
                    "topic {} partition {} offset {offset}: partition blocked ({class}): {message}",
                    self.settings.topic, self.partition
                ))
            }
            Some(outage) => outage.again(now, message.to_string()).map(|n| {
                format!(
                    "topic {} partition {} offset {offset}: still blocked after {} ({n} retries since the last line, {class}): {message}",
                    self.settings.topic,
                    self.partition,
                    human(outage.lasted(now))
                )
            }),
        };
        match text {
            Some(text) if class == Class::Fatal => error!("{text}"),
            Some(text) => warn!("{text}"),
            None => {}
        }
        let flow = Flow::stopped(Stall {
            since,
            offset,
            class,
            error: message.to_string(),
        });
        if flow != self.flow {
            self.flow = flow.clone();
            let _ = self.events.send(WorkerEvent::State {
                partition: self.partition,
                flow,
            });
        }
    }

    fn resume(&mut self) {
        if !self.flow.is_flowing() {
            self.flow = Flow::Flowing;
            let lasted = self.block_log.take().map_or_else(String::new, |outage| {
                format!(
                    " after {} ({} retries)",
                    human(outage.lasted(Instant::now())),
                    outage.retries
                )
            });
            info!(
                "topic {} partition {}: resumed{lasted}",
                self.settings.topic, self.partition
            );
            let _ = self.events.send(WorkerEvent::State {
                partition: self.partition,
                flow: Flow::Flowing,
            });
        }
    }

    fn dead_letter(&self, record: &Record, error: &Error, attempts: u32) -> DeadLetter {
        DeadLetter {
            offset: record.offset,
            key: record.key().to_vec(),
            value: record.value().map(<[u8]>::to_vec),
            class: self.settings.policy.class(error),
            code: error.mysql_code(),
            error: error.to_string(),
            attempts,
            timestamp: record.timestamp(),
        }
    }

    fn log_dead_letter(&self, dl: &DeadLetter) {
        warn!(
            "topic {} partition {} offset {}: dead-lettered after {} attempt(s): {}",
            self.settings.topic,
            self.partition,
            dl.offset,
            dl.attempts,
            crate::record::escape_for_log(dl.error.as_bytes(), 300)
        );
    }

    fn count_retry(&self) {
        self.stats.add_retry();
        self.counters.add_retry();
    }

    /// Counts what the last write did: `rows` applied (less the stale ones,
    /// counted apart) and `dead_letters`.
    fn count_applied(&mut self, rows: &[(i64, RowOp)], dead_letters: usize) {
        let stale = std::mem::take(&mut self.stale_in_last_write);
        let written = rows
            .iter()
            .filter(|(_, op)| !matches!(op, RowOp::Skip))
            .count()
            .saturating_sub(stale as usize);
        self.stats
            .add_applied(rows.len() + dead_letters, written, dead_letters);
        self.counters
            .add_applied(rows.len() + dead_letters, written, dead_letters);
        if stale > 0 {
            self.stats.add_stale(stale);
            self.counters.add_stale(stale);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UnknownFields;
    use crate::error::RecordError;
    use crate::record::{Column, TableSchema};
    use std::collections::{BTreeMap, VecDeque};
    use std::sync::Mutex;

    /// An in-memory table: rows by id, dead letters by offset; scripted
    /// failures are returned before the write is looked at. Like
    /// `MysqlSink`, it moves the rows' values out whatever the outcome, so
    /// that every retry here depends on the worker mapping them again.
    #[derive(Default)]
    struct Memory {
        rows: BTreeMap<i64, mysql::Value>,
        dead_letters: BTreeMap<i64, DeadLetter>,
        failures: VecDeque<Error>,
        /// Ids whose write fails with a business error (like a value too long).
        poison_ids: Vec<i64>,
        /// Ids whose write fails with this code (and the text "code N").
        poison_codes: BTreeMap<i64, u16>,
        /// Every row write fails with 1364, as after a `NOT NULL` column
        /// without a default was added.
        column_added: bool,
        /// Plain INSERT: an id already there is a duplicate key (1062).
        insert: bool,
        applies: usize,
        /// The stored position, as an exactly-once offset table holds it.
        position: Option<i64>,
    }

    #[derive(Clone, Default)]
    struct MemorySink(Arc<Mutex<Memory>>);

    fn server_error(code: u16) -> Error {
        Error::Mysql(mysql::Error::MySqlError(mysql::MySqlError {
            state: "HY000".into(),
            message: "x".into(),
            code,
        }))
    }

    impl Sink for MemorySink {
        fn apply(&mut self, write: WriteSet<'_>) -> Result<(), Error> {
            let mut m = self.0.lock().unwrap();
            m.applies += 1;
            let taken: Vec<Vec<mysql::Value>> = write
                .rows
                .iter_mut()
                .filter_map(|(_, op)| match op {
                    RowOp::Write { values, .. } => Some(std::mem::take(values)),
                    _ => None,
                })
                .collect();
            if let Some(e) = m.failures.pop_front() {
                return Err(e);
            }
            let mut staged = m.rows.clone();
            for values in &taken {
                let mysql::Value::Int(id) = values[0] else {
                    panic!("id")
                };
                if m.poison_ids.contains(&id) {
                    return Err(server_error(1406));
                }
                if let Some(&code) = m.poison_codes.get(&id) {
                    return Err(server_message(code, &format!("code {code}")));
                }
                if m.column_added {
                    return Err(server_message(
                        1364,
                        "Field 'added' doesn't have a default value",
                    ));
                }
                if m.insert && staged.contains_key(&id) {
                    return Err(server_message(
                        1062,
                        &format!("Duplicate entry '{id}' for key 'PRIMARY'"),
                    ));
                }
                staged.insert(id, values.get(1).cloned().unwrap_or(mysql::Value::NULL));
            }
            m.rows = staged;
            for dl in write.dead_letters {
                m.dead_letters.insert(dl.offset, dl.clone());
            }
            // Every write starts where the last one ended (the fence).
            if let Some(position) = m.position {
                assert_eq!(write.previous_offset, position, "{write:?}");
            }
            m.position = Some(write.next_offset);
            Ok(())
        }

        fn holds(&mut self, row: &RowOp) -> Result<bool, Error> {
            let RowOp::Write { values, .. } = row else {
                return Ok(false);
            };
            let mysql::Value::Int(id) = values[0] else {
                panic!("id")
            };
            let m = self.0.lock().unwrap();
            Ok(m.rows.get(&id) == values.get(1))
        }
    }

    fn server_message(code: u16, message: &str) -> Error {
        Error::Mysql(mysql::Error::MySqlError(mysql::MySqlError {
            state: "HY000".into(),
            message: message.into(),
            code,
        }))
    }

    fn mapper() -> Arc<Mapper> {
        let columns = vec![
            Column {
                name: "id".into(),
                column_type: "int(11)".into(),
            },
            Column {
                name: "name".into(),
                column_type: "varchar(64)".into(),
            },
        ];
        Arc::new(Mapper {
            schema: TableSchema::new("t", columns, &["id".to_string()]).unwrap(),
            unknown_fields: UnknownFields::Ignore,
            delete_on_tombstone: true,
            max_record_bytes: 1000,
            record_format: Default::default(),
            time_zone: Default::default(),
            metadata: Default::default(),
        })
    }

    fn settings() -> WorkerSettings {
        WorkerSettings {
            topic: "t".into(),
            technical_attempts: 2,
            business_attempts: 3,
            backoff: Backoff {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(5),
            },
            dead_letter_burst: 1000,
            schema_fault_records: 10,
            policy: Arc::default(),
            // One write per batch sent, so that the tests choose the
            // batches; `queued_batches_join_into_one_write` tests joining.
            max_batch_bytes: 0,
        }
    }

    struct Harness {
        handle: WorkerHandle,
        events: Receiver<WorkerEvent>,
        stop: Option<Sender<()>>,
        sink: MemorySink,
        stats: Arc<Stats>,
    }

    fn start(sink: MemorySink, settings: WorkerSettings) -> Harness {
        let (event_tx, events) = crossbeam_channel::unbounded();
        let (stop, stop_rx) = crossbeam_channel::bounded(0);
        let stats = Arc::new(Stats::default());
        let handle = spawn(
            0,
            0,
            Box::new(sink.clone()),
            mapper(),
            settings,
            event_tx,
            stop_rx,
            Arc::clone(&stats),
        )
        .unwrap();
        Harness {
            handle,
            events,
            stop: Some(stop),
            sink,
            stats,
        }
    }

    fn good(offset: i64) -> Record {
        Record::new(
            offset,
            b"",
            format!(r#"{{"id": {offset}, "name": "n{offset}"}}"#).as_bytes(),
        )
    }

    fn batch(records: Vec<Record>) -> Batch {
        Batch {
            records,
            reset_to: None,
            new_topic: None,
        }
    }

    impl Harness {
        /// Sends as the coordinator does, counting the batch's bytes.
        fn send_batch(&self, batch: Batch) {
            self.handle
                .held_bytes
                .fetch_add(batch.bytes(), Ordering::Relaxed);
            self.handle.sender.send(batch).unwrap();
        }

        fn send(&self, records: Vec<Record>) {
            self.send_batch(batch(records));
        }

        /// Waits for the Applied event that reaches `next_offset`, returning
        /// every event seen on the way.
        fn until_applied(&self, next_offset: i64) -> Vec<WorkerEvent> {
            let mut seen = Vec::new();
            loop {
                let e = self
                    .events
                    .recv_timeout(Duration::from_secs(10))
                    .expect("worker event");
                let done =
                    matches!(e, WorkerEvent::Applied { next_offset: n, .. } if n == next_offset);
                seen.push(e);
                if done {
                    return seen;
                }
            }
        }

        fn finish(mut self) -> Memory {
            drop(self.stop.take());
            drop(self.handle.sender);
            self.handle.thread.join().unwrap();
            std::mem::take(&mut *self.sink.0.lock().unwrap())
        }
    }

    /// Each `Applied` report as (next offset, records).
    fn applied_reports(events: &[WorkerEvent]) -> Vec<(i64, u64)> {
        events
            .iter()
            .filter_map(|e| match e {
                WorkerEvent::Applied {
                    next_offset,
                    records,
                    ..
                } => Some((*next_offset, *records)),
                _ => None,
            })
            .collect()
    }

    /// A worker joining up to `max_batch_bytes` a write, whose first write
    /// fails once (a technical error) and is retried after 100 ms, so that
    /// the batches sent meanwhile queue up behind it.
    fn start_behind_a_failed_write(max_batch_bytes: usize) -> Harness {
        let sink = MemorySink::default();
        sink.0
            .lock()
            .unwrap()
            .failures
            .push_back(server_error(2013));
        let mut settings = settings();
        settings.max_batch_bytes = max_batch_bytes;
        settings.backoff.initial = Duration::from_millis(100);
        settings.backoff.max = Duration::from_millis(100);
        start(sink, settings)
    }

    /// Batches that queued up while the worker was busy go to the database
    /// as one write, up to `max_batch_bytes`; a batch that moves the
    /// position is not joined to the ones before it.
    #[test]
    fn queued_batches_join_into_one_write() {
        let h = start_behind_a_failed_write(3 * good(0).size());
        for offset in 0..5 {
            h.send(vec![good(offset)]);
        }
        h.send_batch(Batch {
            records: vec![good(10)],
            reset_to: Some(10),
            new_topic: None,
        });
        let events = h.until_applied(11);
        let applied = applied_reports(&events);
        // Up to three records a write, at least once three, and the moved
        // position alone.
        assert_eq!(applied.last(), Some(&(11, 1)), "{applied:?}");
        assert!(applied.iter().all(|&(_, n)| n <= 3), "{applied:?}");
        assert!(applied.iter().any(|&(_, n)| n == 3), "{applied:?}");
        assert_eq!(applied.iter().map(|&(_, n)| n).sum::<u64>(), 6);
        assert_eq!(h.handle.held_bytes.load(Ordering::Relaxed), 0);
        let memory = h.finish();
        assert_eq!(memory.rows.len(), 6);
    }

    /// A position moved without records (a recreated topic read from its
    /// start) is stored and reported alone, with no records, even when
    /// batches queued up behind it: the coordinator holds that partition's
    /// commits until it sees that report.
    #[test]
    fn a_moved_position_is_reported_alone_when_batches_wait_behind_it() {
        let h = start_behind_a_failed_write(10 * good(0).size());
        h.send(vec![good(0)]);
        h.send_batch(Batch {
            records: Vec::new(),
            reset_to: Some(10),
            new_topic: None,
        });
        h.send(vec![good(10)]);
        h.send(vec![good(11)]);
        let events = h.until_applied(12);
        let applied = applied_reports(&events);
        assert_eq!(applied, [(1, 1), (10, 0), (12, 2)], "{applied:?}");
        assert_eq!(h.finish().rows.len(), 3);
    }

    #[test]
    fn a_clean_batch_is_one_write_and_one_report() {
        let h = start(MemorySink::default(), settings());
        h.send((0..10).map(good).collect());
        let events = h.until_applied(10);
        assert_eq!(
            events,
            vec![WorkerEvent::Applied {
                partition: 0,
                next_offset: 10,
                records: 10
            }]
        );
        let m = h.finish();
        assert_eq!(m.rows.len(), 10);
        assert_eq!(m.applies, 1);
    }

    #[test]
    fn technical_errors_block_then_resume_without_skipping() {
        let sink = MemorySink::default();
        sink.0.lock().unwrap().failures = (0..6).map(|_| server_error(2013)).collect();
        let h = start(sink, settings());
        h.send((0..3).map(good).collect());
        let events = h.until_applied(3);
        assert!(
            events.iter().any(|e| matches!(
                e,
                WorkerEvent::State {
                    flow: Flow::Retrying(Stall {
                        offset: 0,
                        class: Class::Technical,
                        ..
                    }),
                    ..
                }
            )),
            "{events:?}"
        );
        assert!(resumed(&events), "{events:?}");
        let m = h.finish();
        assert_eq!(m.rows.len(), 3);
        assert_eq!(m.applies, 7);
    }

    #[test]
    fn a_bad_record_is_dead_lettered_and_the_rest_land() {
        let sink = MemorySink::default();
        sink.0.lock().unwrap().poison_ids = vec![2];
        let h = start(sink, settings());
        let mut records: Vec<Record> = (0..5).map(good).collect();
        records.push(Record::new(5, b"", b"{broken"));
        h.send(records);
        h.until_applied(6);
        let m = h.finish();
        assert_eq!(m.rows.keys().copied().collect::<Vec<_>>(), vec![0, 1, 3, 4]);
        assert_eq!(
            m.dead_letters.keys().copied().collect::<Vec<_>>(),
            vec![2, 5]
        );
        let dl = &m.dead_letters[&2];
        assert_eq!(
            (dl.class, dl.code, dl.attempts),
            (Class::Business, Some(1406), 3)
        );
        let dl = &m.dead_letters[&5];
        assert_eq!((dl.class, dl.code, dl.attempts), (Class::Business, None, 3));
    }

    #[test]
    fn undecodable_records_take_the_fast_path() {
        let h = start(MemorySink::default(), settings());
        h.send(vec![good(0), Record::new(1, b"", b"\xff"), good(2)]);
        h.until_applied(3);
        let m = h.finish();
        assert_eq!(m.applies, 1, "one transaction for rows and dead letter");
        assert_eq!(m.rows.len(), 2);
        assert!(m.dead_letters[&1].error.contains("UTF-8"));
    }

    #[test]
    fn the_dead_letter_burst_blocks_the_partition() {
        let mut s = settings();
        s.dead_letter_burst = 3;
        s.business_attempts = 0;
        let h = start(MemorySink::default(), s);
        h.send((0..6).map(|o| Record::new(o, b"", b"nope")).collect());
        let mut blocked = false;
        while !blocked {
            let e = h
                .events
                .recv_timeout(Duration::from_secs(10))
                .expect("event");
            if let Some(Stall { offset, error, .. }) = stall(&e) {
                assert!(
                    matches!(
                        e,
                        WorkerEvent::State {
                            flow: Flow::Blocked(_),
                            ..
                        }
                    ),
                    "{e:?}"
                );
                assert_eq!(*offset, 3);
                assert!(error.contains("dead_letter_burst"), "{error}");
                blocked = true;
            }
        }
        let m = h.finish();
        assert_eq!(m.dead_letters.len(), 3);
        assert_eq!(m.dead_letters[&0].attempts, 1);
    }

    #[test]
    fn stop_ends_a_blocked_worker_without_reporting() {
        let sink = MemorySink::default();
        sink.0.lock().unwrap().failures = (0..10_000).map(|_| server_error(1146)).collect();
        let h = start(sink, settings());
        h.send(vec![good(0)]);
        loop {
            let e = h.events.recv_timeout(Duration::from_secs(10)).unwrap();
            if let Some(Stall { class, .. }) = stall(&e) {
                assert_eq!(*class, Class::Fatal);
                break;
            }
        }
        let events = h.events.clone();
        let m = h.finish();
        assert!(m.rows.is_empty());
        let rest: Vec<WorkerEvent> = events.try_iter().collect();
        assert!(
            !rest
                .iter()
                .any(|e| matches!(e, WorkerEvent::Applied { .. })),
            "{rest:?}"
        );
        assert!(rest.contains(&WorkerEvent::Exited { partition: 0 }));
    }

    #[test]
    fn records_below_the_applied_offset_are_not_applied_again() {
        let h = start(MemorySink::default(), settings());
        h.send((0..3).map(good).collect());
        h.until_applied(3);
        h.send((1..5).map(good).collect());
        let events = h.until_applied(5);
        assert_eq!(
            events,
            vec![WorkerEvent::Applied {
                partition: 0,
                next_offset: 5,
                records: 2
            }]
        );
        h.handle
            .sender
            .send(Batch {
                records: vec![],
                reset_to: Some(100),
                new_topic: None,
            })
            .unwrap();
        h.until_applied(100);
        let m = h.finish();
        assert_eq!(m.rows.len(), 5);
    }

    fn resumed(events: &[WorkerEvent]) -> bool {
        events.iter().any(|e| {
            matches!(
                e,
                WorkerEvent::State {
                    flow: Flow::Flowing,
                    ..
                }
            )
        })
    }

    /// Where and why a State event says the partition stopped.
    fn stall(event: &WorkerEvent) -> Option<&Stall> {
        match event {
            WorkerEvent::State { flow, .. } => flow.stall(),
            _ => None,
        }
    }

    /// Waits for the first Blocked event, returning every event seen on the way.
    fn until_blocked(events: &Receiver<WorkerEvent>) -> Vec<WorkerEvent> {
        let mut seen = Vec::new();
        loop {
            let e = events
                .recv_timeout(Duration::from_secs(10))
                .expect("worker event");
            let done = stall(&e).is_some();
            seen.push(e);
            if done {
                return seen;
            }
        }
    }

    fn schema_fault_settings(records: u32) -> WorkerSettings {
        let mut s = settings();
        s.schema_fault_records = records;
        s
    }

    #[test]
    fn records_failing_alike_block_as_a_fault_of_the_table_until_it_is_fixed() {
        let sink = MemorySink::default();
        sink.0.lock().unwrap().column_added = true;
        let h = start(sink, schema_fault_settings(4));
        h.send((0..3).map(good).collect());
        h.send((3..10).map(good).collect());
        let events = until_blocked(&h.events);
        let Some(WorkerEvent::State {
            flow:
                Flow::Blocked(Stall {
                    offset,
                    class,
                    error,
                    ..
                }),
            ..
        }) = events.last()
        else {
            panic!("blocked: {events:?}")
        };
        assert_eq!((*offset, *class), (0, Class::Fatal), "{events:?}");
        assert!(error.contains("schema_fault_records"), "{error}");
        assert!(error.contains("1364"), "{error}");
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, WorkerEvent::Applied { .. })),
            "nothing reported while the records are held: {events:?}"
        );
        // Blocked: it keeps trying the first record and writes nothing.
        let tried = h.sink.0.lock().unwrap().applies;
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.sink.0.lock().unwrap().applies < tried + 2 {
            assert!(
                Instant::now() < deadline,
                "the blocked record is tried again"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(h.sink.0.lock().unwrap().dead_letters.is_empty());

        h.sink.0.lock().unwrap().column_added = false;
        let events = h.until_applied(10);
        assert!(resumed(&events), "{events:?}");
        let m = h.finish();
        assert_eq!(m.rows.len(), 10);
        assert!(m.dead_letters.is_empty(), "{:?}", m.dead_letters);
    }

    #[test]
    fn the_fault_rule_counts_only_records_in_a_row_failing_alike() {
        // Two alike, then a good record: the two were bad records.
        // Then three failing by turns with two codes: never three alike.
        let sink = MemorySink::default();
        {
            let mut m = sink.0.lock().unwrap();
            m.poison_codes = [(1, 1406), (2, 1406), (4, 1406), (5, 1264), (6, 1406)].into();
        }
        let h = start(sink, schema_fault_settings(3));
        h.send((0..8).map(good).collect());
        let events = h.until_applied(8);
        assert!(!events.iter().any(|e| stall(e).is_some()), "{events:?}");
        let m = h.finish();
        assert_eq!(m.rows.keys().copied().collect::<Vec<_>>(), vec![0, 3, 7]);
        assert_eq!(
            m.dead_letters.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 4, 5, 6]
        );
        assert_eq!(m.dead_letters[&1].code, Some(1406));
        assert_eq!(m.dead_letters[&1].attempts, 3);
    }

    #[test]
    fn a_held_record_is_dead_lettered_when_nothing_follows() {
        let sink = MemorySink::default();
        sink.0.lock().unwrap().poison_codes = [(2, 1406)].into();
        let h = start(sink, schema_fault_settings(3));
        h.send((0..3).map(good).collect());
        h.until_applied(3);
        let m = h.finish();
        assert_eq!(m.rows.len(), 2);
        assert_eq!(m.dead_letters.keys().copied().collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn the_fault_rule_can_be_turned_off() {
        let sink = MemorySink::default();
        sink.0.lock().unwrap().column_added = true;
        let h = start(sink, schema_fault_settings(0));
        h.send((0..5).map(good).collect());
        h.until_applied(5);
        let m = h.finish();
        assert_eq!(m.dead_letters.len(), 5);
    }

    #[test]
    fn a_duplicate_of_a_row_already_there_is_a_record_written_before() {
        let sink = MemorySink::default();
        {
            let mut m = sink.0.lock().unwrap();
            m.insert = true;
            // Offsets 0 and 1 were written before a crash.
            m.rows = [(0, "n0".into()), (1, "n1".into())].into();
        }
        let h = start(sink, settings());
        let other = Record::new(4, b"", br#"{"id": 1, "name": "another"}"#);
        h.send(vec![good(0), good(1), good(2), good(3), other]);
        h.until_applied(5);
        let stats = Arc::clone(&h.stats);
        let m = h.finish();
        assert_eq!(m.rows.len(), 4);
        assert_eq!(
            m.dead_letters.keys().copied().collect::<Vec<_>>(),
            vec![4],
            "a duplicate key with other values is a bad record"
        );
        assert_eq!(m.dead_letters[&4].code, Some(1062));
        assert_eq!(m.rows[&1], mysql::Value::from("n1"));
        let s = stats.snapshot();
        assert_eq!(
            (s.records_already_written, s.records_applied, s.dead_letters),
            (2, 5, 1)
        );
    }

    #[test]
    fn tombstone_errors_are_business() {
        let e = Error::Record(RecordError::BadTombstoneKey("x".into()));
        assert_eq!(Policy::default().class(&e), Class::Business);
    }
}
