//! The coordinator thread: the only owner of the Kafka client.
//!
//! Each turn of its loop: drain the workers' events without blocking; commit
//! if due; fetch the partitions whose worker queue has room and whose backoff
//! has passed; copy each partition's records into an owned `Batch` and send
//! it to that partition's worker. When nothing can be fetched it waits on the
//! event channel with a timeout; it never spins.
//!
//! Architecture invariants:
//! - one partition's fetch error never costs another partition a record: each
//!   partition's outcome is handled on its own (`broker::FetchOutcome`);
//! - only offsets a worker reported as applied are committed;
//! - the loop keeps draining events whatever fails: an error is logged,
//!   counted and handled, never an early return.
//!
//! Shutdown order (it matters): stop fetching; close the `stop` channel so
//! workers finish the write in hand and skip their queues; drop the batch
//! senders; wait for `Exited` events until `shutdown_timeout_ms`; commit what
//! was applied; join the workers that exited. A worker still stuck in a
//! database call after the timeout is left behind: the process exits and its
//! uncommitted transaction is rolled back by the server.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{select, Receiver, Sender};
use log::{debug, error, info, warn};

use crate::broker::{self, Broker, FetchOutcome, FetchRequest};
use crate::config::{Config, OffsetReset};
use crate::error::{Class, Error};
use crate::offsets::{
    out_of_range_position, refused_rewind_message, reset_name, OffsetBook, Rewind,
};
use crate::record::Record;
use crate::retry::{human, Backoff, Outage};
use crate::status::{unix_millis, unix_seconds, PartitionStatus, ServiceStatus, Stats};
use crate::worker::{Batch, WorkerEvent, WorkerHandle};

/// How often the status file is rewritten.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// The longest the loop waits when nothing can be fetched.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// How often the coordinator asks whether the topic was deleted and created
/// again under the same name.
const TOPIC_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Kafka-side retries are cheap; they back off no longer than this.
const KAFKA_BACKOFF_CAP: Duration = Duration::from_secs(5);

/// How the coordinator ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Stopped on request; offsets committed.
    Clean,
    /// A worker thread died (a bug); the process should exit 1 and be restarted.
    WorkerDied,
}

struct PartitionState {
    fetch_offset: i64,
    retry_at: Option<Instant>,
    failures: u32,
    high_watermark: Option<i64>,
    /// Since when, at which offset, of which class, why.
    blocked: Option<(SystemTime, i64, Class, String)>,
    /// Fetches of this partition failing (the broker answers for others).
    fetch_outage: Option<Outage>,
    /// OffsetOutOfRange with `offset_reset = fail`: fetch nothing more.
    halted: bool,
    /// A new position (the topic was recreated) waiting for room in the
    /// worker's queue; nothing is fetched meanwhile.
    pending_reset: Option<i64>,
    /// Nothing is committed for this partition until its worker has moved to
    /// this position: what it applies before belongs to the old topic.
    commit_hold: Option<i64>,
}

pub struct Coordinator {
    config: Arc<Config>,
    broker: Option<Box<dyn Broker>>,
    broker_failures: u32,
    broker_retry_at: Instant,
    partitions: BTreeMap<i32, PartitionState>,
    workers: BTreeMap<i32, WorkerHandle>,
    events: Receiver<WorkerEvent>,
    stop_workers: Option<Sender<()>>,
    shutdown: Receiver<()>,
    book: OffsetBook,
    stats: Arc<Stats>,
    kafka_backoff: Backoff,
    status: ServiceStatus,
    status_file: Option<PathBuf>,
    last_status: Instant,
    last_stats: Instant,
    last_stats_snapshot: crate::status::StatsSnapshot,
    last_topic_check: Instant,
    /// The topic's id as last seen (librdkafka), and whether the topic was
    /// missing at the last check.
    topic_id: Option<String>,
    topic_missing: bool,
    /// The broker unreachable (no client, or every call failing).
    broker_outage: Option<Outage>,
}

/// Everything the coordinator is started with.
pub struct CoordinatorParts {
    pub config: Arc<Config>,
    pub broker: Box<dyn Broker>,
    /// Start offset and committed group offset per partition.
    pub starts: BTreeMap<i32, (i64, Option<i64>)>,
    pub workers: BTreeMap<i32, WorkerHandle>,
    pub events: Receiver<WorkerEvent>,
    pub stop_workers: Sender<()>,
    pub shutdown: Receiver<()>,
    pub stats: Arc<Stats>,
    pub status_file: Option<PathBuf>,
}

impl Coordinator {
    pub fn new(mut parts: CoordinatorParts) -> Coordinator {
        // The topic's identity as the service starts, so that a topic
        // recreated before the first periodic check is noticed too.
        let topic_id = parts.broker.topic_id().ok().flatten();
        let now = Instant::now();
        let config = parts.config;
        let mut book = OffsetBook::new(config.commit.every_messages, config.commit.interval, now);
        let mut partitions = BTreeMap::new();
        for (&p, &(start, committed)) in &parts.starts {
            book.start(p, start, committed);
            partitions.insert(
                p,
                PartitionState {
                    fetch_offset: start,
                    retry_at: None,
                    failures: 0,
                    high_watermark: None,
                    blocked: None,
                    fetch_outage: None,
                    halted: false,
                    pending_reset: None,
                    commit_hold: None,
                },
            );
        }
        let kafka_backoff = Backoff {
            initial: config.retry.backoff_initial,
            max: config.retry.backoff_max.min(KAFKA_BACKOFF_CAP),
        };
        let status = ServiceStatus {
            pid: std::process::id(),
            started_at: unix_seconds(SystemTime::now()),
            topic: config.kafka.topic.clone(),
            group: config.kafka.group.clone(),
            ..Default::default()
        };
        Coordinator {
            broker: Some(parts.broker),
            broker_failures: 0,
            broker_retry_at: now,
            partitions,
            workers: parts.workers,
            events: parts.events,
            stop_workers: Some(parts.stop_workers),
            shutdown: parts.shutdown,
            book,
            stats: parts.stats,
            kafka_backoff,
            status,
            status_file: parts.status_file,
            last_status: now - STATUS_INTERVAL,
            last_stats: now,
            last_stats_snapshot: Default::default(),
            last_topic_check: now,
            topic_id,
            topic_missing: false,
            broker_outage: None,
            config,
        }
    }

    /// Runs until the shutdown channel closes (or a worker dies), then stops
    /// the workers and commits.
    pub fn run(mut self) -> Ending {
        let mut ending = Ending::Clean;
        loop {
            self.drain_events();
            if self.shutdown_requested() {
                info!("shutdown requested: stopping fetches, finishing the batches in hand");
                break;
            }
            if let Some(p) = self.dead_worker() {
                error!("the worker of partition {p} ended unexpectedly; stopping so that the service is restarted");
                ending = Ending::WorkerDied;
                break;
            }
            let now = Instant::now();
            if self.book.commit_due(now) {
                self.commit();
            }
            self.housekeeping(now);
            if self.broker.is_none() && !self.reconnect() {
                self.idle();
                continue;
            }
            let requests = self.fetchable(now);
            if requests.is_empty() {
                self.idle();
                continue;
            }
            self.fetch_and_dispatch(&requests);
        }
        self.stop(ending)
    }

    fn shutdown_requested(&self) -> bool {
        matches!(
            self.shutdown.try_recv(),
            Err(crossbeam_channel::TryRecvError::Disconnected) | Ok(())
        )
    }

    fn dead_worker(&self) -> Option<i32> {
        self.workers
            .iter()
            .find(|(_, w)| w.thread.is_finished())
            .map(|(&p, _)| p)
    }

    /// Waits for a worker event, the shutdown signal or a short timeout.
    fn idle(&mut self) {
        let events = self.events.clone();
        let shutdown = self.shutdown.clone();
        select! {
            recv(events) -> e => if let Ok(e) = e { self.handle_event(e) },
            recv(shutdown) -> _ => {},
            default(IDLE_WAIT) => {},
        }
    }

    fn drain_events(&mut self) {
        while let Ok(e) = self.events.try_recv() {
            self.handle_event(e);
        }
    }

    fn handle_event(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Applied {
                partition,
                next_offset,
                records,
            } => {
                self.book.applied(partition, next_offset, records);
                if let Some(s) = self.partitions.get_mut(&partition) {
                    if records == 0 && s.commit_hold == Some(next_offset) {
                        s.commit_hold = None;
                    }
                }
            }
            WorkerEvent::Blocked {
                partition,
                offset,
                since,
                class,
                error,
            } => {
                if let Some(p) = self.partitions.get_mut(&partition) {
                    p.blocked = Some((since, offset, class, error));
                }
            }
            WorkerEvent::Flowing { partition } => {
                if let Some(p) = self.partitions.get_mut(&partition) {
                    p.blocked = None;
                }
            }
            WorkerEvent::Exited { partition } => {
                debug!("worker of partition {partition} exited");
            }
        }
    }

    /// Partitions that may be fetched now: not halted, backoff passed, and
    /// room in the worker's queue (a blocked worker's full queue stops its
    /// partition only).
    fn fetchable(&self, now: Instant) -> Vec<FetchRequest> {
        self.partitions
            .iter()
            .filter(|(_, s)| {
                !s.halted && s.pending_reset.is_none() && s.retry_at.is_none_or(|t| t <= now)
            })
            .filter(|(p, _)| {
                self.workers
                    .get(p)
                    .is_some_and(|w| w.sender.len() < self.config.worker.queue_batches)
            })
            .map(|(&partition, s)| FetchRequest {
                partition,
                offset: s.fetch_offset,
            })
            .collect()
    }

    fn fetch_and_dispatch(&mut self, requests: &[FetchRequest]) {
        let result = self.broker.as_mut().expect("connected").fetch(requests);
        let fetches = match result {
            Ok(f) => f,
            Err(e) => {
                self.broker_failed(&format!("fetch failed: {e}"));
                return;
            }
        };
        self.broker_answered();
        let mut reload_metadata = false;
        for fetch in fetches {
            match fetch.outcome {
                FetchOutcome::Records {
                    records,
                    next_offset,
                    high_watermark,
                } => {
                    self.deliver(fetch.partition, records, next_offset, high_watermark);
                }
                FetchOutcome::OffsetOutOfRange => self.offset_out_of_range(fetch.partition),
                FetchOutcome::Unreadable(reason) => {
                    let topic = &self.config.kafka.topic;
                    let Some(s) = self.partitions.get_mut(&fetch.partition) else {
                        continue;
                    };
                    if !s.halted {
                        error!(
                            "topic {topic} partition {} offset {}: {reason}",
                            fetch.partition, s.fetch_offset
                        );
                        s.halted = true;
                        s.blocked = Some((SystemTime::now(), s.fetch_offset, Class::Fatal, reason));
                    }
                }
                FetchOutcome::Retry(reason) => {
                    reload_metadata = true;
                    let Some(s) = self.partitions.get_mut(&fetch.partition) else {
                        continue;
                    };
                    s.failures += 1;
                    let wait = self.kafka_backoff.delay(s.failures);
                    let now = Instant::now();
                    s.retry_at = Some(now + wait);
                    let topic = &self.config.kafka.topic;
                    match &mut s.fetch_outage {
                        None => {
                            warn!(
                                "topic {topic} partition {} offset {}: fetch error, retrying in {wait:?}: {reason}",
                                fetch.partition, s.fetch_offset
                            );
                            s.fetch_outage = Some(Outage::begin(now, reason));
                        }
                        Some(outage) => {
                            if let Some(n) = outage.again(now, reason) {
                                warn!(
                                    "topic {topic} partition {} offset {}: fetch still failing after {} ({n} retries since the last line): {}",
                                    fetch.partition, s.fetch_offset, human(outage.lasted(now)), outage.reason
                                );
                            }
                        }
                    }
                }
            }
        }
        if reload_metadata {
            // A partition that cannot be fetched may belong to a topic that
            // was just deleted: look at the topic at the next turn (at most
            // once a second), not at the next regular check.
            let soon = Instant::now() - TOPIC_CHECK_INTERVAL + Duration::from_secs(1);
            self.last_topic_check = self.last_topic_check.min(soon);
            if let Err(e) = self.broker.as_mut().expect("connected").reload_metadata() {
                self.broker_failed(&format!("metadata reload failed: {e}"));
            }
        }
    }

    /// Hands a partition's records to its worker as one batch. A position
    /// that moved past what is not a record (transaction markers, aborted
    /// records) with no record to carry it goes to the worker as an empty
    /// batch, so that the committed offset reaches the log end.
    fn deliver(
        &mut self,
        partition: i32,
        records: Vec<Record>,
        next_offset: i64,
        high_watermark: Option<i64>,
    ) {
        let Some(s) = self.partitions.get_mut(&partition) else {
            return;
        };
        s.failures = 0;
        s.retry_at = None;
        if let Some(outage) = s.fetch_outage.take() {
            info!(
                "topic {} partition {partition}: fetching again after {} ({} failed attempts)",
                self.config.kafka.topic,
                human(outage.lasted(Instant::now())),
                outage.retries
            );
        }
        if high_watermark.is_some() {
            s.high_watermark = high_watermark;
        }
        if records.is_empty() {
            if next_offset > s.fetch_offset {
                s.fetch_offset = next_offset;
                self.send(
                    partition,
                    Batch {
                        records,
                        reset_to: Some(next_offset),
                    },
                );
            }
            return;
        }
        s.fetch_offset = next_offset;
        self.stats
            .records_fetched
            .fetch_add(records.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.send(
            partition,
            Batch {
                records,
                reset_to: None,
            },
        );
    }

    fn send(&mut self, partition: i32, batch: Batch) {
        let Some(w) = self.workers.get(&partition) else {
            return;
        };
        // Only this thread sends, and the queue had room when the partition was
        // chosen, so this does not block.
        if w.sender.send(batch).is_err() {
            error!("worker of partition {partition} is gone; its records will be fetched again at the next start");
        }
    }

    /// OffsetOutOfRange while running: recreate this partition's reader at the
    /// earliest (or latest) offset, as `offset_reset` says. Others go on.
    /// Exactly-once halts the partition instead (`Rewind::Refused`), unless
    /// the topic turns out to have been recreated: a new log is read as
    /// `check_topic` decides.
    fn offset_out_of_range(&mut self, partition: i32) {
        let reset = self.config.kafka.offset_reset;
        let rewind = Rewind::from_config(&self.config);
        if rewind == Rewind::Refused {
            self.check_topic();
            if self
                .partitions
                .get(&partition)
                .is_none_or(|s| s.pending_reset.is_some())
            {
                return;
            }
        }
        let topic = self.config.kafka.topic.clone();
        let broker = self.broker.as_mut().expect("connected");
        let bounds = broker.log_bounds().map(|b| (b.earliest, b.latest));
        let Some(s) = self.partitions.get_mut(&partition) else {
            return;
        };
        let requested = s.fetch_offset;
        let (earliest, latest) = match bounds {
            Ok((e, l)) => match (e.get(&partition), l.get(&partition)) {
                (Some(&e), Some(&l)) => (e, l),
                _ => {
                    s.retry_at = Some(Instant::now() + self.kafka_backoff.initial);
                    return;
                }
            },
            Err(e) => {
                warn!("topic {topic} partition {partition}: offset {requested} out of range, and the log bounds cannot be read: {e}");
                s.failures += 1;
                s.retry_at = Some(Instant::now() + self.kafka_backoff.delay(s.failures));
                return;
            }
        };
        match out_of_range_position(requested, earliest, latest, reset, rewind) {
            Some((new_offset, skipped)) => {
                warn!(
                    "topic {topic} partition {partition}: offset {requested} is out of range [{earliest}, {latest}]; \
                     reader recreated at {new_offset} (offset_reset = {}), {skipped} offsets skipped",
                    reset_name(reset)
                );
                self.stats
                    .offset_resets
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                s.fetch_offset = new_offset;
                self.send(
                    partition,
                    Batch {
                        records: Vec::new(),
                        reset_to: Some(new_offset),
                    },
                );
            }
            None if rewind == Rewind::Refused => {
                let message = refused_rewind_message(partition, requested, earliest, latest);
                error!("topic {topic} partition {partition}: {message}");
                s.halted = true;
                s.blocked = Some((SystemTime::now(), requested, Class::Fatal, message));
            }
            None => {
                let message = format!(
                    "offset {requested} is out of range [{earliest}, {latest}] and offset_reset = fail; \
                     fix with: kafka2mysql reset-offsets --partition {partition} --to earliest|latest|OFFSET"
                );
                error!("topic {topic} partition {partition}: {message}");
                s.halted = true;
                s.blocked = Some((SystemTime::now(), requested, Class::Fatal, message));
            }
        }
    }

    /// Notices a topic deleted and created again under the same name: a new
    /// topic id, or a topic that was missing and is back. The new topic is a
    /// new log: every partition starts over as `offset_reset` says, whatever
    /// position the old one had reached.
    fn check_topic(&mut self) {
        let Some(broker) = self.broker.as_mut() else {
            return;
        };
        let topic = self.config.kafka.topic.clone();
        let recreated = match broker.topic_id() {
            Ok(id) => {
                let changed = match (&self.topic_id, &id) {
                    (Some(old), Some(new)) => old != new,
                    _ => false,
                };
                let back = self.topic_missing;
                if id.is_some() {
                    self.topic_id = id;
                }
                self.topic_missing = false;
                changed || back
            }
            Err(Error::NoSuchTopic(_)) => {
                if !self.topic_missing {
                    warn!("topic {topic} no longer exists; waiting for it to come back (nothing is skipped meanwhile)");
                }
                self.topic_missing = true;
                false
            }
            Err(e) => {
                debug!("topic {topic}: cannot check its id: {e}");
                false
            }
        };
        if recreated {
            self.topic_recreated();
        }
    }

    fn topic_recreated(&mut self) {
        let topic = self.config.kafka.topic.clone();
        let reset = self.config.kafka.offset_reset;
        let Some(broker) = self.broker.as_mut() else {
            return;
        };
        let bounds = match broker.log_bounds() {
            Ok(b) => b,
            Err(e) => {
                warn!(
                    "topic {topic} was created again, and its log bounds cannot be read yet: {e}"
                );
                // Checked again at the next turn.
                self.topic_missing = true;
                return;
            }
        };
        self.stats
            .offset_resets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for (&p, s) in self.partitions.iter_mut() {
            let (Some(&earliest), Some(&latest)) = (bounds.earliest.get(&p), bounds.latest.get(&p))
            else {
                warn!("topic {topic} was created again without partition {p}; it is retried until it exists");
                continue;
            };
            let old = s.fetch_offset;
            match reset {
                OffsetReset::Fail => {
                    let message = format!(
                        "topic {topic} was deleted and created again (old position {old}, new log {earliest}..{latest}) \
                         and offset_reset = fail; choose a position with: kafka2mysql reset-offsets --partition {p} --to earliest|latest|OFFSET"
                    );
                    error!("topic {topic} partition {p}: {message}");
                    s.halted = true;
                    s.blocked = Some((SystemTime::now(), old, Class::Fatal, message));
                }
                OffsetReset::Earliest | OffsetReset::Latest => {
                    let new = if reset == OffsetReset::Earliest {
                        earliest
                    } else {
                        latest
                    };
                    warn!(
                        "topic {topic} partition {p}: the topic was deleted and created again; its new log {earliest}..{latest} \
                         is read from {new} (offset_reset = {}), not from the old position {old}",
                        reset_name(reset)
                    );
                    s.fetch_offset = new;
                    s.pending_reset = Some(new);
                    s.commit_hold = Some(new);
                    s.retry_at = None;
                }
            }
        }
        self.send_pending_resets();
    }

    /// Hands new positions to the workers whose queue has room.
    fn send_pending_resets(&mut self) {
        let ready: Vec<(i32, i64)> = self
            .partitions
            .iter()
            .filter_map(|(&p, s)| s.pending_reset.map(|o| (p, o)))
            .filter(|(p, _)| {
                self.workers
                    .get(p)
                    .is_some_and(|w| w.sender.len() < self.config.worker.queue_batches)
            })
            .collect();
        for (p, offset) in ready {
            if let Some(s) = self.partitions.get_mut(&p) {
                s.pending_reset = None;
            }
            self.send(
                p,
                Batch {
                    records: Vec::new(),
                    reset_to: Some(offset),
                },
            );
        }
    }

    fn broker_failed(&mut self, what: &str) {
        self.broker_failures += 1;
        let wait = self.kafka_backoff.delay(self.broker_failures);
        let now = Instant::now();
        self.broker_retry_at = now + wait;
        self.broker = None;
        match &mut self.broker_outage {
            None => {
                warn!("kafka: {what}; reconnecting in {wait:?}; no record is skipped meanwhile");
                self.broker_outage = Some(Outage::begin(now, what.to_string()));
            }
            Some(outage) => {
                if let Some(n) = outage.again(now, what.to_string()) {
                    warn!(
                        "kafka: still unreachable after {} ({n} attempts since the last line): {what}",
                        human(outage.lasted(now))
                    );
                }
            }
        }
    }

    /// The broker answered: ends a broker outage, with one line.
    fn broker_answered(&mut self) {
        self.broker_failures = 0;
        if let Some(outage) = self.broker_outage.take() {
            info!(
                "kafka: reachable again after {} ({} failed attempts)",
                human(outage.lasted(Instant::now())),
                outage.retries
            );
        }
    }

    /// Recreates the Kafka client when its backoff has passed.
    fn reconnect(&mut self) -> bool {
        if Instant::now() < self.broker_retry_at {
            return false;
        }
        match broker::connect(&self.config) {
            Ok(b) => {
                debug!("kafka: connected again to {:?}", self.config.kafka.brokers);
                self.broker = Some(b);
                true
            }
            Err(e) => {
                if matches!(e, Error::NoSuchTopic(_)) {
                    self.topic_missing = true;
                }
                self.broker_failed(&format!("connect failed: {e}"));
                false
            }
        }
    }

    /// Commits the applied offsets to the Kafka group.
    fn commit(&mut self) {
        let now = Instant::now();
        let mut pending = self.book.to_commit(now);
        pending.retain(|(p, _)| {
            self.partitions
                .get(p)
                .is_none_or(|s| s.commit_hold.is_none())
        });
        if pending.is_empty() {
            self.book.committed(&[], now);
            return;
        }
        let Some(broker) = self.broker.as_mut() else {
            self.book.commit_failed(now);
            return;
        };
        match broker.commit(&pending) {
            Ok(()) => {
                debug!("committed {pending:?}");
                self.book.committed(&pending, now);
            }
            Err(e) => {
                warn!("kafka: commit of {pending:?} failed, retrying at the next interval: {e}");
                self.book.commit_failed(now);
            }
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        if now.duration_since(self.last_topic_check) >= TOPIC_CHECK_INTERVAL
            && self.broker.is_some()
        {
            self.last_topic_check = now;
            self.check_topic();
        }
        self.send_pending_resets();
        if now.duration_since(self.last_stats) >= self.config.log.stats_interval {
            self.log_stats(now);
        }
        if now.duration_since(self.last_status) >= STATUS_INTERVAL {
            self.last_status = now;
            self.write_status();
        }
    }

    fn lag(&self) -> i64 {
        self.partitions
            .iter()
            .map(|(p, s)| {
                let applied = self.book.get(*p).map_or(s.fetch_offset, |o| o.applied);
                s.high_watermark.map_or(0, |h| (h - applied).max(0))
            })
            .sum()
    }

    fn log_stats(&mut self, now: Instant) {
        let secs = now.duration_since(self.last_stats).as_secs_f64().max(0.001);
        let s = self.stats.snapshot();
        let prev = self.last_stats_snapshot;
        info!(
            "stats: {:.0} records/s, {:.0} rows/s, lag {}, blocked partitions {}, dead letters {} (+{}), retries {} (+{}), offset resets {}",
            (s.records_applied - prev.records_applied) as f64 / secs,
            (s.rows_written - prev.rows_written) as f64 / secs,
            self.lag(),
            self.partitions.values().filter(|p| p.blocked.is_some()).count(),
            s.dead_letters,
            s.dead_letters - prev.dead_letters,
            s.retries,
            s.retries - prev.retries,
            s.offset_resets,
        );
        self.last_stats = now;
        self.last_stats_snapshot = s;
    }

    fn write_status(&mut self) {
        self.status.updated_at = unix_seconds(SystemTime::now());
        let now_ms = unix_millis(SystemTime::now());
        self.status.stats = self.stats.snapshot();
        self.status.partitions = self
            .partitions
            .iter()
            .map(|(&p, s)| {
                let offsets = self.book.get(p);
                let slow = slow_write(&self.workers, p, now_ms);
                let (state, since, at, class, error) = match (&s.blocked, &s.fetch_outage) {
                    (Some((since, at, class, error)), _) => (
                        if *class == Class::Technical {
                            "retrying"
                        } else {
                            "blocked"
                        },
                        Some(*since),
                        Some(*at),
                        Some(class.to_string()),
                        Some(error.clone()),
                    ),
                    (None, Some(outage)) => (
                        "retrying",
                        Some(outage.since),
                        Some(s.fetch_offset),
                        Some(Class::Technical.to_string()),
                        Some(format!("kafka: {}", outage.reason)),
                    ),
                    (None, None) if slow.is_some() => {
                        let since = slow.unwrap_or(now_ms);
                        (
                            "retrying",
                            Some(UNIX_EPOCH + Duration::from_millis(since)),
                            Some(offsets.map_or(s.fetch_offset, |o| o.applied)),
                            Some(Class::Technical.to_string()),
                            Some(format!(
                                "mysql: a write has not returned for {}",
                                human(Duration::from_millis(now_ms.saturating_sub(since)))
                            )),
                        )
                    }
                    (None, None) => match &self.broker_outage {
                        Some(outage) => (
                            "retrying",
                            Some(outage.since),
                            Some(s.fetch_offset),
                            Some(Class::Technical.to_string()),
                            Some(format!("kafka: {}", outage.reason)),
                        ),
                        None => ("flowing", None, None, None, None),
                    },
                };
                let status = PartitionStatus {
                    partition: p,
                    state: state.to_string(),
                    blocked_since: since.map(unix_seconds),
                    blocked_at_offset: at,
                    error_class: class,
                    last_error: error,
                    fetch_offset: s.fetch_offset,
                    applied_offset: offsets.map_or(s.fetch_offset, |o| o.applied),
                    committed_offset: offsets.and_then(|o| o.committed),
                    high_watermark: s.high_watermark,
                };
                (p, status)
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

    /// Stops the workers (see the module doc for the order) and commits.
    fn stop(mut self, ending: Ending) -> Ending {
        drop(self.stop_workers.take());
        let mut threads = Vec::new();
        for (p, w) in std::mem::take(&mut self.workers) {
            drop(w.sender);
            threads.push((p, w.thread));
        }
        let deadline = Instant::now() + self.config.worker.shutdown_timeout;
        let mut running: Vec<i32> = threads.iter().map(|(p, _)| *p).collect();
        while !running.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                warn!("shutdown timeout: workers of partitions {running:?} did not finish; their unfinished work is not committed and will be applied again");
                break;
            }
            match self
                .events
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(WorkerEvent::Exited { partition }) => running.retain(|&p| p != partition),
                Ok(e) => self.handle_event(e),
                Err(_) => {
                    running.retain(|p| !threads.iter().any(|(tp, t)| tp == p && t.is_finished()))
                }
            }
        }
        self.drain_events();
        if self.broker.is_none() {
            self.broker_retry_at = Instant::now();
            self.reconnect();
        }
        self.commit();
        let pending = self.book.pending();
        if pending.is_empty() {
            info!("offsets committed: {:?}", self.committed_summary());
        } else {
            warn!("offsets not committed at stop (the records will be applied again): {pending:?}");
        }
        self.log_stats(Instant::now());
        for (p, t) in threads {
            if t.is_finished() && t.join().is_err() {
                error!("worker of partition {p} panicked");
            }
        }
        if let Some(path) = &self.status_file {
            let _ = std::fs::remove_file(path);
        }
        // The client is not closed: closing librdkafka waits for brokers that
        // may not answer (a frozen broker held a stop for minutes), and the
        // process ends right after this; its sockets close with it.
        std::mem::forget(self.broker.take());
        ending
    }

    fn committed_summary(&self) -> BTreeMap<i32, Option<i64>> {
        self.partitions
            .keys()
            .map(|&p| (p, self.book.get(p).and_then(|o| o.committed)))
            .collect()
    }
}

/// A write that has not returned for this long shows as "retrying" in the
/// status (the driver's own read timeout is much longer).
const SLOW_WRITE: Duration = Duration::from_secs(10);

/// When the write in progress on `partition` began (unix ms), if it is
/// older than `SLOW_WRITE`.
fn slow_write(workers: &BTreeMap<i32, WorkerHandle>, partition: i32, now_ms: u64) -> Option<u64> {
    let since = workers
        .get(&partition)?
        .writing_since
        .load(std::sync::atomic::Ordering::Relaxed);
    (since != 0 && now_ms.saturating_sub(since) >= SLOW_WRITE.as_millis() as u64).then_some(since)
}
