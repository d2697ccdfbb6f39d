//! A field's JSON value as the bound parameter of its column, exactly.
//!
//! The mapper (`record.rs`) hands over each field's JSON text as the record
//! holds it; this module decides what is bound, by the column's type as
//! `information_schema.COLUMNS.COLUMN_TYPE` gives it. It never rounds:
//!
//! - A number never passes through a binary float. An integer column gets
//!   an integer (a number with a fraction, or one out of the column's range,
//!   is an error naming the column); a DECIMAL column gets the number's
//!   digits as text, once they are known to fit its precision and scale;
//!   every other column gets the number's text as the record holds it
//!   (`1.50`, `-0`, `1e3`), but for an integer into an ENUM or SET, which
//!   MySQL reads as a member's index.
//! - Objects and arrays are bound as the record's JSON text, unchanged, so
//!   that a JSON column keeps the producer's numbers.
//! - A string is bound as its text; one that holds a number goes to an
//!   integer or DECIMAL column through the same checks as a number.
//! - A DATETIME or TIMESTAMP column gets an RFC 3339 time with `Z` or an
//!   offset converted to `mysql.time_zone`, cut to the column's fractional
//!   digits (`times.rs`); any other text is left to the server.
//! - A key column is stricter, because the key also selects the rows a
//!   tombstone deletes, in a `WHERE` that converts without any check: an
//!   integer or DECIMAL key must be a number, a text key is always bound
//!   as text (so `123` never matches `'0123'`).
//!
//! Why not leave it to the server: strict SQL mode refuses text that is not
//! a number, but it rounds `'1.5'` into a BIGINT to 2 and `'1.555'` into a
//! DECIMAL(10,2) to 1.56 with a note, not an error (MariaDB 10.11); and a
//! `WHERE` compares a DECIMAL with text as binary floats (see
//! `comparison_placeholder`; `tests/it/values.rs` shows each case).

use std::borrow::Cow;

use mysql::Value;
use serde_json::value::RawValue;

use crate::error::RecordError;
use crate::record::{shorten, Column};
use crate::times::{self, TimeZone};

/// What a column holds, as far as binding a value is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// TINYINT to BIGINT and BIT: the integers it holds.
    Integer { min: i128, max: i128 },
    /// DECIMAL(precision, scale).
    Decimal { precision: u32, scale: u32 },
    /// FLOAT and DOUBLE: the server converts the number's text.
    Float,
    /// DATETIME and TIMESTAMP with their fractional digits: text, and a
    /// time with a zone is converted to the session's.
    DateTime { precision: u8 },
    /// TIME with its fractional digits: text.
    Time { precision: u8 },
    /// ENUM and SET: text, but an integer is a member's index, as MySQL
    /// reads an integer for them (so it is bound as an integer).
    Enum,
    /// Everything else: text, JSON, dates, enums, blobs.
    Text,
}

impl ColumnKind {
    /// Reads a `COLUMN_TYPE` such as `bigint(20) unsigned`, `decimal(20,2)`
    /// or `varchar(64)`.
    pub fn of(column_type: &str) -> ColumnKind {
        let column_type = column_type.trim().to_ascii_lowercase();
        let base = column_type.split(['(', ' ']).next().unwrap_or("");
        let arguments: Vec<u32> = column_type
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(inside, _)| {
                inside
                    .split(',')
                    .filter_map(|n| n.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let bits = match base {
            "tinyint" => 8,
            "smallint" => 16,
            "mediumint" => 24,
            "int" | "integer" => 32,
            "bigint" => 64,
            "bit" => {
                let bits = arguments.first().copied().unwrap_or(1).clamp(1, 64);
                return ColumnKind::Integer {
                    min: 0,
                    max: (1i128 << bits) - 1,
                };
            }
            // MySQL's default precision is 10 and scale 0 (DECIMAL = DECIMAL(10,0)).
            "decimal" | "numeric" | "dec" | "fixed" => {
                return ColumnKind::Decimal {
                    precision: arguments.first().copied().unwrap_or(10),
                    scale: arguments.get(1).copied().unwrap_or(0),
                }
            }
            "float" | "double" | "real" => return ColumnKind::Float,
            "enum" | "set" => return ColumnKind::Enum,
            "datetime" | "timestamp" => {
                return ColumnKind::DateTime {
                    precision: arguments.first().map_or(0, |&p| p.min(6) as u8),
                }
            }
            "time" => {
                return ColumnKind::Time {
                    precision: arguments.first().map_or(0, |&p| p.min(6) as u8),
                }
            }
            _ => return ColumnKind::Text,
        };
        if column_type.contains("unsigned") {
            ColumnKind::Integer {
                min: 0,
                max: (1i128 << bits) - 1,
            }
        } else {
            ColumnKind::Integer {
                min: -(1i128 << (bits - 1)),
                max: (1i128 << (bits - 1)) - 1,
            }
        }
    }

    /// Columns that take a string as its text.
    fn holds_text(self) -> bool {
        matches!(
            self,
            ColumnKind::Text
                | ColumnKind::Enum
                | ColumnKind::DateTime { .. }
                | ColumnKind::Time { .. }
        )
    }

    /// The placeholder of this column in a `WHERE` that compares it: a
    /// DECIMAL compared with text is compared as a binary float by MySQL,
    /// so the text is cast to the column's own type first
    /// (<https://dev.mysql.com/doc/refman/8.0/en/type-conversion.html>).
    pub fn comparison_placeholder(self) -> Cow<'static, str> {
        match self {
            ColumnKind::Decimal { precision, scale } => {
                Cow::Owned(format!("CAST(? AS DECIMAL({precision},{scale}))"))
            }
            _ => Cow::Borrowed("?"),
        }
    }
}

/// A field's JSON text (`text`, one whole JSON value as the record holds
/// it, already checked by the reader) as the parameter bound for `column`.
/// `key` is set for the configured key columns; `zone` is `mysql.time_zone`.
pub fn field_value(
    kind: ColumnKind,
    column: &Column,
    text: &str,
    key: bool,
    zone: TimeZone,
) -> Result<Value, RecordError> {
    match text.as_bytes().first() {
        Some(b'n') => Ok(Value::NULL),
        Some(b't') => Ok(boolean(kind, key, true)),
        Some(b'f') => Ok(boolean(kind, key, false)),
        Some(b'"') => string_value(kind, column, json_string(text)?, key, zone),
        Some(b'{' | b'[') if key => Err(bad_value(
            column,
            format!(
                "a JSON object or array cannot be a key ({})",
                column.column_type
            ),
        )),
        Some(b'{' | b'[') => Ok(Value::Bytes(text.as_bytes().to_vec())),
        _ => number_value(kind, column, text),
    }
}

/// A tombstone's key given as one scalar (not a JSON object), for the
/// table's single key column: `key` is the record key's text, `raw` the
/// same text read as JSON when it is JSON.
pub fn scalar_key_value(
    kind: ColumnKind,
    column: &Column,
    key: &str,
    raw: Option<&RawValue>,
    zone: TimeZone,
) -> Result<Value, RecordError> {
    match raw {
        Some(raw) if raw.get().starts_with('"') => {
            string_value(kind, column, json_string(raw.get())?, true, zone)
        }
        // A time compares as the row's time was written: converted.
        _ if matches!(kind, ColumnKind::DateTime { .. }) => {
            string_value(kind, column, Cow::Borrowed(key), true, zone)
        }
        // A text column compares text: the key as it was produced, `true`
        // and `1.50` included.
        _ if kind.holds_text() => Ok(Value::Bytes(key.as_bytes().to_vec())),
        Some(raw) => field_value(kind, column, raw.get(), true, zone),
        None => string_value(kind, column, Cow::Borrowed(key), true, zone),
    }
}

/// A number's text that did not come as a JSON number (a Connect Decimal,
/// written out from its bytes) as the parameter bound for `column`,
/// checked as a JSON number would be.
pub fn number_text_value(
    kind: ColumnKind,
    column: &Column,
    text: &str,
) -> Result<Value, RecordError> {
    number_value(kind, column, text)
}

fn bad_value(column: &Column, reason: String) -> RecordError {
    RecordError::BadValue {
        column: column.name.clone(),
        reason,
    }
}

/// `true` and `false` are 1 and 0, as MySQL's BOOLEAN is; a text key column
/// gets the text the server would have stored for them.
fn boolean(kind: ColumnKind, key: bool, value: bool) -> Value {
    match (kind, key) {
        (ColumnKind::Text, true) => Value::Bytes(if value { b"1" } else { b"0" }.to_vec()),
        _ => Value::Int(value as i64),
    }
}

/// The text of a JSON string (`text` with its quotes), borrowed unless it
/// holds escapes.
fn json_string(text: &str) -> Result<Cow<'_, str>, RecordError> {
    let inside = &text[1..text.len() - 1];
    // A plain loop: `contains` goes through memchr, slower on short strings
    // (measured).
    if inside.bytes().all(|b| b != b'\\') {
        return Ok(Cow::Borrowed(inside));
    }
    // serde_json checked the escapes' syntax when it read past the string,
    // but not what they stand for (a lone surrogate half): decoding says.
    serde_json::from_str::<String>(text)
        .map(Cow::Owned)
        .map_err(|e| RecordError::NotJson(e.to_string()))
}

fn string_value(
    kind: ColumnKind,
    column: &Column,
    text: Cow<'_, str>,
    key: bool,
    zone: TimeZone,
) -> Result<Value, RecordError> {
    if let ColumnKind::DateTime { precision } = kind {
        // Only a time with a zone: the plain form is the server's to read.
        if let Some(instant) = times::parse_rfc3339(&text) {
            return Ok(Value::Bytes(
                times::format_datetime(instant, zone, precision).into_bytes(),
            ));
        }
    }
    if kind.holds_text() || (kind == ColumnKind::Float && !key) {
        return Ok(Value::Bytes(text.into_owned().into_bytes()));
    }
    let trimmed = text.trim_ascii();
    match Number::parse(trimmed) {
        Some(number) => number.bind(kind, column, trimmed),
        // Not a number at all: the server refuses it in strict mode (error
        // 1366), in an INSERT. A key also goes into a WHERE, where the
        // server would turn `41abc` into 41.
        None if key => Err(bad_value(
            column,
            format!(
                "key {:?} is not a number ({})",
                shorten(&text),
                column.column_type
            ),
        )),
        None => Ok(Value::Bytes(text.into_owned().into_bytes())),
    }
}

fn number_value(kind: ColumnKind, column: &Column, text: &str) -> Result<Value, RecordError> {
    match kind {
        ColumnKind::Text
        | ColumnKind::Float
        | ColumnKind::DateTime { .. }
        | ColumnKind::Time { .. } => return Ok(Value::Bytes(text.as_bytes().to_vec())),
        // The usual case, short: an integer of up to 18 digits.
        ColumnKind::Integer { min, max } => {
            if let Some(v) = small_integer(text) {
                if (min..=max).contains(&i128::from(v)) {
                    return Ok(Value::Int(v));
                }
            }
        }
        ColumnKind::Enum => {
            return Ok(small_integer(text)
                .map_or_else(|| Value::Bytes(text.as_bytes().to_vec()), Value::Int))
        }
        ColumnKind::Decimal { .. } => {}
    }
    match Number::parse(text) {
        Some(number) => number.bind(kind, column, text),
        // serde_json read it as a number, which this grammar includes.
        None => Err(RecordError::NotJson(format!(
            "{:?} is not a number",
            shorten(text)
        ))),
    }
}

/// `-?[0-9]{1,18}`, which always fits an i64.
fn small_integer(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut value: i64 = 0;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(b - b'0');
    }
    Some(if negative { -value } else { value })
}

/// Exponents are clamped to this: no column holds a number that needs more,
/// and the digit counts below stay far from overflow.
const EXPONENT_LIMIT: i64 = 1_000_000_000;

/// A decimal number's parts, borrowed from its text (the JSON grammar, with
/// leading zeros allowed): `-12.50e3` is negative, "12", "50", exponent 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Number<'a> {
    negative: bool,
    integer: &'a [u8],
    fraction: &'a [u8],
    exponent: i64,
    has_exponent: bool,
}

/// Where a number's non-zero digits lie around its decimal point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Extent {
    /// Digits before the point, from the first non-zero one (0 for 0.5).
    integer_digits: i64,
    /// Digits after the point, up to the last non-zero one (0 for 1.50).
    fraction_digits: i64,
}

impl<'a> Number<'a> {
    pub fn parse(text: &'a str) -> Option<Number<'a>> {
        let bytes = text.as_bytes();
        let digits = |from: usize| {
            from + bytes[from..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count()
        };
        let negative = bytes.first() == Some(&b'-');
        let start = negative as usize;
        let mut at = digits(start);
        let integer = &bytes[start..at];
        if integer.is_empty() {
            return None;
        }
        let mut fraction: &[u8] = &[];
        if bytes.get(at) == Some(&b'.') {
            let end = digits(at + 1);
            fraction = &bytes[at + 1..end];
            if fraction.is_empty() {
                return None;
            }
            at = end;
        }
        let mut exponent: i64 = 0;
        let has_exponent = matches!(bytes.get(at), Some(b'e' | b'E'));
        if has_exponent {
            at += 1;
            let exponent_negative = bytes.get(at) == Some(&b'-');
            if matches!(bytes.get(at), Some(b'-' | b'+')) {
                at += 1;
            }
            let end = digits(at);
            if end == at {
                return None;
            }
            for &d in &bytes[at..end] {
                exponent = (exponent * 10 + i64::from(d - b'0')).min(EXPONENT_LIMIT);
            }
            if exponent_negative {
                exponent = -exponent;
            }
            at = end;
        }
        (at == bytes.len()).then_some(Number {
            negative,
            integer,
            fraction,
            exponent,
            has_exponent,
        })
    }

    /// The digit at `i` of the integer digits followed by the fraction digits.
    fn digit(&self, i: usize) -> u8 {
        let d = match self.integer.get(i) {
            Some(&d) => d,
            None => self.fraction[i - self.integer.len()],
        };
        d - b'0'
    }

    /// None for zero.
    fn extent(&self) -> Option<Extent> {
        let all = self.integer.iter().chain(self.fraction);
        let first = all.clone().position(|&d| d != b'0')? as i64;
        let last = (self.integer.len() + self.fraction.len()) as i64
            - 1
            - all.rev().position(|&d| d != b'0')? as i64;
        let point = self.integer.len() as i64 + self.exponent;
        Some(Extent {
            integer_digits: (point - first).max(0),
            fraction_digits: (last + 1 - point).max(0),
        })
    }

    /// The number's value when it is an integer that fits an i128.
    fn integer_value(&self) -> Result<i128, IntegerProblem> {
        let Some(extent) = self.extent() else {
            return Ok(0);
        };
        if extent.fraction_digits > 0 {
            return Err(IntegerProblem::Fraction);
        }
        // An i128 holds every number of 38 digits.
        if extent.integer_digits > 38 {
            return Err(IntegerProblem::Range);
        }
        let count = self.integer.len() + self.fraction.len();
        let point = self.integer.len() as i64 + self.exponent;
        let first = point - extent.integer_digits;
        let mut value: i128 = 0;
        for i in first..point {
            let digit = if (i as usize) < count {
                self.digit(i as usize)
            } else {
                0
            };
            value = value * 10 + i128::from(digit);
        }
        Ok(if self.negative { -value } else { value })
    }

    /// Binds the number (`text` is how it was written) to an integer or
    /// DECIMAL column, or says why it does not fit.
    fn bind(&self, kind: ColumnKind, column: &Column, text: &str) -> Result<Value, RecordError> {
        let ty = &column.column_type;
        let shown = || shorten(text);
        match kind {
            ColumnKind::Integer { min, max } => match self.integer_value() {
                Ok(v) if (min..=max).contains(&v) => Ok(i64::try_from(v)
                    .map(Value::Int)
                    .unwrap_or_else(|_| Value::UInt(v as u64))),
                Ok(_) | Err(IntegerProblem::Range) => Err(bad_value(
                    column,
                    format!("{} is out of range for {ty}", shown()),
                )),
                Err(IntegerProblem::Fraction) => Err(bad_value(
                    column,
                    format!("{} is not an integer ({ty})", shown()),
                )),
            },
            ColumnKind::Decimal { precision, scale } => {
                let extent = self.extent().unwrap_or(Extent {
                    integer_digits: 0,
                    fraction_digits: 0,
                });
                if extent.fraction_digits > i64::from(scale) {
                    return Err(bad_value(
                        column,
                        format!(
                            "{} has {} decimal places, {ty} keeps {scale}",
                            shown(),
                            extent.fraction_digits
                        ),
                    ));
                }
                let integer_room = i64::from(precision.saturating_sub(scale));
                if extent.integer_digits > integer_room {
                    return Err(bad_value(
                        column,
                        format!(
                            "{} has {} digits before the decimal point, {ty} holds {integer_room}",
                            shown(),
                            extent.integer_digits
                        ),
                    ));
                }
                Ok(Value::Bytes(if self.has_exponent {
                    self.plain_text(extent).into_bytes()
                } else {
                    text.as_bytes().to_vec()
                }))
            }
            // Only integer and DECIMAL columns are checked; the server
            // reads a float from the text as it would from JSON.
            ColumnKind::Float
            | ColumnKind::Text
            | ColumnKind::Enum
            | ColumnKind::DateTime { .. }
            | ColumnKind::Time { .. } => Ok(Value::Bytes(text.as_bytes().to_vec())),
        }
    }

    /// The number without exponent, its significant digits only: `1.5e2`
    /// is `150`, `-12e-3` is `-0.012`. Short, because `extent` fits a
    /// DECIMAL column (65 digits at most).
    fn plain_text(&self, extent: Extent) -> String {
        let count = (self.integer.len() + self.fraction.len()) as i64;
        let point = self.integer.len() as i64 + self.exponent;
        let digit = |i: i64| {
            if (0..count).contains(&i) {
                char::from(b'0' + self.digit(i as usize))
            } else {
                '0'
            }
        };
        let mut out = String::new();
        if self.negative && self.extent().is_some() {
            out.push('-');
        }
        if extent.integer_digits == 0 {
            out.push('0');
        }
        out.extend((point - extent.integer_digits..point).map(digit));
        if extent.fraction_digits > 0 {
            out.push('.');
            out.extend((point..point + extent.fraction_digits).map(digit));
        }
        out
    }
}

enum IntegerProblem {
    Fraction,
    Range,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(column_type: &str) -> Column {
        Column {
            name: "c".into(),
            column_type: column_type.into(),
        }
    }

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
    }

    /// The value bound for the JSON `text` in a column of `column_type`.
    fn bound(column_type: &str, text: &str, key: bool) -> Result<Value, RecordError> {
        let c = column(column_type);
        field_value(
            ColumnKind::of(column_type),
            &c,
            raw(text).get(),
            key,
            TimeZone::UTC,
        )
    }

    fn bytes(text: &str) -> Result<Value, RecordError> {
        Ok(Value::Bytes(text.as_bytes().to_vec()))
    }

    fn reason(result: Result<Value, RecordError>) -> String {
        match result {
            Err(RecordError::BadValue { column, reason }) => {
                assert_eq!(column, "c");
                reason
            }
            other => panic!("not a bad value: {other:?}"),
        }
    }

    #[test]
    fn column_types_are_read() {
        let int = |min: i128, max: i128| ColumnKind::Integer { min, max };
        let cases = [
            ("tinyint(1)", int(-128, 127)),
            ("tinyint(3) unsigned", int(0, 255)),
            ("int(11)", int(-(1 << 31), (1 << 31) - 1)),
            ("bigint(20)", int(i64::MIN.into(), i64::MAX.into())),
            ("bigint unsigned", int(0, u64::MAX.into())),
            ("bit(1)", int(0, 1)),
            (
                "decimal(20,2)",
                ColumnKind::Decimal {
                    precision: 20,
                    scale: 2,
                },
            ),
            (
                "DECIMAL(65,30) UNSIGNED",
                ColumnKind::Decimal {
                    precision: 65,
                    scale: 30,
                },
            ),
            ("double", ColumnKind::Float),
            ("float(7,3)", ColumnKind::Float),
            ("varchar(64)", ColumnKind::Text),
            ("longtext", ColumnKind::Text),
            ("json", ColumnKind::Text),
            ("year(4)", ColumnKind::Text),
            ("date", ColumnKind::Text),
            ("datetime(3)", ColumnKind::DateTime { precision: 3 }),
            ("timestamp", ColumnKind::DateTime { precision: 0 }),
            ("time(6)", ColumnKind::Time { precision: 6 }),
            ("enum('a','b')", ColumnKind::Enum),
            ("set('a','b')", ColumnKind::Enum),
        ];
        for (column_type, kind) in cases {
            assert_eq!(ColumnKind::of(column_type), kind, "{column_type}");
        }
    }

    #[test]
    fn numbers_keep_their_exact_text() {
        for text in ["1.50", "-0", "1e3", "12345678901234567.89", "1E-400"] {
            for ty in ["varchar(64)", "longtext", "double", "date"] {
                assert_eq!(bound(ty, text, false), bytes(text), "{text} into {ty}");
            }
        }
        assert_eq!(
            bound("decimal(20,2)", "12345678901234567.89", false),
            bytes("12345678901234567.89")
        );
        assert_eq!(
            bound("decimal(20,2)", "99999999999999999.99", false),
            bytes("99999999999999999.99")
        );
        assert_eq!(
            bound("decimal(30,0)", "123456789012345678901234567890", false),
            bytes("123456789012345678901234567890")
        );
        assert_eq!(bound("decimal(10,2)", "1.50", false), bytes("1.50"));
        // An ENUM reads an integer as a member's index.
        assert_eq!(bound("enum('a','b')", "2", false), Ok(Value::Int(2)));
        assert_eq!(bound("enum('1.5')", "1.5", false), bytes("1.5"));
        assert_eq!(bound("enum('a','b')", r#""2""#, false), bytes("2"));
        assert_eq!(bound("decimal(10,2)", "1.5e2", false), bytes("150"));
        assert_eq!(bound("decimal(10,3)", "-12e-3", false), bytes("-0.012"));
        assert_eq!(bound("decimal(10,2)", "-0e5", false), bytes("0"));
        assert_eq!(bound("decimal(10,2)", "0.000e-999", false), bytes("0"));
    }

    #[test]
    fn integers_are_exact_or_errors() {
        assert_eq!(bound("bigint(20)", "-0", false), Ok(Value::Int(0)));
        assert_eq!(bound("bigint(20)", "1e3", false), Ok(Value::Int(1000)));
        assert_eq!(bound("bigint(20)", "2.50e1", false), Ok(Value::Int(25)));
        assert_eq!(
            bound("bigint(20)", "-9223372036854775808", false),
            Ok(Value::Int(i64::MIN))
        );
        assert_eq!(
            bound("bigint(20) unsigned", "18446744073709551615", false),
            Ok(Value::UInt(u64::MAX))
        );
        assert_eq!(
            reason(bound("bigint(20)", "1.5", false)),
            "1.5 is not an integer (bigint(20))"
        );
        assert_eq!(
            reason(bound("int(11)", "1e-1", false)),
            "1e-1 is not an integer (int(11))"
        );
        assert_eq!(
            reason(bound("bigint(20)", "9223372036854775808", false)),
            "9223372036854775808 is out of range for bigint(20)"
        );
        assert_eq!(
            reason(bound("bigint(20) unsigned", "-1", false)),
            "-1 is out of range for bigint(20) unsigned"
        );
        assert_eq!(
            reason(bound("tinyint(4)", "128", false)),
            "128 is out of range for tinyint(4)"
        );
        assert_eq!(
            reason(bound("bigint(20)", "1e999999999999", false)),
            "1e999999999999 is out of range for bigint(20)"
        );
        assert!(bound("bigint(20)", "1e-999999999999", false).is_err());
        assert_eq!(
            bound("bigint(20)", "0e999999999999", false),
            Ok(Value::Int(0))
        );
    }

    #[test]
    fn decimals_that_do_not_fit_are_errors() {
        assert_eq!(
            reason(bound("decimal(20,2)", "0.123", false)),
            "0.123 has 3 decimal places, decimal(20,2) keeps 2"
        );
        assert_eq!(
            reason(bound("decimal(20,18)", "0.1234567890123456789", false)),
            "0.1234567890123456789 has 19 decimal places, decimal(20,18) keeps 18"
        );
        assert_eq!(
            reason(bound("decimal(5,2)", "1000", false)),
            "1000 has 4 digits before the decimal point, decimal(5,2) holds 3"
        );
        assert_eq!(
            reason(bound("decimal(5,2)", "1e3", false)),
            "1e3 has 4 digits before the decimal point, decimal(5,2) holds 3"
        );
        assert_eq!(bound("decimal(5,2)", "999.99", false), bytes("999.99"));
        assert_eq!(
            bound("decimal(5,2)", r#""000999.9900""#, false),
            bytes("000999.9900")
        );
    }

    #[test]
    fn strings_holding_numbers_are_checked_like_numbers() {
        assert_eq!(bound("bigint(20)", r#"" 42 ""#, false), Ok(Value::Int(42)));
        assert_eq!(
            reason(bound("bigint(20)", r#""1.5""#, false)),
            "1.5 is not an integer (bigint(20))"
        );
        assert_eq!(
            reason(bound("decimal(10,2)", r#""1.555""#, false)),
            "1.555 has 3 decimal places, decimal(10,2) keeps 2"
        );
        // Not a number at all: left to the server's strict mode.
        assert_eq!(bound("bigint(20)", r#""abc""#, false), bytes("abc"));
        assert_eq!(bound("double", r#""1.5x""#, false), bytes("1.5x"));
        assert_eq!(bound("varchar(9)", r#""0123""#, false), bytes("0123"));
        assert_eq!(bound("varchar(9)", r#""a\"b""#, false), bytes("a\"b"));
        assert!(matches!(
            bound("varchar(9)", r#""\ud800""#, false),
            Err(RecordError::NotJson(_))
        ));
    }

    #[test]
    fn objects_and_arrays_keep_their_text() {
        let text = r#"{"a": 1.50, "b": [1e3, -0], "a": 2}"#;
        assert_eq!(bound("longtext", text, false), bytes(text));
        assert_eq!(bound("json", "[ 1.0 ]", false), bytes("[ 1.0 ]"));
        assert_eq!(
            reason(bound("varchar(9)", "[1]", true)),
            "a JSON object or array cannot be a key (varchar(9))"
        );
    }

    #[test]
    fn keys_are_bound_as_their_column_compares() {
        assert_eq!(bound("varchar(9)", "123", true), bytes("123"));
        assert_eq!(bound("varchar(9)", "true", true), bytes("1"));
        assert_eq!(bound("bigint(20)", r#""123""#, true), Ok(Value::Int(123)));
        assert_eq!(bound("bigint(20)", "true", true), Ok(Value::Int(1)));
        assert_eq!(
            reason(bound("bigint(20)", r#""41abc""#, true)),
            r#"key "41abc" is not a number (bigint(20))"#
        );
        assert_eq!(
            reason(bound("double", r#""abc""#, true)),
            r#"key "abc" is not a number (double)"#
        );
        assert_eq!(bound("double", r#""1.5""#, true), bytes("1.5"));

        let scalar = |ty: &str, key: &str| {
            let json: Option<&RawValue> = serde_json::from_str(key).ok();
            scalar_key_value(ColumnKind::of(ty), &column(ty), key, json, TimeZone::UTC)
        };
        assert_eq!(scalar("varchar(9)", "123"), bytes("123"));
        assert_eq!(scalar("varchar(9)", "1.50"), bytes("1.50"));
        assert_eq!(scalar("varchar(9)", "true"), bytes("true"));
        assert_eq!(scalar("varchar(9)", "0123"), bytes("0123"));
        assert_eq!(scalar("varchar(9)", r#""abc""#), bytes("abc"));
        assert_eq!(scalar("bigint(20)", "123"), Ok(Value::Int(123)));
        assert_eq!(scalar("bigint(20)", "0123"), Ok(Value::Int(123)));
        assert_eq!(scalar("bigint(20)", r#""7""#), Ok(Value::Int(7)));
        for bad in ["abc", "41abc", "", "1.5", "12 3"] {
            assert!(
                matches!(scalar("bigint(20)", bad), Err(RecordError::BadValue { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            scalar("decimal(20,2)", "12345678901234567.89"),
            bytes("12345678901234567.89")
        );
    }

    #[test]
    fn zoned_times_convert_to_the_session_zone() {
        let at = |ty: &str, text: &str, zone: &str| {
            let zone = TimeZone::parse(zone).unwrap();
            field_value(
                ColumnKind::of(ty),
                &column(ty),
                raw(text).get(),
                false,
                zone,
            )
        };
        let z = r#""2025-01-01T10:00:00.123456Z""#;
        assert_eq!(at("datetime", z, "UTC"), bytes("2025-01-01 10:00:00"));
        assert_eq!(
            at("datetime(3)", z, "UTC"),
            bytes("2025-01-01 10:00:00.123")
        );
        assert_eq!(
            at("timestamp(6)", z, "+02:00"),
            bytes("2025-01-01 12:00:00.123456")
        );
        assert_eq!(
            at("datetime(2)", r#""2025-01-01T00:30:00.5-01:00""#, "+00:00"),
            bytes("2025-01-01 01:30:00.50")
        );
        // Plain times, other columns and non-times are the server's to read.
        for (ty, text) in [
            ("datetime(3)", r#""2025-01-01 10:00:00.123""#),
            ("datetime", r#""2025-01-01T10:00:00""#),
            ("datetime", r#""tomorrow""#),
            ("varchar(64)", z),
            ("date", z),
        ] {
            let expected = serde_json::from_str::<String>(text).unwrap();
            assert_eq!(at(ty, text, "+02:00"), bytes(&expected), "{ty} {text}");
        }
        // A key compares as it was written: converted too.
        let key = |text: &str| {
            let json: Option<&RawValue> = serde_json::from_str(text).ok();
            let ty = "datetime(3)";
            scalar_key_value(ColumnKind::of(ty), &column(ty), text, json, TimeZone::UTC)
        };
        assert_eq!(
            key("2025-01-01T12:00:00+02:00"),
            bytes("2025-01-01 10:00:00.000")
        );
        assert_eq!(
            key(r#""2025-01-01T12:00:00+02:00""#),
            bytes("2025-01-01 10:00:00.000")
        );
    }

    #[test]
    fn the_number_grammar() {
        for good in ["0", "-0", "007", "1.5", "1e5", "1E+5", "1.0e-5", "-12.50e3"] {
            assert!(Number::parse(good).is_some(), "{good}");
        }
        for bad in [
            "", "-", "+1", ".5", "1.", "1e", "1e+", "1.5.5", "0x10", "1 ", " 1", "1_000", "inf",
            "NaN", "١",
        ] {
            assert!(Number::parse(bad).is_none(), "{bad:?}");
        }
    }

    /// The reference: the number written out in full (bounded exponents
    /// only), then its digits counted on the text.
    fn reference(kind: ColumnKind, text: &str) -> Result<String, &'static str> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match rest.split_once(['e', 'E']) {
            Some((m, e)) => (m, e.parse::<i64>().unwrap()),
            None => (rest, 0),
        };
        let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let digits = format!("{integer}{fraction}");
        let point = integer.len() as i64 + exponent;
        // Pad with zeros on both sides so that the point is inside.
        let left = (-point).max(0) as usize;
        let right = (point - digits.len() as i64).max(0) as usize;
        let padded = format!("{}{digits}{}", "0".repeat(left), "0".repeat(right));
        let point = (point + left as i64) as usize;
        let int_part = padded[..point].trim_start_matches('0');
        let frac_part = padded[point..].trim_end_matches('0');
        let zero = int_part.is_empty() && frac_part.is_empty();
        let sign = if negative && !zero { "-" } else { "" };
        match kind {
            ColumnKind::Integer { min, max } => {
                if !frac_part.is_empty() {
                    return Err("fraction");
                }
                let value: i128 = format!("{sign}0{int_part}").parse().map_err(|_| "range")?;
                if value < min || value > max {
                    return Err("range");
                }
                Ok(value.to_string())
            }
            ColumnKind::Decimal { precision, scale } => {
                if frac_part.len() > scale as usize {
                    return Err("scale");
                }
                if int_part.len() > (precision - scale) as usize {
                    return Err("precision");
                }
                let int_part = if int_part.is_empty() { "0" } else { int_part };
                let frac = if frac_part.is_empty() {
                    String::new()
                } else {
                    format!(".{frac_part}")
                };
                Ok(format!("{sign}{int_part}{frac}"))
            }
            _ => unreachable!(),
        }
    }

    /// The same outcome in the reference's terms: the value written plainly.
    fn outcome(kind: ColumnKind, text: &str) -> Result<String, &'static str> {
        let c = column("t");
        // A number with leading zeros is not JSON: then it comes as a string.
        let json =
            RawValue::from_string(text.to_string()).unwrap_or_else(|_| raw(&format!("\"{text}\"")));
        match field_value(kind, &c, json.get(), false, TimeZone::UTC) {
            Ok(Value::Int(v)) => Ok(v.to_string()),
            Ok(Value::UInt(v)) => Ok(v.to_string()),
            Ok(Value::Bytes(b)) => {
                // The record's own text is bound when it has no exponent:
                // compare its value, written plainly by the reference.
                let text = String::from_utf8(b).unwrap();
                reference(
                    ColumnKind::Decimal {
                        precision: 200,
                        scale: 100,
                    },
                    &text,
                )
            }
            Ok(other) => panic!("{other:?}"),
            Err(RecordError::BadValue { reason, .. }) => {
                Err(if reason.contains("not an integer") {
                    "fraction"
                } else if reason.contains("out of range") {
                    "range"
                } else if reason.contains("decimal places") {
                    "scale"
                } else {
                    "precision"
                })
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn numbers_bind_as_the_reference_says() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let kinds = [
            ColumnKind::of("bigint(20)"),
            ColumnKind::of("bigint(20) unsigned"),
            ColumnKind::of("tinyint(4)"),
            ColumnKind::of("decimal(20,2)"),
            ColumnKind::of("decimal(30,0)"),
            ColumnKind::of("decimal(65,30)"),
            ColumnKind::of("decimal(5,5)"),
        ];
        let digits = |rng: &mut rand::rngs::StdRng, max: usize| -> String {
            let n = rng.gen_range(1..=max);
            (0..n)
                .map(|_| {
                    // Zeros often: leading and trailing zeros are the hard part.
                    if rng.gen_bool(0.4) {
                        '0'
                    } else {
                        char::from(b'0' + rng.gen_range(0..10))
                    }
                })
                .collect()
        };
        for _ in 0..50_000 {
            let mut text = String::new();
            if rng.gen_bool(0.3) {
                text.push('-');
            }
            let integer = digits(&mut rng, 30);
            // JSON allows no leading zero; strings may have them.
            text.push_str(if rng.gen_bool(0.5) {
                integer.trim_start_matches('0')
            } else {
                &integer
            });
            if text.is_empty() || text == "-" {
                text.push('0');
            }
            if rng.gen_bool(0.5) {
                text.push('.');
                text.push_str(&digits(&mut rng, 25));
            }
            if rng.gen_bool(0.3) {
                text.push(if rng.gen_bool(0.5) { 'e' } else { 'E' });
                let e: i64 = rng.gen_range(-45..45);
                text.push_str(&match rng.gen_range(0..3) {
                    0 if e >= 0 => format!("+{e}"),
                    _ => e.to_string(),
                });
            }
            for kind in kinds {
                assert_eq!(
                    outcome(kind, &text),
                    reference(kind, &text),
                    "{text} into {kind:?}"
                );
            }
        }
    }
}
