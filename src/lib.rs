//! kafka2mysql moves the records of one Kafka topic into one MySQL table,
//! without losing a record when the process, the database or the broker fails.
//!
//! # Architecture
//!
//! ```text
//!  Kafka <-> coordinator thread (owns the Kafka client: fetch, offsets, commit)
//!              | one bounded crossbeam channel of Batches per partition
//!              v
//!            worker partition-N (OS thread, owns a MySQL connection)
//!              | WorkerEvent::Applied { partition, next_offset, records }
//!              v
//!            coordinator commits applied offsets every N records / T ms / at stop
//! ```
//!
//! A record's way: `coordinator.rs` fetches it (through `broker/`: librdkafka
//! or the `kafka` crate behind one trait) and sends it to its partition's
//! worker; `worker.rs` maps it (`record.rs`) and retries by error class
//! (`error.rs`, `retry.rs`); `mysql_sink.rs` writes it.
//!
//! # Invariants
//! - Workers never talk to Kafka; the coordinator never talks to MySQL.
//! - A record is in MySQL (as a row or a dead letter) before its offset is
//!   reported, and only reported offsets are committed.
//! - A worker applies its partition strictly in offset order. A blocked
//!   partition fills its own queue; the coordinator then stops fetching that
//!   partition only.
//! - Every failure is classified once, by `error::classify`.
//! - Memory is bounded by partitions x ((queue_batches + 1) x 1.2 + 2) x fetch
//!   size: the queued and in-hand batches, and librdkafka's prefetch.

pub mod broker;
pub mod column_values;
pub mod commands;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod logging;
pub mod mysql_sink;
pub mod offsets;
pub mod record;
pub mod retry;
pub mod service;
pub mod status;
pub mod worker;
