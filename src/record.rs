//! Records to rows (README.md, "Records to rows").
//!
//! A `Record` is what the coordinator copied out of a fetch response. The
//! `Mapper` turns one into a `RowOp`: the columns it sets and their values as
//! bound parameters, a delete by key for a tombstone, or a skip. It never
//! builds SQL and never talks to the database; `mysql/sink.rs` does that.
//!
//! Decisions the design leaves open:
//! - The `kafka` crate reports a null value and an empty value alike (both as
//!   an empty slice), so an empty value is a tombstone.
//! - JSON field names match column names case-insensitively, as MySQL does.
//! - Each value is bound as its column's type asks, exactly: numbers never
//!   pass through a binary float (`column_values.rs` has the rules).
//! - A tombstone's key may be a JSON object (one field per key column), a JSON
//!   scalar, or plain text, when the table has a single key column. A text
//!   key column compares the key's text as it is; a number key column needs
//!   a number.
//! - Key columns the value lacks (absent or null) are taken from the record
//!   key, read as a tombstone's key is; where the value has them, the value
//!   wins and the record key is not read at all (so the usual record costs
//!   nothing more, and records that landed before still land the same).
//! - Kafka Connect and Debezium envelopes (`mysql.record_format`) are
//!   unwrapped in `envelope.rs`, which hands the row's object back here.

use std::borrow::Cow;
use std::collections::HashMap;

use mysql::Value;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value as Json;

use crate::column_values::{field_value, scalar_key_value, ColumnKind};
use crate::config::{RecordFormat, UnknownFields};
use crate::envelope::{self, FieldTypes};
use crate::error::RecordError;
use crate::metadata::Metadata;
use crate::times::TimeZone;

/// One Kafka record, owned: the worker keeps it after the fetch response is gone.
///
/// Key and value share one allocation: the queued batches are most of the
/// service's memory, and two allocations per record cost a third more of it
/// than the bytes themselves (measured).
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    /// The key's bytes, then the value's.
    bytes: Box<[u8]>,
    key_len: u32,
    /// False for a tombstone (null or empty value).
    has_value: bool,
    /// Set when the record's timestamp follows its bytes (8 bytes,
    /// little-endian, ms since the epoch; negative for none, as Kafka
    /// writes it): only when a metadata column wants it (`metadata.rs`), so
    /// that no other record is larger for it.
    has_timestamp: bool,
    /// Set by the broker client when the record could not be fetched whole
    /// because it is larger than any fetch it may make; it is then
    /// dead-lettered with what was kept of it. Its real size then follows
    /// its bytes (8 bytes, little-endian), so that every other record
    /// stays as small as it was.
    pub oversized: Option<Oversized>,
}

/// What was kept of a record too large to fetch (see `Record::oversized`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversized {
    /// Its key and the start of its value; the size is the record's.
    Record,
    /// Nothing; the size is that of the batch holding it.
    Batch,
}

impl Record {
    pub fn new(offset: i64, key: &[u8], value: &[u8]) -> Record {
        let mut bytes = Vec::with_capacity(key.len() + value.len());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        Record {
            offset,
            bytes: bytes.into_boxed_slice(),
            // Kafka sizes are i32, so a key always fits.
            key_len: u32::try_from(key.len()).expect("a Kafka key is shorter than 2 GiB"),
            has_value: !value.is_empty(),
            has_timestamp: false,
            oversized: None,
        }
    }

    /// A record with its timestamp (ms since the epoch), as the broker
    /// client read it (kept as `with_size` keeps a size).
    pub fn with_timestamp(offset: i64, key: &[u8], value: &[u8], timestamp_ms: i64) -> Record {
        let mut value_and_timestamp = Vec::with_capacity(value.len() + 8);
        value_and_timestamp.extend_from_slice(value);
        value_and_timestamp.extend_from_slice(&timestamp_ms.to_le_bytes());
        Record {
            has_value: !value.is_empty(),
            has_timestamp: true,
            ..Record::new(offset, key, &value_and_timestamp)
        }
    }

    /// The record's timestamp in ms since the epoch, if it has one.
    pub fn timestamp(&self) -> Option<i64> {
        if !self.has_timestamp {
            return None;
        }
        let mut timestamp = [0; 8];
        timestamp.copy_from_slice(&self.bytes[self.bytes.len() - 8..]);
        Some(i64::from_le_bytes(timestamp)).filter(|&t| t >= 0)
    }

    /// A record too large to fetch whole, of `size` bytes of key and value:
    /// its key and the first bytes of its value (`value_start`).
    pub fn oversized(offset: i64, key: &[u8], value_start: &[u8], size: usize) -> Record {
        Record::with_size(offset, key, value_start, Oversized::Record, size as u64)
    }

    /// The stand-in for a record of which nothing could be read, in a batch
    /// of `batch_size` bytes too large to fetch.
    pub fn oversized_batch(offset: i64, batch_size: u64) -> Record {
        Record::with_size(offset, b"", b"", Oversized::Batch, batch_size)
    }

    fn with_size(offset: i64, key: &[u8], value: &[u8], kind: Oversized, size: u64) -> Record {
        let mut value_and_size = Vec::with_capacity(value.len() + 8);
        value_and_size.extend_from_slice(value);
        value_and_size.extend_from_slice(&size.to_le_bytes());
        Record {
            oversized: Some(kind),
            ..Record::new(offset, key, &value_and_size)
        }
    }

    /// The bytes after the key: the value, and for an oversized record its size.
    fn rest(&self) -> &[u8] {
        let end = self.bytes.len() - if self.has_timestamp { 8 } else { 0 };
        &self.bytes[self.key_len as usize..end]
    }

    pub fn key(&self) -> &[u8] {
        &self.bytes[..self.key_len as usize]
    }

    /// `None` for a tombstone and for a record of which nothing could be
    /// read; for an oversized record, what was kept.
    pub fn value(&self) -> Option<&[u8]> {
        if !self.has_value {
            return None;
        }
        let rest = self.rest();
        match self.oversized {
            None => Some(rest),
            Some(Oversized::Record) => Some(&rest[..rest.len() - 8]),
            Some(Oversized::Batch) => None,
        }
    }

    /// Key and value bytes; for an oversized record, as it is in Kafka.
    pub fn size(&self) -> usize {
        match self.oversized {
            None => self.key_len as usize + self.rest().len(),
            Some(_) => {
                let rest = self.rest();
                let mut size = [0; 8];
                size.copy_from_slice(&rest[rest.len() - 8..]);
                usize::try_from(u64::from_le_bytes(size)).unwrap_or(usize::MAX)
            }
        }
    }
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("offset", &self.offset)
            .field("key", &escape_for_log(self.key(), 64))
            .field("value", &self.value().map(|v| escape_for_log(v, 64)))
            .field("oversized", &self.oversized)
            .finish()
    }
}

/// A column of the target table, as `information_schema.COLUMNS` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `COLUMN_TYPE`: `bigint(20) unsigned`, `decimal(20,2)`, `varchar(64)`.
    pub column_type: String,
}

/// The target table: its columns in table order and the key columns.
#[derive(Debug, Clone)]
pub struct TableSchema {
    pub table: String,
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the configured key columns, in config order.
    pub key_columns: Vec<usize>,
    /// Index of `mysql.version_column`: every written row needs it.
    pub version_column: Option<usize>,
    by_name: HashMap<String, usize>,
    /// Per column, what its type does to a bound value, and whether it is a
    /// key column.
    kinds: Vec<(ColumnKind, bool)>,
}

impl TableSchema {
    /// Builds the schema; fails naming the first configured key column that is
    /// not a column of the table.
    pub fn new(
        table: &str,
        columns: Vec<Column>,
        key_columns: &[String],
    ) -> Result<TableSchema, String> {
        let by_name: HashMap<String, usize> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.to_ascii_lowercase(), i))
            .collect();
        let mut keys = Vec::with_capacity(key_columns.len());
        for k in key_columns {
            match by_name.get(&k.to_ascii_lowercase()) {
                Some(&i) => keys.push(i),
                None => {
                    return Err(format!(
                        "table {table} has no column {k:?} (mysql.key_columns)"
                    ))
                }
            }
        }
        let kinds = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (ColumnKind::of(&c.column_type), keys.contains(&i)))
            .collect();
        Ok(TableSchema {
            table: table.to_string(),
            columns,
            key_columns: keys,
            version_column: None,
            by_name,
            kinds,
        })
    }

    /// Sets `mysql.version_column`; fails naming it when it is not a column.
    pub fn with_version_column(mut self, name: Option<&str>) -> Result<TableSchema, String> {
        if let Some(name) = name {
            let Some(column) = self.column_index(name) else {
                return Err(format!(
                    "table {} has no column {name:?} (mysql.version_column)",
                    self.table
                ));
            };
            self.version_column = Some(column);
        }
        Ok(self)
    }

    pub fn kind(&self, column: usize) -> ColumnKind {
        self.kinds[column].0
    }

    /// A field's JSON text (one whole JSON value) as the parameter bound
    /// for column `column`; `zone` is `mysql.time_zone`.
    pub fn value(&self, column: usize, raw: &str, zone: TimeZone) -> Result<Value, RecordError> {
        let (kind, key) = self.kinds[column];
        field_value(kind, &self.columns[column], raw, key, zone)
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        // A short scan beats hashing the name for the usual table (profiled).
        if self.columns.len() <= 16 {
            return self
                .columns
                .iter()
                .position(|c| c.name.eq_ignore_ascii_case(name));
        }
        if let Some(&i) = self.by_name.get(name) {
            return Some(i);
        }
        self.by_name.get(&name.to_ascii_lowercase()).copied()
    }
}

/// What one record does to the table.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOp {
    /// Insert (or upsert) a row. `columns` are indexes into the schema's
    /// columns, ascending, so records with the same fields have equal lists and
    /// share one multi-row statement.
    Write {
        columns: Vec<usize>,
        values: Vec<Value>,
    },
    /// Delete the row whose key columns equal these values (schema key order).
    Delete { key_values: Vec<Value> },
    /// A tombstone while `delete_on_tombstone = false`.
    Skip,
}

/// Maps records to rows for one table and one configuration.
#[derive(Debug, Clone)]
pub struct Mapper {
    pub schema: TableSchema,
    pub unknown_fields: UnknownFields,
    pub delete_on_tombstone: bool,
    pub max_record_bytes: usize,
    pub record_format: RecordFormat,
    pub time_zone: TimeZone,
    /// `[mysql.metadata_columns]`, with this mapper's partition.
    pub metadata: Metadata,
}

impl Mapper {
    pub fn map(&self, record: &Record) -> Result<RowOp, RecordError> {
        match record.oversized {
            None => {}
            Some(Oversized::Record) => {
                return Err(RecordError::TooLargeToFetch {
                    size: record.size(),
                    limit: self.max_record_bytes,
                    kept: record.value().map_or(0, <[u8]>::len),
                })
            }
            Some(Oversized::Batch) => {
                return Err(RecordError::BatchTooLargeToFetch {
                    batch: record.size(),
                })
            }
        }
        if record.size() > self.max_record_bytes {
            return Err(RecordError::TooLarge {
                size: record.size(),
                limit: self.max_record_bytes,
            });
        }
        let (op, source) = match (self.record_format, record.value()) {
            // Debezium deletes with an `op: "d"` event; the tombstone after
            // it is for log compaction only.
            (RecordFormat::Debezium, None) => return Ok(RowOp::Skip),
            (_, None) => return self.map_tombstone(record.key()),
            (RecordFormat::Json, Some(value)) => (self.map_value(value, record.key())?, None),
            (RecordFormat::ConnectJson, Some(value)) => {
                (envelope::map_connect_json(self, value, record.key())?, None)
            }
            (RecordFormat::Debezium, Some(value)) => {
                envelope::map_debezium(self, value, record.key())?
            }
        };
        if self.metadata.is_empty() {
            return Ok(op);
        }
        self.metadata.add(self, op, record, source)
    }

    /// Reads the JSON object in one pass: no intermediate `serde_json::Value`
    /// tree, no owned field names, each column's value kept as its JSON text
    /// (borrowed) until it is bound (the mapping was most of a worker's
    /// time). It gives exactly what reading the object into a map from names
    /// to JSON texts and mapping its fields in name order gives (see
    /// `map_value_reference` in the tests): a repeated field
    /// counts once, with its last value; of two names for the same column
    /// ("id", "ID") the bytewise smaller one wins; with `unknown_fields =
    /// dead_letter` the bytewise smallest unknown name is reported.
    fn map_value(&self, value: &[u8], record_key: &[u8]) -> Result<RowOp, RecordError> {
        // The whole record is checked for UTF-8 once, here: serde_json then
        // reads a `str` and checks no string, name or value on its own
        // (each field's raw text would be checked again otherwise).
        let text = std::str::from_utf8(value).map_err(|e| RecordError::NotUtf8(e.valid_up_to()))?;
        let fields = match self.read_object(text) {
            Ok(Some(fields)) => fields,
            Ok(None) => return Err(RecordError::NotObject),
            Err(e) => return Err(RecordError::NotJson(e.to_string())),
        };
        self.write_row(fields, None, record_key)
    }

    /// The fields of the JSON object `text` that are columns, in one pass;
    /// `None` when `text` is JSON but not an object.
    pub(crate) fn read_object<'de>(
        &self,
        text: &'de str,
    ) -> Result<Option<ObjectFields<'de>>, serde_json::Error> {
        let keep_unknown_name = self.unknown_fields == UnknownFields::DeadLetter;
        if let Some(fields) = read_flat_object(&self.schema, text, keep_unknown_name) {
            return Ok(Some(fields));
        }
        read_object_with_serde(&self.schema, text, keep_unknown_name)
    }

    /// A field's value for column `column`: as its logical type says when
    /// `types` (a Connect schema) names one, else as the column asks.
    fn bind(
        &self,
        column: usize,
        name: &str,
        raw: &str,
        types: Option<&FieldTypes>,
    ) -> Result<Value, RecordError> {
        match types.and_then(|t| t.logical(name)) {
            Some(logical) => envelope::logical_value(logical, self, column, raw),
            None => self.schema.value(column, raw, self.time_zone),
        }
    }

    /// The row of an object's fields: every field that is a column bound,
    /// key columns the object lacks taken from the record key.
    pub(crate) fn write_row(
        &self,
        fields: ObjectFields<'_>,
        types: Option<&FieldTypes>,
        record_key: &[u8],
    ) -> Result<RowOp, RecordError> {
        if let Some(name) = fields.smallest_unknown {
            return Err(RecordError::UnknownField(shorten(&name)));
        }
        let mut pairs = fields.pairs;
        if pairs.is_empty() {
            return Err(RecordError::NoColumns);
        }
        pairs.sort_unstable_by_key(|(i, _, _)| *i);
        // In column order, so that of two bad values the same one is named
        // whatever the field order.
        let mut columns = Vec::with_capacity(pairs.len());
        let mut values = Vec::with_capacity(pairs.len());
        match types {
            // Plain JSON, the hot path: kept apart so that it stays as lean
            // as it was (measured with instruction counts).
            None => {
                for (i, _, raw) in pairs {
                    values.push(self.schema.value(i, raw, self.time_zone)?);
                    columns.push(i);
                }
            }
            Some(types) => {
                for (i, name, raw) in pairs {
                    values.push(self.bind(i, &name, raw, Some(types))?);
                    columns.push(i);
                }
            }
        }
        self.fill_keys(&mut columns, &mut values, record_key)?;
        if let Some(version) = self.schema.version_column {
            // Without it the guarded upsert could not compare (README.md,
            // "Records to rows").
            if !has_value(&columns, &values, version) {
                return Err(RecordError::BadValue {
                    column: self.schema.columns[version].name.clone(),
                    reason: "the version column is missing or null (mysql.version_column)".into(),
                });
            }
        }
        Ok(RowOp::Write { columns, values })
    }

    /// The delete of the row whose key columns `row` (Debezium's `before`)
    /// holds; key columns it lacks are taken from the record key.
    pub(crate) fn delete_row(
        &self,
        row: Option<ObjectFields<'_>>,
        types: Option<&FieldTypes>,
        record_key: &[u8],
    ) -> Result<RowOp, RecordError> {
        let mut columns = Vec::new();
        let mut values = Vec::new();
        let mut pairs = row.map(|fields| fields.pairs).unwrap_or_default();
        pairs.retain(|(i, _, _)| self.schema.key_columns.contains(i));
        pairs.sort_unstable_by_key(|(i, _, _)| *i);
        for (i, name, raw) in pairs {
            values.push(self.bind(i, &name, raw, types)?);
            columns.push(i);
        }
        self.fill_keys(&mut columns, &mut values, record_key)?;
        let key_values = self
            .schema
            .key_columns
            .iter()
            .map(|k| values[columns.binary_search(k).expect("filled")].clone())
            .collect();
        Ok(RowOp::Delete { key_values })
    }

    /// Adds the key columns missing from (or null in) `columns`, ascending,
    /// and their `values`, from the record key; fails naming the first key
    /// column that neither has.
    #[inline]
    fn fill_keys(
        &self,
        columns: &mut Vec<usize>,
        values: &mut Vec<Value>,
        record_key: &[u8],
    ) -> Result<(), RecordError> {
        let keys = &self.schema.key_columns;
        if keys.iter().all(|&k| has_value(columns, values, k)) {
            return Ok(());
        }
        self.fill_missing_keys(columns, values, record_key)
    }

    #[cold]
    fn fill_missing_keys(
        &self,
        columns: &mut Vec<usize>,
        values: &mut Vec<Value>,
        record_key: &[u8],
    ) -> Result<(), RecordError> {
        let missing: Vec<usize> = self
            .schema
            .key_columns
            .iter()
            .copied()
            .filter(|&k| !has_value(columns, values, k))
            .collect();
        let from_key = match self.record_key_values(record_key, &missing) {
            Ok(from_key) => from_key,
            // A value that the key holds but its column cannot take is
            // named as such, and so is the key column neither holds; a key
            // that holds nothing usable names the first one missing.
            Err(e @ (RecordError::BadValue { .. } | RecordError::MissingKey(_))) => return Err(e),
            Err(_) => {
                return Err(RecordError::MissingKey(
                    self.schema.columns[missing[0]].name.clone(),
                ))
            }
        };
        for (k, value) in missing.into_iter().zip(from_key) {
            match columns.binary_search(&k) {
                Ok(pos) => values[pos] = value,
                Err(pos) => {
                    columns.insert(pos, k);
                    values.insert(pos, value);
                }
            }
        }
        Ok(())
    }

    pub(crate) fn map_tombstone(&self, key: &[u8]) -> Result<RowOp, RecordError> {
        if !self.delete_on_tombstone {
            return Ok(RowOp::Skip);
        }
        let key_values = self.record_key_values(key, &self.schema.key_columns)?;
        Ok(RowOp::Delete { key_values })
    }

    /// The values of key columns `wanted` taken from the record key: a JSON
    /// object with a field per key column, or, for a table with a single key
    /// column, a JSON scalar or plain text. With an envelope format the key
    /// may be in Connect's envelope too (`{"schema": ..., "payload": ...}`).
    fn record_key_values(&self, key: &[u8], wanted: &[usize]) -> Result<Vec<Value>, RecordError> {
        let keys = &self.schema.key_columns;
        if key.is_empty() {
            return Err(RecordError::BadTombstoneKey("the record has no key".into()));
        }
        let text = std::str::from_utf8(key).map_err(|e| {
            RecordError::BadTombstoneKey(format!("key is not UTF-8 (byte {})", e.valid_up_to()))
        })?;
        let (text, types) = match self.record_format {
            RecordFormat::Json => (text, None),
            _ => envelope::unwrap_key(text)?,
        };
        let parsed: Option<&RawValue> = serde_json::from_str(text).ok();
        let first = parsed.and_then(|raw| raw.get().bytes().next());
        let key_values = match first {
            Some(b'{') => {
                // As a JSON map reads it: a repeated name keeps its last value.
                let fields: std::collections::BTreeMap<Cow<str>, &RawValue> =
                    serde_json::from_str(text)
                        .map_err(|e| RecordError::BadTombstoneKey(e.to_string()))?;
                let mut values = Vec::with_capacity(wanted.len());
                for &k in wanted {
                    let name = &self.schema.columns[k].name;
                    let found = fields.iter().find(|(f, _)| f.eq_ignore_ascii_case(name));
                    match found {
                        Some((f, v)) if v.get() != "null" => {
                            values.push(self.bind(k, f, v.get(), types.as_deref())?)
                        }
                        _ => return Err(RecordError::MissingKey(name.clone())),
                    }
                }
                values
            }
            Some(b'[') => {
                return Err(RecordError::BadTombstoneKey("key is a JSON array".into()));
            }
            Some(b'n') => return Err(RecordError::BadTombstoneKey("key is null".into())),
            _ if keys.len() == 1 => {
                let k = keys[0];
                vec![scalar_key_value(
                    self.schema.kind(k),
                    &self.schema.columns[k],
                    text,
                    parsed,
                    self.time_zone,
                )?]
            }
            _ => {
                return Err(RecordError::BadTombstoneKey(format!(
                    "the table has {} key columns; the key must be a JSON object",
                    keys.len()
                )))
            }
        };
        Ok(key_values)
    }
}

/// Whether `column` is among `columns` (ascending) with a value other than NULL.
fn has_value(columns: &[usize], values: &[Value], column: usize) -> bool {
    columns
        .binary_search(&column)
        .is_ok_and(|pos| values[pos] != Value::NULL)
}

/// The fields of a record's JSON object that are columns, as read by
/// `TopLevelSeed`: (column, the JSON name that set it, its JSON text), in
/// JSON order.
pub(crate) struct ObjectFields<'de> {
    pairs: Vec<(usize, Cow<'de, str>, &'de str)>,
    /// Kept only with `unknown_fields = dead_letter`.
    smallest_unknown: Option<String>,
    /// Columns below 128 already seen, so that only a repeated column is
    /// looked for in `pairs`.
    seen: u128,
    /// Fields usually come in the table's order: the column after the last
    /// one is tried first (the lookup was a tenth of the mapping, profiled).
    next_column: usize,
}

impl<'de> ObjectFields<'de> {
    fn new(schema: &TableSchema) -> ObjectFields<'de> {
        ObjectFields {
            pairs: Vec::with_capacity(schema.columns.len().min(64)),
            smallest_unknown: None,
            seen: 0,
            next_column: 0,
        }
    }

    /// The column a field name sets, if any.
    fn column(&self, schema: &TableSchema, name: &str) -> Option<usize> {
        match schema.columns.get(self.next_column) {
            Some(c) if c.name == name || c.name.eq_ignore_ascii_case(name) => {
                Some(self.next_column)
            }
            _ => schema.column_index(name),
        }
    }

    /// Notes a field that is no column (its name only when it is kept).
    fn unknown(&mut self, name: Cow<'de, str>, keep_name: bool) {
        if keep_name
            && self
                .smallest_unknown
                .as_deref()
                .is_none_or(|s| name.as_ref() < s)
        {
            self.smallest_unknown = Some(name.into_owned());
        }
    }

    /// Adds the field `name` of column `column` with its JSON text `value`.
    fn add(&mut self, column: usize, name: Cow<'de, str>, value: &'de str) {
        self.next_column = column + 1;
        if column < 128 && self.seen & (1 << column) == 0 {
            self.seen |= 1 << column;
            self.pairs.push((column, name, value));
            return;
        }
        match self.pairs.iter_mut().find(|(c, _, _)| *c == column) {
            None => self.pairs.push((column, name, value)),
            // A repeated name: the last value wins (as in a JSON map).
            Some(slot) if slot.1 == name => slot.2 = value,
            // Another spelling of the same column: the smaller name wins.
            Some(slot) if name < slot.1 => *slot = (column, name, value),
            Some(_) => {}
        }
    }
}

/// `Mapper::read_object` through serde_json: any JSON text.
fn read_object_with_serde<'de>(
    schema: &TableSchema,
    text: &'de str,
    keep_unknown_name: bool,
) -> Result<Option<ObjectFields<'de>>, serde_json::Error> {
    let top = TopLevelSeed {
        schema,
        keep_unknown_name,
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    top.deserialize(&mut deserializer)
        .and_then(|fields| deserializer.end().map(|()| fields))
}

/// The usual record read without serde_json: one flat JSON object whose
/// names and strings hold no escapes or control characters and whose values
/// are strings, numbers, `true`, `false` or `null` (serde_json was most of
/// the mapping, profiled). `None` for anything else (a nested value, an
/// escape, any syntax error, not an object): the serde_json reader then
/// reads the text and alone decides what it holds and what is wrong with
/// it. So this path accepts only texts that serde_json accepts too, and
/// gives the same fields for them (the property test of `read_object`
/// checks both paths).
fn read_flat_object<'de>(
    schema: &TableSchema,
    text: &'de str,
    keep_unknown_name: bool,
) -> Option<ObjectFields<'de>> {
    let mut fields = ObjectFields::new(schema);
    plain_object_fields(text, scalar_end, |name, value| {
        match fields.column(schema, name) {
            Some(column) => fields.add(column, Cow::Borrowed(name), value),
            None => fields.unknown(Cow::Borrowed(name), keep_unknown_name),
        }
        Some(())
    })?;
    Some(fields)
}

/// Reads the JSON object `text` whose names are plain strings (see
/// `plain_string_end`), handing each name and its value's text to `field`
/// in order; a value ends where `value_end` says. `None` when `text` is not
/// such an object (surrounding whitespace allowed), or when `value_end` or
/// `field` says `None`.
// Inlined into each of its two readers, which stay as fast as when each had
// this loop of its own (measured).
#[inline(always)]
pub(crate) fn plain_object_fields<'t>(
    text: &'t str,
    value_end: impl Fn(&[u8], usize) -> Option<usize>,
    mut field: impl FnMut(&'t str, &'t str) -> Option<()>,
) -> Option<()> {
    let bytes = text.as_bytes();
    let mut at = skip_whitespace(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_whitespace(bytes, at + 1);
    if bytes.get(at) == Some(&b'}') {
        at += 1;
    } else {
        loop {
            let name_end = plain_string_end(bytes, at)?;
            // Every index here is that of an ASCII byte, so a character
            // boundary; `get` makes sure of it.
            let name = text.get(at + 1..name_end - 1)?;
            at = skip_whitespace(bytes, name_end);
            if bytes.get(at) != Some(&b':') {
                return None;
            }
            let value_start = skip_whitespace(bytes, at + 1);
            let end = value_end(bytes, value_start)?;
            field(name, text.get(value_start..end)?)?;
            at = skip_whitespace(bytes, end);
            match bytes.get(at) {
                Some(b',') => at = skip_whitespace(bytes, at + 1),
                Some(b'}') => {
                    at += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_whitespace(bytes, at) == bytes.len()).then_some(())
}

/// The index of the first byte from `at` on that is not JSON whitespace.
pub(crate) fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(at) {
        at += 1;
    }
    at
}

/// The end (past the closing quote) of the string that starts at `at`,
/// when it holds no escape and no control character.
pub(crate) fn plain_string_end(bytes: &[u8], at: usize) -> Option<usize> {
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let mut i = at + 1;
    // Eight bytes at a time up to the first that may end the string: a
    // quote, a backslash or a control character (the byte loop below then
    // decides). Profiled: the byte loop alone was most of skipping the
    // strings of a Debezium event's `source`.
    while let Some(chunk) = bytes.get(i..i + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        if may_end_string(word) {
            break;
        }
        i += 8;
    }
    loop {
        match *bytes.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' | 0..=0x1f => return None,
            _ => i += 1,
        }
    }
}

/// Whether one of the eight bytes of `word` is a quote, a backslash or
/// below 0x20 (exact: `(x - 0x01..01) & !x & 0x80..80` is not zero exactly
/// when a byte of `x` is zero, and with 0x20..20 when one is below 0x20).
fn may_end_string(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    quote | backslash | control != 0
}

/// The end of the scalar JSON value (no escapes in a string) that starts at
/// `at`; what follows it is the caller's to check.
pub(crate) fn scalar_end(bytes: &[u8], at: usize) -> Option<usize> {
    let literal = |word: &[u8]| {
        bytes
            .get(at..at + word.len())
            .filter(|b| *b == word)
            .map(|_| at + word.len())
    };
    match *bytes.get(at)? {
        b'"' => plain_string_end(bytes, at),
        b't' => literal(b"true"),
        b'f' => literal(b"false"),
        b'n' => literal(b"null"),
        b'-' | b'0'..=b'9' => number_end(bytes, at),
        _ => None,
    }
}

/// The end of the JSON number that starts at `at`:
/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`. A leading zero ends the
/// number, so that `01` is left to serde_json to refuse.
fn number_end(bytes: &[u8], at: usize) -> Option<usize> {
    let digits = |from: usize| {
        from + bytes.get(from..).map_or(0, |rest| {
            rest.iter().take_while(|b| b.is_ascii_digit()).count()
        })
    };
    let mut i = at + usize::from(bytes.get(at) == Some(&b'-'));
    match bytes.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(i),
        _ => return None,
    }
    if bytes.get(i) == Some(&b'.') {
        let end = digits(i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if let Some(b'e' | b'E') = bytes.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = bytes.get(i) {
            i += 1;
        }
        let end = digits(i);
        if end == i {
            return None;
        }
        i = end;
    }
    Some(i)
}

/// Reads a record's top-level JSON value: `Some` for an object, `None` for
/// any other JSON value (read to its end, so that a syntax error anywhere is
/// still reported as such).
struct TopLevelSeed<'a> {
    schema: &'a TableSchema,
    keep_unknown_name: bool,
}

impl<'de> DeserializeSeed<'de> for TopLevelSeed<'_> {
    type Value = Option<ObjectFields<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopLevelSeed<'_> {
    type Value = Option<ObjectFields<'de>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = ObjectFields::new(self.schema);
        while let Some(name) = map.next_key_seed(FieldName)? {
            match fields.column(self.schema, &name) {
                Some(column) => {
                    let value = map.next_value::<&'de RawValue>()?.get();
                    fields.add(column, name, value);
                }
                None => {
                    // Skipped, but still read to its end: a broken record is
                    // reported as a known field's value would be.
                    map.next_value::<de::IgnoredAny>()?;
                    fields.unknown(name, self.keep_unknown_name);
                }
            }
        }
        Ok(Some(fields))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Json>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// A field name, borrowed from the record unless it holds escapes.
struct FieldName;

impl<'de> DeserializeSeed<'de> for FieldName {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldName {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// Names taken from a record go into logs and dead letters escaped and short.
pub fn shorten(text: &str) -> String {
    let mut out: String = text.chars().take(64).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// Escapes bytes taken from a record for a log line: printable ASCII as it
/// is, everything else as `\xNN`, at most `max` bytes shown.
pub fn escape_for_log(bytes: &[u8], max: usize) -> String {
    let mut out = String::new();
    for &b in bytes.iter().take(max) {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if bytes.len() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(keys: &[&str]) -> TableSchema {
        let columns = [
            ("id", "bigint(20)"),
            ("name", "varchar(64)"),
            ("amount", "decimal(10,2)"),
            ("tags", "longtext"),
            ("region", "varchar(8)"),
        ]
        .iter()
        .map(|(name, column_type)| Column {
            name: name.to_string(),
            column_type: column_type.to_string(),
        })
        .collect();
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        TableSchema::new("orders", columns, &keys).unwrap()
    }

    fn mapper(keys: &[&str]) -> Mapper {
        Mapper {
            schema: schema(keys),
            unknown_fields: UnknownFields::Ignore,
            delete_on_tombstone: true,
            max_record_bytes: 1000,
            record_format: RecordFormat::Json,
            time_zone: TimeZone::UTC,
            metadata: Default::default(),
        }
    }

    fn map(m: &Mapper, key: &str, value: &str) -> Result<RowOp, RecordError> {
        m.map(&Record::new(7, key.as_bytes(), value.as_bytes()))
    }

    #[test]
    fn object_fields_become_columns_in_table_order() {
        let m = mapper(&["id"]);
        let op = map(
            &m,
            "",
            r#"{"amount": 12.50, "id": 3, "name": "x", "tags": [1,2], "other": 1}"#,
        )
        .unwrap();
        assert_eq!(
            op,
            RowOp::Write {
                columns: vec![0, 1, 2, 3],
                values: vec![
                    Value::Int(3),
                    Value::Bytes(b"x".to_vec()),
                    Value::Bytes(b"12.50".to_vec()),
                    Value::Bytes(b"[1,2]".to_vec()),
                ],
            }
        );
    }

    #[test]
    fn column_names_match_case_insensitively() {
        let m = mapper(&["id"]);
        let op = map(&m, "", r#"{"ID": 1, "Name": null, "region": true}"#).unwrap();
        assert_eq!(
            op,
            RowOp::Write {
                columns: vec![0, 1, 4],
                values: vec![Value::Int(1), Value::NULL, Value::Int(1)]
            }
        );
    }

    #[test]
    fn bad_values_are_record_errors() {
        let m = mapper(&["id"]);
        let cases: &[(&[u8], RecordError)] = &[
            (b"\xff\xfe{}", RecordError::NotUtf8(0)),
            (b"[1,2]", RecordError::NotObject),
            (b"\"text\"", RecordError::NotObject),
            (
                br#"{"name": "no key"}"#,
                RecordError::MissingKey("id".into()),
            ),
            (
                br#"{"id": null, "name": "x"}"#,
                RecordError::MissingKey("id".into()),
            ),
            (br#"{"nothing": 1}"#, RecordError::NoColumns),
        ];
        for (value, expected) in cases {
            assert_eq!(
                &m.map(&Record::new(1, b"", value)).unwrap_err(),
                expected,
                "{value:?}"
            );
        }
        assert!(matches!(
            map(&m, "", "{not json"),
            Err(RecordError::NotJson(_))
        ));
    }

    #[test]
    fn unknown_fields_can_be_dead_lettered() {
        let mut m = mapper(&["id"]);
        m.unknown_fields = UnknownFields::DeadLetter;
        assert_eq!(
            map(&m, "", r#"{"id": 1, "colour": "red"}"#),
            Err(RecordError::UnknownField("colour".into()))
        );
    }

    #[test]
    fn records_over_the_limit_are_too_large() {
        let m = mapper(&["id"]);
        let big = format!(r#"{{"id": 1, "name": "{}"}}"#, "x".repeat(1000));
        assert!(matches!(
            map(&m, "", &big),
            Err(RecordError::TooLarge { limit: 1000, .. })
        ));
        let r = Record::oversized(1, b"k", b"{\"id\": 1, \"na", 3_000_000);
        assert_eq!(
            (r.key(), r.value(), r.size()),
            (&b"k"[..], Some(&b"{\"id\": 1, \"na"[..]), 3_000_000)
        );
        assert_eq!(
            m.map(&r).unwrap_err().to_string(),
            "record of 3000000 bytes is larger than 1000 bytes and than any fetch; \
             the dead letter keeps the first 13 bytes of its value"
        );
        let r = Record::oversized_batch(1, 5_000_000);
        assert_eq!((r.key(), r.value(), r.size()), (&b""[..], None, 5_000_000));
        // The size is kept in the bytes, not in a field of every record.
        assert_eq!(std::mem::size_of::<Record>(), 32);
        assert_eq!(
            m.map(&r),
            Err(RecordError::BatchTooLargeToFetch { batch: 5_000_000 })
        );
    }

    #[test]
    fn tombstones_delete_by_key() {
        let m = mapper(&["id"]);
        assert_eq!(
            map(&m, "42", ""),
            Ok(RowOp::Delete {
                key_values: vec![Value::Int(42)]
            })
        );
        // A BIGINT key compares numbers: text that is not one deletes nothing.
        for text in ["abc", "41abc", "1.5", "true x"] {
            assert!(
                matches!(map(&m, text, ""), Err(RecordError::BadValue { .. })),
                "{text}"
            );
        }
        assert_eq!(
            map(&m, "\"42\"", ""),
            Ok(RowOp::Delete {
                key_values: vec![Value::Int(42)]
            })
        );
        // A text key compares text: the key as it was produced.
        let by_region = mapper(&["region"]);
        for (key, bound) in [
            ("123", "123"),
            ("0123", "0123"),
            ("1.50", "1.50"),
            ("\"x\"", "x"),
        ] {
            assert_eq!(
                map(&by_region, key, ""),
                Ok(RowOp::Delete {
                    key_values: vec![Value::Bytes(bound.as_bytes().to_vec())]
                }),
                "{key}"
            );
        }
        assert_eq!(
            map(&by_region, r#"{"REGION": 7}"#, ""),
            Ok(RowOp::Delete {
                key_values: vec![Value::Bytes(b"7".to_vec())]
            })
        );
        assert_eq!(
            map(&m, r#"{"id": 5}"#, ""),
            Ok(RowOp::Delete {
                key_values: vec![Value::Int(5)]
            })
        );
        assert!(matches!(
            map(&m, "", ""),
            Err(RecordError::BadTombstoneKey(_))
        ));

        let two = mapper(&["id", "region"]);
        assert_eq!(
            map(&two, r#"{"region": "eu", "id": 5}"#, ""),
            Ok(RowOp::Delete {
                key_values: vec![Value::Int(5), Value::Bytes(b"eu".to_vec())]
            })
        );
        assert!(matches!(
            map(&two, "5", ""),
            Err(RecordError::BadTombstoneKey(_))
        ));
        assert_eq!(
            map(&two, r#"{"id": 5}"#, ""),
            Err(RecordError::MissingKey("region".into()))
        );

        let mut keep = mapper(&["id"]);
        keep.delete_on_tombstone = false;
        assert_eq!(map(&keep, "42", ""), Ok(RowOp::Skip));
    }

    #[test]
    fn key_columns_the_value_lacks_come_from_the_record_key() {
        let m = mapper(&["id"]);
        let write = |columns: Vec<usize>, values: Vec<Value>| Ok(RowOp::Write { columns, values });
        let name = || Value::Bytes(b"x".to_vec());
        // A scalar key for the single key column, a JSON object, null in the value.
        assert_eq!(
            map(&m, "42", r#"{"name": "x"}"#),
            write(vec![0, 1], vec![Value::Int(42), name()])
        );
        assert_eq!(
            map(&m, r#"{"id": 43}"#, r#"{"name": "x"}"#),
            write(vec![0, 1], vec![Value::Int(43), name()])
        );
        assert_eq!(
            map(&m, "44", r#"{"id": null, "name": "x"}"#),
            write(vec![0, 1], vec![Value::Int(44), name()])
        );
        // The value wins: the key is not even read.
        assert_eq!(
            map(&m, "not a number", r#"{"id": 5, "name": "x"}"#),
            write(vec![0, 1], vec![Value::Int(5), name()])
        );
        assert_eq!(
            map(&m, "6", r#"{"id": 5, "name": "x"}"#),
            write(vec![0, 1], vec![Value::Int(5), name()])
        );
        // A key that cannot fill the column: named as the value's problem.
        assert_eq!(
            map(&m, "", r#"{"name": "x"}"#),
            Err(RecordError::MissingKey("id".into()))
        );
        assert_eq!(
            map(&m, r#"{"other": 1}"#, r#"{"name": "x"}"#),
            Err(RecordError::MissingKey("id".into()))
        );
        assert!(matches!(
            map(&m, "abc", r#"{"name": "x"}"#),
            Err(RecordError::BadValue { .. })
        ));
        // Two key columns: each from where it is; a scalar key cannot say which.
        let two = mapper(&["id", "region"]);
        assert_eq!(
            map(
                &two,
                r#"{"region": "eu", "id": 9}"#,
                r#"{"id": 5, "name": "x"}"#
            ),
            write(
                vec![0, 1, 4],
                vec![Value::Int(5), name(), Value::Bytes(b"eu".to_vec())]
            )
        );
        assert_eq!(
            map(&two, "eu", r#"{"id": 5, "name": "x"}"#),
            Err(RecordError::MissingKey("region".into()))
        );
    }

    #[test]
    fn a_version_column_is_needed_in_every_row() {
        let mut m = mapper(&["id"]);
        m.schema = m
            .schema
            .clone()
            .with_version_column(Some("AMOUNT"))
            .unwrap();
        assert_eq!(m.schema.version_column, Some(2));
        assert!(matches!(
            map(&m, "", r#"{"id": 1, "amount": 2}"#),
            Ok(RowOp::Write { .. })
        ));
        for value in [r#"{"id": 1}"#, r#"{"id": 1, "amount": null}"#] {
            assert_eq!(
                map(&m, "", value),
                Err(RecordError::BadValue {
                    column: "amount".into(),
                    reason: "the version column is missing or null (mysql.version_column)".into()
                }),
                "{value}"
            );
        }
        // Deletes need no version.
        assert!(matches!(map(&m, "1", ""), Ok(RowOp::Delete { .. })));
        let err = schema(&["id"])
            .with_version_column(Some("nope"))
            .unwrap_err();
        assert_eq!(
            err,
            "table orders has no column \"nope\" (mysql.version_column)"
        );
    }

    #[test]
    fn missing_key_column_in_schema_is_named() {
        let columns = vec![Column {
            name: "id".into(),
            column_type: "int(11)".into(),
        }];
        let err = TableSchema::new("t", columns, &["idd".to_string()]).unwrap_err();
        assert!(err.contains("\"idd\""), "{err}");
    }

    /// The simple mapping the one-pass reader must agree with: the object
    /// read into a map from names to JSON texts (a repeated name keeps its
    /// last value), its fields mapped in name order, each value converted
    /// as the column asks (`column_values.rs`, tested on its own).
    fn map_value_reference(m: &Mapper, value: &[u8]) -> Result<RowOp, RecordError> {
        let text = std::str::from_utf8(value).map_err(|e| RecordError::NotUtf8(e.valid_up_to()))?;
        let not_json = |e: serde_json::Error| RecordError::NotJson(e.to_string());
        if !text
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with('{')
        {
            serde_json::from_str::<Json>(text).map_err(not_json)?;
            return Err(RecordError::NotObject);
        }
        let fields: std::collections::BTreeMap<String, Box<RawValue>> =
            serde_json::from_str(text).map_err(not_json)?;
        let mut pairs: Vec<(usize, &RawValue)> = Vec::with_capacity(fields.len());
        for (name, v) in &fields {
            match m.schema.column_index(name) {
                Some(i) => pairs.push((i, v)),
                None if m.unknown_fields == UnknownFields::Ignore => {}
                None => return Err(RecordError::UnknownField(shorten(name))),
            }
        }
        if pairs.is_empty() {
            return Err(RecordError::NoColumns);
        }
        pairs.sort_by_key(|(i, _)| *i);
        pairs.dedup_by_key(|(i, _)| *i);
        let mut columns = Vec::new();
        let mut values = Vec::new();
        for (i, v) in pairs {
            values.push(m.schema.value(i, v.get(), TimeZone::UTC)?);
            columns.push(i);
        }
        for &k in &m.schema.key_columns {
            match columns.iter().position(|&c| c == k) {
                Some(pos) if values[pos] != Value::NULL => {}
                _ => return Err(RecordError::MissingKey(m.schema.columns[k].name.clone())),
            }
        }
        Ok(RowOp::Write { columns, values })
    }

    /// A random JSON text: objects whose names are columns in several
    /// spellings, repeated names, escaped names, unknown names and every kind
    /// of value; sometimes not an object, sometimes cut short or broken.
    fn random_json(rng: &mut impl rand::Rng) -> Vec<u8> {
        const NAMES: &[&str] = &[
            "id",
            "ID",
            "Id",
            "name",
            "NAME",
            "amount",
            "tags",
            "region",
            "Region",
            "colour",
            "other",
            "zz",
            "i\\u0064",
            "n\\u0061me",
            "\\u00e9t\\u00e9",
            "",
        ];
        fn scalar(rng: &mut impl rand::Rng) -> String {
            match rng.gen_range(0..12) {
                0 => "null".into(),
                1 => "true".into(),
                2 => "false".into(),
                3 => rng.gen_range(-1000i64..1000).to_string(),
                4 => u64::MAX.to_string(),
                5 => (i64::MAX as u64 + 1).to_string(),
                6 => format!("{}.{}", rng.gen_range(-99..99), rng.gen_range(0..1000)),
                7 => "1e3".into(),
                8 => "-0".into(),
                9 => "\"text \\\" \\n \\u00fc grüße €\"".into(),
                10 => format!("\"{}\"", rng.gen_range(0..100)),
                _ => "12.50".into(),
            }
        }
        fn value(rng: &mut impl rand::Rng, depth: u32) -> String {
            match rng.gen_range(0..10) {
                0 if depth < 3 => format!("[{}, {}]", value(rng, depth + 1), scalar(rng)),
                1 if depth < 3 => format!(
                    "{{\"b\": {}, \"a\": {}, \"b\": 1}}",
                    value(rng, depth + 1),
                    scalar(rng)
                ),
                _ => scalar(rng),
            }
        }
        let text = match rng.gen_range(0..20) {
            0 => value(rng, 0),
            1 => "[1, 2]".into(),
            _ => {
                let fields: Vec<String> = (0..rng.gen_range(0..9))
                    .map(|_| {
                        format!(
                            "\"{}\": {}",
                            NAMES[rng.gen_range(0..NAMES.len())],
                            value(rng, 0)
                        )
                    })
                    .collect();
                format!(" {{{}}} ", fields.join(", "))
            }
        };
        let mut bytes = text.into_bytes();
        match rng.gen_range(0..10) {
            // Possibly inside a character: then not UTF-8 either.
            0 if !bytes.is_empty() => bytes.truncate(rng.gen_range(0..bytes.len())),
            1 => bytes.extend_from_slice(b" x"),
            _ => {}
        }
        // Bytes that are not UTF-8, inside or outside a string.
        if rng.gen_range(0..8) == 0 {
            let at = rng.gen_range(0..=bytes.len());
            let bad: &[u8] =
                [&b"\xff"[..], b"\xc3", b"\xed\xa0\x80", b"\xe2\x82"][rng.gen_range(0..4)];
            bytes.splice(at..at, bad.iter().copied());
        }
        bytes
    }

    /// The eight-bytes-at-a-time scan ends a string where the byte loop
    /// does, whatever the bytes and wherever the quote, the backslash or the
    /// control character falls.
    #[test]
    fn plain_strings_end_where_the_byte_loop_ends_them() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let by_bytes = |bytes: &[u8]| -> Option<usize> {
            for (i, &b) in bytes.iter().enumerate().skip(1) {
                match b {
                    b'"' => return Some(i + 1),
                    b'\\' | 0..=0x1f => return None,
                    _ => {}
                }
            }
            None
        };
        const BYTES: &[u8] = b"\"\\\x00\x1f\x20\x21\x7f\x80\xa2\xffaZ9 ";
        for _ in 0..200_000 {
            let len = rng.gen_range(0..40);
            let mut text = vec![b'"'];
            text.extend((0..len).map(|_| {
                if rng.gen_range(0..6) == 0 {
                    BYTES[rng.gen_range(0..BYTES.len())]
                } else {
                    rng.gen_range(0x23..0x5b)
                }
            }));
            assert_eq!(plain_string_end(&text, 0), by_bytes(&text), "{text:?}");
        }
    }

    #[test]
    fn the_one_pass_reader_maps_exactly_as_the_map_did() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut mappers = Vec::new();
        for keys in [&["id"][..], &["id", "region"][..]] {
            for unknown in [UnknownFields::Ignore, UnknownFields::DeadLetter] {
                let mut m = mapper(keys);
                m.unknown_fields = unknown;
                m.max_record_bytes = 1 << 20;
                mappers.push(m);
            }
        }
        for _ in 0..20_000 {
            let text = random_json(&mut rng);
            for m in &mappers {
                let record = Record::new(1, b"", &text);
                let expected = if text.is_empty() {
                    m.map(&record)
                } else {
                    map_value_reference(m, &text)
                };
                assert_eq!(
                    m.map(&record),
                    expected,
                    "{}",
                    String::from_utf8_lossy(&text)
                );
            }
        }
    }

    /// What either reader found: the fields (column, name, JSON text) and
    /// the smallest unknown name.
    type Found = (Vec<(usize, String, String)>, Option<String>);

    fn found(fields: ObjectFields<'_>) -> Found {
        let pairs = fields
            .pairs
            .into_iter()
            .map(|(c, n, v)| (c, n.into_owned(), v.to_string()))
            .collect();
        (pairs, fields.smallest_unknown)
    }

    /// The fast reader's result, checked against serde_json's on the same
    /// text: `Some` when it read the text, `None` when it left it.
    fn fast_read(text: &str, keep_unknown_name: bool) -> Option<Found> {
        let schema = schema(&["id"]);
        let fast = read_flat_object(&schema, text, keep_unknown_name).map(found);
        if let Some(fast) = &fast {
            let by_serde = read_object_with_serde(&schema, text, keep_unknown_name)
                .unwrap_or_else(|e| {
                    panic!("the fast reader took {text:?}, serde_json refused: {e}")
                })
                .map(found);
            assert_eq!(Some(fast), by_serde.as_ref(), "{text}");
        }
        fast
    }

    #[test]
    fn the_fast_reader_takes_flat_plain_objects() {
        let pair = |c: usize, n: &str, v: &str| (c, n.to_string(), v.to_string());
        assert_eq!(
            fast_read(
                " {\"id\":1,\"NAME\" : \"x y\",\t\"amount\":-12.50e+3,\"tags\":null,\"region\":true}\r\n",
                false
            ),
            Some((
                vec![
                    pair(0, "id", "1"),
                    pair(1, "NAME", "\"x y\""),
                    pair(2, "amount", "-12.50e+3"),
                    pair(3, "tags", "null"),
                    pair(4, "region", "true"),
                ],
                None
            ))
        );
        // Repeated names, two spellings of a column, unknown names, big
        // numbers and text that is not ASCII: the same rules as serde_json's.
        for text in [
            r#"{}"#,
            r#"{"id": 1, "id": 2, "ID": 3, "Id": false}"#,
            r#"{"name": "b", "NAME": "a", "zz": 1, "colour": "grün", "": 0}"#,
            r#"{"id": 18446744073709551616, "amount": 1E400, "tags": -0.0e-0}"#,
            r#"{"id":0,"name":"€ ü 𝄞","region":"0123"}"#,
        ] {
            assert!(fast_read(text, true).is_some(), "{text}");
            assert!(fast_read(text, false).is_some(), "{text}");
        }
        assert_eq!(
            fast_read(r#"{"zz": 1, "colour": 2, "id": 3}"#, true).map(|f| f.1),
            Some(Some("colour".to_string()))
        );
    }

    #[test]
    fn the_fast_reader_leaves_the_rest_to_serde_json() {
        for text in [
            // Escapes and control characters, in names and in strings.
            r#"{"i\u0064": 1}"#,
            r#"{"name": "a\"b"}"#,
            r#"{"name": "a\\b"}"#,
            "{\"name\": \"a\tb\"}",
            "{\"na\x01me\": 1}",
            // Nested values, also in fields that are no column.
            r#"{"tags": [1, 2]}"#,
            r#"{"tags": {"a": 1}}"#,
            r#"{"other": {"a": 1}, "id": 1}"#,
            // Not JSON numbers.
            r#"{"id": 01}"#,
            r#"{"id": -}"#,
            r#"{"id": 1.}"#,
            r#"{"id": .5}"#,
            r#"{"id": 1e}"#,
            r#"{"id": 1e+}"#,
            r#"{"id": +1}"#,
            r#"{"id": 0x10}"#,
            r#"{"id": 1 2}"#,
            r#"{"id": NaN}"#,
            // Broken literals, syntax errors, a cut record.
            r#"{"id": tru}"#,
            r#"{"id": truex}"#,
            r#"{"id": nul}"#,
            r#"{"id": 1,}"#,
            r#"{"id" 1}"#,
            r#"{"id": 1 "name": "x"}"#,
            r#"{id: 1}"#,
            r#"{"id": 1} x"#,
            r#"{"id": 1}}"#,
            r#"{"id": 1"#,
            r#"{"id": "x"#,
            r#"{"#,
            "",
            "   ",
            // Not objects.
            r#"[1, 2]"#,
            r#""text""#,
            "1",
            "null",
        ] {
            assert_eq!(fast_read(text, true), None, "{text}");
            assert_eq!(fast_read(text, false), None, "{text}");
        }
    }

    #[test]
    fn the_fast_reader_agrees_with_serde_json_on_random_texts() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut taken = 0;
        for _ in 0..20_000 {
            let bytes = random_json(&mut rng);
            let Ok(text) = std::str::from_utf8(&bytes) else {
                continue;
            };
            for keep in [false, true] {
                taken += usize::from(fast_read(text, keep).is_some());
            }
        }
        // Enough of both kinds: the generator makes many flat objects.
        assert!(taken > 5_000, "the fast reader took only {taken} texts");
    }

    #[test]
    fn log_escaping() {
        assert_eq!(escape_for_log(b"ab\n\xff", 10), "ab\\x0a\\xff");
        assert_eq!(escape_for_log(b"abcdef", 3), "abc…");
    }
}
