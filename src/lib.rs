//! kafka2mysql moves the records of one Kafka topic into one MySQL table,
//! without losing a record when the process, the database or the broker fails.
//!
//! How it is built (the code map, the invariants, the threads and their
//! shutdown order, the error classes, the offset rules) is written down in
//! `docs/architecture.md`.

pub mod broker;
pub mod column_values;
pub mod commands;
pub mod config;
pub mod coordinator;
pub mod envelope;
pub mod error;
pub mod logging;
pub mod metadata;
pub mod metrics;
pub mod mysql;
pub mod offsets;
pub mod record;
pub mod replay;
pub mod reporter;
pub mod retry;
pub mod run_files;
pub mod service;
pub mod status;
pub mod times;
pub mod worker;
