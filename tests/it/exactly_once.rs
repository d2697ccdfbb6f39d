//! Exactly-once delivery: rows and the partition's next offset are
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

/// The offset table's rows for this test's group; none before the first
/// exactly-once service of a fresh database has created the table.
fn offset_table_rows(s: &Setup) -> std::collections::BTreeMap<i32, i64> {
    let exists = query_count(
        "SELECT COUNT(*) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'kafka2mysql_offsets'",
    );
    if exists == 0 {
        return Default::default();
    }
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
    // At most 50,000 of the 60,000: each worker commits up to about a
    // thousand rows at a time (its fetches of 64 KiB), so the count seen
    // jumps by up to 4,000 at once, and a kill meant for the last rows could
    // come after them.
    let mut moments: Vec<i64> = (0..6).map(|_| rng.gen_range(1_000..50_000)).collect();
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
    // Moving a stored offset that the log no longer holds takes a word in
    // the config in exactly-once mode.
    let s = Setup::new(
        "eo_reset",
        2,
        EVENTS,
        &format!("{EXACTLY_ONCE}\nexactly_once_auto_reset = true"),
    );
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

/// A second config for the same topic, group and tables, in a directory of
/// its own (its own pid file): a second process on the same partitions.
fn second_config(s: &Setup) -> std::path::PathBuf {
    let text = std::fs::read_to_string(&s.config).expect("the test's config");
    write_config(
        &test_dir(&format!("{}_second", s.topic)).join("conf"),
        &text,
    )
}

/// Rewrites the test's config with `from` replaced by `to`.
fn edit_config(s: &Setup, from: &str, to: &str) {
    let text = std::fs::read_to_string(&s.config).expect("the test's config");
    assert!(text.contains(from), "{from:?} in the config:\n{text}");
    write_config(
        s.config.parent().expect("conf dir"),
        &text.replace(from, to),
    );
}

/// Waits until the table's row count stops changing for three seconds.
fn settled_count(s: &Setup) -> i64 {
    let mut last = s.count("");
    let mut since = std::time::Instant::now();
    wait_until(
        &format!("the row count of {} to settle", s.table),
        Duration::from_secs(120),
        || {
            std::thread::sleep(Duration::from_millis(500));
            let now = s.count("");
            if now != last {
                (last, since) = (now, std::time::Instant::now());
            }
            if since.elapsed() >= Duration::from_secs(3) {
                Ok(())
            } else {
                Err(format!("{now} rows"))
            }
        },
    );
    last
}

/// Slows every insert into the test's table down, so that two processes
/// overlap in time.
fn slow_inserts(s: &Setup, seconds_per_row: f64) {
    mysql_exec(&format!(
        "CREATE TRIGGER `{t}_slow` BEFORE INSERT ON `{t}` FOR EACH ROW SET @k2m_slow = SLEEP({seconds_per_row})",
        t = s.table
    ));
}

/// Waits until partition 0's offset table row reaches `records` (its log
/// end) and the row count settles, then checks that every record is in the
/// table once.
fn assert_every_record_once_at_log_end(s: &Setup, records: i64) {
    wait_for_eq(
        "the offset table at the log end",
        Duration::from_secs(120),
        [(0, records)].into_iter().collect(),
        || offset_table_rows(s),
    );
    assert_eq!(
        settled_count(s),
        records,
        "every record once, with two writers"
    );
    assert_eq!(
        query_count(&format!("SELECT COUNT(DISTINCT id) FROM `{}`", s.table)),
        records
    );
}

const ANOTHER_PROCESS: &str = "another process writes this partition";

#[test]
fn a_second_process_on_a_partition_is_fenced_and_every_record_lands_once() {
    let s = Setup::new(
        "eo_fence",
        1,
        EVENTS,
        &format!("{EXACTLY_ONCE}\n[kafka]\nfetch_max_bytes_per_partition = 16384"),
    );
    produce_json(&s.topic, 0, &events(0, 0, 1_000));
    let mut first = s.start();
    wait_for_eq(
        "the first process at the log end",
        Duration::from_secs(60),
        [(0, 1_000)].into_iter().collect(),
        || offset_table_rows(&s),
    );
    // The second process starts where the first one stands, while it waits
    // for records; then both read the same new records and race to write.
    // (A second process that starts while the first one writes finds the
    // offset row moved under it and exits at once: the next test.)
    let second_config = second_config(&s);
    let mut second = Service::start(&["run", "--config", second_config.to_str().unwrap()]);
    second.wait_for_log("running: topic", 1, Duration::from_secs(60));
    slow_inserts(&s, 0.002);
    produce_json(&s.topic, 0, &events(0, 1_000, 5_000));
    assert_every_record_once_at_log_end(&s, 6_000);
    // Exactly one of them lost the race: its partition is blocked, with the
    // cause in its status and its log; the other one went on to the end.
    let second_status = second_config
        .parent()
        .and_then(|conf| conf.parent())
        .map(|dir| dir.join("run/kafka2mysql.status.json"))
        .unwrap();
    let blocked_error = |status: &std::path::Path| -> Option<String> {
        let text = std::fs::read_to_string(status).ok()?;
        let status: serde_json::Value = serde_json::from_str(&text).ok()?;
        let partition = &status["partitions"]["0"];
        (partition["state"] == "blocked").then(|| partition["last_error"].to_string())
    };
    let (first_lost, loser_error) = wait_until(
        "one process blocked on the fence",
        Duration::from_secs(30),
        || match (
            blocked_error(&s.status_file()),
            blocked_error(&second_status),
        ) {
            (Some(e), None) => Ok((true, e)),
            (None, Some(e)) => Ok((false, e)),
            other => Err(format!("blocked errors (first, second): {other:?}")),
        },
    );
    assert!(loser_error.contains(ANOTHER_PROCESS), "{loser_error}");
    let loser = if first_lost { &first } else { &second };
    assert!(
        loser.log_text().contains("exactly-once fence"),
        "{}",
        loser.log_text()
    );
    sigterm_clean(&mut first);
    sigterm_clean(&mut second);
    assert_eq!(s.count(""), 6_000);
}

#[test]
fn two_starts_racing_on_a_new_offset_row_apply_every_record_once() {
    let s = Setup::new("eo_race", 1, EVENTS, EXACTLY_ONCE);
    produce_json(&s.topic, 0, &events(0, 0, 2_000));
    slow_inserts(&s, 0.002);
    let second_config = second_config(&s);
    let mut first = s.start();
    let mut second = Service::start(&["run", "--config", second_config.to_str().unwrap()]);
    assert_every_record_once_at_log_end(&s, 2_000);
    // The loser either lost the offset row at start (exit 2) or its first
    // write (its partition blocked); either way its log names the cause.
    let logs = [first.log_text(), second.log_text()];
    assert_eq!(
        logs.iter().filter(|l| l.contains(ANOTHER_PROCESS)).count(),
        1,
        "exactly one loser:\n{}\n----\n{}",
        logs[0],
        logs[1]
    );
    for service in [&mut first, &mut second] {
        if service.is_running() {
            sigterm_clean(service);
        } else {
            assert_eq!(service.wait_exit(Duration::from_secs(1)).code(), Some(2));
        }
    }
}

#[test]
fn a_stored_offset_outside_the_log_stops_exactly_once_until_the_operator_resets_it() {
    let s = Setup::new("eo_outside", 1, EVENTS, EXACTLY_ONCE);
    produce_json(&s.topic, 0, &events(0, 0, 100));
    let mut service = s.start();
    s.wait_rows(100, Duration::from_secs(60));
    sigterm_clean(&mut service);

    // Past the log end, as after an unclean leader election that truncated
    // the log: reading from earliest would apply the 100 records again.
    mysql_exec(&format!(
        "UPDATE kafka2mysql_offsets SET next_offset = 500 WHERE consumer_group = '{}' AND topic = '{}'",
        s.group, s.topic
    ));
    let mut service = s.start();
    let status = service.wait_exit(Duration::from_secs(60));
    let log = service.log_text();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("offset 500 is past the log end"), "{log}");
    assert!(
        log.contains("kafka2mysql reset-offsets --partition 0 --to earliest|latest|OFFSET"),
        "{log}"
    );
    assert_eq!(s.count(""), 100, "nothing applied again");

    // The operator chooses the log end and the service goes on from there.
    let out = run_binary(
        &[
            "reset-offsets",
            "--config",
            s.config_arg(),
            "--to",
            "latest",
        ],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{out:?}");
    produce_json(&s.topic, 0, &events(0, 100, 50));
    let mut service = s.start();
    s.wait_rows(150, Duration::from_secs(60));
    sigterm_clean(&mut service);

    // Below the log start: records deleted before they were applied.
    produce_json(&s.topic, 0, &events(0, 150, 50));
    delete_records(&s.topic, 0, 170);
    let mut service = s.start();
    let status = service.wait_exit(Duration::from_secs(60));
    let log = service.log_text();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("offset 150 is below the log start"), "{log}");
    assert_eq!(s.count(""), 150);

    // Saying so in the config lets offset_reset move it.
    edit_config(
        &s,
        "delivery = \"exactly_once\"",
        "delivery = \"exactly_once\"\nexactly_once_auto_reset = true",
    );
    let mut service = s.start();
    s.wait_rows(180, Duration::from_secs(60));
    sigterm_clean(&mut service);
    assert_eq!(offset_table_rows(&s), [(0, 200)].into_iter().collect());
}

#[test]
fn a_switch_to_at_least_once_and_back_does_not_apply_that_period_again() {
    let s = Setup::new("eo_switch", 1, EVENTS, EXACTLY_ONCE);
    produce_json(&s.topic, 0, &events(0, 0, 100));
    let mut service = s.start();
    s.wait_rows(100, Duration::from_secs(60));
    sigterm_clean(&mut service);

    edit_config(&s, "\"exactly_once\"", "\"at_least_once\"");
    produce_json(&s.topic, 0, &events(0, 100, 100));
    let mut service = s.start();
    s.wait_rows(200, Duration::from_secs(60));
    s.wait_committed_at_log_end(Duration::from_secs(30));
    sigterm_clean(&mut service);
    assert_eq!(
        offset_table_rows(&s),
        [(0, 100)].into_iter().collect(),
        "at-least-once leaves the offset table behind"
    );

    edit_config(&s, "\"at_least_once\"", "\"exactly_once\"");
    produce_json(&s.topic, 0, &events(0, 200, 50));
    let mut service = s.start();
    s.wait_rows(250, Duration::from_secs(60));
    sigterm_clean(&mut service);
    assert_eq!(
        s.count(""),
        250,
        "the at-least-once period is not applied again"
    );
    assert_eq!(
        query_count(&format!("SELECT COUNT(DISTINCT id) FROM `{}`", s.table)),
        250
    );
    assert_eq!(offset_table_rows(&s), [(0, 250)].into_iter().collect());
    let log = service.log_text();
    assert!(
        log.contains("partition 0: starting at offset 200 (stored offset; stored 200 in kafka group, ahead of the offset table's 100"),
        "{log}"
    );
}

#[test]
fn records_deleted_under_a_running_exactly_once_partition_halt_it() {
    let s = Setup::new(
        "eo_deleted",
        1,
        "row_id BIGINT AUTO_INCREMENT PRIMARY KEY, id BIGINT NOT NULL, name TEXT",
        &format!(
            "{EXACTLY_ONCE}\n[worker]\nqueue_batches = 1\n[kafka]\nfetch_max_bytes_per_partition = 8192"
        ),
    );
    produce_json(&s.topic, 0, &events(0, 0, 20));
    let mut service = s.start();
    s.wait_rows(20, Duration::from_secs(60));
    // A slow table keeps the reader behind the log end (its queue and the
    // client's prefetch hold about a hundred of these records) while the log
    // loses everything it has not read yet.
    slow_inserts(&s, 0.05);
    let large: Vec<serde_json::Value> = (20..3_020)
        .map(|id| json!({"id": id, "name": "x".repeat(1_000)}))
        .collect();
    produce_json(&s.topic, 0, &large);
    std::thread::sleep(Duration::from_secs(3));
    delete_records(&s.topic, 0, 3_020);
    produce_json(&s.topic, 0, &events(0, 3_020, 20));
    mysql_exec(&format!("DROP TRIGGER `{}_slow`", s.table));

    let error = wait_until(
        "partition 0 halted below the log start",
        Duration::from_secs(120),
        || match s.live(0) {
            Some(p) if p["state"] == "blocked" => Ok(p["last_error"].to_string()),
            other => Err(format!("{other:?}")),
        },
    );
    assert!(error.contains("is below the log start"), "{error}");
    assert!(
        error.contains("kafka2mysql reset-offsets --partition 0"),
        "{error}"
    );
    let applied = settled_count(&s);
    assert!(applied < 3_020, "the deletion cost records ({applied})");
    assert_eq!(s.count("WHERE id >= 3020"), 0, "nothing read past the gap");
    assert_eq!(
        offset_table_rows(&s),
        [(0, applied)].into_iter().collect(),
        "the offset table stays where the records stopped"
    );
    sigterm_clean(&mut service);

    let out = run_binary(
        &[
            "reset-offsets",
            "--config",
            s.config_arg(),
            "--to",
            "earliest",
        ],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{out:?}");
    let mut service = s.start();
    s.wait_rows(applied + 20, Duration::from_secs(60));
    sigterm_clean(&mut service);
}

/// The offset table's row of partition 0: its next offset and topic id.
fn offset_row(s: &Setup) -> (i64, Option<String>) {
    let rows = query_rows(&format!(
        "SELECT next_offset, topic_id FROM kafka2mysql_offsets \
         WHERE consumer_group = '{}' AND topic = '{}' AND `partition` = 0",
        s.group, s.topic
    ));
    let row = &rows[0];
    (row[0].as_ref().unwrap().parse().unwrap(), row[1].clone())
}

#[test]
fn a_topic_deleted_and_created_again_is_a_new_log_in_exactly_once_mode_too() {
    let s = Setup::new("eo_recreate", 1, EVENTS, EXACTLY_ONCE);
    produce_json(&s.topic, 0, &events(0, 0, 100));
    let mut service = s.start();
    s.wait_rows(100, Duration::from_secs(60));
    let (offset, first_id) = offset_row(&s);
    assert_eq!(offset, 100);
    assert!(first_id.is_some(), "the row names the topic's id");

    // While it runs: the new log (300 records) is read from its start, once
    // the service has seen the topic gone (it reads nothing then). A topic
    // created again before it looked is the limit in README.md, "Limits":
    // librdkafka reads the new log from the old positions until then.
    delete_topic(&s.topic);
    service.wait_for_log(
        "no longer exists; nothing is read",
        1,
        Duration::from_secs(30),
    );
    create_topic(&s.topic, 1);
    produce_json(&s.topic, 0, &events(0, 1_000, 300));
    s.wait_rows(400, Duration::from_secs(90));
    wait_until(
        "the offset row at the new log's end",
        Duration::from_secs(30),
        || match offset_row(&s) {
            (300, _) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    sigterm_clean(&mut service);
    let (_, second_id) = offset_row(&s);
    assert!(
        second_id.is_some() && second_id != first_id,
        "the reset stored the new topic's id: {first_id:?} then {second_id:?}"
    );

    // A restart resumes the same topic from the row: nothing again.
    produce_json(&s.topic, 0, &events(0, 1_300, 10));
    let mut service = s.start();
    s.wait_rows(410, Duration::from_secs(60));
    sigterm_clean(&mut service);
    assert!(
        service.log_text().contains(
            "partition 0: starting at offset 300 (stored offset; stored 300 in offset table"
        ),
        "{}",
        service.log_text()
    );

    // While it is stopped: the row's 310 lies inside the newer log of 500,
    // and belongs to the topic before.
    delete_topic(&s.topic);
    create_topic(&s.topic, 1);
    produce_json(&s.topic, 0, &events(0, 5_000, 500));
    let mut service = s.start();
    s.wait_rows(910, Duration::from_secs(90));
    sigterm_clean(&mut service);
    assert_eq!(
        s.count("WHERE id >= 5000 AND id < 5500"),
        500,
        "every record of the newest topic"
    );
    assert_eq!(
        query_count(&format!("SELECT COUNT(DISTINCT id) FROM `{}`", s.table)),
        910,
        "none twice"
    );
    let log = service.log_text();
    assert!(
        log.contains(
            "the offset table's position 310 belongs to a topic of the same name that was deleted"
        ),
        "a warning names the old position:\n{log}"
    );
    assert!(
        log.contains("partition 0: starting at offset 0 ("),
        "the newest topic is read from its start:\n{log}"
    );
    assert_eq!(offset_row(&s).0, 500);
    s.assert_committed_at_log_end();
}
