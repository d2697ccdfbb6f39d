//! Exactly-once delivery (issue 6): rows and the partition's next offset are
//! written in one transaction, so a crash at any moment applies no record
//! twice, even into a table without a unique key.

use std::time::Duration;

use rand::Rng;
use serde_json::json;

use crate::common::*;
use crate::setup::{sigterm_clean, Setup};

const EVENTS: &str =
    "row_id BIGINT AUTO_INCREMENT PRIMARY KEY, id BIGINT NOT NULL, name VARCHAR(64)";
const EXACTLY_ONCE: &str =
    "[mysql]\ndelivery = \"exactly_once\"\nwrite_mode = \"insert\"\nkey_columns = []\ndelete_on_tombstone = false";

pub fn events(partition: i32, first: i64, n: i64) -> Vec<serde_json::Value> {
    (first..first + n)
        .map(|i| json!({"id": partition as i64 * 1_000_000 + i, "name": "e"}))
        .collect()
}

fn offset_table_rows(s: &Setup) -> std::collections::BTreeMap<i32, i64> {
    query_rows(&format!(
        "SELECT `partition`, next_offset FROM kafka2mysql_offsets WHERE consumer_group = '{}' AND topic = '{}'",
        s.group, s.topic
    ))
    .into_iter()
    .map(|r| (r[0].as_ref().unwrap().parse().unwrap(), r[1].as_ref().unwrap().parse().unwrap()))
    .collect()
}

#[test]
fn six_sigkills_apply_every_record_exactly_once() {
    let s = Setup::new(
        "eo_sigkill",
        4,
        EVENTS,
        &format!("{EXACTLY_ONCE}\n[commit]\nevery_messages = 500\n[kafka]\nfetch_max_bytes_per_partition = 65536"),
    );
    for p in 0..4 {
        produce_json(&s.topic, p, &events(p, 0, 15_000));
    }
    // A trigger slows the inserts so that the kills land in the middle of the
    // load: at six random row counts, each in a new run of the service.
    mysql_exec(&format!(
        "CREATE TRIGGER `{t}_slow` BEFORE INSERT ON `{t}` FOR EACH ROW SET @k2m_slow = SLEEP(0.001)",
        t = s.table
    ));
    let count = format!("SELECT COUNT(*) FROM `{}`", s.table);
    let mut rng = rand::thread_rng();
    let mut moments: Vec<i64> = (0..6).map(|_| rng.gen_range(1_000..58_000)).collect();
    moments.sort_unstable();
    for (kill, moment) in moments.iter().enumerate() {
        let mut service = s.start();
        wait_until(
            &format!("{moment} rows before kill {}", kill + 1),
            Duration::from_secs(120),
            || {
                let rows = query_count(&count);
                if rows >= *moment {
                    Ok(())
                } else {
                    Err(format!("{rows} rows"))
                }
            },
        );
        service.sigkill();
        let rows = query_count(&count);
        assert!(
            rows < 60_000,
            "kill {} came too late ({rows} rows)",
            kill + 1
        );
        println!("kill {} at {rows} rows", kill + 1);
    }
    let mut service = s.start();
    s.wait_rows(60_000, Duration::from_secs(180));
    sigterm_clean(&mut service);
    assert_eq!(query_count(&count), 60_000);
    assert_eq!(
        query_count(&format!("SELECT COUNT(DISTINCT id) FROM `{}`", s.table)),
        60_000,
        "every record once"
    );
    let log_end = log_end_offsets(&s.topic);
    assert_eq!(
        offset_table_rows(&s),
        log_end,
        "the offset table holds the log end of every partition"
    );
    let expected: std::collections::BTreeMap<i32, Option<i64>> =
        log_end.iter().map(|(&p, &o)| (p, Some(o))).collect();
    assert_eq!(
        group_offsets(&s.group, &s.topic),
        expected,
        "Kafka group offsets are committed too"
    );
}

#[test]
fn the_offset_table_wins_over_the_group_and_follows_resets() {
    let s = Setup::new("eo_reset", 2, EVENTS, EXACTLY_ONCE);
    for p in 0..2 {
        produce_json(&s.topic, p, &events(p, 0, 100));
    }
    let mut service = s.start();
    s.wait_rows(200, Duration::from_secs(60));
    sigterm_clean(&mut service);
    assert_eq!(
        offset_table_rows(&s),
        [(0, 100), (1, 100)].into_iter().collect()
    );

    // The group says 0 for partition 0, the offset table 100: the table wins.
    let out = run_binary(
        &[
            "reset-offsets",
            "--config",
            s.config_arg(),
            "--to",
            "0",
            "--partition",
            "0",
        ],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.contains("100") && out.stdout.contains(" 0"),
        "old and new offsets printed: {}",
        out.stdout
    );
    assert_eq!(
        offset_table_rows(&s)[&0],
        0,
        "reset-offsets updates the offset table"
    );
    assert_eq!(
        group_offsets(&s.group, &s.topic)[&0],
        Some(0),
        "and the group"
    );
    mysql_exec(&format!(
        "UPDATE kafka2mysql_offsets SET next_offset = 100 WHERE consumer_group = '{}' AND topic = '{}' AND `partition` = 0",
        s.group, s.topic
    ));
    for p in 0..2 {
        produce_json(&s.topic, p, &events(p, 100, 100));
    }
    // Partition 1 loses its records below 150 while stopped: its stored 100
    // is out of range and it restarts at the earliest offset.
    delete_records(&s.topic, 1, 150);
    let mut service = s.start();
    s.wait_rows(200 + 100 + 50, Duration::from_secs(60));
    sigterm_clean(&mut service);
    assert_eq!(
        s.count(""),
        350,
        "partition 0 resumed from the offset table (100), not the group (0)"
    );
    assert_eq!(
        offset_table_rows(&s),
        [(0, 200), (1, 200)].into_iter().collect()
    );
    let log = service.log_text();
    assert!(
        log.contains(
            "partition 0: starting at offset 100 (stored offset; stored 100 in offset table"
        ),
        "{log}"
    );
    assert!(
        log.contains("partition 1: starting at offset 150 (stored offset 100 is out of range"),
        "{log}"
    );
}

#[test]
fn exactly_once_upserts_and_tombstones() {
    let s = Setup::new(
        "eo_tombstone",
        1,
        "id BIGINT PRIMARY KEY, name VARCHAR(64)",
        "[mysql]\ndelivery = \"exactly_once\"",
    );
    produce_keyed_json(
        &s.topic,
        0,
        &[
            (json!(1), Some(json!({"id": 1, "name": "one"}))),
            (json!(2), Some(json!({"id": 2, "name": "two"}))),
            (json!(1), None),
            (json!(2), Some(json!({"id": 2, "name": "two again"}))),
        ],
    );
    let mut service = s.start();
    wait_for_eq(
        "row 2 updated and row 1 deleted",
        Duration::from_secs(60),
        vec![vec![Some("2".into()), Some("two again".into())]],
        || query_rows(&format!("SELECT id, name FROM `{}`", s.table)),
    );
    sigterm_clean(&mut service);
    assert_eq!(offset_table_rows(&s), [(0, 4)].into_iter().collect());
}
