//! The coordinator thread: the only owner of the Kafka client.
//!
//! Each turn of its loop: drain the workers' events without blocking; commit
//! if due; fetch the partitions whose worker queue has room and whose backoff
//! has passed; copy each partition's records into an owned `Batch` and send
//! it to that partition's worker. When nothing can be fetched it waits on the
//! event channel with a timeout; it never spins. Its map of partitions is
//! the one record of their state; `reporter.rs` turns it into the stats
//! line and the status file.
//!
//! Architecture invariants:
//! - one partition's fetch error never costs another partition a record: each
//!   partition's outcome is handled on its own (`broker::FetchOutcome`);
//! - only offsets a worker reported as applied are committed;
//! - the loop keeps draining events whatever fails: an error is logged,
//!   counted and handled, never an early return.
//!
//! Group assignment (`kafka.assignment = "group"`): each turn also serves
//! the group membership (`Broker::rebalance`), so that a member whose
//! workers all wait on the database keeps its partitions. An assignment
//! starts a worker per new partition through the service's
//! `PartitionStarter` (start position as at start-up, claimed in the offset
//! table in exactly-once mode), then `Broker::assign`s them. A revocation
//! stops fetching those partitions at once and closes their workers' `stop`
//! channels; the loop goes on for the others while the workers finish the
//! write in hand (up to `shutdown_timeout_ms`); then what they applied is
//! committed, and only then `Broker::unassign` lets the group hand them on,
//! so that the next owner starts where this one stopped.
//!
//! Shutdown order (it matters): stop fetching; close the `stop` channel so
//! workers finish the write in hand and skip their queues; drop the batch
//! senders; wait for `Exited` events until `shutdown_timeout_ms`; commit what
//! was applied; join the workers that exited. A worker still stuck in a
//! database call after the timeout is left behind: the process exits and its
//! uncommitted transaction is rolled back by the server.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{select, Receiver, Sender};
use log::{debug, error, info, warn};

use crate::broker::{self, Broker, FetchOutcome, FetchRequest, Rebalance};
use crate::budget::Budget;
use crate::config::{Assignment, Config, OffsetReset};
use crate::error::{Class, Error, Policy, Verdict};
use crate::offsets::{
    out_of_range_position, refused_rewind_message, reset_name, OffsetBook, Rewind,
};
use crate::record::Record;
use crate::reporter::{PartitionView, Reporter};
use crate::retry::{human, Backoff, Decision, Outage, RetryState};
use crate::status::{unix_seconds, ServiceStatus, Stats};
use crate::worker::{Batch, Flow, NewTopic, Stall, WorkerEvent, WorkerHandle};

/// The longest the loop waits when nothing can be fetched.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// How often the coordinator asks whether the topic was deleted and created
/// again under the same name.
const TOPIC_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How often while the topic is missing (nothing is fetched meanwhile).
const TOPIC_CHECK_INTERVAL_MISSING: Duration = Duration::from_secs(1);
/// How long a commit's answer may take before the commit counts as failed.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
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
    /// This partition's fetch attempts (`kafka_retry` of `Coordinator::new`).
    retry: RetryState,
    high_watermark: Option<i64>,
    /// Flowing, retrying or blocked: the one record of it (the worker
    /// reports its changes; a partition that cannot be fetched is blocked
    /// here).
    flow: Flow,
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

/// Starts the partitions a rebalance gives this member (group assignment):
/// chooses each one's start as start-up does, claims it in the offset table
/// in exactly-once mode, and spawns its worker with a `stop` channel of its
/// own. `service.rs` implements it: it reads MySQL, which the coordinator's
/// own code never does.
pub trait PartitionStarter {
    fn start(&mut self, broker: &mut dyn Broker, partitions: &[i32])
        -> Result<Vec<Started>, Error>;
}

/// A partition started by a `PartitionStarter`.
pub struct Started {
    pub partition: i32,
    pub start: i64,
    /// The group's committed offset, as read for the start.
    pub committed: Option<i64>,
    pub worker: WorkerHandle,
    /// Dropped to stop this worker alone (a revocation).
    pub stop: Sender<()>,
}

/// Partitions revoked by the group, whose workers are finishing.
struct Revoking {
    partitions: Vec<i32>,
    lost: bool,
    deadline: Instant,
    threads: Vec<(i32, JoinHandle<()>)>,
}

pub struct Coordinator<'a> {
    config: Arc<Config>,
    policy: Arc<Policy>,
    broker: Option<Box<dyn Broker>>,
    /// The broker client's attempts (connect, and any call failing as a whole).
    broker_retry: RetryState,
    broker_retry_at: Instant,
    partitions: BTreeMap<i32, PartitionState>,
    workers: BTreeMap<i32, WorkerHandle>,
    /// The partitions' shares of `worker.max_buffered_bytes`, for the
    /// partitions read now: made again (`Budget::new`) whenever partitions
    /// are added or removed.
    budget: Budget,
    /// Where the next turn starts choosing partitions to fetch, so that
    /// the budget's pool is lent to every partition in turn.
    first_to_fetch: usize,
    events: Receiver<WorkerEvent>,
    stop_workers: Option<Sender<()>>,
    shutdown: Receiver<()>,
    book: OffsetBook,
    stats: Arc<Stats>,
    /// The stats line, the status file, the metrics' partition view.
    reporter: Reporter,
    last_topic_check: Instant,
    /// The topic's id as last seen (librdkafka), and whether the topic was
    /// missing at the last check.
    topic_id: Option<String>,
    topic_missing: bool,
    /// The broker unreachable (no client, or every call failing).
    broker_outage: Option<Outage>,
    /// A new partition's fetch attempts, before its first failure.
    kafka_retry: RetryState,
    /// Group assignment (see the module doc): the starter, each worker's own
    /// `stop` sender, the rebalances not handled yet, the revocation in
    /// progress, and when a failed start is tried again.
    group: bool,
    starter: Option<Box<dyn PartitionStarter + 'a>>,
    worker_stops: BTreeMap<i32, Sender<()>>,
    rebalances: VecDeque<Rebalance>,
    revoking: Option<Revoking>,
    assign_retry: RetryState,
    assign_retry_at: Instant,
    /// The offsets of the commit sent and not yet answered, and when it
    /// was sent (`commit`).
    commit_in_flight: Option<(Vec<(i32, i64)>, Instant)>,
    /// Group assignment, exactly-once: partitions whose worker found the
    /// offset row moved by another writer, to be started again from it.
    fenced: std::collections::BTreeSet<i32>,
}

/// Everything the coordinator is started with.
pub struct CoordinatorParts<'a> {
    pub config: Arc<Config>,
    pub policy: Arc<Policy>,
    pub broker: Box<dyn Broker>,
    /// Start offset and committed group offset per partition.
    pub starts: BTreeMap<i32, (i64, Option<i64>)>,
    pub workers: BTreeMap<i32, WorkerHandle>,
    pub events: Receiver<WorkerEvent>,
    pub stop_workers: Sender<()>,
    pub shutdown: Receiver<()>,
    pub stats: Arc<Stats>,
    pub status_file: Option<PathBuf>,
    /// Group assignment: starts what the group assigns.
    pub starter: Option<Box<dyn PartitionStarter + 'a>>,
}

impl PartitionState {
    fn new(start: i64, retry: RetryState) -> PartitionState {
        PartitionState {
            fetch_offset: start,
            retry_at: None,
            retry,
            high_watermark: None,
            flow: Flow::Flowing,
            fetch_outage: None,
            halted: false,
            pending_reset: None,
            commit_hold: None,
        }
    }
}

impl<'a> Coordinator<'a> {
    pub fn new(mut parts: CoordinatorParts<'a>) -> Coordinator<'a> {
        // The topic's identity as the service starts, so that a topic
        // recreated before the first periodic check is noticed too.
        let topic_id = parts.broker.topic_id().ok().flatten();
        let now = Instant::now();
        let config = parts.config;
        let mut book = OffsetBook::new(config.commit.every_messages, config.commit.interval, now);
        // Kafka-side faults are retried for ever, whatever their class: the
        // process never exits because the broker is away.
        let kafka_retry = RetryState::for_ever(
            Backoff::from_config(&config.retry).capped(KAFKA_BACKOFF_CAP),
            Class::ALL,
        );
        let mut partitions = BTreeMap::new();
        for (&p, &(start, committed)) in &parts.starts {
            book.start(p, start, committed);
            partitions.insert(p, PartitionState::new(start, kafka_retry.clone()));
        }

        let budget = Budget::new(&config, partitions.len());
        let in_turn = if budget.rotates {
            format!(
                " ({} at a time, in turn: kafka.fetch_window)",
                budget.window
            )
        } else {
            String::new()
        };
        info!(
            "memory budget (worker.max_buffered_bytes = {}): {} partitions{in_turn}, fetches of {} bytes, \
             records held at most {} bytes",
            config.worker.max_buffered_bytes,
            partitions.len(),
            budget.fetch_bytes,
            budget.bound(partitions.len())
        );
        let status = ServiceStatus {
            pid: std::process::id(),
            started_at: unix_seconds(SystemTime::now()),
            topic: config.kafka.topic.clone(),
            group: config.kafka.group.clone(),
            ..Default::default()
        };
        let reporter = Reporter::new(
            Arc::clone(&parts.stats),
            config.log.stats_interval,
            status,
            parts.status_file,
            now,
        );
        Coordinator {
            broker: Some(parts.broker),
            broker_retry: kafka_retry.clone(),
            assign_retry: kafka_retry.clone(),
            kafka_retry,
            assign_retry_at: now,
            group: config.kafka.assignment == Assignment::Group,
            starter: parts.starter,
            worker_stops: BTreeMap::new(),
            rebalances: VecDeque::new(),
            revoking: None,
            broker_retry_at: now,
            budget,
            first_to_fetch: 0,
            partitions,
            workers: parts.workers,
            events: parts.events,
            stop_workers: Some(parts.stop_workers),
            shutdown: parts.shutdown,
            book,
            stats: parts.stats,
            reporter,
            last_topic_check: now,
            topic_id,
            topic_missing: false,
            broker_outage: None,
            commit_in_flight: None,
            fenced: Default::default(),
            config,
            policy: parts.policy,
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
            self.commit_answered(Duration::ZERO);
            let now = Instant::now();
            if self.book.commit_due(now) {
                self.commit();
            }
            self.serve_group(now);
            self.housekeeping(now);
            if self.broker.is_none() && !self.reconnect() {
                self.idle();
                continue;
            }
            if self.group && now < self.broker_retry_at {
                // The client reconnects by itself; it is kept, so that the
                // member keeps its partitions (see `broker_failed`).
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
            WorkerEvent::State { partition, flow } => {
                if let Some(p) = self.partitions.get_mut(&partition) {
                    if self.group && fenced(&flow) {
                        self.fenced.insert(partition);
                    }
                    p.flow = flow;
                }
            }
            WorkerEvent::Exited { partition } => {
                debug!("worker of partition {partition} exited");
            }
        }
    }

    /// Partitions that may be fetched now, each with the bytes it may take:
    /// not halted, backoff passed, and room in the worker's queue and in
    /// the partition's share of the memory budget (a blocked worker's full
    /// queue stops its partition only). The room given is counted as taken
    /// until the next turn, so that one turn cannot lend the pool twice.
    fn fetchable(&mut self, now: Instant) -> Vec<FetchRequest> {
        // A topic that is gone may come back as another: nothing is read
        // until `check_topic` has seen which, or the old positions would
        // be read in the new log.
        if self.topic_missing {
            return Vec::new();
        }
        let budget = self.budget;
        let held = |p: &i32| {
            self.workers.get(p).map_or(0, |w| {
                w.held_bytes.load(std::sync::atomic::Ordering::Relaxed)
            })
        };
        let mut borrowed: usize = self
            .partitions
            .keys()
            .map(|p| budget.borrowed(held(p)))
            .sum();
        let first = self.first_to_fetch % self.partitions.len().max(1);
        self.first_to_fetch = first + 1;
        let mut requests = Vec::new();
        let in_turn = self
            .partitions
            .iter()
            .skip(first)
            .chain(self.partitions.iter().take(first));
        for (&partition, s) in in_turn {
            if s.halted || s.pending_reset.is_some() || s.retry_at.is_some_and(|t| t > now) {
                continue;
            }
            let Some(worker) = self.workers.get(&partition) else {
                continue;
            };
            if worker.sender.len() >= budget.queue_batches {
                continue;
            }
            let held = held(&partition);
            let max_bytes = budget.room(held, borrowed);
            if max_bytes == 0 {
                continue;
            }
            // A partition the client does not read now (it reads many in
            // turn, `budget.rs`) is asked for only once its worker has
            // written what it holds, so that the client's window goes to
            // partitions that can take records; it may enter the window
            // this turn, and is lent nothing before it has.
            if !self.broker.as_ref().is_none_or(|b| b.reading(partition)) {
                if held > 0 {
                    continue;
                }
            } else {
                borrowed += budget.borrowed(held + max_bytes) - budget.borrowed(held);
            }
            requests.push(FetchRequest {
                partition,
                offset: s.fetch_offset,
                max_bytes,
            });
        }
        requests.sort_unstable_by_key(|r| r.partition);
        requests
    }

    fn fetch_and_dispatch(&mut self, requests: &[FetchRequest]) {
        let result = self.broker.as_mut().expect("connected").fetch(requests);
        let fetches = match result {
            Ok(f) => f,
            Err(e) => {
                self.broker_failed("fetch failed", &e);
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
                FetchOutcome::Failed(Error::OffsetOutOfRange) => {
                    self.offset_out_of_range(fetch.partition)
                }
                FetchOutcome::Failed(error) => {
                    let verdict = self.policy.classify(&error);
                    reload_metadata |= verdict.reconnect;
                    if verdict.class == Class::Fatal {
                        self.halt(fetch.partition, error.to_string());
                    } else {
                        self.fetch_failed(fetch.partition, verdict, error.to_string());
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
                self.broker_failed("metadata reload failed", &e);
            }
        }
    }

    /// This partition's records can never be fetched by this client: it
    /// fetches nothing more, and is blocked with `reason`.
    fn halt(&mut self, partition: i32, reason: String) {
        let topic = &self.config.kafka.topic;
        let Some(s) = self.partitions.get_mut(&partition) else {
            return;
        };
        if !s.halted {
            error!(
                "topic {topic} partition {partition} offset {}: {reason}",
                s.fetch_offset
            );
            s.halted = true;
            s.flow = halted(s.fetch_offset, reason);
        }
    }

    /// This partition's fetch failed for now: it backs off alone.
    fn fetch_failed(&mut self, partition: i32, verdict: Verdict, reason: String) {
        let Some(s) = self.partitions.get_mut(&partition) else {
            return;
        };
        let wait = retry_wait(s.retry.next(verdict));
        let now = Instant::now();
        s.retry_at = Some(now + wait);
        let topic = &self.config.kafka.topic;
        match &mut s.fetch_outage {
            None => {
                warn!(
                    "topic {topic} partition {partition} offset {}: fetch error, retrying in {wait:?}: {reason}",
                    s.fetch_offset
                );
                s.fetch_outage = Some(Outage::begin(now, reason));
            }
            Some(outage) => {
                if let Some(n) = outage.again(now, reason) {
                    warn!(
                        "topic {topic} partition {partition} offset {}: fetch still failing after {} ({n} retries since the last line): {}",
                        s.fetch_offset, human(outage.lasted(now)), outage.reason
                    );
                }
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
        s.retry.succeeded();
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
                        new_topic: None,
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
                new_topic: None,
            },
        );
    }

    fn send(&mut self, partition: i32, batch: Batch) {
        let Some(w) = self.workers.get(&partition) else {
            return;
        };
        // The queue is unbounded: this never blocks. The coordinator sends
        // only while `fetchable` found room.
        w.held_bytes
            .fetch_add(batch.bytes(), std::sync::atomic::Ordering::Relaxed);
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
                    s.retry_at = Some(Instant::now() + s.retry.backoff().initial);
                    return;
                }
            },
            Err(e) => {
                warn!("topic {topic} partition {partition}: offset {requested} out of range, and the log bounds cannot be read: {e}");
                let wait = retry_wait(s.retry.next(self.policy.classify(&e)));
                s.retry_at = Some(Instant::now() + wait);
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
                        new_topic: None,
                    },
                );
            }
            None if rewind == Rewind::Refused => {
                let message = refused_rewind_message(partition, requested, earliest, latest);
                error!("topic {topic} partition {partition}: {message}");
                s.halted = true;
                s.flow = halted(requested, message);
            }
            None => {
                let message = format!(
                    "offset {requested} is out of range [{earliest}, {latest}] and offset_reset = fail; \
                     fix with: kafka2mysql reset-offsets --partition {partition} --to earliest|latest|OFFSET"
                );
                error!("topic {topic} partition {partition}: {message}");
                s.halted = true;
                s.flow = halted(requested, message);
            }
        }
    }

    /// Notices a topic deleted and created again under the same name: a new
    /// topic id, or, where no id is known, a topic that was missing and is
    /// back (one that comes back with its id was only missing from an
    /// answer). The new topic is a new log: every partition starts over as
    /// `offset_reset` says, whatever position the old one had reached.
    fn check_topic(&mut self) {
        let Some(broker) = self.broker.as_mut() else {
            return;
        };
        let topic = self.config.kafka.topic.clone();
        let recreated = match broker.topic_id() {
            Ok(id) => {
                let back = self.topic_missing;
                // Ids tell; without them, a topic that was gone and is back
                // is taken for a new one.
                let recreated = match (&self.topic_id, &id) {
                    (Some(old), Some(new)) => old != new,
                    _ => back,
                };
                // A topic that is back may be another: its id, or none
                // known, is the one to compare with from now on.
                if id.is_some() || back {
                    self.topic_id = id;
                }
                self.topic_missing = false;
                recreated
            }
            Err(Error::NoSuchTopic(_)) => {
                self.topic_gone();
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

    /// The topic is missing: nothing is fetched until `check_topic` finds
    /// it again, and then it is a new log.
    fn topic_gone(&mut self) {
        if !self.topic_missing {
            warn!(
                "topic {} no longer exists; nothing is read until it comes back (nothing is skipped meanwhile)",
                self.config.kafka.topic
            );
        }
        self.topic_missing = true;
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
                // Checked again at the next turn, as a topic that is back
                // and not known yet (its id is the one just seen).
                self.topic_missing = true;
                self.topic_id = None;
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
                    s.flow = halted(old, message);
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
                    .is_some_and(|w| w.sender.len() < self.budget.queue_batches)
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
                    new_topic: Some(NewTopic {
                        id: self.topic_id.clone(),
                    }),
                },
            );
        }
    }

    fn broker_failed(&mut self, what: &str, error: &Error) {
        let wait = retry_wait(self.broker_retry.next(self.policy.classify(error)));
        let what = format!("{what}: {error}");
        let now = Instant::now();
        self.broker_retry_at = now + wait;
        if !self.group {
            // A new client is made at the next attempt; a group member keeps
            // its own (librdkafka reconnects by itself), since a new one
            // would be a new member and its partitions would move.
            self.broker = None;
        }
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
        self.broker_retry.succeeded();
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
                    self.topic_gone();
                }
                self.broker_failed("connect failed", &e);
                false
            }
        }
    }

    /// Group assignment: takes the group's rebalances and works on the first
    /// one not done (see the module doc). Asked every turn: it also serves
    /// the membership.
    fn serve_group(&mut self, now: Instant) {
        if !self.group {
            return;
        }
        let Some(broker) = self.broker.as_mut() else {
            return;
        };
        while let Some(rebalance) = broker.rebalance() {
            self.rebalances.push_back(rebalance);
        }
        self.restart_fenced(now);
        loop {
            if let Some(revoking) = &self.revoking {
                let finished = revoking.threads.iter().all(|(_, t)| t.is_finished());
                if !finished && now < revoking.deadline {
                    return;
                }
                self.finish_revocation();
            }
            match self.rebalances.front() {
                None => return,
                Some(Rebalance::Assigned(partitions)) => {
                    if now < self.assign_retry_at {
                        return;
                    }
                    let partitions = partitions.clone();
                    if !self.start_assigned(&partitions) {
                        return;
                    }
                    self.rebalances.pop_front();
                }
                Some(Rebalance::Revoked { partitions, lost }) => {
                    let (partitions, lost) = (partitions.clone(), *lost);
                    self.rebalances.pop_front();
                    self.begin_revocation(partitions, lost, now);
                }
            }
        }
    }

    /// Starts the workers of newly assigned partitions, then assigns them
    /// to the client at their start offsets. `false` when they could not be
    /// started (the database away): tried again after a backoff, the group
    /// waiting meanwhile.
    fn start_assigned(&mut self, assigned: &[i32]) -> bool {
        let topic = self.config.kafka.topic.clone();
        let new: Vec<i32> = assigned
            .iter()
            .copied()
            .filter(|p| !self.partitions.contains_key(p))
            .collect();
        let (Some(starter), Some(broker)) = (self.starter.as_mut(), self.broker.as_mut()) else {
            error!("topic {topic}: partitions {assigned:?} assigned, but this process cannot start partitions");
            return true;
        };
        let started = match starter.start(broker.as_mut(), &new) {
            Ok(started) => started,
            Err(e) => {
                let wait = retry_wait(self.assign_retry.next(self.policy.classify(&e)));
                warn!("topic {topic}: partitions {new:?} assigned by the group cannot be started yet, retrying in {wait:?}: {e}");
                self.assign_retry_at = Instant::now() + wait;
                return false;
            }
        };
        let starts = self.adopt(started);
        let broker = self.broker.as_mut().expect("checked above");
        match broker.assign(&starts) {
            Ok(()) => info!(
                "topic {topic}: partitions {new:?} assigned by the group, reading from {starts:?}"
            ),
            Err(e) => {
                error!("topic {topic}: partitions {new:?} could not be assigned to the client: {e}")
            }
        }
        true
    }

    /// Takes started partitions into the map, the offsets book and the
    /// workers; their start offsets.
    fn adopt(&mut self, started: Vec<Started>) -> Vec<(i32, i64)> {
        self.assign_retry.succeeded();
        let mut starts = Vec::with_capacity(started.len());
        for s in started {
            self.book.start(s.partition, s.start, s.committed);
            self.partitions.insert(
                s.partition,
                PartitionState::new(s.start, self.kafka_retry.clone()),
            );
            self.workers.insert(s.partition, s.worker);
            self.worker_stops.insert(s.partition, s.stop);
            starts.push((s.partition, s.start));
        }
        self.budget = Budget::new(&self.config, self.partitions.len());
        starts
    }

    /// Exactly-once: a partition whose offset row another writer moved (the
    /// member that owned it before, whose last write landed after this
    /// member's claim) is started again from the row, so that it neither
    /// stays blocked nor applies a record twice. Its worker is fenced and
    /// writes nothing more; it is stopped and a new one starts where the
    /// row says, the client moving there at the next fetch.
    fn restart_fenced(&mut self, now: Instant) {
        if self.fenced.is_empty() || now < self.assign_retry_at {
            return;
        }
        let partitions: Vec<i32> = std::mem::take(&mut self.fenced)
            .into_iter()
            .filter(|p| self.partitions.contains_key(p))
            .collect();
        warn!(
            "topic {}: partitions {partitions:?}: the offset table moved under this member (a former owner wrote late); \
             starting them again from the offset table",
            self.config.kafka.topic
        );
        for p in &partitions {
            self.worker_stops.remove(p);
            // The fenced worker ends at its stop; its thread is not waited for.
            self.workers.remove(p);
        }
        let (Some(starter), Some(broker)) = (self.starter.as_mut(), self.broker.as_mut()) else {
            return;
        };
        match starter.start(broker.as_mut(), &partitions) {
            Ok(started) => {
                let starts = self.adopt(started);
                info!(
                    "topic {}: partitions started again at {starts:?}",
                    self.config.kafka.topic
                );
            }
            Err(e) => {
                let wait = retry_wait(self.assign_retry.next(self.policy.classify(&e)));
                warn!("topic {}: partitions {partitions:?} cannot be started again yet, retrying in {wait:?}: {e}", self.config.kafka.topic);
                self.assign_retry_at = Instant::now() + wait;
                self.fenced.extend(partitions);
            }
        }
    }

    /// Stops fetching revoked partitions and tells their workers to finish
    /// the write in hand; `finish_revocation` completes it.
    fn begin_revocation(&mut self, revoked: Vec<i32>, lost: bool, now: Instant) {
        let partitions: Vec<i32> = revoked
            .into_iter()
            .filter(|p| self.partitions.contains_key(p))
            .collect();
        info!(
            "topic {}: partitions {partitions:?} revoked by the group{}; finishing the writes in hand",
            self.config.kafka.topic,
            if lost { " (lost: this member's session expired)" } else { "" }
        );
        let mut threads = Vec::new();
        for p in &partitions {
            // Drop order: the stop channel first, so that the worker skips
            // its queue, then the batch sender, so that its loop ends.
            self.worker_stops.remove(p);
            if let Some(WorkerHandle { sender, thread, .. }) = self.workers.remove(p) {
                drop(sender);
                threads.push((*p, thread));
            }
        }
        self.revoking = Some(Revoking {
            partitions,
            lost,
            deadline: now + self.config.worker.shutdown_timeout,
            threads,
        });
    }

    /// The revoked partitions' workers have finished (or the shutdown
    /// timeout passed): commits what they applied, forgets them, and only
    /// then gives them back to the group.
    fn finish_revocation(&mut self) {
        let Some(Revoking {
            partitions,
            lost,
            threads,
            ..
        }) = self.revoking.take()
        else {
            return;
        };
        let topic = self.config.kafka.topic.clone();
        self.drain_events();
        let left: Vec<i32> = threads
            .iter()
            .filter(|(_, t)| !t.is_finished())
            .map(|(p, _)| *p)
            .collect();
        if !left.is_empty() {
            warn!(
                "topic {topic}: the workers of revoked partitions {left:?} did not finish within worker.shutdown_timeout_ms; \
                 what they apply now is not committed and the next owner applies it again \
                 (exactly-once: the offset table's fence stops them)"
            );
        }
        let offsets: Vec<(i32, i64)> = self
            .book
            .pending()
            .into_iter()
            .filter(|(p, _)| partitions.contains(p))
            .filter(|(p, _)| {
                self.partitions
                    .get(p)
                    .is_none_or(|s| s.commit_hold.is_none())
            })
            .collect();
        // The commit in flight first, so that the one below is the last.
        self.commit_answered(COMMIT_TIMEOUT);
        let broker = self
            .broker
            .as_mut()
            .expect("a group member keeps its client");
        if lost {
            info!("topic {topic}: partitions {partitions:?} were lost, nothing is committed for them (applied: {offsets:?})");
        } else if !offsets.is_empty() {
            match broker.commit(&offsets) {
                Ok(()) => self.book.committed(&offsets, Instant::now()),
                Err(e) => warn!("kafka: commit of revoked partitions {offsets:?} failed; the next owner applies them again: {e}"),
            }
        }
        if let Err(e) = broker.unassign(&partitions) {
            error!("topic {topic}: partitions {partitions:?} could not be unassigned from the client: {e}");
        }
        for p in &partitions {
            self.book.forget(*p);
            self.partitions.remove(p);
        }
        self.budget = Budget::new(&self.config, self.partitions.len());
        for (p, t) in threads {
            if t.is_finished() && t.join().is_err() {
                error!("worker of partition {p} panicked");
            }
        }
        info!("topic {topic}: partitions {partitions:?} handed back to the group (committed {offsets:?})");
    }

    /// Sends a commit of the applied offsets to the Kafka group, unless one
    /// is in flight; `commit_answered` takes its answer on a later turn, so
    /// that the loop goes on fetching while the group coordinator answers.
    fn commit(&mut self) {
        if self.commit_in_flight.is_some() {
            return;
        }
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
        match broker.commit_begin(&pending) {
            Ok(()) => {
                self.commit_in_flight = Some((pending, now));
                self.commit_answered(Duration::ZERO);
            }
            Err(e) => {
                warn!("kafka: commit of {pending:?} failed, retrying at the next interval: {e}");
                self.book.commit_failed(now);
            }
        }
    }

    /// Takes the answer to the commit in flight, waiting up to `wait`; one
    /// not answered within `COMMIT_TIMEOUT` counts as failed.
    fn commit_answered(&mut self, wait: Duration) {
        let Some((pending, sent)) = self.commit_in_flight.take() else {
            return;
        };
        // The client that sent it is gone (a reconnect): so is its answer.
        let Some(broker) = self.broker.as_mut() else {
            self.book.commit_failed(sent);
            return;
        };
        let answer = match broker.commit_answer(wait) {
            Some(answer) => answer,
            None if sent.elapsed() < COMMIT_TIMEOUT => {
                self.commit_in_flight = Some((pending, sent));
                return;
            }
            None => Err(Error::Librdkafka(format!(
                "commit not confirmed within {COMMIT_TIMEOUT:?}"
            ))),
        };
        match answer {
            Ok(()) => {
                debug!("committed {pending:?}");
                self.book.committed(&pending, sent);
            }
            Err(e) => {
                warn!("kafka: commit of {pending:?} failed, retrying at the next interval: {e}");
                self.book.commit_failed(sent);
            }
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        let interval = if self.topic_missing {
            TOPIC_CHECK_INTERVAL_MISSING
        } else {
            TOPIC_CHECK_INTERVAL
        };
        if now.duration_since(self.last_topic_check) >= interval && self.broker.is_some() {
            self.last_topic_check = now;
            self.check_topic();
        }
        self.send_pending_resets();
        let views = partition_views(&self.partitions, &self.book, &self.workers);
        self.reporter.tick(now, &views, self.broker_outage.as_ref());
    }

    /// Stops the workers (see the module doc for the order) and commits.
    fn stop(mut self, ending: Ending) -> Ending {
        drop(self.stop_workers.take());
        self.worker_stops.clear();
        let mut threads = Vec::new();
        if let Some(revoking) = self.revoking.take() {
            threads.extend(revoking.threads);
        }
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
        // The last commit is waited for: the one in flight first.
        self.commit_answered(COMMIT_TIMEOUT);
        self.commit();
        self.commit_answered(COMMIT_TIMEOUT);
        let pending = self.book.pending();
        if pending.is_empty() {
            info!("offsets committed: {:?}", self.committed_summary());
        } else {
            warn!("offsets not committed at stop (the records will be applied again): {pending:?}");
        }
        let views = partition_views(&self.partitions, &self.book, &self.workers);
        self.reporter.log_stats(Instant::now(), &views);
        for (p, t) in threads {
            if t.is_finished() && t.join().is_err() {
                error!("worker of partition {p} panicked");
            }
        }
        self.reporter.clear();
        if let (true, Some(broker)) = (self.group, self.broker.as_mut()) {
            broker.leave_group();
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

/// What the reporter reads of each partition: the coordinator's records,
/// the offsets book, and the worker's write in progress.
fn partition_views<'a>(
    partitions: &'a BTreeMap<i32, PartitionState>,
    book: &OffsetBook,
    workers: &BTreeMap<i32, WorkerHandle>,
) -> Vec<PartitionView<'a>> {
    partitions
        .iter()
        .map(|(&p, s)| {
            let offsets = book.get(p);
            PartitionView {
                partition: p,
                flow: &s.flow,
                fetch_outage: s.fetch_outage.as_ref(),
                fetch_offset: s.fetch_offset,
                applied_offset: offsets.map_or(s.fetch_offset, |o| o.applied),
                committed_offset: offsets.and_then(|o| o.committed),
                high_watermark: s.high_watermark,
                writing_since: workers.get(&p).map_or(0, |w| {
                    w.writing_since.load(std::sync::atomic::Ordering::Relaxed)
                }),
            }
        })
        .collect()
}

/// Blocked by the exactly-once fence (`mysql::sink::FENCE`).
fn fenced(flow: &Flow) -> bool {
    matches!(flow, Flow::Blocked(stall) if stall.error.starts_with(crate::mysql::sink::FENCE))
}

/// A partition that is fetched no more, at `offset`, until the operator acts.
fn halted(offset: i64, error: String) -> Flow {
    Flow::Blocked(Stall {
        since: SystemTime::now(),
        offset,
        class: Class::Fatal,
        error,
    })
}

/// The wait a Kafka-side `RetryState` (retrying every class for ever)
/// decides.
fn retry_wait(decision: Decision) -> Duration {
    match decision {
        Decision::RetryAfter(wait) | Decision::Stuck(wait) => wait,
        // Not given: every class is retried (`Class::ALL`).
        Decision::GiveUp => KAFKA_BACKOFF_CAP,
    }
}

/// The coordinator's rules, driven through the real loop and real workers
/// against the scripted broker of `broker/fake.rs` and an in-memory table
/// (the worker's `Sink` seam, as in `worker.rs`'s tests).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::fake::{FakeBroker, TopicState};
    use crate::config::Assignment;
    use crate::config::UnknownFields;
    use crate::mysql::sink::{Sink, WriteSet};
    use crate::record::{Column, Mapper, TableSchema};
    use crate::worker::{self, WorkerSettings};
    use std::fmt::Debug;
    use std::sync::atomic::Ordering;
    use std::sync::{Condvar, Mutex, MutexGuard};

    /// What the workers wrote, per partition, and the trouble scripted for
    /// them.
    #[derive(Default)]
    struct Table {
        /// Offsets written (rows and dead letters), in the order written.
        rows: BTreeMap<i32, Vec<i64>>,
        /// Every write that committed: when, and its `next_offset`.
        writes: BTreeMap<i32, Vec<(Instant, i64)>>,
        /// A write of partition p reaching past offset X fails with a
        /// technical error (MySQL 2013, the connection lost).
        failing_past: BTreeMap<i32, i64>,
        failed_writes: BTreeMap<i32, u64>,
        /// A write of partition p reaching past offset X does not return
        /// until this entry is removed (a database that does not answer).
        hanging_past: BTreeMap<i32, i64>,
        /// Partitions with a write hanging now.
        hung: Vec<i32>,
        /// The offset table, as `TestStarter` reads it: where a partition
        /// starts, ahead of the group's committed offset.
        stored: BTreeMap<i32, i64>,
        /// A write of partition p reaching past offset X is fenced:
        /// another writer moved the offset table's row to Y. As
        /// `MysqlSink`, the worker's sink then writes nothing more, until
        /// `TestStarter` starts a new worker.
        fenced_past: BTreeMap<i32, (i64, i64)>,
        fenced: Vec<i32>,
    }

    impl Table {
        fn applied(&self, partition: i32) -> Option<i64> {
            self.writes.get(&partition)?.last().map(|&(_, o)| o)
        }
    }

    #[derive(Clone, Default)]
    struct TableSink(Arc<(Mutex<Table>, Condvar)>);

    impl TableSink {
        fn table(&self) -> MutexGuard<'_, Table> {
            self.0 .0.lock().expect("table")
        }

        /// A table whose writes of `partition` reaching past `offset` fail
        /// with a technical error.
        fn failing_past(partition: i32, offset: i64) -> TableSink {
            let sink = TableSink::default();
            sink.table().failing_past.insert(partition, offset);
            sink
        }

        /// A table whose writes of `partition` reaching past `offset` hang.
        fn hanging_past(partition: i32, offset: i64) -> TableSink {
            let sink = TableSink::default();
            sink.table().hanging_past.insert(partition, offset);
            sink
        }

        /// Changes the scripted trouble and wakes a hanging write.
        fn script(&self, change: impl FnOnce(&mut Table)) {
            change(&mut self.table());
            self.0 .1.notify_all();
        }
    }

    impl Sink for TableSink {
        fn apply(&mut self, write: WriteSet<'_>) -> Result<(), Error> {
            let (table, changed) = &*self.0;
            let mut t = table.lock().expect("table");
            let p = write.partition;
            let past = |limit: Option<&i64>| limit.is_some_and(|&x| write.next_offset > x);
            if past(t.hanging_past.get(&p)) {
                t.hung.push(p);
                while past(t.hanging_past.get(&p)) {
                    t = changed.wait(t).expect("table");
                }
                t.hung.retain(|&h| h != p);
            }
            if let Some(&(x, y)) = t.fenced_past.get(&p) {
                if write.next_offset > x {
                    t.fenced_past.remove(&p);
                    t.stored.insert(p, y);
                    t.fenced.push(p);
                }
            }
            if t.fenced.contains(&p) {
                return Err(Error::Setup(format!(
                    "{}: another writer moved the row",
                    crate::mysql::sink::FENCE
                )));
            }
            if past(t.failing_past.get(&p)) {
                *t.failed_writes.entry(p).or_default() += 1;
                return Err(Error::Mysql(mysql::Error::MySqlError(mysql::MySqlError {
                    state: "HY000".into(),
                    message: "Lost connection to MySQL server during query".into(),
                    code: 2013,
                })));
            }
            let offsets = write.rows.iter().map(|(o, _)| *o);
            let offsets = offsets.chain(write.dead_letters.iter().map(|dl| dl.offset));
            t.rows.entry(p).or_default().extend(offsets);
            t.writes
                .entry(p)
                .or_default()
                .push((Instant::now(), write.next_offset));
            Ok(())
        }
    }

    /// Millisecond backoff, commits only when a test asks for them, and a
    /// broker address where nothing listens: the fake is the only broker
    /// these tests reach.
    fn config(edit: impl FnOnce(&mut Config)) -> Config {
        let mut config = Config::parse(
            "[kafka]\nbrokers = [\"127.0.0.1:1\"]\ntopic = \"orders\"\ngroup = \"g\"\n\
             [mysql]\nurl = \"mysql://app@127.0.0.1:1/app\"\ntable = \"orders\"\nkey_columns = [\"id\"]\n",
            None,
        )
        .expect("test config");
        config.retry.technical_attempts = 2;
        config.retry.backoff_initial = Duration::from_millis(1);
        config.retry.backoff_max = Duration::from_millis(5);
        config.commit.every_messages = 1_000_000;
        config.commit.interval = Duration::from_secs(600);
        config.worker.queue_batches = 2;
        config.worker.shutdown_timeout = Duration::from_secs(20);
        config.log.stats_interval = Duration::from_secs(600);
        edit(&mut config);
        config
    }

    /// The rows of `broker::fake::record`: one `id` column.
    fn mapper(config: &Config) -> Arc<Mapper> {
        let id = Column {
            name: "id".into(),
            column_type: "bigint(20)".into(),
        };
        Arc::new(Mapper {
            schema: TableSchema::new("orders", vec![id], &["id".to_string()]).expect("schema"),
            unknown_fields: UnknownFields::Ignore,
            delete_on_tombstone: true,
            max_record_bytes: config.worker.max_record_bytes,
            record_format: Default::default(),
            time_zone: Default::default(),
            metadata: Default::default(),
        })
    }

    /// The coordinator on its own thread, with one real worker per partition,
    /// as `service::run_pipeline` starts them.
    struct Pipeline {
        broker: FakeBroker,
        sink: TableSink,
        stats: Arc<Stats>,
        shutdown: Option<Sender<()>>,
        /// How the coordinator's `run` ended, sent from its thread.
        ended: Receiver<Ending>,
        shutdown_timeout: Duration,
        /// The status file the coordinator writes, in the temp dir.
        status_file: PathBuf,
    }

    /// Starts every partition of `starts` at its offset, which the group has
    /// committed.
    fn start(
        config: Config,
        broker: &FakeBroker,
        sink: &TableSink,
        starts: &[(i32, i64)],
    ) -> Pipeline {
        launch(config, broker, sink, starts)
    }

    /// The `PartitionStarter` of these tests: each assigned partition starts
    /// at the group's committed offset (0 when none), with a real worker.
    struct TestStarter {
        config: Arc<Config>,
        policy: Arc<Policy>,
        sink: TableSink,
        events: Sender<WorkerEvent>,
        stats: Arc<Stats>,
    }

    impl PartitionStarter for TestStarter {
        fn start(
            &mut self,
            broker: &mut dyn Broker,
            partitions: &[i32],
        ) -> Result<Vec<Started>, Error> {
            let committed = broker.committed_offsets()?;
            let mut started = Vec::new();
            for &partition in partitions {
                let committed = committed.get(&partition).copied().flatten();
                let stored = {
                    let mut table = self.sink.table();
                    table.fenced.retain(|&p| p != partition);
                    table.stored.get(&partition).copied()
                };
                let start = stored.or(committed).unwrap_or(0);
                let (stop, stop_receiver) = crossbeam_channel::bounded::<()>(0);
                let worker = worker::spawn(
                    partition,
                    start,
                    Box::new(self.sink.clone()),
                    mapper(&self.config),
                    WorkerSettings::from_config(&self.config, Arc::clone(&self.policy)),
                    self.events.clone(),
                    stop_receiver,
                    Arc::clone(&self.stats),
                )?;
                started.push(Started {
                    partition,
                    start,
                    committed,
                    worker,
                    stop,
                });
            }
            Ok(started)
        }
    }

    /// The pipeline with group assignment: no partition until the test
    /// scripts a rebalance on the broker.
    fn start_group(config: Config, broker: &FakeBroker, sink: &TableSink) -> Pipeline {
        let config = config_with(config, |c| c.kafka.assignment = Assignment::Group);
        launch(config, broker, sink, &[])
    }

    fn config_with(mut config: Config, edit: impl FnOnce(&mut Config)) -> Config {
        edit(&mut config);
        config
    }

    fn launch(
        config: Config,
        broker: &FakeBroker,
        sink: &TableSink,
        starts: &[(i32, i64)],
    ) -> Pipeline {
        let config = Arc::new(config);
        let shutdown_timeout = config.worker.shutdown_timeout;
        let stats = Arc::new(Stats::default());
        let (event_sender, events) = crossbeam_channel::unbounded();
        let (stop_workers, stop_receiver) = crossbeam_channel::bounded::<()>(0);
        let (shutdown_sender, shutdown) = crossbeam_channel::bounded::<()>(0);
        let policy = Arc::new(Policy::from_config(&config));
        static PIPELINES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let status_file = std::env::temp_dir().join(format!(
            "kafka2mysql-coordinator-test-{}-{}.status.json",
            std::process::id(),
            PIPELINES.fetch_add(1, Ordering::Relaxed)
        ));
        let mut workers = BTreeMap::new();
        for &(partition, start) in starts {
            let handle = worker::spawn(
                partition,
                start,
                Box::new(sink.clone()),
                mapper(&config),
                // One write per batch fetched, so that the tests see the
                // coordinator's batches (the worker's own tests join them).
                WorkerSettings {
                    max_batch_bytes: 0,
                    ..WorkerSettings::from_config(&config, Arc::clone(&policy))
                },
                event_sender.clone(),
                stop_receiver.clone(),
                Arc::clone(&stats),
            )
            .expect("worker thread");
            workers.insert(partition, handle);
        }
        let group = config.kafka.assignment == Assignment::Group;
        let starter = TestStarter {
            config: Arc::clone(&config),
            policy: Arc::clone(&policy),
            sink: sink.clone(),
            events: event_sender,
            stats: Arc::clone(&stats),
        };
        let (broker_client, starts, coordinator_stats, file) = (
            broker.client(),
            starts.iter().map(|&(p, s)| (p, (s, Some(s)))).collect(),
            Arc::clone(&stats),
            Some(status_file.clone()),
        );
        let (ending, ended) = crossbeam_channel::bounded(1);
        std::thread::Builder::new()
            .name("coordinator".into())
            .spawn(move || {
                let parts = CoordinatorParts {
                    config,
                    policy,
                    broker: broker_client,
                    starts,
                    workers,
                    events,
                    stop_workers,
                    shutdown,
                    stats: coordinator_stats,
                    status_file: file,
                    starter: group.then(|| Box::new(starter) as Box<dyn PartitionStarter>),
                };
                let _ = ending.send(Coordinator::new(parts).run());
            })
            .expect("coordinator thread");
        Pipeline {
            broker: broker.clone(),
            sink: sink.clone(),
            stats,
            shutdown: Some(shutdown_sender),
            ended,
            shutdown_timeout,
            status_file,
        }
    }

    /// Polls `look` until it says done, for up to 20 s (a loaded machine);
    /// panics saying what was expected and what was seen last.
    fn eventually<T: Debug>(expected: &str, mut look: impl FnMut() -> (bool, T)) -> T {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (done, seen) = look();
            if done {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "expected {expected}; last seen {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    impl Pipeline {
        /// Waits until the table holds every partition of `expected` applied
        /// up to its offset.
        fn until_applied(&self, expected: &[(i32, i64)]) {
            eventually(&format!("applied {expected:?}"), || {
                let t = self.sink.table();
                let seen: Vec<_> = expected.iter().map(|&(p, _)| (p, t.applied(p))).collect();
                let done = expected.iter().all(|&(p, o)| t.applied(p) == Some(o));
                (done, seen)
            });
        }

        /// Waits until `partition`'s worker has failed more writes than
        /// `retry.technical_attempts` (2 here): it is retrying, blocked.
        /// Waits until the status file says `state` for each partition of
        /// `expected` (and the error class, unless flowing).
        fn until_status(&self, expected: &[(i32, &str, Option<&str>)]) {
            eventually(&format!("status {expected:?}"), || {
                let seen: Vec<(i32, String, Option<String>)> =
                    ServiceStatus::read(&self.status_file)
                        .map(|s| {
                            s.partitions
                                .values()
                                .map(|p| (p.partition, p.state.clone(), p.error_class.clone()))
                                .collect()
                        })
                        .unwrap_or_default();
                let done = expected.iter().all(|&(p, state, class)| {
                    seen.iter()
                        .any(|(sp, ss, sc)| *sp == p && ss == state && sc.as_deref() == class)
                });
                (done, seen)
            });
        }

        /// Waits for the `count`-th `unassign` call; all of them so far.
        fn until_unassigned(&self, count: usize) -> Vec<crate::broker::fake::Unassign> {
            eventually(&format!("{count} unassign calls"), || {
                let unassigns = self.broker.unassigns();
                (unassigns.len() == count, unassigns)
            })
        }

        fn until_retrying(&self, partition: i32) {
            eventually(&format!("partition {partition} retrying"), || {
                let t = self.sink.table();
                let failed = t.failed_writes.get(&partition).copied().unwrap_or(0);
                (failed > 2, failed)
            });
        }

        /// Waits for a few more turns of the coordinator's loop (each turn
        /// drains the events, commits if due, then fetches): time enough to
        /// act on what the workers reported before.
        fn a_few_turns(&self) {
            let from = self.broker.fetch_calls();
            eventually("three more fetches", || {
                let calls = self.broker.fetch_calls();
                (calls >= from + 3, calls)
            });
        }

        /// Closes the shutdown channel (as a signal does) and waits for the
        /// coordinator: how it ended, and how long the stop took. Fails
        /// when it has not returned 10 s after the shutdown timeout.
        fn stop(&mut self) -> (Ending, Duration) {
            let asked = Instant::now();
            drop(self.shutdown.take());
            let limit = self.shutdown_timeout + Duration::from_secs(10);
            let ending = match self.ended.recv_timeout(limit) {
                Ok(ending) => ending,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    panic!("expected the coordinator to return within {limit:?} of the stop; it is still running")
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    panic!("expected the coordinator to return; its thread panicked")
                }
            };
            (ending, asked.elapsed())
        }
    }

    fn rows(sink: &TableSink, partition: i32) -> Vec<i64> {
        sink.table()
            .rows
            .get(&partition)
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn offset_out_of_range_moves_only_that_partition_as_offset_reset_says() {
        for reset in [
            OffsetReset::Earliest,
            OffsetReset::Latest,
            OffsetReset::Fail,
        ] {
            let broker = FakeBroker::new(3);
            // Partition 0 starts below its log (retention deleted 50..100),
            // partition 2 past its end (the log was truncated); partition 1
            // is where it should be.
            broker.log(0, 100, 110);
            broker.log(1, 0, 10);
            broker.log(2, 20, 30);
            let sink = TableSink::default();
            let config = config(|c| c.kafka.offset_reset = reset);
            let mut pipeline = start(config, &broker, &sink, &[(0, 50), (1, 0), (2, 40)]);
            if reset == OffsetReset::Fail {
                pipeline.until_applied(&[(1, 10)]);
            } else {
                pipeline.until_applied(&[(0, 110), (1, 10), (2, 30)]);
            }
            for p in 0..3 {
                broker.append(p, 2);
            }
            pipeline.until_applied(&[(1, 12)]);
            if reset != OffsetReset::Fail {
                pipeline.until_applied(&[(0, 112), (2, 32)]);
            }
            let (ending, _) = pipeline.stop();
            assert_eq!(ending, Ending::Clean);

            // Partition 1 read its log once, in order, never moved.
            assert_eq!(rows(&sink, 1), (0..12).collect::<Vec<_>>(), "{reset:?}");
            let mut fetched_1 = broker.fetches_of(1);
            fetched_1.dedup();
            assert_eq!(fetched_1, vec![0, 3, 6, 9, 10, 12], "{reset:?}");
            let (rows_0, rows_2, resets) = match reset {
                OffsetReset::Earliest => ((100..112).collect(), (20..32).collect(), 2),
                OffsetReset::Latest => ((110..112).collect(), (30..32).collect(), 2),
                OffsetReset::Fail => (vec![], vec![], 0),
            };
            assert_eq!(rows(&sink, 0), rows_0, "{reset:?}");
            assert_eq!(rows(&sink, 2), rows_2, "{reset:?}");
            assert_eq!(pipeline.stats.offset_resets.load(Ordering::Relaxed), resets);
            let committed = broker.committed();
            if reset == OffsetReset::Fail {
                // Halted: fetched once, nothing more asked, nothing committed.
                assert_eq!(broker.fetches_of(0), vec![50]);
                assert_eq!(broker.fetches_of(2), vec![40]);
                assert_eq!(committed, [(1, 12)].into());
            } else {
                assert_eq!(committed, [(0, 112), (1, 12), (2, 32)].into(), "{reset:?}");
            }
        }
    }

    #[test]
    fn a_blocked_worker_fills_its_queue_and_only_its_partition_stops() {
        let broker = FakeBroker::new(2);
        broker.log(0, 0, 40);
        broker.log(1, 0, 10);
        let sink = TableSink::failing_past(0, 0);
        let config = config(|c| c.commit.interval = Duration::from_millis(20));
        let queue_batches = config.worker.queue_batches;
        let mut pipeline = start(config, &broker, &sink, &[(0, 0), (1, 0)]);

        // The worker holds one batch, retrying; its queue takes two more;
        // then partition 0 is not fetched any more.
        eventually("partition 0 fetched queue_batches + 1 times", || {
            let fetched = broker.fetches_of(0);
            (fetched.len() == queue_batches + 1, fetched)
        });
        pipeline.until_retrying(0);
        // The worker's report is the partition's state, recorded once, by
        // the coordinator, and shown in the status file.
        pipeline.until_status(&[(0, "retrying", Some("technical")), (1, "flowing", None)]);
        pipeline.until_applied(&[(1, 10)]);
        broker.append(1, 10);
        pipeline.until_applied(&[(1, 20)]);
        pipeline.a_few_turns();
        assert_eq!(broker.fetches_of(0), vec![0, 2, 4]);
        assert!(rows(&sink, 0).is_empty());
        eventually("partition 1 committed", || {
            let committed = broker.committed();
            (committed.get(&1) == Some(&20), committed)
        });
        assert_eq!(
            broker.committed().get(&0),
            None,
            "nothing of partition 0 applied"
        );

        // The database is back: the worker drains its queue and the
        // partition is fetched again, from where it stopped.
        sink.script(|t| {
            t.failing_past.clear();
        });
        pipeline.until_applied(&[(0, 40)]);
        pipeline.until_status(&[(0, "flowing", None), (1, "flowing", None)]);
        let (ending, _) = pipeline.stop();
        assert_eq!(ending, Ending::Clean);
        assert!(
            !pipeline.status_file.exists(),
            "the status file goes at stop"
        );
        assert_eq!(rows(&sink, 0), (0..40).collect::<Vec<_>>());
        assert_eq!(broker.fetches_of(0)[..4], [0, 2, 4, 6]);
        assert_eq!(broker.committed(), [(0, 40), (1, 20)].into());
    }

    /// A partition the client does not read now (out of librdkafka's
    /// window) is asked for only while its worker holds nothing: its blocked
    /// worker gets one batch, not a full queue, and the partition is asked
    /// for again once that batch is written. A blocked partition the client
    /// reads fills its worker's queue as before; partition 2 keeps the
    /// coordinator fetching.
    #[test]
    fn a_partition_the_client_does_not_read_is_asked_for_only_when_its_worker_is_empty() {
        let broker = FakeBroker::new(2);
        broker.log(0, 0, 40);
        broker.log(1, 0, 40);
        broker.log(2, 0, 10);
        broker.set_reading(0, false);
        let sink = TableSink::failing_past(0, 0);
        sink.table().failing_past.insert(1, 0);
        let config = config(|c| c.commit.interval = Duration::from_millis(20));
        let queue_batches = config.worker.queue_batches;
        let starts = [(0, 0), (1, 0), (2, 0)];
        let mut pipeline = start(config, &broker, &sink, &starts);

        eventually("partition 1 fetched queue_batches + 1 times", || {
            let fetched = broker.fetches_of(1);
            (fetched.len() == queue_batches + 1, fetched)
        });
        pipeline.until_retrying(0);
        pipeline.until_retrying(1);
        broker.append(2, 10);
        pipeline.until_applied(&[(2, 20)]);
        pipeline.a_few_turns();
        assert_eq!(broker.fetches_of(0), vec![0], "out of the window");
        assert_eq!(broker.fetches_of(1), vec![0, 2, 4], "in the window");

        // Written: partition 0 is asked for again, one batch at a time.
        sink.script(|t| {
            t.failing_past.clear();
        });
        pipeline.until_applied(&[(0, 40), (1, 40), (2, 20)]);
        let (ending, _) = pipeline.stop();
        assert_eq!(ending, Ending::Clean);
        assert_eq!(rows(&sink, 0), (0..40).collect::<Vec<_>>());
        assert_eq!(rows(&sink, 1), (0..40).collect::<Vec<_>>());
    }

    /// Group assignment: an assigned partition gets a worker at the group's
    /// committed offset and is assigned to the client there; a revoked one
    /// is fetched no more, its applied offset is committed before the
    /// client gives it up, and nothing of it is dispatched after that.
    #[test]
    fn group_assignment_starts_assigned_partitions_and_commits_revoked_ones_before_unassigning() {
        let broker = FakeBroker::new(5);
        broker.log(0, 0, 20);
        broker.log(1, 0, 20);
        broker.log(2, 0, 20);
        broker.client().commit(&[(1, 5)]).unwrap();
        let sink = TableSink::default();
        let mut pipeline = start_group(config(|_| {}), &broker, &sink);
        broker.rebalance(Rebalance::Assigned(vec![0, 1]));
        pipeline.until_applied(&[(0, 20), (1, 20)]);
        assert_eq!(broker.assigns(), vec![vec![(0, 0), (1, 5)]]);
        assert_eq!(rows(&sink, 1), (5..20).collect::<Vec<_>>());
        assert!(
            broker.fetches_of(2).is_empty(),
            "partition 2 is not this member's"
        );

        // Partition 0 goes: its last records are applied, then committed,
        // then unassigned; partition 1 stays.
        broker.append(0, 3);
        pipeline.until_applied(&[(0, 23)]);
        broker.rebalance(Rebalance::Revoked {
            partitions: vec![0],
            lost: false,
        });
        let unassign = pipeline.until_unassigned(1).pop().expect("an unassign");
        assert_eq!(unassign.partitions, vec![0]);
        let commit_of_0 = broker
            .commits()
            .into_iter()
            .find(|c| c.offsets.contains(&(0, 23)))
            .expect("partition 0 committed at 23");
        assert!(
            commit_of_0.at <= unassign.at,
            "committed before the unassign"
        );
        broker.append(0, 5);
        broker.append(1, 5);
        pipeline.until_applied(&[(1, 25)]);
        pipeline.a_few_turns();
        assert!(
            !broker.fetched_since(unassign.fetches_before).contains(&0),
            "partition 0 fetched after its revocation"
        );
        assert_eq!(rows(&sink, 0), (0..23).collect::<Vec<_>>());

        // It comes back: it starts where its commit left it.
        broker.rebalance(Rebalance::Assigned(vec![0]));
        pipeline.until_applied(&[(0, 28)]);
        assert_eq!(broker.assigns()[1], vec![(0, 23)]);
        let (ending, _) = pipeline.stop();
        assert_eq!(ending, Ending::Clean);
        assert_eq!(rows(&sink, 0), (0..28).collect::<Vec<_>>());
        assert_eq!(broker.committed(), [(0, 28), (1, 25)].into());
    }

    /// A revoked partition whose worker waits on the database: the others
    /// flow meanwhile, the revocation completes after
    /// `worker.shutdown_timeout_ms` without committing what was not applied,
    /// and a lost partition is not committed at all.
    #[test]
    fn a_revocation_waits_for_a_hanging_worker_no_longer_than_the_shutdown_timeout() {
        let broker = FakeBroker::new(5);
        broker.log(0, 0, 10);
        broker.log(1, 0, 10);
        let sink = TableSink::hanging_past(0, 5);
        let config = config(|c| c.worker.shutdown_timeout = Duration::from_millis(500));
        let mut pipeline = start_group(config, &broker, &sink);
        broker.rebalance(Rebalance::Assigned(vec![0, 1]));
        pipeline.until_applied(&[(1, 10)]);
        eventually("partition 0 hanging", || {
            let hung = sink.table().hung.clone();
            (hung == vec![0], hung)
        });
        // The worker may have joined its batches into the write that hangs.
        let applied_0 = sink.table().applied(0).unwrap_or(0);
        let asked = Instant::now();
        broker.rebalance(Rebalance::Revoked {
            partitions: vec![0],
            lost: false,
        });
        broker.append(1, 5);
        pipeline.until_applied(&[(1, 15)]);
        let unassign = pipeline.until_unassigned(1).pop().expect("an unassign");
        assert!(unassign.at.duration_since(asked) >= Duration::from_millis(500));
        assert_eq!(
            broker.committed().get(&0),
            Some(&applied_0),
            "only what was applied"
        );

        broker.rebalance(Rebalance::Revoked {
            partitions: vec![1],
            lost: true,
        });
        pipeline.until_unassigned(2);
        sink.script(|t| t.hanging_past.clear());
        let (ending, _) = pipeline.stop();
        assert_eq!(ending, Ending::Clean);
        // Partition 1 was lost: nothing committed for it, at the
        // revocation or at the stop; partition 0's late write is not
        // committed either.
        assert_eq!(broker.committed(), [(0, applied_0)].into());
    }

    /// Exactly-once with group assignment: a worker fenced because another
    /// writer moved the offset row (a former owner writing late) is started
    /// again from the row: what that writer applied is not applied again,
    /// and nothing after it is skipped.
    #[test]
    fn a_fenced_partition_of_a_group_member_starts_again_from_the_offset_table() {
        let broker = FakeBroker::new(5);
        broker.log(0, 0, 20);
        broker.log(1, 0, 20);
        let sink = TableSink::default();
        sink.script(|t| {
            t.fenced_past.insert(0, (5, 8));
        });
        let mut pipeline = start_group(config(|_| {}), &broker, &sink);
        broker.rebalance(Rebalance::Assigned(vec![0, 1]));
        pipeline.until_applied(&[(0, 20), (1, 20)]);
        let (ending, _) = pipeline.stop();
        assert_eq!(ending, Ending::Clean);
        // Below 5 what this member wrote before the fence (its batches may
        // have been joined into the fenced write), 5..8 the other writer's.
        let rows_0 = rows(&sink, 0);
        let (before, after): (Vec<i64>, Vec<i64>) = rows_0.iter().partition(|&&o| o < 8);
        assert_eq!(after, (8..20).collect::<Vec<_>>(), "from the row on");
        assert_eq!(before, (0..before.len() as i64).collect::<Vec<_>>());
        assert!(before.len() <= 5, "{rows_0:?}");
        assert_eq!(rows(&sink, 1), (0..20).collect::<Vec<_>>());
        assert!(
            broker.fetches_of(0).contains(&8),
            "{:?}",
            broker.fetches_of(0)
        );
        assert_eq!(
            broker.assigns().len(),
            1,
            "started again without a new assignment"
        );
        assert_eq!(broker.committed(), [(0, 20), (1, 20)].into());
    }

    /// Every commit sends offsets that a write had reached before it: the
    /// partition's start, or the `next_offset` of a write that committed
    /// earlier (docs/architecture.md, "Invariants").
    fn assert_commits_follow_writes(broker: &FakeBroker, sink: &TableSink, starts: &[(i32, i64)]) {
        let t = sink.table();
        for commit in broker.commits() {
            for &(p, offset) in &commit.offsets {
                let started_there = starts.contains(&(p, offset));
                let written_before = t
                    .writes
                    .get(&p)
                    .is_some_and(|w| w.iter().any(|&(at, o)| o == offset && at <= commit.at));
                assert!(
                    started_there || written_before,
                    "commit of partition {p} at {offset} before any write reached it: {commit:?}, writes {:?}",
                    t.writes.get(&p)
                );
            }
        }
    }

    #[test]
    fn a_commit_waiting_for_its_answer_holds_neither_fetches_nor_a_second_commit() {
        let broker = FakeBroker::new(5);
        broker.log(0, 0, 10);
        broker.log(1, 0, 10);
        broker.hold_commit_answers(true);
        let sink = TableSink::default();
        let config = config(|c| {
            c.commit.every_messages = 1;
            c.commit.interval = Duration::from_millis(1);
        });
        let mut pipeline = start(config, &broker, &sink, &[(0, 0), (1, 0)]);
        // Every record is fetched and applied while the first commit waits.
        pipeline.until_applied(&[(0, 10), (1, 10)]);
        pipeline.a_few_turns();
        assert_eq!(broker.commits().len(), 1, "{:?}", broker.commits());
        broker.hold_commit_answers(false);
        eventually("the applied offsets committed once the answer came", || {
            let committed = broker.committed();
            (committed == [(0, 10), (1, 10)].into(), committed)
        });
        assert_eq!(pipeline.stop().0, Ending::Clean);
    }

    #[test]
    fn nothing_is_committed_past_what_the_workers_applied() {
        let broker = FakeBroker::new(5);
        broker.log(0, 0, 10);
        broker.log(1, 0, 30);
        // Partition 0's second batch (5..10) never gets in.
        let sink = TableSink::failing_past(0, 5);
        // Commit as often as the coordinator can.
        let config = config(|c| {
            c.commit.every_messages = 1;
            c.commit.interval = Duration::from_millis(1);
        });
        let starts = [(0, 0), (1, 0)];
        let mut pipeline = start(config, &broker, &sink, &starts);
        pipeline.until_applied(&[(0, 5), (1, 30)]);
        pipeline.until_retrying(0);
        eventually("the applied offsets committed", || {
            let committed = broker.committed();
            (committed == [(0, 5), (1, 30)].into(), committed)
        });
        pipeline.a_few_turns();
        assert_eq!(broker.committed(), [(0, 5), (1, 30)].into());

        // A stop does not wait for the blocked worker (it gives up its retry
        // at once) and commits nothing past 5.
        let (ending, took) = pipeline.stop();
        assert_eq!(ending, Ending::Clean);
        assert!(took < Duration::from_secs(10), "stop took {took:?}");
        assert_eq!(broker.committed(), [(0, 5), (1, 30)].into());
        assert!(broker.commits().len() > 1);
        assert_commits_follow_writes(&broker, &sink, &starts);
    }

    /// Waits until the coordinator has stopped fetching (no fetch for
    /// 300 ms).
    fn until_fetches_stop(broker: &FakeBroker) {
        eventually("the fetches stopped", || {
            let before = broker.fetch_calls();
            std::thread::sleep(Duration::from_millis(300));
            let after = broker.fetch_calls();
            (after == before, after - before)
        });
    }

    #[test]
    fn a_topic_that_is_gone_is_not_read_and_one_back_with_its_id_is_the_same_log() {
        let broker = FakeBroker::new(5);
        broker.log(0, 0, 10);
        let sink = TableSink::default();
        let mut pipeline = start(config(|_| {}), &broker, &sink, &[(0, 0)]);
        pipeline.until_applied(&[(0, 10)]);

        // Gone: nothing is read, whatever the log holds.
        broker.set_topic(TopicState::Missing);
        until_fetches_stop(&broker);
        broker.append(0, 10);
        std::thread::sleep(Duration::from_millis(1_500));
        assert_eq!(sink.table().applied(0), Some(10));

        // Back with the same id: read on from 10, no reset.
        let asked = broker.fetches_of(0).len();
        broker.set_topic(TopicState::Id("fake-topic-id".into()));
        pipeline.until_applied(&[(0, 20)]);
        let since = broker.fetches_of(0).split_off(asked);
        assert!(since.iter().all(|&o| o >= 10), "fetched since: {since:?}");

        // Gone and back with another id: a new log, read from its start.
        broker.set_topic(TopicState::Missing);
        until_fetches_stop(&broker);
        let asked = broker.fetches_of(0).len();
        broker.set_topic(TopicState::Id("another-topic-id".into()));
        eventually("partition 0 fetched from 0 again", || {
            let since = broker.fetches_of(0).split_off(asked);
            (since.contains(&0), since)
        });
        let (ending, _) = pipeline.stop();
        assert_eq!(ending, Ending::Clean);
    }

    #[test]
    fn commits_come_every_n_messages_and_at_stop() {
        let broker = FakeBroker::new(5);
        broker.log(0, 0, 0);
        let sink = TableSink::default();
        let config = config(|c| c.commit.every_messages = 10);
        let mut pipeline = start(config, &broker, &sink, &[(0, 0)]);

        broker.append(0, 5);
        pipeline.until_applied(&[(0, 5)]);
        pipeline.a_few_turns();
        assert_eq!(broker.commits(), vec![], "5 records are fewer than 10");

        broker.append(0, 5);
        pipeline.until_applied(&[(0, 10)]);
        eventually("a commit of 10", || {
            let commits = broker.commits();
            (!commits.is_empty(), commits)
        });
        broker.append(0, 4);
        pipeline.until_applied(&[(0, 14)]);
        pipeline.a_few_turns();
        let offsets: Vec<_> = broker.commits().into_iter().map(|c| c.offsets).collect();
        assert_eq!(
            offsets,
            vec![vec![(0, 10)]],
            "4 more records are fewer than 10"
        );

        let (ending, _) = pipeline.stop();
        assert_eq!(ending, Ending::Clean);
        let offsets: Vec<_> = broker.commits().into_iter().map(|c| c.offsets).collect();
        assert_eq!(offsets, vec![vec![(0, 10)], vec![(0, 14)]]);
    }

    #[test]
    fn commits_come_on_the_interval() {
        let interval = Duration::from_millis(300);
        let broker = FakeBroker::new(5);
        broker.log(0, 0, 0);
        let sink = TableSink::default();
        let config = config(|c| c.commit.interval = interval);
        let started = Instant::now();
        let mut pipeline = start(config, &broker, &sink, &[(0, 0)]);

        broker.append(0, 1);
        let first = eventually("a commit of 1", || {
            let commits = broker.commits();
            (!commits.is_empty(), commits)
        });
        assert_eq!(first[0].offsets, vec![(0, 1)]);
        assert!(
            first[0].at >= started + interval,
            "committed {:?} after the start, before the interval",
            first[0].at - started
        );

        broker.append(0, 1);
        let commits = eventually("a commit of 2", || {
            let commits = broker.commits();
            (commits.len() > 1, commits)
        });
        assert_eq!(commits[1].offsets, vec![(0, 2)]);
        // Half the interval: the coordinator's clock starts a little before
        // the fake's, and a loaded machine may run it late, never early.
        let gap = commits[1].at - commits[0].at;
        assert!(gap >= interval / 2, "commits only {gap:?} apart");

        // Nothing new since: a stop sends nothing.
        let (ending, _) = pipeline.stop();
        assert_eq!(ending, Ending::Clean);
        assert_eq!(broker.commits().len(), 2, "{:?}", broker.commits());
    }

    #[test]
    fn a_stop_commits_what_was_applied_and_leaves_a_hung_write_behind_after_the_timeout() {
        let shutdown_timeout = Duration::from_millis(500);
        let broker = FakeBroker::new(5);
        broker.log(0, 0, 10);
        broker.log(1, 0, 10);
        // Partition 0's second write (5..10) does not return.
        let sink = TableSink::hanging_past(0, 5);
        let config = config(|c| c.worker.shutdown_timeout = shutdown_timeout);
        let mut pipeline = start(config, &broker, &sink, &[(0, 0), (1, 0)]);
        pipeline.until_applied(&[(0, 5), (1, 10)]);
        eventually("partition 0 hanging in a write", || {
            let hung = sink.table().hung.clone();
            (hung == [0], hung)
        });
        pipeline.a_few_turns();
        assert_eq!(broker.commits(), vec![], "no commit due before the stop");

        let (ending, took) = pipeline.stop();
        assert_eq!(ending, Ending::Clean);
        // It waited for the hung worker until the timeout, not longer.
        assert!(took >= shutdown_timeout, "stop took only {took:?}");
        assert!(
            took < shutdown_timeout + Duration::from_secs(5),
            "stop took {took:?}"
        );
        let offsets: Vec<_> = broker.commits().into_iter().map(|c| c.offsets).collect();
        assert_eq!(offsets, vec![vec![(0, 5), (1, 10)]]);

        // Let the left-behind worker thread end.
        sink.script(|t| {
            t.hanging_past.clear();
        });
    }

    #[test]
    fn a_partition_whose_fetch_fails_backs_off_alone() {
        let broker = FakeBroker::new(3);
        broker.log(0, 0, 10);
        broker.log(1, 0, 10);
        broker.fail_fetches(0, u32::MAX);
        let sink = TableSink::default();
        let mut pipeline = start(config(|_| {}), &broker, &sink, &[(0, 0), (1, 0)]);
        // Partition 1 reads its whole log while partition 0 keeps failing.
        pipeline.until_applied(&[(1, 10)]);
        let retried = eventually("partition 0 retried, at its offset", || {
            let fetched = broker.fetches_of(0);
            (fetched.len() >= 3, fetched)
        });
        assert!(retried.iter().all(|&o| o == 0), "{retried:?}");
        assert!(rows(&sink, 0).is_empty());

        // The leader is back: partition 0 goes on from where it was.
        broker.fail_fetches(0, 0);
        pipeline.until_applied(&[(0, 10)]);
        let (ending, _) = pipeline.stop();
        assert_eq!(ending, Ending::Clean);
        assert_eq!(rows(&sink, 0), (0..10).collect::<Vec<_>>());
        assert_eq!(rows(&sink, 1), (0..10).collect::<Vec<_>>());
        // Each failure reloads the metadata.
        assert!(broker.metadata_reloads() >= retried.len() as u64);
        assert_eq!(broker.committed(), [(0, 10), (1, 10)].into());
    }
}
