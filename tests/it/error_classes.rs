//! What a MySQL error means for the records (`src/error.rs`): errors about
//! the data are dead-lettered and the partition goes on; a fault of the
//! table that hits every record alike blocks the partition instead of
//! filling the dead-letter table; in insert mode, the records replayed after
//! a crash are not taken for duplicates.

use std::time::Duration;

use rand::Rng;
use serde_json::json;

use crate::common::*;
use crate::setup::{sigterm_clean, Setup};

fn dead_letter_count(s: &Setup) -> i64 {
    query_count(&format!("SELECT COUNT(*) FROM `{}`", s.dead_letters))
}

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

#[test]
fn a_column_added_without_a_default_blocks_the_partition_until_it_gets_one() {
    // backoff_max is how long held records wait for the next batch, and how
    // often a blocked partition tries again.
    let s = Setup::new(
        "classes_schema",
        2,
        "id BIGINT PRIMARY KEY, name VARCHAR(64)",
        "[retry]\nbackoff_max_ms = 1000",
    );
    let records = |p: i32, first: i64, n: i64| -> Vec<serde_json::Value> {
        (first..first + n)
            .map(|i| json!({"id": p as i64 * 1_000_000 + i, "name": format!("n{i}")}))
            .collect()
    };
    for p in 0..2 {
        produce_json(&s.topic, p, &records(p, 0, 200));
    }
    let mut service = s.start();
    s.wait_rows(400, Duration::from_secs(60));

    // Every record from now on fails with 1364: the service neither knows
    // nor sends the new column.
    mysql_exec(&format!(
        "ALTER TABLE `{}` ADD COLUMN added INT NOT NULL",
        s.table
    ));
    for p in 0..2 {
        produce_json(&s.topic, p, &records(p, 200, 300));
    }
    for p in 0..2 {
        let blocked = s.wait_state(p, "blocked", Duration::from_secs(60));
        let error = blocked["last_error"].as_str().unwrap_or("");
        assert!(
            error.contains("1364") && error.contains("schema_fault_records"),
            "{blocked}"
        );
        assert_eq!(blocked["blocked_at_offset"], 200, "{blocked}");
        assert_eq!(
            blocked["error_class"], "fatal",
            "the operator must act: {blocked}"
        );
    }
    assert_eq!(dead_letter_count(&s), 0, "records held, not dead-lettered");
    assert_eq!(s.count(""), 400);

    mysql_exec(&format!(
        "ALTER TABLE `{}` MODIFY COLUMN added INT NOT NULL DEFAULT 0",
        s.table
    ));
    s.wait_rows(1_000, Duration::from_secs(60));
    for p in 0..2 {
        s.wait_state(p, "flowing", Duration::from_secs(30));
    }
    s.wait_committed_at_log_end(Duration::from_secs(60));
    sigterm_clean(&mut service);
    assert_eq!(dead_letter_count(&s), 0);
    assert_eq!(
        s.count("WHERE name = CONCAT('n', id MOD 1000000)"),
        1_000,
        "every record's row as it was produced"
    );
}

#[test]
fn insert_mode_takes_its_own_replay_after_sigkills_for_what_it_is() {
    // Insert mode into a table with a primary key: a record written before a
    // kill and replayed after it meets its own row (1062). Commits are rare
    // so that each kill leaves many written records uncommitted.
    let s = Setup::new(
        "classes_replay",
        2,
        "id BIGINT PRIMARY KEY, name VARCHAR(64)",
        "[mysql]\nwrite_mode = \"insert\"\ndelete_on_tombstone = false\n\
         [commit]\nevery_messages = 2000\ninterval_ms = 5000\n\
         [kafka]\nfetch_max_bytes_per_partition = 65536",
    );
    // Every 1,000th record repeats the id before it with another name: a
    // duplicate key from another record, which is a bad record.
    let mut duplicates = 0;
    for p in 0..2 {
        let mut values = Vec::new();
        for i in 0..10_000_i64 {
            let id = p as i64 * 1_000_000 + i;
            values.push(json!({"id": id, "name": "x"}));
            if i % 1_000 == 999 {
                values.push(json!({"id": id, "name": "duplicate"}));
                duplicates += 1;
            }
        }
        produce_json(&s.topic, p, &values);
    }
    // A trigger slows the inserts so that the kills land in the middle.
    mysql_exec(&format!(
        "CREATE TRIGGER `{t}_slow` BEFORE INSERT ON `{t}` FOR EACH ROW SET @k2m_slow = SLEEP(0.001)",
        t = s.table
    ));
    let count = format!("SELECT COUNT(*) FROM `{}`", s.table);
    let mut rng = rand::thread_rng();
    let mut moments: Vec<i64> = (0..3).map(|_| rng.gen_range(2_000..17_000)).collect();
    moments.sort_unstable();
    let mut replayed_logs = 0;
    for (kill, moment) in moments.iter().enumerate() {
        let mut service = s.start();
        s.wait_rows_at_least(*moment, Duration::from_secs(120));
        service.sigkill();
        let rows = query_count(&count);
        assert!(
            rows < 20_000,
            "kill {} came too late ({rows} rows)",
            kill + 1
        );
        replayed_logs += service.log_text().matches("already in the table").count();
    }
    let mut service = s.start();
    s.wait_rows(20_000, Duration::from_secs(180));
    s.wait_committed_at_log_end(Duration::from_secs(60));
    for p in 0..2 {
        assert_eq!(s.live(p).unwrap()["state"], "flowing");
    }
    sigterm_clean(&mut service);
    replayed_logs += service.log_text().matches("already in the table").count();
    assert_eq!(s.count("WHERE name = 'x'"), 20_000, "every record once");
    let dead = query_rows(&format!(
        "SELECT error_code, COUNT(*), SUM(record_value LIKE '%duplicate%') FROM `{}` GROUP BY error_code",
        s.dead_letters
    ));
    assert_eq!(
        dead,
        vec![vec![
            Some("1062".into()),
            Some(duplicates.to_string()),
            Some(duplicates.to_string())
        ]],
        "only the duplicates from other records are dead letters"
    );
    assert!(
        replayed_logs > 0,
        "the kills should have left written records to replay"
    );
}
