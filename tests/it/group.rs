//! Group assignment (`kafka.assignment = "group"`): several processes with
//! the same config share a topic through Kafka's group protocol. Each member
//! has its own copy of the config (its own pid and status files), as each VM
//! would. The tables are append-only (no key), so a record applied twice
//! shows as a duplicate row.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::exactly_once::events;
use crate::setup::{sigterm_clean, Setup};

const EVENTS: &str =
    "row_id BIGINT AUTO_INCREMENT PRIMARY KEY, id BIGINT NOT NULL, name VARCHAR(64)";

/// Group assignment with short group timings, so that a member that dies
/// is noticed in seconds (6 s is the broker's smallest session timeout) and
/// partitions added to the topic are seen within two seconds.
/// `properties` go to `[kafka.properties]`, `mysql` to `[mysql]`.
fn group_config(properties: &str, mysql: &str) -> String {
    format!(
        "[kafka]\nassignment = \"group\"\n\
         [kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\
         \"topic.metadata.refresh.interval.ms\" = \"2000\"\n{properties}\n\
         [mysql]\nwrite_mode = \"insert\"\nkey_columns = []\ndelete_on_tombstone = false\n{mysql}\n"
    )
}

const EXACTLY_ONCE: &str = "delivery = \"exactly_once\"";

/// One member: the test's config copied to a directory of its own.
struct Member {
    config: PathBuf,
    service: Service,
}

impl Member {
    fn start(s: &Setup, name: &str) -> Member {
        let dir = s.dir.join(name).join("conf");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("kafka2mysql.toml");
        std::fs::copy(&s.config, &config).unwrap();
        let service = Service::start(&["run", "--config", config.to_str().unwrap()]);
        Member { config, service }
    }

    /// The partitions this member reads now, from its status file.
    fn owned(&self) -> BTreeSet<i32> {
        let file = self
            .config
            .parent()
            .unwrap()
            .join("../run/kafka2mysql.status.json");
        let Ok(text) = std::fs::read_to_string(file) else {
            return BTreeSet::new();
        };
        let Ok(status) = serde_json::from_str::<serde_json::Value>(&text) else {
            return BTreeSet::new();
        };
        status["partitions"]
            .as_object()
            .map(|p| p.keys().map(|k| k.parse().unwrap()).collect())
            .unwrap_or_default()
    }
}

/// Waits until the running members own `partitions` between them, each
/// partition exactly once.
fn wait_owned_once(members: &[&Member], partitions: std::ops::Range<i32>, deadline: Duration) {
    let expected: Vec<i32> = partitions.collect();
    wait_until(
        &format!("partitions {expected:?} each owned by one member"),
        deadline,
        || {
            let owned: Vec<BTreeSet<i32>> = members.iter().map(|m| m.owned()).collect();
            let mut all: Vec<i32> = owned.iter().flatten().copied().collect();
            all.sort_unstable();
            if all == expected && owned.iter().all(|o| !o.is_empty()) {
                Ok(())
            } else {
                Err(format!("owned {owned:?}"))
            }
        },
    );
}

/// Produces `events` to every partition of `0..partitions`, 50 records per
/// partition every 100 ms, until stopped; `stop` returns how many records
/// went to each partition.
struct Stream {
    running: Arc<AtomicBool>,
    thread: JoinHandle<Vec<i64>>,
}

impl Stream {
    fn start(topic: &str, partitions: i32) -> Stream {
        let running = Arc::new(AtomicBool::new(true));
        let (topic, flag) = (topic.to_string(), Arc::clone(&running));
        let thread = std::thread::spawn(move || {
            let mut sent = vec![0i64; partitions as usize];
            while flag.load(Ordering::Relaxed) {
                for p in 0..partitions {
                    produce_json(&topic, p, &events(p, sent[p as usize], 50));
                    sent[p as usize] += 50;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            sent
        });
        Stream { running, thread }
    }

    fn stop(self) -> i64 {
        self.running.store(false, Ordering::Relaxed);
        self.thread.join().expect("producer thread").iter().sum()
    }
}

/// Every record once: `total` rows and as many distinct ids.
fn assert_every_record_once(s: &Setup, total: i64) {
    s.wait_rows(total, Duration::from_secs(60));
    assert_eq!(s.count(""), total, "rows");
    assert_eq!(
        query_count(&format!("SELECT COUNT(DISTINCT id) FROM `{}`", s.table)),
        total,
        "every record once"
    );
}

#[test]
fn three_members_share_eight_partitions_and_every_record_lands_once() {
    let s = Setup::new("group_three", 8, EVENTS, &group_config("", ""));
    let stream = Stream::start(&s.topic, 8);
    let mut a = Member::start(&s, "a");
    wait_owned_once(&[&a], 0..8, Duration::from_secs(30));
    // Each join moves partitions off the members that had them: each
    // revocation commits before the next owner starts.
    let mut b = Member::start(&s, "b");
    let mut c = Member::start(&s, "c");
    wait_owned_once(&[&a, &b, &c], 0..8, Duration::from_secs(30));

    // `status` names the members and each partition's owner.
    let status = run_binary(
        &["status", "--json", "--config", a.config.to_str().unwrap()],
        Duration::from_secs(30),
    );
    let report: serde_json::Value = serde_json::from_str(&status.stdout).expect("status json");
    assert_eq!(
        report["members"].as_array().map(Vec::len),
        Some(3),
        "{report}"
    );
    let owners: BTreeSet<String> = report["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["owner"].as_str().unwrap_or("-").to_string())
        .collect();
    assert_eq!(owners.len(), 3, "three owners: {owners:?}");
    assert_eq!(
        report["owned"].as_array().map(Vec::len),
        Some(a.owned().len()),
        "{report}"
    );

    let total = stream.stop();
    assert_every_record_once(&s, total);
    s.wait_committed_at_log_end(Duration::from_secs(30));
    for member in [&mut a, &mut b, &mut c] {
        sigterm_clean(&mut member.service);
    }
}

/// One member SIGKILLed while records stream in: after the session timeout
/// its partitions flow again on the other; a member started later takes
/// its share. Exactly-once: nothing lost, nothing applied twice. Prints
/// the seconds from the kill to the dead member's partitions flowing again.
#[test]
fn a_sigkilled_member_s_partitions_move_exactly_once() {
    let s = Setup::new("group_kill", 8, EVENTS, &group_config("", EXACTLY_ONCE));
    let stream = Stream::start(&s.topic, 8);
    let mut a = Member::start(&s, "a");
    let mut b = Member::start(&s, "b");
    wait_owned_once(&[&a, &b], 0..8, Duration::from_secs(30));
    s.wait_rows_at_least(2_000, Duration::from_secs(30));

    let moved = a.owned();
    a.service.sigkill();
    let killed = Instant::now();
    // A marker record on each of the dead member's partitions: flowing
    // again when all of them are in the table.
    for &p in &moved {
        produce_json(
            &s.topic,
            p,
            &[serde_json::json!({"id": -1 - p as i64, "name": "marker"})],
        );
    }
    wait_until(
        "the markers of the moved partitions",
        Duration::from_secs(40),
        || {
            let seen = s.count("WHERE name = 'marker'");
            if seen == moved.len() as i64 {
                Ok(())
            } else {
                Err(format!("{seen} of {}", moved.len()))
            }
        },
    );
    println!(
        "rebalance after SIGKILL: partitions {moved:?} flowing again on the other member after {:.1} s",
        killed.elapsed().as_secs_f64()
    );
    wait_owned_once(&[&b], 0..8, Duration::from_secs(5));

    let mut c = Member::start(&s, "c");
    wait_owned_once(&[&b, &c], 0..8, Duration::from_secs(30));
    let total = stream.stop() + moved.len() as i64;
    assert_every_record_once(&s, total);
    s.wait_committed_at_log_end(Duration::from_secs(30));
    sigterm_clean(&mut b.service);
    sigterm_clean(&mut c.service);
}

#[test]
fn partitions_added_while_running_are_read_without_a_restart() {
    let s = Setup::new("group_grow", 2, EVENTS, &group_config("", ""));
    for p in 0..2 {
        produce_json(&s.topic, p, &events(p, 0, 100));
    }
    let mut a = Member::start(&s, "a");
    let mut b = Member::start(&s, "b");
    s.wait_rows(200, Duration::from_secs(30));
    add_partitions(&s.topic, 4);
    // A producer that has not seen the topic yet: the shared one would
    // refuse the new partitions until it refreshes its metadata.
    let fresh = ProduceOptions {
        compression: "none",
        batch_records: 37,
    };
    for p in 2..4 {
        let records: Vec<KeyValue> = events(p, 0, 100)
            .iter()
            .map(|v| (None, Some(serde_json::to_vec(v).unwrap())))
            .collect();
        produce_with(&s.topic, p, &records, &fresh);
    }
    wait_owned_once(&[&a, &b], 0..4, Duration::from_secs(30));
    assert_every_record_once(&s, 400);
    s.wait_committed_at_log_end(Duration::from_secs(30));
    sigterm_clean(&mut a.service);
    sigterm_clean(&mut b.service);
}

/// The table locked for longer than `max.poll.interval.ms` (10 s here):
/// every write waits, yet the coordinators keep polling, so no member
/// leaves the group and no partition moves; when the lock goes, every
/// record lands once.
#[test]
fn a_database_stalled_past_max_poll_interval_keeps_every_member_in_the_group() {
    let s = Setup::new(
        "group_stall",
        4,
        EVENTS,
        &group_config("\"max.poll.interval.ms\" = \"10000\"", ""),
    );
    let mut a = Member::start(&s, "a");
    let mut b = Member::start(&s, "b");
    wait_owned_once(&[&a, &b], 0..4, Duration::from_secs(30));
    let owned = (a.owned(), b.owned());
    // What the members log from here on: the joins above revoked partitions.
    let logged = [a.service.log_text().len(), b.service.log_text().len()];

    // Other sessions cannot even read the table now: the lock's own
    // session counts.
    use mysql::prelude::Queryable;
    let mut lock = mysql_conn();
    lock.query_drop(format!("LOCK TABLES `{}` WRITE", s.table))
        .unwrap();
    for p in 0..4 {
        produce_json(&s.topic, p, &events(p, 0, 100));
    }
    std::thread::sleep(Duration::from_secs(15));
    let written: Option<i64> = lock
        .query_first(format!("SELECT COUNT(*) FROM `{}`", s.table))
        .unwrap();
    assert_eq!(
        written,
        Some(0),
        "nothing written while the table is locked"
    );
    lock.query_drop("UNLOCK TABLES").unwrap();
    assert_every_record_once(&s, 400);
    assert_eq!((a.owned(), b.owned()), owned, "no partition moved");
    for (member, from) in [&a, &b].into_iter().zip(logged) {
        let log = member.service.log_text()[from..].to_string();
        assert!(
            !log.contains("revoked by the group"),
            "a member lost partitions:\n{log}"
        );
        // librdkafka: "Application maximum poll interval (10000ms) exceeded".
        assert!(!log.contains("poll interval"), "{log}");
    }
    sigterm_clean(&mut a.service);
    sigterm_clean(&mut b.service);
}

/// SIGTERM on one member: it commits what it applied, leaves the group, and
/// the other member goes on from there; at-least-once, yet no record is
/// applied twice.
#[test]
fn a_sigtermed_member_hands_its_partitions_over_without_replay() {
    let s = Setup::new("group_term", 8, EVENTS, &group_config("", ""));
    let stream = Stream::start(&s.topic, 8);
    let mut a = Member::start(&s, "a");
    let mut b = Member::start(&s, "b");
    wait_owned_once(&[&a, &b], 0..8, Duration::from_secs(30));
    s.wait_rows_at_least(2_000, Duration::from_secs(30));
    let stopped = Instant::now();
    sigterm_clean(&mut a.service);
    wait_owned_once(&[&b], 0..8, Duration::from_secs(20));
    assert!(
        stopped.elapsed() < Duration::from_secs(6),
        "the partitions moved before the session timeout: the member left the group"
    );
    assert!(a.service.log_text().contains("left the group"));
    let total = stream.stop();
    assert_every_record_once(&s, total);
    s.wait_committed_at_log_end(Duration::from_secs(30));
    sigterm_clean(&mut b.service);
}
