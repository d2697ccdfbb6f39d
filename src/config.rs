//! The configuration file: a raw serde image of the TOML (`RawConfig`) and the
//! validated `Config` the rest of the service uses.
//!
//! Every problem is reported as a `ConfigError` that names the key
//! (`mysql.write_mode: expected upsert or insert, got "merge"`); the command
//! line turns it into exit code 2. Nothing here talks to Kafka or MySQL.
//!
//! The database password never comes from the file's URL nor from the command
//! line: it is read from `mysql.password_file` (refused when group- or
//! world-readable) or from the environment variable `MYSQL_PASSWORD`, and it is
//! kept in a `Password` whose `Debug` prints `***`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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

/// The database password. Its `Debug` and `Display` never show it.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Upsert,
    Insert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownFields {
    Ignore,
    DeadLetter,
}

/// How a record's value holds the row (`mysql.record_format`; README.md,
/// "Records to rows").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordFormat {
    /// A JSON object whose fields are the columns.
    #[default]
    Json,
    /// Kafka Connect's JSON converter: `{"schema": ..., "payload": {...}}`.
    ConnectJson,
    /// A Debezium change event, with or without the Connect envelope.
    Debezium,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    AtLeastOnce,
    ExactlyOnce,
}

/// Which Kafka client the service uses (`kafka.client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// librdkafka: Kafka 0.11 to 4.x, TLS, SASL, every codec, read committed.
    Librdkafka,
    /// The pure-Rust `kafka` crate: Kafka 0.10 to 3.9, plaintext only.
    KafkaRust,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// librdkafka's name for it (`security.protocol`).
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// SASL credentials; the password comes from `kafka.sasl_password_file` or
/// the environment variable `KAFKA_SASL_PASSWORD`, never from the file.
#[derive(Debug, Clone)]
pub struct Sasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    pub username: String,
    pub password: Password,
}

/// How the service reaches the brokers (librdkafka only).
#[derive(Debug, Clone)]
pub struct KafkaSecurity {
    pub protocol: SecurityProtocol,
    pub sasl: Option<Sasl>,
    pub ssl_ca_location: Option<PathBuf>,
    pub ssl_certificate_location: Option<PathBuf>,
    pub ssl_key_location: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub client: ClientKind,
    pub security: KafkaSecurity,
    /// Other librdkafka properties, passed through (`[kafka.properties]`).
    pub properties: std::collections::BTreeMap<String, String>,
    pub brokers: Vec<String>,
    pub topic: String,
    /// Empty means every partition of the topic.
    pub partitions: Vec<i32>,
    pub group: String,
    pub client_id: String,
    pub offset_reset: OffsetReset,
    pub fetch_max_bytes_per_partition: i32,
    pub fetch_max_wait: Duration,
    pub fetch_min_bytes: i32,
}

#[derive(Debug, Clone)]
pub struct MysqlConfig {
    /// The URL as written, without a password (validation refuses one).
    pub url: String,
    pub password: Password,
    pub table: String,
    pub key_columns: Vec<String>,
    pub write_mode: WriteMode,
    pub delete_on_tombstone: bool,
    pub unknown_fields: UnknownFields,
    pub dead_letter_table: String,
    pub delivery: Delivery,
    pub offset_table: String,
    /// Exactly-once: a stored offset outside the log moves as
    /// `kafka.offset_reset` says instead of stopping the partition.
    pub exactly_once_auto_reset: bool,
    pub record_format: RecordFormat,
    /// Upserts change a row only when this column's incoming value is at
    /// least the stored one (`mysql_sink.rs`, `insert_sql`).
    pub version_column: Option<String>,
    /// The session's zone: zoned times are converted to it (`times.rs`).
    pub time_zone: TimeZone,
    /// `[mysql.metadata_columns]`: column name and what it holds
    /// (`metadata.rs`), by column name.
    pub metadata_columns: Vec<(String, MetadataField)>,
}

#[derive(Debug, Clone)]
pub struct CommitConfig {
    pub every_messages: u64,
    pub interval: Duration,
}

#[derive(Debug, Clone)]
pub struct RetryConfig {
    pub technical_attempts: u32,
    pub business_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub dead_letter_burst: u32,
    /// This many records in a row failing alike (`error::Alike`) are a fault
    /// of the table, not bad records: the partition blocks, none of them is
    /// dead-lettered. 0 turns the rule off.
    pub schema_fault_records: u32,
    pub extra_technical_codes: Vec<u16>,
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub queue_batches: usize,
    pub max_batch_rows: usize,
    pub max_record_bytes: usize,
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `None` means stderr only.
    pub file: Option<PathBuf>,
    pub level: LogLevel,
    pub stats_interval: Duration,
}

/// The Prometheus metrics endpoint (`metrics.rs`).
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    /// Where `GET /metrics` is served; `None` (the default) serves nothing.
    pub listen: Option<std::net::SocketAddr>,
}

/// The validated configuration: every field is usable as it is.
#[derive(Debug, Clone)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub mysql: MysqlConfig,
    pub commit: CommitConfig,
    pub retry: RetryConfig,
    pub worker: WorkerConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    /// The file this configuration was read from (pid and status files sit beside
    /// the log directory derived from it).
    pub source: Option<PathBuf>,
}

// ---------------------------------------------------------------------------
// The raw image of the file. Every field is optional so that a missing
// required key is reported by name rather than by serde's generic message.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    kafka: Option<RawKafka>,
    mysql: Option<RawMysql>,
    #[serde(default)]
    commit: RawCommit,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    worker: RawWorker,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    metrics: RawMetrics,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafka {
    client: Option<String>,
    security_protocol: Option<String>,
    sasl_mechanism: Option<String>,
    sasl_username: Option<String>,
    sasl_password_file: Option<String>,
    ssl_ca_location: Option<String>,
    ssl_certificate_location: Option<String>,
    ssl_key_location: Option<String>,
    properties: Option<std::collections::BTreeMap<String, toml::Value>>,
    brokers: Option<Vec<String>>,
    topic: Option<String>,
    partitions: Option<Vec<i64>>,
    group: Option<String>,
    client_id: Option<String>,
    offset_reset: Option<String>,
    fetch_max_bytes_per_partition: Option<i64>,
    fetch_max_wait_ms: Option<i64>,
    fetch_min_bytes: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMysql {
    url: Option<String>,
    password_file: Option<String>,
    table: Option<String>,
    key_columns: Option<Vec<String>>,
    write_mode: Option<String>,
    delete_on_tombstone: Option<bool>,
    unknown_fields: Option<String>,
    dead_letter_table: Option<String>,
    delivery: Option<String>,
    offset_table: Option<String>,
    exactly_once_auto_reset: Option<bool>,
    record_format: Option<String>,
    time_zone: Option<String>,
    version_column: Option<String>,
    metadata_columns: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommit {
    every_messages: Option<i64>,
    interval_ms: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    technical_attempts: Option<i64>,
    business_attempts: Option<i64>,
    backoff_initial_ms: Option<i64>,
    backoff_max_ms: Option<i64>,
    dead_letter_burst: Option<i64>,
    schema_fault_records: Option<i64>,
    extra_technical_codes: Option<Vec<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    queue_batches: Option<i64>,
    max_batch_rows: Option<i64>,
    max_record_bytes: Option<i64>,
    shutdown_timeout_ms: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    file: Option<String>,
    level: Option<String>,
    stats_interval_ms: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

/// Where the password comes from when the file names no `password_file`.
pub const PASSWORD_ENV: &str = "MYSQL_PASSWORD";
/// Where the SASL password comes from when the file names no `sasl_password_file`.
pub const SASL_PASSWORD_ENV: &str = "KAFKA_SASL_PASSWORD";

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
    ("group.instance.id", "the service does not join the group"),
    ("security.protocol", "kafka.security_protocol"),
    ("sasl.mechanism", "kafka.sasl_mechanism"),
    ("sasl.mechanisms", "kafka.sasl_mechanism"),
    ("sasl.username", "kafka.sasl_username"),
    ("ssl.ca.location", "kafka.ssl_ca_location"),
    ("ssl.certificate.location", "kafka.ssl_certificate_location"),
    ("ssl.key.location", "kafka.ssl_key_location"),
];

/// The secrets the environment provides (passed in so that tests do not
/// touch the process environment).
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvSecrets<'a> {
    /// `MYSQL_PASSWORD`
    pub mysql_password: Option<&'a str>,
    /// `KAFKA_SASL_PASSWORD`
    pub sasl_password: Option<&'a str>,
}

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
        Config::parse_in(text, env_password, Path::new("."))
    }

    /// Like `parse`, with relative paths taken from `dir`.
    pub fn parse_in(
        text: &str,
        env_password: Option<&str>,
        dir: &Path,
    ) -> Result<Config, ConfigError> {
        Config::parse_with(
            text,
            EnvSecrets {
                mysql_password: env_password,
                sasl_password: None,
            },
            dir,
        )
    }

    /// Like `parse_in`, with every secret the environment may provide.
    pub fn parse_with(
        text: &str,
        secrets: EnvSecrets<'_>,
        dir: &Path,
    ) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = first_line(inner.message());
            // Name the unknown key itself, with its table.
            if let Some(unknown) = message.strip_prefix("unknown field `") {
                let name = unknown.split('`').next().unwrap_or("");
                let key = if path == "." || path.is_empty() {
                    name.to_string()
                } else if path == name || path.ends_with(&format!(".{name}")) {
                    path
                } else {
                    format!("{path}.{name}")
                };
                return ConfigError::new(key, "unknown key");
            }
            if path == "." || path.is_empty() {
                ConfigError::new(
                    "config",
                    format!("not valid TOML: {}", inner.to_string().trim()),
                )
            } else {
                ConfigError::new(path, message)
            }
        })?;
        validate(raw, secrets, dir)
    }

    /// The MySQL connection options: the URL plus the password from the
    /// environment or the password file.
    pub fn mysql_opts(&self) -> mysql::Opts {
        let opts = mysql::Opts::from_url(&self.mysql.url).expect("url validated at load");
        let mut builder = mysql::OptsBuilder::from_opts(opts)
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
    pub fn database(&self) -> String {
        mysql::Opts::from_url(&self.mysql.url)
            .ok()
            .and_then(|o| o.get_db_name().map(str::to_string))
            .unwrap_or_default()
    }
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or("").trim().to_string()
}

fn required<T>(value: Option<T>, key: &str) -> Result<T, ConfigError> {
    value.ok_or_else(|| ConfigError::new(key, "required key is missing"))
}

/// `retry.schema_fault_records` by default: ten records in a row failing
/// alike are rare among bad records and come within seconds of a change of
/// the table.
const SCHEMA_FAULT_RECORDS: i64 = 10;

fn positive(value: Option<i64>, default: i64, key: &str) -> Result<i64, ConfigError> {
    let v = value.unwrap_or(default);
    if v <= 0 {
        return Err(ConfigError::new(
            key,
            format!("must be greater than 0, got {v}"),
        ));
    }
    Ok(v)
}

fn non_negative(value: Option<i64>, default: i64, key: &str) -> Result<i64, ConfigError> {
    let v = value.unwrap_or(default);
    if v < 0 {
        return Err(ConfigError::new(
            key,
            format!("must not be negative, got {v}"),
        ));
    }
    Ok(v)
}

fn in_range(v: i64, max: i64, key: &str) -> Result<i64, ConfigError> {
    if v > max {
        return Err(ConfigError::new(
            key,
            format!("must be at most {max}, got {v}"),
        ));
    }
    Ok(v)
}

fn millis(v: i64) -> Duration {
    Duration::from_millis(v as u64)
}

fn choice<T: Copy>(
    value: Option<String>,
    default: T,
    key: &str,
    options: &[(&str, T)],
) -> Result<T, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    options
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            ConfigError::new(
                key,
                format!("expected {}, got {:?}", names.join(" | "), text),
            )
        })
}

/// A table or column name: letters, digits, `_` and `$`, not starting with a
/// digit, at most 64 characters. Names are still quoted in SQL; this keeps
/// them free of surprises in logs and error messages.
pub fn is_plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

fn identifier(value: String, key: &str) -> Result<String, ConfigError> {
    if !is_plain_identifier(&value) {
        return Err(ConfigError::new(
            key,
            format!("{value:?} is not a plain identifier (letters, digits, _ and $; at most 64)"),
        ));
    }
    Ok(value)
}

/// Topic and group names as Kafka allows them: `[a-zA-Z0-9._-]`, at most 249.
fn kafka_name(value: String, key: &str) -> Result<String, ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 249
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-');
    if !ok {
        return Err(ConfigError::new(
            key,
            format!("{value:?} is not a valid Kafka name (letters, digits, '.', '_', '-')"),
        ));
    }
    Ok(value)
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

fn validate(raw: RawConfig, secrets: EnvSecrets<'_>, dir: &Path) -> Result<Config, ConfigError> {
    let env_password = secrets.mysql_password;
    let kafka = required(raw.kafka, "kafka")?;
    let mysql = required(raw.mysql, "mysql")?;

    // [kafka]
    let brokers = required(kafka.brokers, "kafka.brokers")?;
    if brokers.is_empty() {
        return Err(ConfigError::new(
            "kafka.brokers",
            "needs at least one host:port",
        ));
    }
    for b in &brokers {
        let ok = b
            .rsplit_once(':')
            .map(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
            .unwrap_or(false);
        if !ok {
            return Err(ConfigError::new(
                "kafka.brokers",
                format!("{b:?} is not host:port"),
            ));
        }
    }
    let topic = kafka_name(required(kafka.topic, "kafka.topic")?, "kafka.topic")?;
    let group = kafka_name(required(kafka.group, "kafka.group")?, "kafka.group")?;
    let mut partitions = Vec::new();
    for p in kafka.partitions.unwrap_or_default() {
        if !(0..=i32::MAX as i64).contains(&p) {
            return Err(ConfigError::new(
                "kafka.partitions",
                format!("{p} is not a partition number"),
            ));
        }
        if partitions.contains(&(p as i32)) {
            return Err(ConfigError::new(
                "kafka.partitions",
                format!("partition {p} is listed twice"),
            ));
        }
        partitions.push(p as i32);
    }
    let client_id = kafka.client_id.unwrap_or_else(|| "kafka2mysql".to_string());
    if client_id.is_empty() {
        return Err(ConfigError::new("kafka.client_id", "must not be empty"));
    }
    let offset_reset = choice(
        kafka.offset_reset,
        OffsetReset::Earliest,
        "kafka.offset_reset",
        &[
            ("earliest", OffsetReset::Earliest),
            ("latest", OffsetReset::Latest),
            ("fail", OffsetReset::Fail),
        ],
    )?;
    let fetch_max_bytes = positive(
        kafka.fetch_max_bytes_per_partition,
        1_048_576,
        "kafka.fetch_max_bytes_per_partition",
    )?;
    let fetch_max_bytes = in_range(
        fetch_max_bytes,
        256 * 1024 * 1024,
        "kafka.fetch_max_bytes_per_partition",
    )?;
    let fetch_max_wait = non_negative(kafka.fetch_max_wait_ms, 100, "kafka.fetch_max_wait_ms")?;
    let fetch_max_wait = in_range(fetch_max_wait, 10_000, "kafka.fetch_max_wait_ms")?;
    let fetch_min_bytes = positive(kafka.fetch_min_bytes, 1, "kafka.fetch_min_bytes")?;
    let fetch_min_bytes = in_range(fetch_min_bytes, i32::MAX as i64, "kafka.fetch_min_bytes")?;
    let client = choice(
        kafka.client,
        ClientKind::Librdkafka,
        "kafka.client",
        &[
            ("librdkafka", ClientKind::Librdkafka),
            ("kafka-rust", ClientKind::KafkaRust),
        ],
    )?;
    let path_key = |value: Option<String>| value.filter(|v| !v.is_empty()).map(|v| dir.join(v));
    let protocol = choice(
        kafka.security_protocol,
        SecurityProtocol::Plaintext,
        "kafka.security_protocol",
        &[
            ("plaintext", SecurityProtocol::Plaintext),
            ("ssl", SecurityProtocol::Ssl),
            ("sasl_plaintext", SecurityProtocol::SaslPlaintext),
            ("sasl_ssl", SecurityProtocol::SaslSsl),
        ],
    )?;
    let sasl = if protocol.uses_sasl() {
        let mechanism = choice(
            kafka.sasl_mechanism,
            "",
            "kafka.sasl_mechanism",
            &[
                ("PLAIN", "PLAIN"),
                ("SCRAM-SHA-256", "SCRAM-SHA-256"),
                ("SCRAM-SHA-512", "SCRAM-SHA-512"),
            ],
        )?;
        if mechanism.is_empty() {
            return Err(ConfigError::new(
                "kafka.sasl_mechanism",
                "required with a sasl_* security_protocol",
            ));
        }
        let username = required(
            kafka.sasl_username.filter(|u| !u.is_empty()),
            "kafka.sasl_username",
        )?;
        let password = match kafka.sasl_password_file.as_deref() {
            Some(path) if !path.is_empty() => read_password_file(&dir.join(path), "kafka.sasl_password_file")?,
            _ => match secrets.sasl_password {
                Some(p) if !p.is_empty() => Password::new(p.to_string()),
                _ => {
                    return Err(ConfigError::new(
                        "kafka.sasl_password_file",
                        format!("a SASL password is needed: set kafka.sasl_password_file or {SASL_PASSWORD_ENV}"),
                    ))
                }
            },
        };
        Some(Sasl {
            mechanism: mechanism.to_string(),
            username,
            password,
        })
    } else {
        for (value, key) in [
            (&kafka.sasl_mechanism, "kafka.sasl_mechanism"),
            (&kafka.sasl_username, "kafka.sasl_username"),
            (&kafka.sasl_password_file, "kafka.sasl_password_file"),
        ] {
            if value.as_deref().is_some_and(|v| !v.is_empty()) {
                return Err(ConfigError::new(
                    key,
                    "needs security_protocol = \"sasl_plaintext\" or \"sasl_ssl\"",
                ));
            }
        }
        None
    };
    let security = KafkaSecurity {
        protocol,
        sasl,
        ssl_ca_location: path_key(kafka.ssl_ca_location),
        ssl_certificate_location: path_key(kafka.ssl_certificate_location),
        ssl_key_location: path_key(kafka.ssl_key_location),
    };
    let mut properties = std::collections::BTreeMap::new();
    for (name, value) in kafka.properties.unwrap_or_default() {
        let key = format!("kafka.properties.{name}");
        if let Some((_, owner)) = OWNED_PROPERTIES.iter().find(|(owned, _)| *owned == name) {
            return Err(ConfigError::new(
                key,
                format!("is set by the service ({owner})"),
            ));
        }
        if name.contains("password") || name.contains("secret") {
            return Err(ConfigError::new(
                key,
                "secrets are never taken from the file",
            ));
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                return Err(ConfigError::new(
                    key,
                    "must be a string, a number or a boolean",
                ))
            }
        };
        properties.insert(name, text);
    }
    if client == ClientKind::KafkaRust {
        if protocol != SecurityProtocol::Plaintext
            || security.ssl_ca_location.is_some()
            || security.ssl_certificate_location.is_some()
            || security.ssl_key_location.is_some()
        {
            return Err(ConfigError::new(
                "kafka.client",
                "\"kafka-rust\" speaks plaintext only; use client = \"librdkafka\" for TLS and SASL",
            ));
        }
        if !properties.is_empty() {
            return Err(ConfigError::new(
                "kafka.properties",
                "are librdkafka properties; client = \"kafka-rust\" takes none",
            ));
        }
    }

    // [mysql]
    let url = required(mysql.url, "mysql.url")?;
    let opts = mysql::Opts::from_url(&url)
        .map_err(|e| ConfigError::new("mysql.url", format!("not a MySQL URL: {e}")))?;
    if opts.get_pass().is_some() || url_has_password(&url) {
        return Err(ConfigError::new(
            "mysql.url",
            "must not contain a password; use the MYSQL_PASSWORD environment variable or mysql.password_file",
        ));
    }
    if opts.get_db_name().map(str::is_empty).unwrap_or(true) {
        return Err(ConfigError::new(
            "mysql.url",
            "must name the database (mysql://user@host:port/DATABASE)",
        ));
    }
    let password = match mysql.password_file.as_deref() {
        Some(path) if !path.is_empty() => {
            read_password_file(&dir.join(path), "mysql.password_file")?
        }
        _ => Password::new(env_password.unwrap_or("").to_string()),
    };
    let table = identifier(required(mysql.table, "mysql.table")?, "mysql.table")?;
    let mut key_columns = Vec::new();
    for c in mysql.key_columns.unwrap_or_default() {
        key_columns.push(identifier(c, "mysql.key_columns")?);
    }
    let write_mode = choice(
        mysql.write_mode,
        WriteMode::Upsert,
        "mysql.write_mode",
        &[("upsert", WriteMode::Upsert), ("insert", WriteMode::Insert)],
    )?;
    let delete_on_tombstone = mysql.delete_on_tombstone.unwrap_or(true);
    if key_columns.is_empty() && write_mode == WriteMode::Upsert {
        return Err(ConfigError::new(
            "mysql.key_columns",
            "required when write_mode = \"upsert\"",
        ));
    }
    if key_columns.is_empty() && delete_on_tombstone {
        return Err(ConfigError::new(
            "mysql.key_columns",
            "required when delete_on_tombstone = true (set it to false for tables without a key)",
        ));
    }
    let record_format = choice(
        mysql.record_format,
        RecordFormat::Json,
        "mysql.record_format",
        &[
            ("json", RecordFormat::Json),
            ("connect_json", RecordFormat::ConnectJson),
            ("debezium", RecordFormat::Debezium),
        ],
    )?;
    if record_format == RecordFormat::Debezium && write_mode != WriteMode::Upsert {
        return Err(ConfigError::new(
            "mysql.write_mode",
            "must be \"upsert\" with record_format = \"debezium\" (updates replace rows)",
        ));
    }
    let version_column = match mysql.version_column {
        None => None,
        Some(name) => {
            let name = identifier(name, "mysql.version_column")?;
            if write_mode != WriteMode::Upsert {
                return Err(ConfigError::new(
                    "mysql.version_column",
                    "guards upserts: needs write_mode = \"upsert\"",
                ));
            }
            if key_columns.iter().any(|k| k.eq_ignore_ascii_case(&name)) {
                return Err(ConfigError::new(
                    "mysql.version_column",
                    format!("{name:?} is a key column; the version must be another column"),
                ));
            }
            Some(name)
        }
    };
    let mut metadata_columns = Vec::new();
    for (column, text) in mysql.metadata_columns.unwrap_or_default() {
        let key = format!("mysql.metadata_columns.{column}");
        let column = identifier(column, &key)?;
        let field = MetadataField::parse(&text).map_err(|e| ConfigError::new(&key, e))?;
        if key_columns.iter().any(|k| k.eq_ignore_ascii_case(&column))
            || version_column
                .as_deref()
                .is_some_and(|v| v.eq_ignore_ascii_case(&column))
        {
            return Err(ConfigError::new(
                key,
                "is a key column or the version column; metadata columns are written, never compared",
            ));
        }
        if metadata_columns
            .iter()
            .any(|(c, _): &(String, MetadataField)| c.eq_ignore_ascii_case(&column))
        {
            return Err(ConfigError::new(key, "names a column twice"));
        }
        match field {
            MetadataField::Source(_) if record_format != RecordFormat::Debezium => {
                return Err(ConfigError::new(
                    key,
                    "source fields need record_format = \"debezium\"",
                ))
            }
            MetadataField::Timestamp if client == ClientKind::KafkaRust => {
                return Err(ConfigError::new(
                    key,
                    "kafka.client = \"kafka-rust\" does not read record timestamps; use \"librdkafka\"",
                ))
            }
            _ => {}
        }
        metadata_columns.push((column, field));
    }
    let time_zone = match mysql.time_zone {
        None => TimeZone::UTC,
        Some(text) => TimeZone::parse(&text).map_err(|e| ConfigError::new("mysql.time_zone", e))?,
    };
    let unknown_fields = choice(
        mysql.unknown_fields,
        UnknownFields::Ignore,
        "mysql.unknown_fields",
        &[
            ("ignore", UnknownFields::Ignore),
            ("dead_letter", UnknownFields::DeadLetter),
        ],
    )?;
    let dead_letter_table = identifier(
        mysql
            .dead_letter_table
            .unwrap_or_else(|| "kafka2mysql_dead_letters".to_string()),
        "mysql.dead_letter_table",
    )?;
    let delivery = choice(
        mysql.delivery,
        Delivery::AtLeastOnce,
        "mysql.delivery",
        &[
            ("at_least_once", Delivery::AtLeastOnce),
            ("exactly_once", Delivery::ExactlyOnce),
        ],
    )?;
    let offset_table = identifier(
        mysql
            .offset_table
            .unwrap_or_else(|| "kafka2mysql_offsets".to_string()),
        "mysql.offset_table",
    )?;
    if dead_letter_table == table || offset_table == table {
        return Err(ConfigError::new(
            "mysql.table",
            "must differ from dead_letter_table and offset_table",
        ));
    }
    // Off by default: in exactly-once mode, moving a stored position that the
    // log no longer holds either skips records or applies them again, so the
    // operator chooses (kafka2mysql reset-offsets) unless told otherwise here.
    let exactly_once_auto_reset = mysql.exactly_once_auto_reset.unwrap_or(false);

    // [commit]
    let every_messages = positive(raw.commit.every_messages, 1000, "commit.every_messages")?;
    let interval_ms = positive(raw.commit.interval_ms, 5000, "commit.interval_ms")?;

    // [retry]
    let r = raw.retry;
    let technical_attempts = non_negative(r.technical_attempts, 5, "retry.technical_attempts")?;
    let technical_attempts = in_range(technical_attempts, 1000, "retry.technical_attempts")?;
    let business_attempts = non_negative(r.business_attempts, 3, "retry.business_attempts")?;
    let business_attempts = in_range(business_attempts, 1000, "retry.business_attempts")?;
    let backoff_initial = positive(r.backoff_initial_ms, 200, "retry.backoff_initial_ms")?;
    let backoff_max = positive(r.backoff_max_ms, 30_000, "retry.backoff_max_ms")?;
    if backoff_max < backoff_initial {
        return Err(ConfigError::new(
            "retry.backoff_max_ms",
            "must not be less than retry.backoff_initial_ms",
        ));
    }
    let dead_letter_burst = positive(r.dead_letter_burst, 1000, "retry.dead_letter_burst")?;
    let dead_letter_burst = in_range(
        dead_letter_burst,
        u32::MAX as i64,
        "retry.dead_letter_burst",
    )?;
    let schema_fault_records = non_negative(
        r.schema_fault_records,
        SCHEMA_FAULT_RECORDS,
        "retry.schema_fault_records",
    )?;
    let schema_fault_records = in_range(
        schema_fault_records,
        u32::MAX as i64,
        "retry.schema_fault_records",
    )?;
    let mut extra_technical_codes = Vec::new();
    for code in r.extra_technical_codes.unwrap_or_default() {
        if !(1..=65535).contains(&code) {
            return Err(ConfigError::new(
                "retry.extra_technical_codes",
                format!("{code} is not a MySQL error code"),
            ));
        }
        extra_technical_codes.push(code as u16);
    }

    // [worker]
    let w = raw.worker;
    let queue_batches = positive(w.queue_batches, 4, "worker.queue_batches")?;
    let queue_batches = in_range(queue_batches, 1024, "worker.queue_batches")?;
    let max_batch_rows = positive(w.max_batch_rows, 500, "worker.max_batch_rows")?;
    let max_batch_rows = in_range(max_batch_rows, 65_535, "worker.max_batch_rows")?;
    let max_record_bytes = positive(w.max_record_bytes, 1_048_576, "worker.max_record_bytes")?;
    let max_record_bytes = in_range(
        max_record_bytes,
        256 * 1024 * 1024,
        "worker.max_record_bytes",
    )?;
    let shutdown_timeout = positive(w.shutdown_timeout_ms, 30_000, "worker.shutdown_timeout_ms")?;

    // [log]
    let l = raw.log;
    let file = l.file.filter(|f| !f.is_empty()).map(|f| dir.join(f));
    let level = choice(
        l.level,
        LogLevel::Info,
        "log.level",
        &[
            ("error", LogLevel::Error),
            ("warn", LogLevel::Warn),
            ("info", LogLevel::Info),
            ("debug", LogLevel::Debug),
            ("trace", LogLevel::Trace),
        ],
    )?;
    let stats_interval = positive(l.stats_interval_ms, 60_000, "log.stats_interval_ms")?;

    // [metrics]: an IP address, not a host name, so that validating it never
    // waits for DNS.
    let listen = match raw.metrics.listen.filter(|l| !l.is_empty()) {
        None => None,
        Some(text) => Some(text.parse().map_err(|_| {
            ConfigError::new(
                "metrics.listen",
                format!(
                    "expected an IP address and a port such as \"127.0.0.1:9187\", got {text:?}"
                ),
            )
        })?),
    };

    Ok(Config {
        kafka: KafkaConfig {
            client,
            security,
            properties,
            brokers,
            topic,
            partitions,
            group,
            client_id,
            offset_reset,
            fetch_max_bytes_per_partition: fetch_max_bytes as i32,
            fetch_max_wait: millis(fetch_max_wait),
            fetch_min_bytes: fetch_min_bytes as i32,
        },
        mysql: MysqlConfig {
            url,
            password,
            table,
            key_columns,
            write_mode,
            delete_on_tombstone,
            unknown_fields,
            dead_letter_table,
            delivery,
            offset_table,
            exactly_once_auto_reset,
            record_format,
            version_column,
            time_zone,
            metadata_columns,
        },
        commit: CommitConfig {
            every_messages: every_messages as u64,
            interval: millis(interval_ms),
        },
        retry: RetryConfig {
            technical_attempts: technical_attempts as u32,
            business_attempts: business_attempts as u32,
            backoff_initial: millis(backoff_initial),
            backoff_max: millis(backoff_max),
            dead_letter_burst: dead_letter_burst as u32,
            schema_fault_records: schema_fault_records as u32,
            extra_technical_codes,
        },
        worker: WorkerConfig {
            queue_batches: queue_batches as usize,
            max_batch_rows: max_batch_rows as usize,
            max_record_bytes: max_record_bytes as usize,
            shutdown_timeout: millis(shutdown_timeout),
        },
        log: LogConfig {
            file,
            level,
            stats_interval: millis(stats_interval),
        },
        metrics: MetricsConfig { listen },
        source: None,
    })
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
        assert_eq!(c.kafka.fetch_max_bytes_per_partition, 1_048_576);
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
        assert_eq!(c.worker.queue_batches, 4);
        assert_eq!(c.worker.max_batch_rows, 500);
        assert_eq!(c.mysql.password.expose(), "pw");
        assert_eq!(c.metrics.listen, None, "metrics are off by default");
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
        let s = c.kafka.security.sasl.as_ref().expect("sasl");
        assert_eq!(
            (
                s.mechanism.as_str(),
                s.username.as_str(),
                s.password.expose()
            ),
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
