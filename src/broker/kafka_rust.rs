//! The `kafka` crate (0.10), the pure-Rust client, for Kafka 0.10 to 3.9 in
//! plaintext (`kafka.client = "kafka-rust"`).
//!
//! Why `KafkaClient` and not `kafka::consumer::Consumer`: `Consumer::poll`
//! fails the whole poll when one partition reports an error, after it has
//! advanced the positions of the partitions that returned data, so their
//! records would be lost. `fetch` here returns each partition's outcome on
//! its own.
//!
//! The crate speaks Metadata v0, ListOffsets v0, Fetch v0, OffsetCommit v1,
//! OffsetFetch v1 and GroupCoordinator v0. For Fetch v0 the broker converts
//! record batches down to message format v0, dropping what format v0 cannot
//! say: transaction markers (control batches) vanish, and zstd batches are
//! refused.
//!
//! # What the crate gets wrong, and what this module does about it
//!
//! The crate's parser (`MessageSet::from_slice`) decodes messages in order
//! and, at the first compressed wrapper, returns that wrapper's inner
//! messages instead of everything it has decoded: the plain messages before
//! the wrapper are dropped (and those after it, which a later fetch reads
//! again). A codec it lacks (lz4, built without it) fails the whole
//! multi-partition `fetch_messages` call. So this module trusts an answer
//! only when it starts exactly at the requested offset; whenever it does not
//! (records starting further on, nothing although the log goes on, a codec
//! error, an unknown broker error), it *settles* the partition alone:
//!
//! 1. It reads the headers of the record batches at the requested offset
//!    with a Fetch request of its own (`wire`, v4, or v2 for brokers older
//!    than 0.11), which the broker answers without conversion: each batch's
//!    offsets, size in bytes, codec and whether it is a control batch.
//! 2. Leading control batches (transaction markers) are stepped over: they
//!    are not records. The first data batch decides:
//!    - the crate's answer started inside it: nothing was lost, take it;
//!    - its codec is lz4, zstd or unknown: the partition is reported
//!      `Unreadable` at that batch (after stepping over the markers before
//!      it), with the advice to use librdkafka;
//!    - it is larger than the largest fetch allowed: when it is plain
//!      (uncompressed, format v2), its record at the requested offset is
//!      read from the header fetch's answer, which holds the whole first
//!      batch (`wire::Capture`): the record itself when it fits
//!      `max_record_bytes`, else an oversized record with its key, size and
//!      the start of its value; otherwise an oversized record of which
//!      nothing is known but the batch's size;
//!    - otherwise the crate fetches again with exactly the bytes that hold
//!      that batch, and, when it is uncompressed, the uncompressed and
//!      control batches after it up to the next compressed one. Such a
//!      response holds no plain message before a wrapper, so the crate's
//!      answer is exact; when it is empty, those batches hold no record at
//!      or after the requested offset (compacted away) and are stepped over.
//!
//! One more request per settled fetch, two when the crate must fetch again;
//! an answer that starts at the requested offset costs nothing extra.
//!
//! The broker's down-conversion has a defect of its own (seen on Kafka
//! 3.9.1): when the fetched data starts with a batch that converts to
//! nothing (a transaction marker; a batch compacted below the offset), the
//! first batch that converts is sent twice, so the crate returns its records
//! twice. Answers keep only strictly increasing offsets.
//!
//! A multi-partition fetch that fails with the crate's
//! `UnsupportedCompression` is split in halves, recursively, so that only the
//! partition holding the batch is settled and the others get their records.
//!
//! Before the first fetch, `connect` makes one ListOffsets call: Kafka 4.0
//! removed the versions the crate speaks (metadata still answers) and closes
//! the connection; the broker's ApiVersions answer then says which versions
//! it refuses, and `connect` fails with a setup error that names them (exit
//! 2). When ApiVersions does not answer either, one more ListOffsets on new
//! connections decides: a second lost connection is taken as a refusal.
//!
//! Tested against Kafka 3.9.1 and a stand-in for 4.0's refusal; the Fetch v2
//! path of the batch headers (brokers older than 0.11) is untested.
//!
//! # Limits that stay
//!
//! - Reads are uncommitted: records of aborted transactions are read and
//!   written to MySQL like any other (Fetch v0 has no isolation level and no
//!   aborted-transaction list). Transactional topics need librdkafka, which
//!   reads committed.
//! - A null value and an empty value both arrive as an empty slice.
//! - No headers, timestamps or topic ids (message format v0).
//! - The crate's own connections have no connect timeout and a read and
//!   write timeout of 120 s (not configurable): a broker that silently
//!   stops answering holds the coordinator thread that long. `connect`, and
//!   each metadata reload for a leader not seen before, check that the
//!   broker accepts a connection within 10 s before the crate connects to
//!   it, and fail fast otherwise (a technical error: reconnect, backoff). A
//!   broker that goes dark later, or that the crate connects to again after
//!   a connection was idle for 60 s, is waited for.
//! - The crate's commit retries NOT_COORDINATOR and GROUP_LOAD_IN_PROGRESS
//!   without pause and without end once its attempts are spent. `commit`
//!   asks the group's offsets first (that request gives up after its
//!   attempts), so a commit is only sent to a coordinator that just answered;
//!   a coordinator that moves between the two requests can still hold the
//!   commit in that loop until the group settles.
//! - The crate panics (`get_conn_any().expect`) when it must find the group
//!   coordinator and no connection can be opened; that panic is caught and
//!   becomes a technical error.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use kafka::client::{CommitOffset, FetchOffset, FetchPartition, GroupOffsetStorage, KafkaClient};
use kafka::error::KafkaCode;

use super::kafka_wire as wire;
use super::{Broker, FetchOutcome, FetchRequest, LogBounds, PartitionFetch};
use crate::config::Config;
use crate::error::{is_offset_out_of_range, Error};
use crate::record::Record;

/// Connect, read and write timeout of this module's own connections (the
/// reachability checks, ApiVersions, the batch headers).
const WIRE_TIMEOUT: Duration = Duration::from_secs(10);

const ADVICE: &str = "use kafka.client = \"librdkafka\"";

/// The Kafka API versions the crate sends: (API key, name, version).
const CRATE_VERSIONS: &[(i16, &str, i16)] = &[
    (wire::API_METADATA, "Metadata", 0),
    (wire::API_LIST_OFFSETS, "ListOffsets", 0),
    (wire::API_FETCH, "Fetch", 0),
    (wire::API_OFFSET_COMMIT, "OffsetCommit", 1),
    (wire::API_OFFSET_FETCH, "OffsetFetch", 1),
    (wire::API_FIND_COORDINATOR, "GroupCoordinator", 0),
];

pub struct KafkaRust {
    client: KafkaClient,
    /// The bootstrap brokers that accepted a connection at `connect`.
    brokers: Vec<String>,
    topic: String,
    group: String,
    client_id: String,
    fetch_max_bytes: i32,
    fetch_min_bytes: i32,
    fetch_max_wait: Duration,
    /// Past this size a batch is not fetched: its record is read from the
    /// header fetch when the batch is plain, else handed over as oversized
    /// (dead-lettered without its content).
    max_bytes_cap: i32,
    max_record_bytes: usize,
    /// Hosts known to accept a connection.
    reachable: HashSet<String>,
    /// The Fetch version of `wire::Conns::batch_headers`, per broker host.
    header_versions: HashMap<String, i16>,
    /// Whether the broker at a host answers Metadata v10 (topic ids).
    has_topic_ids: HashMap<String, bool>,
    /// This module's own connections.
    wire: wire::Conns,
}

/// What the crate answered for one partition.
enum Answer {
    /// Records at or after the requested offset, and the high watermark.
    Data {
        records: Vec<Record>,
        high_watermark: i64,
    },
    /// The crate met a codec it lacks and refused the response.
    UnsupportedCodec,
    /// The broker reported an error for the partition.
    Failed(Arc<kafka::Error>),
    /// The crate knows no leader for the partition and left it out.
    NoLeader,
}

/// A crate call whose panic becomes an error.
fn guard<T>(call: impl FnOnce() -> kafka::Result<T>) -> kafka::Result<T> {
    panic::catch_unwind(AssertUnwindSafe(call)).unwrap_or_else(|_| {
        Err(kafka::Error::Io(io::Error::other(
            "the kafka crate panicked (no connection to any broker could be opened)",
        )))
    })
}

/// The error of a request the broker closed the connection on: what Kafka
/// does with a request version it does not support.
fn connection_lost(error: &kafka::Error) -> bool {
    match error {
        kafka::Error::Io(e) => matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
        ),
        kafka::Error::ArcSelf(inner) => connection_lost(inner),
        _ => false,
    }
}

/// The versions among the crate's that the broker's ApiVersions answer
/// (key, min, max) does not include, as "ListOffsets v0".
fn refused_versions(supported: &[(i16, i16, i16)]) -> Vec<String> {
    CRATE_VERSIONS
        .iter()
        .filter(|(key, _, version)| {
            !supported
                .iter()
                .any(|(k, min, max)| k == key && min <= version && version <= max)
        })
        .map(|(_, name, version)| format!("{name} v{version}"))
        .collect()
}

fn refused_message(host: &str, refused: &str) -> String {
    format!(
        "the Kafka broker at {host} rejects the protocol versions of kafka.client = \"kafka-rust\" \
         ({refused}: removed in Kafka 4.0); {ADVICE}"
    )
}

/// The name of a codec the crate cannot read, from a batch's attributes.
fn unreadable_codec(codec: u8) -> Option<String> {
    match codec {
        0..=2 => None,
        3 => Some("lz4".to_string()),
        4 => Some("zstd".to_string()),
        other => Some(format!("codec {other}")),
    }
}

fn unreadable_message(codec: &str, offset: i64) -> String {
    format!(
        "the record batch at offset {offset} is compressed with {codec}, which is not readable by \
         kafka.client = \"kafka-rust\"; {ADVICE}"
    )
}

/// Records, reading going on after the last one.
fn records_outcome(records: Vec<Record>, high_watermark: Option<i64>) -> FetchOutcome {
    let next_offset = records.last().map_or(0, |r| r.offset + 1);
    FetchOutcome::Records {
        records,
        next_offset,
        high_watermark,
    }
}

/// No record, reading going on at `next_offset`.
fn step(next_offset: i64, high_watermark: Option<i64>) -> FetchOutcome {
    FetchOutcome::Records {
        records: Vec::new(),
        next_offset,
        high_watermark,
    }
}

/// Fails unless `host` accepts a TCP connection within `WIRE_TIMEOUT`.
fn check_reachable(host: &str) -> io::Result<()> {
    wire::connect(host, WIRE_TIMEOUT).map(drop)
}

impl KafkaRust {
    pub fn connect(config: &Config) -> Result<KafkaRust, Error> {
        let max_record_bytes = config.worker.max_record_bytes;
        let kafka = &config.kafka;
        // The crate connects without a timeout: hand it only the bootstrap
        // brokers that answer.
        let mut brokers = Vec::new();
        let mut last_error = None;
        for host in &kafka.brokers {
            match check_reachable(host) {
                Ok(()) => brokers.push(host.clone()),
                Err(e) => {
                    log::warn!("kafka: broker {host} does not accept a connection: {e}");
                    last_error = Some(format!("{host}: {e}"));
                }
            }
        }
        if brokers.is_empty() {
            return Err(Error::Kafka(kafka::Error::Io(io::Error::new(
                io::ErrorKind::NotConnected,
                format!(
                    "no broker accepts a connection ({})",
                    last_error.unwrap_or_default()
                ),
            ))));
        }
        let largest_allowed = max_record_bytes.max(kafka.fetch_max_bytes_per_partition as usize);
        let mut broker = KafkaRust {
            client: KafkaClient::new(Vec::new()),
            reachable: brokers.iter().cloned().collect(),
            brokers,
            topic: kafka.topic.clone(),
            group: kafka.group.clone(),
            client_id: kafka.client_id.clone(),
            fetch_max_bytes: kafka.fetch_max_bytes_per_partition,
            fetch_min_bytes: kafka.fetch_min_bytes,
            fetch_max_wait: kafka.fetch_max_wait,
            max_bytes_cap: (largest_allowed.saturating_mul(2) + 65_536).min(i32::MAX as usize)
                as i32,
            max_record_bytes,
            header_versions: HashMap::new(),
            has_topic_ids: HashMap::new(),
            wire: wire::Conns::new(&kafka.client_id, WIRE_TIMEOUT),
        };
        broker.client = broker.new_client()?;
        broker.check_protocol()?;
        Ok(broker)
    }

    fn new_client(&self) -> Result<KafkaClient, Error> {
        let mut client = KafkaClient::new(self.brokers.clone());
        client.set_client_id(self.client_id.clone());
        client.set_fetch_max_bytes_per_partition(self.fetch_max_bytes);
        client.set_fetch_min_bytes(self.fetch_min_bytes);
        client.set_fetch_max_wait_time(self.fetch_max_wait)?;
        // The crate checks each message's CRC with a slow bytewise CRC-32 that
        // took a quarter of the coordinator thread (profiled). The check
        // guards nothing here: the crate reads only message format v0, so the
        // broker down-converts every record batch for it and computes each v0
        // CRC afresh from the converted bytes just before sending; a record
        // damaged on the broker's disk gets a valid new CRC, and the socket is
        // covered by TCP's checksum.
        client.set_fetch_crc_validation(false);
        client.set_group_offset_storage(Some(GroupOffsetStorage::Kafka));
        client.set_retry_backoff_time(Duration::from_millis(100));
        client.set_retry_max_attempts(3);
        client.set_connection_idle_timeout(Duration::from_secs(60));
        Ok(client)
    }

    /// `Ok(Some(setup error))` when `host`'s ApiVersions answer leaves out
    /// versions the crate speaks, `Ok(None)` when it has them all, `Err`
    /// when it does not answer.
    fn refusal(&mut self, host: &str) -> io::Result<Option<Error>> {
        let supported = self.wire.api_versions(host).inspect_err(|e| {
            log::debug!("kafka: ApiVersions request to {host} failed: {e}");
        })?;
        let refused = refused_versions(&supported);
        Ok((!refused.is_empty()).then(|| Error::Setup(refused_message(host, &refused.join(", ")))))
    }

    /// One ListOffsets call, the first request after metadata that Kafka 4.0
    /// refuses: it closes the connection. ApiVersions then tells whether the
    /// broker refuses the crate's versions (a setup error) or the connection
    /// was lost for another reason (a technical error, retried). When
    /// ApiVersions does not answer either, one more ListOffsets with new
    /// connections decides. A metadata request the broker closes the
    /// connection on is explained the same way.
    fn check_protocol(&mut self) -> Result<(), Error> {
        let bootstrap = self.brokers[0].clone();
        match self.reload_metadata() {
            Err(Error::Kafka(e)) if connection_lost(&e) => {
                return Err(self
                    .refusal(&bootstrap)
                    .ok()
                    .flatten()
                    .unwrap_or(Error::Kafka(e)));
            }
            other => other?,
        }
        let Some(host) = self.leader_hosts().into_iter().next() else {
            // No partition to ask (the topic is missing, which `partitions`
            // reports, or has no leader yet): ApiVersions alone decides.
            return self.refusal(&bootstrap).ok().flatten().map_or(Ok(()), Err);
        };
        let error = match self.latest_offsets() {
            Ok(_) => return Ok(()),
            Err(e) if connection_lost(&e) => e,
            Err(e) => return Err(e.into()),
        };
        match self.refusal(&host) {
            Ok(Some(refusal)) => return Err(refusal),
            // Nothing refused: the connection was lost for another reason.
            Ok(None) => return Err(error.into()),
            Err(_) => {}
        }
        self.client = self.new_client()?;
        self.reload_metadata()?;
        match self.latest_offsets() {
            Ok(_) => Ok(()),
            Err(e) if connection_lost(&e) => Err(Error::Setup(refused_message(
                &host,
                "ListOffsets v0, Fetch v0",
            ))),
            Err(e) => Err(e.into()),
        }
    }

    fn latest_offsets(&mut self) -> kafka::Result<Vec<kafka::client::PartitionOffset>> {
        let (client, topic) = (&mut self.client, &self.topic);
        guard(|| client.fetch_topic_offsets(topic, FetchOffset::Latest))
    }

    fn offsets(&mut self, which: FetchOffset) -> Result<BTreeMap<i32, i64>, Error> {
        let (client, topic) = (&mut self.client, &self.topic);
        let offsets = guard(|| client.fetch_topic_offsets(topic, which))?;
        Ok(offsets
            .into_iter()
            .map(|p| (p.partition, p.offset))
            .collect())
    }

    /// The distinct hosts leading the topic's partitions, as the metadata says.
    fn leader_hosts(&self) -> Vec<String> {
        let topics = self.client.topics();
        let mut hosts: Vec<String> = topics
            .partitions(&self.topic)
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p.leader().map(|b| b.host().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        hosts.sort_unstable();
        hosts.dedup();
        hosts
    }

    fn leader_host(&self, partition: i32) -> Option<String> {
        let topics = self.client.topics();
        let partitions = topics.partitions(&self.topic)?;
        let leader = partitions.partition(partition)?.leader()?;
        Some(leader.host().to_string())
    }

    /// The crate's answer for each request (same order), each asking for
    /// `max_bytes`. A response the crate refuses for a codec it lacks is
    /// asked again in halves, so that only the partition holding it goes
    /// without records.
    fn answers(&mut self, requests: &[FetchRequest], max_bytes: i32) -> Result<Vec<Answer>, Error> {
        let topic = self.topic.clone();
        let inputs: Vec<FetchPartition<'_>> = requests
            .iter()
            .map(|r| FetchPartition::new(&topic, r.partition, r.offset).with_max_bytes(max_bytes))
            .collect();
        let client = &mut self.client;
        let responses = match guard(|| client.fetch_messages(&inputs)) {
            Ok(responses) => responses,
            Err(kafka::Error::UnsupportedCompression) if requests.len() == 1 => {
                return Ok(vec![Answer::UnsupportedCodec]);
            }
            Err(kafka::Error::UnsupportedCompression) => {
                let (first, second) = requests.split_at(requests.len() / 2);
                let mut answers = self.answers(first, max_bytes)?;
                answers.extend(self.answers(second, max_bytes)?);
                return Ok(answers);
            }
            Err(e) => return Err(e.into()),
        };
        let mut answers: Vec<Answer> = requests.iter().map(|_| Answer::NoLeader).collect();
        for response in &responses {
            for t in response.topics() {
                if t.topic() != topic {
                    continue;
                }
                for p in t.partitions() {
                    let Some(i) = requests.iter().position(|r| r.partition == p.partition()) else {
                        continue;
                    };
                    let offset = requests[i].offset;
                    answers[i] = match p.data() {
                        Ok(data) => {
                            // Sized up front: a batch waits in a worker's queue,
                            // and a grown Vec would hold up to twice its room.
                            let messages = data.messages();
                            let mut records = Vec::with_capacity(messages.len());
                            // Offsets strictly increasing: a message at or below
                            // the last one kept is a duplicate (see the module
                            // documentation on down-conversion).
                            let mut next = offset;
                            records.extend(
                                messages
                                    .iter()
                                    .filter(|m| {
                                        let keep = m.offset >= next;
                                        if keep {
                                            next = m.offset + 1;
                                        }
                                        keep
                                    })
                                    .map(|m| Record::new(m.offset, m.key, m.value)),
                            );
                            Answer::Data {
                                records,
                                high_watermark: data.highwatermark_offset(),
                            }
                        }
                        Err(e) => Answer::Failed(e),
                    };
                }
            }
        }
        Ok(answers)
    }

    /// The crate's answer for one partition alone, at once (no waiting for
    /// data), with `max_bytes`.
    fn fetch_alone(&mut self, request: FetchRequest, max_bytes: i32) -> Result<Answer, Error> {
        self.client.set_fetch_min_bytes(0);
        self.client.set_fetch_max_wait_time(Duration::ZERO)?;
        let answers = self.answers(&[request], max_bytes);
        self.client.set_fetch_min_bytes(self.fetch_min_bytes);
        self.client.set_fetch_max_wait_time(self.fetch_max_wait)?;
        Ok(answers?.pop().unwrap_or(Answer::NoLeader))
    }

    /// The outcome of one partition's answer: as the crate gave it when it
    /// starts at the requested offset (or the log ends there), settled
    /// otherwise.
    fn outcome(&mut self, request: FetchRequest, answer: Answer) -> FetchOutcome {
        match answer {
            Answer::Data {
                records,
                high_watermark,
            } => match records.first().map(|r| r.offset) {
                Some(first) if first == request.offset => {
                    records_outcome(records, Some(high_watermark))
                }
                None if high_watermark <= request.offset => {
                    step(request.offset, Some(high_watermark))
                }
                _ => self.settle(request, records),
            },
            Answer::UnsupportedCodec => self.settle(request, Vec::new()),
            Answer::Failed(e) if is_offset_out_of_range(&e) => FetchOutcome::out_of_range(),
            // Fetch v0 of a zstd batch: error 76, which the crate does not know.
            Answer::Failed(e) if matches!(*e, kafka::Error::Kafka(KafkaCode::Unknown)) => {
                self.settle(request, Vec::new())
            }
            Answer::Failed(e) => FetchOutcome::fetch_failed(e.to_string()),
            Answer::NoLeader => no_leader(),
        }
    }

    fn settle(&mut self, request: FetchRequest, seen: Vec<Record>) -> FetchOutcome {
        let answered = match (seen.first(), seen.last()) {
            (Some(first), Some(last)) => format!("offsets {}..={}", first.offset, last.offset),
            _ => "no record".to_string(),
        };
        let outcome = self.try_settle(request, seen).unwrap_or_else(|e| {
            FetchOutcome::fetch_failed(format!(
                "reading the record batches at offset {}: {e}",
                request.offset
            ))
        });
        log::debug!(
            "topic {} partition {} offset {}: the crate answered {answered}; settled: {}",
            self.topic,
            request.partition,
            request.offset,
            match &outcome {
                FetchOutcome::Records {
                    records,
                    next_offset,
                    ..
                } => format!("{} records, next offset {next_offset}", records.len()),
                other => format!("{other:?}"),
            }
        );
        outcome
    }

    /// The exact outcome at `request.offset`, from the batch headers there
    /// (see the module documentation). `seen` is what the crate answered.
    fn try_settle(
        &mut self,
        request: FetchRequest,
        seen: Vec<Record>,
    ) -> Result<FetchOutcome, Error> {
        let o = request.offset;
        let Some(host) = self.leader_host(request.partition) else {
            return Ok(no_leader());
        };
        let version = self.header_version(&host)?;
        let layout = self.wire.batch_headers(
            &host,
            version,
            &self.topic,
            request.partition,
            o,
            self.fetch_max_bytes.max(64),
            Some(wire::Capture {
                offset: o,
                batch_end_over: i64::from(self.max_bytes_cap),
                keep: self.max_record_bytes,
            }),
        )?;
        let hw = Some(layout.high_watermark);
        match layout.error {
            0 => {}
            wire::OFFSET_OUT_OF_RANGE => return Ok(FetchOutcome::out_of_range()),
            wire::UNSUPPORTED_COMPRESSION_TYPE => {
                return Ok(FetchOutcome::unreadable(unreadable_message("zstd", o)))
            }
            code => {
                return Ok(FetchOutcome::fetch_failed(format!(
                    "the broker answered error {code} for offset {o}"
                )))
            }
        }
        let batches = &layout.batches;
        // Transaction markers are not records.
        let mut next = o;
        let mut i = 0;
        while i < batches.len() && batches[i].control {
            next = next.max(batches[i].last + 1);
            i += 1;
        }
        let Some(first) = batches.get(i) else {
            return Ok(if next > o {
                step(next, hw)
            } else {
                // Nothing there after all (a race with retention or
                // compaction): try again after a pause, not at once.
                FetchOutcome::fetch_failed(format!(
                    "no record batch at offset {o} although the log ends at {}",
                    layout.high_watermark
                ))
            });
        };
        if let Some(f) = seen.first().map(|r| r.offset) {
            if first.base.is_some_and(|base| base <= f) && f <= first.last {
                // The answer starts in the first data batch: nothing before it.
                return Ok(records_outcome(seen, hw));
            }
        }
        let at = first.base.map_or(o, |base| base.max(o)).max(next);
        if let Some(codec) = unreadable_codec(first.codec) {
            return Ok(if next > o {
                step(next, hw)
            } else {
                FetchOutcome::unreadable(unreadable_message(&codec, at))
            });
        }
        if first.end > i64::from(self.max_bytes_cap) {
            if next > o {
                return Ok(step(next, hw));
            }
            let record = match &layout.record {
                // A plain batch: the header fetch read the record itself.
                Some(r) if r.size <= self.max_record_bytes => {
                    Record::new(r.offset, &r.key, &r.value)
                }
                Some(r) => {
                    log::warn!(
                        "topic {} partition {} offset {}: record of {} bytes in a batch of {} bytes, larger than any fetch; dead-lettered with its key and the first {} bytes of its value",
                        self.topic,
                        request.partition,
                        r.offset,
                        r.size,
                        first.end,
                        r.value.len()
                    );
                    Record::oversized(r.offset, &r.key, &r.value, r.size)
                }
                None => {
                    log::warn!(
                        "topic {} partition {} offset {at}: record batch of {} bytes is larger than {} bytes and cannot be fetched (compressed or an old message format); its record is dead-lettered without its content",
                        self.topic,
                        request.partition,
                        first.end,
                        self.max_bytes_cap
                    );
                    Record::oversized_batch(at, first.end.max(0) as u64)
                }
            };
            return Ok(records_outcome(vec![record], hw));
        }
        // The bytes to fetch: the first data batch and, when it is
        // uncompressed, the uncompressed and control batches after it up to
        // the next compressed one or the fetch size.
        let mut size = first.end;
        let mut last = first.last;
        if first.codec == 0 {
            for b in &batches[i + 1..] {
                if (!b.control && b.codec != 0) || b.end > i64::from(self.fetch_max_bytes) {
                    break;
                }
                size = b.end;
                last = b.last;
            }
        }
        let size = i32::try_from(size).unwrap_or(i32::MAX);
        Ok(match self.fetch_alone(request, size)? {
            Answer::Data { records, .. } if !records.is_empty() => records_outcome(records, hw),
            // Those batches hold no record at or after `o`.
            Answer::Data { .. } => step(next.max(last + 1), hw),
            Answer::UnsupportedCodec => {
                FetchOutcome::unreadable(unreadable_message(&format!("codec {}", first.codec), at))
            }
            Answer::Failed(e) if is_offset_out_of_range(&e) => FetchOutcome::out_of_range(),
            Answer::Failed(e) => FetchOutcome::fetch_failed(e.to_string()),
            Answer::NoLeader => no_leader(),
        })
    }

    /// The Fetch version for batch headers at `host`: 4 (record batches as
    /// stored, control batches included) where the broker has it, else 2
    /// (Kafka 0.10, which has no control batches).
    fn header_version(&mut self, host: &str) -> Result<i16, Error> {
        if let Some(&v) = self.header_versions.get(host) {
            return Ok(v);
        }
        let supported = self.wire.api_versions(host)?;
        let (min, max) = supported
            .iter()
            .find(|(key, _, _)| *key == wire::API_FETCH)
            .map(|&(_, min, max)| (min, max))
            .unwrap_or((0, 0));
        let version = if (min..=max).contains(&4) {
            4
        } else if (min..=max).contains(&2) {
            2
        } else {
            return Err(Error::Kafka(kafka::Error::Io(io::Error::other(format!(
                "the broker at {host} has Fetch versions {min} to {max}, none of 2 and 4"
            )))));
        };
        self.header_versions.insert(host.to_string(), version);
        Ok(version)
    }
}

impl KafkaRust {
    /// The crate's metadata of the topic (Metadata v0; see
    /// `reload_metadata` for why the topic is looked up first), and a check
    /// that each new leader accepts a connection (the crate would wait for
    /// it without a timeout).
    fn load_crate_metadata(&mut self) -> Result<(), Error> {
        let (client, topic) = (&mut self.client, &self.topic);
        guard(|| client.load_metadata(&[topic]))?;
        for host in self.leader_hosts() {
            if self.reachable.contains(&host) {
                continue;
            }
            check_reachable(&host).map_err(|e| {
                Error::Kafka(kafka::Error::Io(io::Error::new(
                    e.kind(),
                    format!("partition leader {host} does not accept a connection: {e}"),
                )))
            })?;
            self.reachable.insert(host);
        }
        Ok(())
    }

    /// What Metadata v10 says of the topic, asked of the first bootstrap
    /// broker; `None` where the broker has no Metadata v10.
    fn wire_topic_id(&mut self) -> Result<Option<wire::TopicId>, Error> {
        let host = self.brokers[0].clone();
        let has_ids = match self.has_topic_ids.get(&host) {
            Some(&known) => known,
            None => {
                let supported = self.wire.api_versions(&host)?;
                let known = supported
                    .iter()
                    .any(|&(key, min, max)| key == wire::API_METADATA && (min..=max).contains(&10));
                self.has_topic_ids.insert(host.clone(), known);
                known
            }
        };
        if !has_ids {
            return Ok(None);
        }
        match self.wire.topic_id(&host, &self.topic)? {
            wire::TopicId::Failed(code) => Err(Error::Kafka(kafka::Error::Io(io::Error::other(
                format!("metadata for topic {}: error code {code}", self.topic),
            )))),
            answer => Ok(Some(answer)),
        }
    }
}

fn no_leader() -> FetchOutcome {
    FetchOutcome::fetch_failed(format!(
        "{:?}: no leader known for this partition",
        KafkaCode::LeaderNotAvailable
    ))
}

impl Broker for KafkaRust {
    fn partitions(&mut self) -> Result<Vec<i32>, Error> {
        let topics = self.client.topics();
        let partitions = topics
            .partitions(&self.topic)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Error::NoSuchTopic(self.topic.clone()))?;
        let mut ids: Vec<i32> = partitions.iter().map(|p| p.id()).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Loads the topic's metadata, and checks that each new leader accepts
    /// a connection (the crate would wait for it without a timeout).
    ///
    /// The crate's Metadata v0 makes a broker with
    /// `auto.create.topics.enable=true` (Kafka's default) create a missing
    /// topic. So the topic is looked up first without that (Metadata v10,
    /// Kafka 2.8 and later), and a missing one is reported as missing.
    fn reload_metadata(&mut self) -> Result<(), Error> {
        // A broker that does not answer this is asked by the crate anyway.
        if let Ok(Some(wire::TopicId::Missing)) = self.wire_topic_id() {
            return Err(Error::NoSuchTopic(self.topic.clone()));
        }
        self.load_crate_metadata()
    }

    fn log_bounds(&mut self) -> Result<LogBounds, Error> {
        Ok(LogBounds {
            earliest: self.offsets(FetchOffset::Earliest)?,
            latest: self.offsets(FetchOffset::Latest)?,
        })
    }

    fn committed_offsets(&mut self) -> Result<BTreeMap<i32, Option<i64>>, Error> {
        let (client, group, topic) = (&mut self.client, &self.group, &self.topic);
        let offsets = guard(|| client.fetch_group_topic_offset(group, topic))?;
        Ok(offsets
            .into_iter()
            .map(|p| {
                (
                    p.partition,
                    if p.offset < 0 { None } else { Some(p.offset) },
                )
            })
            .collect())
    }

    /// Asks the group's offsets first: that request gives up when the
    /// coordinator is moving or loading, where the crate's commit would
    /// retry without end (see the module documentation).
    fn commit(&mut self, offsets: &[(i32, i64)]) -> Result<(), Error> {
        let (client, group, topic) = (&mut self.client, &self.group, &self.topic);
        guard(|| client.fetch_group_topic_offset(group, topic))?;
        let commits: Vec<CommitOffset<'_>> = offsets
            .iter()
            .map(|&(p, o)| CommitOffset::new(topic, p, o))
            .collect();
        guard(|| client.commit_offsets(group, &commits))?;
        Ok(())
    }

    /// Fetches the given partitions. Every requested partition has an
    /// outcome, including those the crate silently leaves out because it
    /// knows no leader for them.
    fn fetch(&mut self, requests: &[FetchRequest]) -> Result<Vec<PartitionFetch>, Error> {
        let answers = self.answers(requests, self.fetch_max_bytes)?;
        Ok(requests
            .iter()
            .zip(answers)
            .map(|(request, answer)| PartitionFetch {
                partition: request.partition,
                outcome: self.outcome(*request, answer),
            })
            .collect())
    }

    fn probe_fetch(&mut self, partition: i32, offset: i64) -> Result<Option<i64>, Error> {
        let fetched = self.fetch(&[FetchRequest {
            partition,
            offset,
            max_bytes: 1,
        }])?;
        match fetched.into_iter().next().map(|f| f.outcome) {
            Some(FetchOutcome::Records { records, .. }) => Ok(records.first().map(|r| r.offset)),
            Some(FetchOutcome::Failed(Error::OffsetOutOfRange)) => Ok(None),
            Some(FetchOutcome::Failed(reason)) => Err(Error::Setup(format!(
                "topic {} partition {partition}: fetch at offset {offset} failed: {reason}",
                self.topic
            ))),
            None => Ok(None),
        }
    }

    /// The crate's Metadata v0 carries no topic id: it is asked with
    /// Metadata v10 on a connection of this module's own, where the broker
    /// has it (Kafka 2.8 and later). Older brokers have no topic ids: there
    /// only a topic that is missing (and later back) can be told.
    fn topic_id(&mut self) -> Result<Option<String>, Error> {
        let answer = self.wire_topic_id()?;
        if let Some(wire::TopicId::Missing) = answer {
            return Err(Error::NoSuchTopic(self.topic.clone()));
        }
        self.load_crate_metadata()?;
        self.partitions()?;
        match answer {
            Some(wire::TopicId::Id(id)) if id != [0; 16] => Ok(Some(wire::topic_id_text(&id))),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::wire::{parse_api_versions, parse_fetch, Batch, Reader};
    use super::*;

    fn v2_batch(base: i64, records: i32, codec: i16, control: bool, body: usize) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&base.to_be_bytes());
        // Everything after the size field: epoch, magic, crc, attributes,
        // last offset delta, then the rest of the 61-byte header and a body.
        let size = 4 + 1 + 4 + 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4 + body;
        b.extend_from_slice(&(size as i32).to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.push(2);
        b.extend_from_slice(&0u32.to_be_bytes());
        let attributes = codec | if control { 0x20 } else { 0 };
        b.extend_from_slice(&attributes.to_be_bytes());
        b.extend_from_slice(&(records - 1).to_be_bytes());
        b.resize(b.len() + 8 + 8 + 8 + 2 + 4, 0);
        b.extend_from_slice(&records.to_be_bytes());
        b.resize(b.len() + body, 7);
        b
    }

    fn fetch_v4_response(batches: &[Vec<u8>], cut: usize) -> Vec<u8> {
        let mut set: Vec<u8> = batches.concat();
        set.truncate(set.len() - cut);
        let mut r = Vec::new();
        r.extend_from_slice(&0i32.to_be_bytes()); // throttle
        r.extend_from_slice(&1i32.to_be_bytes());
        r.extend_from_slice(&1i16.to_be_bytes());
        r.push(b't');
        r.extend_from_slice(&1i32.to_be_bytes());
        r.extend_from_slice(&0i32.to_be_bytes()); // partition
        r.extend_from_slice(&0i16.to_be_bytes()); // error
        r.extend_from_slice(&99i64.to_be_bytes()); // high watermark
        r.extend_from_slice(&99i64.to_be_bytes()); // last stable offset
        r.extend_from_slice(&1i32.to_be_bytes()); // one aborted transaction
        r.extend_from_slice(&[0; 16]);
        r.extend_from_slice(&(set.len() as i32).to_be_bytes());
        r.extend_from_slice(&set);
        r
    }

    #[test]
    fn batch_headers_of_a_v4_fetch() {
        let batches = vec![
            v2_batch(10, 1, 0, true, 10),
            v2_batch(11, 5, 1, false, 100),
            v2_batch(16, 1, 3, false, 20),
        ];
        let sizes: Vec<i64> = batches.iter().map(|b| b.len() as i64).collect();
        let bytes = fetch_v4_response(&batches, 5);
        let layout =
            parse_fetch(&mut Reader::new(&bytes[..], bytes.len()), 4, 1 << 20, None).unwrap();
        assert_eq!(layout.high_watermark, 99);
        assert_eq!(
            layout.batches,
            vec![
                Batch {
                    base: Some(10),
                    last: 10,
                    end: sizes[0],
                    control: true,
                    codec: 0
                },
                Batch {
                    base: Some(11),
                    last: 15,
                    end: sizes[0] + sizes[1],
                    control: false,
                    codec: 1
                },
                // Cut off, but its header is there.
                Batch {
                    base: Some(16),
                    last: 16,
                    end: sizes[0] + sizes[1] + sizes[2],
                    control: false,
                    codec: 3
                },
            ]
        );
        // Headers stop at the first batch ending past max_bytes.
        let layout = parse_fetch(
            &mut Reader::new(&bytes[..], bytes.len()),
            4,
            (sizes[0] + 1) as i32,
            None,
        )
        .unwrap();
        assert_eq!(layout.batches.len(), 2);
    }

    /// A record as (offset delta, key, value).
    type PlainRecord<'a> = (i64, Option<&'a [u8]>, &'a [u8]);

    /// A plain v2 batch of records.
    fn v2_plain_batch(base: i64, records: &[PlainRecord<'_>]) -> Vec<u8> {
        fn varint(out: &mut Vec<u8>, v: i64) {
            let mut u = ((v << 1) ^ (v >> 63)) as u64;
            while u >= 0x80 {
                out.push((u as u8) | 0x80);
                u >>= 7;
            }
            out.push(u as u8);
        }
        let mut body = Vec::new();
        for &(delta, key, value) in records {
            let mut r = vec![0u8]; // attributes
            varint(&mut r, 0); // timestamp delta
            varint(&mut r, delta);
            match key {
                Some(key) => {
                    varint(&mut r, key.len() as i64);
                    r.extend_from_slice(key);
                }
                None => varint(&mut r, -1),
            }
            varint(&mut r, value.len() as i64);
            r.extend_from_slice(value);
            varint(&mut r, 0); // headers
            varint(&mut body, r.len() as i64);
            body.extend_from_slice(&r);
        }
        let last = records.last().map_or(0, |r| r.0) as i32;
        let mut b = v2_batch(base, last + 1, 0, false, 0);
        b.truncate(b.len() - 4);
        b.extend_from_slice(&(records.len() as i32).to_be_bytes());
        b.extend_from_slice(&body);
        let size = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&size.to_be_bytes());
        b
    }

    #[test]
    fn the_record_of_a_batch_too_large_to_fetch_is_read_from_the_header_fetch() {
        let big = vec![b'x'; 5000];
        let batches = vec![
            v2_batch(9, 1, 0, true, 10),
            v2_plain_batch(
                10,
                &[
                    (0, Some(b"a"), b"first"),
                    (1, Some(b"b"), &big),
                    (3, None, b"z"),
                ],
            ),
        ];
        let bytes = fetch_v4_response(&batches, 0);
        let capture = |offset: i64, batch_end_over: i64| {
            let layout = parse_fetch(
                &mut Reader::new(&bytes[..], bytes.len()),
                4,
                100,
                Some(wire::Capture {
                    offset,
                    batch_end_over,
                    keep: 1000,
                }),
            )
            .unwrap();
            assert_eq!(layout.batches.len(), 2);
            layout.record
        };
        assert_eq!(
            capture(11, 200),
            Some(wire::CapturedRecord {
                offset: 11,
                key: b"b".to_vec(),
                value: big[..1000].to_vec(),
                size: 5001,
            })
        );
        // Offset 12 was compacted away: the next record.
        assert_eq!(
            capture(12, 200),
            Some(wire::CapturedRecord {
                offset: 13,
                key: Vec::new(),
                value: b"z".to_vec(),
                size: 1,
            })
        );
        assert_eq!(capture(14, 200), None, "no record at or after 14");
        assert_eq!(capture(10, 1 << 20), None, "a batch that can be fetched");
        let compressed = fetch_v4_response(&[v2_batch(10, 3, 1, false, 6000)], 0);
        let layout = parse_fetch(
            &mut Reader::new(&compressed[..], compressed.len()),
            4,
            100,
            Some(wire::Capture {
                offset: 10,
                batch_end_over: 200,
                keep: 1000,
            }),
        )
        .unwrap();
        assert_eq!(layout.record, None, "a compressed batch");
    }

    #[test]
    fn legacy_messages_and_errors() {
        // A v1 plain message at 3 and a gzip wrapper whose last inner offset is 9.
        let message = |offset: i64, attributes: u8| {
            let mut m = Vec::new();
            m.extend_from_slice(&offset.to_be_bytes());
            m.extend_from_slice(&30i32.to_be_bytes());
            m.extend_from_slice(&[0; 4]);
            m.push(1);
            m.push(attributes);
            m.resize(12 + 30, 0);
            m
        };
        let set = [message(3, 0), message(9, 1)].concat();
        let mut r = Vec::new();
        r.extend_from_slice(&0i32.to_be_bytes());
        r.extend_from_slice(&1i32.to_be_bytes());
        r.extend_from_slice(&1i16.to_be_bytes());
        r.push(b't');
        r.extend_from_slice(&1i32.to_be_bytes());
        r.extend_from_slice(&0i32.to_be_bytes());
        r.extend_from_slice(&0i16.to_be_bytes());
        r.extend_from_slice(&10i64.to_be_bytes());
        r.extend_from_slice(&(set.len() as i32).to_be_bytes());
        r.extend_from_slice(&set);
        let layout = parse_fetch(&mut Reader::new(&r[..], r.len()), 2, 1 << 20, None).unwrap();
        assert_eq!(
            layout.batches,
            vec![
                Batch {
                    base: Some(3),
                    last: 3,
                    end: 42,
                    control: false,
                    codec: 0
                },
                Batch {
                    base: None,
                    last: 9,
                    end: 84,
                    control: false,
                    codec: 1
                },
            ]
        );
        // A partition error: no batches.
        let mut r = Vec::new();
        r.extend_from_slice(&0i32.to_be_bytes());
        r.extend_from_slice(&1i32.to_be_bytes());
        r.extend_from_slice(&1i16.to_be_bytes());
        r.push(b't');
        r.extend_from_slice(&1i32.to_be_bytes());
        r.extend_from_slice(&0i32.to_be_bytes());
        r.extend_from_slice(&76i16.to_be_bytes());
        r.extend_from_slice(&10i64.to_be_bytes());
        r.extend_from_slice(&(-1i32).to_be_bytes());
        let layout = parse_fetch(&mut Reader::new(&r[..], r.len()), 2, 1 << 20, None).unwrap();
        assert_eq!((layout.error, layout.batches.len()), (76, 0));
    }

    #[test]
    fn versions_a_kafka_4_broker_refuses() {
        let mut r = Vec::new();
        r.extend_from_slice(&0i16.to_be_bytes());
        let kafka_4: &[(i16, i16, i16)] = &[
            (1, 4, 17),
            (2, 1, 10),
            (3, 0, 13),
            (8, 2, 9),
            (9, 1, 9),
            (10, 0, 6),
        ];
        r.extend_from_slice(&(kafka_4.len() as i32).to_be_bytes());
        for (k, min, max) in kafka_4 {
            for v in [k, min, max] {
                r.extend_from_slice(&v.to_be_bytes());
            }
        }
        let versions = parse_api_versions(&mut Reader::new(&r[..], r.len())).unwrap();
        assert_eq!(versions, kafka_4);
        assert_eq!(
            refused_versions(&versions),
            vec!["ListOffsets v0", "Fetch v0", "OffsetCommit v1"]
        );
        let kafka_3: &[(i16, i16, i16)] = &[
            (1, 0, 17),
            (2, 0, 9),
            (3, 0, 12),
            (8, 0, 9),
            (9, 0, 9),
            (10, 0, 6),
        ];
        assert!(refused_versions(kafka_3).is_empty());
        let message = refused_message("b:9092", "ListOffsets v0, Fetch v0");
        assert!(
            message.contains("rejects the protocol versions"),
            "{message}"
        );
        assert!(
            message.contains("kafka.client = \"librdkafka\""),
            "{message}"
        );
    }

    /// A broker stand-in that answers ApiVersions, closes each connection
    /// after two requests, and counts the connections it accepted.
    fn api_versions_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                for _ in 0..2 {
                    let mut size = [0; 4];
                    if stream.read_exact(&mut size).is_err() {
                        break;
                    }
                    let mut request = vec![0; i32::from_be_bytes(size) as usize];
                    stream.read_exact(&mut request).unwrap();
                    let mut response = request[4..8].to_vec(); // correlation id
                    response.extend_from_slice(&0i16.to_be_bytes());
                    response.extend_from_slice(&1i32.to_be_bytes());
                    for v in [1i16, 0, 17] {
                        response.extend_from_slice(&v.to_be_bytes());
                    }
                    let mut message = (response.len() as i32).to_be_bytes().to_vec();
                    message.extend_from_slice(&response);
                    stream.write_all(&message).unwrap();
                }
            }
        });
        (host, accepted)
    }

    #[test]
    fn own_connections_are_kept_and_replaced_when_closed() {
        use std::sync::atomic::Ordering;
        let (host, accepted) = api_versions_server();
        let mut conns = wire::Conns::new("test", Duration::from_secs(5));
        for _ in 0..2 {
            assert_eq!(conns.api_versions(&host).unwrap(), vec![(1, 0, 17)]);
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for two requests"
        );
        // The server closed it: a new one, without an error.
        assert_eq!(conns.api_versions(&host).unwrap(), vec![(1, 0, 17)]);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn codecs_the_crate_cannot_read() {
        assert_eq!(unreadable_codec(0), None);
        assert_eq!(unreadable_codec(1), None);
        assert_eq!(unreadable_codec(2), None);
        assert_eq!(unreadable_codec(3).as_deref(), Some("lz4"));
        assert_eq!(unreadable_codec(4).as_deref(), Some("zstd"));
        let message = unreadable_message("lz4", 7);
        assert!(
            message.contains("lz4") && message.contains("librdkafka"),
            "{message}"
        );
    }

    #[test]
    fn a_lost_connection_is_recognised() {
        let eof = kafka::Error::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "failed to fill whole buffer",
        ));
        assert!(connection_lost(&eof));
        assert!(connection_lost(&kafka::Error::ArcSelf(Arc::new(eof))));
        assert!(!connection_lost(&kafka::Error::NoHostReachable));
        assert!(!connection_lost(&kafka::Error::Kafka(KafkaCode::Unknown)));
    }

    #[test]
    fn a_panic_becomes_an_error() {
        let result: kafka::Result<()> = guard(|| panic!("available connection"));
        assert!(result.is_err());
    }

    #[test]
    fn the_topic_is_looked_up_without_creating_it() {
        let body = wire::metadata_request("orders");
        let mut expected = vec![2];
        expected.extend_from_slice(&[0; 16]);
        expected.push(7);
        expected.extend_from_slice(b"orders");
        // Topic tags; allow_auto_topic_creation false; no authorized
        // operations asked; tags.
        expected.extend_from_slice(&[0, 0, 0, 0, 0]);
        assert_eq!(body, expected);
    }

    #[test]
    fn topic_ids_print_as_librdkafka_prints_them() {
        let id: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(wire::topic_id_text(&id), "AAECAwQFBgcICQoLDA0ODw");
        assert_eq!(wire::topic_id_text(&[0xff; 16]), "/////////////////////w");
    }

    #[test]
    fn a_metadata_v10_answer_gives_the_topic_id() {
        fn answer(error: i16, id: [u8; 16]) -> Vec<u8> {
            let mut r = 0i32.to_be_bytes().to_vec(); // throttle
            r.push(2); // one broker
            r.extend_from_slice(&1i32.to_be_bytes());
            r.push(10);
            r.extend_from_slice(b"127.0.0.1");
            r.extend_from_slice(&9092i32.to_be_bytes());
            r.push(0); // no rack
            r.extend_from_slice(&[1, 0x2a, 0]); // tagged fields: tag 42, 0 bytes
            r.push(4);
            r.extend_from_slice(b"abc"); // cluster id
            r.extend_from_slice(&1i32.to_be_bytes());
            r.push(2); // one topic
            r.extend_from_slice(&error.to_be_bytes());
            r.push(2);
            r.push(b't');
            r.extend_from_slice(&id);
            r.extend_from_slice(&[0, 1, 0, 0]); // not internal, no partitions, ...
            r
        }
        let parse =
            |r: Vec<u8>| wire::parse_metadata_topic_id(&mut Reader::new(&r[..], r.len())).unwrap();
        assert_eq!(parse(answer(0, [7; 16])), wire::TopicId::Id([7; 16]));
        assert_eq!(parse(answer(3, [0; 16])), wire::TopicId::Missing);
        assert_eq!(parse(answer(29, [0; 16])), wire::TopicId::Failed(29));
        let mut cut = answer(0, [7; 16]);
        cut.truncate(cut.len() - 12);
        assert!(wire::parse_metadata_topic_id(&mut Reader::new(&cut[..], cut.len())).is_err());
    }
}
