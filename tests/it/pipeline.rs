//! The pipeline end to end: records of a real topic become rows of a
//! real table; offsets are committed only after the rows are in; stops,
//! crashes and OffsetOutOfRange lose nothing that is still in the log.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use crate::common::*;
use crate::setup::{orders, sigterm_clean, Setup, ORDERS};

#[test]
fn twenty_thousand_records_on_four_partitions_land_and_are_committed() {
    let s = Setup::new(
        "pipeline_20k",
        4,
        ORDERS,
        "[commit]\nevery_messages = 1000\ninterval_ms = 1000",
    );
    s.produce_orders(0..4, 0, 5_000);
    let mut service = s.start();
    s.wait_rows(20_000, Duration::from_secs(120));
    // Every row carries the values that were produced for its id.
    assert_eq!(
        s.count("WHERE name = CONCAT('name-', id) AND amount = (id MOD 1000) + 0.25"),
        20_000,
        "rows whose values differ from what was produced"
    );
    sigterm_clean(&mut service);
    let log_end = log_end_offsets(&s.topic);
    let committed = group_offsets(&s.group, &s.topic);
    let expected: std::collections::BTreeMap<i32, Option<i64>> =
        log_end.iter().map(|(&p, &o)| (p, Some(o))).collect();
    assert_eq!(
        committed, expected,
        "committed offsets (Kafka's consumer-groups tool) vs log end offsets"
    );
    assert_eq!(log_end.values().sum::<i64>(), 20_000);
}

/// The test broker (scripts/services.sh) drops a group's offsets a minute
/// after their last commit when the group has no members (this service's
/// group never has), checking every few seconds.
#[test]
fn the_offsets_of_idle_partitions_do_not_expire_while_the_service_runs() {
    let s = Setup::new("pipeline_idle_commits", 2, ORDERS, "");
    s.produce_orders(0..2, 0, 10);
    let mut service = s.start();
    s.wait_rows(20, Duration::from_secs(60));
    s.wait_committed_at_log_end(Duration::from_secs(30));
    // Past the broker's retention, with nothing to read.
    std::thread::sleep(Duration::from_secs(80));
    assert_eq!(
        group_offsets(&s.group, &s.topic),
        [(0, Some(10)), (1, Some(10))].into(),
        "the group's offsets after 80 idle seconds"
    );
    sigterm_clean(&mut service);
}

#[test]
fn a_clean_restart_applies_nothing_twice_and_a_sigkill_loses_nothing() {
    // Insert mode into a table without a unique key: a record applied twice
    // shows up as a second row.
    let s = Setup::new(
        "pipeline_restart",
        2,
        "row_id BIGINT AUTO_INCREMENT PRIMARY KEY, id BIGINT NOT NULL, name VARCHAR(64)",
        "[mysql]\nwrite_mode = \"insert\"\nkey_columns = []\ndelete_on_tombstone = false\n[commit]\nevery_messages = 50\ninterval_ms = 100\n[kafka]\nfetch_max_bytes_per_partition = 65536",
    );
    let records = |p: i32, first: i64, n: i64| -> Vec<serde_json::Value> {
        (first..first + n)
            .map(|i| json!({"id": p as i64 * 1_000_000 + i, "name": "x"}))
            .collect()
    };
    for p in 0..2 {
        produce_json(&s.topic, p, &records(p, 0, 500));
    }
    let mut service = s.start();
    s.wait_rows(1_000, Duration::from_secs(60));
    sigterm_clean(&mut service);

    for p in 0..2 {
        produce_json(&s.topic, p, &records(p, 500, 250));
    }
    let mut service = s.start();
    s.wait_rows(1_500, Duration::from_secs(60));
    sigterm_clean(&mut service);
    assert_eq!(
        s.count(""),
        1_500,
        "a clean stop must leave nothing to apply again"
    );
    assert_eq!(
        query_count(&format!("SELECT COUNT(DISTINCT id) FROM `{}`", s.table)),
        1_500
    );

    // SIGKILL in the middle of a larger load, then restart: every record is
    // there (some may be there twice: at-least-once).
    for p in 0..2 {
        produce_json(&s.topic, p, &records(p, 750, 10_000));
    }
    // A trigger slows the inserts so that the kill lands in the middle.
    mysql_exec(&format!(
        "CREATE TRIGGER `{t}_slow` BEFORE INSERT ON `{t}` FOR EACH ROW SET @k2m_slow = SLEEP(0.003)",
        t = s.table
    ));
    let mut service = s.start();
    let sql = format!("SELECT COUNT(*) FROM `{}`", s.table);
    wait_until(
        "some of the new records applied",
        Duration::from_secs(60),
        || {
            let n = query_count(&sql);
            if n > 2_500 {
                Ok(())
            } else {
                Err(format!("{n} rows"))
            }
        },
    );
    service.sigkill();
    let killed_at = query_count(&sql);
    assert!(
        killed_at < 21_500,
        "the kill should come before the end ({killed_at} rows)"
    );
    let mut service = s.start();
    let distinct = format!("SELECT COUNT(DISTINCT id) FROM `{}`", s.table);
    wait_for_eq(
        "every record present after SIGKILL and restart",
        Duration::from_secs(120),
        21_500,
        || query_count(&distinct),
    );
    sigterm_clean(&mut service);
    s.assert_committed_at_log_end();
}

#[test]
fn commits_advance_in_steps_and_never_pass_what_is_in_mysql() {
    // A trigger slows each insert down so that the run lasts a few seconds.
    let s = Setup::new(
        "pipeline_steps",
        1,
        ORDERS,
        "[commit]\nevery_messages = 100\ninterval_ms = 10000\n[kafka]\nfetch_max_bytes_per_partition = 8192",
    );
    mysql_exec(&format!(
        "CREATE TRIGGER `{t}_slow` BEFORE INSERT ON `{t}` FOR EACH ROW SET @k2m_slow = SLEEP(0.002)",
        t = s.table
    ));
    produce_json(&s.topic, 0, &orders(0, 0, 2_000));
    let mut service = s.start();
    let mut client = kafka_client();
    let mut seen = BTreeSet::new();
    let count_sql = format!("SELECT COUNT(*) FROM `{}`", s.table);
    let started = std::time::Instant::now();
    loop {
        // Committed first, rows second: rows only grow, so committed <= rows
        // must hold whatever happens in between.
        let committed = client
            .fetch_group_topic_offset(&s.group, &s.topic)
            .expect("group offsets")
            .into_iter()
            .find(|p| p.partition == 0)
            .map_or(-1, |p| p.offset);
        let rows = query_count(&count_sql);
        assert!(
            committed <= rows,
            "committed offset {committed} is beyond the {rows} rows in MySQL"
        );
        if committed > 0 {
            seen.insert(committed);
        }
        if committed == 2_000 || started.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    sigterm_clean(&mut service);
    let steps: Vec<i64> = seen.iter().copied().filter(|&c| c < 2_000).collect();
    assert!(
        steps.len() >= 3,
        "expected several intermediate commits, saw {seen:?}"
    );
    assert_eq!(
        group_offsets(&s.group, &s.topic).get(&0),
        Some(&Some(2_000))
    );
}

#[test]
fn a_stored_offset_below_the_log_start_restarts_that_partition_at_earliest() {
    let s = Setup::new("pipeline_oor_start", 3, ORDERS, "");
    s.produce_orders(0..3, 0, 100);
    let mut service = s.start();
    s.wait_rows(300, Duration::from_secs(60));
    sigterm_clean(&mut service);

    // While stopped: 100 more records per partition, and partition 0 loses
    // its records below 150 (the stored offset, 100, falls below the log start).
    s.produce_orders(0..3, 100, 100);
    delete_records(&s.topic, 0, 150);
    assert_eq!(log_start_offsets(&s.topic).get(&0), Some(&150));

    let mut service = s.start();
    s.wait_rows(300 + 50 + 200, Duration::from_secs(60));
    sigterm_clean(&mut service);
    assert_eq!(
        s.count("WHERE id BETWEEN 100 AND 149"),
        0,
        "deleted records cannot be applied"
    );
    assert_eq!(s.count("WHERE id BETWEEN 150 AND 199"), 50);
    assert_eq!(
        s.count("WHERE id >= 1000000"),
        400,
        "the other partitions lose nothing"
    );
    let log = service.log_text();
    assert!(
        log.contains("partition 0: starting at offset 150 (stored offset 100 is out of range"),
        "the start reason is logged:\n{log}"
    );
}

#[test]
fn offset_out_of_range_while_running_costs_the_other_partitions_nothing() {
    // Small fetches: the client's own prefetch (twice the fetch size, at
    // least 64 KiB with librdkafka) fills up soon once the worker stalls.
    let s = Setup::new(
        "pipeline_oor_run",
        3,
        ORDERS,
        "[worker]\nqueue_batches = 1\n[kafka]\nfetch_max_bytes_per_partition = 8192",
    );
    s.produce_orders(0..3, 0, 10);
    let mut service = s.start();
    s.wait_rows(30, Duration::from_secs(60));

    // Block partition 0's worker on a row lock: its next record's id is held
    // by an open transaction of ours.
    let locker = s.hold_row_lock(10);

    // Feed partition 0 until its worker's queue is full and the coordinator
    // stops fetching it: the fetch position then stays behind the log end.
    let mut next = 10;
    wait_until(
        "partition 0's fetch position to stall behind its log end",
        Duration::from_secs(60),
        || {
            produce_json(&s.topic, 0, &orders(0, next, 200));
            next += 200;
            // The status file is rewritten every second: look twice, further apart.
            std::thread::sleep(Duration::from_millis(1_500));
            let a = s.live(0).and_then(|p| p["fetch_offset"].as_i64());
            std::thread::sleep(Duration::from_millis(1_500));
            let b = s.live(0).and_then(|p| p["fetch_offset"].as_i64());
            match (a, b) {
                (Some(a), Some(b)) if a == b && b < next => Ok(b),
                other => Err(format!("fetch offsets {other:?}, log end {next}")),
            }
        },
    );
    // More than the client may prefetch, so that its own position stalls too.
    produce_json(&s.topic, 0, &orders(0, next, 2_000));
    next += 2_000;
    std::thread::sleep(Duration::from_secs(2));
    // Delete everything partition 0 has; the reader's position is now below
    // the log start.
    delete_records(&s.topic, 0, next);
    produce_json(&s.topic, 0, &orders(0, next, 20));
    s.produce_orders(1..3, 10, 500);
    locker.release();
    s.produce_orders(1..3, 510, 500);

    let after_reset = format!("WHERE id >= {next} AND id < 1000000");
    wait_for_eq(
        "partitions 1 and 2 done, partition 0 read after the reset",
        Duration::from_secs(90),
        (2 * 1_010, 20),
        || (s.count("WHERE id >= 1000000"), s.count(&after_reset)),
    );
    sigterm_clean(&mut service);
    // What partition 0 applied before the reset is a prefix of its log: the
    // records fetched before their deletion, with no gap.
    let applied_before = s.count(&format!("WHERE id < {next}"));
    assert!(
        applied_before < next,
        "the deletion must have cost partition 0 some records ({applied_before} of {next})"
    );
    assert_eq!(
        query_count(&format!(
            "SELECT COALESCE(MAX(id) + 1, 0) FROM `{}` WHERE id < {next}",
            s.table
        )),
        applied_before,
        "partition 0 up to its fetch position, without a gap"
    );
    let log = service.log_text();
    let expected_warning = format!(
        "partition 0: offset {applied_before} is out of range [{next}, {}]",
        next + 20
    );
    let skipped = format!("{} offsets skipped", next - applied_before);
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains(&expected_warning) && l.contains(&skipped)),
        "expected a warning with `{expected_warning}` and `{skipped}`:\n{log}"
    );
}

#[test]
fn a_tombstone_deletes_its_row_and_a_duplicate_in_insert_mode_is_skipped() {
    let s = Setup::new("pipeline_tombstone", 1, ORDERS, "");
    let offsets = produce_keyed_json(
        &s.topic,
        0,
        &[
            (json!(1), Some(json!({"id": 1, "name": "one"}))),
            (json!(2), Some(json!({"id": 2, "name": "two"}))),
            (json!(3), Some(json!({"id": 3, "name": "three"}))),
            (json!(2), None),
            (json!({"id": 3}), None),
            (json!(4), Some(json!({"id": 4, "name": "four"}))),
        ],
    );
    assert_eq!(offsets, vec![0, 1, 2, 3, 4, 5]);
    let mut service = s.start();
    wait_for_eq(
        "rows 1 and 4 left",
        Duration::from_secs(60),
        vec![vec![Some("1".to_string())], vec![Some("4".to_string())]],
        || query_rows(&format!("SELECT id FROM `{}` ORDER BY id", s.table)),
    );
    sigterm_clean(&mut service);
    assert_eq!(group_offsets(&s.group, &s.topic).get(&0), Some(&Some(6)));

    let s = Setup::new(
        "pipeline_insert_dup",
        1,
        ORDERS,
        "[mysql]\nwrite_mode = \"insert\"\ndelete_on_tombstone = false\n[retry]\nbusiness_attempts = 1",
    );
    produce_json(
        &s.topic,
        0,
        &[
            json!({"id": 1, "name": "first"}),
            json!({"id": 1, "name": "again"}),
            json!({"id": 2, "name": "after"}),
        ],
    );
    let mut service = s.start();
    s.wait_rows(2, Duration::from_secs(60));
    wait_for_eq(
        "the committed offset past all three",
        Duration::from_secs(30),
        Some(3),
        || {
            kafka_client()
                .fetch_group_topic_offset(&s.group, &s.topic)
                .ok()
                .and_then(|o| o.into_iter().find(|p| p.partition == 0).map(|p| p.offset))
        },
    );
    sigterm_clean(&mut service);
    assert_eq!(
        query_rows(&format!("SELECT id, name FROM `{}` ORDER BY id", s.table)),
        vec![
            vec![Some("1".into()), Some("first".into())],
            vec![Some("2".into()), Some("after".into())]
        ]
    );
    assert!(
        service
            .log_text()
            .contains("partition 0 offset 1: dead-lettered"),
        "{}",
        service.log_text()
    );
}

#[test]
fn bad_configs_exit_2_and_name_the_key_or_object() {
    let topic = unique_name("pipeline_badcfg");
    create_topic(&topic, 1);
    create_table(&topic, ORDERS);
    let good = test_config(&topic, "g", &topic, "");
    let dir = test_dir("badcfg");
    let cases: Vec<(&str, String, &str)> = vec![
        ("not TOML", "[kafka\nbrokers = 1".to_string(), "config"),
        (
            "missing key",
            good.replace(&format!("topic = \"{topic}\""), ""),
            "kafka.topic",
        ),
        (
            "unknown key",
            good.replace(
                "every_messages = 100",
                "every_messages = 100\nevery_message = 3",
            ),
            "commit.every_message",
        ),
        (
            "wrong type",
            good.replace("every_messages = 100", "every_messages = \"lots\""),
            "commit.every_messages",
        ),
        (
            "bad enum",
            good.replace(
                "offset_reset = \"earliest\"",
                "offset_reset = \"sometimes\"",
            ),
            "kafka.offset_reset",
        ),
        (
            "password in URL",
            good.replace("k2m@", "k2m:k2m-test-password@"),
            "mysql.url",
        ),
        (
            "missing table",
            good.replace(
                &format!("table = \"{topic}\""),
                "table = \"no_such_table_k2m\"",
            ),
            "no_such_table_k2m",
        ),
        (
            "missing key column",
            good.replace("key_columns = [\"id\"]", "key_columns = [\"idd\"]"),
            "\"idd\"",
        ),
        (
            "missing topic",
            good.replace(
                &format!("topic = \"{topic}\""),
                "topic = \"no_such_topic_k2m\"",
            ),
            "no_such_topic_k2m",
        ),
    ];
    for (what, text, needle) in cases {
        let case_dir = dir.join(what.replace(' ', "_"));
        let config = write_config(&case_dir.join("conf"), &text);
        for command in ["check", "run"] {
            let out = run_binary(
                &[command, "--config", config.to_str().unwrap()],
                Duration::from_secs(60),
            );
            assert_eq!(
                out.status.code(),
                Some(2),
                "{what}: `{command}` exit code\nstdout:{}\nstderr:{}",
                out.stdout,
                out.stderr
            );
            assert!(
                out.stderr.contains(needle),
                "{what}: `{command}` should name {needle}; stderr:\n{}",
                out.stderr
            );
            assert!(!out.stderr.contains("panicked"), "{what}: {}", out.stderr);
            assert!(
                !out.stderr.contains("k2m-test-password"),
                "{what}: the password leaked: {}",
                out.stderr
            );
        }
    }
    // Neither command created what it found missing.
    let topics = services(&["topic-list"]);
    assert!(
        !topics.lines().any(|t| t.trim() == "no_such_topic_k2m"),
        "a missing topic was created: {topics}"
    );
    assert_eq!(
        query_count(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_NAME = 'no_such_table_k2m'"
        ),
        0,
        "a missing table was created"
    );
}

/// Resident set size of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS")
}

/// A size from `/proc/PID/status` (`VmRSS`, `VmHWM`: the peak RSS), in KiB.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

#[test]
fn memory_stays_flat_while_a_blocked_partition_keeps_receiving() {
    let s = Setup::new(
        "pipeline_memory",
        2,
        "id BIGINT PRIMARY KEY, name VARCHAR(64), payload TEXT",
        "",
    );
    produce_json(&s.topic, 0, &[json!({"id": 1, "name": "first"})]);
    let mut service = s.start();
    s.wait_rows(1, Duration::from_secs(60));
    let locker = s.hold_row_lock(2);

    let payload = "p".repeat(1_000);
    let batch = |first: i64, n: i64| -> Vec<serde_json::Value> {
        (first..first + n)
            .map(|id| json!({"id": id, "name": "x", "payload": payload}))
            .collect()
    };
    produce_json(&s.topic, 0, &batch(2, 2_000));
    std::thread::sleep(Duration::from_secs(2));
    let baseline = rss_kib(service.pid());
    let mut peak = baseline;
    // 60 MB more for the blocked partition: far more than its queue may hold.
    for round in 0..30 {
        produce_json(&s.topic, 0, &batch(2_002 + round * 2_000, 2_000));
        peak = peak.max(rss_kib(service.pid()));
    }
    std::thread::sleep(Duration::from_secs(2));
    peak = peak.max(rss_kib(service.pid()));
    assert_eq!(s.count(""), 1, "partition 0 is blocked on the lock");
    assert!(
        peak < baseline + 40 * 1024,
        "resident memory grew from {baseline} KiB to {peak} KiB while 60 MB arrived for a blocked partition"
    );
    locker.release();
    s.wait_rows(1 + 62_000, Duration::from_secs(180));
    sigterm_clean(&mut service);
}

/// Sixteen partitions share the three connections `mysql.max_connections`
/// allows. The service runs as a user of its own that the server lets open
/// four connections at a time (one more for the start-up's connection,
/// which may still be closing when the workers start). Every partition's
/// first row is locked by another session, so every worker is in the middle
/// of a write at once: three of them hold a connection, the others wait
/// for one, and none is refused by the server (its error 1226, "has
/// exceeded the 'max_user_connections' resource"). Once the locks go, every
/// record lands.
#[test]
fn sixteen_partitions_share_the_connections_mysql_max_connections_allows() {
    let password = "pool-test-pw";
    let s = Setup::new(
        "pipeline_pool",
        16,
        ORDERS,
        "[mysql]\nmax_connections = 3\n[retry]\ntechnical_attempts = 1",
    );
    let user = s.own_user(password, "MAX_USER_CONNECTIONS 4");
    s.produce_orders(0..16, 0, 500);
    let locks: Vec<_> = (0..16).map(|p| s.hold_row_lock(p * 1_000_000)).collect();
    let mut service = Service::start_with_env(
        &["run", "--config", s.config_arg()],
        &[("MYSQL_PASSWORD", password)],
    );
    let connections =
        format!("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{user}'");
    let count_connections = || root_sql(&connections).trim().parse::<i64>().unwrap_or(0);
    // Three workers wait on the locks; give the other thirteen time to ask.
    wait_until(
        "3 connections",
        Duration::from_secs(60),
        || match count_connections() {
            3.. => Ok(()),
            n => Err(format!("{n} connections")),
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let most = count_connections();
    for lock in locks {
        lock.release();
    }
    s.wait_rows(8_000, Duration::from_secs(120));
    sigterm_clean(&mut service);
    let log = service.log_text();
    assert!(
        !log.contains("max_user_connections"),
        "a connection was refused:\n{log}"
    );
    assert_eq!(most, 3, "connections of the service's user while all wait");
    assert_eq!(
        query_count(&format!("SELECT COUNT(*) FROM `{}`", s.dead_letters)),
        0
    );
    root_sql(&format!("DROP USER '{user}'@'127.0.0.1'"));
}

/// The line of a librdkafka client whose window opens (`Rotation` in
/// `src/broker/librdkafka.rs`).
const WINDOW_OPENED: &str =
    "] (main) kafka: no partition has a backlog: every partition is read at once";

/// Whether the client under test reads many partitions in turn
/// (librdkafka); the kafka crate's client reads them all at once.
fn reads_in_turn() -> bool {
    matches!(k2m_client().as_deref(), None | Some("librdkafka"))
}

/// Produces `count` orders into each of `partitions` partitions, each with
/// a `pad` field of `pad_bytes` bytes (no column: ignored) to make it larger.
fn produce_padded_orders(topic: &str, partitions: i32, count: i64, pad_bytes: usize) {
    let pad = "p".repeat(pad_bytes);
    for p in 0..partitions {
        let records: Vec<serde_json::Value> = orders(p, 0, count)
            .into_iter()
            .map(|mut order| {
                order["pad"] = json!(pad);
                order
            })
            .collect();
        produce_json(topic, p, &records);
    }
}

/// Many partitions read in turn (librdkafka): the window opens while no
/// partition has a backlog, closes when a burst comes into every partition
/// at once, and opens again once the burst is written; every record lands
/// once and the group's offsets reach the log end. The kafka crate's client
/// has no window and reads them all the same.
#[test]
fn a_burst_closes_the_open_window_and_every_record_lands() {
    const PARTITIONS: i32 = 40;
    const PER_PARTITION: i64 = 2_000;
    let s = Setup::new(
        "pipeline_burst",
        PARTITIONS,
        ORDERS,
        "[kafka]\nfetch_window = 4\n[mysql]\nmax_connections = 2\n\
         [worker]\nmax_buffered_bytes = 4194304",
    );
    let mut service = s.start();
    let librdkafka = reads_in_turn();
    const CLOSED: &str = "have a backlog: 4 partitions are read at a time again";
    if librdkafka {
        service.wait_for_log(WINDOW_OPENED, 1, Duration::from_secs(60));
    }
    // 80,000 records of about 600 bytes (`pad` is no column: ignored),
    // 1.2 MB a partition, at once: more than a partition is handed in its
    // turn with a 4 MiB budget, so its queue does not run dry.
    produce_padded_orders(&s.topic, PARTITIONS, PER_PARTITION, 500);
    let total = PARTITIONS as i64 * PER_PARTITION;
    s.wait_rows(total, Duration::from_secs(120));
    s.wait_committed_at_log_end(Duration::from_secs(30));
    if librdkafka {
        service.wait_for_log(WINDOW_OPENED, 2, Duration::from_secs(60));
    }
    sigterm_clean(&mut service);
    let log = service.log_text();
    if librdkafka {
        let first_open = log.find(WINDOW_OPENED).expect("opened");
        let closed = log
            .find(CLOSED)
            .unwrap_or_else(|| panic!("the window never closed:\n{log}"));
        let reopened = log.rfind(WINDOW_OPENED).expect("opened again");
        assert!(first_open < closed && closed < reopened, "{log}");
    } else {
        assert!(
            !log.contains(WINDOW_OPENED) && !log.contains(CLOSED),
            "{log}"
        );
    }
    let expected: i64 = (0..PARTITIONS as i64)
        .map(|p| (0..PER_PARTITION).map(|i| p * 1_000_000 + i).sum::<i64>())
        .sum();
    assert_eq!(
        query_count(&format!("SELECT SUM(id) FROM `{}`", s.table)),
        expected,
        "the sum of the ids: every record once"
    );
    assert_eq!(
        query_count(&format!("SELECT COUNT(*) FROM `{}`", s.dead_letters)),
        0
    );
}

/// A topic of 400 partitions, read by one process with `max_connections = 8`
/// as a user the server allows 20 connections, while six times the memory
/// budget is produced into it: every record lands, the workers never hold
/// more than 8 connections (the server's list of the user's sessions,
/// looked at every 50 ms), and the process's peak RSS grows by no more than
/// the budget allows (README.md, "How it works") over its RSS when it was
/// running and idle.
#[test]
fn four_hundred_partitions_stay_within_eight_connections_and_the_memory_budget() {
    const PARTITIONS: i32 = 400;
    const PER_PARTITION: i64 = 250;
    const BUDGET_MIB: u64 = 8;
    let password = "scale-test-pw";
    let s = Setup::new(
        "pipeline_scale",
        PARTITIONS,
        ORDERS,
        &format!(
            "[mysql]\nmax_connections = 8\n[worker]\nmax_buffered_bytes = {}",
            BUDGET_MIB * 1024 * 1024
        ),
    );
    let user = s.own_user(password, "MAX_USER_CONNECTIONS 20");
    let mut service = Service::start_with_env(
        &["run", "--config", s.config_arg()],
        &[("MYSQL_PASSWORD", password)],
    );
    service.wait_for_log("] (main) running: ", 1, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    let idle_kib = proc_status_kib(service.pid(), "VmHWM");
    // About 480 bytes a record (`pad` is no column: ignored), 48 MB in all.
    produce_padded_orders(&s.topic, PARTITIONS, PER_PARTITION, 400);
    let total = PARTITIONS as i64 * PER_PARTITION;
    let connections =
        format!("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{user}'");
    let mut most = 0;
    let mut rows = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while rows < total && std::time::Instant::now() < deadline {
        let seen = root_sql(&connections).trim().parse::<i64>().unwrap_or(0);
        most = most.max(seen);
        rows = s.count("");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(rows, total, "rows after 90 s");
    s.wait_committed_at_log_end(Duration::from_secs(30));
    let librdkafka = reads_in_turn();
    if librdkafka {
        // A round of partitions at their log end after the backlog.
        service.wait_for_log(WINDOW_OPENED, 1, Duration::from_secs(60));
    }
    let peak_kib = proc_status_kib(service.pid(), "VmHWM");
    sigterm_clean(&mut service);
    let log = service.log_text();
    assert!(
        !log.contains("max_user_connections"),
        "a connection was refused:\n{log}"
    );
    // librdkafka reads the partitions in turn, 16 at a time (twice the
    // connections), with fetches sized for 16, and all at once when none
    // has a backlog; the kafka crate's client reads them all at once.
    let in_turn = log.contains("400 partitions (16 at a time, in turn: kafka.fetch_window)");
    let moved = log.contains("] (main) kafka: partitions [") && log.contains("] leave the window");
    match librdkafka {
        true => assert!(in_turn && moved, "the window never moved:\n{log}"),
        false => assert!(!in_turn && !moved && !log.contains(WINDOW_OPENED), "{log}"),
    }
    assert!(
        (1..=8).contains(&most),
        "{most} connections of the service's user at most while it drained"
    );
    // README.md, "How it works": the records the budget lets in cost up to
    // about 8 times their bytes in resident memory (per-record overhead, the
    // fetch responses librdkafka's messages keep, the rows being written).
    let bound_kib = idle_kib + 8 * BUDGET_MIB * 1024;
    assert!(
        peak_kib < bound_kib,
        "peak RSS {peak_kib} KiB, more than the {bound_kib} KiB a budget of {BUDGET_MIB} MiB allows \
         ({idle_kib} KiB running idle)"
    );
    eprintln!(
        "400 partitions: peak RSS {peak_kib} KiB ({idle_kib} KiB idle), at most {most} connections"
    );
    assert_eq!(
        query_count(&format!("SELECT COUNT(*) FROM `{}`", s.dead_letters)),
        0
    );
    root_sql(&format!("DROP USER '{user}'@'127.0.0.1'"));
}
