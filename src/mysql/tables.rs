//! The target table's schema, and the service's own tables in MySQL: the
//! dead-letter table and, for exactly-once, the offset table. Creates them
//! when missing and answers the queries on them that are not writes of
//! records: dead-letter counts (`status`), stored offsets (start,
//! `reset-offsets`) and the claim of each partition's offset row at start.
//! The workers' writes to these tables are `sink.rs`'s.

use std::collections::BTreeMap;

use mysql::prelude::Queryable;
use mysql::{Conn, TxOpts};

use crate::config::{Config, Delivery};
use crate::error::Error;
use crate::mysql::quote;
use crate::record::{Column, TableSchema};

/// The target table's columns, from `information_schema`; fails (fatal) when
/// the table or a key column is missing.
pub fn load_schema(conn: &mut Conn, config: &Config) -> Result<TableSchema, Error> {
    let table = &config.mysql.table;
    let rows: Vec<(String, String)> = conn.exec(
        "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS \
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
        .map(|(name, column_type)| Column { name, column_type })
        .collect();
    let schema = TableSchema::new(table, columns, &config.mysql.key_columns)
        .and_then(|schema| schema.with_version_column(config.mysql.version_column.as_deref()))
        .map_err(Error::Setup)?;
    // Each worker resolves them again for its partition; a missing column
    // stops the start here, named.
    crate::metadata::Metadata::new(&schema, &config.mysql.metadata_columns, "", 0)
        .map_err(Error::Setup)?;
    Ok(schema)
}

/// Creates the dead-letter table (and, for exactly-once, the offset table)
/// when missing.
pub fn create_service_tables(conn: &mut Conn, config: &Config) -> Result<(), Error> {
    create_dead_letter_table(conn, config)?;
    if config.mysql.delivery == Delivery::ExactlyOnce {
        create_offset_table(conn, &config.mysql.offset_table)?;
    }
    Ok(())
}

/// Creates the dead-letter table when missing, and gives an older one the
/// column of the record's timestamp.
pub fn create_dead_letter_table(conn: &mut Conn, config: &Config) -> Result<(), Error> {
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {} (
            id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
            topic VARCHAR(249) CHARACTER SET ascii NOT NULL,
            `partition` INT NOT NULL,
            `offset` BIGINT NOT NULL,
            record_key LONGBLOB NULL,
            record_value LONGBLOB NULL,
            record_timestamp BIGINT NULL,
            error_class VARCHAR(16) NOT NULL,
            error_code INT NULL,
            error_text TEXT NOT NULL,
            attempts INT NOT NULL,
            created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
            UNIQUE KEY topic_partition_offset (topic, `partition`, `offset`)
        )",
        quote(&config.mysql.dead_letter_table)
    ))?;
    add_column(
        conn,
        &config.mysql.dead_letter_table,
        "record_timestamp",
        "BIGINT NULL AFTER record_value",
    )
}

/// Adds `column` (of `definition`) to a table made before it existed.
fn add_column(conn: &mut Conn, table: &str, column: &str, definition: &str) -> Result<(), Error> {
    let found: Option<u8> = conn.exec_first(
        "SELECT 1 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
         AND TABLE_NAME = ? AND COLUMN_NAME = ?",
        (table, column),
    )?;
    if found.is_some() {
        return Ok(());
    }
    let added = conn.query_drop(format!(
        "ALTER TABLE {} ADD COLUMN {column} {definition}",
        quote(table)
    ));
    match added.map_err(Error::from) {
        // Added meanwhile by another process.
        Err(e) if e.mysql_code() == Some(1060) => Ok(()),
        other => other,
    }
}

/// Creates the offset table when missing, and gives an older one the column
/// of the topic id.
pub fn create_offset_table(conn: &mut Conn, offset_table: &str) -> Result<(), Error> {
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {} (
            consumer_group VARCHAR(249) CHARACTER SET ascii NOT NULL,
            topic VARCHAR(249) CHARACTER SET ascii NOT NULL,
            `partition` INT NOT NULL,
            next_offset BIGINT NOT NULL,
            topic_id VARCHAR(64) CHARACTER SET ascii NULL,
            updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
            PRIMARY KEY (consumer_group, topic, `partition`)
        )",
        quote(offset_table)
    ))?;
    add_column(
        conn,
        offset_table,
        "topic_id",
        "VARCHAR(64) CHARACTER SET ascii NULL AFTER next_offset",
    )
}

/// A partition's row in the offset table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetRow {
    pub next_offset: i64,
    /// The id of the topic `next_offset` is a position in, where it was
    /// known when the row was written (none in rows older than the column):
    /// a topic deleted and created again under the same name has another.
    pub topic_id: Option<String>,
}

impl OffsetRow {
    /// Whether the row's position belongs to another topic of the same
    /// name than the one whose id is `topic_id` (unknown ids never differ).
    pub fn is_of_another_topic(&self, topic_id: Option<&str>) -> bool {
        matches!((self.topic_id.as_deref(), topic_id), (Some(row), Some(now)) if row != now)
    }
}

/// What a partition's offset row gives its start in the topic of id
/// `topic_id`: the row's position, none when the row is of another topic;
/// and whether the group's commit of an earlier topic (`group_stale`)
/// makes that position stale too, as it does for a row that names no
/// topic, written before the column was (`offsets::stored_position`).
pub fn table_position(
    row: Option<&OffsetRow>,
    topic_id: Option<&str>,
    group_stale: bool,
) -> (Option<i64>, bool) {
    let position = row
        .filter(|row| !row.is_of_another_topic(topic_id))
        .map(|row| row.next_offset);
    let stale = group_stale && row.is_none_or(|row| row.topic_id.is_none());
    (position, stale)
}

/// Exactly-once, at start: makes each partition's row in the offset table
/// hold its start offset, moving it only from the value read when the start
/// was chosen (`read`; `None` when there was no row), and the id of the
/// topic it is in (`topic_id`, where known). The workers' fenced writes go on
/// from there. A row that another process inserted or moved in between
/// means two processes on one partition: a setup error. Safe to repeat after
/// a lost connection (a row already at its start is left there).
pub fn claim_offsets(
    conn: &mut Conn,
    config: &Config,
    claims: &BTreeMap<i32, (Option<i64>, i64)>,
    topic_id: Option<&str>,
) -> Result<(), Error> {
    let table = quote(&config.mysql.offset_table);
    let (group, topic) = (&config.kafka.group, &config.kafka.topic);
    for (&partition, &(read, start)) in claims {
        let mut tx = conn.start_transaction(TxOpts::default())?;
        let now: Option<i64> = tx.exec_first(
            format!(
                "SELECT next_offset FROM {table} \
                 WHERE consumer_group = ? AND topic = ? AND `partition` = ? FOR UPDATE"
            ),
            (group, topic, partition),
        )?;
        let claimed = match now {
            Some(now) if now == start || Some(now) == read => {
                tx.exec_drop(
                    format!(
                        "UPDATE {table} SET next_offset = ?, topic_id = ? \
                         WHERE consumer_group = ? AND topic = ? AND `partition` = ? AND next_offset = ?"
                    ),
                    (start, topic_id, group, topic, partition, now),
                )?;
                // The row is locked: it is at `now`, and a row set to what
                // it holds counts as not changed.
                true
            }
            Some(_) => false,
            None => {
                // Two processes inserting the first row: one of them gets it.
                tx.exec_drop(
                    format!(
                        "INSERT IGNORE INTO {table} (consumer_group, topic, `partition`, next_offset, topic_id) \
                         VALUES (?, ?, ?, ?, ?)"
                    ),
                    (group, topic, partition, start, topic_id),
                )?;
                tx.affected_rows() == 1
            }
        };
        if !claimed {
            return Err(Error::Setup(format!(
                "topic {topic} partition {partition}: the offset table {} changed while this process \
                 started (read {}, now {}); {}",
                config.mysql.offset_table,
                offset_text(read),
                offset_text(now),
                TWO_WRITERS
            )));
        }
        tx.commit()?;
    }
    Ok(())
}

/// What an exactly-once fence failure means, and what to do.
pub(super) const TWO_WRITERS: &str = "another process writes this partition for the same group \
     (kafka.partitions overlapping in two configs, two starts racing, or with group assignment \
     the member that had the partition before, writing late); \
     with static assignment stop one of them and restart this one; a group member starts the \
     partition again from the offset table by itself";

pub(super) fn offset_text(offset: Option<i64>) -> String {
    offset.map_or_else(|| "no row".to_string(), |o| o.to_string())
}

/// The rows of the offset table for this group and topic.
pub fn stored_offsets(conn: &mut Conn, config: &Config) -> Result<BTreeMap<i32, OffsetRow>, Error> {
    let rows: Vec<(i32, i64, Option<String>)> = conn.exec(
        format!(
            "SELECT `partition`, next_offset, topic_id FROM {} WHERE consumer_group = ? AND topic = ?",
            quote(&config.mysql.offset_table)
        ),
        (&config.kafka.group, &config.kafka.topic),
    )?;
    Ok(rows
        .into_iter()
        .map(|(partition, next_offset, topic_id)| {
            (
                partition,
                OffsetRow {
                    next_offset,
                    topic_id,
                },
            )
        })
        .collect())
}

/// Sets the stored next offset of one partition whatever it was, a position
/// in the topic of id `topic_id` (reset-offsets, while the service is
/// stopped).
pub fn store_offset(
    conn: &mut impl Queryable,
    config: &Config,
    partition: i32,
    next_offset: i64,
    topic_id: Option<&str>,
) -> Result<(), Error> {
    conn.exec_drop(
        format!(
            "INSERT INTO {} (consumer_group, topic, `partition`, next_offset, topic_id) VALUES (?, ?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE next_offset = VALUES(next_offset), topic_id = VALUES(topic_id)",
            quote(&config.mysql.offset_table)
        ),
        (
            &config.kafka.group,
            &config.kafka.topic,
            partition,
            next_offset,
            topic_id,
        ),
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
