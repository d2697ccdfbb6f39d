//! Failures that concern one table or one partition: bad records are
//! dead-lettered with their reason, a locked row or a revoked privilege blocks
//! only what it must and resumes by itself, the dead-letter burst limit holds.
//! Outages of the whole database or broker are in `tests/outage`, which runs
//! on its own.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;
use crate::setup::{orders, Setup, ORDERS};

fn committed(s: &Setup, partition: i32) -> Option<i64> {
    kafka_client()
        .fetch_group_topic_offset(&s.group, &s.topic)
        .ok()?
        .into_iter()
        .find(|p| p.partition == partition)
        .map(|p| p.offset)
        .filter(|&o| o >= 0)
}

#[test]
fn poison_records_are_dead_lettered_with_their_reason_and_the_good_ones_land() {
    let s = Setup::new(
        "failures_poison",
        2,
        "id BIGINT PRIMARY KEY, name VARCHAR(16), amount INT",
        "[worker]\nmax_record_bytes = 20000",
    );
    let dl = &s.dead_letters;

    let huge = "h".repeat(30_000);
    let bad: Vec<(Vec<u8>, &str, Option<u16>)> = vec![
        (b"{not json".to_vec(), "not JSON", None),
        (
            b"{\"id\": 1, \"name\": \"\xff\xfe\"}".to_vec(),
            "UTF-8",
            None,
        ),
        (br#"{"name": "no key"}"#.to_vec(), "key column", None),
        (
            br#"{"id": 5, "name": "this name is far too long for sixteen"}"#.to_vec(),
            "",
            Some(1406),
        ),
        (
            br#"{"id": 6, "amount": "not a number"}"#.to_vec(),
            "",
            Some(1366),
        ),
        (
            format!(r#"{{"id": 7, "name": "{huge}"}}"#).into_bytes(),
            "larger than",
            None,
        ),
    ];
    let mut expected_dead = Vec::new();
    let mut good = 0;
    for p in 0..2 {
        let mut records: Vec<KeyValue> = Vec::new();
        for i in 0..1_500 {
            let id = 1_000 + p as i64 * 10_000 + i;
            records.push((
                None,
                Some(
                    serde_json::to_vec(&json!({"id": id, "name": format!("n{i}"), "amount": i}))
                        .unwrap(),
                ),
            ));
            good += 1;
            if i % 100 == 50 {
                let (value, _, _) = &bad[(i as usize / 100) % bad.len()];
                records.push((None, Some(value.clone())));
            }
        }
        let offsets = produce(&s.topic, p, &records);
        for (offset, (_, value)) in offsets.iter().zip(&records) {
            if let Some((_, needle, code)) = bad.iter().find(|(b, _, _)| Some(b) == value.as_ref())
            {
                expected_dead.push((p, *offset, *needle, *code));
            }
        }
    }
    assert_eq!(good, 3_000);
    let mut service = s.start();
    s.wait_rows(3_000, Duration::from_secs(120));
    let log_end = log_end_offsets(&s.topic);
    for p in 0..2 {
        let end = log_end[&p];
        wait_for_eq(
            &format!("partition {p} committed to its log end (lag 0)"),
            Duration::from_secs(60),
            Some(end),
            || committed(&s, p),
        );
    }
    let status = service.sigterm_and_wait(Duration::from_secs(30));
    assert!(status.success());

    let rows = query_rows(&format!(
        "SELECT `partition`, `offset`, error_class, error_code, error_text, attempts FROM `{dl}` ORDER BY `partition`, `offset`"
    ));
    assert_eq!(rows.len(), expected_dead.len(), "dead letters: {rows:?}");
    for (row, (p, offset, needle, code)) in rows.iter().zip(&expected_dead) {
        let cell = |i: usize| row[i].clone().unwrap_or_default();
        assert_eq!(
            (cell(0), cell(1)),
            (p.to_string(), offset.to_string()),
            "{row:?}"
        );
        assert_eq!(cell(2), "business", "{row:?}");
        assert_eq!(row[3].clone(), code.map(|c| c.to_string()), "{row:?}");
        assert!(
            cell(4).contains(needle),
            "error text should mention {needle:?}: {row:?}"
        );
        assert_eq!(cell(5), "3", "attempts = business_attempts: {row:?}");
    }
    assert_eq!(s.count("WHERE name LIKE 'n%'"), 3_000);
}

#[test]
fn a_locked_row_blocks_only_its_partition_until_released() {
    // Lock waits end after 3 s with MySQL error 1205, a technical error.
    root_sql("SET GLOBAL innodb_lock_wait_timeout = 3");
    let s = Setup::new(
        "failures_lock",
        3,
        ORDERS,
        "[retry]\ntechnical_attempts = 2",
    );
    s.produce_orders(0..3, 0, 10);
    let mut service = s.start();
    s.wait_rows(30, Duration::from_secs(60));

    let locker = s.hold_row_lock(10);
    produce_json(&s.topic, 0, &orders(0, 10, 50));
    // A technical fault: it resumes by itself, so it is "retrying".
    let blocked = s.wait_state(0, "retrying", Duration::from_secs(60));
    assert!(
        blocked["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("1205"),
        "{blocked}"
    );
    assert_eq!(blocked["error_class"], "technical", "{blocked}");
    assert_eq!(blocked["blocked_at_offset"], 10);

    // While partition 0 is blocked, the others keep landing their records.
    s.produce_orders(1..3, 10, 500);
    wait_for_eq(
        "partitions 1 and 2 land while 0 is blocked",
        Duration::from_secs(60),
        1_020,
        || s.count("WHERE id >= 1000000"),
    );
    assert_eq!(s.live(0).unwrap()["state"], "retrying");
    assert!(
        committed(&s, 0).unwrap_or(0) <= 10,
        "nothing committed past the failing record"
    );

    locker.release();
    s.wait_state(0, "flowing", Duration::from_secs(60));
    s.wait_rows(60 + 1_020, Duration::from_secs(60));
    let status = service.sigterm_and_wait(Duration::from_secs(30));
    assert!(status.success());
    assert!(
        service.log_text().contains("partition 0: resumed"),
        "{}",
        service.log_text()
    );
    assert_eq!(
        query_count(&format!("SELECT COUNT(*) FROM `{}`", s.dead_letters)),
        0
    );
}

#[test]
fn a_revoked_privilege_blocks_without_dead_letters_and_sigterm_still_stops() {
    let password = "revoke-test-pw";
    let s = Setup::new(
        "failures_revoke",
        2,
        ORDERS,
        "[retry]\ntechnical_attempts = 1\n[worker]\nshutdown_timeout_ms = 5000",
    );
    let dl = &s.dead_letters;
    // A user of the test's own, so that revoking does not disturb other tests.
    let user = s.own_user(password, "");
    s.produce_orders(0..2, 0, 20);
    let mut service = Service::start_with_env(
        &["run", "--config", s.config_arg()],
        &[("MYSQL_PASSWORD", password)],
    );
    s.wait_rows(40, Duration::from_secs(60));

    root_sql(&format!(
        "REVOKE INSERT ON kafka2mysql.`{}` FROM '{user}'@'127.0.0.1'",
        s.table
    ));
    s.produce_orders(0..2, 20, 30);
    for p in 0..2 {
        let b = s.wait_state(p, "blocked", Duration::from_secs(60));
        assert!(
            b["last_error"].as_str().unwrap_or("").contains("1142"),
            "{b}"
        );
        assert!(
            b["last_error"]
                .as_str()
                .unwrap_or("")
                .contains("operator must fix"),
            "{b}"
        );
    }
    assert_eq!(
        query_count(&format!("SELECT COUNT(*) FROM `{dl}`")),
        0,
        "nothing is dead-lettered for a setup problem"
    );
    root_sql(&format!(
        "GRANT INSERT ON kafka2mysql.`{}` TO '{user}'@'127.0.0.1'",
        s.table
    ));
    s.wait_rows(100, Duration::from_secs(60));
    for p in 0..2 {
        s.wait_state(p, "flowing", Duration::from_secs(30));
    }

    // Shutdown while blocked: SIGTERM still stops within the shutdown
    // timeout, committing what was applied and nothing else.
    root_sql(&format!(
        "REVOKE INSERT ON kafka2mysql.`{}` FROM '{user}'@'127.0.0.1'",
        s.table
    ));
    produce_json(&s.topic, 0, &orders(0, 50, 10));
    s.wait_state(0, "blocked", Duration::from_secs(60));
    let started = Instant::now();
    let status = service.sigterm_and_wait(Duration::from_secs(30));
    assert!(status.success(), "{status:?}\n{}", service.log_text());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped after {:?}",
        started.elapsed()
    );
    assert_eq!(
        committed(&s, 0),
        Some(50),
        "partition 0 committed up to the blocked record, not past it"
    );
    assert_eq!(committed(&s, 1), Some(50));
    assert_eq!(query_count(&format!("SELECT COUNT(*) FROM `{dl}`")), 0);
    root_sql(&format!("DROP USER '{user}'@'127.0.0.1'"));
}

#[test]
fn the_dead_letter_burst_blocks_the_partition() {
    let s = Setup::new(
        "failures_burst",
        1,
        ORDERS,
        "[retry]\nbusiness_attempts = 0\ndead_letter_burst = 50",
    );
    let dl = &s.dead_letters;
    let records: Vec<KeyValue> = (0..100)
        .map(|i| (None, Some(format!("bad record {i}").into_bytes())))
        .collect();
    produce(&s.topic, 0, &records);
    let mut service = s.start();
    let blocked = s.wait_state(0, "blocked", Duration::from_secs(60));
    assert!(
        blocked["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("dead_letter_burst"),
        "{blocked}"
    );
    assert_eq!(blocked["blocked_at_offset"], 50);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(query_count(&format!("SELECT COUNT(*) FROM `{dl}`")), 50);
    wait_for_eq(
        "committed offset at the blocked record",
        Duration::from_secs(30),
        Some(50),
        || committed(&s, 0),
    );
    let status = service.sigterm_and_wait(Duration::from_secs(30));
    assert!(status.success());
    assert_eq!(query_count(&format!("SELECT COUNT(*) FROM `{dl}`")), 50);
}
