//! What can fail, and the one place that decides what a failure means.
//!
//! `Policy::classify` answers, for any `Error` (MySQL's, Kafka's, ours), a
//! `Verdict`: technical, business or fatal; whether the connection it came
//! on must be dropped; whether to wait before the next attempt. The README's
//! "Errors and what the operator does" tells the operator the same. Nothing
//! else in the code decides what is retried, what blocks a partition and
//! what is dead-lettered (`retry::RetryState` turns verdicts into waits);
//! `Alike` and `is_duplicate_key` say which business errors the worker
//! treats specially. `Exit` is the one table of the process's exit codes.
//!
//! - technical: the database or the network is away; retry, then block the
//!   partition until it is back. Never skip a record for it.
//! - business: this record cannot be written (bad JSON, a value too long for
//!   its column, a duplicate key in insert mode); retry a few times, then
//!   dead-letter it and go on.
//! - fatal: the setup is wrong (table missing, access denied); exit 2 at start,
//!   block the partition while running, and tell the operator what to fix.

use std::fmt;

// The server's error list, gone through once by SQLSTATE class (MariaDB's
// list: <https://mariadb.com/kb/en/mariadb-error-code-reference/>; MySQL's:
// <https://dev.mysql.com/doc/mysql-errors/8.0/en/server-error-reference.html>).
// `classify_server_error` applies it in this order:
//
// 1. `retry.extra_technical_codes`, then the three lists below, by code;
// 2. SQLSTATE class 22 (data exception: a value that does not fit its
//    column, out of range, bad date, bad JSON), 23 (integrity constraint:
//    duplicate key, foreign key, CHECK, NOT NULL) and 44 (a view's WITH CHECK
//    OPTION): business, as these are about the values of the statement;
// 3. everything else, HY000 above all, which the server uses for anything:
//    technical, so that a code nobody has looked at blocks its partition and
//    says why instead of emptying the topic into the dead-letter table.
//
// MySQL and MariaDB number their errors alike below 3000; above, the same
// number can mean different things (4025 is MariaDB's CHECK constraint and a
// tablespace option in MySQL). The business codes above 3000 here are ones
// that only an INSERT or DELETE of a row can raise, on the server that uses
// them.

/// SQLSTATE classes about the values of the statement: data exception,
/// integrity constraint violation, WITH CHECK OPTION violation.
pub const DATA_SQLSTATE_CLASSES: &[&str] = &["22", "23", "44"];

/// Codes that mean "the server is away, busy or read-only for now".
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

/// Codes that mean "this record's data does not fit the table". Most carry
/// SQLSTATE 22 or 23 and are listed for the reader (and for a server that
/// sends no SQLSTATE); the HY000 and 01000 ones are here because their
/// SQLSTATE does not say it.
pub const BUSINESS_CODES: &[u16] = &[
    // 22xxx, data exception
    1138, // ER_INVALID_USE_OF_NULL
    1263, // ER_WARN_NULL_TO_NOTNULL
    1264, // ER_WARN_DATA_OUT_OF_RANGE: value out of range for its column
    1292, // ER_TRUNCATED_WRONG_VALUE (bad date or number)
    1365, // ER_DIVISION_BY_ZERO (in a generated column or a trigger)
    1366, // ER_TRUNCATED_WRONG_VALUE_FOR_FIELD
    1367, // ER_ILLEGAL_VALUE_FOR_TYPE
    1406, // ER_DATA_TOO_LONG
    1416, // ER_CANT_CREATE_GEOMETRY_OBJECT
    1441, // ER_DATETIME_FUNCTION_OVERFLOW
    1690, // ER_DATA_OUT_OF_RANGE: out of range in an expression
    1916, // ER_DATA_OVERFLOW (MariaDB)
    1917, // ER_DATA_TRUNCATED (MariaDB)
    1918, // ER_BAD_DATA (MariaDB)
    3140, // ER_INVALID_JSON_TEXT (MySQL JSON column)
    3907, // ER_FUNCTIONAL_INDEX_DATA_IS_TOO_LONG (MySQL)
    // 23xxx, integrity constraint violation
    1022, // ER_DUP_KEY
    1048, // ER_BAD_NULL_ERROR: column cannot be null
    1062, // ER_DUP_ENTRY
    1169, // ER_DUP_UNIQUE
    1216, // ER_NO_REFERENCED_ROW
    1217, // ER_ROW_IS_REFERENCED
    1451, // ER_ROW_IS_REFERENCED_2: a delete hitting a foreign key
    1452, // ER_NO_REFERENCED_ROW_2: foreign key parent missing
    1586, // ER_DUP_ENTRY_WITH_KEY_NAME
    1761, // ER_FOREIGN_DUPLICATE_KEY_WITH_CHILD_INFO
    1762, // ER_FOREIGN_DUPLICATE_KEY_WITHOUT_CHILD_INFO
    1859, // ER_DUP_UNKNOWN_IN_INDEX
    3673, // ER_BAD_NULL_ERROR_NOT_IGNORED (MySQL)
    4025, // ER_CONSTRAINT_FAILED (MariaDB CHECK constraint)
    // 44000, WITH CHECK OPTION
    1369, // ER_VIEW_CHECK_FAILED: the table is a view the row does not fit
    // 01000: warnings, raised as errors in strict mode
    1265, // WARN_DATA_TRUNCATED
    3751, // ER_WARN_DATA_TRUNCATED_FUNCTIONAL_INDEX (MySQL)
    // HY000, decided one by one
    1299, // ER_WARN_INVALID_TIMESTAMP
    1300, // ER_INVALID_CHARACTER_STRING: not valid in the column's character set
    1364, // ER_NO_DEFAULT_FOR_FIELD: a NOT NULL column without default is missing
    1411, // ER_WRONG_VALUE_FOR_TYPE
    1525, // ER_WRONG_VALUE
    1526, // ER_NO_PARTITION_FOR_GIVEN_VALUE
    1644, // ER_SIGNAL_EXCEPTION: a trigger refused the row (SIGNAL SQLSTATE '45000')
    1906, // ER_WARNING_NON_DEFAULT_VALUE_FOR_GENERATED_COLUMN (MariaDB, strict mode)
    1977, // ER_CANNOT_CONVERT_CHARACTER (MariaDB)
    3105, // ER_NON_DEFAULT_VALUE_FOR_GENERATED_COLUMN (MySQL)
    3819, // ER_CHECK_CONSTRAINT_VIOLATED (MySQL)
    3988, // ER_IMPOSSIBLE_STRING_CONVERSION (MySQL)
];

/// Codes that mean "the setup is wrong": the operator must act.
pub const FATAL_CODES: &[u16] = &[
    1044, // ER_DBACCESS_DENIED_ERROR
    1045, // ER_ACCESS_DENIED_ERROR
    1049, // ER_BAD_DB_ERROR
    // 23000 by its SQLSTATE, but about the statement, not the values: a
    // column named twice, a bug of ours.
    1052, // ER_NON_UNIQ_ERROR
    1054, // ER_BAD_FIELD_ERROR: column missing
    1142, // ER_TABLEACCESS_DENIED_ERROR
    1143, // ER_COLUMNACCESS_DENIED_ERROR
    1146, // ER_NO_SUCH_TABLE
];

/// Codes after which the connection is no longer usable: the server closed
/// it, killed it or went away. Any other server error leaves it usable (the
/// driver rolled the transaction back).
pub const CONNECTION_LOST_CODES: &[u16] = &[
    1053, // ER_SERVER_SHUTDOWN
    1927, // ER_CONNECTION_KILLED
    2006, // CR_SERVER_GONE_ERROR
    2013, // CR_SERVER_LOST
];

/// Business codes about other rows than the record's own: a duplicate key
/// (the row another record wrote) or a foreign key (the rows of another
/// table). The same code many times in a row is then still one bad record
/// after another, never a sign that the table changed (see `Alike`).
pub const OTHER_ROWS_CODES: &[u16] = &[
    1022, 1062, 1169, 1216, 1217, 1451, 1452, 1586, 1761, 1762, 1859,
];

/// Duplicate-key codes: the row the record would insert collides with one
/// that is already there.
pub const DUPLICATE_KEY_CODES: &[u16] = &[1022, 1062, 1169, 1586, 1859];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Technical,
    Business,
    Fatal,
}

impl Class {
    pub const ALL: &'static [Class] = &[Class::Technical, Class::Business, Class::Fatal];

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
    /// A partition's fetch: the requested offset is not (or no longer) in
    /// the log.
    #[error("offset out of range")]
    OffsetOutOfRange,
    /// A partition's fetch: the data is there, and this client cannot read
    /// it (a codec it lacks), with the client's explanation.
    #[error("{0}")]
    Unreadable(String),
    /// A partition's fetch failed otherwise (no leader, the leader moved, a
    /// timeout), in the client's words.
    #[error("{0}")]
    PartitionFetch(String),
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

/// What a failure means: its class, whether the connection it came on must
/// be dropped (a MySQL connection given back closed, a Kafka client made
/// again or its metadata reloaded), and whether to wait before the next
/// attempt (a record that cannot be mapped fails the same way at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub class: Class,
    pub reconnect: bool,
    pub wait: bool,
}

/// The error policy of the service, built from the config once
/// (`retry.extra_technical_codes`) and shared by every thread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    extra_technical_codes: Vec<u16>,
}

impl Policy {
    pub fn new(extra_technical_codes: Vec<u16>) -> Policy {
        Policy {
            extra_technical_codes,
        }
    }

    pub fn from_config(config: &crate::config::Config) -> Policy {
        Policy::new(config.retry.extra_technical_codes.clone())
    }

    /// The one classification of every failure.
    pub fn classify(&self, error: &Error) -> Verdict {
        let class = self.class(error);
        let reconnect = match error {
            // A server error leaves the connection usable, unless it says
            // the connection is gone; anything else of the driver's (an I/O
            // error, a timeout) may have broken it.
            Error::Mysql(mysql::Error::MySqlError(e)) => CONNECTION_LOST_CODES.contains(&e.code),
            Error::Mysql(_) => true,
            // The client is made again, or a partition's metadata reloaded.
            Error::Kafka(_) | Error::Librdkafka(_) | Error::NoSuchTopic(_) => true,
            Error::PartitionFetch(_) => true,
            Error::OffsetOutOfRange | Error::Unreadable(_) => false,
            Error::Record(_) | Error::Config(_) | Error::Setup(_) | Error::Io(_) => false,
        };
        // Mapping looks only at the record's bytes, and the reader is
        // recreated at once after OffsetOutOfRange: waiting changes nothing.
        let wait = !matches!(error, Error::Record(_) | Error::OffsetOutOfRange);
        Verdict {
            class,
            reconnect,
            wait,
        }
    }

    /// The class alone (`classify(error).class`).
    pub fn class(&self, error: &Error) -> Class {
        match error {
            Error::Mysql(e) => classify_mysql(e, &self.extra_technical_codes),
            Error::Kafka(_) | Error::Librdkafka(_) | Error::Io(_) => Class::Technical,
            // The reader is moved as `kafka.offset_reset` says, or the
            // partition waits for the broker: Kafka's faults are technical.
            Error::OffsetOutOfRange | Error::PartitionFetch(_) => Class::Technical,
            // The client can never read these records: the operator must act.
            Error::Unreadable(_) => Class::Fatal,
            Error::Record(_) => Class::Business,
            Error::Config(_) | Error::Setup(_) | Error::NoSuchTopic(_) => Class::Fatal,
        }
    }

    /// How a command that failed with `error` exits.
    pub fn exit(&self, error: &Error) -> Exit {
        match self.class(error) {
            Class::Fatal => Exit::Setup,
            Class::Technical | Class::Business => Exit::Failed,
        }
    }
}

/// How the process ends, for every command (the README's exit codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done, stopped cleanly, or (`status`) running with every partition
    /// flowing: 0.
    Ok,
    /// A runtime failure, something unreachable or refused, or (`status`) a
    /// partition retrying or blocked: 1 (cron starts `run` again).
    Failed,
    /// The config or the setup is wrong: 2.
    Setup,
    /// `run`: another process holds the run files, nothing was done: 3.
    AlreadyRunning,
    /// `status`: the service is not running: 3.
    NotRunning,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::Setup => 2,
            Exit::AlreadyRunning | Exit::NotRunning => 3,
        }
    }

    pub fn exit_code(self) -> std::process::ExitCode {
        std::process::ExitCode::from(self.code())
    }
}

fn classify_mysql(error: &mysql::Error, extra_technical: &[u16]) -> Class {
    use mysql::DriverError as D;
    match error {
        mysql::Error::MySqlError(e) => classify_server_error(e.code, &e.state, extra_technical),
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

/// Classification of a server error by its code and SQLSTATE, in the order
/// the comment above the code lists explains. Unknown codes are technical:
/// the partition blocks and the log says why, rather than dead-lettering
/// records for a reason nobody has looked at.
pub fn classify_server_error(code: u16, sqlstate: &str, extra_technical: &[u16]) -> Class {
    if TECHNICAL_CODES.contains(&code) || extra_technical.contains(&code) {
        Class::Technical
    } else if FATAL_CODES.contains(&code) {
        Class::Fatal
    } else if BUSINESS_CODES.contains(&code)
        || DATA_SQLSTATE_CLASSES
            .iter()
            .any(|class| sqlstate.starts_with(class))
    {
        Class::Business
    } else {
        Class::Technical
    }
}

/// A duplicate key reported by the server (see `DUPLICATE_KEY_CODES`).
pub fn is_duplicate_key(error: &Error) -> bool {
    error
        .mysql_code()
        .is_some_and(|code| DUPLICATE_KEY_CODES.contains(&code))
}

/// The table named is not there (1146, ER_NO_SUCH_TABLE): for `status`, a
/// dead-letter table that the first `run` has not created yet.
pub fn is_no_such_table(error: &Error) -> bool {
    error.mysql_code() == Some(1146)
}

/// What makes the failures of two records "alike" for the worker's schema
/// fault rule (`retry.schema_fault_records`): the same server code and the
/// same message, which names the column or the constraint. A message that
/// quotes the value before the column ("Incorrect integer value: 'x' for
/// column `t`.`amount` at row 1") is compared from " for column " on, so
/// that records with different values fail alike. The worker writes one row
/// per statement when it looks at a record alone, so "at row 1" is the same
/// for all; sessions read English messages (`mysql::connect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alike {
    code: u16,
    text: String,
}

impl Alike {
    /// `None` for the failures that say nothing about the table: record
    /// errors of our own (not JSON, a missing key), and codes about other
    /// rows (`OTHER_ROWS_CODES`).
    pub fn of(error: &Error, policy: &Policy) -> Option<Alike> {
        let Error::Mysql(mysql::Error::MySqlError(e)) = error else {
            return None;
        };
        if policy.class(error) != Class::Business || OTHER_ROWS_CODES.contains(&e.code) {
            return None;
        }
        let text = match e.message.find(" for column ") {
            Some(at) => &e.message[at..],
            None => &e.message,
        };
        Some(Alike {
            code: e.code,
            text: text.to_string(),
        })
    }
}

/// Whether a `kafka` crate error is OffsetOutOfRange, which the client
/// reports as `Error::OffsetOutOfRange`.
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

    /// The class of `error` under a policy with these extra technical codes.
    fn classify(error: &Error, extra_technical: &[u16]) -> Class {
        Policy::new(extra_technical.to_vec()).class(error)
    }

    fn server_error(code: u16, state: &str) -> Error {
        Error::Mysql(mysql::Error::MySqlError(mysql::MySqlError {
            state: state.into(),
            message: format!("error {code}"),
            code,
        }))
    }

    fn server_message(code: u16, message: &str) -> Error {
        Error::Mysql(mysql::Error::MySqlError(mysql::MySqlError {
            state: "HY000".into(),
            message: message.into(),
            code,
        }))
    }

    /// One row per code the lists name or the README's error table cites,
    /// with the SQLSTATE the server sends for it.
    #[test]
    fn every_server_error_has_its_class() {
        use Class::{Business, Fatal, Technical};
        let table: &[(u16, &str, Class)] = &[
            (1040, "08004", Technical),
            (1053, "08S01", Technical),
            (1205, "HY000", Technical),
            (1213, "40001", Technical),
            (1290, "HY000", Technical),
            (1836, "HY000", Technical),
            (1927, "70100", Technical),
            (2002, "HY000", Technical),
            (2003, "HY000", Technical),
            (2006, "HY000", Technical),
            (2013, "HY000", Technical),
            // 22xxx
            (1138, "22004", Business),
            (1264, "22003", Business),
            (1292, "22007", Business),
            (1365, "22012", Business),
            (1366, "22007", Business),
            (1406, "22001", Business),
            (1690, "22003", Business),
            (3140, "22032", Business),
            // 23xxx
            (1048, "23000", Business),
            (1062, "23000", Business),
            (1451, "23000", Business),
            (1452, "23000", Business),
            (1586, "23000", Business),
            (4025, "23000", Business),
            // 44000, 01000
            (1369, "44000", Business),
            (1265, "01000", Business),
            // HY000 one by one
            (1364, "HY000", Business),
            (1300, "HY000", Business),
            (1526, "HY000", Business),
            (1644, "45000", Business),
            (3819, "HY000", Business),
            (3105, "HY000", Business),
            (3988, "HY000", Business),
            // fatal, 1052 despite its 23000
            (1052, "23000", Fatal),
            (1146, "42S02", Fatal),
            (1054, "42S22", Fatal),
            (1044, "42000", Fatal),
            (1045, "28000", Fatal),
            (1142, "42000", Fatal),
            (1143, "42000", Fatal),
            // Codes nobody listed: their SQLSTATE class decides, else technical.
            (3666, "2203F", Business),
            (9999, "23000", Business),
            (9999, "44000", Business),
            (9999, "HY000", Technical),
            (9999, "42000", Technical),
            (9999, "", Technical),
            (1020, "HY000", Technical),
        ];
        for &(code, state, class) in table {
            assert_eq!(
                classify(&server_error(code, state), &[]),
                class,
                "MySQL code {code} ({state})"
            );
        }
        // A listed code keeps its class whatever SQLSTATE comes with it.
        for &code in BUSINESS_CODES {
            assert_eq!(classify(&server_error(code, ""), &[]), Business, "{code}");
        }
        for &code in FATAL_CODES {
            assert_eq!(classify(&server_error(code, "23000"), &[]), Fatal, "{code}");
        }
        for &code in TECHNICAL_CODES {
            assert_eq!(
                classify(&server_error(code, "22000"), &[]),
                Technical,
                "{code}"
            );
        }
        for &code in OTHER_ROWS_CODES.iter().chain(DUPLICATE_KEY_CODES) {
            assert!(BUSINESS_CODES.contains(&code), "{code}");
        }
    }

    #[test]
    fn failures_alike_name_the_same_code_and_column() {
        let alike = |code, message| Alike::of(&server_message(code, message), &Policy::default());
        let missing = "Field 'added' doesn't have a default value";
        assert_eq!(alike(1364, missing), alike(1364, missing));
        assert!(alike(1364, missing).is_some());
        assert_ne!(
            alike(1364, missing),
            alike(1364, "Field 'other' doesn't have a default value")
        );
        assert_ne!(
            alike(1406, "Data too long for column 'name' at row 1"),
            alike(1264, "Data too long for column 'name' at row 1")
        );
        // The value quoted before the column does not count.
        assert_eq!(
            alike(
                1366,
                "Incorrect integer value: 'a' for column `db`.`t`.`amount` at row 1"
            ),
            alike(
                1366,
                "Incorrect integer value: 'b' for column `db`.`t`.`amount` at row 1"
            )
        );
        // Duplicate and foreign keys are about other rows; errors of our own
        // and technical ones are not about the table's columns.
        assert_eq!(alike(1062, "Duplicate entry '1' for key 'PRIMARY'"), None);
        assert_eq!(alike(1452, "Cannot add or update a child row"), None);
        assert_eq!(alike(1451, "Cannot delete or update a parent row"), None);
        assert_eq!(alike(1205, "Lock wait timeout exceeded"), None);
        assert_eq!(
            Alike::of(&Error::Record(RecordError::NotObject), &Policy::default()),
            None
        );
        assert_eq!(
            Alike::of(&server_message(1364, missing), &Policy::new(vec![1364])),
            None
        );
    }

    #[test]
    fn duplicate_keys_are_recognised() {
        assert!(is_duplicate_key(&server_error(1062, "23000")));
        assert!(is_duplicate_key(&server_error(1586, "23000")));
        assert!(!is_duplicate_key(&server_error(1452, "23000")));
        assert!(!is_duplicate_key(&Error::Record(RecordError::NotObject)));
    }

    #[test]
    fn extra_technical_codes_win() {
        assert_eq!(
            classify(&server_error(1062, "23000"), &[1062]),
            Class::Technical
        );
        assert_eq!(
            classify(&server_error(1366, "22007"), &[1062]),
            Class::Business
        );
        // Also over a SQLSTATE class that would make it business.
        assert_eq!(
            classify(&server_error(9999, "22000"), &[9999]),
            Class::Technical
        );
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

    /// Whether the connection is dropped, and whether to wait, one row per
    /// kind of failure.
    #[test]
    fn verdicts_say_when_to_reconnect_and_when_to_wait() {
        use Class::{Business, Fatal, Technical};
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let cases: Vec<(Error, Class, bool, bool)> = vec![
            // (error, class, reconnect, wait)
            (server_error(2013, "HY000"), Technical, true, true),
            (server_error(2006, "HY000"), Technical, true, true),
            (server_error(1927, "70100"), Technical, true, true),
            (server_error(1053, "08S01"), Technical, true, true),
            (server_error(1205, "HY000"), Technical, false, true),
            (server_error(1213, "40001"), Technical, false, true),
            (server_error(1406, "22001"), Business, false, true),
            (server_error(1146, "42S02"), Fatal, false, true),
            (
                Error::Mysql(mysql::Error::IoError(io())),
                Technical,
                true,
                true,
            ),
            (
                Error::Mysql(mysql::Error::DriverError(
                    mysql::DriverError::ConnectTimeout,
                )),
                Technical,
                true,
                true,
            ),
            (
                Error::Record(RecordError::NotObject),
                Business,
                false,
                false,
            ),
            (Error::OffsetOutOfRange, Technical, false, false),
            (
                Error::PartitionFetch("no leader".into()),
                Technical,
                true,
                true,
            ),
            (Error::Unreadable("zstd".into()), Fatal, false, true),
            (Error::Librdkafka("timed out".into()), Technical, true, true),
            (Error::NoSuchTopic("t".into()), Fatal, true, true),
            (Error::Setup("no table".into()), Fatal, false, true),
            (Error::Io(io()), Technical, false, true),
        ];
        let policy = Policy::default();
        for (error, class, reconnect, wait) in cases {
            let verdict = policy.classify(&error);
            assert_eq!(
                verdict,
                Verdict {
                    class,
                    reconnect,
                    wait
                },
                "{error}"
            );
        }
        // The extra technical codes change the class, not the connection.
        let verdict = Policy::new(vec![1406]).classify(&server_error(1406, "22001"));
        assert_eq!((verdict.class, verdict.reconnect), (Technical, false));
    }

    #[test]
    fn exit_codes() {
        let policy = Policy::default();
        assert_eq!(policy.exit(&Error::Setup("x".into())), Exit::Setup);
        assert_eq!(policy.exit(&server_error(2013, "HY000")), Exit::Failed);
        assert_eq!(policy.exit(&server_error(1406, "22001")), Exit::Failed);
        let codes: Vec<u8> = [
            Exit::Ok,
            Exit::Failed,
            Exit::Setup,
            Exit::AlreadyRunning,
            Exit::NotRunning,
        ]
        .iter()
        .map(|e| e.code())
        .collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 3]);
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
