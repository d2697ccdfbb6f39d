//! `kafka2mysql replay-dead-letters`: applies the dead letters of the
//! configured topic again, once the producer or the table is fixed
//! (README.md, "Replaying dead letters").
//!
//! Each dead letter is read back into a `Record`, mapped by the mapper of
//! its partition and written by `MysqlSink::replay`, in offset order per
//! partition: its row and the removal of its dead letter in one transaction.
//! One that still fails stays, with its attempts counted and its error
//! replaced. The offset table and the group's offsets are never touched: a
//! replay writes rows the service has already gone past.
//!
//! It takes the service's pid lock (`run_files::lock_run_files`) for its whole
//! run: the running service could write the same rows at the same time, and
//! which one wins would be chance; with the lock, the service cannot start
//! while a replay runs either. A dry run writes nothing and needs no lock.

use std::process::ExitCode;
use std::sync::Arc;

use mysql::prelude::Queryable;
use mysql::{Conn, Value};

use crate::config::Config;
use crate::error::{is_duplicate_key, Class, Error, Exit, Policy};
use crate::metadata;
use crate::mysql::pool::ConnectionPool;
use crate::mysql::sink::{MysqlSink, Sink};
use crate::mysql::{connect, quote, tables};
use crate::record::{escape_for_log, Mapper, Record, RowOp, TableSchema};
use crate::run_files::{lock_run_files, LockError};
use crate::times;

/// What to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Only this partition's dead letters.
    pub partition: Option<i32>,
    /// Only dead letters written at or after this time (`--since`).
    pub since: Option<String>,
    /// Say what would be replayed and whether each maps; write nothing.
    pub dry_run: bool,
}

/// Dead letters read per query: the records are read a page at a time.
const PAGE: usize = 200;

/// What became of the dead letters.
#[derive(Debug, Default)]
struct Tally {
    replayed: u64,
    stale: u64,
    failing: u64,
}

/// Exit codes: 0 every selected dead letter replayed (a dry run: every one
/// maps), 1 some still fail or the database is unreachable, 2 a setup or
/// usage error, 3 the service runs (nothing done).
pub fn replay_dead_letters(config: &Config, options: &ReplayOptions) -> ExitCode {
    let since = match options.since.as_deref().map(|t| since_text(config, t)) {
        None => None,
        Some(Ok(text)) => Some(text),
        Some(Err(e)) => {
            eprintln!("kafka2mysql replay-dead-letters: --since: {e}");
            return Exit::Setup.exit_code();
        }
    };
    let _lock = if options.dry_run {
        None
    } else {
        match lock_run_files(config) {
            Ok(lock) => lock,
            Err(e @ LockError::Held { .. }) => {
                eprintln!(
                    "kafka2mysql replay-dead-letters: the service is {e}; stop it first \
                     (scripts/run.sh stop): a replay and the service must not write the same rows"
                );
                return e.exit().exit_code();
            }
            Err(e) => {
                eprintln!("kafka2mysql replay-dead-letters: {e}");
                return e.exit().exit_code();
            }
        }
    };
    let policy = Arc::new(Policy::from_config(config));
    match replay(config, &policy, options, since.as_deref()) {
        Ok(tally) => {
            let verb = if options.dry_run {
                "would replay"
            } else {
                "replayed"
            };
            println!(
                "{verb} {} (stale, the row holds a newer version: {}), still failing {}",
                tally.replayed, tally.stale, tally.failing
            );
            if tally.failing == 0 {
                Exit::Ok.exit_code()
            } else {
                Exit::Failed.exit_code()
            }
        }
        Err(e) => {
            eprintln!("kafka2mysql replay-dead-letters: {e}");
            policy.exit(&e).exit_code()
        }
    }
}

/// `--since` as the session reads a time: RFC 3339 with a zone converted to
/// `mysql.time_zone`, or `YYYY-MM-DD[ HH:MM:SS]` in it.
fn since_text(config: &Config, text: &str) -> Result<String, String> {
    if let Some(instant) = times::parse_rfc3339(text) {
        return Ok(times::format_datetime(instant, config.mysql.time_zone, 3));
    }
    let plain = |pattern: &str| {
        text.len() == pattern.len()
            && text.bytes().zip(pattern.bytes()).all(|(c, p)| match p {
                b'9' => c.is_ascii_digit(),
                _ => c == p,
            })
    };
    if plain("9999-99-99") || plain("9999-99-99 99:99:99") {
        return Ok(text.to_string());
    }
    Err(format!(
        "expected an RFC 3339 time (2025-01-01T10:00:00Z) or YYYY-MM-DD[ HH:MM:SS] in \
         mysql.time_zone, got {text:?}"
    ))
}

/// One dead letter as read back.
struct Stored {
    id: i64,
    partition: i32,
    offset: i64,
    record: Record,
    attempts: u32,
}

/// What a replay works with: the dead letters are read and updated on
/// `conn`, the rows written through `sink`.
struct Replay<'a> {
    config: &'a Config,
    policy: &'a Policy,
    options: &'a ReplayOptions,
    conn: Conn,
    sink: MysqlSink,
    tally: Tally,
}

fn replay(
    config: &Config,
    policy: &Arc<Policy>,
    options: &ReplayOptions,
    since: Option<&str>,
) -> Result<Tally, Error> {
    let mut conn = connect(&config.mysql_opts())?;
    let schema = tables::load_schema(&mut conn, config)?;
    if !options.dry_run {
        tables::create_dead_letter_table(&mut conn, config)?;
    }
    let pool = ConnectionPool::new(config.mysql_opts(), 1);
    let sink = MysqlSink::new(config, schema.clone(), pool, policy.clone());
    let mut replay = Replay {
        config,
        policy,
        options,
        conn,
        sink,
        tally: Tally::default(),
    };
    let mut mappers: std::collections::BTreeMap<i32, Mapper> = Default::default();
    let mut after = (i32::MIN, i64::MIN);
    loop {
        let page = read_page(&mut replay.conn, config, options.partition, since, after)?;
        for stored in &page {
            after = (stored.partition, stored.offset);
            let mapper = match mappers.get(&stored.partition) {
                Some(mapper) => mapper,
                None => {
                    let mapper = metadata::mapper_for(config, &schema, stored.partition)
                        .map_err(Error::Setup)?;
                    mappers.entry(stored.partition).or_insert(mapper)
                }
            };
            replay.one(mapper, stored)?;
        }
        if page.len() < PAGE {
            return Ok(replay.tally);
        }
    }
}

impl Replay<'_> {
    fn one(&mut self, mapper: &Mapper, stored: &Stored) -> Result<(), Error> {
        let at = format!("partition {} offset {}", stored.partition, stored.offset);
        let op = match mapper.map(&stored.record) {
            Ok(op) => op,
            Err(e) => return self.still_failing(stored, &Error::Record(e), &at),
        };
        if self.options.dry_run {
            println!("{at}: would replay ({})", what(&op, &mapper.schema));
            self.tally.replayed += 1;
            return Ok(());
        }
        let error = match self
            .sink
            .replay(stored.partition, stored.offset, op.clone())
        {
            Ok(stale) => {
                self.tally.replayed += 1;
                if stale {
                    self.tally.stale += 1;
                    println!("{at}: replayed; the row holds a newer version, left alone (mysql.version_column)");
                } else {
                    println!("{at}: replayed ({})", what(&op, &mapper.schema));
                }
                return Ok(());
            }
            Err(e) => e,
        };
        match self.policy.class(&error) {
            Class::Business
                if is_duplicate_key(&error) && matches!(self.sink.holds(&op), Ok(true)) =>
            {
                self.sink
                    .forget_dead_letter(stored.partition, stored.offset)?;
                self.tally.replayed += 1;
                println!("{at}: already in the table as the record has it; dead letter removed");
                Ok(())
            }
            Class::Business => self.still_failing(stored, &error, &at),
            // The database is away or the setup is wrong: stop here; this dead
            // letter and the ones after it stay as they were.
            _ => Err(error),
        }
    }

    /// A dead letter that fails again: it stays, with one attempt more and this
    /// error (a dry run only says so).
    fn still_failing(&mut self, stored: &Stored, error: &Error, at: &str) -> Result<(), Error> {
        self.tally.failing += 1;
        let text = escape_for_log(error.to_string().as_bytes(), 300);
        if self.options.dry_run {
            println!("{at}: would fail: {text}");
            return Ok(());
        }
        self.conn.exec_drop(
        format!(
            "UPDATE {} SET attempts = attempts + 1, error_class = ?, error_code = ?, error_text = ? \
             WHERE id = ?",
            quote(&self.config.mysql.dead_letter_table)
        ),
        (
            self.policy.class(error).as_str(),
            error.mysql_code().map(i64::from),
            error.to_string(),
            stored.id,
        ),
    )?;
        println!(
            "{at}: still failing (attempts {}): {text}",
            stored.attempts + 1
        );
        Ok(())
    }
}

/// What a row operation does, for the operator.
fn what(op: &RowOp, schema: &TableSchema) -> String {
    match op {
        RowOp::Write { columns, .. } => {
            let names: Vec<&str> = columns
                .iter()
                .map(|&c| schema.columns[c].name.as_str())
                .collect();
            format!("write of {}", names.join(", "))
        }
        RowOp::Delete { .. } => "delete by key".to_string(),
        RowOp::Skip => "nothing to write".to_string(),
    }
}

/// The next dead letters after `after` (partition, offset), in offset order
/// per partition.
fn read_page(
    conn: &mut Conn,
    config: &Config,
    partition: Option<i32>,
    since: Option<&str>,
    after: (i32, i64),
) -> Result<Vec<Stored>, Error> {
    let table = &config.mysql.dead_letter_table;
    // A dry run may meet a table from before the record's timestamp was kept.
    let has_timestamp: Option<u8> = conn.exec_first(
        "SELECT 1 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
         AND TABLE_NAME = ? AND COLUMN_NAME = 'record_timestamp'",
        (table,),
    )?;
    let timestamp = if has_timestamp.is_some() {
        "record_timestamp"
    } else {
        "NULL"
    };
    let mut sql = format!(
        "SELECT id, `partition`, `offset`, record_key, record_value, {timestamp}, attempts \
         FROM {} WHERE topic = ? AND (`partition` > ? OR (`partition` = ? AND `offset` > ?))",
        quote(table)
    );
    let mut params: Vec<Value> = vec![
        Value::from(config.kafka.topic.as_str()),
        Value::from(after.0),
        Value::from(after.0),
        Value::from(after.1),
    ];
    if let Some(p) = partition {
        sql.push_str(" AND `partition` = ?");
        params.push(Value::from(p));
    }
    if let Some(since) = since {
        sql.push_str(" AND created_at >= ?");
        params.push(Value::from(since));
    }
    sql.push_str(&format!(" ORDER BY `partition`, `offset` LIMIT {PAGE}"));
    type Row = (
        i64,
        i32,
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<i64>,
        u32,
    );
    let rows: Vec<Row> = conn.exec(sql, params)?;
    Ok(rows
        .into_iter()
        .map(|(id, partition, offset, key, value, timestamp, attempts)| {
            let (key, value) = (
                key.as_deref().unwrap_or_default(),
                value.as_deref().unwrap_or_default(),
            );
            let record = match timestamp {
                Some(timestamp) => Record::with_timestamp(offset, key, value, timestamp),
                None => Record::new(offset, key, value),
            };
            Stored {
                id,
                partition,
                offset,
                record,
                attempts,
            }
        })
        .collect())
}
