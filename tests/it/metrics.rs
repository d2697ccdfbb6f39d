//! The Prometheus metrics endpoint (`[metrics] listen`): scraped while the
//! service runs, its figures compared with what Kafka's tools and SQL say,
//! the exposition checked by `promtool`; an address in use; the example
//! alert rules in conf/. The endpoint during a database outage is tested in
//! tests/outage.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::scrape::*;
use crate::setup::{sigterm_clean, Setup, ORDERS};

const METRICS_ON: &str = "[metrics]\nlisten = \"127.0.0.1:0\"";

#[test]
fn scraped_during_a_run_the_figures_match_what_was_produced_and_written() {
    let s = Setup::new("metrics_run", 3, ORDERS, METRICS_ON);
    s.produce_orders(0..3, 0, 100);
    let bad: Vec<KeyValue> = vec![(Some(b"k".to_vec()), Some(b"not json".to_vec())); 4];
    produce(&s.topic, 1, &bad);
    let mut service = s.start();
    let address = metrics_address(&service);

    s.wait_rows(300, Duration::from_secs(60));
    s.wait_committed_at_log_end(Duration::from_secs(60));
    let log_end = log_end_offsets(&s.topic);
    assert_eq!(log_end.values().collect::<Vec<_>>(), [&100, &104, &100]);
    // The coordinator refreshes the offsets it shows about once a second.
    let samples = wait_until(
        "the committed offsets at the log end in the metrics",
        Duration::from_secs(30),
        || {
            let samples = scrape(address);
            let committed: Vec<Option<i64>> = (0..3)
                .map(|p| samples.partition("kafka2mysql_partition_committed_offset", p))
                .collect();
            let expected: Vec<Option<i64>> = log_end.values().map(|&o| Some(o)).collect();
            if committed == expected {
                Ok(samples)
            } else {
                Err(format!("committed {committed:?}, log end {expected:?}"))
            }
        },
    );

    let group = group_offsets(&s.group, &s.topic);
    for (&p, &end) in &log_end {
        let at = |name: &str| samples.partition(name, p);
        assert_eq!(
            at("kafka2mysql_partition_committed_offset"),
            group[&p],
            "partition {p}"
        );
        assert_eq!(at("kafka2mysql_partition_log_end_offset"), Some(end));
        assert_eq!(at("kafka2mysql_partition_applied_offset"), Some(end));
        assert_eq!(at("kafka2mysql_partition_lag"), Some(0));
        // Every offset is a record: a row or a dead letter.
        assert_eq!(at("kafka2mysql_records_applied_total"), Some(end));
        assert_eq!(samples.state(p, "flowing"), Some(1), "partition {p}");
        assert_eq!(samples.state(p, "retrying"), Some(0), "partition {p}");
        assert_eq!(samples.state(p, "blocked"), Some(0), "partition {p}");
        let writes = at("kafka2mysql_batch_write_duration_seconds_count").unwrap();
        assert!(writes >= 1, "partition {p}: {writes} writes");
        assert_eq!(
            samples.get(
                "kafka2mysql_batch_write_duration_seconds_bucket",
                &[("partition", &p.to_string()), ("le", "+Inf")]
            ),
            Some(writes as f64)
        );
    }
    let dead_letters = query_count(&format!("SELECT COUNT(*) FROM `{}`", s.dead_letters));
    assert_eq!(dead_letters, 4);
    assert_eq!(
        samples.partition("kafka2mysql_dead_letters_total", 1),
        Some(dead_letters)
    );
    assert_eq!(
        samples.total("kafka2mysql_dead_letters_total"),
        dead_letters as f64
    );
    assert_eq!(
        samples.total("kafka2mysql_rows_written_total"),
        s.count("") as f64
    );
    assert!(samples.get("kafka2mysql_uptime_seconds", &[]).unwrap() > 0.0);
    assert!(
        samples
            .get("kafka2mysql_resident_memory_bytes", &[])
            .unwrap()
            > 1e6
    );
    let topic_label = samples.get(
        "kafka2mysql_partition_lag",
        &[("topic", &s.topic), ("partition", "0")],
    );
    assert_eq!(topic_label, Some(0.0), "the topic is a label");

    let other = http_get(address, "/").unwrap();
    assert_eq!(other.status_line, "HTTP/1.1 404 Not Found", "{other:?}");

    // A client that connects and sends nothing must not hold up the stop.
    let _silent = std::net::TcpStream::connect(address).unwrap();
    let stopping = Instant::now();
    sigterm_clean(&mut service);
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "the stop took {:?}",
        stopping.elapsed()
    );
}

#[test]
fn a_metrics_address_in_use_or_not_an_address_stops_the_start_with_exit_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let name = unique_name("metrics_in_use");
    let dir = test_dir(&name);
    for (listen, expected) in [
        (address.as_str(), "Address already in use"),
        ("localhost:9187", "metrics.listen: expected an IP address"),
    ] {
        let overrides = format!("[metrics]\nlisten = \"{listen}\"");
        let config = write_config(
            &dir.join("conf"),
            &test_config(&name, &name, &name, &overrides),
        );
        let run = run_binary(
            &["run", "--config", config.to_str().unwrap()],
            Duration::from_secs(30),
        );
        assert_eq!(run.status.code(), Some(2), "listen = {listen:?}: {run:?}");
        assert!(
            run.stderr.contains("metrics.listen: ") && run.stderr.contains(expected),
            "listen = {listen:?}: {run:?}"
        );
    }
}

#[test]
fn the_example_alert_rules_are_valid_and_fire() {
    promtool(&["check", "rules", "conf/kafka2mysql-alerts.yml"], "");
    promtool(
        &[
            "test",
            "rules",
            "tests/promtool/kafka2mysql-alerts.test.yml",
        ],
        "",
    );
}
