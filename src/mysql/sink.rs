//! The writes: `MysqlSink`, which writes one `WriteSet` (rows, dead letters
//! and, for exactly-once, the partition's next offset) in one transaction,
//! and the `Sink` seam the worker writes through.
//!
//! Exactly-once is fenced: a write moves the partition's row in the offset
//! table only from the position this process last stored
//! (`WriteSet::previous_offset`), in the same transaction as the rows. When
//! another process moved it (two processes on one partition), the write is
//! rolled back and this sink writes nothing more for the partition; the
//! worker blocks on the error until the process is restarted.
//!
//! SQL is built only from names that come from the configuration and the
//! schema, always quoted; every value from a record is a bound parameter.
//! Consecutive rows with the same columns share one multi-row statement, cut
//! at `worker.max_batch_rows` rows and below the server's
//! `max_allowed_packet` (a statement larger than it looks like a dropped
//! connection, so it must never be sent).

use std::sync::Arc;

use mysql::prelude::Queryable;
use mysql::{Conn, Params, TxOpts, Value};

use crate::config::{Config, Delivery, WriteMode};
use crate::error::{Class, Error, Policy, RecordError};
use crate::mysql::pool::{ConnectionPool, Lease, Server};
use crate::mysql::quote;
use crate::mysql::tables::{offset_text, TWO_WRITERS};
use crate::record::{RowOp, TableSchema};

/// A record that is skipped and kept in the dead-letter table.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub class: Class,
    pub code: Option<u16>,
    pub error: String,
    pub attempts: u32,
    /// The record's timestamp (ms since the epoch), kept for a replay
    /// (`replay.rs`) to write metadata columns as the first try would have.
    pub timestamp: Option<i64>,
}

/// One database transaction's worth of work for one partition.
#[derive(Debug)]
pub struct WriteSet<'a> {
    pub partition: i32,
    /// Row operations in offset order. `Sink::apply` may move their values
    /// out (see there).
    pub rows: &'a mut [(i64, RowOp)],
    pub dead_letters: &'a [DeadLetter],
    /// The offset after the last record this write set covers; stored in the
    /// offset table in exactly-once mode.
    pub next_offset: i64,
    /// The partition's stored position before this write (its start, or the
    /// last write's `next_offset`): exactly-once moves the offset table's row
    /// from this value only.
    pub previous_offset: i64,
}

impl WriteSet<'_> {
    /// The same write set, borrowed again (for another attempt).
    pub fn reborrow(&mut self) -> WriteSet<'_> {
        WriteSet {
            partition: self.partition,
            rows: self.rows,
            dead_letters: self.dead_letters,
            next_offset: self.next_offset,
            previous_offset: self.previous_offset,
        }
    }
}

/// Where a worker applies its records. `MysqlSink` in production; the worker's
/// unit tests use an in-memory one.
pub trait Sink: Send {
    /// Applies the whole write set in one transaction, or nothing of it.
    /// It may move the rows' values out, whatever the outcome: the mysql
    /// crate owns the parameters it sends, and a copy of every value was a
    /// third of a drain's allocations. A caller that applies the same rows
    /// again maps their records again first (`Worker::write_with_retry`).
    fn apply(&mut self, write: WriteSet<'_>) -> Result<(), Error>;

    /// Waits for what the next `apply` needs (a connection of the pool) and
    /// keeps it until `release`: the worker calls it before it joins the
    /// batches queued behind the one it took, so that a write carries what
    /// arrived while the partition waited its turn. A failure is left for
    /// `apply` to meet.
    fn reserve(&mut self) {}

    /// Gives back what `reserve` kept, when no `apply` did.
    fn release(&mut self) {}

    /// Whether the table already holds `row` as the record has it: a row
    /// whose columns equal every value the record carries, as the table
    /// compares them (`<=>`, with the columns' collations). The worker asks
    /// after a duplicate key, to tell a record written before (replayed after
    /// a crash, or sent twice) from another record with the same key. A sink
    /// that cannot tell says no: the record is then a bad record.
    fn holds(&mut self, _row: &RowOp) -> Result<bool, Error> {
        Ok(false)
    }

    /// How many records of the last successful `apply` the stale-write
    /// guard (`mysql.version_column`) left alone because the row holds a
    /// newer version; asked once after each `apply`.
    fn stale_records(&mut self) -> u64 {
        0
    }

    /// The topic was deleted and created again: the positions written from
    /// now on are in the topic of this id (`None`: not known). Exactly-once
    /// stores it with them (`mysql::tables::OffsetRow`).
    fn set_topic_id(&mut self, _topic_id: Option<&str>) {}
}

/// The session variable that the guarded upsert counts stale records in
/// (see `MysqlSink::insert_sql`).
const STALE_COUNTER: &str = "@kafka2mysql_stale";
/// Writes a dead letter; a replay of the same offset overwrites it.
fn dead_letter_sql(dead_letter_table: &str) -> String {
    format!(
        "INSERT INTO {} (topic, `partition`, `offset`, record_key, record_value, record_timestamp, \
         error_class, error_code, error_text, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON DUPLICATE KEY UPDATE record_key = VALUES(record_key), record_value = VALUES(record_value), \
         record_timestamp = VALUES(record_timestamp), \
         error_class = VALUES(error_class), error_code = VALUES(error_code), \
         error_text = VALUES(error_text), attempts = VALUES(attempts), created_at = CURRENT_TIMESTAMP(3)",
        quote(dead_letter_table)
    )
}

/// Bytes a statement may use: below `max_allowed_packet`, with room for the
/// statement text and protocol framing.
fn statement_budget(max_allowed_packet: usize) -> usize {
    max_allowed_packet.saturating_sub(64 * 1024).max(16 * 1024)
}

/// A parameter's share of a statement packet (value plus type and length).
fn value_size(v: &Value) -> usize {
    match v {
        Value::Bytes(b) => b.len() + 12,
        _ => 12,
    }
}

/// The production sink. It borrows a connection from the process's pool
/// for each write and gives it back after it (`pool.rs`).
pub struct MysqlSink {
    pool: Arc<ConnectionPool>,
    conn: Option<Lease>,
    schema: TableSchema,
    table: String,
    /// Statements on the service's own tables, built once.
    dead_letter_sql: String,
    dead_letter_delete_sql: String,
    offset_move_sql: String,
    /// `offset_move_sql` that also sets the row's topic id.
    offset_move_topic_sql: String,
    /// Set once the topic was created again (`Sink::set_topic_id`): the id
    /// each move of the offset row stores from then on. Until then the row
    /// keeps the one claimed at start.
    topic_id: Option<Option<String>>,
    offset_select_sql: String,
    offset_table: String,
    topic: String,
    group: String,
    write_mode: WriteMode,
    delivery: Delivery,
    max_batch_rows: usize,
    /// Set after a failed write: exactly-once checks the stored offset first.
    verify_before_write: bool,
    /// Exactly-once: another process moved the partition's stored position
    /// (the message says how); nothing more is written.
    fenced: Option<String>,
    /// Stale records of the last committed write (`Sink::stale_records`).
    stale: u64,
    /// The process's error policy: says which failures broke the connection.
    policy: Arc<Policy>,
}

/// How a fenced write's error begins: the coordinator of a group member
/// starts the partition again from the offset table when it sees it.
pub const FENCE: &str = "exactly-once fence";

impl MysqlSink {
    pub fn new(
        config: &Config,
        schema: TableSchema,
        pool: Arc<ConnectionPool>,
        policy: Arc<Policy>,
    ) -> MysqlSink {
        MysqlSink {
            pool,
            conn: None,
            table: quote(&config.mysql.table),
            dead_letter_sql: dead_letter_sql(&config.mysql.dead_letter_table),
            dead_letter_delete_sql: format!(
                "DELETE FROM {} WHERE topic = ? AND `partition` = ? AND `offset` = ?",
                quote(&config.mysql.dead_letter_table)
            ),
            offset_move_sql: format!(
                "UPDATE {} SET next_offset = ? \
                 WHERE consumer_group = ? AND topic = ? AND `partition` = ? AND next_offset = ?",
                quote(&config.mysql.offset_table)
            ),
            offset_move_topic_sql: format!(
                "UPDATE {} SET next_offset = ?, topic_id = ? \
                 WHERE consumer_group = ? AND topic = ? AND `partition` = ? AND next_offset = ?",
                quote(&config.mysql.offset_table)
            ),
            topic_id: None,
            offset_table: config.mysql.offset_table.clone(),
            offset_select_sql: format!(
                "SELECT next_offset FROM {} WHERE consumer_group = ? AND topic = ? AND `partition` = ?",
                quote(&config.mysql.offset_table)
            ),
            topic: config.kafka.topic.clone(),
            group: config.kafka.group.clone(),
            write_mode: config.mysql.write_mode,
            delivery: config.mysql.delivery,
            max_batch_rows: config.worker.max_batch_rows,
            verify_before_write: false,
            fenced: None,
            stale: 0,
            policy,
            schema,
        }
    }

    /// The connection borrowed for the write in hand.
    fn connection(&mut self) -> Result<&mut Conn, Error> {
        if self.conn.is_none() {
            self.conn = Some(self.pool.take()?);
        }
        Ok(self.conn.as_mut().expect("borrowed above"))
    }

    /// What the server takes; known once a connection was opened.
    fn server(&self) -> Server {
        self.pool.server().unwrap_or(Server {
            max_allowed_packet: 4 * 1024 * 1024,
            bulk: false,
        })
    }

    /// The partition's stored next offset (exactly-once mode).
    fn stored_next_offset(&mut self, partition: i32) -> Result<Option<i64>, Error> {
        self.connection()?;
        let conn = self.conn.as_mut().expect("connected above");
        Ok(conn.exec_first(
            &self.offset_select_sql,
            (&self.group, &self.topic, partition),
        )?)
    }

    /// Exactly-once: the stored position is `found` where this process
    /// expected the write's `previous_offset`. Nothing more is written.
    fn fence_lost(&mut self, write: &WriteSet<'_>, found: Option<i64>) -> Error {
        let message = format!(
            "{FENCE}: the offset table {} holds {} for topic {} partition {}, \
             but this process stored {} there last; {}",
            self.offset_table,
            offset_text(found),
            self.topic,
            write.partition,
            write.previous_offset,
            TWO_WRITERS
        );
        self.fenced = Some(message.clone());
        Error::Setup(message)
    }

    fn apply_inner(&mut self, write: WriteSet<'_>) -> Result<(), Error> {
        self.stale = 0;
        let exactly_once = self.delivery == Delivery::ExactlyOnce;
        if let (true, Some(message)) = (exactly_once, &self.fenced) {
            return Err(Error::Setup(message.clone()));
        }
        if exactly_once && self.verify_before_write {
            // The last attempt failed, possibly after the server committed it
            // (a connection lost during COMMIT). The offset stored with the
            // rows tells: at this write's end it is applied, at its start it
            // is not, anywhere else another process moved it.
            match self.stored_next_offset(write.partition)? {
                Some(o) if o == write.next_offset => {
                    self.verify_before_write = false;
                    return Ok(());
                }
                Some(o) if o == write.previous_offset => {}
                other => return Err(self.fence_lost(&write, other)),
            }
        }
        // Connect first: the statement shapes depend on the server.
        self.connection()?;
        let server = self.server();
        let budget = statement_budget(server.max_allowed_packet);
        let bulk = server.bulk;
        let plan = self.plan(write.rows, budget, bulk)?;
        let counts_stale = self.counts_stale() && plan.iter().any(|p| p.write);
        let conn = self.conn.as_mut().expect("connected above");
        let mut tx = conn.start_transaction(TxOpts::default())?;
        if exactly_once {
            // The fence comes first: it locks the offset row, so a second
            // writer waits here and finds the row moved, before it writes a row.
            let (group, topic) = (&self.group, &self.topic);
            let (partition, next, previous) =
                (write.partition, write.next_offset, write.previous_offset);
            match &self.topic_id {
                None => tx.exec_drop(
                    &self.offset_move_sql,
                    (next, group, topic, partition, previous),
                )?,
                Some(id) => tx.exec_drop(
                    &self.offset_move_topic_sql,
                    (next, id, group, topic, partition, previous),
                )?,
            }
            // A row set to the value it has counts as not changed.
            if tx.affected_rows() == 0 {
                let found: Option<i64> = tx.exec_first(
                    &self.offset_select_sql,
                    (&self.group, &self.topic, write.partition),
                )?;
                if found != Some(write.previous_offset)
                    || write.next_offset != write.previous_offset
                {
                    drop(tx);
                    return Err(self.fence_lost(&write, found));
                }
            }
        }
        let stale = send_statements(&mut tx, &plan, &mut *write.rows, bulk, counts_stale)?;
        for dl in write.dead_letters {
            tx.exec_drop(
                &self.dead_letter_sql,
                params(dead_letter_params(dl, &self.topic, write.partition, budget)),
            )?;
        }
        tx.commit()?;
        self.stale = stale;
        self.verify_before_write = false;
        Ok(())
    }

    /// Replays one dead letter (`replay.rs`): the record's row operation
    /// and the removal of its dead letter, in one transaction, through the
    /// same statements as `apply`; the offset table is not touched. Returns
    /// whether the stale-write guard left the row alone.
    pub fn replay(&mut self, partition: i32, offset: i64, op: RowOp) -> Result<bool, Error> {
        let result = self.replay_inner(partition, offset, op);
        if let Err(e) = &result {
            self.forget_broken_connection(e);
        }
        self.conn = None;
        result
    }

    fn replay_inner(&mut self, partition: i32, offset: i64, op: RowOp) -> Result<bool, Error> {
        self.connection()?;
        let server = self.server();
        let budget = statement_budget(server.max_allowed_packet);
        let bulk = server.bulk;
        let mut rows = [(offset, op)];
        let plan = self.plan(&rows, budget, bulk)?;
        let counts_stale = self.counts_stale() && plan.iter().any(|p| p.write);
        let conn = self.conn.as_mut().expect("connected above");
        let mut tx = conn.start_transaction(TxOpts::default())?;
        let stale = send_statements(&mut tx, &plan, &mut rows, bulk, counts_stale)?;
        tx.exec_drop(
            &self.dead_letter_delete_sql,
            (&self.topic, partition, offset),
        )?;
        tx.commit()?;
        Ok(stale > 0)
    }

    /// Removes a dead letter whose record the table holds already (a replay
    /// that met its own row in insert mode: see `Sink::holds`).
    pub fn forget_dead_letter(&mut self, partition: i32, offset: i64) -> Result<(), Error> {
        let sql = self.dead_letter_delete_sql.clone();
        let topic = self.topic.clone();
        let result = self
            .connection()
            .and_then(|conn| Ok(conn.exec_drop(sql, (topic, partition, offset))?));
        if let Err(e) = &result {
            self.forget_broken_connection(e);
        }
        result
    }

    /// Upserts guarded by `mysql.version_column` count the records they
    /// leave alone.
    fn counts_stale(&self) -> bool {
        self.write_mode == WriteMode::Upsert && self.schema.version_column.is_some()
    }

    /// The statements of a write set with their parameters, as
    /// `apply_inner` sends them without the bulk path.
    #[cfg(test)]
    fn statements(
        &self,
        rows: &[(i64, RowOp)],
        budget: usize,
    ) -> Result<Vec<(String, Vec<Value>)>, Error> {
        Ok(self
            .plan(rows, budget, false)?
            .into_iter()
            .map(|p| {
                let params = rows[p.rows]
                    .iter()
                    .filter_map(|(_, op)| values_of(op))
                    .flatten()
                    .cloned()
                    .collect();
                (p.sql, params)
            })
            .collect())
    }

    /// Cuts the row operations into statements: runs of the same shape, at
    /// most `max_batch_rows` rows, at most 65,535 placeholders and `budget`
    /// bytes each. A single row over the budget is that record's error.
    /// For the bulk path, where a run of rows goes with one statement of one
    /// row, a run is also cut where a column's parameter type changes (see
    /// `ParamKind`).
    fn plan(
        &self,
        rows: &[(i64, RowOp)],
        budget: usize,
        bulk: bool,
    ) -> Result<Vec<Planned>, Error> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < rows.len() {
            let (shape, width) = match &rows[i].1 {
                RowOp::Skip => {
                    i += 1;
                    continue;
                }
                RowOp::Write { columns, .. } => (Shape::Write(columns), columns.len()),
                RowOp::Delete { key_values } => (Shape::Delete, key_values.len()),
            };
            let bulk_write = bulk && matches!(shape, Shape::Write(_));
            let max_rows = if bulk_write {
                self.max_batch_rows.max(1)
            } else {
                self.max_batch_rows.min(65_535 / width.max(1)).max(1)
            };
            let mut kinds: Vec<Option<ParamKind>> = if bulk_write {
                vec![None; width]
            } else {
                Vec::new()
            };
            let start = i;
            let mut bytes = 0;
            let mut n = 0;
            while i < rows.len() && n < max_rows {
                let row_op = &rows[i].1;
                let values = match (row_op, shape) {
                    (RowOp::Skip, _) => {
                        i += 1;
                        continue;
                    }
                    (RowOp::Write { columns: c, values }, Shape::Write(cols)) if c == cols => {
                        values
                    }
                    (RowOp::Delete { key_values }, Shape::Delete) => key_values,
                    _ => break,
                };
                let size: usize = values.iter().map(value_size).sum();
                if size > budget {
                    if n == 0 {
                        return Err(Error::Record(RecordError::TooLarge {
                            size,
                            limit: budget,
                        }));
                    }
                    break;
                }
                if n > 0 && bytes + size > budget {
                    break;
                }
                if bulk_write && !ParamKind::fit(&mut kinds, values) {
                    break;
                }
                bytes += size;
                n += 1;
                i += 1;
            }
            let sql = match shape {
                Shape::Write(cols) => self.insert_sql(cols, if bulk_write { 1 } else { n }),
                Shape::Delete => self.delete_sql(n),
            };
            out.push(Planned {
                write: matches!(shape, Shape::Write(_)),
                sql,
                rows: start..i,
            });
        }
        Ok(out)
    }

    fn insert_sql(&self, columns: &[usize], rows: usize) -> String {
        let names: Vec<String> = columns
            .iter()
            .map(|&c| quote(&self.schema.columns[c].name))
            .collect();
        let one = format!("({})", vec!["?"; columns.len()].join(","));
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            self.table,
            names.join(","),
            vec![one.as_str(); rows].join(",")
        );
        if self.write_mode == WriteMode::Upsert {
            let version = self.schema.version_column;
            // The stale-write guard: each column changes only when the
            // incoming version is at least the stored one (or none is
            // stored), and the version column is assigned last, because
            // MySQL evaluates the assignments left to right and the later
            // ones would otherwise compare with the new version. One
            // statement, so concurrent writers are ordered by the row lock.
            let guard = version.map(|v| {
                let v = quote(&self.schema.columns[v].name);
                format!("VALUES({v})>={v} OR {v} IS NULL")
            });
            //
            // The version column's assignment also counts the records the
            // guard refuses, in a session variable that `apply_inner` reads
            // before the commit: affected rows cannot tell them apart (a
            // refused record and one equal to its row both count 0), and
            // with many rows per statement the count must be per record.
            // Rows are applied in order, so a record older than one before
            // it in the same statement counts too. The `IS NULL` test is
            // never true; it only makes the assignment part of the value.
            let updates: Vec<String> = columns
                .iter()
                .filter(|&&c| !self.schema.key_columns.contains(&c) && Some(c) != version)
                .chain(version.as_ref())
                .map(|&c| {
                    let n = quote(&self.schema.columns[c].name);
                    match &guard {
                        None => format!("{n}=VALUES({n})"),
                        Some(guard) if Some(c) == version => format!(
                            "{n}=IF({guard},VALUES({n}),IF(({STALE_COUNTER}:=COALESCE({STALE_COUNTER},0)+1) IS NULL,NULL,{n}))"
                        ),
                        Some(guard) => format!("{n}=IF({guard},VALUES({n}),{n})"),
                    }
                })
                .collect();
            let updates = if updates.is_empty() {
                // Only key fields: the row exists afterwards, nothing to change.
                let k = quote(&self.schema.columns[self.schema.key_columns[0]].name);
                format!("{k}={k}")
            } else {
                updates.join(",")
            };
            sql.push_str(" ON DUPLICATE KEY UPDATE ");
            sql.push_str(&updates);
        }
        sql
    }

    /// `SELECT 1 ... LIMIT 1` for a row that has all these values (see
    /// `Sink::holds`); `<=>` so that a NULL equals a NULL.
    fn holds_sql(&self, columns: &[usize]) -> String {
        let conditions: Vec<String> = columns
            .iter()
            .map(|&c| format!("{} <=> ?", quote(&self.schema.columns[c].name)))
            .collect();
        format!(
            "SELECT 1 FROM {} WHERE {} LIMIT 1",
            self.table,
            conditions.join(" AND ")
        )
    }

    /// After a failed statement: closes the connection when the error may
    /// have broken it (`Verdict::reconnect`), instead of giving it back.
    fn forget_broken_connection(&mut self, error: &Error) {
        if self.policy.classify(error).reconnect {
            if let Some(lease) = self.conn.take() {
                lease.discard();
            }
        }
    }

    fn delete_sql(&self, rows: usize) -> String {
        let keys: Vec<String> = self
            .schema
            .key_columns
            .iter()
            .map(|&c| quote(&self.schema.columns[c].name))
            .collect();
        // Each key value compared as its column's type (a DECIMAL key is
        // bound as text: see `ColumnKind::comparison_placeholder`).
        let placeholders: Vec<_> = self
            .schema
            .key_columns
            .iter()
            .map(|&c| self.schema.kind(c).comparison_placeholder())
            .collect();
        if keys.len() == 1 {
            format!(
                "DELETE FROM {} WHERE {} IN ({})",
                self.table,
                keys[0],
                vec![placeholders[0].as_ref(); rows].join(",")
            )
        } else {
            let one = format!("({})", placeholders.join(","));
            format!(
                "DELETE FROM {} WHERE ({}) IN ({})",
                self.table,
                keys.join(","),
                vec![one.as_str(); rows].join(",")
            )
        }
    }
}

/// Sends the planned statements of `rows`; returns how many records the
/// stale-write guard left alone when `counts_stale` (see
/// `MysqlSink::insert_sql`), else 0. Each statement's parameters are built
/// when it is sent, from the values moved out of `rows` (see `Sink::apply`).
fn send_statements(
    tx: &mut mysql::Transaction<'_>,
    plan: &[Planned],
    rows: &mut [(i64, RowOp)],
    bulk: bool,
    counts_stale: bool,
) -> Result<u64, Error> {
    if counts_stale {
        tx.query_drop(format!("SET {STALE_COUNTER} = 0"))?;
    }
    for statement in plan {
        let rows = rows[statement.rows.clone()]
            .iter_mut()
            .filter_map(|(_, op)| take_values(op));
        if statement.write && bulk {
            // MariaDB's bulk path: one single-row statement, prepared once,
            // executed for every row in one round trip. The server spends
            // about a fifth less per row than on a multi-row INSERT with
            // the same values (measured).
            tx.exec_batch(&statement.sql, rows.map(params))?
        } else {
            tx.exec_drop(&statement.sql, params(rows.flatten().collect()))?
        }
    }
    if !counts_stale {
        return Ok(0);
    }
    let stale: Option<Option<u64>> = tx.query_first(format!("SELECT {STALE_COUNTER}"))?;
    Ok(stale.flatten().unwrap_or(0))
}

/// MariaDB 10.2 and later take `COM_STMT_BULK_EXECUTE`; the `mysql` crate
/// sends it from `exec_batch` (and one statement per row elsewhere, which
/// is why only MariaDB gets this path). `@@version` reads like
/// `10.11.6-MariaDB-0+deb12u1`.
pub(crate) fn supports_bulk_execute(version: &str) -> bool {
    if !version.contains("MariaDB") {
        return false;
    }
    let mut numbers = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let major = numbers.next().unwrap_or(0);
    let minor = numbers.next().unwrap_or(0);
    (major, minor) >= (10, 2)
}

/// What one planned statement writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape<'r> {
    /// An INSERT of these columns.
    Write(&'r [usize]),
    /// A DELETE by key.
    Delete,
}

/// One statement of a write set: `rows` is the range of row operations it
/// covers (skipped ones among them write nothing).
#[derive(Debug)]
struct Planned {
    /// An INSERT (else a DELETE).
    write: bool,
    sql: String,
    rows: std::ops::Range<usize>,
}

/// A statement's parameters, `values` moved in as they are. The `mysql`
/// crate's `From<Vec<_>>` pushes them one by one into a new vector grown
/// from empty (five allocations and the copies for a row of ten values);
/// moving them in cut the service's CPU in a drain by about a tenth
/// (measured).
fn params(values: Vec<Value>) -> Params {
    if values.is_empty() {
        Params::Empty
    } else {
        Params::Positional(values)
    }
}

/// The values an operation binds, in statement order, moved out of it.
fn take_values(op: &mut RowOp) -> Option<Vec<Value>> {
    match op {
        RowOp::Write { values, .. } => Some(std::mem::take(values)),
        RowOp::Delete { key_values } => Some(std::mem::take(key_values)),
        RowOp::Skip => None,
    }
}

/// The values an operation binds, in statement order.
#[cfg(test)]
fn values_of(op: &RowOp) -> Option<&[Value]> {
    match op {
        RowOp::Write { values, .. } => Some(values),
        RowOp::Delete { key_values } => Some(key_values),
        RowOp::Skip => None,
    }
}

/// A parameter's wire type. A bulk request declares one type per column
/// for all its rows and the `mysql` crate does not check that they agree:
/// an integer sent under a string type, or a negative one under the
/// unsigned flag, would be read as something else. So a bulk run of rows
/// never mixes kinds in a column (NULL goes with any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParamKind {
    Int,
    UInt,
    Bytes,
    Other(u8),
}

impl ParamKind {
    fn of(value: &Value) -> Option<ParamKind> {
        Some(match value {
            Value::NULL => return None,
            Value::Int(_) => ParamKind::Int,
            Value::UInt(_) => ParamKind::UInt,
            Value::Bytes(_) => ParamKind::Bytes,
            Value::Float(_) => ParamKind::Other(0),
            Value::Double(_) => ParamKind::Other(1),
            Value::Date(..) => ParamKind::Other(2),
            Value::Time(..) => ParamKind::Other(3),
        })
    }

    /// Adds a row's kinds to a run's; false (and the run unchanged) when
    /// one of them differs.
    fn fit(kinds: &mut [Option<ParamKind>], values: &[Value]) -> bool {
        let agrees = kinds.iter().zip(values).all(|(k, v)| {
            matches!((k, ParamKind::of(v)), (None, _) | (_, None)) || *k == ParamKind::of(v)
        });
        if agrees {
            for (k, v) in kinds.iter_mut().zip(values) {
                if k.is_none() {
                    *k = ParamKind::of(v);
                }
            }
        }
        agrees
    }
}

fn dead_letter_params(dl: &DeadLetter, topic: &str, partition: i32, budget: usize) -> Vec<Value> {
    // The record itself may be what did not fit in a statement: keep as much
    // of it as fits and say so in the error text.
    let room = budget.saturating_sub(dl.error.len() + 1024) / 2;
    let mut error = dl.error.clone();
    let mut cut = |bytes: &[u8], what: &str| -> Vec<u8> {
        if bytes.len() > room {
            error.push_str(&format!(
                " ({what} truncated to {room} of {} bytes)",
                bytes.len()
            ));
            bytes[..room].to_vec()
        } else {
            bytes.to_vec()
        }
    };
    let key = cut(&dl.key, "key");
    let value = dl.value.as_deref().map(|v| cut(v, "value"));
    vec![
        Value::from(topic),
        Value::from(partition),
        Value::from(dl.offset),
        Value::Bytes(key),
        value.map(Value::Bytes).unwrap_or(Value::NULL),
        Value::from(dl.timestamp),
        Value::from(dl.class.as_str()),
        dl.code
            .map(|c| Value::from(c as i64))
            .unwrap_or(Value::NULL),
        Value::from(error),
        Value::from(dl.attempts),
    ]
}

impl Sink for MysqlSink {
    fn apply(&mut self, write: WriteSet<'_>) -> Result<(), Error> {
        let result = self.apply_inner(write);
        if let Err(e) = &result {
            self.verify_before_write = true;
            self.forget_broken_connection(e);
        }
        // Given back between writes: a partition that waits holds none.
        self.conn = None;
        result
    }

    fn reserve(&mut self) {
        let _ = self.connection();
    }

    fn release(&mut self) {
        self.conn = None;
    }

    fn holds(&mut self, row: &RowOp) -> Result<bool, Error> {
        let RowOp::Write { columns, values } = row else {
            return Ok(false);
        };
        let sql = self.holds_sql(columns);
        let result = self.connection().and_then(|conn| {
            Ok(conn
                .exec_first::<u8, _, _>(sql, params(values.to_vec()))?
                .is_some())
        });
        if let Err(e) = &result {
            self.forget_broken_connection(e);
        }
        self.conn = None;
        result
    }

    fn set_topic_id(&mut self, topic_id: Option<&str>) {
        self.topic_id = Some(topic_id.map(str::to_owned));
    }

    fn stale_records(&mut self) -> u64 {
        std::mem::take(&mut self.stale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Column;

    fn sink(write_mode: WriteMode, keys: &[&str], max_batch_rows: usize) -> MysqlSink {
        let text = format!(
            r#"
[kafka]
brokers = ["127.0.0.1:1"]
topic = "t"
group = "g"
[mysql]
url = "mysql://u@127.0.0.1:1/db"
table = "orders"
key_columns = [{}]
write_mode = "{}"
delete_on_tombstone = {}
[worker]
max_batch_rows = {max_batch_rows}
"#,
            keys.iter()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(","),
            if write_mode == WriteMode::Upsert {
                "upsert"
            } else {
                "insert"
            },
            !keys.is_empty(),
        );
        let config = Config::parse(&text, None).unwrap();
        let columns = ["id", "region", "name"]
            .iter()
            .map(|n| Column {
                name: n.to_string(),
                column_type: "varchar(64)".into(),
            })
            .collect();
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        MysqlSink::new(
            &config,
            TableSchema::new("orders", columns, &keys).unwrap(),
            ConnectionPool::new(config.mysql_opts(), 1),
            Arc::new(Policy::from_config(&config)),
        )
    }

    fn write(cols: &[usize], id: i64) -> RowOp {
        RowOp::Write {
            columns: cols.to_vec(),
            values: cols.iter().map(|_| Value::Int(id)).collect(),
        }
    }

    #[test]
    fn same_shape_rows_share_a_statement_in_offset_order() {
        let s = sink(WriteMode::Upsert, &["id"], 2);
        let rows = vec![
            (0, write(&[0, 2], 1)),
            (1, write(&[0, 2], 2)),
            (2, write(&[0, 2], 3)),
            (
                3,
                RowOp::Delete {
                    key_values: vec![Value::Int(1)],
                },
            ),
            (4, RowOp::Skip),
            (
                5,
                RowOp::Delete {
                    key_values: vec![Value::Int(2)],
                },
            ),
            (6, write(&[0], 4)),
        ];
        let st = s.statements(&rows, 1 << 20).unwrap();
        let sql: Vec<&str> = st.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            sql,
            vec![
                "INSERT INTO `orders` (`id`,`name`) VALUES (?,?),(?,?) ON DUPLICATE KEY UPDATE `name`=VALUES(`name`)",
                "INSERT INTO `orders` (`id`,`name`) VALUES (?,?) ON DUPLICATE KEY UPDATE `name`=VALUES(`name`)",
                "DELETE FROM `orders` WHERE `id` IN (?,?)",
                "INSERT INTO `orders` (`id`) VALUES (?) ON DUPLICATE KEY UPDATE `id`=`id`",
            ]
        );
        assert_eq!(
            st[0].1,
            vec![Value::Int(1), Value::Int(1), Value::Int(2), Value::Int(2)]
        );
        assert_eq!(st[2].1, vec![Value::Int(1), Value::Int(2)]);
    }

    #[test]
    fn insert_mode_and_compound_keys() {
        let s = sink(WriteMode::Insert, &[], 10);
        let st = s.statements(&[(0, write(&[1, 2], 1))], 1 << 20).unwrap();
        assert_eq!(
            st[0].0,
            "INSERT INTO `orders` (`region`,`name`) VALUES (?,?)"
        );
        let s = sink(WriteMode::Upsert, &["id", "region"], 10);
        let rows = vec![
            (
                0,
                RowOp::Delete {
                    key_values: vec![Value::Int(1), Value::Int(2)],
                },
            ),
            (
                1,
                RowOp::Delete {
                    key_values: vec![Value::Int(3), Value::Int(4)],
                },
            ),
        ];
        let st = s.statements(&rows, 1 << 20).unwrap();
        assert_eq!(
            st[0].0,
            "DELETE FROM `orders` WHERE (`id`,`region`) IN ((?,?),(?,?))"
        );
    }

    #[test]
    fn statements_stay_under_the_packet_budget() {
        let s = sink(WriteMode::Upsert, &["id"], 500);
        let big = |id: i64| RowOp::Write {
            columns: vec![0, 2],
            values: vec![Value::Int(id), Value::Bytes(vec![b'x'; 400])],
        };
        let rows: Vec<(i64, RowOp)> = (0..10).map(|i| (i, big(i))).collect();
        let st = s.statements(&rows, 1000).unwrap();
        assert_eq!(
            st.len(),
            5,
            "two rows of ~424 bytes per 1000-byte statement"
        );
        let huge = vec![(
            0,
            RowOp::Write {
                columns: vec![0, 2],
                values: vec![Value::Int(1), Value::Bytes(vec![0; 5000])],
            },
        )];
        let err = s.statements(&huge, 1000).unwrap_err();
        assert!(
            matches!(err, Error::Record(RecordError::TooLarge { .. })),
            "{err}"
        );
    }

    #[test]
    fn the_bulk_path_sends_one_row_statements_and_never_mixes_parameter_types() {
        let s = sink(WriteMode::Upsert, &["id"], 3);
        let row = |id: i64, name: Value| RowOp::Write {
            columns: vec![0, 2],
            values: vec![Value::Int(id), name],
        };
        let text = |t: &str| Value::Bytes(t.as_bytes().to_vec());
        let rows = vec![
            (0, row(1, text("a"))),
            (1, row(2, Value::NULL)),
            (2, RowOp::Skip),
            (3, row(3, text("c"))),
            (4, row(4, text("d"))),
            (5, row(5, Value::Int(5))),
            (6, row(6, Value::NULL)),
            (
                7,
                RowOp::Write {
                    columns: vec![0, 2],
                    values: vec![Value::UInt(u64::MAX), Value::Int(7)],
                },
            ),
            (
                8,
                RowOp::Delete {
                    key_values: vec![Value::Int(1)],
                },
            ),
        ];
        let plan = s.plan(&rows, 1 << 20, true).unwrap();
        let runs: Vec<(std::ops::Range<usize>, &str)> = plan
            .iter()
            .map(|p| (p.rows.clone(), p.sql.as_str()))
            .collect();
        let one_row = "INSERT INTO `orders` (`id`,`name`) VALUES (?,?) ON DUPLICATE KEY UPDATE `name`=VALUES(`name`)";
        assert_eq!(
            runs,
            vec![
                (0..4, one_row), // three rows (max_batch_rows), a NULL fits any type
                (4..5, one_row), // text, then an integer in the same column
                (5..7, one_row),
                (7..8, one_row), // unsigned after signed
                (8..9, "DELETE FROM `orders` WHERE `id` IN (?)"),
            ]
        );
        // Without the bulk path the same rows make multi-row statements.
        let st = s.statements(&rows, 1 << 20).unwrap();
        assert_eq!(st.len(), 4);
        assert_eq!(
            st[0].1,
            vec![
                Value::Int(1),
                text("a"),
                Value::Int(2),
                Value::NULL,
                Value::Int(3),
                text("c")
            ]
        );
    }

    #[test]
    fn bulk_execute_is_for_mariadb_10_2_and_later() {
        assert!(supports_bulk_execute("10.11.19-MariaDB-0+deb12u1"));
        assert!(supports_bulk_execute("11.4.2-MariaDB"));
        assert!(supports_bulk_execute("10.2.0-MariaDB-log"));
        assert!(!supports_bulk_execute("10.1.48-MariaDB-0+deb9u2"));
        assert!(!supports_bulk_execute("8.0.36"));
        assert!(!supports_bulk_execute("8.4.0-percona"));
    }

    #[test]
    fn a_row_already_there_is_looked_up_by_every_value_the_record_carries() {
        let s = sink(WriteMode::Insert, &["id"], 10);
        assert_eq!(
            s.holds_sql(&[0, 2]),
            "SELECT 1 FROM `orders` WHERE `id` <=> ? AND `name` <=> ? LIMIT 1"
        );
    }
    #[test]
    fn dead_letters_are_cut_to_fit() {
        let dl = DeadLetter {
            offset: 3,
            key: b"k".to_vec(),
            value: Some(vec![b'v'; 10_000]),
            class: Class::Business,
            code: None,
            error: "too large".into(),
            attempts: 1,
            timestamp: None,
        };
        let params = dead_letter_params(&dl, "t", 0, 4000);
        match &params[4] {
            Value::Bytes(b) => assert!(b.len() < 4000),
            other => panic!("{other:?}"),
        }
        match &params[8] {
            Value::Bytes(b) => assert!(String::from_utf8_lossy(b).contains("truncated")),
            other => panic!("{other:?}"),
        }
    }
}
