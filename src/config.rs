//! The configuration file, read into `Config`: typed serde structs that mirror
//! the TOML tables, each default written next to its field, every value
//! checked as it is read (a range, a name, a URL), and one `validate` for the
//! rules that span keys.
//!
//! Every problem is reported as a `ConfigError` that names the key
//! (`mysql.write_mode: expected upsert | insert, got "merge"`);
//! `serde_path_to_error` tracks the key while the file is read, and the
//! command line turns the error into exit code 2. Nothing here talks to Kafka
//! or MySQL.
//!
//! The database password never comes from the file's URL nor from the command
//! line: it is read from `mysql.password_file` (refused when group- or
//! world-readable) or from the environment variable `MYSQL_PASSWORD`, and it is
//! kept in a `Password` whose `Debug` prints `***`. The SASL password likewise
//! (`kafka.sasl_password_file`, `KAFKA_SASL_PASSWORD`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{DeserializeOwned, DeserializeSeed, Error as _, IntoDeserializer, MapAccess};
use serde::{Deserialize, Deserializer, Serialize};

use crate::metadata::MetadataField;
use crate::times::TimeZone;

/// A configuration problem, naming the key (or the file) it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A password. Its `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(secret: String) -> Password {
        Password(secret)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("(none)")
        } else {
            f.write_str("***")
        }
    }
}

/// Where the password comes from when the file names no `password_file`.
pub const PASSWORD_ENV: &str = "MYSQL_PASSWORD";
/// Where the SASL password comes from when the file names no `sasl_password_file`.
pub const SASL_PASSWORD_ENV: &str = "KAFKA_SASL_PASSWORD";

/// The secrets the environment provides (passed in so that tests do not
/// touch the process environment).
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvSecrets<'a> {
    /// `MYSQL_PASSWORD`
    pub mysql_password: Option<&'a str>,
    /// `KAFKA_SASL_PASSWORD`
    pub sasl_password: Option<&'a str>,
}

/// The validated configuration: every field is usable as it is. Its shape is
/// the file's: one struct a table, one field a key (README.md, "Configuration
/// reference").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub mysql: MysqlConfig,
    #[serde(default)]
    pub commit: CommitConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub worker: WorkerConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The file this configuration was read from (pid and status files sit beside
    /// the log directory derived from it).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

// ---------------------------------------------------------------------------
// [kafka]

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port` of one or more brokers.
    #[serde(deserialize_with = "brokers")]
    pub brokers: Vec<String>,
    #[serde(deserialize_with = "kafka_name")]
    pub topic: String,
    /// Empty means every partition of the topic (static assignment only).
    #[serde(default, deserialize_with = "partitions")]
    pub partitions: Vec<i32>,
    /// Who decides the partitions this process reads: its config
    /// (`static`) or the consumer group (`group`).
    #[serde(default, deserialize_with = "one_of")]
    pub assignment: Assignment,
    /// Static group membership (`group.instance.id`): a restart within the
    /// session timeout keeps the member's partitions. Group assignment only.
    #[serde(default, deserialize_with = "optional_text")]
    pub group_instance_id: Option<String>,
    #[serde(deserialize_with = "kafka_name")]
    pub group: String,
    #[serde(default = "default_client_id", deserialize_with = "not_empty")]
    pub client_id: String,
    #[serde(default, deserialize_with = "one_of")]
    pub offset_reset: OffsetReset,
    #[serde(
        default = "default_fetch_max_bytes",
        deserialize_with = "int::<_, i32, 1, 268_435_456>"
    )]
    pub fetch_max_bytes_per_partition: i32,
    #[serde(
        rename = "fetch_max_wait_ms",
        default = "default_fetch_max_wait",
        deserialize_with = "millis::<_, 0, 10_000>"
    )]
    pub fetch_max_wait: Duration,
    #[serde(
        default = "default_fetch_min_bytes",
        deserialize_with = "int::<_, i32, 1, 2_147_483_647>"
    )]
    pub fetch_min_bytes: i32,
    /// With more partitions than this, librdkafka fetches this many at a
    /// time, in turn (static assignment; `budget.rs`). 0: twice
    /// `mysql.max_connections`, and at least 8.
    #[serde(default, deserialize_with = "int::<_, usize, 0, 100_000>")]
    pub fetch_window: usize,
    #[serde(default, deserialize_with = "one_of")]
    pub client: ClientKind,
    /// How the service reaches the brokers (librdkafka only), with the SASL
    /// and TLS keys below; `sasl()` gives the credentials when it uses SASL.
    #[serde(default, deserialize_with = "one_of")]
    pub security_protocol: SecurityProtocol,
    #[serde(default, deserialize_with = "optional_one_of")]
    pub sasl_mechanism: Option<SaslMechanism>,
    #[serde(default, deserialize_with = "optional_text")]
    pub sasl_username: Option<String>,
    /// `""` or none: the password comes from `KAFKA_SASL_PASSWORD`.
    #[serde(default, deserialize_with = "optional_path")]
    pub sasl_password_file: Option<PathBuf>,
    /// Read from `sasl_password_file` or the environment, never from the file.
    #[serde(skip)]
    pub sasl_password: Password,
    #[serde(default, deserialize_with = "optional_path")]
    pub ssl_ca_location: Option<PathBuf>,
    #[serde(default, deserialize_with = "optional_path")]
    pub ssl_certificate_location: Option<PathBuf>,
    #[serde(default, deserialize_with = "optional_path")]
    pub ssl_key_location: Option<PathBuf>,
    /// Other librdkafka properties, passed through (`[kafka.properties]`).
    #[serde(default, deserialize_with = "properties")]
    pub properties: BTreeMap<String, String>,
}

fn default_client_id() -> String {
    "kafka2mysql".to_string()
}

fn default_fetch_max_bytes() -> i32 {
    524_288
}

fn default_fetch_max_wait() -> Duration {
    Duration::from_millis(100)
}

fn default_fetch_min_bytes() -> i32 {
    1
}

/// SASL credentials (`KafkaConfig::sasl`).
#[derive(Debug, Clone, Copy)]
pub struct Sasl<'a> {
    pub mechanism: SaslMechanism,
    pub username: &'a str,
    pub password: &'a Password,
}

impl KafkaConfig {
    /// The SASL credentials when `security_protocol` is `sasl_*`; validation
    /// makes sure that they are all there then.
    pub fn sasl(&self) -> Option<Sasl<'_>> {
        if !self.security_protocol.uses_sasl() {
            return None;
        }
        Some(Sasl {
            mechanism: self.sasl_mechanism?,
            username: self.sasl_username.as_deref()?,
            password: &self.sasl_password,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffsetReset {
    #[default]
    Earliest,
    Latest,
    Fail,
}

/// Which Kafka client the service uses (`kafka.client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientKind {
    /// librdkafka: Kafka 0.11 to 4.x, TLS, SASL, every codec, read committed.
    #[default]
    Librdkafka,
    /// The pure-Rust `kafka` crate: Kafka 0.10 to 3.9, plaintext only.
    KafkaRust,
}

/// Who decides which partitions the process reads (`kafka.assignment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Assignment {
    /// `kafka.partitions`, or every partition of the topic, for the life of
    /// the process.
    #[default]
    Static,
    /// The consumer group's members share the topic's partitions
    /// (cooperative-sticky), and move them when members come and go.
    Group,
}

/// `kafka.security_protocol`, spelled as librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// librdkafka's name for it (`security.protocol`): the file's.
    pub fn name(self) -> String {
        name_of(self)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// `kafka.sasl_mechanism`, spelled as librdkafka's `sasl.mechanisms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// librdkafka's name for it (`sasl.mechanisms`): the file's.
    pub fn name(self) -> String {
        name_of(self)
    }
}

/// librdkafka properties the service sets itself: the pass-through table
/// must not change them (`[kafka.properties]`).
const OWNED_PROPERTIES: &[(&str, &str)] = &[
    ("group.id", "kafka.group"),
    ("bootstrap.servers", "kafka.brokers"),
    ("metadata.broker.list", "kafka.brokers"),
    ("client.id", "kafka.client_id"),
    (
        "enable.auto.commit",
        "offsets are committed only after the rows are in MySQL",
    ),
    (
        "enable.auto.offset.store",
        "offsets are committed only after the rows are in MySQL",
    ),
    ("auto.offset.reset", "kafka.offset_reset"),
    (
        "isolation.level",
        "the service reads committed records only",
    ),
    (
        "enable.partition.eof",
        "the service uses it to pass transaction markers",
    ),
    ("group.instance.id", "kafka.group_instance_id"),
    ("partition.assignment.strategy", "kafka.assignment"),
    ("security.protocol", "kafka.security_protocol"),
    ("sasl.mechanism", "kafka.sasl_mechanism"),
    ("sasl.mechanisms", "kafka.sasl_mechanism"),
    ("sasl.username", "kafka.sasl_username"),
    ("ssl.ca.location", "kafka.ssl_ca_location"),
    ("ssl.certificate.location", "kafka.ssl_certificate_location"),
    ("ssl.key.location", "kafka.ssl_key_location"),
];

// ---------------------------------------------------------------------------
// [mysql]

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    /// Where the database is, parsed once (`MysqlTarget`); never a password.
    pub url: MysqlTarget,
    /// `""` or none: the password comes from `MYSQL_PASSWORD`.
    #[serde(default, deserialize_with = "optional_path")]
    pub password_file: Option<PathBuf>,
    /// Read from `password_file` or the environment, never from the file.
    #[serde(skip)]
    pub password: Password,
    #[serde(deserialize_with = "identifier")]
    pub table: String,
    #[serde(default, deserialize_with = "identifiers")]
    pub key_columns: Vec<String>,
    #[serde(default, deserialize_with = "one_of")]
    pub write_mode: WriteMode,
    #[serde(default = "default_delete_on_tombstone")]
    pub delete_on_tombstone: bool,
    #[serde(default, deserialize_with = "one_of")]
    pub unknown_fields: UnknownFields,
    #[serde(default = "default_dead_letter_table", deserialize_with = "identifier")]
    pub dead_letter_table: String,
    #[serde(default, deserialize_with = "one_of")]
    pub delivery: Delivery,
    #[serde(default = "default_offset_table", deserialize_with = "identifier")]
    pub offset_table: String,
    /// Exactly-once: a stored offset outside the log moves as
    /// `kafka.offset_reset` says instead of stopping the partition. Off by
    /// default: in exactly-once mode, moving a stored position that the log
    /// no longer holds either skips records or applies them again, so the
    /// operator chooses (kafka2mysql reset-offsets) unless told otherwise here.
    #[serde(default)]
    pub exactly_once_auto_reset: bool,
    #[serde(default, deserialize_with = "one_of")]
    pub record_format: RecordFormat,
    /// Upserts change a row only when this column's incoming value is at
    /// least the stored one (`mysql/sink.rs`, `insert_sql`).
    #[serde(default, deserialize_with = "optional_identifier")]
    pub version_column: Option<String>,
    /// The session's zone: zoned times are converted to it (`times.rs`).
    #[serde(default, deserialize_with = "time_zone")]
    pub time_zone: TimeZone,
    /// The workers' connections, shared by all partitions (`mysql/pool.rs`).
    #[serde(
        default = "default_max_connections",
        deserialize_with = "int::<_, usize, 1, 10_000>"
    )]
    pub max_connections: usize,
    /// `[mysql.metadata_columns]`: column name and what it holds
    /// (`metadata.rs`), by column name.
    #[serde(default, deserialize_with = "metadata_columns")]
    pub metadata_columns: Vec<(String, MetadataField)>,
}

fn default_delete_on_tombstone() -> bool {
    true
}

fn default_max_connections() -> usize {
    8
}

fn default_dead_letter_table() -> String {
    "kafka2mysql_dead_letters".to_string()
}

fn default_offset_table() -> String {
    "kafka2mysql_offsets".to_string()
}

/// `mysql.url`, parsed once when the file is read: the connection options
/// (host, port, user and the URL's parameters) and the database, which the
/// URL must name. It never holds a password.
#[derive(Clone)]
pub struct MysqlTarget {
    /// The URL as written, for messages.
    url: String,
    opts: mysql::Opts,
    database: String,
}

impl MysqlTarget {
    fn parse(url: &str) -> Result<MysqlTarget, String> {
        let opts = mysql::Opts::from_url(url).map_err(|e| format!("not a MySQL URL: {e}"))?;
        if opts.get_pass().is_some() || url_has_password(url) {
            return Err(
                "must not contain a password; use the MYSQL_PASSWORD environment \
                        variable or mysql.password_file"
                    .to_string(),
            );
        }
        let database = match opts.get_db_name() {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => return Err("must name the database (mysql://user@host:port/DATABASE)".to_string()),
        };
        Ok(MysqlTarget {
            url: url.to_string(),
            opts,
            database,
        })
    }

    /// The database named in the URL.
    pub fn database(&self) -> &str {
        &self.database
    }
}

impl fmt::Display for MysqlTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// The URL as written: `mysql::Opts`' own `Debug` is long and says nothing
/// the URL does not.
impl fmt::Debug for MysqlTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.url, f)
    }
}

impl<'de> Deserialize<'de> for MysqlTarget {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<MysqlTarget, D::Error> {
        let url = String::deserialize(deserializer)?;
        MysqlTarget::parse(&url).map_err(D::Error::custom)
    }
}

/// `mysql://user:secret@host/db`: a colon in the user-info part means a
/// password, even an empty one.
fn url_has_password(url: &str) -> bool {
    let Some(rest) = url.split_once("://").map(|(_, r)| r) else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => userinfo.contains(':'),
        None => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    #[default]
    Upsert,
    Insert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownFields {
    #[default]
    Ignore,
    DeadLetter,
}

/// How a record's value holds the row (`mysql.record_format`; README.md,
/// "Records to rows").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordFormat {
    /// A JSON object whose fields are the columns.
    #[default]
    Json,
    /// Kafka Connect's JSON converter: `{"schema": ..., "payload": {...}}`.
    ConnectJson,
    /// A Debezium change event, with or without the Connect envelope.
    Debezium,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    #[default]
    AtLeastOnce,
    ExactlyOnce,
}

// ---------------------------------------------------------------------------
// [commit], [retry], [worker], [log], [metrics]: every key has a default,
// given by the `Default` impl under each struct.

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommitConfig {
    #[serde(deserialize_with = "int::<_, u64, 1, UNBOUNDED>")]
    pub every_messages: u64,
    #[serde(rename = "interval_ms", deserialize_with = "millis::<_, 1, UNBOUNDED>")]
    pub interval: Duration,
}

impl Default for CommitConfig {
    fn default() -> CommitConfig {
        CommitConfig {
            every_messages: 1000,
            interval: Duration::from_millis(5000),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(deserialize_with = "int::<_, u32, 0, 1000>")]
    pub technical_attempts: u32,
    #[serde(deserialize_with = "int::<_, u32, 0, 1000>")]
    pub business_attempts: u32,
    #[serde(
        rename = "backoff_initial_ms",
        deserialize_with = "millis::<_, 1, UNBOUNDED>"
    )]
    pub backoff_initial: Duration,
    /// Not less than `backoff_initial` (`validate`).
    #[serde(
        rename = "backoff_max_ms",
        deserialize_with = "millis::<_, 1, UNBOUNDED>"
    )]
    pub backoff_max: Duration,
    #[serde(deserialize_with = "int::<_, u32, 1, 4_294_967_295>")]
    pub dead_letter_burst: u32,
    /// This many records in a row failing alike (`error::Alike`) are a fault
    /// of the table, not bad records: the partition blocks, none of them is
    /// dead-lettered. 0 turns the rule off.
    #[serde(deserialize_with = "int::<_, u32, 0, 4_294_967_295>")]
    pub schema_fault_records: u32,
    #[serde(deserialize_with = "error_codes")]
    pub extra_technical_codes: Vec<u16>,
}

impl Default for RetryConfig {
    fn default() -> RetryConfig {
        RetryConfig {
            technical_attempts: 5,
            business_attempts: 3,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_millis(30_000),
            dead_letter_burst: 1000,
            // Ten records in a row failing alike are rare among bad records
            // and come within seconds of a change of the table.
            schema_fault_records: 10,
            extra_technical_codes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    #[serde(deserialize_with = "int::<_, usize, 1, 1024>")]
    pub queue_batches: usize,
    /// The records the process may hold, for all partitions together: the
    /// client's prefetch and the batches waiting for or held by the
    /// workers (`budget.rs`).
    #[serde(deserialize_with = "int::<_, usize, 1_048_576, 1_099_511_627_776>")]
    pub max_buffered_bytes: usize,
    #[serde(deserialize_with = "int::<_, usize, 1, 65_535>")]
    pub max_batch_rows: usize,
    #[serde(deserialize_with = "int::<_, usize, 1, 268_435_456>")]
    pub max_record_bytes: usize,
    #[serde(
        rename = "shutdown_timeout_ms",
        deserialize_with = "millis::<_, 1, UNBOUNDED>"
    )]
    pub shutdown_timeout: Duration,
}

impl Default for WorkerConfig {
    fn default() -> WorkerConfig {
        WorkerConfig {
            queue_batches: 2,
            // 8 partitions x 5 x 512 KiB: at 8 partitions the fetch size and
            // the queues stay what they were before the budget, and so does
            // the peak RSS at any partition count (README.md, "How it
            // works").
            max_buffered_bytes: 20 * 1024 * 1024,
            max_batch_rows: 500,
            max_record_bytes: 1_048_576,
            shutdown_timeout: Duration::from_millis(30_000),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `None` (or `""` in the file) means stderr only.
    #[serde(deserialize_with = "optional_path")]
    pub file: Option<PathBuf>,
    #[serde(deserialize_with = "one_of")]
    pub level: LogLevel,
    #[serde(
        rename = "stats_interval_ms",
        deserialize_with = "millis::<_, 1, UNBOUNDED>"
    )]
    pub stats_interval: Duration,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            file: None,
            level: LogLevel::Info,
            stats_interval: Duration::from_millis(60_000),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn to_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// The Prometheus metrics endpoint (`metrics.rs`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where `GET /metrics` is served; `None` (the default, or `""`) serves
    /// nothing.
    #[serde(deserialize_with = "listen_address")]
    pub listen: Option<SocketAddr>,
}

// ---------------------------------------------------------------------------
// Reading, validating, and the secrets.

impl Config {
    /// Reads and validates the file; the password is taken from the
    /// environment variable `MYSQL_PASSWORD` unless `mysql.password_file` is set.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(path.display().to_string(), format!("cannot read: {e}"))
        })?;
        let mysql_password = std::env::var(PASSWORD_ENV).ok();
        let sasl_password = std::env::var(SASL_PASSWORD_ENV).ok();
        let secrets = EnvSecrets {
            mysql_password: mysql_password.as_deref(),
            sasl_password: sasl_password.as_deref(),
        };
        // Relative paths in the file (log.file, mysql.password_file) are
        // relative to its directory, whatever the working directory.
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut config = Config::parse_with(&text, secrets, dir)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Validates a configuration text. `env_password` is the value of
    /// `MYSQL_PASSWORD`, passed in so that tests do not touch the environment.
    pub fn parse(text: &str, env_password: Option<&str>) -> Result<Config, ConfigError> {
        Config::parse_with(
            text,
            EnvSecrets {
                mysql_password: env_password,
                sasl_password: None,
            },
            Path::new("."),
        )
    }

    /// Like `parse`, with every secret the environment may provide and
    /// relative paths taken from `dir`.
    pub fn parse_with(
        text: &str,
        secrets: EnvSecrets<'_>,
        dir: &Path,
    ) -> Result<Config, ConfigError> {
        let mut config: Config =
            serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(key_error)?;
        config.resolve_paths(dir);
        config.validate()?;
        config.read_secrets(secrets)?;
        Ok(config)
    }

    /// The MySQL connection options: the URL plus the password from the
    /// environment or the password file.
    pub fn mysql_opts(&self) -> mysql::Opts {
        let mut builder = mysql::OptsBuilder::from_opts(self.mysql.url.opts.clone())
            .tcp_connect_timeout(Some(Duration::from_secs(5)))
            .read_timeout(Some(Duration::from_secs(120)))
            .write_timeout(Some(Duration::from_secs(120)))
            // Zoned times are converted to this zone (`times.rs`); the
            // session must read them, and TIMESTAMP columns, in the same.
            .init(vec![format!(
                "SET time_zone = '{}'",
                self.mysql.time_zone.sql_offset()
            )]);
        if !self.mysql.password.is_empty() {
            builder = builder.pass(Some(self.mysql.password.expose().to_string()));
        }
        mysql::Opts::from(builder)
    }

    /// The database named in the URL.
    pub fn database(&self) -> &str {
        self.mysql.url.database()
    }

    /// Relative paths in the file are relative to its directory `dir`.
    fn resolve_paths(&mut self, dir: &Path) {
        let kafka = &mut self.kafka;
        for path in [
            &mut kafka.sasl_password_file,
            &mut kafka.ssl_ca_location,
            &mut kafka.ssl_certificate_location,
            &mut kafka.ssl_key_location,
            &mut self.mysql.password_file,
            &mut self.log.file,
        ]
        .into_iter()
        .flatten()
        {
            *path = dir.join(&*path);
        }
    }

    /// The rules that span keys; each key on its own was checked as it was
    /// read.
    fn validate(&self) -> Result<(), ConfigError> {
        let kafka = &self.kafka;
        if kafka.security_protocol.uses_sasl() {
            if kafka.sasl_mechanism.is_none() {
                return Err(ConfigError::new(
                    "kafka.sasl_mechanism",
                    "required with a sasl_* security_protocol",
                ));
            }
            if kafka.sasl_username.is_none() {
                return Err(ConfigError::new(
                    "kafka.sasl_username",
                    "required key is missing",
                ));
            }
        } else {
            for (set, key) in [
                (kafka.sasl_mechanism.is_some(), "kafka.sasl_mechanism"),
                (kafka.sasl_username.is_some(), "kafka.sasl_username"),
                (
                    kafka.sasl_password_file.is_some(),
                    "kafka.sasl_password_file",
                ),
            ] {
                if set {
                    return Err(ConfigError::new(
                        key,
                        "needs security_protocol = \"sasl_plaintext\" or \"sasl_ssl\"",
                    ));
                }
            }
        }
        if kafka.assignment == Assignment::Group {
            if !kafka.partitions.is_empty() {
                return Err(ConfigError::new(
                    "kafka.partitions",
                    "must be empty with assignment = \"group\": the group decides the partitions",
                ));
            }
            if kafka.client == ClientKind::KafkaRust {
                return Err(ConfigError::new(
                    "kafka.assignment",
                    "\"group\" needs client = \"librdkafka\" (the kafka crate has no group membership)",
                ));
            }
        } else if kafka.group_instance_id.is_some() {
            return Err(ConfigError::new(
                "kafka.group_instance_id",
                "needs assignment = \"group\"",
            ));
        }
        if kafka.client == ClientKind::KafkaRust {
            if kafka.security_protocol != SecurityProtocol::Plaintext
                || kafka.ssl_ca_location.is_some()
                || kafka.ssl_certificate_location.is_some()
                || kafka.ssl_key_location.is_some()
            {
                return Err(ConfigError::new(
                    "kafka.client",
                    "\"kafka-rust\" speaks plaintext only; use client = \"librdkafka\" for TLS and SASL",
                ));
            }
            if !kafka.properties.is_empty() {
                return Err(ConfigError::new(
                    "kafka.properties",
                    "are librdkafka properties; client = \"kafka-rust\" takes none",
                ));
            }
        }

        let mysql = &self.mysql;
        if mysql.key_columns.is_empty() && mysql.write_mode == WriteMode::Upsert {
            return Err(ConfigError::new(
                "mysql.key_columns",
                "required when write_mode = \"upsert\"",
            ));
        }
        if mysql.key_columns.is_empty() && mysql.delete_on_tombstone {
            return Err(ConfigError::new(
                "mysql.key_columns",
                "required when delete_on_tombstone = true (set it to false for tables without a key)",
            ));
        }
        if mysql.record_format == RecordFormat::Debezium && mysql.write_mode != WriteMode::Upsert {
            return Err(ConfigError::new(
                "mysql.write_mode",
                "must be \"upsert\" with record_format = \"debezium\" (updates replace rows)",
            ));
        }
        if let Some(name) = &mysql.version_column {
            if mysql.write_mode != WriteMode::Upsert {
                return Err(ConfigError::new(
                    "mysql.version_column",
                    "guards upserts: needs write_mode = \"upsert\"",
                ));
            }
            if mysql
                .key_columns
                .iter()
                .any(|k| k.eq_ignore_ascii_case(name))
            {
                return Err(ConfigError::new(
                    "mysql.version_column",
                    format!("{name:?} is a key column; the version must be another column"),
                ));
            }
        }
        for (i, (column, field)) in mysql.metadata_columns.iter().enumerate() {
            let key = format!("mysql.metadata_columns.{column}");
            let same = |other: &str| other.eq_ignore_ascii_case(column);
            if mysql.key_columns.iter().any(|k| same(k))
                || mysql.version_column.as_deref().is_some_and(same)
            {
                return Err(ConfigError::new(
                    key,
                    "is a key column or the version column; metadata columns are written, never compared",
                ));
            }
            if mysql.metadata_columns[..i].iter().any(|(c, _)| same(c)) {
                return Err(ConfigError::new(key, "names a column twice"));
            }
            match field {
                MetadataField::Source(_) if mysql.record_format != RecordFormat::Debezium => {
                    return Err(ConfigError::new(
                        key,
                        "source fields need record_format = \"debezium\"",
                    ))
                }
                MetadataField::Timestamp if kafka.client == ClientKind::KafkaRust => {
                    return Err(ConfigError::new(
                        key,
                        "kafka.client = \"kafka-rust\" does not read record timestamps; use \"librdkafka\"",
                    ))
                }
                _ => {}
            }
        }
        if mysql.dead_letter_table == mysql.table || mysql.offset_table == mysql.table {
            return Err(ConfigError::new(
                "mysql.table",
                "must differ from dead_letter_table and offset_table",
            ));
        }

        if self.retry.backoff_max < self.retry.backoff_initial {
            return Err(ConfigError::new(
                "retry.backoff_max_ms",
                "must not be less than retry.backoff_initial_ms",
            ));
        }
        Ok(())
    }

    /// The passwords, from their files or from the environment.
    fn read_secrets(&mut self, secrets: EnvSecrets<'_>) -> Result<(), ConfigError> {
        let kafka = &mut self.kafka;
        if kafka.security_protocol.uses_sasl() {
            kafka.sasl_password = match &kafka.sasl_password_file {
                Some(path) => read_password_file(path, "kafka.sasl_password_file")?,
                None => match secrets.sasl_password {
                    Some(p) if !p.is_empty() => Password::new(p.to_string()),
                    _ => {
                        return Err(ConfigError::new(
                            "kafka.sasl_password_file",
                            format!("a SASL password is needed: set kafka.sasl_password_file or {SASL_PASSWORD_ENV}"),
                        ))
                    }
                },
            };
        }
        self.mysql.password = match &self.mysql.password_file {
            Some(path) => read_password_file(path, "mysql.password_file")?,
            None => Password::new(secrets.mysql_password.unwrap_or("").to_string()),
        };
        Ok(())
    }
}

fn read_password_file(path: &Path, key: &str) -> Result<Password, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {path:?}: {e}")))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(ConfigError::new(
            key,
            format!("{path:?} is readable by group or others; chmod 600 it"),
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {path:?}: {e}")))?;
    Ok(Password::new(
        text.trim_end_matches(['\r', '\n']).to_string(),
    ))
}

/// A serde error with the path `serde_path_to_error` tracked, as a
/// `ConfigError` naming the full key: `kafka.partitions`, and for an unknown
/// or a missing key the key itself with its table.
fn key_error(error: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
    let path = error.path().to_string();
    let inner = error.into_inner();
    let message = inner
        .message()
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let at_root = path == "." || path.is_empty();
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .map(|rest| rest.split('`').next().unwrap_or("").to_string())
    };
    let key_in_table = |name: String| {
        if at_root {
            name
        } else if path == name || path.ends_with(&format!(".{name}")) {
            path.clone()
        } else {
            format!("{path}.{name}")
        }
    };
    if let Some(name) = quoted("unknown field `") {
        return ConfigError::new(key_in_table(name), "unknown key");
    }
    if let Some(name) = quoted("missing field `") {
        return ConfigError::new(key_in_table(name), "required key is missing");
    }
    if at_root {
        return ConfigError::new(
            "config",
            format!("not valid TOML: {}", inner.to_string().trim()),
        );
    }
    ConfigError::new(path, message)
}

// ---------------------------------------------------------------------------
// Readers of single keys, named in the `deserialize_with` of their fields.
// An error here is a plain message; `key_error` puts the key in front.

/// No upper bound for `int` and `millis` beyond TOML's own.
const UNBOUNDED: i64 = i64::MAX;

/// An integer key in `MIN..=MAX`, read as TOML gives it (i64) so that a
/// wrong type says `expected i64`, and converted to the field's type `T`,
/// which holds `MAX` (`every_bound_is_accepted_and_one_past_it_refused`).
fn int<'de, D, T, const MIN: i64, const MAX: i64>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    let value = i64::deserialize(deserializer)?;
    if value < MIN {
        return Err(D::Error::custom(match MIN {
            0 => format!("must not be negative, got {value}"),
            1 => format!("must be greater than 0, got {value}"),
            _ => format!("must be at least {MIN}, got {value}"),
        }));
    }
    if value > MAX {
        return Err(D::Error::custom(format!(
            "must be at most {MAX}, got {value}"
        )));
    }
    T::try_from(value).map_err(|_| D::Error::custom(format!("{value} is out of range")))
}

/// A `*_ms` key: milliseconds in `MIN..=MAX`, as a `Duration`.
fn millis<'de, D, const MIN: i64, const MAX: i64>(deserializer: D) -> Result<Duration, D::Error>
where
    D: Deserializer<'de>,
{
    int::<D, u64, MIN, MAX>(deserializer).map(Duration::from_millis)
}

/// An enum key by its name as the enum's `Deserialize` spells it; any other
/// name is refused with the list: `expected upsert | insert, got "merge"`.
fn one_of<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let name = String::deserialize(deserializer)?;
    named::<T>(&name).map_err(D::Error::custom)
}

/// Like `one_of`, with `""` for none.
fn optional_one_of<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    match Option::<String>::deserialize(deserializer)? {
        Some(name) if !name.is_empty() => named::<T>(&name).map(Some).map_err(D::Error::custom),
        _ => Ok(None),
    }
}

fn named<T: DeserializeOwned>(name: &str) -> Result<T, String> {
    T::deserialize(name.into_deserializer()).map_err(|UnknownName { expected }| {
        format!("expected {}, got {name:?}", expected.join(" | "))
    })
}

/// The error type `named` reads an enum with: it keeps the names the enum's
/// derived `Deserialize` accepts, so that they are spelled in one place.
#[derive(Debug)]
struct UnknownName {
    expected: &'static [&'static str],
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected one of {:?}", self.expected)
    }
}

impl std::error::Error for UnknownName {}

impl serde::de::Error for UnknownName {
    fn custom<M: fmt::Display>(_: M) -> UnknownName {
        UnknownName { expected: &[] }
    }

    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> UnknownName {
        UnknownName { expected }
    }
}

/// An enum's name as its `Serialize` (the same attributes as its
/// `Deserialize`) spells it.
fn name_of<T: Serialize>(value: T) -> String {
    match toml::Value::try_from(value) {
        Ok(toml::Value::String(name)) => name,
        _ => String::new(),
    }
}

/// A string key where `""` means none.
fn optional_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.filter(|text| !text.is_empty()))
}

/// A path key where `""` means none; `Config::resolve_paths` makes it
/// relative to the file's directory.
fn optional_path<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(optional_text(deserializer)?.map(PathBuf::from))
}

fn not_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.is_empty() {
        return Err(D::Error::custom("must not be empty"));
    }
    Ok(text)
}

/// A table or column name: letters, digits, `_` and `$`, not starting with a
/// digit, at most 64 characters. Names are still quoted in SQL; this keeps
/// them free of surprises in logs and error messages.
fn is_plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

fn plain_identifier(name: String) -> Result<String, String> {
    if !is_plain_identifier(&name) {
        return Err(format!(
            "{name:?} is not a plain identifier (letters, digits, _ and $; at most 64)"
        ));
    }
    Ok(name)
}

fn identifier<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    plain_identifier(String::deserialize(deserializer)?).map_err(D::Error::custom)
}

fn optional_identifier<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(plain_identifier)
        .transpose()
        .map_err(D::Error::custom)
}

/// A list of identifiers; a bad one is reported for the whole key.
fn identifiers<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .into_iter()
        .map(plain_identifier)
        .collect::<Result<_, _>>()
        .map_err(D::Error::custom)
}

/// Topic and group names as Kafka allows them: `[a-zA-Z0-9._-]`, at most 249.
fn kafka_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let name = String::deserialize(deserializer)?;
    let ok = !name.is_empty()
        && name.len() <= 249
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-');
    if !ok {
        return Err(D::Error::custom(format!(
            "{name:?} is not a valid Kafka name (letters, digits, '.', '_', '-')"
        )));
    }
    Ok(name)
}

fn brokers<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let brokers = Vec::<String>::deserialize(deserializer)?;
    if brokers.is_empty() {
        return Err(D::Error::custom("needs at least one host:port"));
    }
    for broker in &brokers {
        let ok = broker
            .rsplit_once(':')
            .map(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
            .unwrap_or(false);
        if !ok {
            return Err(D::Error::custom(format!("{broker:?} is not host:port")));
        }
    }
    Ok(brokers)
}

fn partitions<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<i32>, D::Error> {
    let mut partitions = Vec::new();
    for p in Vec::<i64>::deserialize(deserializer)? {
        let partition = i32::try_from(p)
            .ok()
            .filter(|p| *p >= 0)
            .ok_or_else(|| D::Error::custom(format!("{p} is not a partition number")))?;
        if partitions.contains(&partition) {
            return Err(D::Error::custom(format!("partition {p} is listed twice")));
        }
        partitions.push(partition);
    }
    Ok(partitions)
}

fn error_codes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u16>, D::Error> {
    Vec::<i64>::deserialize(deserializer)?
        .into_iter()
        .map(|code| match u16::try_from(code) {
            Ok(code) if code > 0 => Ok(code),
            _ => Err(D::Error::custom(format!(
                "{code} is not a MySQL error code"
            ))),
        })
        .collect()
}

fn time_zone<'de, D: Deserializer<'de>>(deserializer: D) -> Result<TimeZone, D::Error> {
    TimeZone::parse(&String::deserialize(deserializer)?).map_err(D::Error::custom)
}

/// `metrics.listen`: an IP address, not a host name, so that validating it
/// never waits for DNS; `""` for none.
fn listen_address<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let Some(text) = optional_text(deserializer)? else {
        return Ok(None);
    };
    text.parse().map(Some).map_err(|_| {
        D::Error::custom(format!(
            "expected an IP address and a port such as \"127.0.0.1:9187\", got {text:?}"
        ))
    })
}

/// `[kafka.properties]`: each value as librdkafka takes it, a string. A name
/// the service sets itself, or a secret, is refused at its own key
/// (`kafka.properties.enable.auto.commit`).
fn properties<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct Table;
    impl<'de> serde::de::Visitor<'de> for Table {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map")
        }

        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
            let mut properties = BTreeMap::new();
            while let Some(name) = map.next_key::<String>()? {
                // Read through a seed so that the error carries the name.
                let value = map.next_value_seed(Property { name: &name })?;
                properties.insert(name, value);
            }
            Ok(properties)
        }
    }
    deserializer.deserialize_map(Table)
}

/// `[mysql.metadata_columns]`: a column name and what it holds, each
/// refused at its own key (`mysql.metadata_columns.kafka_offset`); sorted by
/// column name.
fn metadata_columns<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<(String, MetadataField)>, D::Error> {
    struct Table;
    impl<'de> serde::de::Visitor<'de> for Table {
        type Value = Vec<(String, MetadataField)>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of column names to metadata")
        }

        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
            let mut columns = Vec::new();
            while let Some(name) = map.next_key::<String>()? {
                let field = map.next_value_seed(MetadataColumn { name: &name })?;
                columns.push((name, field));
            }
            columns.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(columns)
        }
    }
    deserializer.deserialize_map(Table)
}

struct MetadataColumn<'a> {
    name: &'a str,
}

impl<'de> DeserializeSeed<'de> for MetadataColumn<'_> {
    type Value = MetadataField;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<MetadataField, D::Error> {
        plain_identifier(self.name.to_string()).map_err(D::Error::custom)?;
        MetadataField::parse(&String::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

struct Property<'a> {
    name: &'a str,
}

impl<'de> DeserializeSeed<'de> for Property<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        let name = self.name;
        if let Some((_, owner)) = OWNED_PROPERTIES.iter().find(|(owned, _)| *owned == name) {
            return Err(D::Error::custom(format!("is set by the service ({owner})")));
        }
        if name.contains("password") || name.contains("secret") {
            return Err(D::Error::custom("secrets are never taken from the file"));
        }
        match toml::Value::deserialize(deserializer)? {
            toml::Value::String(s) => Ok(s),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            _ => Err(D::Error::custom("must be a string, a number or a boolean")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[kafka]
brokers = ["127.0.0.1:9092"]
topic = "orders"
group = "g"
[mysql]
url = "mysql://app@127.0.0.1:3306/app"
table = "orders"
key_columns = ["id"]
"#;

    fn err(text: &str) -> ConfigError {
        Config::parse(text, None).expect_err("config should be refused")
    }

    #[test]
    fn minimal_config_takes_the_documented_defaults() {
        let c = Config::parse(MINIMAL, Some("pw")).unwrap();
        assert_eq!(c.kafka.fetch_max_bytes_per_partition, 524_288);
        assert_eq!(c.kafka.fetch_max_wait, Duration::from_millis(100));
        assert_eq!(c.kafka.offset_reset, OffsetReset::Earliest);
        assert_eq!(c.kafka.client_id, "kafka2mysql");
        assert_eq!(c.mysql.write_mode, WriteMode::Upsert);
        assert_eq!(c.mysql.delivery, Delivery::AtLeastOnce);
        assert!(!c.mysql.exactly_once_auto_reset);
        assert_eq!(c.mysql.dead_letter_table, "kafka2mysql_dead_letters");
        assert_eq!(c.commit.every_messages, 1000);
        assert_eq!(c.retry.technical_attempts, 5);
        assert_eq!(c.retry.business_attempts, 3);
        assert_eq!(c.worker.queue_batches, 2);
        assert_eq!(c.worker.max_batch_rows, 500);
        assert_eq!(c.mysql.password.expose(), "pw");
        assert_eq!(c.metrics.listen, None, "metrics are off by default");
    }

    /// Group assignment: the group decides the partitions, so a list of
    /// them is refused; so is the `kafka` crate, which cannot join a group;
    /// `group_instance_id` only means something in a group.
    #[test]
    fn group_assignment_refuses_a_partition_list_and_kafka_rust() {
        let with = |lines: &str| MINIMAL.replace("[kafka]\n", &format!("[kafka]\n{lines}"));
        let group = "assignment = \"group\"\n";
        let c = Config::parse(
            &with(&format!("{group}group_instance_id = \"vm-1\"\n")),
            None,
        )
        .expect("valid");
        assert_eq!(c.kafka.assignment, Assignment::Group);
        assert_eq!(c.kafka.group_instance_id.as_deref(), Some("vm-1"));
        assert_eq!(
            Config::parse(MINIMAL, None).unwrap().kafka.assignment,
            Assignment::Static
        );
        for (lines, key) in [
            (format!("{group}partitions = [0, 1]\n"), "kafka.partitions"),
            (
                format!("{group}client = \"kafka-rust\"\n"),
                "kafka.assignment",
            ),
            (
                "group_instance_id = \"vm-1\"\n".to_string(),
                "kafka.group_instance_id",
            ),
        ] {
            let e = err(&with(&lines));
            assert_eq!(e.key, key, "{lines}: {e}");
        }
        let props = "[kafka.properties]\n\"group.instance.id\" = \"x\"\n[mysql]\n";
        let e = err(&with(group).replace("[mysql]\n", props));
        assert!(e.to_string().contains("kafka.group_instance_id"), "{e}");
    }

    /// Every default the README's configuration reference gives as a value
    /// is the one the service takes: writing it out changes nothing.
    #[test]
    fn the_readme_defaults_are_the_defaults() {
        let readme = include_str!("../README.md");
        let reference = readme
            .split("## Configuration reference")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("README.md has a configuration reference");
        let minimal = format!("{:?}", Config::parse(MINIMAL, None).unwrap());
        let mut checked = Vec::new();
        for row in reference.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let (key, default) = (cells[1], cells[2]);
            let (Some(key), Some(default)) = (
                key.strip_prefix('`').and_then(|k| k.strip_suffix('`')),
                default.strip_prefix('`').and_then(|d| d.strip_suffix('`')),
            ) else {
                continue; // required, none, or more than one key
            };
            let (table, name) = key.split_once('.').expect("table.key");
            if MINIMAL.contains(&format!("\n{name} = ")) {
                continue; // set by MINIMAL
            }
            let text = match table {
                "kafka" => MINIMAL.replace("[kafka]\n", &format!("[kafka]\n{name} = {default}\n")),
                "mysql" => format!("{MINIMAL}{name} = {default}\n"),
                _ => format!("{MINIMAL}\n[{table}]\n{name} = {default}\n"),
            };
            let with_default =
                Config::parse(&text, None).unwrap_or_else(|e| panic!("{key} = {default}: {e}"));
            assert_eq!(format!("{with_default:?}"), minimal, "{key} = {default}");
            checked.push(key);
        }
        assert!(checked.len() >= 35, "only {checked:?}");
    }

    /// The bounds of every integer key, each message naming the key.
    #[test]
    fn every_bound_is_accepted_and_one_past_it_refused() {
        let bounds: &[(&str, i64, i64)] = &[
            ("kafka.fetch_max_bytes_per_partition", 1, 268_435_456),
            ("kafka.fetch_max_wait_ms", 0, 10_000),
            ("kafka.fetch_min_bytes", 1, i32::MAX as i64),
            ("kafka.fetch_window", 0, 100_000),
            ("commit.every_messages", 1, i64::MAX),
            ("commit.interval_ms", 1, i64::MAX),
            ("retry.technical_attempts", 0, 1000),
            ("retry.business_attempts", 0, 1000),
            ("retry.backoff_initial_ms", 1, i64::MAX),
            ("retry.backoff_max_ms", 1, i64::MAX),
            ("retry.dead_letter_burst", 1, u32::MAX as i64),
            ("retry.schema_fault_records", 0, u32::MAX as i64),
            ("worker.queue_batches", 1, 1024),
            ("worker.max_buffered_bytes", 1_048_576, 1_099_511_627_776),
            ("worker.max_batch_rows", 1, 65_535),
            ("mysql.max_connections", 1, 10_000),
            ("worker.max_record_bytes", 1, 268_435_456),
            ("worker.shutdown_timeout_ms", 1, i64::MAX),
            ("log.stats_interval_ms", 1, i64::MAX),
        ];
        for &(key, min, max) in bounds {
            let (table, name) = key.split_once('.').unwrap();
            // The backoff's two ends are bounded by each other too.
            let other = match name {
                "backoff_initial_ms" => format!("backoff_max_ms = {}\n", i64::MAX),
                "backoff_max_ms" => "backoff_initial_ms = 1\n".to_string(),
                _ => String::new(),
            };
            let with = |value: i64| match table {
                "kafka" => MINIMAL.replace("[kafka]\n", &format!("[kafka]\n{name} = {value}\n")),
                "mysql" => MINIMAL.replace("[mysql]\n", &format!("[mysql]\n{name} = {value}\n")),
                _ => format!("{MINIMAL}\n[{table}]\n{other}{name} = {value}\n"),
            };
            for value in [min, max] {
                if let Err(e) = Config::parse(&with(value), None) {
                    panic!("{key} = {value} must be accepted: {e}");
                }
            }
            let below = match min {
                0 => format!("{key}: must not be negative, got -1"),
                1 => format!("{key}: must be greater than 0, got 0"),
                _ => format!("{key}: must be at least {min}, got {}", min - 1),
            };
            assert_eq!(err(&with(min - 1)).to_string(), below);
            if max < i64::MAX {
                assert_eq!(
                    err(&with(max + 1)).to_string(),
                    format!("{key}: must be at most {max}, got {}", max + 1)
                );
            }
        }
        let c = Config::parse(&format!("{MINIMAL}\n[commit]\ninterval_ms = 1234\n"), None).unwrap();
        assert_eq!(c.commit.interval, Duration::from_millis(1234));
    }

    /// Each enum key takes exactly the names the README gives, and says them
    /// when it gets another.
    #[test]
    fn enum_keys_take_their_documented_names() {
        let cases: &[(&str, &[&str])] = &[
            ("kafka.client", &["librdkafka", "kafka-rust"]),
            ("kafka.assignment", &["static", "group"]),
            (
                "kafka.security_protocol",
                &["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"],
            ),
            (
                "kafka.sasl_mechanism",
                &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"],
            ),
            ("kafka.offset_reset", &["earliest", "latest", "fail"]),
            ("mysql.write_mode", &["upsert", "insert"]),
            ("mysql.unknown_fields", &["ignore", "dead_letter"]),
            ("mysql.record_format", &["json", "connect_json", "debezium"]),
            ("mysql.delivery", &["at_least_once", "exactly_once"]),
            ("log.level", &["error", "warn", "info", "debug", "trace"]),
        ];
        let sasl = "security_protocol = \"sasl_ssl\"\nsasl_username = \"u\"\n";
        let secrets = EnvSecrets {
            mysql_password: None,
            sasl_password: Some("s"),
        };
        for &(key, names) in cases {
            let (table, name) = key.split_once('.').unwrap();
            let with = |value: &str| {
                let line = format!("{name} = {value:?}\n");
                match table {
                    "kafka" if name == "sasl_mechanism" => {
                        MINIMAL.replace("[kafka]\n", &format!("[kafka]\n{sasl}{line}"))
                    }
                    "kafka" if name == "security_protocol" && value.starts_with("sasl") => MINIMAL
                        .replace(
                            "[kafka]\n",
                            &format!(
                            "[kafka]\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"\n{line}"
                        ),
                        ),
                    "kafka" => MINIMAL.replace("[kafka]\n", &format!("[kafka]\n{line}")),
                    "mysql" => format!("{MINIMAL}{line}"),
                    _ => format!("{MINIMAL}\n[{table}]\n{line}"),
                }
            };
            for value in names {
                if let Err(e) = Config::parse_with(&with(value), secrets, Path::new(".")) {
                    panic!("{key} = {value:?} must be accepted: {e}");
                }
            }
            let shouted = names[0].to_uppercase();
            let wrong = if shouted == names[0] {
                names[0].to_lowercase()
            } else {
                shouted
            };
            let e = Config::parse_with(&with(&wrong), secrets, Path::new(".")).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("{key}: expected {}, got {wrong:?}", names.join(" | "))
            );
        }
        // librdkafka's names are the file's.
        assert_eq!(SecurityProtocol::SaslSsl.name(), "sasl_ssl");
        assert_eq!(SaslMechanism::ScramSha256.name(), "SCRAM-SHA-256");
    }

    #[test]
    fn the_mysql_url_is_parsed_once_with_its_parameters() {
        let text = MINIMAL.replace(
            "mysql://app@127.0.0.1:3306/app",
            "mysql://reader@db.example:3307/sales?prefer_socket=false&stmt_cache_size=7",
        );
        let c = Config::parse(&text, Some("pw")).unwrap();
        assert_eq!(c.database(), "sales");
        assert_eq!(
            c.mysql.url.to_string(),
            "mysql://reader@db.example:3307/sales?prefer_socket=false&stmt_cache_size=7"
        );
        let opts = c.mysql_opts();
        assert_eq!(opts.get_user(), Some("reader"));
        assert_eq!(opts.get_pass(), Some("pw"));
        assert_eq!(opts.get_ip_or_hostname(), "db.example");
        assert_eq!(opts.get_tcp_port(), 3307);
        assert_eq!(opts.get_db_name(), Some("sales"));
        assert!(!opts.get_prefer_socket(), "the URL's parameters are kept");
        assert_eq!(
            opts.get_stmt_cache_size(),
            7,
            "the URL's parameters are kept"
        );
        assert_eq!(opts.get_init(), ["SET time_zone = '+00:00'"]);
        assert_eq!(
            Config::parse(&text, None).unwrap().mysql_opts().get_pass(),
            None
        );
        let refused = [
            ("mysql://app:pw@h/db", "must not contain a password; use the MYSQL_PASSWORD environment variable or mysql.password_file"),
            ("mysql://app@h/db?password=pw", "must not contain a password; use the MYSQL_PASSWORD environment variable or mysql.password_file"),
            ("mysql://app@h:3306", "must name the database (mysql://user@host:port/DATABASE)"),
            ("postgres://app@h/db", "not a MySQL URL: URL scheme `postgres' is not supported"),
        ];
        for (url, message) in refused {
            let text = MINIMAL.replace("mysql://app@127.0.0.1:3306/app", url);
            assert_eq!(
                err(&text).to_string(),
                format!("mysql.url: {message}"),
                "{url}"
            );
        }
    }

    #[test]
    fn relative_paths_are_taken_from_the_config_directory() {
        let text = format!(
            "{}\n[log]\nfile = \"../logs/k.log\"\n",
            MINIMAL.replace(
                "[kafka]\n",
                "[kafka]\nsecurity_protocol = \"ssl\"\nssl_ca_location = \"ca.pem\"\n\
                 ssl_certificate_location = \"/etc/c.pem\"\nssl_key_location = \"\"\n"
            )
        );
        let c = Config::parse_with(&text, EnvSecrets::default(), Path::new("/srv/conf")).unwrap();
        assert_eq!(
            c.log.file.as_deref(),
            Some(Path::new("/srv/conf/../logs/k.log"))
        );
        assert_eq!(
            c.kafka.ssl_ca_location.as_deref(),
            Some(Path::new("/srv/conf/ca.pem"))
        );
        assert_eq!(
            c.kafka.ssl_certificate_location.as_deref(),
            Some(Path::new("/etc/c.pem"))
        );
        assert_eq!(c.kafka.ssl_key_location, None, "\"\" is none");
        assert!(c.kafka.sasl().is_none());
    }

    #[test]
    fn metadata_columns_are_validated_by_key() {
        let text = format!(
            "{MINIMAL}record_format = \"debezium\"\n[mysql.metadata_columns]\n\
             kafka_offset = \"offset\"\nat = \"timestamp\"\nbinlog = \"source.file\"\n"
        );
        let c = Config::parse(&text, None).unwrap();
        assert_eq!(
            c.mysql.metadata_columns,
            vec![
                ("at".to_string(), MetadataField::Timestamp),
                ("binlog".to_string(), MetadataField::Source("file".into())),
                ("kafka_offset".to_string(), MetadataField::Offset),
            ]
        );
        let cases = [
            (
                "[mysql.metadata_columns]\nk = \"source.\"",
                "mysql.metadata_columns.k: expected topic | partition | offset | timestamp | \
                 source.<field>, got \"source.\"",
            ),
            (
                "[mysql.metadata_columns]\nk = \"source.pos\"",
                "mysql.metadata_columns.k: source fields need record_format = \"debezium\"",
            ),
            (
                "[mysql.metadata_columns]\nid = \"offset\"",
                "mysql.metadata_columns.id: is a key column or the version column; metadata \
                 columns are written, never compared",
            ),
            (
                "[mysql.metadata_columns]\n\"a b\" = \"offset\"",
                "mysql.metadata_columns.a b: \"a b\" is not a plain identifier (letters, digits, _ \
                 and $; at most 64)",
            ),
        ];
        for (extra, message) in cases {
            let e = Config::parse(&format!("{MINIMAL}{extra}\n"), None).unwrap_err();
            assert_eq!(e.to_string(), message);
        }
        let text = MINIMAL.replace("[mysql]", "client = \"kafka-rust\"\n[mysql]");
        let e = Config::parse(
            &format!("{text}[mysql.metadata_columns]\nat = \"timestamp\"\n"),
            None,
        )
        .unwrap_err();
        assert_eq!(e.key, "mysql.metadata_columns.at");
    }

    #[test]
    fn metrics_listen_takes_an_address_and_port() {
        let text = format!("{MINIMAL}\n[metrics]\nlisten = \"127.0.0.1:9187\"\n");
        let c = Config::parse(&text, None).unwrap();
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9187".parse().unwrap()));
        let text = format!("{MINIMAL}\n[metrics]\nlisten = \"[::1]:9187\"\n");
        let c = Config::parse(&text, None).unwrap();
        assert_eq!(c.metrics.listen, Some("[::1]:9187".parse().unwrap()));
        let text = format!("{MINIMAL}\n[metrics]\nlisten = \"\"\n");
        assert_eq!(Config::parse(&text, None).unwrap().metrics.listen, None);
    }

    #[test]
    fn record_formats_and_time_zones() {
        let c = Config::parse(MINIMAL, None).unwrap();
        assert_eq!(c.mysql.record_format, RecordFormat::Json);
        assert_eq!(c.mysql.time_zone, TimeZone::UTC);
        assert_eq!(c.mysql.version_column, None);
        let text = format!("{MINIMAL}version_column = \"updated_at\"\n");
        let c = Config::parse(&text, None).unwrap();
        assert_eq!(c.mysql.version_column.as_deref(), Some("updated_at"));
        let text = format!("{MINIMAL}record_format = \"debezium\"\ntime_zone = \"-03:30\"\n");
        let c = Config::parse(&text, None).unwrap();
        assert_eq!(c.mysql.record_format, RecordFormat::Debezium);
        assert_eq!(c.mysql.time_zone.sql_offset(), "-03:30");
        let text = format!("{MINIMAL}record_format = \"connect_json\"\n");
        let c = Config::parse(&text, None).unwrap();
        assert_eq!(c.mysql.record_format, RecordFormat::ConnectJson);
        let cases = [
            (
                "record_format = \"avro\"",
                "mysql.record_format: expected json | connect_json | debezium, got \"avro\"",
            ),
            (
                "time_zone = \"Europe/Berlin\"",
                "mysql.time_zone: expected \"UTC\" or an offset such as \"+02:00\", got \
                 \"Europe/Berlin\" (named zones are not supported)",
            ),
            (
                "version_column = \"id\"",
                "mysql.version_column: \"id\" is a key column; the version must be another column",
            ),
            (
                "version_column = \"v\"\nwrite_mode = \"insert\"",
                "mysql.version_column: guards upserts: needs write_mode = \"upsert\"",
            ),
            (
                "record_format = \"debezium\"\nwrite_mode = \"insert\"",
                "mysql.write_mode: must be \"upsert\" with record_format = \"debezium\" \
                 (updates replace rows)",
            ),
        ];
        for (extra, message) in cases {
            let e = Config::parse(&format!("{MINIMAL}{extra}\n"), None).unwrap_err();
            assert_eq!(e.to_string(), message);
        }
    }

    #[test]
    fn the_sample_config_is_valid() {
        let text = include_str!("../conf/kafka2mysql.toml");
        Config::parse(text, None).expect("conf/kafka2mysql.toml must validate");
    }

    #[test]
    fn bad_configs_name_their_key() {
        let cases: &[(&str, &str)] = &[
            ("not toml [", "config"),
            (&MINIMAL.replace("topic = \"orders\"\n", ""), "kafka.topic"),
            (
                &MINIMAL.replace("[kafka]\n", "[kafka]\nbrokerz = [\"a:1\"]\n"),
                "kafka.brokerz",
            ),
            (
                &format!("{MINIMAL}\n[commit]\nevery_messages = \"many\"\n"),
                "commit.every_messages",
            ),
            (
                &format!("{MINIMAL}\nwrite_mode = \"merge\"\n"),
                "mysql.write_mode",
            ),
            (&MINIMAL.replace("app@", "app:secret@"), "mysql.url"),
            (
                &MINIMAL.replace("table = \"orders\"", "table = \"orders; drop\""),
                "mysql.table",
            ),
            (
                &format!("{MINIMAL}\n[worker]\nqueue_batches = 0\n"),
                "worker.queue_batches",
            ),
            (&format!("{MINIMAL}\n[bogus]\nx = 1\n"), "bogus"),
            (
                &MINIMAL.replace("key_columns = [\"id\"]", ""),
                "mysql.key_columns",
            ),
            (
                &MINIMAL.replace("\"127.0.0.1:9092\"", "\"nohost\""),
                "kafka.brokers",
            ),
            (
                &format!("{MINIMAL}\n[retry]\nbackoff_initial_ms = 10\nbackoff_max_ms = 5\n"),
                "retry.backoff_max_ms",
            ),
            (
                &format!("{MINIMAL}\n[log]\nlevel = \"loud\"\n"),
                "log.level",
            ),
            (
                &format!("{MINIMAL}\n[metrics]\nlisten = \"localhost:9187\"\n"),
                "metrics.listen",
            ),
            (
                &format!("{MINIMAL}\n[metrics]\nlisten = \"127.0.0.1\"\n"),
                "metrics.listen",
            ),
            (
                &format!("{MINIMAL}\n[metrics]\nport = 9187\n"),
                "metrics.port",
            ),
        ];
        for (text, key) in cases {
            let e = err(text);
            assert_eq!(&e.key, key, "for config:\n{text}\nerror was: {e}");
        }
    }

    #[test]
    fn password_never_shows_in_debug_output() {
        let c = Config::parse(MINIMAL, Some("s3cr3t-value")).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(shown.contains("***"));
    }

    #[test]
    fn password_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("k2m-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = MINIMAL.replace(
            "[mysql]\n",
            &format!("[mysql]\npassword_file = {:?}\n", file),
        );
        assert_eq!(err(&text).key, "mysql.password_file");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Config::parse(&text, Some("from-env")).unwrap();
        assert_eq!(c.mysql.password.expose(), "from-file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kafka_clients_and_security() {
        let with = |extra: &str| MINIMAL.replace("[kafka]\n", &format!("[kafka]\n{extra}\n"));
        let sasl = "security_protocol = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-512\"\nsasl_username = \"u\"";
        let secrets = EnvSecrets {
            mysql_password: None,
            sasl_password: Some("s3cret"),
        };
        let c = Config::parse_with(&with(sasl), secrets, Path::new(".")).expect("valid");
        assert_eq!(c.kafka.client, ClientKind::Librdkafka);
        let s = c.kafka.sasl().expect("sasl");
        assert_eq!(
            (s.mechanism.name().as_str(), s.username, s.password.expose()),
            ("SCRAM-SHA-512", "u", "s3cret")
        );
        assert!(!format!("{c:?}").contains("s3cret"));
        let refused = |text: &str, secrets: EnvSecrets<'_>| {
            Config::parse_with(text, secrets, Path::new("."))
                .expect_err("must be refused")
                .key
        };
        assert_eq!(
            refused(&with(sasl), EnvSecrets::default()),
            "kafka.sasl_password_file"
        );
        assert_eq!(
            refused(&with("security_protocol = \"sasl_ssl\""), secrets),
            "kafka.sasl_mechanism"
        );
        assert_eq!(
            refused(&with("sasl_username = \"u\""), secrets),
            "kafka.sasl_username"
        );
        assert_eq!(
            refused(
                &with("client = \"kafka-rust\"\nsecurity_protocol = \"ssl\""),
                secrets
            ),
            "kafka.client"
        );
        assert_eq!(refused(&with("client = \"java\""), secrets), "kafka.client");
        let props =
            |p: &str| MINIMAL.replace("[mysql]", &format!("[kafka.properties]\n{p}\n\n[mysql]"));
        assert_eq!(
            refused(&props("\"enable.auto.commit\" = true"), secrets),
            "kafka.properties.enable.auto.commit"
        );
        assert_eq!(
            refused(
                &props("\"isolation.level\" = \"read_uncommitted\""),
                secrets
            ),
            "kafka.properties.isolation.level"
        );
        assert_eq!(
            refused(&props("\"ssl.key.password\" = \"x\""), secrets),
            "kafka.properties.ssl.key.password"
        );
        let c = Config::parse_with(
            &props("\"socket.keepalive.enable\" = true"),
            secrets,
            Path::new("."),
        )
        .expect("valid");
        assert_eq!(
            c.kafka
                .properties
                .get("socket.keepalive.enable")
                .map(String::as_str),
            Some("true")
        );
    }

    #[test]
    fn url_password_detection() {
        assert!(url_has_password("mysql://a:b@h/db"));
        assert!(url_has_password("mysql://a:@h/db"));
        assert!(!url_has_password("mysql://a@h:3306/db"));
        assert!(!url_has_password("mysql://h:3306/db"));
    }
}
