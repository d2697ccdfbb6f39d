//! Proves that the test harness is real: what `common` writes to Kafka and
//! MySQL can be read back by independent means (the harness's own librdkafka
//! consumer, Kafka's own command-line tools, a second MySQL connection as
//! root), and `wait_until` really fails. Nothing here uses the kafka2mysql
//! library.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::common::{self, FetchedRecord, KeyValue, PartitionOffset, ProduceOptions};

fn fetched(offset: i64, (key, value): &KeyValue) -> FetchedRecord {
    FetchedRecord {
        offset,
        key: key.clone().unwrap_or_default(),
        value: value.clone().unwrap_or_default(),
        null_key: key.is_none(),
        null_value: value.is_none(),
    }
}

#[test]
fn records_produced_to_each_partition_are_fetched_back_from_that_partition() {
    let topic = common::unique_name("harness_fetch");
    common::create_topic(&topic, 4);

    let mut produced: BTreeMap<i32, Vec<KeyValue>> = BTreeMap::new();
    for partition in 0..4 {
        let records: Vec<KeyValue> = (0..2)
            .map(|index| {
                (
                    Some(format!("key-{partition}-{index}").into_bytes()),
                    Some(format!(r#"{{"partition":{partition},"index":{index}}}"#).into_bytes()),
                )
            })
            .collect();
        assert_eq!(
            common::produce(&topic, partition, &records),
            vec![0, 1],
            "offsets of {topic}/{partition}"
        );
        produced.insert(partition, records);
    }
    // Nulls and empties, kept apart: a key-less tombstone, an empty key with
    // an empty value, a null key with an empty value, an empty key with a
    // null value.
    let odd: Vec<KeyValue> = vec![
        (None, None),
        (Some(Vec::new()), Some(Vec::new())),
        (None, Some(Vec::new())),
        (Some(Vec::new()), None),
    ];
    assert_eq!(common::produce(&topic, 3, &odd), vec![2, 3, 4, 5]);
    produced.get_mut(&3).expect("partition 3").extend(odd);

    for (partition, records) in &produced {
        let expected: Vec<FetchedRecord> = records
            .iter()
            .enumerate()
            .map(|(offset, record)| fetched(offset as i64, record))
            .collect();
        let read = common::fetch_records(&topic, *partition, 0);
        assert_eq!(read, expected, "records of {topic}/{partition}");
        assert_eq!(
            read.iter()
                .map(FetchedRecord::key_value)
                .collect::<Vec<_>>(),
            *records,
            "key_value() of {topic}/{partition}"
        );
        assert_eq!(
            common::fetch_records(&topic, *partition, 1),
            expected[1..],
            "records of {topic}/{partition} from offset 1"
        );
        assert_eq!(
            common::fetch_records(&topic, *partition, records.len() as i64),
            [],
            "records of {topic}/{partition} from its end"
        );
    }

    // Kafka's own tool agrees with what the consumer saw.
    assert_eq!(
        common::log_end_offsets(&topic),
        BTreeMap::from([(0, 2), (1, 2), (2, 2), (3, 6)])
    );
    assert_eq!(
        common::log_start_offsets(&topic),
        (0..4).map(|partition| (partition, 0)).collect()
    );
    assert_eq!(common::topic_partition_ids(&topic), vec![0, 1, 2, 3]);

    common::delete_topic(&topic);
    assert!(
        common::topic_partitions_with_leader(&topic).is_err(),
        "a deleted topic has no partitions"
    );
}

#[test]
fn records_produced_compressed_in_batches_are_fetched_back_exactly() {
    let topic = common::unique_name("harness_batches");
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    common::create_topic(&topic, codecs.len() as i32);
    for (partition, compression) in codecs.iter().enumerate() {
        let partition = partition as i32;
        let records: Vec<KeyValue> = (0..250)
            .map(|index| {
                (
                    (index % 7 != 0).then(|| format!("key-{index}").into_bytes()),
                    (index % 5 != 0).then(|| {
                        format!("{compression} value {index} ")
                            .repeat(index % 4)
                            .into_bytes()
                    }),
                )
            })
            .collect();
        let options = ProduceOptions {
            compression,
            batch_records: 100,
        };
        assert_eq!(
            common::produce_with(&topic, partition, &records, &options),
            (0..250).collect::<Vec<i64>>(),
            "offsets of {compression} batches"
        );
        let expected: Vec<FetchedRecord> = records
            .iter()
            .enumerate()
            .map(|(offset, record)| fetched(offset as i64, record))
            .collect();
        assert_eq!(
            common::fetch_records(&topic, partition, 0),
            expected,
            "{compression} batches of {topic}/{partition}"
        );
        // From the middle of a batch: the records before the offset asked
        // for are not returned.
        assert_eq!(
            common::fetch_records(&topic, partition, 150),
            expected[150..],
            "{compression} batches of {topic}/{partition} from offset 150"
        );
    }
    assert_eq!(
        common::log_end_offsets(&topic),
        (0..codecs.len() as i32)
            .map(|partition| (partition, 250))
            .collect()
    );
    common::delete_topic(&topic);
}

#[test]
fn records_of_aborted_transactions_and_transaction_markers_are_not_fetched() {
    let topic = common::unique_name("harness_txn");
    common::create_topic(&topic, 1);
    let batch = |name: &str| -> Vec<KeyValue> {
        (0..3)
            .map(|index| (None, Some(format!("{name}-{index}").into_bytes())))
            .collect()
    };
    let committed = batch("committed");
    let aborted = batch("aborted");
    let plain = batch("plain");
    // Each transaction ends with a marker that takes an offset of its own.
    assert_eq!(
        common::produce_transaction(&topic, 0, &committed, true),
        vec![0, 1, 2]
    );
    assert_eq!(
        common::produce_transaction(&topic, 0, &aborted, false),
        vec![4, 5, 6]
    );
    assert_eq!(common::produce(&topic, 0, &plain), vec![8, 9, 10]);

    let read: Vec<(i64, KeyValue)> = common::fetch_records(&topic, 0, 0)
        .iter()
        .map(|record| (record.offset, record.key_value()))
        .collect();
    let expected: Vec<(i64, KeyValue)> = [0, 1, 2]
        .into_iter()
        .zip(committed)
        .chain([8, 9, 10].into_iter().zip(plain))
        .collect();
    assert_eq!(read, expected);
    assert_eq!(common::log_end_offsets(&topic), BTreeMap::from([(0, 11)]));

    common::delete_topic(&topic);
}

#[test]
fn group_offsets_committed_with_the_harness_client_are_read_by_the_consumer_groups_tool() {
    let topic = common::unique_name("harness_commit");
    let group = common::unique_name("harness_group");
    common::create_topic(&topic, 3);
    common::produce_json(
        &topic,
        0,
        &(0..5)
            .map(|n| serde_json::json!({ "id": n }))
            .collect::<Vec<_>>(),
    );
    common::produce_json(
        &topic,
        1,
        &(0..3)
            .map(|n| serde_json::json!({ "id": n }))
            .collect::<Vec<_>>(),
    );

    assert_eq!(
        common::group_offsets(&group, &topic),
        BTreeMap::from([(0, None), (1, None), (2, None)]),
        "a group that never committed"
    );
    let mut client = common::kafka_client();
    let nothing = |partition| PartitionOffset {
        partition,
        offset: -1,
    };
    assert_eq!(
        client.fetch_group_topic_offset(&group, &topic),
        Ok(vec![nothing(0), nothing(1), nothing(2)]),
        "a group that never committed, as the harness client sees it"
    );

    client
        .commit_offsets(&group, &[(&topic, 0, 5), (&topic, 1, 2)])
        .expect("commit group offsets");

    assert_eq!(
        common::group_offsets(&group, &topic),
        BTreeMap::from([(0, Some(5)), (1, Some(2)), (2, None)])
    );

    // A new client reads the same offsets back (-1: nothing committed).
    assert_eq!(
        common::kafka_client().fetch_group_topic_offset(&group, &topic),
        Ok(vec![
            PartitionOffset {
                partition: 0,
                offset: 5
            },
            PartitionOffset {
                partition: 1,
                offset: 2
            },
            nothing(2),
        ])
    );

    common::delete_topic(&topic);
}

#[test]
fn a_row_written_over_the_mysql_url_is_read_back_as_user_and_as_root() {
    let table = common::unique_name("harness_rows");
    common::create_table(
        &table,
        "id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(64) NULL, note TEXT NULL",
    );
    common::mysql_exec(&format!(
        "INSERT INTO `{table}` (id, name, note) VALUES (1, 'caf\u{e9} \u{1f600}', NULL), (2, 'two', 'x')"
    ));

    assert_eq!(
        common::query_count(&format!("SELECT COUNT(*) FROM `{table}`")),
        2
    );
    assert_eq!(
        common::query_rows(&format!("SELECT id, name, note FROM `{table}` ORDER BY id")),
        vec![
            vec![
                Some("1".to_owned()),
                Some("caf\u{e9} \u{1f600}".to_owned()),
                None
            ],
            vec![
                Some("2".to_owned()),
                Some("two".to_owned()),
                Some("x".to_owned())
            ],
        ]
    );
    assert_eq!(
        common::root_sql(&format!("SELECT id, name FROM `{table}` ORDER BY id")),
        "1\tcaf\u{e9} \u{1f600}\n2\ttwo\n"
    );

    common::drop_table(&table);
    assert_eq!(
        common::query_count(&format!(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = '{table}'"
        )),
        0
    );
}

#[test]
fn delete_records_moves_the_log_start_offset_and_older_offsets_go_out_of_range() {
    let topic = common::unique_name("harness_delete");
    common::create_topic(&topic, 2);
    let values: Vec<serde_json::Value> = (0..10).map(|n| serde_json::json!({ "id": n })).collect();
    common::produce_json(&topic, 0, &values);
    common::produce_json(&topic, 1, &values[..3]);

    common::delete_records(&topic, 0, 4);

    assert_eq!(
        common::log_start_offsets(&topic),
        BTreeMap::from([(0, 4), (1, 0)])
    );
    assert_eq!(
        common::log_end_offsets(&topic),
        BTreeMap::from([(0, 10), (1, 3)])
    );

    // Below the log start: the broker answers OffsetOutOfRange, which
    // librdkafka (auto.offset.reset=error) reports as AutoOffsetReset.
    match common::try_fetch_records(&topic, 0, 2) {
        Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset)) => {}
        other => panic!(
            "fetching {topic}/0 from offset 2: expected an offset out of range, got {other:?}"
        ),
    }

    let remaining: Vec<i64> = common::fetch_records(&topic, 0, 4)
        .iter()
        .map(|record| record.offset)
        .collect();
    assert_eq!(remaining, (4..10).collect::<Vec<_>>());

    common::delete_topic(&topic);
}

#[test]
fn unique_names_are_valid_and_distinct() {
    let first = common::unique_name("Some Prefix-1");
    let second = common::unique_name("Some Prefix-1");
    assert_ne!(first, second);
    for name in [&first, &second] {
        assert!(
            name.len() <= 64,
            "{name} is too long for a MySQL table name"
        );
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{name} has characters a topic, group or table cannot have"
        );
        assert!(name.starts_with("some_prefix_1_"), "{name}");
    }
}

#[test]
#[should_panic(expected = "waiting for the impossible; last seen: still 3")]
fn wait_until_fails_with_what_was_expected_and_what_was_seen() {
    common::wait_until(
        "the impossible",
        Duration::from_millis(200),
        || -> Result<(), String> { Err("still 3".to_owned()) },
    );
}

#[test]
fn test_config_merges_overrides_key_by_key() {
    let text = common::test_config(
        "t",
        "g",
        "tbl",
        "[mysql]\nwrite_mode = \"insert\"\n[retry]\nbusiness_attempts = 1\n",
    );
    let config: toml::Table = text.parse().expect("valid TOML");
    assert_eq!(config["mysql"]["table"].as_str(), Some("tbl"));
    assert_eq!(config["mysql"]["write_mode"].as_str(), Some("insert"));
    assert_eq!(config["retry"]["business_attempts"].as_integer(), Some(1));
    assert_eq!(config["retry"]["backoff_initial_ms"].as_integer(), Some(10));
    assert_eq!(config["kafka"]["topic"].as_str(), Some("t"));
    assert_eq!(
        config["kafka"].get("client").and_then(toml::Value::as_str),
        common::k2m_client().as_deref(),
        "kafka.client follows K2M_CLIENT"
    );
}

#[test]
fn test_config_names_the_kafka_client_only_when_asked() {
    let parse = |text: String| -> toml::Table { text.parse().expect("valid TOML") };

    let without = parse(common::test_config_for_client("t", "g", "tbl", "", None));
    assert_eq!(without["kafka"].get("client"), None);

    let with = parse(common::test_config_for_client(
        "t",
        "g",
        "tbl",
        "[kafka]\nfetch_max_wait_ms = 50\n",
        Some("kafka-rust"),
    ));
    assert_eq!(with["kafka"]["client"].as_str(), Some("kafka-rust"));
    assert_eq!(with["kafka"]["fetch_max_wait_ms"].as_integer(), Some(50));
    assert_eq!(with["kafka"]["topic"].as_str(), Some("t"));

    // An override still wins.
    let replaced = parse(common::test_config_for_client(
        "t",
        "g",
        "tbl",
        "[kafka]\nclient = \"librdkafka\"\n",
        Some("kafka-rust"),
    ));
    assert_eq!(replaced["kafka"]["client"].as_str(), Some("librdkafka"));
}
