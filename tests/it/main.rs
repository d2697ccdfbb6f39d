//! The integration tests: one test binary, a module per area, one shared
//! helper module (`common`).
//!
//! Every test runs against the real Apache Kafka broker and the real MariaDB
//! server that `scripts/services.sh up` starts; nothing is mocked. When they
//! are not running, the tests fail and say how to start them; they never pass
//! by skipping. Each test uses its own topic, group and table
//! (`common::unique_name`), so the tests run in parallel.

mod clients;
mod common;
mod error_classes;
mod exactly_once;
mod failures;
mod formats;
mod group;
mod harness;
mod kafka_rust_client;
mod metadata;
mod metrics;
mod operations;
mod pipeline;
mod replay;
mod scrape;
mod setup;
mod values;
mod versions;
