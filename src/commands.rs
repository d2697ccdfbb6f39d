//! The operator's commands besides `run`: `check`, `status` and
//! `reset-offsets`. Each prints what it found and returns the exit code
//! (0 fine, 1 something is unreachable or refused, 2 the setup is wrong).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::broker::{self, Broker, GroupMember, GroupView};
use crate::config::{Assignment, Config, Delivery};
use crate::error::{is_no_such_table, Error, Exit, Policy};
use crate::mysql::connect;
use crate::mysql::tables;
use crate::offsets::{select_partitions, stored_position};
use crate::run_files::{lock_run_files, LockError, Paths, PidLock};
use crate::status::ServiceStatus;

fn exit_for(error: &Error, config: &Config) -> ExitCode {
    Policy::from_config(config).exit(error).exit_code()
}

/// `check`: the config is valid (already, to get here), the broker answers
/// every call `run` makes (metadata, list offsets, the group's offsets, a
/// fetch), the topic and configured partitions exist, the database answers,
/// the table and its key columns exist. Any failure is a setup problem:
/// exit 2.
pub fn check(config: &Config) -> ExitCode {
    println!("config: ok");
    let partitions = match check_kafka(config) {
        Ok(partitions) => partitions,
        Err(e) => {
            eprintln!(
                "kafka: {e} (brokers {:?}, kafka.topic {:?})",
                config.kafka.brokers, config.kafka.topic
            );
            return Exit::Setup.exit_code();
        }
    };
    if let Err(e) = select_partitions(config, &partitions) {
        eprintln!("{e}");
        return Exit::Setup.exit_code();
    }
    let mut conn = match connect(&config.mysql_opts()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mysql: cannot connect to {}: {e}", config.mysql.url);
            return Exit::Setup.exit_code();
        }
    };
    match tables::load_schema(&mut conn, config) {
        Ok(schema) => {
            let names: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
            println!(
                "mysql: table {}.{} has columns {names:?}",
                config.database(),
                schema.table
            );
            println!("ok");
            Exit::Ok.exit_code()
        }
        Err(e) => {
            eprintln!("mysql: {e}");
            Exit::Setup.exit_code()
        }
    }
}

/// The Kafka half of `check`: each call `run` makes, once. Returns the
/// topic's partitions.
fn check_kafka(config: &Config) -> Result<Vec<i32>, Error> {
    let mut broker = broker::connect(config)?;
    let partitions = broker.partitions()?;
    println!(
        "kafka: topic {} has partitions {partitions:?}",
        config.kafka.topic
    );
    let bounds = broker.log_bounds()?;
    println!(
        "kafka: log bounds (earliest..latest) {:?}",
        bounds_text(&bounds)
    );
    let committed = broker.committed_offsets()?;
    let known = committed.values().filter(|o| o.is_some()).count();
    println!(
        "kafka: group {} has committed offsets for {known} of {} partitions",
        config.kafka.group,
        partitions.len()
    );
    let probe =
        partitions
            .iter()
            .find_map(|p| match (bounds.earliest.get(p), bounds.latest.get(p)) {
                (Some(&e), Some(&l)) if e < l => Some((*p, e)),
                _ => None,
            });
    match probe {
        Some((p, offset)) => match broker.probe_fetch(p, offset)? {
            Some(read) => println!("kafka: fetched partition {p} at offset {read}"),
            None => {
                println!("kafka: fetched partition {p} from offset {offset}: nothing to read there")
            }
        },
        None => println!("kafka: every partition is empty; fetching was not tried"),
    }
    Ok(partitions)
}

fn bounds_text(bounds: &broker::LogBounds) -> BTreeMap<i32, String> {
    bounds
        .earliest
        .iter()
        .map(|(p, e)| {
            (
                *p,
                format!(
                    "{e}..{}",
                    bounds
                        .latest
                        .get(p)
                        .map_or("?".to_string(), |l| l.to_string())
                ),
            )
        })
        .collect()
}

/// How long `status` waits for the broker and the database: what they have
/// not answered by then is reported as unreachable.
const STATUS_DEADLINE: Duration = Duration::from_secs(2);

/// One row of `status`.
#[derive(Debug, Serialize)]
struct PartitionRow {
    partition: i32,
    committed: Option<i64>,
    earliest: Option<i64>,
    latest: Option<i64>,
    lag: Option<i64>,
    /// "flowing", "retrying", "blocked" (see `status::PartitionStatus`), or
    /// "stopped" (the service does not run).
    state: String,
    /// Since when it is retrying or blocked (unix seconds).
    since: Option<u64>,
    error_class: Option<String>,
    last_error: Option<String>,
    dead_letters: Option<u64>,
    /// Group assignment: the member that owns the partition, as the broker
    /// describes the group ("-" for none).
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

/// One member of the group, as the broker describes it (group assignment).
#[derive(Debug, Serialize)]
struct MemberRow {
    member_id: String,
    group_instance_id: Option<String>,
    host: String,
    partitions: Vec<i32>,
}

#[derive(Debug, Serialize)]
struct StatusReport {
    topic: String,
    group: String,
    running: bool,
    pid: Option<u32>,
    delivery: &'static str,
    /// Seconds since the running service last wrote its status file.
    status_age: Option<u64>,
    /// "ok", or why the broker's part is missing (the offsets then come
    /// from the service's status file, where it runs).
    kafka: String,
    /// "ok", or why the dead-letter counts are missing.
    mysql: String,
    partitions: Vec<PartitionRow>,
    dead_letters: Option<u64>,
    /// Group assignment: the partitions this member owns now (from its
    /// status file), the group's state and its members.
    #[serde(skip_serializing_if = "Option::is_none")]
    owned: Option<Vec<i32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    members: Option<Vec<MemberRow>>,
}

/// The status file is rewritten every second; older than this, what it
/// says is stale.
const STATUS_STALE_AFTER: u64 = 10;

/// `status`: the running service's per-partition state from its status
/// file, offsets from Kafka (and from the offset table in exactly-once
/// mode) and the dead-letter counts from the database, each as far as it
/// answers within `STATUS_DEADLINE`. Exit codes: 0 running and every
/// partition flowing; 1 running, and a partition retrying or blocked, or
/// the broker or the database unreachable, or the status file stale; 3 not
/// running. `local`: the broker and the database are not asked.
pub fn status(config: &Config, json: bool, local: bool) -> ExitCode {
    let report = status_report(config, local);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serialisable")
        );
    } else {
        print_status(&report);
    }
    let healthy = (local || report.kafka == "ok" && report.mysql == "ok")
        && report.status_age.is_some_and(|a| a <= STATUS_STALE_AFTER)
        && report
            .partitions
            .iter()
            .all(|p| p.state == "flowing" || p.state == ELSEWHERE);
    match (report.running, healthy) {
        (false, _) => Exit::NotRunning,
        (true, true) => Exit::Ok,
        (true, false) => Exit::Failed,
    }
    .exit_code()
}

/// The state of a partition that another member of the group owns.
const ELSEWHERE: &str = "elsewhere";

/// What the broker says, for `status`.
struct KafkaView {
    partitions: Vec<i32>,
    offsets: Offsets,
    /// Group assignment: the group as the broker describes it.
    group: Option<GroupView>,
}

/// Runs `work` on a thread of its own and waits for it until `deadline`:
/// a broker or a database that does not answer must not hold `status`.
/// The thread is left behind when it is late; the process ends soon after.
fn within<T: Send + 'static>(
    deadline: Instant,
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, String> {
    let (sender, receiver) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = sender.send(work());
    });
    match receiver.recv_deadline(deadline) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", STATUS_DEADLINE.as_secs())),
    }
}

fn status_report(config: &Config, local: bool) -> StatusReport {
    let deadline = Instant::now() + STATUS_DEADLINE;
    let config = Arc::new(config.clone());
    let kafka = if local {
        Err("not asked (--local)".to_string())
    } else {
        let config = Arc::clone(&config);
        within(deadline, move || {
            let mut broker = broker::connect(&config)?;
            let partitions = select_partitions(&config, &broker.partitions()?)?;
            let mut conn = match config.mysql.delivery {
                Delivery::ExactlyOnce => Some(connect(&config.mysql_opts())?),
                Delivery::AtLeastOnce => None,
            };
            let offsets = read_offsets(&config, broker.as_mut(), conn.as_mut())?;
            let group = match config.kafka.assignment {
                Assignment::Group => broker.group_view()?,
                Assignment::Static => None,
            };
            Ok(KafkaView {
                partitions,
                offsets,
                group,
            })
        })
    };
    let dead_letters = if local {
        Err("not asked (--local)".to_string())
    } else {
        let config = Arc::clone(&config);
        within(deadline, move || {
            let mut conn = connect(&config.mysql_opts())?;
            match tables::dead_letter_counts(&mut conn, &config) {
                Ok(d) => Ok(d),
                // The table is created by the first run.
                Err(e) if is_no_such_table(&e) => Ok(BTreeMap::new()),
                Err(e) => Err(e),
            }
        })
    };
    // Read after the remote parts, so that it is the newest there is.
    let paths = config.source.as_deref().map(Paths::for_config);
    let pid = paths.as_ref().and_then(|p| PidLock::holder(&p.pid_file));
    let live = match (&paths, pid) {
        (Some(p), Some(_)) => ServiceStatus::read(&p.status_file),
        _ => None,
    };
    let now = crate::status::unix_seconds(std::time::SystemTime::now());
    let partitions: Vec<i32> = match (&kafka, &live) {
        (Ok(k), _) => k.partitions.clone(),
        (Err(_), Some(l)) => l.partitions.keys().copied().collect(),
        (Err(_), None) => Vec::new(),
    };
    let group = config.kafka.assignment == Assignment::Group;
    let view = kafka.as_ref().ok().and_then(|k| k.group.as_ref());
    let owner = |p: i32| {
        let member = view?.members.iter().find(|m| m.partitions.contains(&p));
        Some(member.map_or_else(|| "-".to_string(), member_name))
    };
    let rows: Vec<PartitionRow> = partitions
        .iter()
        .map(|&p| {
            let live = live.as_ref().and_then(|s| s.partitions.get(&p));
            let stopped = if group && pid.is_some() {
                ELSEWHERE
            } else {
                "stopped"
            };
            let (committed, earliest, latest) = match &kafka {
                Ok(k) => (
                    k.offsets.stored.get(&p).copied().flatten(),
                    k.offsets.earliest.get(&p).copied(),
                    k.offsets.latest.get(&p).copied(),
                ),
                // The service's own view, as of its last status file.
                Err(_) => (
                    live.and_then(|l| l.committed_offset),
                    None,
                    live.and_then(|l| l.high_watermark),
                ),
            };
            PartitionRow {
                partition: p,
                committed,
                earliest,
                latest,
                lag: committed.zip(latest).map(|(c, l)| (l - c).max(0)),
                state: live.map_or_else(|| stopped.to_string(), |s| s.state.clone()),
                since: live.and_then(|s| s.blocked_since),
                error_class: live.and_then(|s| s.error_class.clone()),
                last_error: live.and_then(|s| s.last_error.clone()),
                dead_letters: dead_letters
                    .as_ref()
                    .ok()
                    .map(|d| d.get(&p).copied().unwrap_or(0)),
                owner: owner(p),
            }
        })
        .collect();
    StatusReport {
        topic: config.kafka.topic.clone(),
        group: config.kafka.group.clone(),
        running: pid.is_some(),
        pid: pid.filter(|&p| p != 0),
        delivery: match config.mysql.delivery {
            Delivery::AtLeastOnce => "at_least_once",
            Delivery::ExactlyOnce => "exactly_once",
        },
        status_age: live.as_ref().map(|l| now.saturating_sub(l.updated_at)),
        kafka: remote_state(&kafka, local),
        mysql: remote_state(&dead_letters, local),
        dead_letters: dead_letters.as_ref().ok().map(|d| d.values().sum()),
        partitions: rows,
        owned: group.then(|| {
            live.as_ref()
                .map(|l| l.partitions.keys().copied().collect())
                .unwrap_or_default()
        }),
        group_state: view.map(|v| v.state.clone()),
        members: view.map(|v| {
            v.members
                .iter()
                .map(|m| MemberRow {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    host: m.host.clone(),
                    partitions: m.partitions.clone(),
                })
                .collect()
        }),
    }
}

/// How `status` names a member: its static id when it has one, else its
/// member id, with the host it connects from.
fn member_name(member: &GroupMember) -> String {
    let id = member
        .group_instance_id
        .as_deref()
        .unwrap_or(&member.member_id);
    format!("{id}@{}", member.host.trim_start_matches('/'))
}

fn remote_state<T>(answer: &Result<T, String>, local: bool) -> String {
    match answer {
        Ok(_) => "ok".to_string(),
        Err(_) if local => "not asked".to_string(),
        Err(e) => format!("unreachable: {e}"),
    }
}

fn print_status(r: &StatusReport) {
    let running = match (r.running, r.pid) {
        (true, Some(pid)) => format!("running (pid {pid})"),
        (true, None) => "starting".to_string(),
        (false, _) => "not running".to_string(),
    };
    println!(
        "topic {}  group {}  {}  delivery {}",
        r.topic, r.group, running, r.delivery
    );
    match r.status_age {
        Some(age) if age > STATUS_STALE_AFTER => {
            println!("status file: stale, last written {age}s ago (the service may hang)")
        }
        None if r.running => println!("status file: not written yet"),
        _ => {}
    }
    if r.kafka != "ok" {
        println!("kafka: {} (offsets as the service last saw them)", r.kafka);
    }
    if r.mysql != "ok" && r.mysql != r.kafka {
        println!("mysql: {}", r.mysql);
    }
    if let Some(owned) = &r.owned {
        println!("this member owns partitions {owned:?}");
    }
    if let (Some(state), Some(members)) = (&r.group_state, &r.members) {
        println!("group {state}, {} members:", members.len());
        for m in members {
            let id = m.group_instance_id.as_deref().unwrap_or(&m.member_id);
            println!(
                "  {id} {} partitions {:?}",
                m.host.trim_start_matches('/'),
                m.partitions
            );
        }
    }
    println!(
        "{:>9} {:>12} {:>12} {:>12} {:>10}  {:<8} {:>12}  since / last error",
        "partition", "committed", "earliest", "latest", "lag", "state", "dead_letters"
    );
    let now = crate::status::unix_seconds(std::time::SystemTime::now());
    let dash = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
    for p in &r.partitions {
        let trouble = match (&p.since, &p.last_error) {
            (Some(since), Some(e)) => format!(
                "{} ago ({}): {e}",
                crate::retry::human(Duration::from_secs(now.saturating_sub(*since))),
                p.error_class.as_deref().unwrap_or("?")
            ),
            _ => String::new(),
        };
        println!(
            "{:>9} {:>12} {:>12} {:>12} {:>10}  {:<8} {:>12}  {}",
            p.partition,
            dash(p.committed),
            dash(p.earliest),
            dash(p.latest),
            dash(p.lag),
            p.state,
            p.dead_letters.map_or("-".to_string(), |d| d.to_string()),
            match &p.owner {
                Some(owner) if trouble.is_empty() => format!("owner {owner}"),
                Some(owner) => format!("owner {owner}; {trouble}"),
                None => trouble,
            }
        );
    }
    match r.dead_letters {
        Some(d) => println!("dead letters: {d}"),
        None => println!("dead letters: unknown (mysql {})", r.mysql),
    }
}

/// A topic's offsets as the operator commands see them.
struct Offsets {
    earliest: BTreeMap<i32, i64>,
    latest: BTreeMap<i32, i64>,
    /// The next offset each partition resumes from: the Kafka group's, or in
    /// exactly-once mode the further along of the offset table's and the
    /// group's (`offsets::stored_position`, as at start).
    stored: BTreeMap<i32, Option<i64>>,
}

/// Reads the log bounds and the stored offsets; `conn` is needed in
/// exactly-once mode only.
fn read_offsets(
    config: &Config,
    broker: &mut dyn Broker,
    conn: Option<&mut mysql::Conn>,
) -> Result<Offsets, Error> {
    let bounds = broker.log_bounds()?;
    let (earliest, latest) = (bounds.earliest, bounds.latest);
    let committed = broker.committed_offsets()?;
    let stale = broker.stale_commits();
    let topic_id = broker.topic_id().ok().flatten();
    let in_table = match (config.mysql.delivery, conn) {
        (Delivery::ExactlyOnce, Some(conn)) => {
            tables::create_offset_table(conn, &config.mysql.offset_table)?;
            tables::stored_offsets(conn, config)?
        }
        _ => BTreeMap::new(),
    };
    let stored = committed
        .keys()
        .chain(in_table.keys())
        .map(|&p| {
            let group = committed.get(&p).copied().flatten();
            let (table, stale) =
                tables::table_position(in_table.get(&p), topic_id.as_deref(), stale.contains(&p));
            (
                p,
                stored_position(config.mysql.delivery, group, table, stale).0,
            )
        })
        .collect();
    Ok(Offsets {
        earliest,
        latest,
        stored,
    })
}

/// What `stop` waits beyond `worker.shutdown_timeout_ms` before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// `stop`: SIGTERM to the process holding the config's pid lock, then waits
/// for the lock to go, up to `worker.shutdown_timeout_ms` plus
/// `STOP_GRACE`; past that, SIGKILL (its unfinished work is applied again
/// at the next start). Exit codes: 0 stopped or not running, 1 it could not
/// be stopped.
pub fn stop(config: &Config) -> ExitCode {
    let Some(paths) = config.source.as_deref().map(Paths::for_config) else {
        eprintln!("kafka2mysql stop: the config was not read from a file");
        return Exit::Setup.exit_code();
    };
    let Some(pid) = holder_pid(&paths.pid_file) else {
        println!("not running");
        return Exit::Ok.exit_code();
    };
    let timeout = config.worker.shutdown_timeout + STOP_GRACE;
    println!(
        "stopping (pid {pid}, SIGTERM; SIGKILL after {}s)",
        timeout.as_secs()
    );
    let started = Instant::now();
    // SAFETY: kill(2) with a pid and a signal; no memory is shared.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    if wait_released(&paths.pid_file, pid, started + timeout) {
        println!(
            "stopped (pid {pid}) in {}",
            crate::retry::human(started.elapsed())
        );
        return Exit::Ok.exit_code();
    }
    eprintln!(
        "pid {pid} did not stop within {}s; sending SIGKILL (its uncommitted records will be applied again)",
        timeout.as_secs()
    );
    // SAFETY: as above.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    if wait_released(
        &paths.pid_file,
        pid,
        Instant::now() + Duration::from_secs(10),
    ) {
        println!("killed (pid {pid})");
        Exit::Ok.exit_code()
    } else {
        eprintln!("pid {pid} survived SIGKILL for 10s");
        Exit::Failed.exit_code()
    }
}

/// The pid of the process holding the pid lock. A process that has just
/// taken it writes its pid right after: wait a moment for it.
fn holder_pid(pid_file: &std::path::Path) -> Option<u32> {
    for _ in 0..20 {
        match PidLock::holder(pid_file)? {
            0 => std::thread::sleep(Duration::from_millis(50)),
            pid => return Some(pid),
        }
    }
    None
}

/// Waits until `pid` no longer holds the lock (it ended, even when not yet
/// reaped by its parent: the lock goes with its descriptors).
fn wait_released(pid_file: &std::path::Path, pid: u32, deadline: Instant) -> bool {
    loop {
        if PidLock::holder(pid_file) != Some(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where `reset-offsets` moves the partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTarget {
    Earliest,
    Latest,
    Offset(i64),
}

impl FromStr for ResetTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "earliest" => Ok(ResetTarget::Earliest),
            "latest" => Ok(ResetTarget::Latest),
            n => n
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(ResetTarget::Offset)
                .ok_or_else(|| format!("expected earliest, latest or an offset, got {s:?}")),
        }
    }
}

/// `reset-offsets`: holds the service's pid lock while it works, so that it
/// refuses while the service runs and a start waits for it to finish (cron
/// tries again a minute later); sets the group's offsets (and the offset
/// table's, in exactly-once mode) and prints old and new.
pub fn reset_offsets(config: &Config, to: ResetTarget, only: Option<i32>) -> ExitCode {
    let _lock = match lock_run_files(config) {
        Ok(lock) => lock,
        Err(e @ LockError::Held { .. }) => {
            eprintln!("kafka2mysql reset-offsets: the service is {e}; stop it first (scripts/run.sh stop)");
            return Exit::Failed.exit_code();
        }
        Err(e @ LockError::Failed { .. }) => {
            eprintln!("kafka2mysql reset-offsets: {e}");
            return Exit::Failed.exit_code();
        }
    };
    match reset(config, to, only) {
        Ok(()) => Exit::Ok.exit_code(),
        Err(e) => {
            eprintln!("kafka2mysql reset-offsets: {e}");
            exit_for(&e, config)
        }
    }
}

fn reset(config: &Config, to: ResetTarget, only: Option<i32>) -> Result<(), Error> {
    let mut broker = broker::connect(config)?;
    let all = select_partitions(config, &broker.partitions()?)?;
    let partitions: Vec<i32> = match only {
        Some(p) if all.contains(&p) => vec![p],
        Some(p) => {
            return Err(Error::Setup(format!(
                "--partition {p}: not a partition of {} ({all:?})",
                config.kafka.topic
            )))
        }
        None => all,
    };
    // Only exactly-once needs the database: the offset table is reset too.
    let mut conn = match config.mysql.delivery {
        Delivery::ExactlyOnce => Some(connect(&config.mysql_opts())?),
        Delivery::AtLeastOnce => None,
    };
    let Offsets {
        earliest,
        latest,
        stored: old,
    } = read_offsets(config, broker.as_mut(), conn.as_mut())?;
    let mut new = Vec::new();
    for &p in &partitions {
        let (Some(&e), Some(&l)) = (earliest.get(&p), latest.get(&p)) else {
            return Err(Error::Io(std::io::Error::other(format!(
                "partition {p}: its log bounds cannot be read (no leader?); nothing was reset, try again later"
            ))));
        };
        let offset = match to {
            ResetTarget::Earliest => e,
            ResetTarget::Latest => l,
            ResetTarget::Offset(o) if o >= e && o <= l => o,
            ResetTarget::Offset(o) => {
                return Err(Error::Setup(format!(
                    "partition {p}: offset {o} is outside [{e}, {l}]"
                )));
            }
        };
        new.push((p, offset));
    }
    if let Some(c) = conn.as_mut() {
        let topic_id = broker.topic_id().ok().flatten();
        for &(p, o) in &new {
            tables::store_offset(c, config, p, o, topic_id.as_deref())?;
        }
    }
    broker.commit(&new)?;
    println!("{:>9} {:>12} {:>12}", "partition", "old", "new");
    for (p, o) in new {
        let before = old
            .get(&p)
            .copied()
            .flatten()
            .map_or("-".to_string(), |v| v.to_string());
        println!("{p:>9} {before:>12} {o:>12}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_targets_parse() {
        assert_eq!("earliest".parse(), Ok(ResetTarget::Earliest));
        assert_eq!("latest".parse(), Ok(ResetTarget::Latest));
        assert_eq!("42".parse(), Ok(ResetTarget::Offset(42)));
        assert!("-1".parse::<ResetTarget>().is_err());
        assert!("soon".parse::<ResetTarget>().is_err());
    }
}
