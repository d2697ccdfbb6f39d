//! Helpers shared by the integration tests.
//!
//! They reach Kafka and MariaDB directly (the `kafka` and `mysql` crates) or
//! through Kafka's own command-line tools behind `scripts/services.sh`, never
//! through the kafka2mysql library: what a test checks must not depend on the
//! code under test.
//!
//! They never skip: when a service is missing, `env()` panics and says how to
//! start it. They never sleep for a fixed time where a condition can be
//! waited for: `wait_until` polls with a deadline and, when the deadline
//! passes, panics with what was expected and what was last seen.

// Each test module uses a different part of this toolbox.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka::client::{
    FetchPartition, GroupOffsetStorage, KafkaClient, ProduceMessage, RequiredAcks,
};
use mysql::prelude::Queryable;

/// The addresses that `scripts/services.sh up` prints; the environment
/// variables of the same names override them.
pub const DEFAULT_KAFKA_BROKERS: &str = "127.0.0.1:19092";
pub const DEFAULT_MYSQL_URL: &str = "mysql://k2m@127.0.0.1:13306/kafka2mysql";
/// A throwaway password of a test database that only listens on loopback.
pub const DEFAULT_MYSQL_PASSWORD: &str = "k2m-test-password";

/// Deadlines long enough for a loaded two-core machine running tests in parallel.
pub const TOPIC_DEADLINE: Duration = Duration::from_secs(60);
pub const PROCESS_DEADLINE: Duration = Duration::from_secs(60);

/// Where the real services are.
#[derive(Debug)]
pub struct TestEnv {
    pub brokers: Vec<String>,
    pub mysql_url: String,
    pub mysql_password: String,
}

/// The services of `scripts/services.sh`, checked once per test binary: the
/// broker must answer a metadata request and MariaDB a query as the test
/// user. Panics, for every test that asks, when they do not.
pub fn env() -> &'static TestEnv {
    static ENV: OnceLock<Result<TestEnv, String>> = OnceLock::new();
    match ENV.get_or_init(probe_services) {
        Ok(env) => env,
        Err(problem) => panic!("{problem}; start them with scripts/services.sh up"),
    }
}

fn probe_services() -> Result<TestEnv, String> {
    let brokers_text =
        std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| DEFAULT_KAFKA_BROKERS.to_owned());
    let env = TestEnv {
        brokers: brokers_text
            .split(',')
            .map(|broker| broker.trim().to_owned())
            .filter(|broker| !broker.is_empty())
            .collect(),
        mysql_url: std::env::var("MYSQL_URL").unwrap_or_else(|_| DEFAULT_MYSQL_URL.to_owned()),
        mysql_password: std::env::var("MYSQL_PASSWORD")
            .unwrap_or_else(|_| DEFAULT_MYSQL_PASSWORD.to_owned()),
    };
    let mut client = KafkaClient::new(env.brokers.clone());
    client
        .load_metadata_all()
        .map_err(|error| format!("the Kafka broker at {brokers_text} does not answer ({error})"))?;
    let opts = mysql_opts_for(&env)?;
    mysql::Conn::new(opts)
        .and_then(|mut conn| conn.query_drop("SELECT 1"))
        .map_err(|error| format!("MySQL at {} does not answer ({error})", env.mysql_url))?;
    Ok(env)
}

/// The repository root, where `scripts/services.sh` lives.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The cargo target directory of this build (it holds the binary under test),
/// which also receives the tests' logs and scratch files.
pub fn target_dir() -> PathBuf {
    let binary = Path::new(env!("CARGO_BIN_EXE_kafka2mysql"));
    binary
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// A name no other test, run or process uses, valid as a Kafka topic, a
/// group and a MySQL table name: the prefix (lowercased, other characters
/// turned into `_`, at most 24 of them), the pid, a counter and the time in
/// milliseconds. At most 56 characters, under MySQL's 64.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis())
        .unwrap_or(0);
    let prefix: String = prefix
        .chars()
        .take(24)
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}_{}_{counter}_{millis}", std::process::id())
}

// ------------------------------------------------------------------ waiting

/// Calls `check` until it returns `Ok`, and returns that value, polling at
/// most every 100 ms. `Err(seen)` means "not yet" and says what was seen. When `deadline` has passed, panics
/// with `what` was expected and the last thing seen.
pub fn wait_until<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        match check() {
            Ok(value) => return value,
            Err(seen) if started.elapsed() >= deadline => {
                panic!("timed out after {deadline:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => {}
        }
        thread::sleep(pause);
        // Short pauses: a test that acts on a condition (kill the service once
        // some rows are in) must see it soon after it becomes true.
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Waits until `probe()` equals `expected`; on timeout the panic shows both.
pub fn wait_for_eq<T: PartialEq + Debug>(
    what: &str,
    deadline: Duration,
    expected: T,
    mut probe: impl FnMut() -> T,
) {
    wait_until(what, deadline, || {
        let seen = probe();
        if seen == expected {
            Ok(())
        } else {
            Err(format!("{seen:?}, expected {expected:?}"))
        }
    })
}

// ------------------------------------------------------------------ services.sh

/// The services script: `K2M_SERVICES_SH` when set (the script of another
/// checkout whose services are running), else this checkout's
/// `scripts/services.sh`.
pub fn services_script() -> PathBuf {
    match std::env::var_os("K2M_SERVICES_SH") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => repo_root().join("scripts/services.sh"),
    }
}

/// Runs `scripts/services.sh ARGS` (see `services_script`) and returns its
/// standard output; panics with its output when it fails.
pub fn services(args: &[&str]) -> String {
    let script = services_script();
    let output = Command::new(&script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", script.display()));
    if !output.status.success() {
        panic!(
            "{} {} failed ({}):\n{}{}",
            script.display(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Outages for failure tests. Each returns once the service is really down,
/// or really answers again. Other tests running at the same time see the
/// outage too: a test that calls these must tolerate other tests' outages,
/// and others must tolerate its.
pub fn stop_kafka() {
    services(&["stop-kafka"]);
}
pub fn start_kafka() {
    services(&["start-kafka"]);
}
pub fn stop_mysql() {
    services(&["stop-mysql"]);
}
pub fn start_mysql() {
    services(&["start-mysql"]);
}

// ------------------------------------------------------------------ Kafka

/// A fresh client that knows every topic's metadata and stores group
/// offsets in Kafka.
pub fn kafka_client() -> KafkaClient {
    let mut client = KafkaClient::new(env().brokers.clone());
    client.set_client_id("kafka2mysql-it".to_owned());
    client.set_group_offset_storage(Some(GroupOffsetStorage::Kafka));
    client
        .load_metadata_all()
        .unwrap_or_else(|error| panic!("kafka metadata request failed: {error}"));
    client
}

/// The partition ids of `topic` that have a leader, as the broker reports
/// them now; `Err` says what is missing.
fn topic_partitions_with_leader(topic: &str) -> Result<Vec<i32>, String> {
    let mut client = KafkaClient::new(env().brokers.clone());
    client.set_client_id("kafka2mysql-it".to_owned());
    client
        .load_metadata(&[topic])
        .map_err(|error| format!("metadata error: {error}"))?;
    let topics = client.topics();
    let partitions = topics
        .partitions(topic)
        .ok_or_else(|| format!("topic {topic} is not in the metadata"))?;
    let mut ids = Vec::new();
    for partition in partitions.iter() {
        if partition.leader().is_none() {
            return Err(format!(
                "partition {topic}/{} has no leader",
                partition.id()
            ));
        }
        ids.push(partition.id());
    }
    ids.sort_unstable();
    Ok(ids)
}

/// The partition ids of an existing topic.
pub fn topic_partition_ids(topic: &str) -> Vec<i32> {
    topic_partitions_with_leader(topic)
        .unwrap_or_else(|problem| panic!("cannot list the partitions of {topic}: {problem}"))
}

/// Creates `topic` with Kafka's topic tool and waits until the broker's
/// metadata shows every partition with a leader.
pub fn create_topic(topic: &str, partitions: i32) {
    services(&["topic-create", topic, &partitions.to_string()]);
    let expected: Vec<i32> = (0..partitions).collect();
    wait_until(
        &format!("topic {topic} with {partitions} partitions, each with a leader"),
        TOPIC_DEADLINE,
        || match topic_partitions_with_leader(topic) {
            Ok(ids) if ids == expected => Ok(()),
            Ok(ids) => Err(format!("partitions {ids:?}")),
            Err(problem) => Err(problem),
        },
    );
}

/// Deletes `topic` with Kafka's topic tool and waits until the metadata no
/// longer has it.
pub fn delete_topic(topic: &str) {
    services(&["topic-delete", topic]);
    wait_until(
        &format!("topic {topic} gone from the metadata"),
        TOPIC_DEADLINE,
        || {
            // The kafka crate keeps a deleted topic in its metadata, without partitions.
            match topic_partitions_with_leader(topic) {
                Ok(ids) if !ids.is_empty() => {
                    Err(format!("topic {topic} still has partitions {ids:?}"))
                }
                _ => Ok(()),
            }
        },
    );
}

/// One record to produce: key and value, each `None` for a null.
pub type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

const PRODUCE_CHUNK_RECORDS: usize = 500;
const PRODUCE_CHUNK_BYTES: usize = 512 * 1024;

/// Appends `records` to one partition, in order, in chunks, each
/// acknowledged by all in-sync replicas. Returns the offset of each record.
///
/// A `None` value goes out as a real null (a tombstone): the kafka 0.10
/// `KafkaClient::produce_messages` encodes `None` as length -1. Beware the
/// two other places where the crate folds null and empty together: its
/// `Producer` turns an empty value into null, and its fetch side
/// (`fetch::Message::value`) reports a null value as an empty slice, so a
/// reader using the crate cannot tell a tombstone from an empty value.
pub fn produce(topic: &str, partition: i32, records: &[KeyValue]) -> Vec<i64> {
    let mut client = kafka_client();
    let mut offsets = Vec::with_capacity(records.len());
    let mut start = 0;
    while start < records.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < records.len()
            && end - start < PRODUCE_CHUNK_RECORDS
            && (end == start || bytes < PRODUCE_CHUNK_BYTES)
        {
            let (key, value) = &records[end];
            bytes += key.as_ref().map_or(0, Vec::len) + value.as_ref().map_or(0, Vec::len);
            end += 1;
        }
        let messages: Vec<ProduceMessage<'_, '_>> = records[start..end]
            .iter()
            .map(|(key, value)| {
                ProduceMessage::new(topic, partition, key.as_deref(), value.as_deref())
            })
            .collect();
        let confirms = client
            .produce_messages(RequiredAcks::All, Duration::from_secs(30), messages)
            .unwrap_or_else(|error| panic!("producing to {topic}/{partition} failed: {error}"));
        let base_offset = confirms
            .iter()
            .filter(|confirm| confirm.topic == topic)
            .flat_map(|confirm| confirm.partition_confirms.iter())
            .find(|confirm| confirm.partition == partition)
            .unwrap_or_else(|| panic!("no produce confirmation for {topic}/{partition}"))
            .offset
            .unwrap_or_else(|code| panic!("producing to {topic}/{partition} failed: {code:?}"));
        offsets.extend((0..(end - start) as i64).map(|index| base_offset + index));
        start = end;
    }
    offsets
}

/// Produces one key-less record per JSON value. Returns the offsets.
pub fn produce_json(topic: &str, partition: i32, values: &[serde_json::Value]) -> Vec<i64> {
    let records: Vec<KeyValue> = values
        .iter()
        .map(|value| {
            (
                None,
                Some(serde_json::to_vec(value).expect("JSON value serialises")),
            )
        })
        .collect();
    produce(topic, partition, &records)
}

/// Produces records with a JSON key and a JSON value, or a null value (a
/// tombstone) for `None`. Returns the offsets.
pub fn produce_keyed_json(
    topic: &str,
    partition: i32,
    records: &[(serde_json::Value, Option<serde_json::Value>)],
) -> Vec<i64> {
    let records: Vec<KeyValue> = records
        .iter()
        .map(|(key, value)| {
            (
                Some(serde_json::to_vec(key).expect("JSON key serialises")),
                value
                    .as_ref()
                    .map(|value| serde_json::to_vec(value).expect("JSON value serialises")),
            )
        })
        .collect();
    produce(topic, partition, &records)
}

/// A record read back with the kafka crate (null key or value read as empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRecord {
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// Reads one partition with the kafka crate from `from_offset` up to its
/// high watermark. Panics on any error of that partition.
pub fn fetch_records(topic: &str, partition: i32, from_offset: i64) -> Vec<FetchedRecord> {
    let mut client = kafka_client();
    client.set_fetch_max_bytes_per_partition(1024 * 1024);
    let mut records = Vec::new();
    let mut next_offset = from_offset;
    loop {
        let responses = client
            .fetch_messages([FetchPartition::new(topic, partition, next_offset)])
            .unwrap_or_else(|error| panic!("fetching {topic}/{partition} failed: {error}"));
        let mut high_watermark = None;
        for response in &responses {
            for fetched_topic in response.topics() {
                for fetched in fetched_topic.partitions() {
                    let data = fetched.data().unwrap_or_else(|error| {
                        panic!("fetching {topic}/{partition} at {next_offset} failed: {error}")
                    });
                    high_watermark = Some(data.highwatermark_offset());
                    for message in data.messages() {
                        // A fetch may return records before the requested offset
                        // (a whole compressed message set).
                        if message.offset >= next_offset {
                            records.push(FetchedRecord {
                                offset: message.offset,
                                key: message.key.to_vec(),
                                value: message.value.to_vec(),
                            });
                            next_offset = message.offset + 1;
                        }
                    }
                }
            }
        }
        let high_watermark = high_watermark
            .unwrap_or_else(|| panic!("the fetch response has no data for {topic}/{partition}"));
        if next_offset >= high_watermark {
            return records;
        }
    }
}

fn parse_partition_offsets(topic: &str, output: &str) -> BTreeMap<i32, i64> {
    output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [partition, offset] => match (partition.parse(), offset.parse()) {
                    (Ok(partition), Ok(offset)) => (partition, offset),
                    _ => panic!("unexpected offsets line for {topic}: {line:?}"),
                },
                _ => panic!("unexpected offsets line for {topic}: {line:?}"),
            }
        })
        .collect()
}

/// Each partition's log end offset (the next offset to be written), from
/// Kafka's GetOffsetShell.
pub fn log_end_offsets(topic: &str) -> BTreeMap<i32, i64> {
    parse_partition_offsets(topic, &services(&["log-end-offsets", topic]))
}

/// Each partition's log start offset (the earliest offset still readable),
/// from Kafka's GetOffsetShell.
pub fn log_start_offsets(topic: &str) -> BTreeMap<i32, i64> {
    parse_partition_offsets(topic, &services(&["log-start-offsets", topic]))
}

/// Deletes the records of one partition before `before_offset` with Kafka's
/// delete-records tool: the log start offset jumps there, and a fetch below it
/// gets OffsetOutOfRange.
pub fn delete_records(topic: &str, partition: i32, before_offset: i64) {
    services(&[
        "delete-records",
        topic,
        &partition.to_string(),
        &before_offset.to_string(),
    ]);
}

/// The offsets that `group` has committed for each partition of `topic`, as
/// Kafka's consumer-groups tool reports them; `None` for a partition without
/// a committed offset (also when the group does not exist).
pub fn group_offsets(group: &str, topic: &str) -> BTreeMap<i32, Option<i64>> {
    let mut offsets: BTreeMap<i32, Option<i64>> = topic_partition_ids(topic)
        .into_iter()
        .map(|partition| (partition, None))
        .collect();
    for line in services(&["group-offsets", group]).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [line_topic, partition, current, _log_end, _lag] = fields.as_slice() else {
            panic!("unexpected group-offsets line for {group}: {line:?}");
        };
        if *line_topic != topic {
            continue;
        }
        let partition: i32 = partition
            .parse()
            .unwrap_or_else(|_| panic!("unexpected group-offsets line for {group}: {line:?}"));
        let current =
            match *current {
                "-" => None,
                number => Some(number.parse::<i64>().unwrap_or_else(|_| {
                    panic!("unexpected group-offsets line for {group}: {line:?}")
                })),
            };
        offsets.insert(partition, current);
    }
    offsets
}

// ------------------------------------------------------------------ MySQL

fn mysql_opts_for(env: &TestEnv) -> Result<mysql::Opts, String> {
    let opts = mysql::Opts::from_url(&env.mysql_url)
        .map_err(|error| format!("bad MYSQL_URL {}: {error}", env.mysql_url))?;
    Ok(mysql::OptsBuilder::from_opts(opts)
        .pass(Some(env.mysql_password.clone()))
        .tcp_connect_timeout(Some(Duration::from_secs(5)))
        .into())
}

/// Connection options: the URL plus the password, as the service gets them.
pub fn mysql_opts() -> mysql::Opts {
    mysql_opts_for(env()).unwrap_or_else(|problem| panic!("{problem}"))
}

/// A new connection as the test user over TCP.
pub fn mysql_conn() -> mysql::Conn {
    mysql::Conn::new(mysql_opts())
        .unwrap_or_else(|error| panic!("cannot connect to {}: {error}", env().mysql_url))
}

/// Runs statements as the test user; panics on error.
pub fn mysql_exec(sql: &str) {
    mysql_conn()
        .query_drop(sql)
        .unwrap_or_else(|error| panic!("`{sql}` failed: {error}"));
}

/// The first column of the first row as a number, for `SELECT COUNT(*) ...`
/// while the database may be down (during an outage test).
pub fn try_query_count(sql: &str) -> Result<i64, String> {
    let mut conn = mysql::Conn::new(mysql_opts()).map_err(|error| error.to_string())?;
    conn.query_first::<i64, _>(sql)
        .map_err(|error| format!("`{sql}` failed: {error}"))?
        .ok_or_else(|| format!("`{sql}` returned no row"))
}

/// The first column of the first row as a number: `SELECT COUNT(*) ...`.
pub fn query_count(sql: &str) -> i64 {
    try_query_count(sql).unwrap_or_else(|problem| panic!("{problem}"))
}

/// Every row as text, `None` for NULL (the text protocol sends every value
/// as text, so numbers come back as their decimal form).
pub fn query_rows(sql: &str) -> Vec<Vec<Option<String>>> {
    let rows: Vec<mysql::Row> = mysql_conn()
        .query(sql)
        .unwrap_or_else(|error| panic!("`{sql}` failed: {error}"));
    rows.into_iter()
        .map(|row| row.unwrap().iter().map(value_text).collect())
        .collect()
}

fn value_text(value: &mysql::Value) -> Option<String> {
    match value {
        mysql::Value::NULL => None,
        mysql::Value::Bytes(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        other => Some(other.as_sql(true)),
    }
}

/// `CREATE TABLE name (ddl_columns)` in the test database, InnoDB.
pub fn create_table(name: &str, ddl_columns: &str) {
    mysql_exec(&format!(
        "CREATE TABLE `{name}` ({ddl_columns}) ENGINE=InnoDB"
    ));
}

pub fn drop_table(name: &str) {
    mysql_exec(&format!("DROP TABLE IF EXISTS `{name}`"));
}

/// Runs SQL as the MariaDB root user (over the server's socket, in the test
/// database) and returns the rows tab-separated without a header. Root can
/// create users and revoke grants; revoke from a user of the test's own,
/// never from the shared test user that other tests are using.
pub fn root_sql(sql: &str) -> String {
    services(&["mysql", "-N", "-B", "-e", sql])
}

// ------------------------------------------------------------------ files

/// A new empty directory for one test, under the target directory.
pub fn test_dir(prefix: &str) -> PathBuf {
    let dir = target_dir().join("it-tmp").join(unique_name(prefix));
    fs::create_dir_all(&dir)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", dir.display()));
    dir
}

/// Writes `dir/kafka2mysql.toml` (mode 0600) and returns its path.
pub fn write_config(dir: &Path, toml_text: &str) -> PathBuf {
    fs::create_dir_all(dir)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", dir.display()));
    let path = dir.join("kafka2mysql.toml");
    fs::write(&path, toml_text)
        .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|error| panic!("cannot chmod {}: {error}", path.display()));
    path
}

/// A configuration (DESIGN.md section 5) for the test services with quick
/// commits and millisecond backoff, with `overrides` (TOML text, e.g.
/// `"[mysql]\nwrite_mode = \"insert\""`) merged in key by key.
pub fn test_config(topic: &str, group: &str, table: &str, overrides: &str) -> String {
    let env = env();
    let base = format!(
        r#"
[kafka]
brokers = {brokers}
topic = "{topic}"
group = "{group}"
client_id = "kafka2mysql-it"
offset_reset = "earliest"
fetch_max_wait_ms = 100

[mysql]
url = "{url}"
table = "{table}"
key_columns = ["id"]

[commit]
every_messages = 100
interval_ms = 200

[retry]
backoff_initial_ms = 10
backoff_max_ms = 200

[worker]
shutdown_timeout_ms = 10000

[log]
level = "debug"
stats_interval_ms = 1000
"#,
        brokers = toml::Value::from(env.brokers.clone()),
        url = env.mysql_url,
    );
    let mut config: toml::Table = base.parse().expect("the base test config is valid TOML");
    let overrides: toml::Table = overrides.parse().unwrap_or_else(|error| {
        panic!("config overrides are not valid TOML: {error}\n{overrides}")
    });
    merge_toml(&mut config, overrides);
    toml::to_string(&config).expect("a TOML table serialises")
}

fn merge_toml(base: &mut toml::Table, overrides: toml::Table) {
    for (key, value) in overrides {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(override_table)) => {
                merge_toml(base_table, override_table)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

// ------------------------------------------------------------------ the binary

fn logs_dir() -> PathBuf {
    let dir = target_dir().join("it-logs");
    fs::create_dir_all(&dir)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", dir.display()));
    dir
}

fn binary_command(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kafka2mysql"));
    command
        .args(args)
        .env("MYSQL_PASSWORD", &env().mysql_password)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null());
    for (name, value) in envs {
        command.env(name, value);
    }
    command
}

fn open_log(path: &Path) -> fs::File {
    fs::File::create(path)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()))
}

fn read_text(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// The kafka2mysql binary running in the background, its standard output
/// and error going to a log file under `target/it-logs/`. Dropping it kills
/// the process (SIGKILL) if it still runs.
pub struct Service {
    child: Child,
    exit_status: Option<ExitStatus>,
    log_path: PathBuf,
    args: Vec<String>,
}

impl Service {
    /// Starts `kafka2mysql ARGS` with `MYSQL_PASSWORD` set for the test database.
    pub fn start(args: &[&str]) -> Service {
        Service::start_with_env(args, &[])
    }

    /// Like `start`, with extra environment variables.
    pub fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> Service {
        let log_path = logs_dir().join(format!("{}.log", unique_name("kafka2mysql")));
        let log = open_log(&log_path);
        let log_for_stderr = log.try_clone().expect("a log file handle clones");
        let child = binary_command(args, envs)
            .stdout(log)
            .stderr(log_for_stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start kafka2mysql {}: {error}", args.join(" ")));
        Service {
            child,
            exit_status: None,
            log_path,
            args: args.iter().map(|arg| arg.to_string()).collect(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`libc::SIGTERM`, `libc::SIGHUP`, ...) unless the process has exited.
    pub fn signal(&mut self, signal: libc::c_int) {
        if self.is_running() {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is
            // our own child, not yet reaped, so it cannot have been reused.
            let result = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
            assert_eq!(result, 0, "kill({}, {signal}) failed", self.child.id());
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.try_exit_status().is_none()
    }

    /// The exit status, if the process has exited.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit_status.is_none() {
            self.exit_status = self
                .child
                .try_wait()
                .unwrap_or_else(|error| panic!("waiting for kafka2mysql failed: {error}"));
        }
        self.exit_status
    }

    /// Waits for the process to exit on its own. After `timeout` it is
    /// killed and the test fails with its log.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_exit_status() {
                return status;
            }
            if started.elapsed() >= timeout {
                self.sigkill();
                panic!(
                    "kafka2mysql {} did not exit within {timeout:?}; killed it. Its log ({}):\n{}",
                    self.args.join(" "),
                    self.log_path.display(),
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Graceful stop: SIGTERM, then waits up to `timeout` for the exit.
    pub fn sigterm_and_wait(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(timeout)
    }

    /// A crash: SIGKILL, and waits for the process to be gone.
    pub fn sigkill(&mut self) -> ExitStatus {
        if let Some(status) = self.try_exit_status() {
            return status;
        }
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .unwrap_or_else(|error| panic!("waiting for kafka2mysql failed: {error}"));
        self.exit_status = Some(status);
        status
    }

    /// Everything the process wrote to standard output and error so far.
    pub fn log_text(&self) -> String {
        read_text(&self.log_path)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let was_running = self.is_running();
        if was_running {
            self.sigkill();
        }
        if thread::panicking() {
            eprintln!(
                "kafka2mysql {} ({}) log {}:\n{}",
                self.args.join(" "),
                if was_running {
                    "killed by the test"
                } else {
                    "had exited"
                },
                self.log_path.display(),
                self.log_text()
            );
        }
    }
}

/// What a run of the binary to its end produced.
#[derive(Debug)]
pub struct CommandOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `kafka2mysql ARGS` (`check`, `status`, `reset-offsets`, ...) to its
/// end; it fails the test if it takes longer than `timeout`.
pub fn run_binary(args: &[&str], timeout: Duration) -> CommandOutput {
    run_binary_with_env(args, &[], timeout)
}

pub fn run_binary_with_env(
    args: &[&str],
    envs: &[(&str, &str)],
    timeout: Duration,
) -> CommandOutput {
    let base = logs_dir().join(unique_name("kafka2mysql_cmd"));
    let stdout_path = base.with_extension("stdout");
    let stderr_path = base.with_extension("stderr");
    let mut child = binary_command(args, envs)
        .stdout(open_log(&stdout_path))
        .stderr(open_log(&stderr_path))
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start kafka2mysql {}: {error}", args.join(" ")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait on a child") {
            break status;
        }
        if started.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kafka2mysql {} did not finish within {timeout:?}; killed it.\nstdout:\n{}\nstderr:\n{}",
                args.join(" "),
                read_text(&stdout_path),
                read_text(&stderr_path)
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    CommandOutput {
        status,
        stdout: read_text(&stdout_path),
        stderr: read_text(&stderr_path),
    }
}
