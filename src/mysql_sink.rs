//! Everything kafka2mysql says to MySQL: the target table's schema, the
//! dead-letter and offset tables, and `MysqlSink`, which writes one
//! `WriteSet` (rows, dead letters and, for exactly-once, the partition's next
//! offset) in one transaction.
//!
//! SQL is built only from names that come from the configuration and the
//! schema, always quoted; every value from a record is a bound parameter.
//! Consecutive rows with the same columns share one multi-row statement, cut
//! at `worker.max_batch_rows` rows and below the server's
//! `max_allowed_packet` (a statement larger than it looks like a dropped
//! connection, so it must never be sent).

use std::collections::BTreeMap;

use mysql::prelude::Queryable;
use mysql::{Conn, Opts, TxOpts, Value};

use crate::config::{Config, Delivery, WriteMode};
use crate::error::{Class, Error, RecordError};
use crate::record::{Column, RowOp, TableSchema};

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
}

/// One database transaction's worth of work for one partition.
#[derive(Debug, Clone, Copy)]
pub struct WriteSet<'a> {
    pub partition: i32,
    /// Row operations in offset order.
    pub rows: &'a [(i64, RowOp)],
    pub dead_letters: &'a [DeadLetter],
    /// The offset after the last record this write set covers; stored in the
    /// offset table in exactly-once mode.
    pub next_offset: i64,
}

/// Where a worker applies its records. `MysqlSink` in production; the worker's
/// unit tests use an in-memory one.
pub trait Sink: Send {
    /// Applies the whole write set in one transaction, or nothing of it.
    fn apply(&mut self, write: WriteSet<'_>) -> Result<(), Error>;
}

/// `` `name` `` with backticks doubled, for names from config and schema.
pub fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Opens a connection and prepares its session: strict SQL mode, so that a
/// value that does not fit its column is an error and never silently cut.
pub fn connect(opts: &Opts) -> Result<Conn, Error> {
    let mut conn = Conn::new(opts.clone())?;
    conn.query_drop(
        "SET SESSION sql_mode = IF(@@sql_mode = '', 'STRICT_ALL_TABLES', \
         CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'))",
    )?;
    Ok(conn)
}

/// The target table's columns, from `information_schema`; fails (fatal) when
/// the table or a key column is missing.
pub fn load_schema(conn: &mut Conn, config: &Config) -> Result<TableSchema, Error> {
    let table = &config.mysql.table;
    let rows: Vec<(String, String)> = conn.exec(
        "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        (table,),
    )?;
    if rows.is_empty() {
        return Err(Error::Setup(format!(
            "table {}.{} does not exist or is not visible to this user (mysql.table)",
            config.database(),
            table
        )));
    }
    let columns = rows
        .into_iter()
        .map(|(name, data_type)| Column { name, data_type })
        .collect();
    TableSchema::new(table, columns, &config.mysql.key_columns).map_err(Error::Setup)
}

/// Creates the dead-letter table (and, for exactly-once, the offset table)
/// when missing.
pub fn create_service_tables(conn: &mut Conn, config: &Config) -> Result<(), Error> {
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {} (
            id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
            topic VARCHAR(249) CHARACTER SET ascii NOT NULL,
            `partition` INT NOT NULL,
            `offset` BIGINT NOT NULL,
            record_key LONGBLOB NULL,
            record_value LONGBLOB NULL,
            error_class VARCHAR(16) NOT NULL,
            error_code INT NULL,
            error_text TEXT NOT NULL,
            attempts INT NOT NULL,
            created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
            UNIQUE KEY topic_partition_offset (topic, `partition`, `offset`)
        )",
        quote(&config.mysql.dead_letter_table)
    ))?;
    if config.mysql.delivery == Delivery::ExactlyOnce {
        create_offset_table(conn, &config.mysql.offset_table)?;
    }
    Ok(())
}

pub fn create_offset_table(conn: &mut Conn, offset_table: &str) -> Result<(), Error> {
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {} (
            consumer_group VARCHAR(249) CHARACTER SET ascii NOT NULL,
            topic VARCHAR(249) CHARACTER SET ascii NOT NULL,
            `partition` INT NOT NULL,
            next_offset BIGINT NOT NULL,
            updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
            PRIMARY KEY (consumer_group, topic, `partition`)
        )",
        quote(offset_table)
    ))?;
    Ok(())
}

/// The next offsets stored in the offset table for this group and topic.
pub fn stored_offsets(conn: &mut Conn, config: &Config) -> Result<BTreeMap<i32, i64>, Error> {
    let rows: Vec<(i32, i64)> = conn.exec(
        format!(
            "SELECT `partition`, next_offset FROM {} WHERE consumer_group = ? AND topic = ?",
            quote(&config.mysql.offset_table)
        ),
        (&config.kafka.group, &config.kafka.topic),
    )?;
    Ok(rows.into_iter().collect())
}

/// Sets the stored next offset of one partition (reset-offsets, and the
/// coordinator when OffsetOutOfRange moves a partition).
pub fn store_offset(conn: &mut impl Queryable, config: &Config, partition: i32, next_offset: i64) -> Result<(), Error> {
    conn.exec_drop(
        format!(
            "INSERT INTO {} (consumer_group, topic, `partition`, next_offset) VALUES (?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE next_offset = VALUES(next_offset)",
            quote(&config.mysql.offset_table)
        ),
        (&config.kafka.group, &config.kafka.topic, partition, next_offset),
    )?;
    Ok(())
}

/// Dead letters per partition for this topic (for `status`).
pub fn dead_letter_counts(conn: &mut Conn, config: &Config) -> Result<BTreeMap<i32, u64>, Error> {
    let rows: Vec<(i32, u64)> = conn.exec(
        format!(
            "SELECT `partition`, COUNT(*) FROM {} WHERE topic = ? GROUP BY `partition`",
            quote(&config.mysql.dead_letter_table)
        ),
        (&config.kafka.topic,),
    )?;
    Ok(rows.into_iter().collect())
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

/// The production sink: one connection, reconnected after a failure.
pub struct MysqlSink {
    opts: Opts,
    conn: Option<Conn>,
    schema: TableSchema,
    table: String,
    dead_letter_table: String,
    offset_table: String,
    topic: String,
    group: String,
    write_mode: WriteMode,
    delivery: Delivery,
    max_batch_rows: usize,
    max_allowed_packet: usize,
    /// Set after a failed write: exactly-once checks the stored offset first.
    verify_before_write: bool,
}

impl MysqlSink {
    pub fn new(config: &Config, schema: TableSchema) -> MysqlSink {
        MysqlSink {
            opts: config.mysql_opts(),
            conn: None,
            table: quote(&config.mysql.table),
            dead_letter_table: quote(&config.mysql.dead_letter_table),
            offset_table: quote(&config.mysql.offset_table),
            topic: config.kafka.topic.clone(),
            group: config.kafka.group.clone(),
            write_mode: config.mysql.write_mode,
            delivery: config.mysql.delivery,
            max_batch_rows: config.worker.max_batch_rows,
            max_allowed_packet: 4 * 1024 * 1024,
            verify_before_write: false,
            schema,
        }
    }

    fn connection(&mut self) -> Result<&mut Conn, Error> {
        if self.conn.is_none() {
            let mut conn = connect(&self.opts)?;
            let packet: Option<u64> = conn.query_first("SELECT @@max_allowed_packet")?;
            self.max_allowed_packet = packet.unwrap_or(4 * 1024 * 1024) as usize;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// The partition's stored next offset (exactly-once mode).
    fn stored_next_offset(&mut self, partition: i32) -> Result<Option<i64>, Error> {
        let sql = format!(
            "SELECT next_offset FROM {} WHERE consumer_group = ? AND topic = ? AND `partition` = ?",
            self.offset_table
        );
        let (group, topic) = (self.group.clone(), self.topic.clone());
        Ok(self.connection()?.exec_first(sql, (group, topic, partition))?)
    }

    fn apply_inner(&mut self, write: WriteSet<'_>) -> Result<(), Error> {
        if self.delivery == Delivery::ExactlyOnce && self.verify_before_write {
            // The last attempt failed, possibly after the server committed it
            // (a connection lost during COMMIT). The offset stored with the
            // rows tells: if it already covers this write set, it is applied.
            if self.stored_next_offset(write.partition)?.is_some_and(|o| o >= write.next_offset) {
                self.verify_before_write = false;
                return Ok(());
            }
        }
        let budget = statement_budget(self.max_allowed_packet);
        let statements = self.statements(write.rows, budget)?;
        let dead_letter_sql = self.dead_letter_sql();
        let offset_sql = self.offset_sql();
        let (topic, group, delivery) = (self.topic.clone(), self.group.clone(), self.delivery);
        let conn = self.connection()?;
        let mut tx = conn.start_transaction(TxOpts::default())?;
        for (sql, params) in statements {
            tx.exec_drop(sql, params)?;
        }
        for dl in write.dead_letters {
            tx.exec_drop(&dead_letter_sql, dead_letter_params(dl, &topic, write.partition, budget))?;
        }
        if delivery == Delivery::ExactlyOnce {
            tx.exec_drop(&offset_sql, (&group, &topic, write.partition, write.next_offset))?;
        }
        tx.commit()?;
        self.verify_before_write = false;
        Ok(())
    }

    fn dead_letter_sql(&self) -> String {
        format!(
            "INSERT INTO {} (topic, `partition`, `offset`, record_key, record_value, error_class, \
             error_code, error_text, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE record_key = VALUES(record_key), record_value = VALUES(record_value), \
             error_class = VALUES(error_class), error_code = VALUES(error_code), \
             error_text = VALUES(error_text), attempts = VALUES(attempts), created_at = CURRENT_TIMESTAMP(3)",
            self.dead_letter_table
        )
    }

    fn offset_sql(&self) -> String {
        format!(
            "INSERT INTO {} (consumer_group, topic, `partition`, next_offset) VALUES (?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE next_offset = VALUES(next_offset)",
            self.offset_table
        )
    }

    /// Cuts the row operations into statements: runs of the same shape, at
    /// most `max_batch_rows` rows, at most 65,535 placeholders and `budget`
    /// bytes each. A single row over the budget is that record's error.
    fn statements(&self, rows: &[(i64, RowOp)], budget: usize) -> Result<Vec<(String, Vec<Value>)>, Error> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < rows.len() {
            let (columns, width) = match &rows[i].1 {
                RowOp::Skip => {
                    i += 1;
                    continue;
                }
                RowOp::Write { columns, .. } => (Some(columns), columns.len()),
                RowOp::Delete { key_values } => (None, key_values.len()),
            };
            let max_rows = self.max_batch_rows.min(65_535 / width.max(1)).max(1);
            let mut params: Vec<Value> = Vec::new();
            let mut bytes = 0;
            let mut n = 0;
            while i < rows.len() && n < max_rows {
                let row_op = &rows[i].1;
                let values = match (row_op, columns) {
                    (RowOp::Skip, _) => {
                        i += 1;
                        continue;
                    }
                    (RowOp::Write { columns: c, values }, Some(cols)) if c == cols => values,
                    (RowOp::Delete { key_values }, None) => key_values,
                    _ => break,
                };
                let size: usize = values.iter().map(value_size).sum();
                if size > budget {
                    if n == 0 {
                        return Err(Error::Record(RecordError::TooLarge { size, limit: budget }));
                    }
                    break;
                }
                if n > 0 && bytes + size > budget {
                    break;
                }
                bytes += size;
                params.extend(values.iter().cloned());
                n += 1;
                i += 1;
            }
            let sql = match columns {
                Some(cols) => self.insert_sql(cols, n),
                None => self.delete_sql(n),
            };
            out.push((sql, params));
        }
        Ok(out)
    }

    fn insert_sql(&self, columns: &[usize], rows: usize) -> String {
        let names: Vec<String> = columns.iter().map(|&c| quote(&self.schema.columns[c].name)).collect();
        let one = format!("({})", vec!["?"; columns.len()].join(","));
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            self.table,
            names.join(","),
            vec![one.as_str(); rows].join(",")
        );
        if self.write_mode == WriteMode::Upsert {
            let updates: Vec<String> = columns
                .iter()
                .filter(|c| !self.schema.key_columns.contains(c))
                .map(|&c| {
                    let n = quote(&self.schema.columns[c].name);
                    format!("{n}=VALUES({n})")
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

    fn delete_sql(&self, rows: usize) -> String {
        let keys: Vec<String> = self
            .schema
            .key_columns
            .iter()
            .map(|&c| quote(&self.schema.columns[c].name))
            .collect();
        if keys.len() == 1 {
            format!("DELETE FROM {} WHERE {} IN ({})", self.table, keys[0], vec!["?"; rows].join(","))
        } else {
            let one = format!("({})", vec!["?"; keys.len()].join(","));
            format!(
                "DELETE FROM {} WHERE ({}) IN ({})",
                self.table,
                keys.join(","),
                vec![one.as_str(); rows].join(",")
            )
        }
    }
}

fn dead_letter_params(dl: &DeadLetter, topic: &str, partition: i32, budget: usize) -> Vec<Value> {
    // The record itself may be what did not fit in a statement: keep as much
    // of it as fits and say so in the error text.
    let room = budget.saturating_sub(dl.error.len() + 1024) / 2;
    let mut error = dl.error.clone();
    let mut cut = |bytes: &[u8], what: &str| -> Vec<u8> {
        if bytes.len() > room {
            error.push_str(&format!(" ({what} truncated to {room} of {} bytes)", bytes.len()));
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
        Value::from(dl.class.as_str()),
        dl.code.map(|c| Value::from(c as i64)).unwrap_or(Value::NULL),
        Value::from(error),
        Value::from(dl.attempts),
    ]
}

impl Sink for MysqlSink {
    fn apply(&mut self, write: WriteSet<'_>) -> Result<(), Error> {
        let result = self.apply_inner(write);
        if let Err(e) = &result {
            self.verify_before_write = true;
            // A server error leaves the connection usable (the transaction was
            // rolled back when dropped); anything else may have broken it.
            if e.mysql_code().is_none() || matches!(e.mysql_code(), Some(1927 | 2006 | 2013 | 1053)) {
                self.conn = None;
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            keys.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(","),
            if write_mode == WriteMode::Upsert { "upsert" } else { "insert" },
            !keys.is_empty(),
        );
        let config = Config::parse(&text, None).unwrap();
        let columns = ["id", "region", "name"]
            .iter()
            .map(|n| Column { name: n.to_string(), data_type: "x".into() })
            .collect();
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        MysqlSink::new(&config, TableSchema::new("orders", columns, &keys).unwrap())
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
            (3, RowOp::Delete { key_values: vec![Value::Int(1)] }),
            (4, RowOp::Skip),
            (5, RowOp::Delete { key_values: vec![Value::Int(2)] }),
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
        assert_eq!(st[0].1, vec![Value::Int(1), Value::Int(1), Value::Int(2), Value::Int(2)]);
        assert_eq!(st[2].1, vec![Value::Int(1), Value::Int(2)]);
    }

    #[test]
    fn insert_mode_and_compound_keys() {
        let s = sink(WriteMode::Insert, &[], 10);
        let st = s.statements(&[(0, write(&[1, 2], 1))], 1 << 20).unwrap();
        assert_eq!(st[0].0, "INSERT INTO `orders` (`region`,`name`) VALUES (?,?)");
        let s = sink(WriteMode::Upsert, &["id", "region"], 10);
        let rows = vec![
            (0, RowOp::Delete { key_values: vec![Value::Int(1), Value::Int(2)] }),
            (1, RowOp::Delete { key_values: vec![Value::Int(3), Value::Int(4)] }),
        ];
        let st = s.statements(&rows, 1 << 20).unwrap();
        assert_eq!(st[0].0, "DELETE FROM `orders` WHERE (`id`,`region`) IN ((?,?),(?,?))");
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
        assert_eq!(st.len(), 5, "two rows of ~424 bytes per 1000-byte statement");
        let huge = vec![(0, RowOp::Write { columns: vec![0, 2], values: vec![Value::Int(1), Value::Bytes(vec![0; 5000])] })];
        let err = s.statements(&huge, 1000).unwrap_err();
        assert!(matches!(err, Error::Record(RecordError::TooLarge { .. })), "{err}");
    }

    #[test]
    fn names_are_quoted() {
        assert_eq!(quote("a`b"), "`a``b`");
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
        };
        let params = dead_letter_params(&dl, "t", 0, 4000);
        match &params[4] {
            Value::Bytes(b) => assert!(b.len() < 4000),
            other => panic!("{other:?}"),
        }
        match &params[7] {
            Value::Bytes(b) => assert!(String::from_utf8_lossy(b).contains("truncated")),
            other => panic!("{other:?}"),
        }
    }
}
