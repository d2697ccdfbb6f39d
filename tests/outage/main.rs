//! Outage tests: the whole database or the whole broker goes away
//! for 20 s while the service runs. They stop and start the shared services,
//! so they live in a test binary of their own: cargo runs test binaries one
//! after another, so no `it` test is running meanwhile, and the tests here
//! take one lock so that they run one at a time.

#[path = "../it/common/mod.rs"]
mod common;
#[path = "../it/scrape.rs"]
#[allow(dead_code)]
mod scrape;
#[path = "../it/setup.rs"]
#[allow(dead_code)]
mod setup;

use std::sync::Mutex;
use std::time::Duration;

use common::*;
use scrape::{metrics_address, scrape, Samples};
use setup::{orders, sigterm_clean, Setup, ORDERS};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const OUTAGE: Duration = Duration::from_secs(20);

/// A restarted broker answers before it has elected partition leaders; a
/// produce before that fails.
fn wait_for_leaders(topic: &str, partitions: usize) {
    wait_for_partitions_with_leaders(topic, partitions as i32);
}

/// `kafka2mysql status --json`, which must answer within 4 s whatever the
/// services do: its exit code and report.
fn timed_status(s: &Setup) -> (Option<i32>, serde_json::Value) {
    let started = std::time::Instant::now();
    let out = run_binary(
        &["status", "--config", s.config_arg(), "--json"],
        Duration::from_secs(60),
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "status took {took:?}: {out:?}"
    );
    let report = serde_json::from_str(&out.stdout).expect("status --json prints JSON");
    (out.status.code(), report)
}

/// `timed_status` while `service` ("kafka" or "mysql") does not answer: exit
/// 1 and that service named unreachable.
fn status_without(s: &Setup, service: &str) -> serde_json::Value {
    let (code, report) = timed_status(s);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report[service]
            .as_str()
            .unwrap_or("")
            .starts_with("unreachable"),
        "{service}: {report}"
    );
    report
}

#[test]
fn a_frozen_database_shows_in_status_and_does_not_hold_a_stop() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new(
        "outage_mysql_frozen",
        2,
        ORDERS,
        "[worker]\nshutdown_timeout_ms = 5000",
    );
    s.produce_orders(0..2, 0, 100);
    let mut service = s.start();
    s.wait_rows(200, Duration::from_secs(60));

    /// Thaws the server however the test ends, so that later tests find it.
    struct Thaw;
    impl Drop for Thaw {
        fn drop(&mut self) {
            thaw_mysql();
        }
    }
    freeze_mysql();
    let thaw = Thaw;
    s.produce_orders(0..2, 100, 100);
    // A write that does not return shows after 10 s.
    let report = wait_until(
        "status to show both partitions retrying",
        Duration::from_secs(60),
        || {
            let (code, report) = timed_status(&s);
            let states: Vec<&str> = (0..2)
                .map(|p| report["partitions"][p]["state"].as_str().unwrap_or("?"))
                .collect();
            if code == Some(1) && states == ["retrying", "retrying"] {
                Ok(report)
            } else {
                Err(format!("exit {code:?}, {report}"))
            }
        },
    );
    assert!(
        report["mysql"]
            .as_str()
            .unwrap_or("")
            .starts_with("unreachable"),
        "{report}"
    );
    assert!(
        report["partitions"][0]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("has not returned"),
        "{report}"
    );
    // SIGTERM while the database holds the writes: bounded by
    // shutdown_timeout_ms (5 s) and a margin.
    let started = std::time::Instant::now();
    let status = service.sigterm_and_wait(Duration::from_secs(40));
    let took = started.elapsed();
    drop(thaw);
    assert!(status.success(), "{status:?}:\n{}", service.log_text());
    assert!(
        took < Duration::from_secs(12),
        "the stop took {took:?}:\n{}",
        service.log_text()
    );
    // Nothing was lost: the rest lands after the server is back.
    let mut service = s.start();
    s.wait_rows(400, Duration::from_secs(90));
    sigterm_clean(&mut service);
    s.assert_committed_at_log_end();
}

#[test]
fn mariadb_down_for_20_seconds_while_records_keep_arriving() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new(
        "outage_mariadb",
        3,
        ORDERS,
        "[retry]\nbackoff_max_ms = 1000",
    );
    s.produce_orders(0..3, 0, 200);
    let mut service = s.start();
    s.wait_rows(600, Duration::from_secs(60));

    stop_mysql();
    let producer = {
        let topic = s.topic.clone();
        std::thread::spawn(move || {
            for round in 0..20 {
                for p in 0..3 {
                    produce_json(&topic, p, &orders(p, 200 + round * 50, 50));
                }
                std::thread::sleep(Duration::from_millis(900));
            }
        })
    };
    std::thread::sleep(OUTAGE);
    assert!(
        service.is_running(),
        "the service must not exit while the database is down:\n{}",
        service.log_text()
    );
    let blocked = s.live(0).expect("status file");
    assert_eq!(blocked["state"], "retrying", "{blocked}");
    // `status` answers without the database: the partitions retrying, with
    // the reason, the offsets from Kafka, the dead letters unknown.
    let report = status_without(&s, "mysql");
    assert_eq!(report["kafka"], "ok", "{report}");
    assert_eq!(report["partitions"][0]["state"], "retrying", "{report}");
    assert_eq!(
        report["partitions"][0]["error_class"], "technical",
        "{report}"
    );
    assert!(report["partitions"][0]["committed"].is_i64(), "{report}");
    start_mysql();
    producer.join().expect("producer thread");

    s.wait_rows(600 + 3 * 20 * 50, Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(1));
    sigterm_clean(&mut service);
    s.assert_committed_at_log_end();
    let log = service.log_text();
    assert!(
        log.contains("partition blocked (technical)"),
        "the blocked state is logged:\n{log}"
    );
    assert!(log.contains("resumed"), "{log}");
    assert_eq!(s.count(""), 3_600);
}

/// Starts the broker when dropped: also when a test fails while the broker
/// is down, so that the tests after it find one.
struct BrokerBack;

impl Drop for BrokerBack {
    fn drop(&mut self) {
        start_kafka();
    }
}

#[test]
fn broker_down_for_20_seconds_then_back() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new("outage_broker", 3, ORDERS, "");
    s.produce_orders(0..3, 0, 200);
    let mut service = s.start();
    s.wait_rows(600, Duration::from_secs(60));
    // The rows are in before their offsets are committed: `status` below
    // shows the commits the service last wrote into its status file.
    wait_until(
        "the commits in the status file",
        Duration::from_secs(60),
        || {
            let committed: Vec<_> = (0..3)
                .map(|p| s.live(p).map(|l| l["committed_offset"].clone()))
                .collect();
            match committed
                .iter()
                .all(|c| c.as_ref().is_some_and(|c| c == 200))
            {
                true => Ok(()),
                false => Err(format!("{committed:?}")),
            }
        },
    );

    stop_kafka();
    let broker_back = BrokerBack;
    std::thread::sleep(OUTAGE);
    assert!(
        service.is_running(),
        "the service must not exit while the broker is down:\n{}",
        service.log_text()
    );
    // `status` answers without the broker: the offsets as the service last
    // saw them, and the broker named unreachable.
    let report = status_without(&s, "kafka");
    assert_eq!(report["partitions"][0]["committed"], 200, "{report}");
    assert_eq!(report["partitions"][0]["latest"], 200, "{report}");
    drop(broker_back);
    wait_for_leaders(&s.topic, 3);
    for p in 0..3 {
        // Leadership may still be settling: a refused produce appends nothing
        // and is tried again.
        let records = orders(p, 200, 300);
        let mut tries = 0;
        while std::panic::catch_unwind(|| produce_json(&s.topic, p, &records)).is_err() {
            tries += 1;
            assert!(
                tries < 20,
                "producing to the restarted broker keeps failing"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    s.wait_rows(1_500, Duration::from_secs(120));
    // The commit interval is 200 ms in the test config; give it a moment.
    std::thread::sleep(Duration::from_secs(1));
    sigterm_clean(&mut service);
    s.assert_committed_at_log_end();
    // The kafka crate's client is recreated (one line when the broker is
    // reachable again); librdkafka reconnects by itself and says the brokers
    // were down.
    let log = service.log_text();
    assert!(
        log.contains("kafka: reachable again after") || log.contains("brokers are down"),
        "{log}"
    );
}

#[test]
fn exactly_once_survives_the_database_going_away_in_the_middle() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new(
        "outage_eo",
        4,
        "row_id BIGINT AUTO_INCREMENT PRIMARY KEY, id BIGINT NOT NULL, name VARCHAR(64)",
        "[mysql]\ndelivery = \"exactly_once\"\nwrite_mode = \"insert\"\nkey_columns = []\ndelete_on_tombstone = false\n\
         [retry]\nbackoff_max_ms = 1000\n[kafka]\nfetch_max_bytes_per_partition = 16384",
    );
    // Slow inserts, so that the outage lands in the middle of the load; and
    // a gate: while the test holds the lock `gate`, no partition gets past
    // its 4,500th record, so that the kill below lands in the middle of the
    // load however late the test sees the rows (a timing guess failed once:
    // all 20,000 rows were in before the kill). A write that holds records
    // on both sides of the gate waits whole: small fetches (16 KiB, about
    // 500 records) keep writes small enough for every partition to commit
    // well over 2,500 records before the gate, so the 10,000 rows awaited
    // below come.
    let gate = format!("{}_gate", s.table);
    let mut conn = mysql_conn();
    use mysql::prelude::Queryable;
    conn.query_drop(format!(
        "CREATE TRIGGER `{t}_slow` BEFORE INSERT ON `{t}` FOR EACH ROW BEGIN \
           SET @k2m_slow = SLEEP(0.005); \
           WHILE NEW.id % 1000000 >= 4500 AND IS_USED_LOCK('{gate}') IS NOT NULL DO \
             SET @k2m_slow = SLEEP(0.05); \
           END WHILE; \
         END",
        t = s.table
    ))
    .unwrap();
    drop(conn);
    for p in 0..4 {
        let events: Vec<serde_json::Value> = (0..5_000)
            .map(|i| serde_json::json!({"id": p as i64 * 1_000_000 + i, "name": "e"}))
            .collect();
        produce_json(&s.topic, p, &events);
    }
    let count = format!("SELECT COUNT(*) FROM `{}`", s.table);
    let mut service = s.start();
    wait_until("a quarter of the records", Duration::from_secs(120), || {
        let n = query_count(&count);
        if n >= 5_000 {
            Ok(())
        } else {
            Err(format!("{n} rows"))
        }
    });
    stop_mysql();
    std::thread::sleep(Duration::from_secs(10));
    assert!(service.is_running(), "{}", service.log_text());
    start_mysql();
    let mut holder = mysql_conn();
    let held: Option<i64> = holder
        .query_first(format!("SELECT GET_LOCK('{gate}', 10)"))
        .unwrap();
    assert_eq!(held, Some(1), "the test holds the gate");
    wait_until("half of the records", Duration::from_secs(120), || {
        let n = try_query_count(&count)?;
        if n >= 10_000 {
            Ok(())
        } else {
            Err(format!("{n} rows"))
        }
    });
    // And a crash on top of it.
    service.sigkill();
    let rows = query_count(&count);
    assert!(rows < 20_000, "the kill came too late ({rows} rows)");
    // The killed service's statements waiting at the gate end, and their
    // transactions roll back.
    drop(holder);
    let mut service = s.start();
    s.wait_rows(20_000, Duration::from_secs(180));
    sigterm_clean(&mut service);
    assert_eq!(query_count(&count), 20_000);
    assert_eq!(
        query_count(&format!("SELECT COUNT(DISTINCT id) FROM `{}`", s.table)),
        20_000,
        "every record once"
    );
}

#[test]
fn the_broker_killed_and_restarted_three_times_while_records_stream_in() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new("outage_broker_kills", 3, ORDERS, "");
    let mut service = s.start();
    let mut produced = 0;
    for round in 0..3 {
        s.produce_orders(0..3, produced, 1_000);
        produced += 1_000;
        // The kill lands while the service is still reading the round.
        kill_kafka();
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            service.is_running(),
            "round {round}: the service must not exit:\n{}",
            service.log_text()
        );
        start_kafka();
        wait_for_leaders(&s.topic, 3);
    }
    s.produce_orders(0..3, produced, 1_000);
    produced += 1_000;
    s.wait_rows(3 * produced, Duration::from_secs(180));
    assert!(service.is_running(), "{}", service.log_text());
    s.wait_committed_at_log_end(Duration::from_secs(60));
    sigterm_clean(&mut service);
    assert_eq!(
        s.count("WHERE name = CONCAT('name-', id)"),
        3 * produced,
        "every record, as produced"
    );
}

#[test]
fn a_frozen_broker_neither_stops_the_service_nor_holds_its_stop() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new(
        "outage_broker_frozen",
        2,
        ORDERS,
        "[worker]\nshutdown_timeout_ms = 5000",
    );
    s.produce_orders(0..2, 0, 300);
    let mut service = s.start();
    s.wait_rows(600, Duration::from_secs(60));

    /// Thaws the broker however the test ends, so that later tests find it.
    struct Thaw;
    impl Drop for Thaw {
        fn drop(&mut self) {
            thaw_kafka();
        }
    }
    freeze_kafka();
    let thaw = Thaw;
    std::thread::sleep(Duration::from_secs(30));
    status_without(&s, "kafka");
    std::thread::sleep(Duration::from_secs(30));
    let running = service.is_running();
    // SIGTERM while the broker still does not answer: bounded by
    // shutdown_timeout_ms (5 s) plus the commit's own limit and a margin.
    let started = std::time::Instant::now();
    let status = service.sigterm_and_wait(Duration::from_secs(40));
    let took = started.elapsed();
    drop(thaw);
    assert!(
        running,
        "the service must not exit while the broker is frozen:\n{}",
        service.log_text()
    );
    assert!(
        status.success(),
        "exit 0 after SIGTERM, got {status:?}:\n{}",
        service.log_text()
    );
    assert!(
        took < Duration::from_secs(15),
        "the stop took {took:?}:\n{}",
        service.log_text()
    );

    // Nothing was lost: the rest lands after the broker is back.
    wait_for_leaders(&s.topic, 2);
    s.produce_orders(0..2, 300, 300);
    let mut service = s.start();
    s.wait_rows(1_200, Duration::from_secs(90));
    sigterm_clean(&mut service);
    s.assert_committed_at_log_end();
}

/// Starts MariaDB again when dropped, so that a failing test does not leave
/// it stopped for the next one.
struct MysqlBack;

impl Drop for MysqlBack {
    fn drop(&mut self) {
        start_mysql();
    }
}

#[test]
fn metrics_answer_during_a_database_outage_and_show_the_partitions_retrying() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new(
        "outage_metrics",
        2,
        ORDERS,
        "[metrics]\nlisten = \"127.0.0.1:0\"\n[retry]\ntechnical_attempts = 2\nbackoff_max_ms = 500",
    );
    s.produce_orders(0..2, 0, 100);
    let mut service = s.start();
    let address = metrics_address(&service);
    s.wait_rows(200, Duration::from_secs(60));

    let mysql_back = MysqlBack;
    stop_mysql();
    s.produce_orders(0..2, 100, 50);
    // Every scrape answers within scrape::SCRAPE_TIMEOUT and passes promtool
    // while the workers retry. A technical fault that outlasts
    // retry.technical_attempts leaves the partition "retrying" (it resumes by
    // itself), not "blocked" (docs/architecture.md, "Error classes").
    let seen = |samples: &Samples| -> Vec<(Option<i64>, Option<i64>, Option<i64>)> {
        (0..2)
            .map(|p| {
                (
                    samples.state(p, "retrying"),
                    samples.partition("kafka2mysql_partition_lag", p),
                    samples.partition("kafka2mysql_records_applied_total", p),
                )
            })
            .collect()
    };
    let retrying = wait_until(
        "both partitions retrying, lag 50 each, 100 records applied each",
        Duration::from_secs(60),
        || {
            let samples = scrape(address);
            let now = seen(&samples);
            if now == vec![(Some(1), Some(50), Some(100)); 2] {
                Ok(samples)
            } else {
                Err(format!("(retrying, lag, applied) per partition: {now:?}"))
            }
        },
    );
    for p in 0..2 {
        assert_eq!(retrying.state(p, "flowing"), Some(0), "partition {p}");
        assert_eq!(retrying.state(p, "blocked"), Some(0), "partition {p}");
        assert!(
            retrying.partition("kafka2mysql_retries_total", p) > Some(2),
            "partition {p} retried: {retrying:?}"
        );
    }
    assert!(service.is_running(), "{}", service.log_text());

    drop(mysql_back);
    wait_until(
        "both partitions flowing again with 150 records applied and lag 0",
        Duration::from_secs(90),
        || {
            let samples = scrape(address);
            let flowing: Vec<Option<i64>> = (0..2).map(|p| samples.state(p, "flowing")).collect();
            let now = seen(&samples);
            if flowing == [Some(1), Some(1)] && now == vec![(Some(0), Some(0), Some(150)); 2] {
                Ok(())
            } else {
                Err(format!(
                    "flowing {flowing:?}, (retrying, lag, applied) {now:?}"
                ))
            }
        },
    );
    s.wait_rows(300, Duration::from_secs(30));
    sigterm_clean(&mut service);
}
