//! Times as MySQL's DATETIME, TIMESTAMP, DATE and TIME columns take them.
//!
//! Pure functions, no database: RFC 3339 times with `Z` or an offset are
//! converted to the session's zone (`mysql.time_zone`), and epoch numbers
//! (Kafka Connect's and Debezium's logical types) written out as text. The
//! session runs in the same zone (`config.rs` sets it at connect), so a
//! TIMESTAMP column stores the instant the record meant; a DATETIME column
//! stores the wall clock in that zone. See README.md, "Records to rows".
//!
//! Fractional seconds beyond a column's precision are cut, not rounded, as
//! MariaDB does itself: rounding could carry a time into the next second,
//! day or year.

use std::fmt::Write;

const NANOS_PER_SECOND: i64 = 1_000_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// A fixed offset from UTC: `mysql.time_zone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeZone {
    offset_seconds: i32,
}

impl TimeZone {
    pub const UTC: TimeZone = TimeZone { offset_seconds: 0 };

    /// `UTC`, or an offset `+HH:MM` / `-HH:MM` (at most 14 hours, as
    /// MySQL's `time_zone` accepts). Named zones would need the server's
    /// and this process's zone tables to agree, so they are refused.
    pub fn parse(text: &str) -> Result<TimeZone, String> {
        if text.eq_ignore_ascii_case("utc") || text == "Z" {
            return Ok(TimeZone::UTC);
        }
        match offset(text.as_bytes()) {
            Some(offset_seconds) if offset_seconds.abs() <= 14 * 3600 => {
                Ok(TimeZone { offset_seconds })
            }
            _ => Err(format!(
                "expected \"UTC\" or an offset such as \"+02:00\", got {text:?} \
                 (named zones are not supported)"
            )),
        }
    }

    /// The zone as `SET time_zone` takes it: `+02:00`.
    pub fn sql_offset(self) -> String {
        let sign = if self.offset_seconds < 0 { '-' } else { '+' };
        let minutes = self.offset_seconds.unsigned_abs() / 60;
        format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
    }
}

/// `+HH:MM` or `-HH:MM` as seconds east of UTC.
fn offset(text: &[u8]) -> Option<i32> {
    let [sign, h1, h2, b':', m1, m2] = *text else {
        return None;
    };
    let sign = match sign {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let hours = two_digits(h1, h2)?;
    let minutes = two_digits(m1, m2)?;
    (hours <= 23 && minutes <= 59).then_some(sign * (hours as i32 * 3600 + minutes as i32 * 60))
}

fn two_digits(a: u8, b: u8) -> Option<u32> {
    (a.is_ascii_digit() && b.is_ascii_digit())
        .then(|| u32::from(a - b'0') * 10 + u32::from(b - b'0'))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day count since 1970-01-01 (Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// An instant: seconds since the epoch and nanoseconds within the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instant {
    pub seconds: i64,
    pub nanos: u32,
}

impl Instant {
    pub fn from_units(value: i64, units_per_second: i64) -> Instant {
        Instant {
            seconds: value.div_euclid(units_per_second),
            nanos: (value.rem_euclid(units_per_second) * (NANOS_PER_SECOND / units_per_second))
                as u32,
        }
    }
}

/// Reads `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)` (RFC 3339; `t`,
/// `z` and a space for the `T` too). `None` for anything else, the plain
/// form without a zone included: that is left to the server.
pub fn parse_rfc3339(text: &str) -> Option<Instant> {
    let b = text.as_bytes();
    // Most times are plain (no zone): tell them by their end, at once.
    let zoned = match b {
        [.., b'Z' | b'z'] => true,
        [.., sign, _, _, b':', _, _] => matches!(sign, b'+' | b'-'),
        _ => false,
    };
    if !zoned || b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let year = i64::from(number(0, 4)?);
    let month = number(5, 7)?;
    let day = number(8, 10)?;
    let hour = number(11, 13)?;
    let minute = number(14, 16)?;
    let second = number(17, 19)?;
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0u32;
    if b[at] == b'.' {
        let digits = b[at + 1..]
            .iter()
            .take_while(|d| d.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        // Digits past nanoseconds are cut, like those past a column's precision.
        for i in 0..9 {
            let d = if i < digits {
                u32::from(b[at + 1 + i] - b'0')
            } else {
                0
            };
            nanos = nanos * 10 + d;
        }
        at += 1 + digits;
    }
    let offset_seconds = match &b[at..] {
        [b'Z' | b'z'] => 0,
        zone => offset(zone)?,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * SECONDS_PER_DAY + i64::from(hour * 3600 + minute * 60 + second)
        - i64::from(offset_seconds);
    Some(Instant { seconds, nanos })
}

/// `YYYY-MM-DD HH:MM:SS[.f]` of an instant's wall clock in `zone`, with
/// `precision` fraction digits (0 to 9).
pub fn format_datetime(instant: Instant, zone: TimeZone, precision: u8) -> String {
    let local = instant.seconds + i64::from(zone.offset_seconds);
    let days = local.div_euclid(SECONDS_PER_DAY);
    let second_of_day = local.rem_euclid(SECONDS_PER_DAY);
    let mut out = format_date(days);
    let _ = write!(
        out,
        " {:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    );
    push_fraction(&mut out, instant.nanos, precision);
    out
}

/// Whether a day count since 1970-01-01 falls in the years 0 to 9999, the
/// dates MySQL holds (and the ones this module writes without overflow).
pub fn is_mysql_day(days: i64) -> bool {
    // 0000-01-01 and 10000-01-01.
    (-719_528..2_932_897).contains(&days)
}

/// `YYYY-MM-DD` of a day count since 1970-01-01.
pub fn format_date(days: i64) -> String {
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}")
}

/// `[-]HH:MM:SS[.f]` of a time of day or a duration in nanoseconds (a TIME
/// column holds -838:59:59 to 838:59:59).
pub fn format_time(nanos: i128, precision: u8) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let nanos = nanos.unsigned_abs();
    let seconds = nanos / NANOS_PER_SECOND as u128;
    let mut out = format!(
        "{sign}{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    );
    push_fraction(
        &mut out,
        (nanos % NANOS_PER_SECOND as u128) as u32,
        precision,
    );
    out
}

fn push_fraction(out: &mut String, nanos: u32, precision: u8) {
    let precision = precision.min(9);
    if precision > 0 {
        let digits = format!("{nanos:09}");
        out.push('.');
        out.push_str(&digits[..usize::from(precision)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(text: &str) -> TimeZone {
        TimeZone::parse(text).unwrap()
    }

    #[test]
    fn zones_are_utc_or_fixed_offsets() {
        assert_eq!(zone("UTC"), TimeZone::UTC);
        assert_eq!(zone("+02:00").sql_offset(), "+02:00");
        assert_eq!(zone("-05:30").sql_offset(), "-05:30");
        assert_eq!(TimeZone::UTC.sql_offset(), "+00:00");
        for bad in [
            "Europe/Berlin",
            "+2",
            "+02",
            "+0200",
            "+24:00",
            "+02:60",
            "",
        ] {
            assert!(TimeZone::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn days_round_trip_and_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(format_date(19_723), "2024-01-01");
        assert_eq!(format_date(-719_162), "0001-01-01");
        for days in (-800_000..3_000_000).step_by(37) {
            let (y, m, d) = civil_from_days(days);
            assert!(d >= 1 && d <= days_in_month(y, m), "{days}");
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn rfc3339_times_convert_to_the_zone() {
        let utc = TimeZone::UTC;
        let cases = [
            ("2025-01-01T10:00:00Z", utc, 0, "2025-01-01 10:00:00"),
            ("2025-01-01T10:00:00+02:00", utc, 0, "2025-01-01 08:00:00"),
            ("2025-01-01t01:30:00-02:30", utc, 0, "2025-01-01 04:00:00"),
            ("2025-01-01 00:30:00+01:00", utc, 0, "2024-12-31 23:30:00"),
            (
                "2024-12-31T23:30:00Z",
                zone("+01:00"),
                0,
                "2025-01-01 00:30:00",
            ),
            ("2024-02-28T23:00:00-01:00", utc, 0, "2024-02-29 00:00:00"),
            (
                "2025-01-01T10:00:00.123456789Z",
                utc,
                6,
                "2025-01-01 10:00:00.123456",
            ),
            (
                "2025-01-01T10:00:00.9999999Z",
                utc,
                3,
                "2025-01-01 10:00:00.999",
            ),
            ("2025-01-01T10:00:00.5Z", utc, 0, "2025-01-01 10:00:00"),
            ("2025-01-01T10:00:00.5Z", utc, 2, "2025-01-01 10:00:00.50"),
            (
                "2025-01-01T10:00:00.1234567891234z",
                utc,
                9,
                "2025-01-01 10:00:00.123456789",
            ),
            ("1969-12-31T23:59:59.5Z", utc, 1, "1969-12-31 23:59:59.5"),
        ];
        for (text, zone, precision, expected) in cases {
            let instant = parse_rfc3339(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(
                format_datetime(instant, zone, precision),
                expected,
                "{text}"
            );
        }
        for plain_or_bad in [
            "2025-01-01 10:00:00",
            "2025-01-01T10:00:00",
            "2025-01-01T10:00:00.Z",
            "2025-02-29T10:00:00Z",
            "2025-13-01T10:00:00Z",
            "2025-01-01T24:00:00Z",
            "2025-01-01T10:00:60Z",
            "2025-01-01T10:00:00+0200",
            "2025-01-01T10:00:00+02:00x",
            "2025-01-01T10:00:00 Z",
            "2025-01-01",
            "yesterday",
            "2025-01-01T10:00:00Zé",
        ] {
            assert_eq!(parse_rfc3339(plain_or_bad), None, "{plain_or_bad}");
        }
    }

    #[test]
    fn the_years_mysql_holds() {
        assert_eq!(days_from_civil(0, 1, 1), -719_528);
        assert_eq!(days_from_civil(10_000, 1, 1), 2_932_897);
        assert!(is_mysql_day(-719_528) && is_mysql_day(2_932_896));
        assert!(!is_mysql_day(-719_529) && !is_mysql_day(2_932_897) && !is_mysql_day(i64::MAX));
        assert_eq!(format_date(2_932_896), "9999-12-31");
    }

    #[test]
    fn epoch_units_and_times_of_day() {
        let utc = TimeZone::UTC;
        assert_eq!(
            format_datetime(Instant::from_units(1_735_725_600_123, 1000), utc, 3),
            "2025-01-01 10:00:00.123"
        );
        assert_eq!(
            format_datetime(Instant::from_units(-1, 1_000_000), utc, 6),
            "1969-12-31 23:59:59.999999"
        );
        assert_eq!(
            format_datetime(Instant::from_units(0, 1), zone("-01:00"), 0),
            "1969-12-31 23:00:00"
        );
        assert_eq!(format_time(37_800_123_000_000, 3), "10:30:00.123");
        assert_eq!(format_time(37_800_123_000_000, 0), "10:30:00");
        assert_eq!(format_time(-3_600_000_000_000, 0), "-01:00:00");
        assert_eq!(format_time(500 * 3_600_000_000_000, 0), "500:00:00");
    }
}
