//! The operator's commands besides `run`: `check`, `status` and
//! `reset-offsets`. Each prints what it found and returns the exit code
//! (0 fine, 1 something is unreachable or refused, 2 the setup is wrong).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::str::FromStr;

use serde::Serialize;

use crate::broker::{self, Broker};
use crate::config::{Config, Delivery};
use crate::error::{classify, Class, Error};
use crate::mysql_sink;
use crate::offsets::exactly_once_stored;
use crate::status::{Paths, PidLock, ServiceStatus};

fn exit_for(error: &Error, config: &Config) -> ExitCode {
    if classify(error, &config.retry.extra_technical_codes) == Class::Fatal {
        ExitCode::from(2)
    } else {
        ExitCode::from(1)
    }
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
            return ExitCode::from(2);
        }
    };
    for p in &config.kafka.partitions {
        if !partitions.contains(p) {
            eprintln!(
                "kafka.partitions: topic {} has no partition {p} (it has {partitions:?})",
                config.kafka.topic
            );
            return ExitCode::from(2);
        }
    }
    let mut conn = match mysql_sink::connect(&config.mysql_opts()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mysql: cannot connect to {}: {e}", config.mysql.url);
            return ExitCode::from(2);
        }
    };
    match mysql_sink::load_schema(&mut conn, config) {
        Ok(schema) => {
            let names: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
            println!(
                "mysql: table {}.{} has columns {names:?}",
                config.database(),
                schema.table
            );
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mysql: {e}");
            ExitCode::from(2)
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

/// One row of `status`.
#[derive(Debug, Serialize)]
struct PartitionRow {
    partition: i32,
    committed: Option<i64>,
    earliest: i64,
    latest: i64,
    lag: Option<i64>,
    /// "flowing", "blocked" or "stopped" (the service does not run).
    state: String,
    blocked_since: Option<u64>,
    last_error: Option<String>,
    dead_letters: u64,
}

#[derive(Debug, Serialize)]
struct StatusReport {
    topic: String,
    group: String,
    running: bool,
    pid: Option<u32>,
    delivery: &'static str,
    partitions: Vec<PartitionRow>,
    dead_letters: u64,
}

/// `status`: offsets from Kafka (and from the offset table in exactly-once
/// mode), the running service's per-partition state from its status file,
/// and the dead-letter counts.
pub fn status(config: &Config, json: bool) -> ExitCode {
    match status_report(config) {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serialisable")
                );
            } else {
                print_status(&report);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kafka2mysql status: {e}");
            exit_for(&e, config)
        }
    }
}

fn status_report(config: &Config) -> Result<StatusReport, Error> {
    let paths = config.source.as_deref().map(Paths::for_config);
    let pid = paths.as_ref().and_then(|p| PidLock::holder(&p.pid_file));
    let live = match (&paths, pid) {
        (Some(p), Some(_)) => ServiceStatus::read(&p.status_file),
        _ => None,
    };
    let mut broker = broker::connect(config)?;
    let partitions = selected(config, broker.partitions()?);
    let mut conn = mysql_sink::connect(&config.mysql_opts())?;
    let Offsets {
        earliest,
        latest,
        stored: committed,
    } = read_offsets(config, broker.as_mut(), Some(&mut conn))?;
    let dead_letters = match mysql_sink::dead_letter_counts(&mut conn, config) {
        Ok(d) => d,
        // The table is created by the first run.
        Err(e) if e.mysql_code() == Some(1146) => BTreeMap::new(),
        Err(e) => return Err(e),
    };
    let rows: Vec<PartitionRow> = partitions
        .iter()
        .map(|&p| {
            let committed = committed.get(&p).copied().flatten();
            let latest = latest.get(&p).copied().unwrap_or(0);
            let live = live.as_ref().and_then(|s| s.partitions.get(&p));
            PartitionRow {
                partition: p,
                committed,
                earliest: earliest.get(&p).copied().unwrap_or(0),
                latest,
                lag: committed.map(|c| (latest - c).max(0)),
                state: live.map_or_else(|| "stopped".to_string(), |s| s.state.clone()),
                blocked_since: live.and_then(|s| s.blocked_since),
                last_error: live.and_then(|s| s.last_error.clone()),
                dead_letters: dead_letters.get(&p).copied().unwrap_or(0),
            }
        })
        .collect();
    Ok(StatusReport {
        topic: config.kafka.topic.clone(),
        group: config.kafka.group.clone(),
        running: pid.is_some(),
        pid,
        delivery: match config.mysql.delivery {
            Delivery::AtLeastOnce => "at_least_once",
            Delivery::ExactlyOnce => "exactly_once",
        },
        dead_letters: rows.iter().map(|r| r.dead_letters).sum(),
        partitions: rows,
    })
}

fn print_status(r: &StatusReport) {
    let running = match r.pid {
        Some(pid) => format!("running (pid {pid})"),
        None => "not running".to_string(),
    };
    println!(
        "topic {}  group {}  {}  delivery {}",
        r.topic, r.group, running, r.delivery
    );
    println!(
        "{:>9} {:>12} {:>12} {:>12} {:>10}  {:<8} {:>12}  blocked since / last error",
        "partition", "committed", "earliest", "latest", "lag", "state", "dead_letters"
    );
    let now = crate::status::unix_seconds(std::time::SystemTime::now());
    for p in &r.partitions {
        let dash = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
        let blocked = match (&p.blocked_since, &p.last_error) {
            (Some(since), Some(e)) => format!("{}s ago: {e}", now.saturating_sub(*since)),
            _ => String::new(),
        };
        println!(
            "{:>9} {:>12} {:>12} {:>12} {:>10}  {:<8} {:>12}  {}",
            p.partition,
            dash(p.committed),
            p.earliest,
            p.latest,
            dash(p.lag),
            p.state,
            p.dead_letters,
            blocked
        );
    }
    println!("dead letters: {}", r.dead_letters);
}

/// A topic's offsets as the operator commands see them.
struct Offsets {
    earliest: BTreeMap<i32, i64>,
    latest: BTreeMap<i32, i64>,
    /// The next offset each partition resumes from: the Kafka group's, or in
    /// exactly-once mode the further along of the offset table's and the
    /// group's (`offsets::exactly_once_stored`, as at start).
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
    let mut stored = broker.committed_offsets()?;
    if let (Delivery::ExactlyOnce, Some(conn)) = (config.mysql.delivery, conn) {
        mysql_sink::create_offset_table(conn, &config.mysql.offset_table)?;
        for (p, o) in mysql_sink::stored_offsets(conn, config)? {
            let group = stored.get(&p).copied().flatten();
            stored.insert(p, exactly_once_stored(Some(o), group).0);
        }
    }
    Ok(Offsets {
        earliest,
        latest,
        stored,
    })
}

fn selected(config: &Config, all: Vec<i32>) -> Vec<i32> {
    if config.kafka.partitions.is_empty() {
        all
    } else {
        all.into_iter()
            .filter(|p| config.kafka.partitions.contains(p))
            .collect()
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

/// `reset-offsets`: refuses while the service runs; sets the group's offsets
/// (and the offset table's, in exactly-once mode) and prints old and new.
pub fn reset_offsets(config: &Config, to: ResetTarget, only: Option<i32>) -> ExitCode {
    if let Some(paths) = config.source.as_deref().map(Paths::for_config) {
        if let Some(pid) = PidLock::holder(&paths.pid_file) {
            eprintln!("kafka2mysql reset-offsets: the service is running (pid {pid}); stop it first (scripts/run.sh stop)");
            return ExitCode::from(1);
        }
    }
    match reset(config, to, only) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kafka2mysql reset-offsets: {e}");
            exit_for(&e, config)
        }
    }
}

fn reset(config: &Config, to: ResetTarget, only: Option<i32>) -> Result<(), Error> {
    let mut broker = broker::connect(config)?;
    let all = selected(config, broker.partitions()?);
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
        Delivery::ExactlyOnce => Some(mysql_sink::connect(&config.mysql_opts())?),
        Delivery::AtLeastOnce => None,
    };
    let Offsets {
        earliest,
        latest,
        stored: old,
    } = read_offsets(config, broker.as_mut(), conn.as_mut())?;
    let mut new = Vec::new();
    for &p in &partitions {
        let (e, l) = (
            earliest.get(&p).copied().unwrap_or(0),
            latest.get(&p).copied().unwrap_or(0),
        );
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
        for &(p, o) in &new {
            mysql_sink::store_offset(c, config, p, o)?;
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
