//! What a MySQL error means for the records (`src/error.rs`): errors about
//! the data are dead-lettered and the partition goes on.

use std::time::Duration;

use serde_json::json;

use crate::common::*;
use crate::setup::{sigterm_clean, Setup};

#[test]
fn errors_about_the_data_are_dead_lettered_and_the_partition_goes_on() {
    // A CHECK constraint (4025), a generated column that overflows for
    // amounts over 9,223,372 (1690), a trigger that refuses a note (1644),
    // and a child table whose rows keep their parents from being deleted
    // (1451).
    let s = Setup::new(
        "classes_data",
        1,
        "id BIGINT PRIMARY KEY, amount BIGINT, note VARCHAR(16), \
         scaled BIGINT AS (amount * 1000000000000) STORED, \
         CONSTRAINT positive CHECK (amount >= 0)",
        "",
    );
    let child = format!("{}_child", s.table);
    create_table(
        &child,
        &format!(
            "id BIGINT PRIMARY KEY, parent BIGINT, FOREIGN KEY (parent) REFERENCES `{}` (id)",
            s.table
        ),
    );
    mysql_exec(&format!(
        "CREATE TRIGGER `{t}_refuse` BEFORE INSERT ON `{t}` FOR EACH ROW \
         IF NEW.note = 'refuse' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by trigger'; END IF",
        t = s.table
    ));
    let row = |id: i64, amount: i64, note: &str| {
        (
            json!(id),
            Some(json!({"id": id, "amount": amount, "note": note})),
        )
    };
    let first: Vec<_> = (1..=100).map(|id| row(id, id, "ok")).collect();
    produce_keyed_json(&s.topic, 0, &first);
    let mut service = s.start();
    s.wait_rows(100, Duration::from_secs(60));
    mysql_exec(&format!(
        "INSERT INTO `{child}` (id, parent) VALUES (1, 1), (2, 2)"
    ));

    // Each record with the code it fails with, if it does.
    let mut records = vec![((json!(1), None), Some(1451))];
    records.push((row(101, 101, "ok"), None));
    records.push((row(102, 100_000_000, "ok"), Some(1690)));
    records.push((row(103, 103, "ok"), None));
    records.push((row(104, -1, "ok"), Some(4025)));
    records.push((row(105, 105, "ok"), None));
    records.push((row(106, 106, "refuse"), Some(1644)));
    records.extend((107..=200).map(|id| (row(id, id, "ok"), None)));
    records.push(((json!(2), None), Some(1451)));
    let (records, codes): (Vec<_>, Vec<Option<u16>>) = records.into_iter().unzip();
    let offsets = produce_keyed_json(&s.topic, 0, &records);

    s.wait_committed_at_log_end(Duration::from_secs(60));
    assert_eq!(s.live(0).unwrap()["state"], "flowing");
    sigterm_clean(&mut service);

    let dead = query_rows(&format!(
        "SELECT `offset`, error_class, error_code, attempts FROM `{}` ORDER BY `offset`",
        s.dead_letters
    ));
    let expected: Vec<Vec<Option<String>>> = offsets
        .iter()
        .zip(&codes)
        .filter_map(|(offset, code)| {
            Some(vec![
                Some(offset.to_string()),
                Some("business".into()),
                Some(code.as_ref()?.to_string()),
                Some("3".into()),
            ])
        })
        .collect();
    assert_eq!(
        dead, expected,
        "dead letters: offset, class, code, attempts"
    );
    // Rows 1 and 2 stay (their children hold them); the three bad values
    // never became rows.
    assert_eq!(s.count(""), 200 - 3);
    assert_eq!(s.count("WHERE id IN (1, 2)"), 2);
    drop_table(&child);
}
