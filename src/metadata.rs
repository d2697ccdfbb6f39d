//! Metadata columns (`[mysql.metadata_columns]`; README.md, "Records to
//! rows"): the record's topic, partition, offset and timestamp, and for
//! Debezium fields of the event's `source`, written into named columns of
//! every row an upsert or insert writes. Deletes are not touched.
//!
//! The values are added after the record is mapped (`Mapper::map`): a
//! metadata column is never a key column nor the version column (the config
//! refuses it), so nothing that `record.rs` checks depends on them. A field of
//! the record with a metadata column's name is replaced by the metadata.
//! Pure: no I/O.

use std::borrow::Cow;
use std::collections::BTreeMap;

use mysql::Value;
use serde_json::value::RawValue;

use crate::config::Config;
use crate::envelope::{self, Logical};
use crate::error::RecordError;
use crate::record::{Mapper, Record, RowOp, TableSchema};

/// What a metadata column holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataField {
    Topic,
    Partition,
    Offset,
    /// The record's timestamp (ms since the epoch, as the producer or the
    /// broker set it): a time in `mysql.time_zone`, or the number for a
    /// number column.
    Timestamp,
    /// A field of a Debezium event's `source` (`file`, `pos`, `lsn`,
    /// `ts_ms`).
    Source(String),
}

impl MetadataField {
    /// `topic`, `partition`, `offset`, `timestamp` or `source.<field>`.
    pub fn parse(text: &str) -> Result<MetadataField, String> {
        Ok(match text {
            "topic" => MetadataField::Topic,
            "partition" => MetadataField::Partition,
            "offset" => MetadataField::Offset,
            "timestamp" => MetadataField::Timestamp,
            _ => match text.strip_prefix("source.") {
                Some(field)
                    if !field.is_empty()
                        && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                {
                    MetadataField::Source(field.to_string())
                }
                _ => {
                    return Err(format!(
                        "expected topic | partition | offset | timestamp | source.<field>, got {text:?}"
                    ))
                }
            },
        })
    }
}

/// The metadata columns of one partition's `Mapper`, resolved against the
/// table. Empty (the default) adds nothing.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    /// (column index, what it holds), ascending by column.
    columns: Vec<(usize, MetadataField)>,
    topic: String,
    partition: i32,
    /// Some column holds a `source.<field>`: the event's `source` is read.
    reads_source: bool,
}

impl Metadata {
    /// Resolves `mysql.metadata_columns` against the table; fails naming a
    /// column the table does not have.
    pub fn new(
        schema: &TableSchema,
        configured: &[(String, MetadataField)],
        topic: &str,
        partition: i32,
    ) -> Result<Metadata, String> {
        let mut columns = Vec::with_capacity(configured.len());
        for (name, field) in configured {
            let Some(column) = schema.column_index(name) else {
                return Err(format!(
                    "table {} has no column {name:?} (mysql.metadata_columns.{name})",
                    schema.table
                ));
            };
            columns.push((column, field.clone()));
        }
        columns.sort_by_key(|(column, _)| *column);
        Ok(Metadata {
            reads_source: columns
                .iter()
                .any(|(_, f)| matches!(f, MetadataField::Source(_))),
            columns,
            topic: topic.to_string(),
            partition,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Whether the Debezium event's `source` is needed.
    pub fn reads_source(&self) -> bool {
        self.reads_source
    }

    /// `op` with the metadata columns set, when it writes a row.
    /// `source` is the Debezium event's `source` object, if any.
    pub fn add(
        &self,
        mapper: &Mapper,
        op: RowOp,
        record: &Record,
        source: Option<&str>,
    ) -> Result<RowOp, RecordError> {
        let RowOp::Write {
            mut columns,
            mut values,
        } = op
        else {
            return Ok(op);
        };
        // As a JSON map reads it: a repeated name keeps its last value.
        let source: BTreeMap<Cow<str>, &RawValue> = match source {
            Some(source) if self.reads_source && source != "null" => serde_json::from_str(source)
                .map_err(|_| {
                RecordError::BadEnvelope("\"source\" is not an object".to_string())
            })?,
            _ => BTreeMap::new(),
        };
        for (column, field) in &self.columns {
            let value = match field {
                MetadataField::Topic => Value::from(self.topic.as_str()),
                MetadataField::Partition => Value::Int(i64::from(self.partition)),
                MetadataField::Offset => Value::Int(record.offset),
                MetadataField::Timestamp => match record.timestamp() {
                    None => Value::NULL,
                    Some(ms) => epoch_value(mapper, *column, ms, 1_000)?,
                },
                MetadataField::Source(name) => match source.get(name.as_str()) {
                    None => Value::NULL,
                    // Debezium's `ts_ms`, `ts_us` and `ts_ns` are instants.
                    Some(raw) => match name.as_str() {
                        "ts_ms" => epoch_raw(mapper, *column, raw.get(), 1_000)?,
                        "ts_us" => epoch_raw(mapper, *column, raw.get(), 1_000_000)?,
                        "ts_ns" => epoch_raw(mapper, *column, raw.get(), 1_000_000_000)?,
                        _ => mapper.schema.value(*column, raw.get(), mapper.time_zone)?,
                    },
                },
            };
            match columns.binary_search(column) {
                Ok(pos) => values[pos] = value,
                Err(pos) => {
                    columns.insert(pos, *column);
                    values.insert(pos, value);
                }
            }
        }
        Ok(RowOp::Write { columns, values })
    }
}

/// An epoch count as Connect's `Timestamp` is bound: a time in
/// `mysql.time_zone` to the column's digits, or the number for a number
/// column.
fn epoch_raw(
    mapper: &Mapper,
    column: usize,
    raw: &str,
    units_per_second: i64,
) -> Result<Value, RecordError> {
    let logical = Logical::Timestamp {
        units_per_second,
        instant: true,
    };
    envelope::logical_value(logical, mapper, column, raw)
}

fn epoch_value(
    mapper: &Mapper,
    column: usize,
    count: i64,
    units_per_second: i64,
) -> Result<Value, RecordError> {
    epoch_raw(mapper, column, &count.to_string(), units_per_second)
}

/// The mapper of one partition: the config's settings, the table, and the
/// metadata columns with that partition. Fails naming a metadata column that
/// the table does not have.
pub fn mapper_for(config: &Config, schema: &TableSchema, partition: i32) -> Result<Mapper, String> {
    Ok(Mapper {
        metadata: Metadata::new(
            schema,
            &config.mysql.metadata_columns,
            &config.kafka.topic,
            partition,
        )?,
        schema: schema.clone(),
        unknown_fields: config.mysql.unknown_fields,
        delete_on_tombstone: config.mysql.delete_on_tombstone,
        max_record_bytes: config.worker.max_record_bytes,
        record_format: config.mysql.record_format,
        time_zone: config.mysql.time_zone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RecordFormat, UnknownFields};
    use crate::record::Column;
    use crate::times::TimeZone;

    fn mapper(format: RecordFormat, metadata: &[(&str, &str)]) -> Mapper {
        let columns: Vec<Column> = [
            ("id", "int(11)"),
            ("name", "varchar(64)"),
            ("k_topic", "varchar(249)"),
            ("k_partition", "int(11)"),
            ("k_offset", "bigint(20)"),
            ("k_time", "datetime(3)"),
            ("k_ms", "bigint(20)"),
            ("src_file", "varchar(64)"),
            ("src_pos", "bigint(20)"),
            ("src_ts", "timestamp(3)"),
        ]
        .iter()
        .map(|(name, column_type)| Column {
            name: name.to_string(),
            column_type: column_type.to_string(),
        })
        .collect();
        let schema = TableSchema::new("t", columns, &["id".to_string()]).unwrap();
        let configured: Vec<(String, MetadataField)> = metadata
            .iter()
            .map(|(c, f)| (c.to_string(), MetadataField::parse(f).unwrap()))
            .collect();
        Mapper {
            metadata: Metadata::new(&schema, &configured, "orders", 3).unwrap(),
            schema,
            unknown_fields: UnknownFields::Ignore,
            delete_on_tombstone: true,
            max_record_bytes: 1 << 20,
            record_format: format,
            time_zone: TimeZone::parse("+02:00").unwrap(),
        }
    }

    fn text(t: &str) -> Value {
        Value::Bytes(t.as_bytes().to_vec())
    }

    fn written(m: &Mapper, record: &Record) -> Vec<(String, Value)> {
        crate::envelope::tests::row(m, m.map(record).unwrap())
    }

    #[test]
    fn fields_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!(MetadataField::parse("offset"), Ok(MetadataField::Offset));
        assert_eq!(
            MetadataField::parse("source.lsn"),
            Ok(MetadataField::Source("lsn".into()))
        );
        for bad in ["source.", "source.a.b", "Offset", "key", ""] {
            let e = MetadataField::parse(bad).unwrap_err();
            assert!(e.starts_with("expected topic | partition"), "{bad}: {e}");
        }
    }

    #[test]
    fn kafka_metadata_is_added_to_every_write_and_wins_over_a_field() {
        let m = mapper(
            RecordFormat::Json,
            &[
                ("k_topic", "topic"),
                ("k_partition", "partition"),
                ("k_offset", "offset"),
                ("k_time", "timestamp"),
                ("k_ms", "timestamp"),
            ],
        );
        let record = Record::with_timestamp(
            41,
            b"",
            br#"{"id": 1, "name": "a", "k_offset": 7}"#,
            1_735_725_600_123,
        );
        assert_eq!(record.timestamp(), Some(1_735_725_600_123));
        assert_eq!(record.size(), 37, "the timestamp is not the record's");
        assert_eq!(
            written(&m, &record),
            vec![
                ("id".to_string(), Value::Int(1)),
                ("name".to_string(), text("a")),
                ("k_topic".to_string(), text("orders")),
                ("k_partition".to_string(), Value::Int(3)),
                ("k_offset".to_string(), Value::Int(41)),
                // In the session's zone, +02:00.
                ("k_time".to_string(), text("2025-01-01 12:00:00.123")),
                ("k_ms".to_string(), Value::Int(1_735_725_600_123)),
            ]
        );
        // No timestamp (a client or a message format without one): NULL.
        let record = Record::with_timestamp(42, b"", br#"{"id": 1}"#, -1);
        assert_eq!(record.timestamp(), None);
        let row = written(&m, &record);
        assert_eq!(row[4], ("k_time".to_string(), Value::NULL));
        // A tombstone deletes by key alone.
        assert_eq!(
            m.map(&Record::new(43, b"1", b"")).unwrap(),
            RowOp::Delete {
                key_values: vec![Value::Int(1)]
            }
        );
    }

    #[test]
    fn debezium_source_fields_are_read_from_the_event() {
        let m = mapper(
            RecordFormat::Debezium,
            &[
                ("src_file", "source.file"),
                ("src_pos", "source.pos"),
                ("src_ts", "source.ts_ms"),
                ("k_offset", "offset"),
            ],
        );
        let event = br#"{"before": null, "after": {"id": 5, "name": "x"},
            "source": {"file": "mysql-bin.000003", "pos": 154, "ts_ms": 1735725600500, "gtid": null},
            "op": "u", "ts_ms": 1}"#;
        assert_eq!(
            written(&m, &Record::new(9, b"", event)),
            vec![
                ("id".to_string(), Value::Int(5)),
                ("name".to_string(), text("x")),
                ("k_offset".to_string(), Value::Int(9)),
                ("src_file".to_string(), text("mysql-bin.000003")),
                ("src_pos".to_string(), Value::Int(154)),
                ("src_ts".to_string(), text("2025-01-01 12:00:00.500")),
            ]
        );
        // In Connect's envelope too; a field the source lacks is NULL.
        let wrapped = br#"{"schema": null, "payload": {"after": {"id": 6}, "op": "c",
            "source": {"pos": 1}}}"#;
        let row = written(&m, &Record::new(10, b"", wrapped));
        assert_eq!(row[2], ("src_file".to_string(), Value::NULL));
        assert_eq!(row[3], ("src_pos".to_string(), Value::Int(1)));
        // A source that is not an object is a bad envelope.
        let bad = br#"{"after": {"id": 6}, "op": "c", "source": 3}"#;
        assert_eq!(
            m.map(&Record::new(11, b"", bad)).unwrap_err().to_string(),
            RecordError::BadEnvelope("\"source\" is not an object".into()).to_string()
        );
    }

    #[test]
    fn a_metadata_column_the_table_lacks_is_named() {
        let m = mapper(RecordFormat::Json, &[]);
        let e = Metadata::new(
            &m.schema,
            &[("kafka_offset".into(), MetadataField::Offset)],
            "t",
            0,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "table t has no column \"kafka_offset\" (mysql.metadata_columns.kafka_offset)"
        );
    }
}
