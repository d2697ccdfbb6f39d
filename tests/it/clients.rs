//! The default client (librdkafka) against what real producers and brokers
//! put in a topic: every codec and batches of mixed compression in one
//! partition, transactions committed and aborted, a compacted topic, a
//! secured listener (SASL_SSL with SCRAM), and a topic deleted and created
//! again under the same name.
//!
//! These tests name the client (`kafka.client = "librdkafka"`), whatever
//! `K2M_CLIENT` says.

use std::time::Duration;

use serde_json::json;

use crate::common::*;
use crate::setup::{orders, sigterm_clean, Setup, ORDERS};

const LIBRDKAFKA: &str = "[kafka]\nclient = \"librdkafka\"";

fn librdkafka(extra: &str) -> String {
    format!("{LIBRDKAFKA}\n{extra}")
}

fn json_records(values: &[serde_json::Value]) -> Vec<KeyValue> {
    values
        .iter()
        .map(|v| (None, Some(serde_json::to_vec(v).expect("JSON"))))
        .collect()
}

fn dead_letters(s: &Setup) -> i64 {
    query_count(&format!("SELECT COUNT(*) FROM `{}`", s.dead_letters))
}

#[test]
fn every_codec_and_batches_of_mixed_compression_land_exactly() {
    let s = Setup::new("clients_codecs", 1, ORDERS, &librdkafka(""));
    let mut next = 0;
    let mut produce = |compression: &str, batch_records: usize, count: i64| {
        let values = orders(0, next, count);
        next += count;
        let options = ProduceOptions {
            compression,
            batch_records,
        };
        produce_with(&s.topic, 0, &json_records(&values), &options);
    };
    // Plain batches of one record between compressed batches of every codec:
    // the shape that cost the old client records.
    produce("none", 1, 5);
    produce("gzip", 50, 100);
    produce("none", 1, 3);
    produce("snappy", 50, 100);
    produce("lz4", 50, 100);
    produce("none", 1, 2);
    produce("zstd", 50, 100);
    produce("gzip", 1, 4);
    let total = next;
    let mut service = s.start();
    s.wait_rows(total, Duration::from_secs(60));
    sigterm_clean(&mut service);
    assert_eq!(
        s.count("WHERE name = CONCAT('name-', id)"),
        total,
        "every row as produced"
    );
    assert_eq!(
        query_count(&format!("SELECT MAX(id) + 1 FROM `{}`", s.table)),
        total
    );
    assert_eq!(dead_letters(&s), 0, "no dead letter");
    s.assert_committed_at_log_end();
}

#[test]
fn only_committed_transactions_land_and_markers_are_passed_over() {
    // Insert mode into a table without a unique key: a record applied twice,
    // or an aborted one, shows up as a row.
    let s = Setup::new(
        "clients_tx",
        1,
        "row_id BIGINT AUTO_INCREMENT PRIMARY KEY, id BIGINT NOT NULL, name VARCHAR(64), amount DECIMAL(12,2), note VARCHAR(16)",
        &librdkafka("[mysql]\nwrite_mode = \"insert\"\nkey_columns = []\ndelete_on_tombstone = false"),
    );
    produce_transaction(&s.topic, 0, &json_records(&orders(0, 0, 100)), true);
    produce_transaction(&s.topic, 0, &json_records(&orders(0, 100, 50)), false);
    produce_json(&s.topic, 0, &orders(0, 150, 10));
    produce_transaction(&s.topic, 0, &json_records(&orders(0, 160, 30)), true);
    // The log ends with a commit marker.
    let mut service = s.start();
    s.wait_rows(140, Duration::from_secs(60));
    // The committed offset passes the final marker.
    s.wait_committed_at_log_end(Duration::from_secs(30));
    sigterm_clean(&mut service);
    assert_eq!(s.count(""), 140, "the committed records, once each");
    assert_eq!(
        s.count("WHERE id >= 100 AND id < 150"),
        0,
        "no record of the aborted transaction"
    );
    assert_eq!(dead_letters(&s), 0, "no dead letter for markers");
    s.assert_committed_at_log_end();
}

#[test]
fn a_compacted_topic_whose_compressed_batches_lost_records_gives_no_dead_letters() {
    let topic = unique_name("clients_compact");
    create_topic_with(
        &topic,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "100"),
            ("min.compaction.lag.ms", "0"),
        ],
    );
    // Ten rounds of the same 50 keys, in gzip batches of 25.
    let round = |r: i64| -> Vec<KeyValue> {
        (0..50)
            .map(|k| {
                (
                    Some(serde_json::to_vec(&json!({ "id": k })).unwrap()),
                    Some(
                        serde_json::to_vec(&json!({"id": k, "name": format!("round-{r}")}))
                            .unwrap(),
                    ),
                )
            })
            .collect()
    };
    let options = ProduceOptions {
        compression: "gzip",
        batch_records: 25,
    };
    for r in 0..10 {
        produce_with(&topic, 0, &round(r), &options);
        // New segments, so that the cleaner has closed ones to compact.
        std::thread::sleep(Duration::from_millis(150));
    }
    let produced = 500;
    wait_until(
        "the cleaner to remove superseded records",
        Duration::from_secs(60),
        || {
            // A record after the wait rolls the last segment of rounds.
            produce_with(&topic, 0, &round(9), &options);
            let left = fetch_records(&topic, 0, 0).len();
            if left < produced / 2 {
                Ok(left)
            } else {
                Err(format!("{left} records left"))
            }
        },
    );
    let s = Setup::existing_topic(
        &topic,
        "id BIGINT PRIMARY KEY, name VARCHAR(64)",
        &librdkafka(""),
    );
    let mut service = s.start();
    s.wait_rows(50, Duration::from_secs(60));
    s.wait_committed_at_log_end(Duration::from_secs(30));
    sigterm_clean(&mut service);
    assert_eq!(
        s.count("WHERE name = 'round-9'"),
        50,
        "every key at its last value"
    );
    assert_eq!(
        dead_letters(&s),
        0,
        "no dead letter for the gaps compaction left"
    );
}

fn sasl_config(sasl: &SaslEnv, mechanism: &str) -> String {
    let brokers: Vec<String> = sasl.brokers.iter().map(|b| format!("\"{b}\"")).collect();
    librdkafka(&format!(
        "brokers = [{}]\nsecurity_protocol = \"sasl_ssl\"\nsasl_mechanism = \"{mechanism}\"\n\
         sasl_username = \"{}\"\nssl_ca_location = \"{}\"",
        brokers.join(", "),
        sasl.user,
        sasl.ca_path.display()
    ))
}

#[test]
fn sasl_ssl_with_scram_lands_rows_and_a_wrong_password_exits_2() {
    let sasl = sasl_env();
    let s = Setup::new(
        "clients_sasl",
        2,
        ORDERS,
        &sasl_config(&sasl, "SCRAM-SHA-512"),
    );
    s.produce_orders(0..2, 0, 200);
    let password = [("KAFKA_SASL_PASSWORD", sasl.password.as_str())];
    let check = run_binary_with_env(
        &["check", "--config", s.config_arg()],
        &password,
        Duration::from_secs(60),
    );
    assert!(check.status.success(), "check over SASL_SSL: {check:?}");
    let mut service = Service::start_with_env(&["run", "--config", s.config_arg()], &password);
    s.wait_rows(400, Duration::from_secs(60));
    sigterm_clean(&mut service);
    s.assert_committed_at_log_end();
    assert!(
        !service.log_text().contains(&sasl.password),
        "the password is never logged"
    );

    let wrong = "not-the-password-4711";
    let bad = [("KAFKA_SASL_PASSWORD", wrong)];
    for command in ["check", "run"] {
        let out = run_binary_with_env(
            &[command, "--config", s.config_arg()],
            &bad,
            Duration::from_secs(90),
        );
        let text = format!("{}{}", out.stdout, out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{command} with a wrong password: {text}"
        );
        assert!(
            text.contains(&sasl.brokers[0]),
            "{command} names the broker: {text}"
        );
        assert!(
            text.to_lowercase().contains("authentication"),
            "{command} says what failed: {text}"
        );
        assert!(
            !text.contains(wrong),
            "{command} never prints the password: {text}"
        );
    }
}

/// Runs the service on `s` (one partition, 100 records read), deletes and
/// recreates the topic with more records than the old position, and checks
/// that every new record lands and is committed to the new log's end. Returns
/// the stopped service's log.
pub fn recreate_while_running(s: &Setup) -> String {
    s.produce_orders(0..1, 0, 100);
    let mut service = s.start();
    s.wait_rows(100, Duration::from_secs(60));
    wait_until(
        "offset 100 committed",
        Duration::from_secs(30),
        || match group_offsets(&s.group, &s.topic).get(&0) {
            Some(Some(100)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // More new records than the old position, so that the old position lies
    // inside the new log.
    delete_topic(&s.topic);
    create_topic(&s.topic, 1);
    s.produce_orders(0..1, 1_000, 300);
    s.wait_rows(400, Duration::from_secs(90));
    wait_until(
        "the new log committed to its end",
        Duration::from_secs(30),
        || match group_offsets(&s.group, &s.topic).get(&0) {
            Some(Some(300)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    sigterm_clean(&mut service);
    let log = service.log_text();
    assert!(
        log.contains("deleted and created again"),
        "a warning names the recreation:\n{log}"
    );
    log
}

#[test]
fn a_topic_deleted_and_created_again_is_read_from_its_start_while_running_and_while_stopped() {
    let s = Setup::new("clients_recreate", 1, ORDERS, &librdkafka(""));
    recreate_while_running(&s);

    // While stopped: the group's offset (300) lies inside the newer log again.
    delete_topic(&s.topic);
    create_topic(&s.topic, 1);
    s.produce_orders(0..1, 5_000, 500);
    let mut service = s.start();
    s.wait_rows(900, Duration::from_secs(90));
    sigterm_clean(&mut service);
    assert_eq!(
        s.count("WHERE id >= 5000 AND id < 5500"),
        500,
        "every record of the newest topic"
    );
    // Kafka drops a deleted topic's group offsets; an offset that survives
    // (committed with the old topic's id) is not used either.
    let log = service.log_text();
    assert!(
        log.contains("partition 0: starting at offset 0 ("),
        "the newest topic is read from its start:\n{log}"
    );
    s.assert_committed_at_log_end();
}

#[test]
/// The `kafka` crate's client on the broker of this phase: Kafka 4.x refuses
/// its protocol versions, and the service says so and exits 2.
fn the_kafka_rust_client_is_refused_by_kafka_4_with_exit_2_and_advice() {
    let version = std::env::var("KAFKA_VERSION").unwrap_or_else(|_| "4.4.0".to_string());
    let s = Setup::new("kr_kafka4", 1, ORDERS, "[kafka]\nclient = \"kafka-rust\"");
    let check = run_binary(
        &["check", "--config", s.config_arg()],
        Duration::from_secs(60),
    );
    if !version.starts_with('4') {
        assert_eq!(check.status.code(), Some(0), "Kafka {version}: {check:?}");
        return;
    }
    let advice = |text: &str| {
        text.contains("rejects the protocol versions of kafka.client = \"kafka-rust\"")
            && text.contains("use kafka.client = \"librdkafka\"")
    };
    assert_eq!(check.status.code(), Some(2), "Kafka {version}: {check:?}");
    assert!(advice(&check.stderr), "{check:?}");
    let mut service = s.start();
    let status = service.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(2), "{}", service.log_text());
    assert!(advice(&service.log_text()), "{}", service.log_text());
}
