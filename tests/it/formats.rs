//! Records as real producers write them (`mysql.record_format`): Kafka
//! Connect's JSON converter output and Debezium change events, from the
//! fixtures in `tests/fixtures/` (written by Kafka's own JsonConverter, see
//! `scripts/fixtures.sh`); RFC 3339 times with a zone; key columns taken
//! from the record key. Rows are read back with SQL; TIMESTAMP columns as
//! `UNIX_TIMESTAMP`, which does not depend on the reading session's zone.

use std::collections::BTreeMap;

use crate::common::*;
use crate::setup::Setup;
use crate::values::{dead_letters, produce_texts, run_to_the_end};

/// The `(key, value)` records of a fixture, in order; an empty field is null.
fn fixture(name: &str) -> Vec<(Option<String>, Option<String>)> {
    let path = repo_root().join("tests/fixtures").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/fixtures.sh writes it)", path.display()));
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.splitn(3, '\t').collect();
            assert_eq!(fields.len(), 3, "{name}: {line}");
            let field = |f: &str| (!f.is_empty()).then(|| f.to_string());
            (field(fields[1]), field(fields[2]))
        })
        .collect()
}

fn produce_fixture(s: &Setup, name: &str) {
    let records = fixture(name);
    let texts: Vec<(Option<&str>, Option<&str>)> = records
        .iter()
        .map(|(k, v)| (k.as_deref(), v.as_deref()))
        .collect();
    produce_texts(s, &texts);
}

/// The row whose `id` is `id`, as the texts of `select` (SQL expressions).
fn row(s: &Setup, select: &str, id: i64) -> Vec<Option<String>> {
    let mut rows = query_rows(&format!(
        "SELECT {select} FROM `{}` WHERE id = {id}",
        s.table
    ));
    assert_eq!(rows.len(), 1, "row {id} of {}: {rows:?}", s.table);
    rows.remove(0)
}

fn texts(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some(v.to_string())).collect()
}

fn ids(s: &Setup) -> Vec<i64> {
    query_rows(&format!("SELECT id FROM `{}` ORDER BY id", s.table))
        .into_iter()
        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
        .collect()
}

/// The dead letters' texts, by offset.
fn dead_texts(s: &Setup) -> BTreeMap<i64, String> {
    dead_letters(s)
        .into_iter()
        .map(|(offset, (_, text))| (offset, text))
        .collect()
}

#[test]
fn connect_json_converter_records_land_with_every_logical_type() {
    let s = Setup::new(
        "formats_connect",
        1,
        "id BIGINT PRIMARY KEY, name VARCHAR(64), amount DECIMAL(30,2), created DATETIME(3), \
         created_ts TIMESTAMP(3) NULL, day DATE, at_time TIME(3), data VARBINARY(16), \
         flag TINYINT(1), ratio DOUBLE, small TINYINT, epoch BIGINT",
        "[mysql]\nrecord_format = \"connect_json\"\ntime_zone = \"+02:00\"",
    );
    produce_fixture(&s, "connect_json.tsv");
    run_to_the_end(&s);

    // The tombstone of 2 deleted it; 5 is dead-lettered.
    assert_eq!(ids(&s), [1, 3, 4]);
    assert_eq!(
        row(
            &s,
            "name, amount, created, UNIX_TIMESTAMP(created_ts), day, at_time, HEX(data), \
             flag, ratio, small, epoch",
            1
        ),
        texts(&[
            "every type",
            "1234567890123456789012345678.91",
            // 10:00:00.123 UTC, in the configured zone.
            "2025-01-01 12:00:00.123",
            "1735725600.123",
            "2025-01-01",
            "10:30:00.123",
            "0001FF41",
            "1",
            "0.1",
            "-7",
            "1735725600123",
        ])
    );
    // decimal.format=NUMERIC: the Decimal is a JSON number.
    assert_eq!(row(&s, "amount", 3), texts(&["-99.99"]));
    // pk.mode=record_key: the id came from the Connect-struct record key.
    assert_eq!(row(&s, "name, amount", 4), texts(&["keyed", "4.00"]));
    let dead = dead_texts(&s);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[&5].contains(
            "column \"amount\": 123456789012345678901234567890.00 has 30 digits before the \
             decimal point, decimal(30,2) holds 28"
        ),
        "{dead:?}"
    );
}

#[test]
fn debezium_change_events_with_schemas_create_update_and_delete() {
    let s = Setup::new(
        "formats_debezium",
        1,
        "id INT PRIMARY KEY, first_name VARCHAR(64), last_name VARCHAR(64), \
         email VARCHAR(128), born DATE, updated DATETIME(3), updated_us DATETIME(6), \
         seen TIMESTAMP(6) NULL, wake TIME(6), balance DECIMAL(20,2)",
        "[mysql]\nrecord_format = \"debezium\"\ntime_zone = \"+02:00\"",
    );
    produce_fixture(&s, "debezium.tsv");
    run_to_the_end(&s);

    // r 1001, c 1002, c 1003, u 1002, d 1003 (+ tombstone), d 1001 by its
    // record key (+ tombstone), t: only 1002 is left, as updated.
    assert_eq!(ids(&s), [1002]);
    assert_eq!(
        row(
            &s,
            "email, born, updated, updated_us, UNIX_TIMESTAMP(seen), wake, balance",
            1002
        ),
        texts(&[
            "anne@example.com",
            "2025-01-01",
            // Debezium's Timestamp is the source's wall clock: kept as it is.
            "2025-01-01 10:00:00.123",
            "2025-01-01 10:00:00.123456",
            // 2025-01-01T12:00:00+02:00, the same instant whatever the zone.
            "1735725600.000000",
            "10:30:00.123456",
            "-1234.56",
        ])
    );
    let dead = dead_texts(&s);
    assert_eq!(
        dead.values().collect::<Vec<_>>(),
        ["invalid envelope: op \"t\" (truncate) is not applied: truncate the table by hand"],
        "only the truncate is dead-lettered"
    );
    assert_eq!(dead.keys().collect::<Vec<_>>(), [&8]);
}

#[test]
fn debezium_change_events_without_schemas_apply_as_plain_json() {
    let s = Setup::new(
        "formats_debezium_plain",
        1,
        "id INT PRIMARY KEY, first_name VARCHAR(64), last_name VARCHAR(64), \
         email VARCHAR(128), born INT, updated BIGINT, updated_us BIGINT, \
         seen TIMESTAMP(6) NULL, wake BIGINT, balance DECIMAL(20,2)",
        "[mysql]\nrecord_format = \"debezium\"",
    );
    produce_fixture(&s, "debezium_schemaless.tsv");
    run_to_the_end(&s);
    assert_eq!(ids(&s), [1002]);
    assert_eq!(
        row(
            &s,
            "email, born, updated, UNIX_TIMESTAMP(seen), wake, balance",
            1002
        ),
        texts(&[
            "anne@example.com",
            "20089",
            "1735725600123",
            "1735725600.000000",
            "37800123456",
            "-1234.56",
        ])
    );
    assert_eq!(dead_texts(&s).len(), 1, "the truncate");
}

#[test]
fn zoned_times_are_converted_to_the_configured_zone() {
    let s = Setup::new(
        "formats_times",
        1,
        "id BIGINT PRIMARY KEY, dt DATETIME, dt3 DATETIME(3), ts6 TIMESTAMP(6) NULL",
        "[mysql]\ntime_zone = \"-05:00\"",
    );
    produce_texts(
        &s,
        &[
            (
                None,
                Some(
                    r#"{"id":1,"dt":"2025-01-01T10:00:00Z","dt3":"2025-01-01T10:00:00.123456Z","ts6":"2025-01-01T10:00:00.123456Z"}"#,
                ),
            ),
            (
                None,
                Some(
                    r#"{"id":2,"dt":"2025-01-01T01:00:00+02:00","ts6":"2025-01-01T12:00:00+02:00"}"#,
                ),
            ),
            // The plain form is read in the session's zone, as before.
            (
                None,
                Some(r#"{"id":3,"dt":"2025-01-01 10:00:00","ts6":"2025-01-01 10:00:00"}"#),
            ),
            (None, Some(r#"{"id":4,"dt":"2025-13-01T10:00:00Z"}"#)),
        ],
    );
    run_to_the_end(&s);
    let select = "dt, dt3, UNIX_TIMESTAMP(ts6)";
    assert_eq!(
        row(&s, select, 1),
        texts(&[
            "2025-01-01 05:00:00",
            "2025-01-01 05:00:00.123",
            "1735725600.123456"
        ])
    );
    assert_eq!(
        row(&s, select, 2),
        vec![
            Some("2024-12-31 18:00:00".into()),
            None,
            Some("1735725600.000000".into())
        ]
    );
    assert_eq!(
        row(&s, select, 3),
        vec![
            Some("2025-01-01 10:00:00".into()),
            None,
            Some("1735743600.000000".into())
        ]
    );
    let dead = dead_texts(&s);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[&3].contains("1292"),
        "month 13 is the server's to refuse: {dead:?}"
    );
}

#[test]
fn key_columns_the_value_lacks_come_from_the_record_key() {
    let s = Setup::new(
        "formats_record_key",
        1,
        "id BIGINT NOT NULL, region VARCHAR(8) NOT NULL, name VARCHAR(16), \
         PRIMARY KEY (id, region)",
        "[mysql]\nkey_columns = [\"id\", \"region\"]",
    );
    produce_texts(
        &s,
        &[
            (Some(r#"{"id":1,"region":"eu"}"#), Some(r#"{"name":"one"}"#)),
            // The value wins where it has the column.
            (
                Some(r#"{"id":2,"region":"us"}"#),
                Some(r#"{"region":"eu","name":"two"}"#),
            ),
            (
                Some(r#"{"id":3,"region":"eu"}"#),
                Some(r#"{"id":30,"region":null,"name":"thirty"}"#),
            ),
            // Neither has region.
            (Some(r#"{"id":4}"#), Some(r#"{"name":"four"}"#)),
            // The tombstone of the first row, by the same key.
            (Some(r#"{"id":1,"region":"eu"}"#), None),
            (
                Some(r#"{"id":5,"region":"eu"}"#),
                Some(r#"{"name":"five"}"#),
            ),
        ],
    );
    run_to_the_end(&s);
    let rows = query_rows(&format!(
        "SELECT id, region, name FROM `{}` ORDER BY id",
        s.table
    ));
    let expected: Vec<Vec<Option<String>>> = [
        ["2", "eu", "two"],
        ["5", "eu", "five"],
        ["30", "eu", "thirty"],
    ]
    .iter()
    .map(|r| texts(r))
    .collect();
    assert_eq!(rows, expected);
    let dead = dead_texts(&s);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[&3].contains("key column \"region\" is missing or null"),
        "{dead:?}"
    );
}
