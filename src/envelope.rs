//! Kafka Connect and Debezium envelopes around the row (`mysql.record_format`).
//!
//! `record.rs` maps a plain JSON object; this module finds that object inside
//! an envelope, and reads the envelope's schema for the fields whose JSON
//! does not say what they are (logical types). It never builds SQL. See
//! README.md, "Records to rows", for each format with an example.
//!
//! - `connect_json`: Kafka Connect's JSON converter with schemas,
//!   `{"schema": {...}, "payload": {...}}`. A null payload is a tombstone.
//! - `debezium`: a change event, `{"before", "after", "op", "source", ...}`,
//!   bare or inside the same `schema`/`payload` envelope. `c`, `r` and `u`
//!   write `after`; `d` deletes the row whose key `before` holds (the record
//!   key fills in what it lacks); anything else is a bad record.
//! - Logical types, from the schema: `Decimal` (base64 two's-complement
//!   bytes, scale in the schema; bound exactly, as a JSON number would be),
//!   `Timestamp` (epoch ms, an instant: converted to `mysql.time_zone`),
//!   `Date` (days), `Time` (ms of the day), Debezium's `Timestamp`,
//!   `MicroTimestamp`, `NanoTimestamp` (the source's wall clock written as if
//!   it were UTC, so not converted), `MicroTime`, `NanoTime`,
//!   `VariableScaleDecimal`, and `bytes` (decoded, bound as binary). A time
//!   into a number column stays the number. Without a schema (Debezium's
//!   JSON converter with `schemas.enable=false`) fields are read as plain
//!   JSON.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use base64::Engine;
use mysql::Value;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::column_values::{number_text_value, ColumnKind};
use crate::error::RecordError;
use crate::record::{
    plain_object_fields, plain_string_end, scalar_end, shorten, skip_whitespace, Mapper, RowOp,
};
use crate::times::{self, Instant, TimeZone};

/// The fields of both envelopes, each as its JSON text; each format reads
/// the ones it knows. `schema` and `payload` are `Some("null")` when present
/// and null; the others are `None` when null.
#[derive(Debug, PartialEq)]
struct Envelope<'a> {
    schema: Option<&'a str>,
    payload: Option<&'a str>,
    before: Option<&'a str>,
    after: Option<&'a str>,
    op: Option<Cow<'a, str>>,
    /// Debezium's source position, for metadata columns (`metadata.rs`).
    source: Option<&'a str>,
}

/// `Envelope` as serde_json reads it.
#[derive(Deserialize)]
struct EnvelopeFields<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    schema: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    payload: Option<&'a RawValue>,
    #[serde(borrow, default)]
    before: Option<&'a RawValue>,
    #[serde(borrow, default)]
    after: Option<&'a RawValue>,
    #[serde(borrow, default)]
    op: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    source: Option<&'a RawValue>,
}

impl<'a> From<EnvelopeFields<'a>> for Envelope<'a> {
    fn from(fields: EnvelopeFields<'a>) -> Envelope<'a> {
        Envelope {
            schema: fields.schema.map(RawValue::get),
            payload: fields.payload.map(RawValue::get),
            before: fields.before.map(RawValue::get),
            after: fields.after.map(RawValue::get),
            op: fields.op,
            source: fields.source.map(RawValue::get),
        }
    }
}

fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

fn not_null(text: &&str) -> bool {
    *text != "null"
}

/// Maps a record value written by Kafka Connect's JSON converter.
pub fn map_connect_json(
    mapper: &Mapper,
    value: &[u8],
    record_key: &[u8],
) -> Result<RowOp, RecordError> {
    let top = read_envelope(value)?;
    let Some(payload) = top.payload else {
        return Err(bad(
            "no \"payload\": connect_json expects {\"schema\": ..., \"payload\": ...} \
             (the converter's schemas.enable=true)",
        ));
    };
    if !not_null(&payload) {
        return mapper.map_tombstone(record_key);
    }
    let types = top
        .schema
        .filter(not_null)
        .map(|schema| field_types(schema, None))
        .transpose()?;
    row(mapper, payload, types.as_deref(), record_key, "payload")
}

/// Maps a Debezium change event, bare or in Connect's envelope; with the
/// event's `source` when the mapper's metadata columns read it.
pub fn map_debezium<'a>(
    mapper: &Mapper,
    value: &'a [u8],
    record_key: &[u8],
) -> Result<(RowOp, Option<&'a str>), RecordError> {
    let top = read_envelope(value)?;
    let (event, schema) = match top.payload {
        // `{"schema": ..., "payload": null}`: a tombstone.
        Some(payload) if top.op.is_none() && !not_null(&payload) => return Ok((RowOp::Skip, None)),
        Some(payload) if top.op.is_none() => {
            (read_envelope_text(payload)?, top.schema.filter(not_null))
        }
        _ => (top, None),
    };
    let source = event.source.filter(|_| mapper.metadata.reads_source());
    let op = event
        .op
        .ok_or_else(|| bad("no \"op\" (expected a Debezium change event)"))?;
    let op = match op.as_ref() {
        "c" | "r" | "u" => {
            let after = event
                .after
                .ok_or_else(|| bad(&format!("op \"{op}\" has no \"after\"")))?;
            let types = schema.map(|s| field_types(s, Some("after"))).transpose()?;
            row(mapper, after, types.as_deref(), record_key, "after")
        }
        "d" if !mapper.delete_on_tombstone => Ok(RowOp::Skip),
        "d" => {
            let types = schema.map(|s| field_types(s, Some("before"))).transpose()?;
            let before = match event.before {
                Some(before) => Some(
                    mapper
                        .read_object(before)
                        .ok()
                        .flatten()
                        .ok_or_else(|| bad("\"before\" is not an object"))?,
                ),
                None => None,
            };
            mapper.delete_row(before, types.as_deref(), record_key)
        }
        "t" => Err(bad(
            "op \"t\" (truncate) is not applied: truncate the table by hand",
        )),
        other => Err(bad(&format!("unknown op {:?}", shorten(other)))),
    }?;
    Ok((op, source))
}

/// The envelope object, or why the value is not one.
fn read_envelope(value: &[u8]) -> Result<Envelope<'_>, RecordError> {
    let text = std::str::from_utf8(value).map_err(|e| RecordError::NotUtf8(e.valid_up_to()))?;
    read_envelope_text(text)
}

fn read_envelope_text(text: &str) -> Result<Envelope<'_>, RecordError> {
    parse_envelope(text).map_err(
        |e| match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => bad(&e.to_string()),
            Err(_) => RecordError::NotJson(e.to_string()),
        },
    )
}

/// The envelope object `text`, by the fast path when it can.
fn parse_envelope(text: &str) -> Result<Envelope<'_>, serde_json::Error> {
    match read_plain_envelope(text) {
        Some(envelope) => Ok(envelope),
        None => serde_json::from_str::<EnvelopeFields>(text).map(Envelope::from),
    }
}

/// How deep `read_plain_envelope` follows arrays and objects in a field.
const PLAIN_DEPTH: usize = 32;

/// The usual envelope read without serde_json: an object whose strings
/// (names and values, at any depth) hold no escape and no control
/// character, nested at most `PLAIN_DEPTH` deep. `None` for anything else,
/// and for a field the envelope reads given twice, or an `op` that is no
/// string: serde_json then reads the text and alone decides what it holds
/// and what is wrong with it. So this path accepts only texts that
/// serde_json accepts too, and gives the same fields for them (the property
/// test `the_plain_envelope_reader_agrees_with_serde_json`). Skipping
/// `source` and the other fields in serde_json was a fifth of the CPU of
/// reading Debezium events (`perf`, examples/read_path.rs).
fn read_plain_envelope(text: &str) -> Option<Envelope<'_>> {
    let mut envelope = Envelope {
        schema: None,
        payload: None,
        before: None,
        after: None,
        op: None,
        source: None,
    };
    let mut seen = [false; 6];
    let value_end = |bytes: &[u8], at| plain_value_end(bytes, at, PLAIN_DEPTH);
    plain_object_fields(text, value_end, |name, value| {
        let non_null = Some(value).filter(|v| *v != "null");
        let (i, slot, value) = match name {
            "schema" => (0, &mut envelope.schema, Some(value)),
            "payload" => (1, &mut envelope.payload, Some(value)),
            "before" => (2, &mut envelope.before, non_null),
            "after" => (3, &mut envelope.after, non_null),
            "source" => (4, &mut envelope.source, non_null),
            "op" => {
                if std::mem::replace(&mut seen[5], true) {
                    return None;
                }
                envelope.op = match non_null {
                    None => None,
                    Some(op) if op.starts_with('"') => Some(Cow::Borrowed(&op[1..op.len() - 1])),
                    Some(_) => return None,
                };
                return Some(());
            }
            _ => return Some(()),
        };
        if std::mem::replace(&mut seen[i], true) {
            return None;
        }
        *slot = value;
        Some(())
    })?;
    Some(envelope)
}

/// The end of the JSON value that starts at `at`, when its strings are
/// plain (see `read_plain_envelope`) and it nests at most `depth` deep.
fn plain_value_end(bytes: &[u8], at: usize, depth: usize) -> Option<usize> {
    let (object, close) = match *bytes.get(at)? {
        b'{' => (true, b'}'),
        b'[' => (false, b']'),
        _ => return scalar_end(bytes, at),
    };
    let depth = depth.checked_sub(1)?;
    let mut at = skip_whitespace(bytes, at + 1);
    if bytes.get(at) == Some(&close) {
        return Some(at + 1);
    }
    loop {
        if object {
            at = skip_whitespace(bytes, plain_string_end(bytes, at)?);
            if bytes.get(at) != Some(&b':') {
                return None;
            }
            at = skip_whitespace(bytes, at + 1);
        }
        at = skip_whitespace(bytes, plain_value_end(bytes, at, depth)?);
        match *bytes.get(at)? {
            b',' => at = skip_whitespace(bytes, at + 1),
            b if b == close => return Some(at + 1),
            _ => return None,
        }
    }
}

fn row(
    mapper: &Mapper,
    object: &str,
    types: Option<&FieldTypes>,
    record_key: &[u8],
    what: &str,
) -> Result<RowOp, RecordError> {
    match mapper.read_object(object) {
        Ok(Some(fields)) => mapper.write_row(fields, types, record_key),
        _ => Err(bad(&format!("{what:?} is not an object"))),
    }
}

fn bad(reason: &str) -> RecordError {
    RecordError::BadEnvelope(reason.to_string())
}

/// A record key in Connect's envelope: its payload's text and the logical
/// types of its fields; any other key as it is.
pub fn unwrap_key(text: &str) -> Result<(&str, Option<Rc<FieldTypes>>), RecordError> {
    if !text.trim_start().starts_with('{') {
        return Ok((text, None));
    }
    match parse_envelope(text) {
        Ok(Envelope {
            schema,
            payload: Some(payload),
            ..
        }) if schema.is_some() => {
            let types = schema
                .filter(not_null)
                .map(|schema| field_types(schema, None))
                .transpose()?;
            Ok((payload, types))
        }
        _ => Ok((text, None)),
    }
}

/// A Connect schema as JSON: only what says how to read a field.
#[derive(Deserialize)]
struct SchemaText<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    field: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    fields: Vec<SchemaText<'a>>,
    #[serde(borrow, default)]
    parameters: Option<Parameters<'a>>,
}

#[derive(Deserialize)]
struct Parameters<'a> {
    #[serde(borrow, default)]
    scale: Option<Cow<'a, str>>,
}

/// How to read a field whose JSON value does not say what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logical {
    /// base64, bound as binary.
    Bytes,
    /// base64 of the unscaled value, big-endian two's complement.
    Decimal { scale: u32 },
    /// Debezium's `{"scale": n, "value": base64}`.
    VariableScaleDecimal,
    /// An epoch count; `instant`: Connect's `Timestamp`, a point in time
    /// converted to `mysql.time_zone`; otherwise Debezium's, the source's
    /// wall clock counted as if it were UTC.
    Timestamp {
        units_per_second: i64,
        instant: bool,
    },
    /// Days since 1970-01-01.
    Date,
    /// Time of day.
    Time { units_per_second: i64 },
}

impl Logical {
    fn of(schema: &SchemaText) -> Result<Option<Logical>, RecordError> {
        let timestamp = |units_per_second, instant| Logical::Timestamp {
            units_per_second,
            instant,
        };
        let time = |units_per_second| Logical::Time { units_per_second };
        Ok(Some(match schema.name.as_deref() {
            Some("org.apache.kafka.connect.data.Decimal") => {
                let scale = schema
                    .parameters
                    .as_ref()
                    .and_then(|p| p.scale.as_deref())
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("a Decimal field's schema has no scale parameter"))?;
                Logical::Decimal { scale }
            }
            Some("io.debezium.data.VariableScaleDecimal") => Logical::VariableScaleDecimal,
            Some("org.apache.kafka.connect.data.Timestamp") => timestamp(1_000, true),
            Some("io.debezium.time.Timestamp") => timestamp(1_000, false),
            Some("io.debezium.time.MicroTimestamp") => timestamp(1_000_000, false),
            Some("io.debezium.time.NanoTimestamp") => timestamp(1_000_000_000, false),
            Some("org.apache.kafka.connect.data.Date" | "io.debezium.time.Date") => Logical::Date,
            Some("org.apache.kafka.connect.data.Time" | "io.debezium.time.Time") => time(1_000),
            Some("io.debezium.time.MicroTime") => time(1_000_000),
            Some("io.debezium.time.NanoTime") => time(1_000_000_000),
            _ if schema.kind.as_deref() == Some("bytes") => Logical::Bytes,
            _ => return Ok(None),
        }))
    }
}

/// The fields of a struct schema that have a logical type, by name.
#[derive(Debug)]
pub struct FieldTypes {
    fields: Vec<(String, Logical)>,
}

/// How many schemas each worker thread keeps read (`field_types`).
const SCHEMAS_KEPT: usize = 4;

/// The field types of a struct `schema` (Connect's value or key schema), or
/// of its struct field `field` (Debezium's `after` and `before`).
///
/// Every record of a topic carries its schema again, and reading it was
/// most of mapping a Debezium event with schemas (measured with instruction
/// counts), so each worker thread keeps the last few, by their text:
/// comparing a schema's text costs far less than reading it. A thread local
/// and not a lock in the shared `Mapper`: workers never wait for one another.
fn field_types(schema: &str, field: Option<&'static str>) -> Result<Rc<FieldTypes>, RecordError> {
    type Kept = Vec<(Box<str>, Option<&'static str>, Rc<FieldTypes>)>;
    thread_local! {
        static KEPT: RefCell<Kept> = const { RefCell::new(Vec::new()) };
    }
    let found = KEPT.with_borrow(|kept| {
        kept.iter()
            .find(|(t, f, _)| *f == field && **t == *schema)
            .map(|(_, _, types)| types.clone())
    });
    if let Some(types) = found {
        return Ok(types);
    }
    let parsed: SchemaText = parse_schema(schema)?;
    let fields = match field {
        None => parsed.fields,
        Some(name) => {
            parsed
                .fields
                .into_iter()
                .find(|f| f.field.as_deref() == Some(name))
                .ok_or_else(|| bad(&format!("the schema has no field {name:?}")))?
                .fields
        }
    };
    let mut typed = Vec::new();
    for field in fields {
        if let (Some(logical), Some(name)) = (Logical::of(&field)?, field.field) {
            typed.push((name.into_owned(), logical));
        }
    }
    let types = Rc::new(FieldTypes { fields: typed });
    KEPT.with_borrow_mut(|kept| {
        if kept.len() == SCHEMAS_KEPT {
            kept.remove(0);
        }
        kept.push((schema.into(), field, types.clone()));
    });
    Ok(types)
}

impl FieldTypes {
    pub fn logical(&self, name: &str) -> Option<Logical> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, logical)| *logical)
    }
}

fn parse_schema(schema: &str) -> Result<SchemaText<'_>, RecordError> {
    serde_json::from_str(schema).map_err(|e| bad(&format!("schema: {e}")))
}

/// A field of a logical type as the parameter bound for `column`.
pub fn logical_value(
    logical: Logical,
    mapper: &Mapper,
    column: usize,
    raw: &str,
) -> Result<Value, RecordError> {
    let schema = &mapper.schema;
    let text = raw;
    if text == "null" {
        return Ok(Value::NULL);
    }
    let target = &schema.columns[column];
    let kind = schema.kind(column);
    let numeric = matches!(
        kind,
        ColumnKind::Integer { .. } | ColumnKind::Decimal { .. } | ColumnKind::Float
    );
    let bad_value = |reason: String| RecordError::BadValue {
        column: target.name.clone(),
        reason,
    };
    let integer = || -> Result<i64, RecordError> {
        text.parse()
            .map_err(|_| bad_value(format!("{} is not an integer ({logical:?})", shorten(text))))
    };
    // A time's digits: the column's, or as many as the unit has (MySQL keeps 6).
    let precision = |units_per_second: i64| match kind {
        ColumnKind::DateTime { precision } | ColumnKind::Time { precision } => precision,
        _ => (units_per_second.ilog10() as u8).min(6),
    };
    let value = match logical {
        // A number column keeps the number: an epoch count is one too.
        Logical::Timestamp { .. } | Logical::Date | Logical::Time { .. } if numeric => {
            return schema.value(column, raw, mapper.time_zone)
        }
        Logical::Timestamp {
            units_per_second,
            instant,
        } => {
            let zone = if instant {
                mapper.time_zone
            } else {
                TimeZone::UTC
            };
            let at = Instant::from_units(integer()?, units_per_second);
            // A day of margin for the zone's offset.
            if !times::is_mysql_day(at.seconds.div_euclid(86_400) - 1)
                || !times::is_mysql_day(at.seconds.div_euclid(86_400) + 1)
            {
                return Err(bad_value(format!(
                    "{} is not in the years 0 to 9999",
                    shorten(text)
                )));
            }
            times::format_datetime(at, zone, precision(units_per_second))
        }
        Logical::Date => {
            let days = integer()?;
            if !times::is_mysql_day(days) {
                return Err(bad_value(format!(
                    "{} is not in the years 0 to 9999",
                    shorten(text)
                )));
            }
            times::format_date(days)
        }
        Logical::Time { units_per_second } => times::format_time(
            i128::from(integer()?) * i128::from(1_000_000_000 / units_per_second),
            precision(units_per_second),
        ),
        Logical::Bytes => return Ok(Value::Bytes(base64_field(text).map_err(bad_value)?)),
        // decimal.format=NUMERIC writes a JSON number.
        Logical::Decimal { .. } if !text.starts_with('"') => {
            return schema.value(column, raw, mapper.time_zone)
        }
        Logical::Decimal { scale } => {
            let digits = base64_field(text).map_err(&bad_value)?;
            let number = decimal_text(&digits, scale).map_err(bad_value)?;
            return number_text_value(kind, target, &number);
        }
        Logical::VariableScaleDecimal => {
            #[derive(Deserialize)]
            struct Variable<'a> {
                scale: u32,
                #[serde(borrow)]
                value: &'a RawValue,
            }
            let variable: Variable = serde_json::from_str(text)
                .map_err(|e| bad_value(format!("not a VariableScaleDecimal: {e}")))?;
            let digits = base64_field(variable.value.get()).map_err(&bad_value)?;
            let number = decimal_text(&digits, variable.scale).map_err(bad_value)?;
            return number_text_value(kind, target, &number);
        }
    };
    Ok(Value::Bytes(value.into_bytes()))
}

/// The bytes of a JSON string holding base64.
fn base64_field(text: &str) -> Result<Vec<u8>, String> {
    let inside = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or_else(|| format!("{} is not a base64 string", shorten(text)))?;
    base64::engine::general_purpose::STANDARD
        .decode(inside)
        .map_err(|e| format!("{} is not base64: {e}", shorten(inside)))
}

/// The unscaled value's bytes are at most this long: 65 digits (the widest
/// DECIMAL) need 28, and the conversion below is quadratic in the length.
const DECIMAL_BYTES_LIMIT: usize = 64;

/// A Connect Decimal's text: `bytes` the unscaled value (big-endian two's
/// complement), `scale` digits after the point: `[0x04, 0xd2]`, 2 is `12.34`.
pub fn decimal_text(bytes: &[u8], scale: u32) -> Result<String, String> {
    if bytes.is_empty() {
        return Err("a Decimal has no bytes".into());
    }
    if bytes.len() > DECIMAL_BYTES_LIMIT || scale > 1000 {
        return Err(format!(
            "a Decimal of {} bytes and scale {scale} is larger than any DECIMAL column",
            bytes.len()
        ));
    }
    let negative = bytes[0] & 0x80 != 0;
    // The magnitude: two's complement negated when negative.
    let mut magnitude = bytes.to_vec();
    if negative {
        for b in &mut magnitude {
            *b = !*b;
        }
        for b in magnitude.iter_mut().rev() {
            let (sum, carry) = b.overflowing_add(1);
            *b = sum;
            if !carry {
                break;
            }
        }
    }
    // Base 10^9 limbs, least significant first.
    let mut limbs: Vec<u32> = Vec::new();
    for &byte in &magnitude {
        let mut carry = u64::from(byte);
        for limb in &mut limbs {
            let v = u64::from(*limb) * 256 + carry;
            *limb = (v % 1_000_000_000) as u32;
            carry = v / 1_000_000_000;
        }
        while carry > 0 {
            limbs.push((carry % 1_000_000_000) as u32);
            carry /= 1_000_000_000;
        }
    }
    let mut digits = match limbs.split_last() {
        None => "0".to_string(),
        Some((most, rest)) => {
            let mut digits = most.to_string();
            for limb in rest.iter().rev() {
                digits.push_str(&format!("{limb:09}"));
            }
            digits
        }
    };
    let scale = scale as usize;
    if scale > 0 {
        if digits.len() <= scale {
            digits = format!("{}{digits}", "0".repeat(scale + 1 - digits.len()));
        }
        digits.insert(digits.len() - scale, '.');
    }
    if negative {
        digits.insert(0, '-');
    }
    Ok(digits)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{RecordFormat, UnknownFields};
    use crate::record::{Column, Record, TableSchema};

    /// `(label, record)` of a fixture written by scripts/fixtures.sh.
    fn fixture(text: &str) -> Vec<(&str, Record)> {
        text.lines()
            .map(|line| {
                let mut parts = line.splitn(3, '\t');
                let label = parts.next().unwrap();
                let key = parts.next().unwrap();
                let value = parts.next().unwrap();
                (label, Record::new(1, key.as_bytes(), value.as_bytes()))
            })
            .collect()
    }

    const CONNECT_JSON: &str = include_str!("../tests/fixtures/connect_json.tsv");
    const DEBEZIUM: &str = include_str!("../tests/fixtures/debezium.tsv");
    const DEBEZIUM_SCHEMALESS: &str = include_str!("../tests/fixtures/debezium_schemaless.tsv");

    fn mapper(format: RecordFormat, columns: &[(&str, &str)], zone: &str) -> Mapper {
        let columns = columns
            .iter()
            .map(|(name, column_type)| Column {
                name: name.to_string(),
                column_type: column_type.to_string(),
            })
            .collect();
        Mapper {
            schema: TableSchema::new("t", columns, &["id".to_string()]).unwrap(),
            unknown_fields: UnknownFields::Ignore,
            delete_on_tombstone: true,
            max_record_bytes: 1 << 20,
            record_format: format,
            time_zone: TimeZone::parse(zone).unwrap(),
            metadata: Default::default(),
        }
    }

    const CONNECT_COLUMNS: &[(&str, &str)] = &[
        ("id", "bigint(20)"),
        ("name", "varchar(64)"),
        ("amount", "decimal(30,2)"),
        ("created", "datetime(3)"),
        ("created_ts", "timestamp(3)"),
        ("day", "date"),
        ("at_time", "time(3)"),
        ("data", "varbinary(16)"),
        ("flag", "tinyint(1)"),
        ("ratio", "double"),
        ("small", "tinyint(4)"),
        ("epoch", "bigint(20)"),
    ];

    const DEBEZIUM_COLUMNS: &[(&str, &str)] = &[
        ("id", "int(11)"),
        ("first_name", "varchar(64)"),
        ("last_name", "varchar(64)"),
        ("email", "varchar(128)"),
        ("born", "date"),
        ("updated", "datetime(3)"),
        ("updated_us", "datetime(6)"),
        ("seen", "timestamp(6)"),
        ("wake", "time(6)"),
        ("balance", "decimal(20,2)"),
    ];

    fn text(t: &str) -> Value {
        Value::Bytes(t.as_bytes().to_vec())
    }

    /// The row a write sets, by column name.
    pub(crate) fn row(m: &Mapper, op: RowOp) -> Vec<(String, Value)> {
        match op {
            RowOp::Write { columns, values } => columns
                .into_iter()
                .map(|c| m.schema.columns[c].name.clone())
                .zip(values)
                .collect(),
            other => panic!("not a write: {other:?}"),
        }
    }

    fn named(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn connect_json_fixtures_map_with_their_logical_types() {
        let m = mapper(RecordFormat::ConnectJson, CONNECT_COLUMNS, "+02:00");
        let records = fixture(CONNECT_JSON);
        let mapped: Vec<_> = records.iter().map(|(l, r)| (*l, m.map(r))).collect();
        assert_eq!(mapped[0].0, "every_type");
        assert_eq!(
            row(&m, mapped[0].1.clone().unwrap()),
            named(&[
                ("id", Value::Int(1)),
                ("name", text("every type")),
                ("amount", text("1234567890123456789012345678.91")),
                // An instant, in the session's zone (+02:00).
                ("created", text("2025-01-01 12:00:00.123")),
                ("created_ts", text("2025-01-01 12:00:00.123")),
                ("day", text("2025-01-01")),
                ("at_time", text("10:30:00.123")),
                ("data", Value::Bytes(vec![0, 1, 0xff, b'A'])),
                ("flag", Value::Int(1)),
                ("ratio", text("0.1")),
                ("small", Value::Int(-7)),
                // A Timestamp into a number column stays the number.
                ("epoch", Value::Int(1_735_725_600_123)),
            ])
        );
        assert_eq!(
            row(&m, mapped[1].1.clone().unwrap())[..5],
            named(&[
                ("id", Value::Int(2)),
                ("name", Value::NULL),
                ("amount", text("-0.05")),
                ("created", text("1970-01-01 01:59:59.999")),
                ("created_ts", Value::NULL),
            ])[..]
        );
        assert_eq!(
            row(&m, mapped[2].1.clone().unwrap())[..3],
            named(&[
                ("id", Value::Int(3)),
                ("name", Value::NULL),
                ("amount", text("-99.99")),
            ])[..]
        );
        // The value has no id: the record key (a Connect struct) gives it.
        assert_eq!(
            row(&m, mapped[3].1.clone().unwrap()),
            named(&[
                ("id", Value::Int(4)),
                ("name", text("keyed")),
                ("amount", text("4.00")),
            ])
        );
        assert_eq!(
            mapped[4],
            (
                "tombstone_of_2",
                Ok(RowOp::Delete {
                    key_values: vec![Value::Int(2)]
                })
            )
        );
        assert_eq!(
            mapped[5],
            (
                "decimal_too_wide",
                Err(RecordError::BadValue {
                    column: "amount".into(),
                    reason: "123456789012345678901234567890.00 has 30 digits before the \
                             decimal point, decimal(30,2) holds 28"
                        .into()
                })
            )
        );
    }

    fn debezium_row(id: i64, email: &str, seen: &str, balance: &str) -> Vec<(String, Value)> {
        named(&[
            ("id", Value::Int(id)),
            ("first_name", text("Anne")),
            ("last_name", text("Kretchmar")),
            ("email", text(email)),
            ("born", text("2025-01-01")),
            // Debezium's Timestamp is the source's wall clock: not converted.
            ("updated", text("2025-01-01 10:00:00.123")),
            ("updated_us", text("2025-01-01 10:00:00.123456")),
            // A ZonedTimestamp is an instant: converted to +02:00.
            ("seen", text(seen)),
            ("wake", text("10:30:00.123456")),
            ("balance", text(balance)),
        ])
    }

    #[test]
    fn debezium_fixtures_with_and_without_schemas() {
        for (fixture_text, schemas) in [(DEBEZIUM, true), (DEBEZIUM_SCHEMALESS, false)] {
            let m = mapper(RecordFormat::Debezium, DEBEZIUM_COLUMNS, "+02:00");
            let mapped: Vec<_> = fixture(fixture_text)
                .into_iter()
                .map(|(l, r)| (l, m.map(&r)))
                .collect();
            let labels: Vec<&str> = mapped.iter().map(|(l, _)| *l).collect();
            assert_eq!(
                labels,
                [
                    "snapshot_1001",
                    "create_1002",
                    "create_1003",
                    "update_1002",
                    "delete_1003",
                    "tombstone_1003",
                    "delete_1001_by_record_key",
                    "tombstone_1001",
                    "truncate"
                ]
            );
            let first_seen = "2025-01-01 12:00:00.123456";
            let write = |i: usize| row(&m, mapped[i].1.clone().unwrap());
            if schemas {
                assert_eq!(
                    write(0),
                    debezium_row(1001, "annek1001@noanswer.org", first_seen, "-1234.56")
                );
                assert_eq!(
                    write(3),
                    // `2025-01-01T12:00:00+02:00`, written with the column's digits.
                    debezium_row(
                        1002,
                        "anne@example.com",
                        "2025-01-01 12:00:00.000000",
                        "-1234.56"
                    )
                );
            } else {
                // Without a schema the numbers stay numbers: only the
                // ZonedTimestamp's text says it is a time.
                let plain = write(0);
                assert_eq!(plain[4], ("born".into(), text("20089")));
                assert_eq!(plain[7], ("seen".into(), text(first_seen)));
                assert_eq!(plain[9], ("balance".into(), text("-1234.56")));
            }
            let delete = |id| {
                Ok(RowOp::Delete {
                    key_values: vec![Value::Int(id)],
                })
            };
            assert_eq!(mapped[4].1, delete(1003));
            assert_eq!(mapped[5].1, Ok(RowOp::Skip));
            assert_eq!(mapped[6].1, delete(1001));
            assert_eq!(mapped[7].1, Ok(RowOp::Skip));
            assert_eq!(
                mapped[8].1,
                Err(RecordError::BadEnvelope(
                    "op \"t\" (truncate) is not applied: truncate the table by hand".into()
                ))
            );
        }
    }

    #[test]
    fn each_schema_is_read_by_its_own_text() {
        let m = mapper(RecordFormat::ConnectJson, CONNECT_COLUMNS, "UTC");
        // The same field and bytes (1234) with a scale of 2, then 3, then 2,
        // into a text column: the schemas kept must never be taken for one
        // another.
        let value = |scale: u32| {
            format!(
                r#"{{"schema": {{"type": "struct", "fields": [{{"type": "bytes", "name":
                "org.apache.kafka.connect.data.Decimal", "parameters": {{"scale": "{scale}"}},
                "field": "name"}}]}}, "payload": {{"id": 1, "name": "BNI="}}}}"#
            )
        };
        let amount = |scale: u32| match m.map(&Record::new(1, b"", value(scale).as_bytes())) {
            Ok(RowOp::Write { values, .. }) => values[1].clone(),
            other => panic!("{other:?}"),
        };
        // More schemas than a thread keeps, and back.
        for scale in [2, 3, 2, 4, 5, 6, 7, 2] {
            let expected = decimal_text(&[0x04, 0xd2], scale).unwrap();
            assert_eq!(amount(scale), text(&expected), "scale {scale}");
        }
    }

    /// Fixtures cut, spliced and with their numbers blown up: whatever the
    /// bytes, mapping gives a row, a delete, a skip or a record error, and
    /// never panics.
    /// The envelope reader without serde_json gives what serde_json gives,
    /// for every text it takes, and takes the usual events.
    #[test]
    fn the_plain_envelope_reader_agrees_with_serde_json() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        const NAMES: &[&str] = &[
            "schema",
            "payload",
            "before",
            "after",
            "op",
            "source",
            "ts_ms",
            "transaction",
            "a\\u0066ter",
            "",
        ];
        fn value(rng: &mut rand::rngs::StdRng, depth: u32) -> String {
            match rng.gen_range(0..16) {
                0 => "null".into(),
                1 => "true".into(),
                2 => rng.gen_range(-1000i64..1000).to_string(),
                3 => "1.5e3".into(),
                4 => "\"c\"".into(),
                5 => "\"u\"".into(),
                6 => "\"text \\\" \\n \\u00fc\"".into(),
                7 => "\"plain text, grüße €\"".into(),
                8 => "01".into(),
                9 => "[".repeat(40) + &"]".repeat(40),
                10 | 11 if depth < 3 => format!(
                    "{{\"id\": {}, \"name\" : {}, \"id\": 2}}",
                    value(rng, depth + 1),
                    value(rng, depth + 1)
                ),
                12 if depth < 3 => {
                    format!("[{}, {} ]", value(rng, depth + 1), value(rng, depth + 1))
                }
                13 => "{}".into(),
                14 => "[]".into(),
                _ => "\"r\"".into(),
            }
        }
        let mut plain = 0;
        for _ in 0..30_000 {
            let fields: Vec<String> = (0..rng.gen_range(0..8))
                .map(|_| {
                    let name = NAMES[rng.gen_range(0..NAMES.len())];
                    format!("\"{name}\":{}", value(&mut rng, 0))
                })
                .collect();
            let mut text = format!(" {{ {} }}\n", fields.join(" , "));
            match rng.gen_range(0..8) {
                0 => {
                    let mut cut = rng.gen_range(0..text.len());
                    while !text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    text.truncate(cut);
                }
                1 => text.push_str(" x"),
                2 => text = text.replacen(':', "", 1),
                _ => {}
            }
            let Some(envelope) = read_plain_envelope(&text) else {
                continue;
            };
            plain += 1;
            let by_serde = serde_json::from_str::<EnvelopeFields>(&text)
                .map(Envelope::from)
                .unwrap_or_else(|e| panic!("{text}: taken without serde_json, refused by it: {e}"));
            assert_eq!(envelope, by_serde, "{text}");
        }
        assert!(plain > 5_000, "only {plain} texts took the plain path");
        for (_, record) in fixture(DEBEZIUM_SCHEMALESS) {
            let text = std::str::from_utf8(record.value().unwrap_or(b"null")).unwrap();
            assert!(
                !text.starts_with('{') || read_plain_envelope(text).is_some(),
                "{text}"
            );
        }
    }

    #[test]
    fn broken_envelopes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mappers = [
            mapper(RecordFormat::ConnectJson, CONNECT_COLUMNS, "+14:00"),
            mapper(RecordFormat::Debezium, DEBEZIUM_COLUMNS, "-14:00"),
        ];
        let records: Vec<Record> = [CONNECT_JSON, DEBEZIUM, DEBEZIUM_SCHEMALESS]
            .iter()
            .flat_map(|f| fixture(f).into_iter().map(|(_, r)| r))
            .collect();
        let blow_ups = [
            "9223372036854775807",
            "-9223372036854775808",
            "99999999999999999999",
            "-1",
            "\"AAAA\"",
            "\"/////////////////////////////////////w==\"",
            "null",
            "{}",
            "\"2025-02-30T10:00:00Z\"",
        ];
        for _ in 0..3_000 {
            let record = &records[rng.gen_range(0..records.len())];
            let mut value = record.value().unwrap_or(b"").to_vec();
            match rng.gen_range(0..4) {
                0 if !value.is_empty() => value.truncate(rng.gen_range(0..value.len())),
                1 if !value.is_empty() => {
                    let at = rng.gen_range(0..value.len());
                    value[at] = rng.gen();
                }
                _ => {
                    // A number or a string replaced by one of the blow-ups.
                    let text = String::from_utf8_lossy(&value).into_owned();
                    // In the payload: the schema's values are mostly names.
                    let payload = text.find("\"payload\"").unwrap_or(0);
                    let starts: Vec<usize> = text[payload..]
                        .match_indices(':')
                        .map(|(i, _)| payload + i + 1)
                        .collect();
                    if let Some(&at) = starts.get(rng.gen_range(0..starts.len().max(1))) {
                        let end = text[at..].find([',', '}']).map_or(text.len(), |e| at + e);
                        let with = blow_ups[rng.gen_range(0..blow_ups.len())];
                        value = format!("{}{with}{}", &text[..at], &text[end..]).into_bytes();
                    }
                }
            }
            for m in &mappers {
                let _ = m.map(&Record::new(1, record.key(), &value));
            }
        }
    }

    #[test]
    fn invalid_envelopes_say_why() {
        let dbz = mapper(RecordFormat::Debezium, DEBEZIUM_COLUMNS, "UTC");
        let connect = mapper(RecordFormat::ConnectJson, CONNECT_COLUMNS, "UTC");
        let envelope = |m: &Mapper, key: &str, value: &str| {
            m.map(&Record::new(1, key.as_bytes(), value.as_bytes()))
        };
        let bad = |reason: &str| Err(RecordError::BadEnvelope(reason.into()));
        assert_eq!(
            envelope(&dbz, "", r#"{"after": {"id": 1}}"#),
            bad("no \"op\" (expected a Debezium change event)")
        );
        assert_eq!(
            envelope(&dbz, "", r#"{"op": "c", "after": null}"#),
            bad("op \"c\" has no \"after\"")
        );
        assert_eq!(
            envelope(&dbz, "", r#"{"op": "x", "after": {"id": 1}}"#),
            bad("unknown op \"x\"")
        );
        assert_eq!(
            envelope(&dbz, "", r#"{"op": "u", "after": [1]}"#),
            bad("\"after\" is not an object")
        );
        assert!(matches!(
            envelope(&dbz, "", r#"[1]"#),
            Err(RecordError::BadEnvelope(_))
        ));
        assert!(matches!(
            envelope(&dbz, "", r#"{"op": 1}"#),
            Err(RecordError::BadEnvelope(_))
        ));
        assert!(matches!(
            envelope(&dbz, "", "{nope"),
            Err(RecordError::NotJson(_))
        ));
        // A delete with no before and no record key cannot name a row.
        assert_eq!(
            envelope(&dbz, "", r#"{"op": "d", "before": null}"#),
            Err(RecordError::MissingKey("id".into()))
        );
        assert_eq!(
            envelope(&connect, "", r#"{"id": 1}"#),
            bad(
                "no \"payload\": connect_json expects {\"schema\": ..., \"payload\": ...} \
                 (the converter's schemas.enable=true)"
            )
        );
        assert_eq!(
            envelope(&connect, "", r#"{"schema": null, "payload": 5}"#),
            bad("\"payload\" is not an object")
        );
        assert_eq!(
            envelope(
                &connect,
                "",
                r#"{"schema": {"type": "struct", "fields": [{"type": "bytes", "name":
                "org.apache.kafka.connect.data.Decimal", "field": "amount"}]},
                "payload": {"id": 1, "amount": "AQ=="}}"#
            ),
            bad("a Decimal field's schema has no scale parameter")
        );
        assert!(matches!(
            envelope(
                &connect,
                "",
                r#"{"schema": {"type": "struct", "fields": [{"type": "bytes", "field": "data"}]},
                "payload": {"id": 1, "data": "not base64!"}}"#
            ),
            Err(RecordError::BadValue { .. })
        ));
        // Schemaless Connect JSON (schema null) maps the payload as plain JSON.
        assert_eq!(
            envelope(&connect, "", r#"{"schema": null, "payload": {"id": 7}}"#),
            Ok(RowOp::Write {
                columns: vec![0],
                values: vec![Value::Int(7)]
            })
        );
    }

    #[test]
    fn decimals_from_twos_complement_bytes() {
        let cases: &[(&[u8], u32, &str)] = &[
            (&[0x04, 0xd2], 2, "12.34"),
            (&[0xfb, 0x2e], 2, "-12.34"),
            (&[0x00], 0, "0"),
            (&[0x00], 3, "0.000"),
            (&[0x01], 3, "0.001"),
            (&[0xff], 3, "-0.001"),
            (&[0x80], 0, "-128"),
            (
                &[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                0,
                "9223372036854775807",
            ),
            (&[0x80, 0, 0, 0, 0, 0, 0, 0], 0, "-9223372036854775808"),
            // 2^64, past any i64: 18446744073709551616.
            (&[0x01, 0, 0, 0, 0, 0, 0, 0, 0], 2, "184467440737095516.16"),
        ];
        for (bytes, scale, expected) in cases {
            assert_eq!(
                decimal_text(bytes, *scale).as_deref(),
                Ok(*expected),
                "{bytes:?}"
            );
        }
        assert!(decimal_text(&[], 0).is_err());
        assert!(decimal_text(&[1; 65], 0).is_err());
    }

    #[test]
    fn decimals_agree_with_i128_on_random_values() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..20_000 {
            let v: i128 = rng.gen::<i128>() >> rng.gen_range(0..127);
            let len = rng.gen_range(16..=20);
            // Sign-extended to `len` bytes, as Java's BigInteger may write more.
            let mut bytes = vec![if v < 0 { 0xff } else { 0 }; len - 16];
            bytes.extend_from_slice(&v.to_be_bytes());
            let scale = rng.gen_range(0..45);
            let text = decimal_text(&bytes, scale).unwrap();
            let plain: String = text.chars().filter(|&c| c != '.').collect();
            assert_eq!(plain.parse::<i128>().unwrap(), v, "{text}");
            let fraction = text.split_once('.').map_or(0, |(_, f)| f.len());
            assert_eq!(fraction, scale as usize, "{text}");
        }
    }
}
