//! What can fail, and the one place that decides what a failure means.
//!
//! `classify` answers "technical, business or fatal?" for any `Error`
//! (DESIGN.md section 3). Nothing else in the code decides what is retried,
//! what blocks a partition and what is dead-lettered.
//!
//! - technical: the database or the network is away; retry, then block the
//!   partition until it is back. Never skip a record for it.
//! - business: this record cannot be written (bad JSON, a value too long for
//!   its column, a duplicate key in insert mode); retry a few times, then
//!   dead-letter it and go on.
//! - fatal: the setup is wrong (table missing, access denied); exit 2 at start,
//!   block the partition while running, and tell the operator what to fix.

use std::fmt;

/// MySQL / MariaDB server error codes that mean "the server is away, busy or
/// read-only for now": see
/// <https://mariadb.com/kb/en/mariadb-error-code-reference/>.
pub const TECHNICAL_CODES: &[u16] = &[
    1040, // ER_CON_COUNT_ERROR: too many connections
    1053, // ER_SERVER_SHUTDOWN
    1205, // ER_LOCK_WAIT_TIMEOUT
    1213, // ER_LOCK_DEADLOCK
    1290, // ER_OPTION_PREVENTS_STATEMENT (e.g. --read-only)
    1836, // ER_READ_ONLY_MODE
    1927, // ER_CONNECTION_KILLED
    2002, // CR_CONNECTION_ERROR
    2003, // CR_CONN_HOST_ERROR
    2006, // CR_SERVER_GONE_ERROR
    2013, // CR_SERVER_LOST
];

/// Codes that mean "this record's data does not fit the table".
pub const BUSINESS_CODES: &[u16] = &[
    1048, // ER_BAD_NULL_ERROR: column cannot be null
    1062, // ER_DUP_ENTRY
    1264, // ER_WARN_DATA_OUT_OF_RANGE
    1265, // WARN_DATA_TRUNCATED
    1292, // ER_TRUNCATED_WRONG_VALUE (bad date or number)
    1364, // ER_NO_DEFAULT_FOR_FIELD: a NOT NULL column without default is missing
    1366, // ER_TRUNCATED_WRONG_VALUE_FOR_FIELD
    1406, // ER_DATA_TOO_LONG
    1452, // ER_NO_REFERENCED_ROW_2: foreign key parent missing
    3140, // ER_INVALID_JSON_TEXT (MySQL JSON column)
    4025, // ER_CONSTRAINT_FAILED (MariaDB CHECK constraint)
];

/// Codes that mean "the setup is wrong": the operator must act.
pub const FATAL_CODES: &[u16] = &[
    1044, // ER_DBACCESS_DENIED_ERROR
    1045, // ER_ACCESS_DENIED_ERROR
    1049, // ER_BAD_DB_ERROR
    1054, // ER_BAD_FIELD_ERROR: column missing
    1142, // ER_TABLEACCESS_DENIED_ERROR
    1143, // ER_COLUMNACCESS_DENIED_ERROR
    1146, // ER_NO_SUCH_TABLE
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Technical,
    Business,
    Fatal,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Technical => "technical",
            Class::Business => "business",
            Class::Fatal => "fatal",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one record cannot become a row. Always a business error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("value is not valid UTF-8 (byte {0})")]
    NotUtf8(usize),
    #[error("value is not JSON: {0}")]
    NotJson(String),
    #[error("value is JSON but not an object")]
    NotObject,
    #[error("key column {0:?} is missing or null")]
    MissingKey(String),
    #[error("field {0:?} is not a column of the table")]
    UnknownField(String),
    #[error("record key cannot identify the row to delete: {0}")]
    BadTombstoneKey(String),
    #[error("record of {size} bytes is larger than {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// Read from a batch too large to fetch (the `kafka` crate client).
    #[error(
        "record of {size} bytes is larger than {limit} bytes and than any fetch; \
         the dead letter keeps the first {kept} bytes of its value"
    )]
    TooLargeToFetch {
        size: usize,
        limit: usize,
        kept: usize,
    },
    /// In a compressed (or pre-0.11) batch too large to fetch: nothing of
    /// it could be read (the `kafka` crate client; librdkafka fetches it).
    #[error(
        "record in a compressed batch of {batch} bytes, larger than any fetch: \
         its key and value are not kept"
    )]
    BatchTooLargeToFetch { batch: usize },
    #[error("record has no field that is a column of the table")]
    NoColumns,
    /// A value its column cannot hold exactly (`1.5` for a BIGINT), or a key
    /// that cannot be compared with its column (`abc` for a BIGINT key).
    #[error("column {column:?}: {reason}")]
    BadValue { column: String, reason: String },
    /// A Kafka Connect or Debezium envelope that does not hold a row
    /// (`mysql.record_format`), with the reason.
    #[error("invalid envelope: {0}")]
    BadEnvelope(String),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}", mysql_text(.0))]
    Mysql(#[from] mysql::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] kafka::Error),
    /// The topic does not exist (a setup error at start; while running, the
    /// topic was deleted and may come back).
    #[error("topic {0:?} does not exist (kafka.topic)")]
    NoSuchTopic(String),
    /// A librdkafka request that failed (timed out, broker unreachable).
    #[error("kafka: {0}")]
    Librdkafka(String),
    #[error("{0}")]
    Record(#[from] RecordError),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// The setup is wrong in a way found by our own checks (a missing key
    /// column, a topic that does not exist).
    #[error("{0}")]
    Setup(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// `mysql error 1406 (22001): Data too long for column 'name' at row 1`
/// rather than the driver's debug-like form.
fn mysql_text(e: &mysql::Error) -> String {
    match e {
        mysql::Error::MySqlError(m) => {
            format!("mysql error {} ({}): {}", m.code, m.state, m.message)
        }
        other => format!("mysql: {other}"),
    }
}

impl Error {
    /// The MySQL server error code, when the database reported one.
    pub fn mysql_code(&self) -> Option<u16> {
        match self {
            Error::Mysql(mysql::Error::MySqlError(e)) => Some(e.code),
            _ => None,
        }
    }
}

/// The one classification of every failure. `extra_technical` is
/// `retry.extra_technical_codes` from the configuration.
pub fn classify(error: &Error, extra_technical: &[u16]) -> Class {
    match error {
        Error::Mysql(e) => classify_mysql(e, extra_technical),
        Error::Kafka(_) | Error::Librdkafka(_) | Error::Io(_) => Class::Technical,
        Error::Record(_) => Class::Business,
        Error::Config(_) | Error::Setup(_) | Error::NoSuchTopic(_) => Class::Fatal,
    }
}

fn classify_mysql(error: &mysql::Error, extra_technical: &[u16]) -> Class {
    use mysql::DriverError as D;
    match error {
        mysql::Error::MySqlError(e) => classify_mysql_code(e.code, extra_technical),
        mysql::Error::IoError(_) | mysql::Error::CodecError(_) => Class::Technical,
        mysql::Error::DriverError(d) => match d {
            // A packet larger than max_allowed_packet: the statement must be split;
            // for a single record it is that record's problem.
            D::PacketTooLarge => Class::Business,
            D::UnknownAuthPlugin(_) | D::OldMysqlPasswordDisabled | D::CleartextPluginDisabled => {
                Class::Fatal
            }
            _ => Class::Technical,
        },
        mysql::Error::UrlError(_) => Class::Fatal,
        // Reading a value of an unexpected type back from the server is a bug
        // of ours, not of the record: block and tell.
        mysql::Error::FromValueError(_) | mysql::Error::FromRowError(_) => Class::Fatal,
    }
}

/// Classification of a server error code. Unknown codes are technical: the
/// partition blocks and the log says why, rather than dead-lettering records
/// for a reason nobody has looked at.
pub fn classify_mysql_code(code: u16, extra_technical: &[u16]) -> Class {
    if TECHNICAL_CODES.contains(&code) || extra_technical.contains(&code) {
        Class::Technical
    } else if BUSINESS_CODES.contains(&code) {
        Class::Business
    } else if FATAL_CODES.contains(&code) {
        Class::Fatal
    } else {
        Class::Technical
    }
}

/// Kafka protocol errors the coordinator meets per partition. OffsetOutOfRange
/// has its own handling (the reader is recreated); every other one is retried
/// after a metadata reload.
pub fn is_offset_out_of_range(error: &kafka::Error) -> bool {
    matches!(
        error,
        kafka::Error::Kafka(kafka::error::KafkaCode::OffsetOutOfRange)
            | kafka::Error::TopicPartitionError {
                error_code: kafka::error::KafkaCode::OffsetOutOfRange,
                ..
            }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka::error::KafkaCode;

    fn server_error(code: u16) -> Error {
        Error::Mysql(mysql::Error::MySqlError(mysql::MySqlError {
            state: "HY000".into(),
            message: format!("error {code}"),
            code,
        }))
    }

    #[test]
    fn every_code_named_in_the_design_has_its_class() {
        let table: &[(u16, Class)] = &[
            (1040, Class::Technical),
            (1053, Class::Technical),
            (1205, Class::Technical),
            (1213, Class::Technical),
            (1290, Class::Technical),
            (1836, Class::Technical),
            (1927, Class::Technical),
            (2002, Class::Technical),
            (2003, Class::Technical),
            (2006, Class::Technical),
            (2013, Class::Technical),
            (1048, Class::Business),
            (1062, Class::Business),
            (1264, Class::Business),
            (1292, Class::Business),
            (1364, Class::Business),
            (1366, Class::Business),
            (1406, Class::Business),
            (1452, Class::Business),
            (1146, Class::Fatal),
            (1054, Class::Fatal),
            (1044, Class::Fatal),
            (1045, Class::Fatal),
            (1142, Class::Fatal),
            (9999, Class::Technical),
        ];
        for &(code, class) in table {
            assert_eq!(
                classify(&server_error(code), &[]),
                class,
                "MySQL code {code}"
            );
        }
    }

    #[test]
    fn extra_technical_codes_win() {
        assert_eq!(classify(&server_error(1062), &[1062]), Class::Technical);
        assert_eq!(classify(&server_error(1366), &[1062]), Class::Business);
    }

    #[test]
    fn other_failures() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let cases: Vec<(Error, Class)> = vec![
            (Error::Mysql(mysql::Error::IoError(io)), Class::Technical),
            (
                Error::Mysql(mysql::Error::DriverError(
                    mysql::DriverError::ConnectTimeout,
                )),
                Class::Technical,
            ),
            (
                Error::Mysql(mysql::Error::DriverError(
                    mysql::DriverError::CouldNotConnect(None),
                )),
                Class::Technical,
            ),
            (
                Error::Mysql(mysql::Error::DriverError(
                    mysql::DriverError::PacketTooLarge,
                )),
                Class::Business,
            ),
            (Error::Record(RecordError::NotUtf8(3)), Class::Business),
            (
                Error::Record(RecordError::NotJson("eof".into())),
                Class::Business,
            ),
            (Error::Record(RecordError::NotObject), Class::Business),
            (
                Error::Record(RecordError::MissingKey("id".into())),
                Class::Business,
            ),
            (
                Error::Record(RecordError::TooLarge { size: 10, limit: 5 }),
                Class::Business,
            ),
            (Error::Setup("no table".into()), Class::Fatal),
            (
                Error::Kafka(kafka::Error::NoHostReachable),
                Class::Technical,
            ),
            (
                Error::Kafka(kafka::Error::Kafka(KafkaCode::NotLeaderForPartition)),
                Class::Technical,
            ),
            (
                Error::Kafka(kafka::Error::Kafka(KafkaCode::LeaderNotAvailable)),
                Class::Technical,
            ),
            (
                Error::Kafka(kafka::Error::Kafka(KafkaCode::UnknownTopicOrPartition)),
                Class::Technical,
            ),
            (
                Error::Kafka(kafka::Error::Kafka(KafkaCode::RequestTimedOut)),
                Class::Technical,
            ),
        ];
        for (error, class) in cases {
            assert_eq!(classify(&error, &[]), class, "{error}");
        }
    }

    #[test]
    fn offset_out_of_range_is_recognised() {
        assert!(is_offset_out_of_range(&kafka::Error::Kafka(
            KafkaCode::OffsetOutOfRange
        )));
        assert!(!is_offset_out_of_range(&kafka::Error::Kafka(
            KafkaCode::RequestTimedOut
        )));
    }
}
