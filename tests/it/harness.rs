//! Proves that the test harness is real: what `common` writes to Kafka and
//! MySQL can be read back by independent means (the kafka crate's fetch,
//! Kafka's own command-line tools, a second MySQL connection as root), and
//! `wait_until` really fails. Nothing here uses the kafka2mysql library.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka::client::{CommitOffset, FetchGroupOffset, FetchPartition};
use kafka::error::{Error as KafkaError, KafkaCode};

use crate::common::{self, FetchedRecord, KeyValue};

#[test]
fn records_produced_to_each_partition_are_fetched_back_from_that_partition() {
    let topic = common::unique_name("harness_fetch");
    common::create_topic(&topic, 4);

    let mut expected_offsets = BTreeMap::new();
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
        expected_offsets.insert(partition, 2);
    }
    // A key-less record with a null value: the broker stores the null, and
    // the kafka crate reads it back as an empty value (see common::produce).
    assert_eq!(common::produce(&topic, 3, &[(None, None)]), vec![2]);
    expected_offsets.insert(3, 3);

    let mut client = common::kafka_client();
    client.set_fetch_max_bytes_per_partition(1024 * 1024);
    let requests: Vec<FetchPartition<'_>> = (0..4)
        .map(|partition| FetchPartition::new(&topic, partition, 0))
        .collect();
    let responses = client
        .fetch_messages(&requests)
        .expect("fetch from the test broker");

    let mut fetched: BTreeMap<i32, Vec<FetchedRecord>> = BTreeMap::new();
    let mut high_watermarks = BTreeMap::new();
    for response in &responses {
        for fetched_topic in response.topics() {
            assert_eq!(fetched_topic.topic(), topic);
            for partition in fetched_topic.partitions() {
                let data = partition.data().unwrap_or_else(|error| {
                    panic!(
                        "partition {} of {topic} failed: {error}",
                        partition.partition()
                    )
                });
                high_watermarks.insert(partition.partition(), data.highwatermark_offset());
                fetched.insert(
                    partition.partition(),
                    data.messages()
                        .iter()
                        .map(|message| FetchedRecord {
                            offset: message.offset,
                            key: message.key.to_vec(),
                            value: message.value.to_vec(),
                        })
                        .collect(),
                );
            }
        }
    }

    assert_eq!(high_watermarks, expected_offsets);
    for partition in 0..4 {
        let mut expected: Vec<FetchedRecord> = (0..2)
            .map(|index| FetchedRecord {
                offset: index,
                key: format!("key-{partition}-{index}").into_bytes(),
                value: format!(r#"{{"partition":{partition},"index":{index}}}"#).into_bytes(),
            })
            .collect();
        if partition == 3 {
            expected.push(FetchedRecord {
                offset: 2,
                key: Vec::new(),
                value: Vec::new(),
            });
        }
        assert_eq!(
            fetched[&partition], expected,
            "records of {topic}/{partition}"
        );
        assert_eq!(
            common::fetch_records(&topic, partition, 1),
            expected[1..],
            "records of {topic}/{partition} from offset 1"
        );
    }

    // Kafka's own tool agrees with what the crate saw.
    assert_eq!(common::log_end_offsets(&topic), expected_offsets);
    assert_eq!(
        common::log_start_offsets(&topic),
        (0..4).map(|partition| (partition, 0)).collect()
    );

    common::delete_topic(&topic);
}

#[test]
fn group_offsets_committed_with_the_kafka_crate_are_read_by_the_consumer_groups_tool() {
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
    client
        .commit_offsets(
            &group,
            &[
                CommitOffset::new(&topic, 0, 5),
                CommitOffset::new(&topic, 1, 2),
            ],
        )
        .expect("commit group offsets");

    assert_eq!(
        common::group_offsets(&group, &topic),
        BTreeMap::from([(0, Some(5)), (1, Some(2)), (2, None)])
    );

    // The crate reads the same offsets back (-1: nothing committed).
    let mut fetched = client
        .fetch_group_offsets(
            &group,
            &[
                FetchGroupOffset::new(&topic, 0),
                FetchGroupOffset::new(&topic, 1),
                FetchGroupOffset::new(&topic, 2),
            ],
        )
        .expect("fetch group offsets");
    let mut by_partition: Vec<(i32, i64)> = fetched
        .remove(&topic)
        .expect("offsets of the topic")
        .into_iter()
        .map(|offset| (offset.partition, offset.offset))
        .collect();
    by_partition.sort_unstable();
    assert_eq!(by_partition, vec![(0, 5), (1, 2), (2, -1)]);

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

    let mut client = common::kafka_client();
    let responses = client
        .fetch_messages(&[FetchPartition::new(&topic, 0, 2)])
        .expect("fetch from the test broker");
    let partition_errors: Vec<String> = responses
        .iter()
        .flat_map(|response| response.topics())
        .flat_map(|fetched_topic| fetched_topic.partitions())
        .map(|partition| match partition.data() {
            Ok(data) => format!("data with {} messages", data.messages().len()),
            Err(error) => match &*error {
                KafkaError::Kafka(KafkaCode::OffsetOutOfRange) => "OffsetOutOfRange".to_owned(),
                other => format!("{other}"),
            },
        })
        .collect();
    assert_eq!(partition_errors, vec!["OffsetOutOfRange"]);

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
}
