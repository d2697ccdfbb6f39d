//! The `kafka` crate (0.10), the pure-Rust client, for Kafka 0.10 to 3.9 in
//! plaintext (`kafka.client = "kafka-rust"`).
//!
//! Why `KafkaClient` and not `kafka::consumer::Consumer`: `Consumer::poll`
//! fails the whole poll when one partition reports an error, after it has
//! advanced the positions of the partitions that returned data, so their
//! records would be lost. `fetch` here returns each partition's outcome on
//! its own.
//!
//! The crate speaks Fetch v0, ListOffsets v0 and OffsetCommit v1, which
//! Kafka 4.0 removed: the broker converts record batches down to message
//! format v0 for it, and reads are uncommitted (aborted transactions are
//! read too).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kafka::client::{CommitOffset, FetchOffset, FetchPartition, GroupOffsetStorage, KafkaClient};
use kafka::error::KafkaCode;

use super::{Broker, FetchOutcome, FetchRequest, LogBounds, PartitionFetch};
use crate::config::Config;
use crate::error::{is_offset_out_of_range, Error};
use crate::record::Record;

pub struct KafkaRust {
    client: KafkaClient,
    topic: String,
    group: String,
    /// The fetch size of each partition: `fetch_max_bytes_per_partition`,
    /// grown while a record does not fit in it.
    max_bytes: HashMap<i32, i32>,
    default_max_bytes: i32,
    /// Past this fetch size a record that still does not fit is handed over
    /// as oversized (dead-lettered without its content).
    max_bytes_cap: i32,
}

impl KafkaRust {
    pub fn connect(config: &Config) -> Result<KafkaRust, Error> {
        let max_record_bytes = config.worker.max_record_bytes;
        let config = &config.kafka;
        let mut client = KafkaClient::new(config.brokers.clone());
        client.set_client_id(config.client_id.clone());
        client.set_fetch_max_bytes_per_partition(config.fetch_max_bytes_per_partition);
        client.set_fetch_min_bytes(config.fetch_min_bytes);
        client.set_fetch_max_wait_time(config.fetch_max_wait)?;
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
        let largest_allowed = max_record_bytes.max(config.fetch_max_bytes_per_partition as usize);
        let mut broker = KafkaRust {
            client,
            topic: config.topic.clone(),
            group: config.group.clone(),
            max_bytes: HashMap::new(),
            default_max_bytes: config.fetch_max_bytes_per_partition,
            max_bytes_cap: (largest_allowed.saturating_mul(2) + 65_536).min(i32::MAX as usize)
                as i32,
        };
        broker.reload_metadata()?;
        Ok(broker)
    }

    fn offsets(&mut self, which: FetchOffset) -> Result<BTreeMap<i32, i64>, Error> {
        let offsets = self.client.fetch_topic_offsets(&self.topic, which)?;
        Ok(offsets
            .into_iter()
            .map(|p| (p.partition, p.offset))
            .collect())
    }

    /// Turns an empty answer for a partition whose log goes on into a bigger
    /// fetch next time or, past the cap, into an oversized record.
    fn nothing_fetched(&mut self, request: &FetchRequest, high_watermark: i64) -> Vec<Record> {
        if high_watermark <= request.offset {
            return Vec::new();
        }
        let max_bytes = self
            .max_bytes
            .entry(request.partition)
            .or_insert(self.default_max_bytes);
        if *max_bytes < self.max_bytes_cap {
            *max_bytes = max_bytes.saturating_mul(2).min(self.max_bytes_cap);
            log::debug!(
                "topic {} partition {} offset {}: record larger than the fetch size, fetching up to {} bytes",
                self.topic,
                request.partition,
                request.offset,
                max_bytes
            );
            return Vec::new();
        }
        log::warn!(
            "topic {} partition {} offset {}: record larger than {} bytes cannot be fetched; it is dead-lettered without its content",
            self.topic,
            request.partition,
            request.offset,
            self.max_bytes_cap
        );
        self.max_bytes.remove(&request.partition);
        vec![Record::oversized(request.offset)]
    }
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

    fn reload_metadata(&mut self) -> Result<(), Error> {
        self.client.load_metadata(&[&self.topic])?;
        Ok(())
    }

    fn log_bounds(&mut self) -> Result<LogBounds, Error> {
        Ok(LogBounds {
            earliest: self.offsets(FetchOffset::Earliest)?,
            latest: self.offsets(FetchOffset::Latest)?,
        })
    }

    fn committed_offsets(&mut self) -> Result<BTreeMap<i32, Option<i64>>, Error> {
        let offsets = self
            .client
            .fetch_group_topic_offset(&self.group, &self.topic)?;
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

    fn commit(&mut self, offsets: &[(i32, i64)]) -> Result<(), Error> {
        let commits: Vec<CommitOffset<'_>> = offsets
            .iter()
            .map(|&(p, o)| CommitOffset::new(&self.topic, p, o))
            .collect();
        self.client.commit_offsets(&self.group, &commits)?;
        Ok(())
    }

    /// Fetches the given partitions. Every requested partition has an
    /// outcome, including those the crate silently leaves out because it
    /// knows no leader for them.
    fn fetch(&mut self, requests: &[FetchRequest]) -> Result<Vec<PartitionFetch>, Error> {
        let topic = self.topic.clone();
        let inputs: Vec<FetchPartition<'_>> = requests
            .iter()
            .map(|r| {
                let max_bytes = self
                    .max_bytes
                    .get(&r.partition)
                    .copied()
                    .unwrap_or(self.default_max_bytes);
                FetchPartition::new(&topic, r.partition, r.offset).with_max_bytes(max_bytes)
            })
            .collect();
        let responses = self.client.fetch_messages(&inputs)?;
        let mut answers: Vec<(FetchRequest, Result<(Vec<Record>, i64), FetchOutcome>)> = Vec::new();
        for response in &responses {
            for t in response.topics() {
                if t.topic() != topic {
                    continue;
                }
                for p in t.partitions() {
                    let Some(requested) = requests.iter().find(|r| r.partition == p.partition())
                    else {
                        continue;
                    };
                    let answer = match p.data() {
                        Ok(data) => {
                            // Sized up front: a batch waits in a worker's queue,
                            // and a grown Vec would hold up to twice its room.
                            let messages = data.messages();
                            let mut records = Vec::with_capacity(messages.len());
                            records.extend(
                                messages
                                    .iter()
                                    .filter(|m| m.offset >= requested.offset)
                                    .map(|m| Record::new(m.offset, m.key, m.value)),
                            );
                            Ok((records, data.highwatermark_offset()))
                        }
                        Err(e) if is_offset_out_of_range(&e) => Err(FetchOutcome::OffsetOutOfRange),
                        Err(e) => Err(FetchOutcome::Retry(e.to_string())),
                    };
                    answers.push((*requested, answer));
                }
            }
        }
        let mut out: Vec<PartitionFetch> = Vec::with_capacity(requests.len());
        for (request, answer) in answers {
            let outcome = match answer {
                Ok((records, high_watermark)) => {
                    let records = if records.is_empty() {
                        self.nothing_fetched(&request, high_watermark)
                    } else {
                        self.max_bytes.remove(&request.partition);
                        records
                    };
                    let next_offset = records.last().map_or(request.offset, |r| r.offset + 1);
                    FetchOutcome::Records {
                        records,
                        next_offset,
                        high_watermark: Some(high_watermark),
                    }
                }
                Err(outcome) => outcome,
            };
            out.push(PartitionFetch {
                partition: request.partition,
                outcome,
            });
        }
        for r in requests {
            if !out.iter().any(|f| f.partition == r.partition) {
                out.push(PartitionFetch {
                    partition: r.partition,
                    outcome: FetchOutcome::Retry(format!(
                        "{:?}: no leader known for this partition",
                        KafkaCode::LeaderNotAvailable
                    )),
                });
            }
        }
        Ok(out)
    }

    fn probe_fetch(&mut self, partition: i32, offset: i64) -> Result<Option<i64>, Error> {
        let fetched = self.fetch(&[FetchRequest { partition, offset }])?;
        match fetched.into_iter().next().map(|f| f.outcome) {
            Some(FetchOutcome::Records { records, .. }) => Ok(records.first().map(|r| r.offset)),
            Some(FetchOutcome::OffsetOutOfRange) => Ok(None),
            Some(FetchOutcome::Unreadable(reason) | FetchOutcome::Retry(reason)) => {
                Err(Error::Setup(format!(
                    "topic {} partition {partition}: fetch at offset {offset} failed: {reason}",
                    self.topic
                )))
            }
            None => Ok(None),
        }
    }

    /// Metadata v0 carries no topic id: only a topic that is missing (and
    /// later back) can be told.
    fn topic_id(&mut self) -> Result<Option<String>, Error> {
        self.reload_metadata()?;
        self.partitions()?;
        Ok(None)
    }
}
