//! Metadata columns (`[mysql.metadata_columns]`): topic, partition, offset
//! and the record's timestamp written with every row, and Debezium's source
//! position; checked against what kcat reads from the broker.

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use crate::setup::Setup;
use crate::values::{produce_texts, run_to_the_end};

/// (offset, timestamp in ms) of each record of partition 0, as kcat reads them.
fn kcat_timestamps(topic: &str) -> Vec<(i64, i64)> {
    let out = Command::new("kcat")
        .args(["-C", "-b", &env().brokers.join(","), "-t", topic])
        .args(["-p", "0", "-o", "beginning", "-e", "-q", "-f", "%o %T\n"])
        .output()
        .unwrap_or_else(|error| panic!("cannot run kcat (apt-get install kcat): {error}"));
    assert!(out.status.success(), "kcat: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let (offset, at) = line.split_once(' ').expect("offset and timestamp");
            (offset.parse().unwrap(), at.parse().unwrap())
        })
        .collect()
}

#[test]
fn topic_partition_offset_and_timestamp_land_with_every_row() {
    let s = Setup::new(
        "metadata",
        1,
        "id BIGINT PRIMARY KEY, name VARCHAR(16), k_topic VARCHAR(249), k_partition INT, \
         k_offset BIGINT, k_at DATETIME(3), k_ms BIGINT",
        "[mysql.metadata_columns]\nk_topic = \"topic\"\nk_partition = \"partition\"\n\
         k_offset = \"offset\"\nk_at = \"timestamp\"\nk_ms = \"timestamp\"",
    );
    produce_texts(
        &s,
        &[
            (None, Some(r#"{"id": 1, "name": "a"}"#)),
            // A field named like a metadata column is overwritten by it.
            (None, Some(r#"{"id": 2, "name": "b", "k_offset": 99}"#)),
            // An update moves the row's metadata to its own record.
            (None, Some(r#"{"id": 1, "name": "a2"}"#)),
        ],
    );
    run_to_the_end(&s);
    let timestamps = kcat_timestamps(&s.topic);
    assert_eq!(timestamps.len(), 3, "{timestamps:?}");
    let rows = query_rows(&format!(
        "SELECT id, name, k_topic, k_partition, k_offset, k_ms, \
         DATE_FORMAT(k_at, '%Y-%m-%d %H:%i:%s.%f') = DATE_FORMAT(CONVERT_TZ(FROM_UNIXTIME(k_ms / 1000), \
         @@session.time_zone, '+00:00'), '%Y-%m-%d %H:%i:%s.%f') \
         FROM `{}` ORDER BY id",
        s.table
    ));
    let expected = |id: &str, name: &str, offset: usize| {
        vec![
            Some(id.to_string()),
            Some(name.to_string()),
            Some(s.topic.clone()),
            Some("0".to_string()),
            Some(offset.to_string()),
            Some(timestamps[offset].1.to_string()),
            Some("1".to_string()),
        ]
    };
    assert_eq!(rows, vec![expected("1", "a2", 2), expected("2", "b", 1)]);
}

#[test]
fn debezium_source_position_lands_and_a_missing_column_stops_the_start() {
    let s = Setup::new(
        "metadata_dbz",
        1,
        "id INT PRIMARY KEY, email VARCHAR(64), binlog VARCHAR(64), pos BIGINT, src_at TIMESTAMP(3) NULL",
        "[mysql]\nrecord_format = \"debezium\"\n\
         [mysql.metadata_columns]\nbinlog = \"source.file\"\npos = \"source.pos\"\nsrc_at = \"source.ts_ms\"",
    );
    let event = |op: &str, id: i64, email: &str, pos: i64| {
        format!(
            r#"{{"before": null, "after": {{"id": {id}, "email": "{email}"}},
               "source": {{"connector": "mysql", "file": "mysql-bin.000003", "pos": {pos},
                          "ts_ms": 1735725600500, "snapshot": "false"}},
               "op": "{op}", "ts_ms": 1735725600600}}"#
        )
    };
    let (a, b) = (event("c", 1, "a@x", 154), event("u", 1, "b@x", 480));
    produce_texts(&s, &[(None, Some(&a)), (None, Some(&b))]);
    run_to_the_end(&s);
    assert_eq!(
        query_rows(&format!(
            "SELECT id, email, binlog, pos, CONVERT_TZ(src_at, @@session.time_zone, '+00:00') FROM `{}`",
            s.table
        )),
        vec![vec![
            Some("1".into()),
            Some("b@x".into()),
            Some("mysql-bin.000003".into()),
            Some("480".into()),
            // Written in UTC (mysql.time_zone), read back in UTC.
            Some("2025-01-01 10:00:00.500".into()),
        ]]
    );

    // A metadata column the table lacks: exit 2 at start, naming it.
    mysql_exec(&format!("ALTER TABLE `{}` DROP COLUMN pos", s.table));
    let out = run_binary(
        &["run", "--config", s.config_arg()],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "table {} has no column \"pos\" (mysql.metadata_columns.pos)",
            s.table
        )),
        "{out:?}"
    );
}
