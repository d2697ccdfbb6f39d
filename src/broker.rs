//! Every Kafka call kafka2mysql makes, behind a small interface of our own
//! types: fetch, earliest and latest offsets, the group's committed offsets,
//! commit. Only the coordinator thread holds a `Broker`.
//!
//! Why `KafkaClient` and not `kafka::consumer::Consumer`: `Consumer::poll`
//! fails the whole poll when one partition reports an error, after it has
//! advanced the positions of the partitions that returned data, so their
//! records would be lost. `fetch` here returns each partition's outcome on
//! its own.
//!
//! The `kafka` crate speaks protocol versions (Fetch v0, ListOffsets v0,
//! OffsetCommit v1) that Kafka 4.x brokers no longer accept. A client for
//! those brokers would implement this same interface here; the coordinator
//! would not change.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka::client::{CommitOffset, FetchOffset, FetchPartition, GroupOffsetStorage, KafkaClient};
use kafka::error::KafkaCode;

use crate::config::KafkaConfig;
use crate::error::{is_offset_out_of_range, Error};
use crate::record::Record;

/// One partition to fetch from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchRequest {
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: i32,
}

/// What one partition's fetch gave.
#[derive(Debug)]
pub enum FetchOutcome {
    /// Records at or after the requested offset, in offset order (possibly
    /// none), and the partition's high watermark.
    Records { records: Vec<Record>, high_watermark: i64 },
    /// The requested offset is no longer (or not yet) in the log.
    OffsetOutOfRange,
    /// Anything else (no leader, leader moved, timeout): retry after a
    /// metadata reload.
    Retry(String),
}

#[derive(Debug)]
pub struct PartitionFetch {
    pub partition: i32,
    pub outcome: FetchOutcome,
}

pub struct Broker {
    client: KafkaClient,
    topic: String,
    group: String,
}

impl Broker {
    /// Connects and loads the topic's metadata. Fails when no broker answers
    /// or the topic does not exist.
    pub fn connect(config: &KafkaConfig) -> Result<Broker, Error> {
        let mut client = KafkaClient::new(config.brokers.clone());
        client.set_client_id(config.client_id.clone());
        client.set_fetch_max_bytes_per_partition(config.fetch_max_bytes_per_partition);
        client.set_fetch_min_bytes(config.fetch_min_bytes);
        client.set_fetch_max_wait_time(config.fetch_max_wait)?;
        // The crate checks each message's CRC with a slow bytewise CRC-32 that
        // took a quarter of the coordinator thread (profiled, issue 7). The
        // check guards nothing here: the crate reads only message format v0,
        // so the broker down-converts every record batch for it
        // (log.message.downconversion.enable) and computes each v0 CRC afresh
        // from the converted bytes just before sending; a record damaged on
        // the broker's disk gets a valid new CRC, and the socket is covered by
        // TCP's checksum.
        client.set_fetch_crc_validation(false);
        client.set_group_offset_storage(Some(GroupOffsetStorage::Kafka));
        client.set_retry_backoff_time(Duration::from_millis(100));
        client.set_retry_max_attempts(3);
        client.set_connection_idle_timeout(Duration::from_secs(60));
        let mut broker = Broker {
            client,
            topic: config.topic.clone(),
            group: config.group.clone(),
        };
        broker.reload_metadata()?;
        Ok(broker)
    }

    pub fn reload_metadata(&mut self) -> Result<(), Error> {
        self.client.load_metadata(&[&self.topic])?;
        Ok(())
    }

    /// The topic's partitions, sorted; an error when the topic does not exist.
    pub fn partitions(&self) -> Result<Vec<i32>, Error> {
        let topics = self.client.topics();
        let partitions = topics
            .partitions(&self.topic)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Error::Setup(format!("topic {:?} does not exist (kafka.topic)", self.topic)))?;
        let mut ids: Vec<i32> = partitions.iter().map(|p| p.id()).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    pub fn earliest_offsets(&mut self) -> Result<BTreeMap<i32, i64>, Error> {
        self.offsets(FetchOffset::Earliest)
    }

    pub fn latest_offsets(&mut self) -> Result<BTreeMap<i32, i64>, Error> {
        self.offsets(FetchOffset::Latest)
    }

    fn offsets(&mut self, which: FetchOffset) -> Result<BTreeMap<i32, i64>, Error> {
        let offsets = self.client.fetch_topic_offsets(&self.topic, which)?;
        Ok(offsets.into_iter().map(|p| (p.partition, p.offset)).collect())
    }

    /// The group's committed next offsets; `None` where nothing is committed.
    pub fn committed_offsets(&mut self) -> Result<BTreeMap<i32, Option<i64>>, Error> {
        let offsets = self.client.fetch_group_topic_offset(&self.group, &self.topic)?;
        Ok(offsets
            .into_iter()
            .map(|p| (p.partition, if p.offset < 0 { None } else { Some(p.offset) }))
            .collect())
    }

    /// Commits next offsets to the group (Kafka-stored group offsets).
    pub fn commit(&mut self, offsets: &[(i32, i64)]) -> Result<(), Error> {
        let topic = self.topic.clone();
        let commits: Vec<CommitOffset<'_>> = offsets
            .iter()
            .map(|&(p, o)| CommitOffset::new(&topic, p, o))
            .collect();
        self.client.commit_offsets(&self.group, &commits)?;
        Ok(())
    }

    /// Fetches the given partitions. `Err` means the whole request failed
    /// (no broker reachable); otherwise every requested partition has an
    /// outcome, including those the crate silently leaves out because it
    /// knows no leader for them.
    pub fn fetch(&mut self, requests: &[FetchRequest]) -> Result<Vec<PartitionFetch>, Error> {
        let topic = self.topic.clone();
        let inputs: Vec<FetchPartition<'_>> = requests
            .iter()
            .map(|r| FetchPartition::new(&topic, r.partition, r.offset).with_max_bytes(r.max_bytes))
            .collect();
        let responses = self.client.fetch_messages(&inputs)?;
        let mut out: Vec<PartitionFetch> = Vec::with_capacity(requests.len());
        for response in &responses {
            for t in response.topics() {
                if t.topic() != topic {
                    continue;
                }
                for p in t.partitions() {
                    let requested = requests.iter().find(|r| r.partition == p.partition());
                    let Some(requested) = requested else { continue };
                    let outcome = match p.data() {
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
                            FetchOutcome::Records { records, high_watermark: data.highwatermark_offset() }
                        }
                        Err(e) if is_offset_out_of_range(&e) => FetchOutcome::OffsetOutOfRange,
                        Err(e) => FetchOutcome::Retry(e.to_string()),
                    };
                    out.push(PartitionFetch { partition: p.partition(), outcome });
                }
            }
        }
        for r in requests {
            if !out.iter().any(|f| f.partition == r.partition) {
                out.push(PartitionFetch {
                    partition: r.partition,
                    outcome: FetchOutcome::Retry(format!("{:?}: no leader known for this partition", KafkaCode::LeaderNotAvailable)),
                });
            }
        }
        Ok(out)
    }
}
