//! librdkafka (through `rdkafka`), the default client: Kafka 0.11 to 4.x,
//! TLS and SASL, every codec, transactional topics read committed.
//!
//! One `BaseConsumer`, driven by the coordinator thread alone: no async
//! runtime. Offsets are committed only by `commit`
//! (`enable.auto.commit=false`), synchronously, to the consumer group, so that
//! Kafka's own lag tools keep working.
//!
//! Static assignment: no group membership; a partition is assigned at its
//! first fetch, at the offset the coordinator asks for. Group assignment:
//! the consumer subscribes with `cooperative-sticky`, and `Context::rebalance`
//! neither assigns nor unassigns: it queues the event for the coordinator,
//! which completes it with `assign` or `unassign` once its workers are
//! started or stopped. librdkafka allows that call after the callback has
//! returned: the group waits in its `WAIT_ASSIGN_CALL` or
//! `WAIT_UNASSIGN_CALL` state (librdkafka's `rdkafka_cgrp.c`) while the
//! consumer keeps being polled, as confluent-kafka-go does with
//! `go.application.rebalance.enable`.
//!
//! Each partition's messages come through a queue of its own
//! (`rd_kafka_queue_get_partition`), so every error stays tied to its
//! partition: with `auto.offset.reset=error`, an offset out of range arrives
//! on that partition's queue alone and the coordinator decides where the
//! partition goes, exactly as for the other client. A partition the
//! coordinator does not fetch (its worker's queue is full) is not read;
//! librdkafka then stops prefetching it once `queued.max.messages.kbytes` is
//! queued, which bounds the client's memory per partition. That bound and
//! the fetch size are the client's part of the memory budget divided by the
//! topic's partitions (`budget.rs`), read from the topic's metadata at
//! connect: the client is made a second time when they differ from the
//! first guess.
//!
//! `enable.partition.eof` tells where a partition's log ends as librdkafka
//! read it: past transaction markers and aborted records, which are not
//! records, so the committed offset reaches the log end.
//!
//! The partition queues use librdkafka's C API directly (`rdkafka::bindings`):
//! `rdkafka`'s own partition queue reports an error without its offset and
//! an end of partition without where it is.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ffi::{c_void, CStr, CString};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, info, warn};
use rdkafka::bindings as rdsys;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::{
    Broker, FetchOutcome, FetchRequest, GroupMember, GroupView, LogBounds, PartitionFetch,
    Rebalance,
};
use crate::budget::Budget;
use crate::config::Config;
use crate::error::Error;
use crate::record::Record;

/// How long a metadata or offsets request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the topic's id may take: it is asked every few seconds by the
/// coordinator, which must not stall long on a broker that does not answer.
const TOPIC_ID_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a commit may take: the coordinator waits for it, and a stop
/// must not wait long on a broker that does not answer.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Commit metadata that names the topic's id, so that offsets committed for
/// a topic that was deleted since are not taken for the new topic's.
const TOPIC_ID_PREFIX: &str = "kafka2mysql topic_id=";
/// Messages taken from a partition queue in one call.
const CONSUME_BATCH: usize = 512;
/// The same librdkafka error is logged again after this long at the earliest.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// How long a partition of the rotation's window gathers records before it
/// hands out fewer than a write's worth (see `Rotation`).
const GATHER_WAIT: Duration = Duration::from_millis(20);
/// A partition of the rotation's window that the coordinator has not asked
/// for this long (its worker is blocked, or waits long for a connection)
/// makes way for the next (see `Rotation`).
const IDLE_IN_WINDOW: Duration = Duration::from_millis(500);

/// Receives librdkafka's log lines and errors: logged through `log`, an
/// error repeated no more than once a minute, and the last one kept so that
/// a failed connect can say why.
#[derive(Default)]
pub struct Context {
    last_error: Mutex<Option<(RDKafkaErrorCode, String, Instant)>>,
    /// The last error that only the operator can mend (refused credentials,
    /// a failed TLS handshake, a missing ACL): kept even when "all brokers
    /// down" follows it.
    setup_error: Mutex<Option<String>>,
    /// Group assignment: the rebalances the coordinator has not taken yet.
    rebalances: Mutex<VecDeque<Rebalance>>,
}

impl Context {
    fn last_error(&self) -> Option<(RDKafkaErrorCode, String)> {
        self.last_error
            .lock()
            .ok()?
            .as_ref()
            .map(|(c, r, _)| (*c, r.clone()))
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                warn!("librdkafka {facility}: {message}")
            }
            RDKafkaLogLevel::Warning | RDKafkaLogLevel::Notice => {
                info!("librdkafka {facility}: {message}")
            }
            RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
                debug!("librdkafka {facility}: {message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
        if is_setup_error(code) {
            if let Ok(mut setup) = self.setup_error.lock() {
                *setup = Some(reason.to_string());
            }
        }
        let Ok(mut last) = self.last_error.lock() else {
            return;
        };
        let now = Instant::now();
        let repeated = last.as_ref().is_some_and(|(c, r, at)| {
            *c == code && r == reason && now.duration_since(*at) < ERROR_LOG_INTERVAL
        });
        if !repeated {
            warn!("kafka: {reason}");
            *last = Some((code, reason.to_string(), now));
        }
    }
}

/// Group assignment: each rebalance is queued for the coordinator, which
/// completes it (see the module doc); nothing is assigned or unassigned here.
impl ConsumerContext for Context {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        list: &mut TopicPartitionList,
    ) {
        let partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
        let rebalance = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assigned(partitions),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoked {
                partitions,
                lost: consumer.assignment_lost(),
            },
            other => {
                warn!("kafka: rebalance failed: {}", RDKafkaErrorCode::from(other));
                return;
            }
        };
        debug!("kafka: rebalance {rebalance:?}");
        if let Ok(mut queue) = self.rebalances.lock() {
            queue.push_back(rebalance);
        }
    }
}

/// Errors that retrying does not mend: the operator must.
fn is_setup_error(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SSL
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
    )
}

/// What was taken from a partition queue, in log order.
enum Item {
    Record(Record),
    /// The end of the partition's readable log, as librdkafka fetched it.
    End(i64),
    Error {
        code: RDKafkaErrorCode,
        text: String,
    },
}

/// A partition's own queue (`rd_kafka_queue_get_partition`, no longer
/// forwarded to the consumer's queue), with a callback that tells the
/// fetching thread which partition's queue stopped being empty.
struct PartitionQueue {
    queue: *mut rdsys::rd_kafka_queue_t,
    /// Kept alive for the callback; freed after the callback is removed.
    wakeup: *mut Wakeup,
    /// Records keep their timestamps (`Record::with_timestamp`).
    timestamps: bool,
    /// Group assignment: messages are taken one by one (see `take`).
    one_by_one: bool,
}

/// The partition a queue belongs to, and where to say it has messages.
type Wakeup = (i32, Sender<i32>);

// SAFETY: librdkafka queues are thread-safe; the coordinator thread alone
// uses this one, and the callback only reads the `Wakeup`, which is `Sync`.
unsafe impl Send for PartitionQueue {}

/// Called by librdkafka when a message is queued on an empty partition
/// queue: the partition is ready to be taken from.
unsafe extern "C" fn wake(_rk: *mut rdsys::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Box<Wakeup>` of a live `PartitionQueue`;
    // the callback is removed before that box is freed.
    let (partition, sender) = unsafe { &*(opaque as *const Wakeup) };
    // Unbounded: never blocks librdkafka's thread.
    let _ = sender.send(*partition);
}

impl PartitionQueue {
    fn new(
        rk: *mut rdsys::rd_kafka_t,
        topic: &CStr,
        partition: i32,
        wakeup: Sender<i32>,
        timestamps: bool,
        one_by_one: bool,
    ) -> Option<PartitionQueue> {
        // SAFETY: `rk` is a live consumer handle and `topic` a C string.
        let queue = unsafe { rdsys::rd_kafka_queue_get_partition(rk, topic.as_ptr(), partition) };
        if queue.is_null() {
            return None;
        }
        let wakeup: *mut Wakeup = Box::into_raw(Box::new((partition, wakeup)));
        // SAFETY: `queue` was just returned by librdkafka; `wakeup` lives
        // until `drop` removes the callback.
        unsafe {
            rdsys::rd_kafka_queue_forward(queue, std::ptr::null_mut());
            rdsys::rd_kafka_queue_cb_event_enable(queue, Some(wake), wakeup as *mut c_void);
        }
        Some(PartitionQueue {
            queue,
            wakeup,
            timestamps,
            one_by_one,
        })
    }

    /// Messages (and events) queued now.
    fn len(&self) -> usize {
        // SAFETY: a live queue.
        unsafe { rdsys::rd_kafka_queue_length(self.queue) }
    }

    /// Destroys what is queued now without copying it out (static
    /// assignment: the batch call, as `take`).
    fn discard(&mut self) {
        while self.consume_batch(|_| {}) > 0 {}
    }

    /// Takes up to `CONSUME_BATCH` messages queued now in one call, hands
    /// each to `each`, and destroys it; how many there were.
    fn consume_batch(&mut self, mut each: impl FnMut(&rdsys::rd_kafka_message_t)) -> usize {
        let mut messages: [*mut rdsys::rd_kafka_message_t; CONSUME_BATCH] =
            [std::ptr::null_mut(); CONSUME_BATCH];
        // SAFETY: the array has room for CONSUME_BATCH pointers.
        let n = unsafe {
            rdsys::rd_kafka_consume_batch_queue(self.queue, 0, messages.as_mut_ptr(), CONSUME_BATCH)
        };
        let n = n.max(0) as usize;
        for &message in &messages[..n] {
            // SAFETY: librdkafka returned `n` valid messages, each destroyed
            // once, right after `each` has seen it.
            unsafe {
                each(&*message);
                rdsys::rd_kafka_message_destroy(message);
            }
        }
        n
    }

    /// Takes what is queued now (at most `CONSUME_BATCH` messages), without
    /// waiting.
    ///
    /// A group member takes them one by one: librdkafka pauses and resumes
    /// every partition at each rebalance, and resumes at the position after
    /// the last message the application took. The batch call counts an end
    /// of partition (or an error) at offset N as a message taken there, so
    /// the partition resumed at N + 1 and the record at N was never fetched
    /// (seen in tests: one record lost per kept partition at each
    /// rebalance, or a resume past the log end). `rd_kafka_consume_queue`
    /// moves the position for records only.
    fn take(&mut self, into: &mut VecDeque<Item>) -> usize {
        if self.one_by_one {
            let mut n = 0;
            while n < CONSUME_BATCH {
                // SAFETY: a live queue; the message is destroyed once, right
                // after it is copied.
                unsafe {
                    let message = rdsys::rd_kafka_consume_queue(self.queue, 0);
                    if message.is_null() {
                        break;
                    }
                    into.push_back(item_of(&*message, self.timestamps));
                    rdsys::rd_kafka_message_destroy(message);
                }
                n += 1;
            }
            return n;
        }
        let timestamps = self.timestamps;
        // SAFETY: a message returned by librdkafka, not yet destroyed.
        self.consume_batch(|message| into.push_back(unsafe { item_of(message, timestamps) }))
    }
}

/// Rotation: takes the partition's queue into its carry until it holds
/// `target` bytes; false while it holds fewer, has not reached the log end
/// or an error, and has gathered for less than `GATHER_WAIT`. What the
/// carry holds is counted once, as it comes (`Gathering`).
fn gathered(reader: &mut Reader, target: usize) -> bool {
    let gathering = reader.gathering.get_or_insert_with(Gathering::default);
    loop {
        for item in reader.carry.range(gathering.counted..) {
            match item {
                Item::Record(r) => gathering.bytes += r.size(),
                Item::End(_) | Item::Error { .. } => gathering.done = true,
            }
        }
        gathering.counted = reader.carry.len();
        if gathering.bytes >= target || gathering.done {
            break;
        }
        if reader.queue.take(&mut reader.carry) == 0 {
            let now = Instant::now();
            let since = *gathering.since.get_or_insert(now);
            if now.duration_since(since) < GATHER_WAIT {
                return false;
            }
            break;
        }
    }
    reader.gathering = None;
    true
}

/// Copies a message out of librdkafka's buffers, with its timestamp when
/// `timestamps` (a metadata column wants it).
///
/// # Safety
/// `m` must be a message returned by librdkafka and not yet destroyed.
unsafe fn item_of(m: &rdsys::rd_kafka_message_t, timestamps: bool) -> Item {
    let bytes = |ptr: *mut c_void, len: usize| -> &[u8] {
        if ptr.is_null() || len == 0 {
            &[]
        } else {
            // SAFETY: librdkafka guarantees `len` readable bytes at `ptr`.
            unsafe { std::slice::from_raw_parts(ptr as *const u8, len) }
        }
    };
    match m.err {
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR if timestamps => {
            let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
            // SAFETY: a message returned by librdkafka, as above; -1 when
            // it has no timestamp.
            let timestamp = unsafe { rdsys::rd_kafka_message_timestamp(m, &mut kind) };
            Item::Record(Record::with_timestamp(
                m.offset,
                bytes(m.key, m.key_len),
                bytes(m.payload, m.len),
                timestamp,
            ))
        }
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR => Item::Record(Record::new(
            m.offset,
            bytes(m.key, m.key_len),
            bytes(m.payload, m.len),
        )),
        RDKafkaRespErr::RD_KAFKA_RESP_ERR__PARTITION_EOF => Item::End(m.offset),
        err => {
            // SAFETY: the error string lives as long as the message.
            let text = unsafe { CStr::from_ptr(rdsys::rd_kafka_message_errstr(m)) }
                .to_string_lossy()
                .into_owned();
            Item::Error {
                code: err.into(),
                text,
            }
        }
    }
}

impl Drop for PartitionQueue {
    fn drop(&mut self) {
        // SAFETY: the callback goes first, so that it can no longer run when
        // its `Sender` is freed; the queue is destroyed once.
        unsafe {
            rdsys::rd_kafka_queue_cb_event_enable(self.queue, None, std::ptr::null_mut());
            rdsys::rd_kafka_queue_destroy(self.queue);
            drop(Box::from_raw(self.wakeup));
        }
    }
}

/// The queue a commit's answer comes on. librdkafka keeps a destroyed
/// queue alive for an answer that comes late, so an abandoned commit's
/// queue is simply dropped.
struct CommitQueue(*mut rdsys::rd_kafka_queue_t);

// SAFETY: librdkafka queues are thread-safe; the coordinator thread alone
// uses this one.
unsafe impl Send for CommitQueue {}

impl Drop for CommitQueue {
    fn drop(&mut self) {
        // SAFETY: the queue was made by `rd_kafka_queue_new` and is
        // destroyed once, here.
        unsafe { rdsys::rd_kafka_queue_destroy(self.0) }
    }
}

/// One assigned partition.
struct Reader {
    queue: PartitionQueue,
    /// Where the next item taken from `carry` or the queue is in the log: the
    /// coordinator asks for this offset unless it moved the partition.
    position: i64,
    /// Taken from the queue, not yet handed out (an error stops a fetch; what
    /// came after it waits here).
    carry: VecDeque<Item>,
    /// An offset out of range stops librdkafka's fetcher: the next request
    /// seeks even to the same offset.
    must_seek: bool,
    /// Rotation: bytes handed out since the partition entered the window.
    handed: usize,
    /// Rotation: the last thing handed out was the end of the log.
    at_end: bool,
    /// Rotation: when the coordinator last asked for the partition.
    last_asked: Instant,
    /// Rotation: the partition gathers records to hand out (`gathered`).
    gathering: Option<Gathering>,
}

/// What a partition's carry holds while it gathers: nothing is taken from
/// the carry meanwhile, so only what came since is counted each turn.
#[derive(Default)]
struct Gathering {
    /// Since when its queue was first found empty.
    since: Option<Instant>,
    /// The items of the carry counted, their records' bytes, and whether
    /// an end of the log or an error is among them.
    counted: usize,
    bytes: usize,
    done: bool,
}

impl Reader {
    /// Drops what was taken from the queue and not handed out.
    fn clear_carry(&mut self) {
        self.carry.clear();
        self.gathering = None;
    }
}

/// Many partitions, static assignment (`budget.rs`): librdkafka fetches
/// only `window` partitions at a time, with fetches sized for the window,
/// so that each fetch moves many records and each write is large. A
/// partition leaves the window once it has been handed `quantum` bytes and
/// its queue is empty (or twice that, whatever its queue holds), once it
/// has reached the log end, or once the coordinator has not asked for it
/// for `IDLE_IN_WINDOW`. It is paused, which drops what librdkafka queued
/// for it, and the next partition in turn enters at the position handed out
/// last: a seek, then a resume (a pause rewinds to what the application
/// took from librdkafka, and the batch call counts an end of partition as
/// taken: see `PartitionQueue::take`). A partition enters at its first
/// fetch by being assigned.
///
/// Without a backlog the window costs latency and saves nothing: a record
/// waits for its partition's turn. Once as many partitions in a row as are
/// asked for have left the window at their log end, each handed less than
/// a fetch in its turn, the window opens: every partition is read at once,
/// and records are handed out as they come, without gathering. It closes
/// again, on the partitions with records waiting, as soon as the records
/// queued in librdkafka come to more than the window's share of the budget
/// (counted in messages, at the size of those handed out so far), or one
/// partition has been handed `quantum` without its queue running dry, or
/// holds records its worker has not asked for within `IDLE_IN_WINDOW`.
/// While it is open, a response brings at most the window's fetches
/// (`fetch.max.bytes`).
struct Rotation {
    window: usize,
    quantum: usize,
    /// A turn that hands out less than this and ends at the log end is
    /// calm: a fetch.
    calm_below: usize,
    /// Calm turns in a row.
    calm: usize,
    /// Every partition is read at once (no backlog).
    open: bool,
    /// Records and bytes handed out: the size of a record, to count what
    /// librdkafka queues from its message counts.
    handed_records: usize,
    handed_bytes: usize,
    /// What a partition gathers before it hands records out, unless it
    /// reached the log end or `GATHER_WAIT` passed: a write's worth.
    gather: usize,
    /// The partitions in the window.
    active: BTreeSet<i32>,
    /// The partition that entered last: the next in turn enters next.
    last: i32,
}

impl Rotation {
    /// The window's share of the budget: the most bytes librdkafka queues
    /// for it (`gather` for each partition).
    fn share(&self) -> usize {
        self.window * self.gather
    }
}

pub struct Librdkafka {
    /// Declared before `consumer`: the queues must go before the consumer.
    readers: BTreeMap<i32, Reader>,
    /// The answer queue of the commit in flight (`Broker::commit_begin`).
    commit_in_flight: Option<CommitQueue>,
    consumer: BaseConsumer<Context>,
    topic: String,
    topic_c: CString,
    consumer_group: String,
    /// A member of the group (group assignment).
    member: bool,
    fetch_wait: Duration,
    wakeup_sender: Sender<i32>,
    /// Partitions whose queue stopped being empty (`wake`).
    wakeup: Receiver<i32>,
    /// Partitions that may have messages queued: woken, or left with some
    /// at the last take. Only these are taken from, so that a turn costs
    /// the partitions that have something, not all of them.
    ready: BTreeSet<i32>,
    /// The topic's id as last read, written into commits.
    topic_id: Option<String>,
    /// See `Broker::stale_commits`.
    stale_commits: Vec<i32>,
    /// A metadata column holds the records' timestamps (`metadata.rs`).
    timestamps: bool,
    /// The topic's partitions at connect.
    topic_partitions: usize,
    /// Many partitions: those librdkafka fetches now (static assignment).
    rotation: Option<Rotation>,
}

/// What a client is connected for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Only to read the topic's partition count: outside the group.
    Probe,
    /// Static assignment (and the commands): in the group for its offsets,
    /// never subscribed.
    Static,
    /// A member of the group (group assignment).
    Member,
}

impl Librdkafka {
    /// Connects, and reads the topic's metadata: the number of partitions
    /// sets the client's share of the memory budget per partition.
    /// `member`: subscribe to the topic as a member of the group (group
    /// assignment, `broker::join`); the share is then the topic's partitions'
    /// (what one member may come to own).
    pub fn connect(config: &Config, member: bool) -> Result<Librdkafka, Error> {
        let role = if member { Role::Member } else { Role::Static };
        if !member && !config.kafka.partitions.is_empty() {
            return Librdkafka::connect_for(config, config.kafka.partitions.len(), role);
        }
        // The whole topic: its partition count comes first, from a client
        // outside the group. Dropping a client of the group waits for the
        // group to close (about 100 ms, rdkafka's `BaseConsumer::drop`);
        // this one goes at once.
        let partitions = Librdkafka::connect_for(config, 1, Role::Probe)?.topic_partitions;
        Librdkafka::connect_for(config, partitions, role)
    }

    /// Connects with the client's share of the memory budget for
    /// `partitions` partitions.
    fn connect_for(config: &Config, partitions: usize, role: Role) -> Result<Librdkafka, Error> {
        let k = &config.kafka;
        let budget = Budget::new(config, partitions);
        let mut client = ClientConfig::new();
        for (name, value) in &k.properties {
            client.set(name, value);
        }
        client
            .set("bootstrap.servers", k.brokers.join(","))
            .set("client.id", &k.client_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "error")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .set("allow.auto.create.topics", "false")
            .set("max.partition.fetch.bytes", budget.fetch_bytes.to_string())
            .set(
                "fetch.wait.max.ms",
                k.fetch_max_wait.as_millis().to_string(),
            )
            .set("fetch.min.bytes", k.fetch_min_bytes.to_string())
            // Per partition, since each has its own queue: what librdkafka
            // may prefetch for a partition the worker has not taken yet.
            .set(
                "queued.max.messages.kbytes",
                budget.client_queue_kbytes.to_string(),
            )
            // librdkafka keeps prefetching until 100,000 messages wait per
            // partition (its default) or the bytes above: with small records
            // its per-message overhead made the drain's RSS 163 MiB at 8
            // partitions; 4,000 gave 122 MiB and a faster drain
            // (scripts/bench.sh, one run each).
            .set("queued.min.messages", "4000")
            .set("fetch.queue.backoff.ms", "20")
            .set("socket.connection.setup.timeout.ms", "10000")
            .set("security.protocol", k.security_protocol.name());
        if let Some(sasl) = k.sasl() {
            client
                .set("sasl.mechanisms", sasl.mechanism.name())
                .set("sasl.username", sasl.username)
                .set("sasl.password", sasl.password.expose());
        }
        for (name, path) in [
            ("ssl.ca.location", &k.ssl_ca_location),
            ("ssl.certificate.location", &k.ssl_certificate_location),
            ("ssl.key.location", &k.ssl_key_location),
        ] {
            if let Some(path) = path {
                client.set(name, path.to_string_lossy());
            }
        }
        if budget.rotates && !k.properties.contains_key("fetch.max.bytes") {
            // The window's fetches: what one response may bring while the
            // window is open (see `Rotation`). librdkafka refuses less than
            // `message.max.bytes`.
            let message_max_bytes = k
                .properties
                .get("message.max.bytes")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(1_000_000);
            client.set(
                "fetch.max.bytes",
                (budget.window * budget.fetch_bytes)
                    .max(message_max_bytes)
                    .to_string(),
            );
        }
        client.set_log_level(RDKafkaLogLevel::Warning);
        if role != Role::Probe {
            client.set("group.id", &k.group);
        }
        let member = role == Role::Member;
        if member {
            client.set("partition.assignment.strategy", "cooperative-sticky");
            if let Some(id) = &k.group_instance_id {
                client.set("group.instance.id", id);
            }
        }
        let consumer: BaseConsumer<Context> = client
            .create_with_context(Context::default())
            .map_err(|e| {
                Error::Setup(format!("kafka: librdkafka refused the configuration: {e}"))
            })?;
        let (wakeup_sender, wakeup) = crossbeam_channel::unbounded();
        let mut broker = Librdkafka {
            readers: BTreeMap::new(),
            commit_in_flight: None,
            consumer,
            topic: k.topic.clone(),
            topic_c: CString::new(k.topic.clone()).expect("a topic name has no NUL"),
            consumer_group: k.group.clone(),
            member,
            fetch_wait: k.fetch_max_wait,
            topic_partitions: 0,
            rotation: (budget.rotates && role == Role::Static).then(|| Rotation {
                window: budget.window,
                quantum: budget.partition_cap().max(2 * budget.fetch_bytes),
                calm_below: budget.fetch_bytes,
                calm: 0,
                open: false,
                handed_records: 0,
                handed_bytes: 0,
                gather: budget.client_queue_kbytes * 1024,
                active: BTreeSet::new(),
                last: -1,
            }),
            wakeup_sender,
            wakeup,
            ready: BTreeSet::new(),
            topic_id: None,
            stale_commits: Vec::new(),
            timestamps: config
                .mysql
                .metadata_columns
                .iter()
                .any(|(_, field)| *field == crate::metadata::MetadataField::Timestamp),
        };
        broker.topic_partitions = broker
            .partitions()
            .map_err(|e| broker.explain(e, &k.brokers))?
            .len();
        if role == Role::Probe {
            return Ok(broker);
        }
        broker.topic_id = broker.describe_topic_id()?;
        if member {
            broker.consumer.subscribe(&[&k.topic])?;
        }
        Ok(broker)
    }

    /// A failed request says little ("timed out"); librdkafka's last error
    /// says why (refused credentials, a TLS failure). Those are setup errors.
    fn explain(&self, error: Error, brokers: &[String]) -> Error {
        // Errors reach the context only while the consumer's queue is
        // served, and they may be queued a moment after the failed request.
        let context = self.consumer.context();
        for _ in 0..20 {
            if context.setup_error.lock().is_ok_and(|e| e.is_some()) {
                break;
            }
            if let Some(Err(e)) = self.consumer.poll(Duration::from_millis(100)) {
                debug!("kafka: {e}");
            }
        }
        if let Some(reason) = context.setup_error.lock().ok().and_then(|e| e.clone()) {
            return Error::Setup(format!("kafka brokers {brokers:?}: {reason}"));
        }
        match context.last_error() {
            Some((_, reason)) => Error::Librdkafka(format!(
                "{error}; last error from the brokers {brokers:?}: {reason}"
            )),
            None => error,
        }
    }

    /// Serves the consumer's own queue (errors not tied to a partition are
    /// logged by the context).
    fn serve(&self) {
        while let Some(result) = self.consumer.poll(Duration::ZERO) {
            match result {
                Ok(m) => debug!(
                    "kafka: message of partition {} on the main queue, left out",
                    rdkafka::Message::partition(&m)
                ),
                Err(e) => debug!("kafka: {e}"),
            }
        }
    }

    /// Opens a partition's own queue, before the partition is assigned, so
    /// that none of its messages reach the consumer's queue.
    fn open_reader(&mut self, partition: i32, offset: i64) -> Result<(), Error> {
        let queue = PartitionQueue::new(
            self.consumer.client().native_ptr(),
            &self.topic_c,
            partition,
            self.wakeup_sender.clone(),
            self.timestamps,
            self.member,
        )
        .ok_or_else(|| Error::Librdkafka(format!("no queue for partition {partition}")))?;
        self.ready.insert(partition);
        self.readers.insert(
            partition,
            Reader {
                queue,
                position: offset,
                carry: VecDeque::new(),
                must_seek: false,
                handed: 0,
                at_end: false,
                last_asked: Instant::now(),
                gathering: None,
            },
        );
        Ok(())
    }

    /// Assigns partitions not yet read and moves those the coordinator moved.
    fn position(&mut self, requests: &[FetchRequest]) -> Result<(), Error> {
        let mut assign = TopicPartitionList::new();
        for r in requests {
            if let Some(rotation) = &self.rotation {
                if !rotation.active.contains(&r.partition) {
                    // Out of the window: it enters at the position asked.
                    if let Some(reader) = self.readers.get_mut(&r.partition) {
                        if reader.position != r.offset {
                            reader.position = r.offset;
                            reader.clear_carry();
                        }
                    }
                    continue;
                }
            }
            match self.readers.get_mut(&r.partition) {
                None => {
                    self.open_reader(r.partition, r.offset)?;
                    assign.add_partition_offset(
                        &self.topic,
                        r.partition,
                        Offset::Offset(r.offset),
                    )?;
                }
                Some(reader) if reader.position != r.offset || reader.must_seek => {
                    debug!(
                        "kafka: partition {} moves from {} to {}",
                        r.partition, reader.position, r.offset
                    );
                    let seek = self.consumer.seek(
                        &self.topic,
                        r.partition,
                        Offset::Offset(r.offset),
                        REQUEST_TIMEOUT,
                    );
                    match seek {
                        Ok(()) => {}
                        // A fetcher stopped by an offset out of range takes
                        // no seek. A static client is made again; a member
                        // keeps its client (see `Broker::rebalance`) and
                        // assigns the partition again instead.
                        Err(e) if self.member => {
                            debug!(
                                "kafka: partition {}: {e}; assigned again at {}",
                                r.partition, r.offset
                            );
                            let mut list = TopicPartitionList::new();
                            list.add_partition(&self.topic, r.partition);
                            self.consumer.incremental_unassign(&list)?;
                            list.set_all_offsets(Offset::Offset(r.offset))?;
                            self.consumer.incremental_assign(&list)?;
                        }
                        Err(e) => return Err(e.into()),
                    }
                    reader.position = r.offset;
                    reader.clear_carry();
                    reader.must_seek = false;
                    self.ready.insert(r.partition);
                }
                Some(_) => {}
            }
        }
        if assign.count() > 0 {
            self.consumer.incremental_assign(&assign)?;
        }
        Ok(())
    }

    /// Moves the rotation's window (see `Rotation`).
    fn rotate(&mut self, requests: &[FetchRequest]) -> Result<(), Error> {
        let Some(mut rotation) = self.rotation.take() else {
            return Ok(());
        };
        let result = self.rotate_window(&mut rotation, requests);
        self.rotation = Some(rotation);
        result
    }

    fn rotate_window(
        &mut self,
        rotation: &mut Rotation,
        requests: &[FetchRequest],
    ) -> Result<(), Error> {
        let now = Instant::now();
        let asked = |p: i32| requests.binary_search_by_key(&p, |r| r.partition).is_ok();
        let mut leaving = Vec::new();
        // Open window: partitions with a backlog, and with records waiting
        // (with how many messages librdkafka queues for them).
        let mut backlog = Vec::new();
        let mut waiting = Vec::new();
        let mut queued = 0;
        for &p in &rotation.active {
            let drained = !self.has_records(p);
            let Some(reader) = self.readers.get_mut(&p) else {
                leaving.push(p);
                continue;
            };
            if asked(p) {
                reader.last_asked = now;
            }
            let idle = now.duration_since(reader.last_asked) >= IDLE_IN_WINDOW;
            if rotation.open {
                if !drained {
                    queued += reader.carry.len() + reader.queue.len();
                }
                if reader.handed >= rotation.quantum || (idle && !drained) {
                    backlog.push(p);
                } else if drained {
                    reader.handed = 0;
                } else {
                    waiting.push(p);
                }
                continue;
            }
            if (drained && (reader.at_end || reader.handed >= rotation.quantum))
                || reader.handed >= 2 * rotation.quantum
                || idle
            {
                leaving.push(p);
                let calm = drained && reader.at_end && reader.handed < rotation.calm_below;
                rotation.calm = if calm && !idle { rotation.calm + 1 } else { 0 };
            }
        }
        // Until records were handed out, a record is taken for a kilobyte.
        let record_bytes = match rotation.handed_records {
            0 => 1024,
            n => rotation.handed_bytes / n,
        };
        if rotation.open && queued * record_bytes > rotation.share() {
            debug!(
                "kafka: about {} bytes queued for {} partitions, more than the window's {}",
                queued * record_bytes,
                waiting.len() + backlog.len(),
                rotation.share()
            );
            backlog.append(&mut waiting);
        }
        if rotation.open && !backlog.is_empty() {
            // The window closes on the partitions with records waiting,
            // those with a backlog first.
            debug!(
                "kafka: partitions {backlog:?} have a backlog: {} partitions are read at a time again",
                rotation.window
            );
            let kept: BTreeSet<i32> = backlog
                .iter()
                .chain(&waiting)
                .copied()
                .take(rotation.window)
                .collect();
            leaving.extend(rotation.active.iter().filter(|p| !kept.contains(p)));
            leaving.sort_unstable();
            leaving.dedup();
            for p in &kept {
                if let Some(reader) = self.readers.get_mut(p) {
                    reader.handed = 0;
                }
            }
            rotation.open = false;
            rotation.calm = 0;
            rotation.last = kept.last().copied().unwrap_or(rotation.last);
        } else if !rotation.open && rotation.calm >= requests.len().max(rotation.window) {
            rotation.open = true;
            rotation.calm = 0;
            debug!("kafka: no partition has a backlog: every partition is read at once");
        }
        if !leaving.is_empty() {
            debug!("kafka: partitions {leaving:?} leave the window");
            self.consumer
                .pause(&self.partition_list(&leaving, Offset::Invalid)?)?;
            for p in &leaving {
                rotation.active.remove(p);
                self.ready.remove(p);
                if let Some(reader) = self.readers.get_mut(p) {
                    reader.clear_carry();
                    // What librdkafka queued goes now, not when the
                    // partition is back (it keeps the responses it came in).
                    reader.queue.discard();
                }
            }
        }
        let room = if rotation.open {
            usize::MAX
        } else {
            rotation.window.saturating_sub(rotation.active.len())
        };
        if room == 0 {
            return Ok(());
        }
        let start = requests.partition_point(|r| r.partition <= rotation.last);
        let entering: Vec<FetchRequest> = requests[start..]
            .iter()
            .chain(&requests[..start])
            .filter(|r| !rotation.active.contains(&r.partition))
            .take(room)
            .copied()
            .collect();
        let mut assign = TopicPartitionList::new();
        let mut seek = TopicPartitionList::new();
        let mut resume = Vec::new();
        for r in &entering {
            if !self.readers.contains_key(&r.partition) {
                self.open_reader(r.partition, r.offset)?;
                assign.add_partition_offset(&self.topic, r.partition, Offset::Offset(r.offset))?;
            } else {
                seek.add_partition_offset(&self.topic, r.partition, Offset::Offset(r.offset))?;
                resume.push(r.partition);
            }
            let reader = self.readers.get_mut(&r.partition).expect("opened");
            reader.position = r.offset;
            reader.clear_carry();
            reader.must_seek = false;
            reader.handed = 0;
            reader.at_end = false;
            reader.last_asked = Instant::now();
            rotation.active.insert(r.partition);
            rotation.last = r.partition;
            self.ready.insert(r.partition);
        }
        if !entering.is_empty() {
            debug!(
                "kafka: partitions {:?} enter the window",
                entering.iter().map(|r| r.partition).collect::<Vec<_>>()
            );
        }
        if assign.count() > 0 {
            self.consumer.incremental_assign(&assign)?;
        }
        if seek.count() > 0 {
            for sought in self
                .consumer
                .seek_partitions(seek, REQUEST_TIMEOUT)?
                .elements()
            {
                sought.error()?;
            }
        }
        if !resume.is_empty() {
            self.consumer
                .resume(&self.partition_list(&resume, Offset::Invalid)?)?;
        }
        Ok(())
    }

    /// Whether records of `partition` may be waiting: taken from its queue
    /// and not handed out, or its queue woken since it was last found empty.
    fn has_records(&self, partition: i32) -> bool {
        self.ready.contains(&partition)
            || self
                .readers
                .get(&partition)
                .is_some_and(|r| !r.carry.is_empty())
    }

    /// `take` for each request, in the order of the requests.
    fn take_all(&mut self, requests: &[FetchRequest]) -> Vec<PartitionFetch> {
        requests
            .iter()
            .map(|r| PartitionFetch {
                partition: r.partition,
                outcome: self.take(r),
            })
            .collect()
    }

    /// Hands out what the partition has queued, up to the request's bytes.
    fn take(&mut self, request: &FetchRequest) -> FetchOutcome {
        let max_bytes = request.max_bytes;
        let out_of_window = self
            .rotation
            .as_ref()
            .is_some_and(|r| !r.active.contains(&request.partition));
        let has_records = self.has_records(request.partition);
        let Some(reader) = self
            .readers
            .get_mut(&request.partition)
            .filter(|_| !out_of_window)
        else {
            return FetchOutcome::nothing(request.offset);
        };
        if !has_records {
            return FetchOutcome::nothing(reader.position);
        }
        if let Some(rotation) = self.rotation.as_ref().filter(|r| !r.open) {
            if !gathered(reader, max_bytes.min(rotation.gather)) {
                if reader.carry.is_empty() {
                    self.ready.remove(&request.partition);
                }
                return FetchOutcome::nothing(reader.position);
            }
        }
        // The carry is handed out from here on: a count of it would be stale.
        reader.gathering = None;
        let mut records = Vec::new();
        let mut bytes = 0;
        let mut next = reader.position;
        'fill: loop {
            while let Some(item) = reader.carry.front() {
                match item {
                    Item::Record(r) => {
                        if bytes >= max_bytes {
                            break 'fill;
                        }
                        if r.offset >= next {
                            bytes += r.size();
                            next = r.offset + 1;
                            reader.at_end = false;
                            if let Some(Item::Record(r)) = reader.carry.pop_front() {
                                records.push(r);
                            }
                        } else {
                            reader.carry.pop_front();
                        }
                    }
                    // An end past the last record handed out goes alone, next
                    // time: the worker then stores the position it moves to.
                    Item::End(end) if !records.is_empty() && *end > next => break 'fill,
                    Item::End(end) => {
                        next = next.max(*end);
                        reader.carry.pop_front();
                        reader.at_end = true;
                    }
                    Item::Error { .. } if !records.is_empty() || next != reader.position => {
                        break 'fill
                    }
                    Item::Error { .. } => {
                        let Some(Item::Error { code, text }) = reader.carry.pop_front() else {
                            unreachable!()
                        };
                        return match code {
                            RDKafkaErrorCode::OffsetOutOfRange
                            | RDKafkaErrorCode::AutoOffsetReset => {
                                reader.must_seek = true;
                                reader.clear_carry();
                                FetchOutcome::out_of_range()
                            }
                            _ => FetchOutcome::fetch_failed(text),
                        };
                    }
                }
            }
            if bytes >= max_bytes {
                break;
            }
            if reader.queue.take(&mut reader.carry) == 0 {
                // Empty: `wake` says when it is not any more.
                if reader.carry.is_empty() {
                    self.ready.remove(&request.partition);
                }
                break;
            }
        }
        reader.handed += bytes;
        reader.position = next;
        if let Some(rotation) = &mut self.rotation {
            rotation.handed_records += records.len();
            rotation.handed_bytes += bytes;
        }
        let high_watermark = self.cached_high_watermark(request.partition);
        FetchOutcome::Records {
            records,
            next_offset: next,
            high_watermark,
        }
    }

    /// The partition's log end as the last fetch response gave it, without
    /// asking the broker.
    fn cached_high_watermark(&self, partition: i32) -> Option<i64> {
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: a live handle, a C string and two out-parameters.
        let err = unsafe {
            rdsys::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                self.topic_c.as_ptr(),
                partition,
                &mut low,
                &mut high,
            )
        };
        (err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
    }

    /// The topic's id (Kafka 2.8 and later give one), from DescribeTopics.
    fn describe_topic_id(&self) -> Result<Option<String>, Error> {
        let mut names = [self.topic_c.as_ptr()];
        // SAFETY: destroyed once, below, after the request.
        let topics =
            unsafe { rdsys::rd_kafka_TopicCollection_of_topic_names(names.as_mut_ptr(), 1) };
        let op = rdsys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS;
        let send = |rk: *mut rdsys::rd_kafka_t,
                    options: *mut rdsys::rd_kafka_AdminOptions_t,
                    queue: *mut rdsys::rd_kafka_queue_t| {
            // SAFETY: live handles from `admin` and the collection above.
            unsafe { rdsys::rd_kafka_DescribeTopics(rk, topics, options, queue) }
        };
        let answer = self.admin("DescribeTopics", op, TOPIC_ID_TIMEOUT, send, |event| {
            // SAFETY: a live event from `admin`, read before it is destroyed.
            unsafe {
                let result = rdsys::rd_kafka_event_DescribeTopics_result(event);
                let mut count = 0usize;
                let descriptions = rdsys::rd_kafka_DescribeTopics_result_topics(result, &mut count);
                let mut id = Ok(None);
                for i in 0..count {
                    let description = *descriptions.add(i);
                    let error = rdsys::rd_kafka_TopicDescription_error(description);
                    if !error.is_null()
                        && rdsys::rd_kafka_error_code(error)
                            != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
                    {
                        let code: RDKafkaErrorCode = rdsys::rd_kafka_error_code(error).into();
                        id = if code == RDKafkaErrorCode::UnknownTopicOrPartition {
                            Err(Error::NoSuchTopic(self.topic.clone()))
                        } else {
                            Err(Error::Librdkafka(format!("DescribeTopics: {code}")))
                        };
                        continue;
                    }
                    let uuid = rdsys::rd_kafka_TopicDescription_topic_id(description);
                    if !uuid.is_null() {
                        let text = CStr::from_ptr(rdsys::rd_kafka_Uuid_base64str(uuid))
                            .to_string_lossy()
                            .into_owned();
                        // Brokers without topic ids answer the zero id.
                        if text != "AAAAAAAAAAAAAAAAAAAAAA" {
                            id = Ok(Some(text));
                        }
                    }
                }
                id
            }
        });
        // SAFETY: created above, destroyed once.
        unsafe { rdsys::rd_kafka_TopicCollection_destroy(topics) };
        answer
    }

    /// One admin request on a queue of its own: `send` makes it, `read`
    /// reads the event that answers it (not called when none came within
    /// `timeout` or the request failed as a whole); the options, the queue
    /// and the event are destroyed here, once.
    fn admin<T>(
        &self,
        what: &str,
        op: rdsys::rd_kafka_admin_op_t,
        timeout: Duration,
        send: impl FnOnce(
            *mut rdsys::rd_kafka_t,
            *mut rdsys::rd_kafka_AdminOptions_t,
            *mut rdsys::rd_kafka_queue_t,
        ),
        read: impl FnOnce(*mut rdsys::rd_kafka_event_t) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let rk = self.consumer.client().native_ptr();
        // SAFETY: everything made here is destroyed once; the event is read
        // only before it is destroyed.
        unsafe {
            let options = rdsys::rd_kafka_AdminOptions_new(rk, op);
            rdsys::rd_kafka_AdminOptions_set_request_timeout(
                options,
                timeout.as_millis() as i32,
                std::ptr::null_mut(),
                0,
            );
            let queue = rdsys::rd_kafka_queue_new(rk);
            send(rk, options, queue);
            let event = rdsys::rd_kafka_queue_poll(queue, (timeout.as_millis() + 1000) as i32);
            let answer = if event.is_null() {
                Err(Error::Librdkafka(format!("{what}: no answer")))
            } else if rdsys::rd_kafka_event_error(event)
                != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
            {
                let text = CStr::from_ptr(rdsys::rd_kafka_event_error_string(event))
                    .to_string_lossy()
                    .into_owned();
                Err(Error::Librdkafka(format!("{what}: {text}")))
            } else {
                read(event)
            };
            if !event.is_null() {
                rdsys::rd_kafka_event_destroy(event);
            }
            rdsys::rd_kafka_queue_destroy(queue);
            rdsys::rd_kafka_AdminOptions_destroy(options);
            answer
        }
    }

    /// The group's state and members (DescribeConsumerGroups), each member
    /// with the partitions of this topic it owns.
    fn describe_group(&self) -> Result<GroupView, Error> {
        let group = CString::new(self.consumer_group.as_str())
            .map_err(|_| Error::Librdkafka("a group name holds NUL".into()))?;
        let mut names = [group.as_ptr()];
        let op = rdsys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS;
        let send = |rk: *mut rdsys::rd_kafka_t,
                    options: *mut rdsys::rd_kafka_AdminOptions_t,
                    queue: *mut rdsys::rd_kafka_queue_t| {
            // SAFETY: live handles from `admin`; `names` outlives the call.
            unsafe {
                rdsys::rd_kafka_DescribeConsumerGroups(rk, names.as_mut_ptr(), 1, options, queue)
            }
        };
        self.admin(
            "DescribeConsumerGroups",
            op,
            REQUEST_TIMEOUT,
            send,
            |event| {
                // SAFETY: a live event from `admin`; what it holds is read (and
                // copied) before it is destroyed.
                unsafe { self.group_view_of(event) }
            },
        )
    }

    /// # Safety
    /// `event` must be a live DescribeConsumerGroups answer.
    unsafe fn group_view_of(
        &self,
        event: *mut rdsys::rd_kafka_event_t,
    ) -> Result<GroupView, Error> {
        let text = |ptr: *const std::ffi::c_char| {
            if ptr.is_null() {
                String::new()
            } else {
                // SAFETY: librdkafka's strings live as long as the event.
                unsafe { CStr::from_ptr(ptr) }
                    .to_string_lossy()
                    .into_owned()
            }
        };
        let mut view = GroupView::default();
        // SAFETY: every pointer comes from the live event, as librdkafka's
        // accessors return them.
        unsafe {
            let result = rdsys::rd_kafka_event_DescribeConsumerGroups_result(event);
            let mut count = 0usize;
            let groups = rdsys::rd_kafka_DescribeConsumerGroups_result_groups(result, &mut count);
            for i in 0..count {
                let description = *groups.add(i);
                view.state = text(rdsys::rd_kafka_consumer_group_state_name(
                    rdsys::rd_kafka_ConsumerGroupDescription_state(description),
                ));
                for m in 0..rdsys::rd_kafka_ConsumerGroupDescription_member_count(description) {
                    let member = rdsys::rd_kafka_ConsumerGroupDescription_member(description, m);
                    let assignment = rdsys::rd_kafka_MemberDescription_assignment(member);
                    let list = if assignment.is_null() {
                        std::ptr::null()
                    } else {
                        rdsys::rd_kafka_MemberAssignment_partitions(assignment)
                    };
                    let mut partitions = Vec::new();
                    if !list.is_null() {
                        for j in 0..(*list).cnt.max(0) as usize {
                            let e = &*(*list).elems.add(j);
                            if text(e.topic) == self.topic {
                                partitions.push(e.partition);
                            }
                        }
                    }
                    partitions.sort_unstable();
                    let instance =
                        text(rdsys::rd_kafka_MemberDescription_group_instance_id(member));
                    view.members.push(GroupMember {
                        member_id: text(rdsys::rd_kafka_MemberDescription_consumer_id(member)),
                        group_instance_id: (!instance.is_empty()).then_some(instance),
                        host: text(rdsys::rd_kafka_MemberDescription_host(member)),
                        partitions,
                    });
                }
            }
        }
        Ok(view)
    }

    fn partition_list(
        &self,
        partitions: &[i32],
        offset: Offset,
    ) -> Result<TopicPartitionList, Error> {
        let mut list = TopicPartitionList::new();
        for &p in partitions {
            list.add_partition_offset(&self.topic, p, offset)?;
        }
        Ok(list)
    }

    /// ListOffsets for every partition at once: `Offset::Beginning` asks for
    /// the earliest, `Offset::End` for the latest (the last stable offset,
    /// as the consumer reads committed).
    fn list_offsets(&self, partitions: &[i32], which: Offset) -> Result<BTreeMap<i32, i64>, Error> {
        let query = self.partition_list(partitions, which)?;
        let answer = self.consumer.offsets_for_times(query, REQUEST_TIMEOUT)?;
        let mut offsets = BTreeMap::new();
        for e in answer.elements() {
            e.error()?;
            match e.offset() {
                Offset::Offset(o) => {
                    offsets.insert(e.partition(), o);
                }
                other => {
                    return Err(Error::Librdkafka(format!(
                        "partition {}: no offset for {which:?} ({other:?})",
                        e.partition()
                    )))
                }
            }
        }
        Ok(offsets)
    }
}

impl Broker for Librdkafka {
    fn partitions(&mut self) -> Result<Vec<i32>, Error> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), REQUEST_TIMEOUT)?;
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .ok_or_else(|| Error::NoSuchTopic(self.topic.clone()))?;
        match topic.error() {
            None => {}
            Some(e) if RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition => {
                return Err(Error::NoSuchTopic(self.topic.clone()))
            }
            Some(e) => {
                return Err(Error::Librdkafka(format!(
                    "topic {:?}: {}",
                    self.topic,
                    RDKafkaErrorCode::from(e)
                )))
            }
        }
        let mut ids: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
        if ids.is_empty() {
            return Err(Error::NoSuchTopic(self.topic.clone()));
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// librdkafka refreshes its metadata by itself when a leader moves.
    fn reload_metadata(&mut self) -> Result<(), Error> {
        Ok(())
    }

    fn log_bounds(&mut self) -> Result<LogBounds, Error> {
        let partitions = self.partitions()?;
        Ok(LogBounds {
            earliest: self.list_offsets(&partitions, Offset::Beginning)?,
            latest: self.list_offsets(&partitions, Offset::End)?,
        })
    }

    fn committed_offsets(&mut self) -> Result<BTreeMap<i32, Option<i64>>, Error> {
        let partitions = self.partitions()?;
        let query = self.partition_list(&partitions, Offset::Invalid)?;
        let answer = self.consumer.committed_offsets(query, REQUEST_TIMEOUT)?;
        let mut offsets = BTreeMap::new();
        self.stale_commits.clear();
        for e in answer.elements() {
            e.error()?;
            let mut committed = match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o),
                _ => None,
            };
            // An offset committed for an earlier topic of the same name is
            // no position in this one.
            let old_id = e.metadata().strip_prefix(TOPIC_ID_PREFIX);
            if let (Some(old), Some(now), Some(offset)) =
                (old_id, self.topic_id.as_deref(), committed)
            {
                if old != now {
                    warn!(
                        "topic {} partition {}: the committed offset {offset} belongs to a topic of the same name \
                         that was deleted (topic id {old}, now {now}); it is not used",
                        self.topic,
                        e.partition()
                    );
                    committed = None;
                    self.stale_commits.push(e.partition());
                }
            }
            offsets.insert(e.partition(), committed);
        }
        Ok(offsets)
    }

    /// Commits and waits for the answer up to `COMMIT_TIMEOUT`, so that a
    /// broker that does not answer holds the caller no longer than that.
    fn commit(&mut self, offsets: &[(i32, i64)]) -> Result<(), Error> {
        self.commit_begin(offsets)?;
        self.commit_answer(COMMIT_TIMEOUT).unwrap_or_else(|| {
            self.commit_in_flight = None;
            Err(Error::Librdkafka(format!(
                "commit not confirmed within {COMMIT_TIMEOUT:?}"
            )))
        })
    }

    /// The answer comes on a queue of its own (`CommitQueue`).
    fn commit_begin(&mut self, offsets: &[(i32, i64)]) -> Result<(), Error> {
        // An earlier commit's answer is no longer awaited; if it still
        // comes, it goes with its queue.
        self.commit_in_flight = None;
        let metadata = self
            .topic_id
            .as_ref()
            .map(|id| format!("{TOPIC_ID_PREFIX}{id}"));
        let mut list = TopicPartitionList::new();
        for &(p, o) in offsets {
            list.add_partition_offset(&self.topic, p, Offset::Offset(o))?;
            if let (Some(metadata), Some(mut e)) = (&metadata, list.find_partition(&self.topic, p))
            {
                e.set_metadata(metadata.as_str());
            }
        }
        let rk = self.consumer.client().native_ptr();
        // SAFETY: a live handle; the queue is destroyed once, by `CommitQueue`.
        let queue = CommitQueue(unsafe { rdsys::rd_kafka_queue_new(rk) });
        // SAFETY: the list is read during the call only; the queue lives on.
        let err = unsafe {
            rdsys::rd_kafka_commit_queue(rk, list.ptr(), queue.0, None, std::ptr::null_mut())
        };
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(Error::Librdkafka(format!(
                "commit failed: {}",
                RDKafkaErrorCode::from(err)
            )));
        }
        self.commit_in_flight = Some(queue);
        Ok(())
    }

    fn commit_answer(&mut self, wait: Duration) -> Option<Result<(), Error>> {
        let queue = self.commit_in_flight.as_ref()?;
        // SAFETY: the event is read before it is destroyed, once.
        unsafe {
            let event = rdsys::rd_kafka_queue_poll(queue.0, wait.as_millis() as i32);
            if event.is_null() {
                return None;
            }
            let err = rdsys::rd_kafka_event_error(event);
            let partitions = rdsys::rd_kafka_event_topic_partition_list(event);
            let mut failed = None;
            if !partitions.is_null() {
                for i in 0..(*partitions).cnt.max(0) as usize {
                    let e = &*(*partitions).elems.add(i);
                    if e.err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                        failed = Some((e.partition, RDKafkaErrorCode::from(e.err)));
                    }
                }
            }
            rdsys::rd_kafka_event_destroy(event);
            self.commit_in_flight = None;
            Some(match (err, failed) {
                (RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR, None) => Ok(()),
                (_, Some((p, code))) => Err(Error::Librdkafka(format!(
                    "commit failed for partition {p}: {code}"
                ))),
                (err, None) => Err(Error::Librdkafka(format!(
                    "commit failed: {}",
                    RDKafkaErrorCode::from(err)
                ))),
            })
        }
    }

    fn fetch(&mut self, requests: &[FetchRequest]) -> Result<Vec<PartitionFetch>, Error> {
        self.serve();
        self.position(requests)?;
        self.ready.extend(self.wakeup.try_iter());
        self.rotate(requests)?;
        let mut out = self.take_all(requests);
        // Nothing at all: wait for a partition queue to fill, then look again.
        let nothing = out.iter().zip(requests).all(|(f, r)| {
            matches!(&f.outcome, FetchOutcome::Records { records, next_offset, .. }
                if records.is_empty() && *next_offset == r.offset)
        });
        if nothing {
            if let Ok(partition) = self.wakeup.recv_timeout(self.fetch_wait) {
                self.ready.insert(partition);
                self.ready.extend(self.wakeup.try_iter());
                out = self.take_all(requests);
            }
        }
        Ok(out)
    }

    fn probe_fetch(&mut self, partition: i32, offset: i64) -> Result<Option<i64>, Error> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let request = FetchRequest {
            partition,
            offset,
            max_bytes: 1,
        };
        loop {
            let fetched = self.fetch(&[request])?;
            match fetched.into_iter().next().map(|f| f.outcome) {
                Some(FetchOutcome::Records { records, .. }) if !records.is_empty() => return Ok(Some(records[0].offset)),
                Some(FetchOutcome::Records { next_offset, .. }) if next_offset > offset => return Ok(None),
                Some(FetchOutcome::Failed(Error::OffsetOutOfRange)) => return Ok(None),
                Some(FetchOutcome::Failed(reason)) => {
                    return Err(Error::Setup(format!(
                        "topic {} partition {partition}: fetch at offset {offset} failed: {reason}",
                        self.topic
                    )))
                }
                _ if Instant::now() >= deadline => {
                    return Err(Error::Librdkafka(format!(
                        "topic {} partition {partition}: no answer to a fetch at offset {offset} within {REQUEST_TIMEOUT:?}",
                        self.topic
                    )))
                }
                _ => {}
            }
        }
    }

    fn stale_commits(&self) -> Vec<i32> {
        self.stale_commits.clone()
    }

    fn reading(&self, partition: i32) -> bool {
        match &self.rotation {
            None => true,
            // Every partition is read: those with records are lent.
            Some(rotation) if rotation.open => self.has_records(partition),
            Some(rotation) => rotation.active.contains(&partition),
        }
    }

    fn rebalance(&mut self) -> Option<Rebalance> {
        self.serve();
        self.consumer.context().rebalances.lock().ok()?.pop_front()
    }

    fn assign(&mut self, starts: &[(i32, i64)]) -> Result<(), Error> {
        let mut list = TopicPartitionList::new();
        for &(partition, offset) in starts {
            self.open_reader(partition, offset)?;
            list.add_partition_offset(&self.topic, partition, Offset::Offset(offset))?;
        }
        self.consumer.incremental_assign(&list)?;
        Ok(())
    }

    fn unassign(&mut self, partitions: &[i32]) -> Result<(), Error> {
        let list = self.partition_list(partitions, Offset::Invalid)?;
        let result = self.consumer.incremental_unassign(&list);
        // The queues go after the unassign, so that no message of these
        // partitions reaches the consumer's queue meanwhile.
        for p in partitions {
            self.readers.remove(p);
            self.ready.remove(p);
            if let Some(rotation) = &mut self.rotation {
                rotation.active.remove(p);
            }
        }
        Ok(result?)
    }

    /// Closes the consumer through a queue of our own, completing the
    /// revocation that the close starts (every worker has stopped and
    /// committed by then), for at most `COMMIT_TIMEOUT`.
    fn leave_group(&mut self) {
        let rk = self.consumer.client().native_ptr();
        let deadline = Instant::now() + COMMIT_TIMEOUT;
        // SAFETY: the queue is ours and destroyed once; each event is read
        // before it is destroyed; the consumer outlives this call.
        unsafe {
            let queue = rdsys::rd_kafka_queue_new(rk);
            let error = rdsys::rd_kafka_consumer_close_queue(rk, queue);
            if !error.is_null() {
                debug!(
                    "kafka: close: error {:?}",
                    rdsys::rd_kafka_error_code(error)
                );
                rdsys::rd_kafka_error_destroy(error);
            } else {
                while rdsys::rd_kafka_consumer_closed(rk) == 0 && Instant::now() < deadline {
                    let event = rdsys::rd_kafka_queue_poll(queue, 100);
                    if event.is_null() {
                        continue;
                    }
                    if rdsys::rd_kafka_event_type(event) == rdsys::RD_KAFKA_EVENT_REBALANCE {
                        let list = rdsys::rd_kafka_event_topic_partition_list(event);
                        let error = rdsys::rd_kafka_incremental_unassign(rk, list);
                        if !error.is_null() {
                            rdsys::rd_kafka_error_destroy(error);
                        }
                    }
                    rdsys::rd_kafka_event_destroy(event);
                }
                if rdsys::rd_kafka_consumer_closed(rk) == 0 {
                    warn!("kafka: the group was not left within {COMMIT_TIMEOUT:?}; the partitions move after the session timeout");
                } else {
                    info!("kafka: left the group");
                }
            }
            rdsys::rd_kafka_queue_destroy(queue);
        }
        self.readers.clear();
    }

    fn group_view(&mut self) -> Result<Option<GroupView>, Error> {
        self.describe_group().map(Some)
    }

    fn topic_id(&mut self) -> Result<Option<String>, Error> {
        let id = self.describe_topic_id()?;
        if id.is_some() {
            self.topic_id = id.clone();
        }
        Ok(id)
    }
}

impl From<KafkaError> for Error {
    fn from(e: KafkaError) -> Error {
        Error::Librdkafka(e.to_string())
    }
}
