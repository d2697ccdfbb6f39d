//! kafka2mysql moves the records of one Kafka topic into one MySQL table,
//! without losing a record when the process, the database or the broker fails.
//!
//! How it is built (the code map, the invariants, the threads and their
//! shutdown order, the error classes, the offset rules) is written down in
//! `docs/architecture.md`.
//!
//! The library is the binary's, and the benchmark's (`examples/read_path.rs`):
//! it exports the commands and what the benchmark needs to run the pipeline
//! with a sink of its own, and nothing else, so that the compiler reports
//! code nothing uses.

mod broker;
mod budget;
mod column_values;
pub mod commands;
pub mod config;
mod coordinator;
mod envelope;
mod error;
pub mod logging;
mod metadata;
mod metrics;
mod mysql;
mod offsets;
mod record;
pub mod replay;
mod reporter;
mod retry;
pub mod run_files;
pub mod service;
mod status;
mod times;
mod worker;

pub use error::{Error, Exit};
pub use mysql::sink::{Sink, WriteSet};
pub use record::TableSchema;
