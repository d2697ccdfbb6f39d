//! The stale-write guard (`mysql.version_column`): an upsert changes a row
//! only when its version is at least the stored one, records produced out of
//! order included, in one statement and across runs.

use std::time::Duration;

use crate::common::*;
use crate::setup::Setup;
use crate::values::{dead_letters, produce_texts, run_to_the_end};

fn rows(s: &Setup) -> Vec<Vec<Option<String>>> {
    query_rows(&format!(
        "SELECT id, name, updated_at FROM `{}` ORDER BY id",
        s.table
    ))
}

fn row(id: &str, name: &str, updated_at: &str) -> Vec<Option<String>> {
    vec![Some(id.into()), Some(name.into()), Some(updated_at.into())]
}

#[test]
fn older_versions_arriving_late_do_not_overwrite_newer_rows() {
    let s = Setup::new(
        "versions",
        1,
        "id BIGINT PRIMARY KEY, name VARCHAR(16), updated_at DATETIME(3)",
        "[mysql]\nversion_column = \"updated_at\"",
    );
    mysql_exec(&format!(
        "INSERT INTO `{}` VALUES (9, 'stored', '2026-01-01 00:00:00')",
        s.table
    ));
    let values = [
        r#"{"id":1,"name":"b","updated_at":"2025-01-01T10:00:00Z"}"#,
        // 09:00 UTC: older, though its wall clock reads later.
        r#"{"id":1,"name":"a","updated_at":"2025-01-01T11:00:00+02:00"}"#,
        r#"{"id":1,"name":"c","updated_at":"2025-01-01T10:00:00.001Z"}"#,
        r#"{"id":1,"name":"late","updated_at":"2025-01-01 10:00:00"}"#,
        r#"{"id":2,"name":"x","updated_at":"2025-01-01T10:00:00Z"}"#,
        // The same version again (a replay) is applied.
        r#"{"id":2,"name":"same","updated_at":"2025-01-01T12:00:00+02:00"}"#,
        r#"{"id":9,"name":"older","updated_at":"2025-01-01T00:00:00Z"}"#,
        r#"{"id":3,"name":"no version"}"#,
        r#"{"id":4,"name":"kept","updated_at":"2025-01-01T00:00:00Z"}"#,
        // Only the version: the newer row keeps the fields it does not set.
        r#"{"id":4,"updated_at":"2025-01-02T00:00:00Z"}"#,
    ];
    let records: Vec<(Option<&str>, Option<&str>)> =
        values.iter().map(|v| (None, Some(*v))).collect();
    produce_texts(&s, &records);
    run_to_the_end(&s);
    let expected = vec![
        row("1", "c", "2025-01-01 10:00:00.001"),
        row("2", "same", "2025-01-01 10:00:00.000"),
        row("4", "kept", "2025-01-02 00:00:00.000"),
        row("9", "stored", "2026-01-01 00:00:00.000"),
    ];
    assert_eq!(rows(&s), expected);
    let dead = dead_letters(&s);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[&7].1.contains("the version column is missing or null"),
        "{dead:?}"
    );

    // A later run: an old record replayed changes nothing, a newer one lands.
    produce_texts(
        &s,
        &[
            (
                None,
                Some(r#"{"id":1,"name":"replayed","updated_at":"2025-01-01T09:00:00Z"}"#),
            ),
            (
                None,
                Some(r#"{"id":2,"name":"newer","updated_at":"2025-01-01T10:00:01Z"}"#),
            ),
        ],
    );
    run_to_the_end(&s);
    let mut expected = expected;
    expected[1] = row("2", "newer", "2025-01-01 10:00:01.000");
    assert_eq!(rows(&s), expected);
}

/// The status file's process-wide counters, as the running service wrote them.
fn stats(s: &Setup) -> serde_json::Value {
    std::fs::read_to_string(s.status_file())
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .map_or(serde_json::Value::Null, |status| status["stats"].clone())
}

#[test]
fn stale_records_are_counted_apart_not_dead_lettered() {
    let s = Setup::new(
        "versions_stale",
        1,
        "id BIGINT PRIMARY KEY, name VARCHAR(16), v BIGINT",
        "[mysql]\nversion_column = \"v\"",
    );
    let values = [
        r#"{"id":1,"name":"v3","v":3}"#,
        // Older than the row: stale, twice.
        r#"{"id":1,"name":"v1","v":1}"#,
        r#"{"id":1,"name":"v2","v":2}"#,
        r#"{"id":2,"name":"v5","v":5}"#,
        // The same version again is applied, not stale.
        r#"{"id":2,"name":"again","v":5}"#,
        r#"{"id":1,"name":"v4","v":4}"#,
        // Stale against the row the record before it wrote.
        r#"{"id":1,"name":"v3b","v":3}"#,
    ];
    let records: Vec<(Option<&str>, Option<&str>)> =
        values.iter().map(|v| (None, Some(*v))).collect();
    produce_texts(&s, &records);
    let mut service = s.start();
    s.wait_committed_at_log_end(Duration::from_secs(60));
    wait_for_eq(
        "the status file's stale and written counts",
        Duration::from_secs(10),
        (Some(3), Some(4), Some(7), Some(0)),
        || {
            let stats = stats(&s);
            (
                stats["records_stale"].as_u64(),
                stats["rows_written"].as_u64(),
                stats["records_applied"].as_u64(),
                stats["dead_letters"].as_u64(),
            )
        },
    );
    crate::setup::sigterm_clean(&mut service);
    assert_eq!(
        query_rows(&format!(
            "SELECT id, name, v FROM `{}` ORDER BY id",
            s.table
        )),
        vec![
            vec![Some("1".into()), Some("v4".into()), Some("4".into())],
            vec![Some("2".into()), Some("again".into()), Some("5".into())],
        ]
    );
    assert!(dead_letters(&s).is_empty());
}
