//! Records to rows (DESIGN.md section 4).
//!
//! A `Record` is what the coordinator copied out of a fetch response. The
//! `Mapper` turns one into a `RowOp`: the columns it sets and their values as
//! bound parameters, a delete by key for a tombstone, or a skip. It never
//! builds SQL and never talks to the database; `mysql_sink.rs` does that.
//!
//! Decisions the design leaves open:
//! - The `kafka` crate reports a null value and an empty value alike (both as
//!   an empty slice), so an empty value is a tombstone.
//! - JSON field names match column names case-insensitively, as MySQL does.
//! - Integers are bound as integers; other numbers as their JSON text, so
//!   that a DECIMAL column receives the exact digits and not a binary float.
//! - A tombstone's key may be a JSON object (one field per key column), a JSON
//!   scalar, or plain text, when the table has a single key column.

use std::collections::HashMap;

use mysql::Value;
use serde_json::Value as Json;

use crate::config::{UnknownFields, WriteMode};
use crate::error::RecordError;

/// One Kafka record, owned: the worker keeps it after the fetch response is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub key: Vec<u8>,
    /// `None` for a tombstone (null or empty value).
    pub value: Option<Vec<u8>>,
    /// Set by the coordinator when the record could not be fetched whole
    /// because it is larger than any fetch it may make; it is then
    /// dead-lettered without its content.
    pub oversized: bool,
}

impl Record {
    pub fn new(offset: i64, key: &[u8], value: &[u8]) -> Record {
        Record {
            offset,
            key: key.to_vec(),
            value: if value.is_empty() { None } else { Some(value.to_vec()) },
            oversized: false,
        }
    }

    pub fn size(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Vec::len)
    }
}

/// A column of the target table, as `information_schema.COLUMNS` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub data_type: String,
}

/// The target table: its columns in table order and the key columns.
#[derive(Debug, Clone)]
pub struct TableSchema {
    pub table: String,
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the configured key columns, in config order.
    pub key_columns: Vec<usize>,
    by_name: HashMap<String, usize>,
}

impl TableSchema {
    /// Builds the schema; fails naming the first configured key column that is
    /// not a column of the table.
    pub fn new(table: &str, columns: Vec<Column>, key_columns: &[String]) -> Result<TableSchema, String> {
        let by_name: HashMap<String, usize> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.to_ascii_lowercase(), i))
            .collect();
        let mut keys = Vec::with_capacity(key_columns.len());
        for k in key_columns {
            match by_name.get(&k.to_ascii_lowercase()) {
                Some(&i) => keys.push(i),
                None => return Err(format!("table {table} has no column {k:?} (mysql.key_columns)")),
            }
        }
        Ok(TableSchema {
            table: table.to_string(),
            columns,
            key_columns: keys,
            by_name,
        })
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
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
    Write { columns: Vec<usize>, values: Vec<Value> },
    /// Delete the row whose key columns equal these values (schema key order).
    Delete { key_values: Vec<Value> },
    /// A tombstone while `delete_on_tombstone = false`.
    Skip,
}

/// Maps records to rows for one table and one configuration.
#[derive(Debug, Clone)]
pub struct Mapper {
    pub schema: TableSchema,
    pub write_mode: WriteMode,
    pub unknown_fields: UnknownFields,
    pub delete_on_tombstone: bool,
    pub max_record_bytes: usize,
}

impl Mapper {
    pub fn map(&self, record: &Record) -> Result<RowOp, RecordError> {
        if record.oversized {
            return Err(RecordError::TooLarge {
                size: record.size().max(self.max_record_bytes + 1),
                limit: self.max_record_bytes,
            });
        }
        if record.size() > self.max_record_bytes {
            return Err(RecordError::TooLarge {
                size: record.size(),
                limit: self.max_record_bytes,
            });
        }
        match &record.value {
            None => self.map_tombstone(&record.key),
            Some(value) => self.map_value(value),
        }
    }

    fn map_value(&self, value: &[u8]) -> Result<RowOp, RecordError> {
        if let Err(e) = std::str::from_utf8(value) {
            return Err(RecordError::NotUtf8(e.valid_up_to()));
        }
        let json: Json = serde_json::from_slice(value).map_err(|e| RecordError::NotJson(e.to_string()))?;
        let Json::Object(fields) = json else {
            return Err(RecordError::NotObject);
        };
        let mut pairs: Vec<(usize, Value)> = Vec::with_capacity(fields.len());
        for (name, v) in fields {
            match self.schema.column_index(&name) {
                Some(i) => pairs.push((i, json_to_value(v))),
                None if self.unknown_fields == UnknownFields::Ignore => {}
                None => return Err(RecordError::UnknownField(shorten(&name))),
            }
        }
        if pairs.is_empty() {
            return Err(RecordError::NoColumns);
        }
        pairs.sort_unstable_by_key(|(i, _)| *i);
        pairs.dedup_by_key(|(i, _)| *i);
        for &k in &self.schema.key_columns {
            let present = pairs
                .binary_search_by_key(&k, |(i, _)| *i)
                .map(|pos| pairs[pos].1 != Value::NULL)
                .unwrap_or(false);
            if !present {
                return Err(RecordError::MissingKey(self.schema.columns[k].name.clone()));
            }
        }
        let (columns, values) = pairs.into_iter().unzip();
        Ok(RowOp::Write { columns, values })
    }

    fn map_tombstone(&self, key: &[u8]) -> Result<RowOp, RecordError> {
        if !self.delete_on_tombstone {
            return Ok(RowOp::Skip);
        }
        let keys = &self.schema.key_columns;
        if key.is_empty() {
            return Err(RecordError::BadTombstoneKey("the record has no key".into()));
        }
        let text = std::str::from_utf8(key)
            .map_err(|e| RecordError::BadTombstoneKey(format!("key is not UTF-8 (byte {})", e.valid_up_to())))?;
        let parsed: Option<Json> = serde_json::from_str(text).ok();
        let key_values = match parsed {
            Some(Json::Object(mut fields)) => {
                let mut values = Vec::with_capacity(keys.len());
                for &k in keys {
                    let name = &self.schema.columns[k].name;
                    let found = fields
                        .iter()
                        .find(|(f, _)| f.eq_ignore_ascii_case(name))
                        .map(|(f, _)| f.clone());
                    match found.and_then(|f| fields.remove(&f)) {
                        Some(v) if !v.is_null() => values.push(json_to_value(v)),
                        _ => return Err(RecordError::MissingKey(name.clone())),
                    }
                }
                values
            }
            Some(Json::Array(_)) => {
                return Err(RecordError::BadTombstoneKey("key is a JSON array".into()));
            }
            Some(Json::Null) => return Err(RecordError::BadTombstoneKey("key is null".into())),
            Some(scalar) if keys.len() == 1 => vec![json_to_value(scalar)],
            None if keys.len() == 1 => vec![Value::Bytes(key.to_vec())],
            _ => {
                return Err(RecordError::BadTombstoneKey(format!(
                    "the table has {} key columns; the key must be a JSON object",
                    keys.len()
                )))
            }
        };
        Ok(RowOp::Delete { key_values })
    }
}

/// JSON to a bound parameter (see the module doc for numbers).
pub fn json_to_value(v: Json) -> Value {
    match v {
        Json::Null => Value::NULL,
        Json::Bool(b) => Value::Int(b as i64),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Bytes(n.to_string().into_bytes())
            }
        }
        Json::String(s) => Value::Bytes(s.into_bytes()),
        other @ (Json::Array(_) | Json::Object(_)) => Value::Bytes(other.to_string().into_bytes()),
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
        let columns = ["id", "name", "amount", "tags", "region"]
            .iter()
            .map(|n| Column { name: n.to_string(), data_type: "varchar".into() })
            .collect();
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        TableSchema::new("orders", columns, &keys).unwrap()
    }

    fn mapper(keys: &[&str]) -> Mapper {
        Mapper {
            schema: schema(keys),
            write_mode: WriteMode::Upsert,
            unknown_fields: UnknownFields::Ignore,
            delete_on_tombstone: true,
            max_record_bytes: 1000,
        }
    }

    fn map(m: &Mapper, key: &str, value: &str) -> Result<RowOp, RecordError> {
        m.map(&Record::new(7, key.as_bytes(), value.as_bytes()))
    }

    #[test]
    fn object_fields_become_columns_in_table_order() {
        let m = mapper(&["id"]);
        let op = map(&m, "", r#"{"amount": 12.50, "id": 3, "name": "x", "tags": [1,2], "other": 1}"#).unwrap();
        assert_eq!(
            op,
            RowOp::Write {
                columns: vec![0, 1, 2, 3],
                values: vec![
                    Value::Int(3),
                    Value::Bytes(b"x".to_vec()),
                    Value::Bytes(b"12.5".to_vec()),
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
            RowOp::Write { columns: vec![0, 1, 4], values: vec![Value::Int(1), Value::NULL, Value::Int(1)] }
        );
    }

    #[test]
    fn bad_values_are_record_errors() {
        let m = mapper(&["id"]);
        let cases: &[(&[u8], RecordError)] = &[
            (b"\xff\xfe{}", RecordError::NotUtf8(0)),
            (b"[1,2]", RecordError::NotObject),
            (b"\"text\"", RecordError::NotObject),
            (br#"{"name": "no key"}"#, RecordError::MissingKey("id".into())),
            (br#"{"id": null, "name": "x"}"#, RecordError::MissingKey("id".into())),
            (br#"{"nothing": 1}"#, RecordError::NoColumns),
        ];
        for (value, expected) in cases {
            assert_eq!(&m.map(&Record::new(1, b"", value)).unwrap_err(), expected, "{value:?}");
        }
        assert!(matches!(map(&m, "", "{not json"), Err(RecordError::NotJson(_))));
    }

    #[test]
    fn unknown_fields_can_be_dead_lettered() {
        let mut m = mapper(&["id"]);
        m.unknown_fields = UnknownFields::DeadLetter;
        assert_eq!(map(&m, "", r#"{"id": 1, "colour": "red"}"#), Err(RecordError::UnknownField("colour".into())));
    }

    #[test]
    fn records_over_the_limit_are_too_large() {
        let m = mapper(&["id"]);
        let big = format!(r#"{{"id": 1, "name": "{}"}}"#, "x".repeat(1000));
        assert!(matches!(map(&m, "", &big), Err(RecordError::TooLarge { limit: 1000, .. })));
        let mut r = Record::new(1, b"k", b"");
        r.oversized = true;
        assert!(matches!(m.map(&r), Err(RecordError::TooLarge { .. })));
    }

    #[test]
    fn tombstones_delete_by_key() {
        let m = mapper(&["id"]);
        assert_eq!(map(&m, "42", ""), Ok(RowOp::Delete { key_values: vec![Value::Int(42)] }));
        assert_eq!(map(&m, "abc", ""), Ok(RowOp::Delete { key_values: vec![Value::Bytes(b"abc".to_vec())] }));
        assert_eq!(map(&m, r#"{"id": 5}"#, ""), Ok(RowOp::Delete { key_values: vec![Value::Int(5)] }));
        assert!(matches!(map(&m, "", ""), Err(RecordError::BadTombstoneKey(_))));

        let two = mapper(&["id", "region"]);
        assert_eq!(
            map(&two, r#"{"region": "eu", "id": 5}"#, ""),
            Ok(RowOp::Delete { key_values: vec![Value::Int(5), Value::Bytes(b"eu".to_vec())] })
        );
        assert!(matches!(map(&two, "5", ""), Err(RecordError::BadTombstoneKey(_))));
        assert_eq!(map(&two, r#"{"id": 5}"#, ""), Err(RecordError::MissingKey("region".into())));

        let mut keep = mapper(&["id"]);
        keep.delete_on_tombstone = false;
        assert_eq!(map(&keep, "42", ""), Ok(RowOp::Skip));
    }

    #[test]
    fn missing_key_column_in_schema_is_named() {
        let columns = vec![Column { name: "id".into(), data_type: "int".into() }];
        let err = TableSchema::new("t", columns, &["idd".to_string()]).unwrap_err();
        assert!(err.contains("\"idd\""), "{err}");
    }

    #[test]
    fn log_escaping() {
        assert_eq!(escape_for_log(b"ab\n\xff", 10), "ab\\x0a\\xff");
        assert_eq!(escape_for_log(b"abcdef", 3), "abc…");
    }
}
