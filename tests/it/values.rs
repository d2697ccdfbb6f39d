//! Values reach MySQL exactly: numbers as the producer wrote them (no binary
//! float in between), integer and DECIMAL columns checked instead of
//! rounded, tombstone keys compared as their column compares, and an
//! oversized record's dead letter with its key, size and value.
//!
//! Records are produced as raw bytes, never through `serde_json::Value`,
//! which would rewrite their numbers; rows are read back as text with SQL.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use crate::setup::{sigterm_clean, Setup};

/// Produces `(key, value)` texts to partition 0; `None` is a tombstone.
pub(crate) fn produce_texts(s: &Setup, records: &[(Option<&str>, Option<&str>)]) {
    let records: Vec<KeyValue> = records
        .iter()
        .map(|(k, v)| {
            (
                k.map(|k| k.as_bytes().to_vec()),
                v.map(|v| v.as_bytes().to_vec()),
            )
        })
        .collect();
    produce(&s.topic, 0, &records);
}

/// The dead letters by offset: (record key, error text).
pub(crate) fn dead_letters(s: &Setup) -> BTreeMap<i64, (Option<String>, String)> {
    query_rows(&format!(
        "SELECT `offset`, record_key, error_text FROM `{}` ORDER BY `offset`",
        s.dead_letters
    ))
    .into_iter()
    .map(|row| {
        (
            row[0].as_deref().unwrap().parse().unwrap(),
            (row[1].clone(), row[2].clone().unwrap_or_default()),
        )
    })
    .collect()
}

/// Runs the service until every record is in (lag 0), then stops it.
pub(crate) fn run_to_the_end(s: &Setup) {
    let mut service = s.start();
    s.wait_committed_at_log_end(Duration::from_secs(60));
    sigterm_clean(&mut service);
}

/// The text of one column of row `id`.
fn cell(s: &Setup, column: &str, id: i64) -> Option<String> {
    let rows = query_rows(&format!(
        "SELECT `{column}` FROM `{}` WHERE id = {id}",
        s.table
    ));
    assert_eq!(rows.len(), 1, "row {id} of {}: {rows:?}", s.table);
    rows[0][0].clone()
}

#[test]
fn numbers_land_exactly_or_are_dead_lettered_naming_the_column() {
    let s = Setup::new(
        "values_numbers",
        1,
        "id BIGINT PRIMARY KEY, d20 DECIMAL(20,2), d30 DECIMAL(30,0), \
         small DECIMAL(20,18), n BIGINT, doc JSON, txt VARCHAR(64), f DOUBLE",
        "",
    );
    // (value, the column that lands and its text) or (value, the error).
    let good: &[(&str, &str, &str)] = &[
        (
            r#"{"id":1,"d20":12345678901234567.89}"#,
            "d20",
            "12345678901234567.89",
        ),
        (
            r#"{"id":2,"d20":99999999999999999.99}"#,
            "d20",
            "99999999999999999.99",
        ),
        (
            r#"{"id":3,"d30":123456789012345678901234567890}"#,
            "d30",
            "123456789012345678901234567890",
        ),
        (
            r#"{"id":4,"d30":18446744073709551616}"#,
            "d30",
            "18446744073709551616",
        ),
        (
            r#"{"id":5,"small":0.123456789012345678}"#,
            "small",
            "0.123456789012345678",
        ),
        (r#"{"id":6,"d20":1.5e3}"#, "d20", "1500.00"),
        (r#"{"id":7,"n":1e3}"#, "n", "1000"),
        (r#"{"id":8,"n":-0}"#, "n", "0"),
        (r#"{"id":9,"n":"-42"}"#, "n", "-42"),
        (
            r#"{"id":10,"n":-9223372036854775808}"#,
            "n",
            "-9223372036854775808",
        ),
        (r#"{"id":11,"txt":-0}"#, "txt", "-0"),
        (r#"{"id":12,"txt":1e3}"#, "txt", "1e3"),
        (r#"{"id":13,"txt":1.50}"#, "txt", "1.50"),
        (
            r#"{"id":14,"doc":{"a":1.50,"b":[1e3,-0,12345678901234567890123]}}"#,
            "doc",
            r#"{"a":1.50,"b":[1e3,-0,12345678901234567890123]}"#,
        ),
        (r#"{"id":15,"f":0.1}"#, "f", "0.1"),
    ];
    let bad: &[(&str, &str)] = &[
        (
            r#"{"id":21,"n":1.5}"#,
            r#"column "n": 1.5 is not an integer (bigint(20))"#,
        ),
        (
            r#"{"id":22,"n":"1.5"}"#,
            r#"column "n": 1.5 is not an integer"#,
        ),
        (
            r#"{"id":23,"n":18446744073709551616}"#,
            r#"column "n": 18446744073709551616 is out of range for bigint(20)"#,
        ),
        (
            r#"{"id":24,"d20":0.125}"#,
            r#"column "d20": 0.125 has 3 decimal places, decimal(20,2) keeps 2"#,
        ),
        (
            r#"{"id":25,"d20":1234567890123456789}"#,
            r#"column "d20": 1234567890123456789 has 19 digits before the decimal point, decimal(20,2) holds 18"#,
        ),
        (
            r#"{"id":26,"small":0.1234567890123456789}"#,
            r#"column "small": 0.1234567890123456789 has 19 decimal places"#,
        ),
    ];
    let mut records: Vec<(Option<&str>, Option<&str>)> = Vec::new();
    for (value, _, _) in good {
        records.push((None, Some(value)));
    }
    for (value, _) in bad {
        records.push((None, Some(value)));
    }
    produce_texts(&s, &records);
    run_to_the_end(&s);

    for (id, (value, column, text)) in (1..).zip(good) {
        assert_eq!(cell(&s, column, id).as_deref(), Some(*text), "{value}");
    }
    assert_eq!(s.count(""), good.len() as i64, "rows");
    let dead = dead_letters(&s);
    assert_eq!(dead.len(), bad.len(), "dead letters: {dead:?}");
    for ((offset, (_, text)), (value, expected)) in dead.iter().zip(bad) {
        assert!(
            text.contains(expected),
            "offset {offset} ({value}): dead letter {text:?} should say {expected:?}"
        );
    }
}

#[test]
fn a_text_tombstone_key_deletes_only_the_row_with_that_text() {
    let s = Setup::new(
        "values_text_key",
        1,
        "code VARCHAR(16) PRIMARY KEY, name VARCHAR(16)",
        "[mysql]\nkey_columns = [\"code\"]",
    );
    mysql_exec(&format!(
        "INSERT INTO `{}` (code) VALUES ('123'), ('0123'), ('123.0'), (' 123'), ('1'), ('true')",
        s.table
    ));
    produce_texts(
        &s,
        &[
            (Some("123"), None),
            (Some("true"), None),
            (Some("done"), Some(r#"{"code": "done"}"#)),
        ],
    );
    run_to_the_end(&s);
    let codes: Vec<Option<String>> =
        query_rows(&format!("SELECT code FROM `{}` ORDER BY code", s.table))
            .into_iter()
            .map(|mut row| row.remove(0))
            .collect();
    assert_eq!(
        codes,
        [" 123", "0123", "1", "123.0", "done"]
            .map(|c| Some(c.to_string()))
            .to_vec(),
        "the tombstones `123` and `true` delete '123' and 'true' and nothing else"
    );
    assert_eq!(dead_letters(&s), BTreeMap::new());
}

#[test]
fn a_tombstone_key_that_is_not_a_number_deletes_nothing_from_an_integer_key() {
    let s = Setup::new(
        "values_int_key",
        1,
        "id BIGINT PRIMARY KEY, name VARCHAR(16)",
        "",
    );
    mysql_exec(&format!(
        "INSERT INTO `{}` (id) VALUES (0), (41), (42), (43)",
        s.table
    ));
    produce_texts(
        &s,
        &[
            (Some("abc"), None),
            (Some("41abc"), None),
            (Some("42"), None),
            (Some("\"43\""), None),
            (Some("100"), Some(r#"{"id": "100"}"#)),
        ],
    );
    run_to_the_end(&s);
    let ids: Vec<Option<String>> = query_rows(&format!("SELECT id FROM `{}` ORDER BY id", s.table))
        .into_iter()
        .map(|mut row| row.remove(0))
        .collect();
    assert_eq!(
        ids,
        ["0", "41", "100"].map(|c| Some(c.to_string())).to_vec(),
        "only the tombstones 42 and \"43\" delete"
    );
    let dead = dead_letters(&s);
    assert_eq!(
        dead,
        BTreeMap::from([
            (
                0,
                (
                    Some("abc".to_string()),
                    r#"column "id": key "abc" is not a number (bigint(20))"#.to_string()
                )
            ),
            (
                1,
                (
                    Some("41abc".to_string()),
                    r#"column "id": key "41abc" is not a number (bigint(20))"#.to_string()
                )
            ),
        ])
    );
}

#[test]
fn a_decimal_key_is_compared_as_a_decimal() {
    // Two amounts that are the same binary float. Compared with text, as
    // MariaDB compares a row constructor's values when no index serves the
    // lookup, a tombstone for one deletes both.
    let s = Setup::new(
        "values_decimal_key",
        1,
        "id INT AUTO_INCREMENT PRIMARY KEY, region INT, amount DECIMAL(20,2)",
        "[mysql]\nkey_columns = [\"region\", \"amount\"]",
    );
    mysql_exec(&format!(
        "INSERT INTO `{}` (region, amount) VALUES (1, 12345678901234567.88), (1, 12345678901234567.89)",
        s.table
    ));
    // Produced before the service starts: one fetch, one DELETE for both.
    produce_texts(
        &s,
        &[
            (
                Some(r#"{"region": 1, "amount": 12345678901234567.89}"#),
                None,
            ),
            (Some(r#"{"region": 2, "amount": "1.00"}"#), None),
        ],
    );
    run_to_the_end(&s);
    assert_eq!(
        query_rows(&format!("SELECT amount FROM `{}`", s.table)),
        vec![vec![Some("12345678901234567.88".to_string())]],
        "the tombstone deletes .89 only"
    );
    assert_eq!(dead_letters(&s), BTreeMap::new());
}

#[test]
fn an_oversized_record_is_dead_lettered_with_its_key_size_and_value() {
    // librdkafka fetches any record whole: the dead letter keeps all of it.
    // (The `kafka` crate client's records too large to fetch at all are
    // in `kafka_rust_client`.)
    let s = Setup::new(
        "values_oversized",
        1,
        "id BIGINT PRIMARY KEY, note MEDIUMTEXT",
        "[worker]\nmax_record_bytes = 20000",
    );
    let value = format!(r#"{{"id": 1, "note": "{}"}}"#, "x".repeat(30_000));
    produce_texts(
        &s,
        &[(Some("key-1"), Some(&value)), (None, Some(r#"{"id": 2}"#))],
    );
    run_to_the_end(&s);
    let rows = query_rows(&format!(
        "SELECT record_key, record_value, error_text FROM `{}`",
        s.dead_letters
    ));
    assert_eq!(
        rows,
        vec![vec![
            Some("key-1".to_string()),
            Some(value.clone()),
            Some(format!(
                "record of {} bytes is larger than 20000 bytes",
                5 + value.len()
            )),
        ]]
    );
    assert_eq!(s.count(""), 1);
}
