//! The pure-Rust client (`kafka.client = "kafka-rust"`, the `kafka` crate
//! 0.10) against the defects of its fetch path: plain records before a
//! compressed batch in one response, codecs it lacks (lz4, zstd),
//! transaction markers, records larger than the fetch size, and a broker
//! (Kafka 4.x) that refuses its protocol versions.
//!
//! Records are produced with `kcat` (librdkafka), which sends a batch
//! uncompressed when compressing does not shrink it: one small record per
//! call makes a plain batch, several alike records in one call a compressed
//! one. Each test first shows, with the crate alone, that the log has the
//! shape that trips the crate, so that it cannot pass by accident.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use kafka::client::FetchPartition;
use serde_json::json;

use crate::common::*;
use crate::setup::{orders, sigterm_clean, Setup, ORDERS};

const KAFKA_RUST: &str = "[kafka]\nclient = \"kafka-rust\"";

fn kafka_rust(extra: &str) -> String {
    format!("{KAFKA_RUST}\n{extra}")
}

/// Appends `values` to one partition with kcat, compressed with `codec`
/// (none, gzip, snappy, lz4, zstd), in one batch as far as librdkafka can.
fn kcat_produce(topic: &str, partition: i32, values: &[serde_json::Value], codec: &str) {
    let mut child = Command::new("kcat")
        .args(["-P", "-b", &env().brokers.join(","), "-t", topic])
        .args(["-p", &partition.to_string(), "-z", codec])
        .args(["-X", "linger.ms=200", "-X", "acks=all"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run kcat (apt-get install kcat): {error}"));
    let mut input = String::new();
    for value in values {
        input.push_str(&value.to_string());
        input.push('\n');
    }
    child
        .stdin
        .take()
        .expect("kcat's stdin")
        .write_all(input.as_bytes())
        .expect("writing to kcat");
    let output = child.wait_with_output().expect("waiting for kcat");
    assert!(
        output.status.success(),
        "kcat -P {topic}/{partition} -z {codec} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One uncompressed batch per record: one kcat call each.
fn kcat_plain(topic: &str, partition: i32, values: &[serde_json::Value]) {
    for value in values {
        kcat_produce(topic, partition, std::slice::from_ref(value), "gzip");
    }
}

/// What the crate alone answers for one fetch of a whole partition from
/// `offset`: the offsets it returns, or its error.
fn crate_fetch(topic: &str, partition: i32, offset: i64) -> Result<Vec<i64>, String> {
    // The crate itself, as the service's kafka-rust client uses it.
    let mut client = kafka::client::KafkaClient::new(env().brokers.clone());
    client
        .load_metadata(&[topic])
        .map_err(|error| format!("{error:?}"))?;
    let responses = client
        .fetch_messages(&[FetchPartition::new(topic, partition, offset).with_max_bytes(1 << 20)])
        .map_err(|error| format!("{error:?}"))?;
    let mut offsets = Vec::new();
    for response in &responses {
        for t in response.topics() {
            for p in t.partitions() {
                let data = p.data().map_err(|error| format!("{error:?}"))?;
                offsets.extend(data.messages().iter().map(|m| m.offset));
            }
        }
    }
    Ok(offsets)
}

fn dead_letter_count(s: &Setup) -> i64 {
    // The service creates the table at its start.
    query_count(&format!("SELECT COUNT(*) FROM `{}`", s.dead_letters))
}

fn status_json(s: &Setup) -> serde_json::Value {
    let out = run_binary(
        &["status", "--config", s.config_arg(), "--json"],
        Duration::from_secs(60),
    );
    // 1 while a partition is blocked.
    assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
    serde_json::from_str(&out.stdout).expect("status --json prints JSON")
}

#[test]
fn plain_records_before_compressed_batches_all_land() {
    let s = Setup::new("kr_mixed", 1, ORDERS, KAFKA_RUST);
    let o = |first: i64, count: i64| orders(0, first, count);
    // plain 0-2, gzip 3-7, plain 8-9, snappy 10-14, plain 15, gzip 16-20, plain 21-22
    kcat_plain(&s.topic, 0, &o(0, 3));
    kcat_produce(&s.topic, 0, &o(3, 5), "gzip");
    kcat_plain(&s.topic, 0, &o(8, 2));
    kcat_produce(&s.topic, 0, &o(10, 5), "snappy");
    kcat_plain(&s.topic, 0, &o(15, 1));
    kcat_produce(&s.topic, 0, &o(16, 5), "gzip");
    kcat_plain(&s.topic, 0, &o(21, 2));
    assert_eq!(log_end_offsets(&s.topic).get(&0), Some(&23));
    // The crate alone skips the plain records before the first wrapper.
    assert_eq!(
        crate_fetch(&s.topic, 0, 0),
        Ok((3..8).collect::<Vec<i64>>()),
        "the log should start with plain batches and then a gzip batch"
    );

    let mut service = s.start();
    s.wait_rows(23, Duration::from_secs(60));
    wait_until("committed at the log end", Duration::from_secs(30), || {
        let committed = group_offsets(&s.group, &s.topic);
        if committed.get(&0) == Some(&Some(23)) {
            Ok(())
        } else {
            Err(format!("{committed:?}"))
        }
    });
    sigterm_clean(&mut service);
    assert_eq!(s.count("WHERE name = CONCAT('name-', id)"), 23);
    assert_eq!(
        s.count("WHERE id BETWEEN 0 AND 22"),
        23,
        "every offset is a row"
    );
    assert_eq!(dead_letter_count(&s), 0);
    s.assert_committed_at_log_end();
}

#[test]
fn lz4_and_zstd_partitions_block_with_advice_and_the_gzip_one_flows() {
    let s = Setup::new("kr_codecs", 3, ORDERS, KAFKA_RUST);
    // Partition 0: gzip and plain, all readable.
    kcat_plain(&s.topic, 0, &orders(0, 0, 2));
    kcat_produce(&s.topic, 0, &orders(0, 2, 10), "gzip");
    kcat_plain(&s.topic, 0, &orders(0, 12, 2));
    // Partitions 1 and 2: plain records 0-2, then an lz4 (zstd) batch at 3,
    // then plain records after it.
    for (p, codec) in [(1, "lz4"), (2, "zstd")] {
        kcat_plain(&s.topic, p, &orders(p, 0, 3));
        kcat_produce(&s.topic, p, &orders(p, 3, 5), codec);
        kcat_plain(&s.topic, p, &orders(p, 8, 2));
    }
    assert_eq!(
        crate_fetch(&s.topic, 1, 0),
        Err("UnsupportedCompression".to_string()),
        "the crate alone refuses the lz4 batch"
    );
    assert_eq!(
        crate_fetch(&s.topic, 2, 3),
        Err("Kafka(Unknown)".to_string()),
        "the broker refuses to convert the zstd batch"
    );

    let mut service = s.start();
    // Partition 0 lands whole; 1 and 2 land their records before the batch.
    s.wait_rows(14 + 3 + 3, Duration::from_secs(60));
    let report = wait_until(
        "partitions 1 and 2 blocked",
        Duration::from_secs(60),
        || {
            let report = status_json(&s);
            let states: Vec<&str> = (0..3)
                .map(|p| report["partitions"][p]["state"].as_str().unwrap_or("?"))
                .collect();
            if states == ["flowing", "blocked", "blocked"] {
                Ok(report)
            } else {
                Err(format!("states {states:?}"))
            }
        },
    );
    for (p, codec) in [(1, "lz4"), (2, "zstd")] {
        let error = report["partitions"][p]["last_error"].as_str().unwrap_or("");
        assert!(
            error.contains(codec) && error.contains("kafka.client = \"librdkafka\""),
            "partition {p}: {error}"
        );
        assert!(error.contains("offset 3"), "partition {p}: {error}");
    }
    wait_for_eq(
        "partition 0 committed at its log end, 1 and 2 at their batches",
        Duration::from_secs(30),
        [(0, Some(14)), (1, Some(3)), (2, Some(3))]
            .into_iter()
            .collect(),
        || group_offsets(&s.group, &s.topic),
    );
    let live = s.live(1).expect("status file");
    assert_eq!(live["blocked_at_offset"], 3, "{live}");
    sigterm_clean(&mut service);
    assert_eq!(s.count("WHERE id < 1000000"), 14);
    assert_eq!(s.count("WHERE id BETWEEN 1000000 AND 1999999"), 3);
    assert_eq!(s.count("WHERE id BETWEEN 2000000 AND 2999999"), 3);
    assert_eq!(dead_letter_count(&s), 0);
    let committed = group_offsets(&s.group, &s.topic);
    assert_eq!(
        committed.get(&1),
        Some(&Some(3)),
        "nothing committed past the lz4 batch"
    );
    assert_eq!(
        committed.get(&2),
        Some(&Some(3)),
        "nothing committed past the zstd batch"
    );
    let log = service.log_text();
    assert!(
        log.contains("lz4") && log.contains("zstd"),
        "the log names the codecs:\n{log}"
    );
}

/// Commits `transactions` transactions of `per_transaction` orders each on
/// partition 0, each followed by its commit marker.
fn produce_transactions(topic: &str, transactions: i64, per_transaction: i64) {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", env().brokers.join(","))
        .set("transactional.id", unique_name("kr_tx"))
        .create()
        .expect("a transactional producer");
    let timeout = Duration::from_secs(30);
    producer
        .init_transactions(timeout)
        .expect("init_transactions");
    for t in 0..transactions {
        producer.begin_transaction().expect("begin_transaction");
        for value in orders(0, t * per_transaction, per_transaction) {
            let payload = value.to_string();
            producer
                .send(
                    BaseRecord::<(), str>::to(topic)
                        .partition(0)
                        .payload(&payload),
                )
                .unwrap_or_else(|(error, _)| panic!("send: {error}"));
        }
        producer
            .commit_transaction(timeout)
            .expect("commit_transaction");
    }
}

#[test]
fn transaction_markers_are_stepped_over_without_dead_letters() {
    // A small fetch size: some fetches start at a marker with records behind
    // it. Insert mode into a table without a unique key: a record written
    // twice is a second row.
    let s = Setup::new(
        "kr_tx",
        1,
        "row_id BIGINT AUTO_INCREMENT PRIMARY KEY, id BIGINT NOT NULL, name VARCHAR(64), amount DECIMAL(12,2)",
        &kafka_rust(
            "fetch_max_bytes_per_partition = 1024\n[mysql]\nwrite_mode = \"insert\"\nkey_columns = []\ndelete_on_tombstone = false",
        ),
    );
    produce_transactions(&s.topic, 20, 5);
    // 100 records and 20 markers; the log ends with a marker.
    assert_eq!(log_end_offsets(&s.topic).get(&0), Some(&120));
    assert_eq!(
        crate_fetch(&s.topic, 0, 119),
        Ok(Vec::new()),
        "the crate alone finds nothing at the last marker"
    );

    let mut service = s.start();
    s.wait_rows(100, Duration::from_secs(60));
    wait_for_eq(
        "committed at the log end, past the last marker",
        Duration::from_secs(30),
        Some(Some(120)),
        || group_offsets(&s.group, &s.topic).get(&0).copied(),
    );
    // More after the markers: read on from there.
    kcat_plain(&s.topic, 0, &orders(0, 100, 2));
    s.wait_rows(102, Duration::from_secs(60));
    sigterm_clean(&mut service);
    assert_eq!(s.count("WHERE name = CONCAT('name-', id)"), 102);
    assert_eq!(
        query_count(&format!("SELECT COUNT(DISTINCT id) FROM `{}`", s.table)),
        102,
        "each record written once"
    );
    assert_eq!(
        dead_letter_count(&s),
        0,
        "a marker is not an oversized record"
    );
    s.assert_committed_at_log_end();
}

#[test]
fn a_record_larger_than_the_fetch_size_lands_and_one_past_the_cap_is_dead_lettered() {
    // Fetch size 1 KiB; a batch larger than 2 * max_record_bytes + 64 KiB
    // (here 104 KiB) is not fetched at all.
    let s = Setup::new(
        "kr_big",
        1,
        "id BIGINT PRIMARY KEY, name VARCHAR(64), note MEDIUMTEXT",
        &kafka_rust("fetch_max_bytes_per_partition = 1024\n[worker]\nmax_record_bytes = 20000"),
    );
    let big = |id: i64, size: usize| json!({"id": id, "name": format!("name-{id}"), "note": "x".repeat(size)});
    kcat_produce(&s.topic, 0, &[json!({"id": 0, "name": "name-0"})], "none");
    kcat_produce(&s.topic, 0, &[big(1, 15_000)], "none");
    kcat_produce(&s.topic, 0, &[json!({"id": 2, "name": "name-2"})], "none");
    kcat_produce(&s.topic, 0, &[big(3, 150_000)], "none");
    kcat_produce(&s.topic, 0, &[json!({"id": 4, "name": "name-4"})], "none");

    let mut service = s.start();
    s.wait_rows(4, Duration::from_secs(60));
    wait_for_eq("one dead letter", Duration::from_secs(30), 1, || {
        dead_letter_count(&s)
    });
    wait_for_eq(
        "committed at the log end",
        Duration::from_secs(30),
        Some(Some(5)),
        || group_offsets(&s.group, &s.topic).get(&0).copied(),
    );
    sigterm_clean(&mut service);
    assert_eq!(s.count("WHERE id IN (0, 1, 2, 4)"), 4);
    let rows = query_rows(&format!("SELECT `offset` FROM `{}`", s.dead_letters));
    assert_eq!(
        rows,
        vec![vec![Some("3".to_string())]],
        "the record past the cap"
    );
}

#[test]
fn records_of_a_batch_too_large_to_fetch_land_or_keep_their_key_size_and_value() {
    // Fetch size 1 KiB, max_record_bytes 20,000: a batch over 104 KiB is
    // not fetched; its records are read from the header fetch instead.
    let s = Setup::new(
        "kr_huge_batch",
        1,
        "id BIGINT PRIMARY KEY, name VARCHAR(64), note MEDIUMTEXT",
        &kafka_rust("fetch_max_bytes_per_partition = 1024\n[worker]\nmax_record_bytes = 20000"),
    );
    let value = |id: i64, size: usize| {
        serde_json::to_vec(
            &json!({"id": id, "name": format!("name-{id}"), "note": "x".repeat(size)}),
        )
        .unwrap()
    };
    let plain = |batch_records: usize| ProduceOptions {
        compression: "none",
        batch_records,
    };
    // One record of 150 KB alone, then eight of 15 KB in one batch of 120 KB.
    let huge = value(1, 150_000);
    produce_with(
        &s.topic,
        0,
        &[(Some(b"key-1".to_vec()), Some(huge.clone()))],
        &plain(1),
    );
    let eight: Vec<KeyValue> = (10..18)
        .map(|id| {
            (
                Some(format!("key-{id}").into_bytes()),
                Some(value(id, 15_000)),
            )
        })
        .collect();
    produce_with(&s.topic, 0, &eight, &plain(8));
    produce_with(&s.topic, 0, &[(None, Some(value(20, 1)))], &plain(1));

    let mut service = s.start();
    s.wait_committed_at_log_end(Duration::from_secs(60));
    sigterm_clean(&mut service);
    assert_eq!(
        s.count("WHERE id BETWEEN 10 AND 20 AND LENGTH(note) IN (15000, 1)"),
        9,
        "the eight records of the large batch and the last one land"
    );
    let rows = query_rows(&format!(
        "SELECT `offset`, record_key, LENGTH(record_value), LEFT(record_value, 40), error_text FROM `{}`",
        s.dead_letters
    ));
    let expected_start = String::from_utf8(huge[..40].to_vec()).unwrap();
    assert_eq!(
        rows,
        vec![vec![
            Some("0".to_string()),
            Some("key-1".to_string()),
            Some("20000".to_string()),
            Some(expected_start),
            Some(format!(
                "record of {} bytes is larger than 20000 bytes and than any fetch; \
                 the dead letter keeps the first 20000 bytes of its value",
                5 + huge.len()
            )),
        ]],
        "one dead letter, with its key, its size and the start of its value"
    );
}

#[test]
fn check_passes_against_kafka_3() {
    let s = Setup::new("kr_check", 2, ORDERS, KAFKA_RUST);
    kcat_plain(&s.topic, 0, &orders(0, 0, 2));
    let out = run_binary(
        &["check", "--config", s.config_arg()],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains("kafka: fetched partition 0 at offset 0"),
        "{out:?}"
    );
}

/// Kafka 4.0 removed ListOffsets v0, Fetch v0 and OffsetCommit v1, which the
/// crate speaks. Meaningful on a 4.x broker (`KAFKA_VERSION`, "4.4.0" when
/// unset); against 3.x it checks that `check` passes.
#[test]
fn a_missing_topic_is_a_setup_error() {
    let topic = unique_name("kr_missing");
    let dir = test_dir("kr_missing");
    // Under conf/: the pid and status files go to the test's own run/.
    let config = write_config(
        &dir.join("conf"),
        &test_config(&topic, &format!("{topic}_g"), &topic, KAFKA_RUST),
    );
    let config = config.to_str().expect("utf-8 path");
    let check = run_binary(&["check", "--config", config], Duration::from_secs(60));
    assert_eq!(check.status.code(), Some(2), "{check:?}");
    assert!(check.stderr.contains("does not exist"), "{check:?}");
    let run = run_binary(&["run", "--config", config], Duration::from_secs(60));
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    assert!(run.stderr.contains("does not exist"), "{run:?}");
}

/// A stand-in for a Kafka 4.0 broker, on a port of its own: Metadata v0
/// answers (one partition led by itself), ApiVersions answers with Kafka
/// 4.0's ranges, and any other request gets its connection closed, as Kafka
/// does with a version it does not support. Returns its address.
fn fake_kafka_4() -> String {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as i16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    fn serve(mut stream: TcpStream, port: u16) {
        loop {
            let mut size = [0; 4];
            if stream.read_exact(&mut size).is_err() {
                return;
            }
            let mut request = vec![0; i32::from_be_bytes(size) as usize];
            if stream.read_exact(&mut request).is_err() {
                return;
            }
            let key = i16::from_be_bytes([request[0], request[1]]);
            let version = i16::from_be_bytes([request[2], request[3]]);
            let mut response = request[4..8].to_vec(); // correlation id
            let client_id_len = i16::from_be_bytes([request[8], request[9]]).max(0) as usize;
            let body = &request[10 + client_id_len..];
            match (key, version) {
                (3, 0) => {
                    // The first requested topic's name.
                    let len = i16::from_be_bytes([body[4], body[5]]) as usize;
                    let topic = String::from_utf8_lossy(&body[6..6 + len]).into_owned();
                    response.extend_from_slice(&1i32.to_be_bytes());
                    response.extend_from_slice(&1i32.to_be_bytes());
                    string(&mut response, "127.0.0.1");
                    response.extend_from_slice(&i32::from(port).to_be_bytes());
                    response.extend_from_slice(&1i32.to_be_bytes());
                    response.extend_from_slice(&0i16.to_be_bytes());
                    string(&mut response, &topic);
                    response.extend_from_slice(&1i32.to_be_bytes());
                    response.extend_from_slice(&0i16.to_be_bytes());
                    for v in [0i32, 1, 1, 1, 1, 1] {
                        // partition 0, leader 1, replicas [1], isr [1]
                        response.extend_from_slice(&v.to_be_bytes());
                    }
                }
                (18, _) => {
                    let ranges: [(i16, i16, i16); 8] = [
                        (0, 3, 12),
                        (1, 4, 17),
                        (2, 1, 10),
                        (3, 0, 13),
                        (8, 2, 9),
                        (9, 1, 9),
                        (10, 0, 6),
                        (18, 0, 4),
                    ];
                    response.extend_from_slice(&0i16.to_be_bytes());
                    response.extend_from_slice(&(ranges.len() as i32).to_be_bytes());
                    for (k, min, max) in ranges {
                        for v in [k, min, max] {
                            response.extend_from_slice(&v.to_be_bytes());
                        }
                    }
                }
                _ => return,
            }
            let mut message = (response.len() as i32).to_be_bytes().to_vec();
            message.extend_from_slice(&response);
            if stream.write_all(&message).is_err() {
                return;
            }
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("a local port");
    let port = listener.local_addr().expect("its address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream, port));
        }
    });
    format!("127.0.0.1:{port}")
}

/// The refusal logic of `refused_by_kafka_4_with_exit_2_and_advice`, on any
/// broker version: against a stand-in that refuses as Kafka 4.0 does.
#[test]
fn a_broker_refusing_the_crates_versions_is_a_setup_error_with_advice() {
    let broker = fake_kafka_4();
    let topic = unique_name("kr_fake4");
    let dir = test_dir("kr_fake4");
    let overrides = format!("{KAFKA_RUST}\nbrokers = [\"{broker}\"]");
    // Under conf/: the pid and status files go to the test's own run/.
    let config = write_config(
        &dir.join("conf"),
        &test_config(&topic, &format!("{topic}_g"), &topic, &overrides),
    );
    let config = config.to_str().expect("utf-8 path");
    let refused = "rejects the protocol versions of kafka.client = \"kafka-rust\" \
                   (ListOffsets v0, Fetch v0, OffsetCommit v1: removed in Kafka 4.0); \
                   use kafka.client = \"librdkafka\"";
    let check = run_binary(&["check", "--config", config], Duration::from_secs(60));
    assert_eq!(check.status.code(), Some(2), "{check:?}");
    assert!(check.stderr.contains(refused), "{check:?}");
    let run = run_binary(&["run", "--config", config], Duration::from_secs(60));
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    assert!(run.stderr.contains(refused), "{run:?}");
}

#[test]
fn group_offsets_written_by_kafka_rust_are_taken_over_by_librdkafka() {
    // Insert mode into a table without a unique key: a replayed record
    // shows up as a second row, a skipped one as a missing row.
    let s = Setup::new(
        "kr_switch",
        2,
        "row_id BIGINT AUTO_INCREMENT PRIMARY KEY, id BIGINT NOT NULL, name VARCHAR(64), amount DECIMAL(12,2), note VARCHAR(16)",
        &kafka_rust("[mysql]\nwrite_mode = \"insert\"\nkey_columns = []\ndelete_on_tombstone = false"),
    );
    s.produce_orders(0..2, 0, 500);
    let mut service = s.start();
    s.wait_rows(1_000, Duration::from_secs(60));
    sigterm_clean(&mut service);
    s.assert_committed_at_log_end();

    // The upgrade: the same config with the default client.
    let text = std::fs::read_to_string(&s.config).expect("config");
    let switched = text.replace("client = \"kafka-rust\"", "client = \"librdkafka\"");
    assert_ne!(text, switched, "the config names the client");
    std::fs::write(&s.config, switched).expect("config");
    s.produce_orders(0..2, 500, 300);
    let mut service = s.start();
    s.wait_rows(1_600, Duration::from_secs(60));
    sigterm_clean(&mut service);
    assert_eq!(
        query_count(&format!("SELECT COUNT(DISTINCT id) FROM `{}`", s.table)),
        1_600,
        "no replay and no gap after the switch"
    );
    assert!(
        service
            .log_text()
            .contains("stored offset; stored 500 in kafka group"),
        "librdkafka starts at the kafka crate's committed offsets:\n{}",
        service.log_text()
    );
    s.assert_committed_at_log_end();
}

#[test]
fn a_topic_deleted_and_created_again_while_running_is_read_from_its_start() {
    let s = Setup::new("kr_recreate", 1, ORDERS, KAFKA_RUST);
    crate::clients::recreate_while_running(&s);
}
