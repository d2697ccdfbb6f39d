//! Helpers shared by the integration tests.
//!
//! They reach Kafka and MariaDB directly (librdkafka through the `rdkafka`
//! crate, and the `mysql` crate) or through Kafka's own command-line tools
//! behind `scripts/services.sh`, never through the kafka2mysql library: what
//! a test checks must not depend on the code under test.
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
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mysql::prelude::Queryable;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

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
/// broker must answer a metadata request within 10 s and MariaDB a query as
/// the test user. Panics, for every test that asks, when they do not.
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
    metadata_consumer(&env.brokers)?
        .fetch_metadata(None, KAFKA_REQUEST_TIMEOUT)
        .map_err(|error| {
            format!(
                "the Kafka broker at {brokers_text} does not answer a metadata request within {KAFKA_REQUEST_TIMEOUT:?} ({error})"
            )
        })?;
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
/// The broker process stopped (SIGSTOP) and resumed (SIGCONT): its
/// connections stay open but nothing answers meanwhile.
pub fn freeze_kafka() {
    services(&["freeze-kafka"]);
}
pub fn thaw_kafka() {
    services(&["thaw-kafka"]);
}
/// The database server stopped (SIGSTOP) and resumed (SIGCONT).
pub fn freeze_mysql() {
    services(&["freeze-mysql"]);
}
pub fn thaw_mysql() {
    services(&["thaw-mysql"]);
}
/// The broker killed without warning (SIGKILL); `start_kafka` brings it back.
pub fn kill_kafka() {
    services(&["kill-kafka"]);
}

/// The Apache Kafka version of the test broker: `KAFKA_VERSION`, by default
/// 4.4.0.
pub fn kafka_version() -> String {
    match std::env::var("KAFKA_VERSION") {
        Ok(version) if !version.trim().is_empty() => version.trim().to_owned(),
        _ => "4.4.0".to_owned(),
    }
}

/// The broker's SASL_SSL listener, as `scripts/services.sh up` exports it.
#[derive(Debug, Clone)]
pub struct SaslEnv {
    /// `KAFKA_SASL_BROKERS`, comma-separated.
    pub brokers: Vec<String>,
    /// `KAFKA_SSL_CA`: the CA certificate (PEM) that signed the broker's.
    pub ca_path: PathBuf,
    /// `KAFKA_SASL_USER` and `KAFKA_SASL_TEST_PASSWORD`.
    pub user: String,
    pub password: String,
}

/// The SASL_SSL listener's address and credentials from the environment;
/// panics, naming what is missing, when any is.
pub fn sasl_env() -> SaslEnv {
    let names = [
        "KAFKA_SASL_BROKERS",
        "KAFKA_SSL_CA",
        "KAFKA_SASL_USER",
        "KAFKA_SASL_TEST_PASSWORD",
    ];
    let values: Vec<Option<String>> = names
        .iter()
        .map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
        .collect();
    let missing: Vec<&str> = names
        .iter()
        .zip(&values)
        .filter(|(_, value)| value.is_none())
        .map(|(name, _)| *name)
        .collect();
    if !missing.is_empty() {
        panic!(
            "{} not set; start the services with scripts/services.sh up and export what it prints",
            missing.join(", ")
        );
    }
    let [brokers, ca_path, user, password] = <[Option<String>; 4]>::try_from(values)
        .expect("four values")
        .map(Option::unwrap);
    let ca_path = PathBuf::from(ca_path);
    if !ca_path.is_file() {
        panic!(
            "KAFKA_SSL_CA={} is not a file; start the services with scripts/services.sh up",
            ca_path.display()
        );
    }
    SaslEnv {
        brokers: brokers
            .split(',')
            .map(|broker| broker.trim().to_owned())
            .filter(|broker| !broker.is_empty())
            .collect(),
        ca_path,
        user,
        password,
    }
}

// ------------------------------------------------------------------ Kafka

/// How long a metadata, watermark or group-offset request may take.
pub const KAFKA_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long producing a batch of records (delivery reports included) and
/// reading a partition back may take.
const PRODUCE_DEADLINE: Duration = Duration::from_secs(120);
const FETCH_DEADLINE: Duration = Duration::from_secs(60);

/// The settings every client of the harness shares.
fn kafka_config(brokers: &[String]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers.join(","))
        .set("client.id", "kafka2mysql-it")
        // A metadata request must never create a topic. The consumer's
        // default already says so; the producer's does not.
        .set("allow.auto.create.topics", "false");
    config
}

/// A consumer that is only asked for metadata: no group, no assignment.
fn metadata_consumer(brokers: &[String]) -> Result<BaseConsumer, String> {
    kafka_config(brokers)
        .create()
        .map_err(|error| format!("cannot create a Kafka client: {error}"))
}

/// The metadata consumer of this test binary, shared by all its tests: a
/// client of its own for each metadata request would cost a connection
/// each time (about 35 ms). librdkafka reconnects it after an outage.
fn shared_metadata_consumer() -> Result<&'static BaseConsumer, String> {
    static CONSUMER: OnceLock<Result<BaseConsumer, String>> = OnceLock::new();
    CONSUMER
        .get_or_init(|| metadata_consumer(&env().brokers))
        .as_ref()
        .map_err(Clone::clone)
}

/// The harness's own Kafka client (librdkafka, through the `rdkafka` crate)
/// for the offsets that groups store in Kafka. It reads and commits them
/// from outside the group: it never joins it.
pub struct KafkaClient {
    _private: (),
}

/// The offset that a group has committed for one partition; -1 when it has
/// committed none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffset {
    pub partition: i32,
    pub offset: i64,
}

/// A client for reading and committing group offsets (see `KafkaClient`).
/// Cheap: the consumers behind it are shared by the whole test binary.
pub fn kafka_client() -> KafkaClient {
    env();
    KafkaClient { _private: () }
}

/// The consumer with `group.id` `group` of this test binary, never
/// subscribed: group offsets are read and committed through a consumer of
/// the group, and a consumer of its own for each call would cost a new
/// connection, a coordinator lookup and a 100 ms close each time.
fn group_consumer(group: &str) -> Result<Arc<BaseConsumer>, String> {
    static CONSUMERS: Mutex<BTreeMap<String, Arc<BaseConsumer>>> = Mutex::new(BTreeMap::new());
    let mut consumers = CONSUMERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(consumer) = consumers.get(group) {
        return Ok(Arc::clone(consumer));
    }
    let consumer: BaseConsumer = kafka_config(&env().brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .map_err(|error| format!("cannot create a consumer of group {group}: {error}"))?;
    let consumer = Arc::new(consumer);
    consumers.insert(group.to_owned(), Arc::clone(&consumer));
    Ok(consumer)
}

impl KafkaClient {
    /// The offsets `group` has committed for every partition of `topic`,
    /// sorted by partition, -1 for a partition without one (also when the
    /// group does not exist).
    pub fn fetch_group_topic_offset(
        &mut self,
        group: &str,
        topic: &str,
    ) -> Result<Vec<PartitionOffset>, String> {
        let partitions = match topic_metadata(topic)? {
            Some(partitions) => partitions,
            None => return Err(format!("topic {topic} does not exist")),
        };
        let mut request = TopicPartitionList::new();
        for partition in &partitions {
            request.add_partition(topic, partition.id);
        }
        let committed = group_consumer(group)?
            .committed_offsets(request, KAFKA_REQUEST_TIMEOUT)
            .map_err(|error| format!("fetching the offsets of group {group} failed: {error}"))?;
        let mut offsets = Vec::new();
        for element in committed.elements_for_topic(topic) {
            element.error().map_err(|error| {
                format!(
                    "the offset of group {group} for {topic}/{} failed: {error}",
                    element.partition()
                )
            })?;
            let offset = match element.offset() {
                Offset::Offset(offset) => offset,
                Offset::Invalid => -1,
                other => {
                    return Err(format!(
                        "group {group} has an unexpected offset {other:?} for {topic}/{}",
                        element.partition()
                    ))
                }
            };
            offsets.push(PartitionOffset {
                partition: element.partition(),
                offset,
            });
        }
        offsets.sort_unstable_by_key(|offset| offset.partition);
        Ok(offsets)
    }

    /// Commits `(topic, partition, offset)` for `group`, as a consumer that
    /// is not a member of it (a "simple" consumer) would.
    pub fn commit_offsets(
        &mut self,
        group: &str,
        offsets: &[(&str, i32, i64)],
    ) -> Result<(), String> {
        let mut list = TopicPartitionList::new();
        for &(topic, partition, offset) in offsets {
            list.add_partition_offset(topic, partition, Offset::Offset(offset))
                .map_err(|error| format!("offset {offset} of {topic}/{partition}: {error}"))?;
        }
        group_consumer(group)?
            .commit(&list, CommitMode::Sync)
            .map_err(|error| format!("committing {offsets:?} for group {group} failed: {error}"))
    }
}

/// One partition in the broker's metadata.
struct PartitionMetadata {
    id: i32,
    /// The leader's broker id, or why there is none.
    leader: Result<i32, String>,
}

/// The partitions of `topic` as the broker's metadata has them now, sorted
/// by id; `None` when the broker does not know the topic (never created, or
/// deleted), `Err` when the request fails.
fn topic_metadata(topic: &str) -> Result<Option<Vec<PartitionMetadata>>, String> {
    let metadata = shared_metadata_consumer()?
        .fetch_metadata(Some(topic), KAFKA_REQUEST_TIMEOUT)
        .map_err(|error| format!("metadata request failed: {error}"))?;
    let Some(topic_metadata) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(format!("the metadata response does not mention {topic}"));
    };
    match topic_metadata.error().map(RDKafkaErrorCode::from) {
        None => {}
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => return Ok(None),
        Some(code) => return Err(format!("metadata error for topic {topic}: {code}")),
    }
    let mut partitions: Vec<PartitionMetadata> = topic_metadata
        .partitions()
        .iter()
        .map(|partition| PartitionMetadata {
            id: partition.id(),
            leader: match partition.error().map(RDKafkaErrorCode::from) {
                Some(code) => Err(code.to_string()),
                None if partition.leader() < 0 => Err("no leader".to_owned()),
                None => Ok(partition.leader()),
            },
        })
        .collect();
    partitions.sort_unstable_by_key(|partition| partition.id);
    Ok(Some(partitions))
}

/// The partition ids of `topic` that have a leader, as the broker reports
/// them now; `Err` says what is missing.
pub fn topic_partitions_with_leader(topic: &str) -> Result<Vec<i32>, String> {
    let partitions = topic_metadata(topic)?
        .ok_or_else(|| format!("topic {topic} is not in the metadata (UnknownTopicOrPartition)"))?;
    let mut ids = Vec::new();
    for partition in partitions {
        if let Err(problem) = partition.leader {
            return Err(format!(
                "partition {topic}/{} has no leader ({problem})",
                partition.id
            ));
        }
        ids.push(partition.id);
    }
    Ok(ids)
}

/// The partition ids of an existing topic.
pub fn topic_partition_ids(topic: &str) -> Vec<i32> {
    topic_partitions_with_leader(topic)
        .unwrap_or_else(|problem| panic!("cannot list the partitions of {topic}: {problem}"))
}

/// Waits until the broker's metadata shows `topic` with partitions
/// 0..`partitions`, each with a leader.
pub fn wait_for_partitions_with_leaders(topic: &str, partitions: i32) {
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

/// Creates `topic` with Kafka's topic tool and waits until the broker's
/// metadata shows every partition with a leader.
pub fn create_topic(topic: &str, partitions: i32) {
    create_topic_with(topic, partitions, &[]);
}

/// Like `create_topic`, with topic configs (`&[("cleanup.policy",
/// "compact")]`) passed to Kafka's topic tool.
pub fn create_topic_with(topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let partitions_text = partitions.to_string();
    let configs: Vec<String> = configs
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    let mut args = vec!["topic-create", topic, &partitions_text];
    args.extend(configs.iter().map(String::as_str));
    services(&args);
    wait_for_partitions_with_leaders(topic, partitions);
}

/// Raises the partition count of `topic` to `partitions` with Kafka's topic
/// tool and waits until the metadata shows them all with a leader.
pub fn add_partitions(topic: &str, partitions: i32) {
    services(&["topic-alter-partitions", topic, &partitions.to_string()]);
    wait_for_partitions_with_leaders(topic, partitions);
}

/// Deletes `topic` with Kafka's topic tool and waits until the metadata no
/// longer has it.
pub fn delete_topic(topic: &str) {
    services(&["topic-delete", topic]);
    wait_until(
        &format!("topic {topic} gone from the metadata"),
        TOPIC_DEADLINE,
        || match topic_metadata(topic)? {
            None => Ok(()),
            Some(partitions) => Err(format!(
                "topic {topic} still has {} partitions",
                partitions.len()
            )),
        },
    );
}

/// One record to produce: key and value, each `None` for a null.
pub type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// How `produce_with` batches records.
#[derive(Debug, Clone, Copy)]
pub struct ProduceOptions<'a> {
    /// `compression.type`: none, gzip, snappy, lz4 or zstd.
    pub compression: &'a str,
    /// Records per record batch (`batch.num.messages`): the producer
    /// lingers (200 ms) until a batch has this many, so every batch but the
    /// last of a call has exactly this many, as long as they fit in 1 MB
    /// (`batch.size`).
    pub batch_records: usize,
}

impl Default for ProduceOptions<'_> {
    /// What `produce` does: uncompressed, up to 500 records a batch.
    fn default() -> Self {
        ProduceOptions {
            compression: "none",
            batch_records: PRODUCE_BATCH_RECORDS,
        }
    }
}

/// `produce` appends record batches of at most 500 records and 512 KiB, as
/// the harness did when it produced with the kafka crate (one batch per
/// produce request). The tests depend on it: a consumer gets at least a
/// whole batch per fetch, so a service under test that fetches one batch
/// of 2,000 records commits once, not in steps, and a kill cannot land in
/// the middle of it.
const PRODUCE_BATCH_RECORDS: usize = 500;
const PRODUCE_BATCH_BYTES: usize = 512 * 1024;

/// The delivery reports of the records of one `send_all` call, by their
/// index in the call.
struct Deliveries {
    outcomes: Mutex<Vec<Option<Result<i64, String>>>>,
}

impl Deliveries {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Result<i64, String>>>> {
        self.outcomes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Hands each delivery report to the call that sent the record, whichever
/// thread polls: one producer serves many calls, of many tests at once.
struct DeliveryRouter;

impl ClientContext for DeliveryRouter {}

impl ProducerContext for DeliveryRouter {
    type DeliveryOpaque = Box<(Arc<Deliveries>, usize)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (deliveries, index) = *opaque;
        let outcome = match result {
            Ok(message) => Ok(message.offset()),
            Err((error, _)) => Err(error.to_string()),
        };
        deliveries.lock()[index] = Some(outcome);
    }
}

type HarnessProducer = BaseProducer<DeliveryRouter>;

/// A producer with acknowledgement from all in-sync replicas and
/// idempotence (so retries neither duplicate nor reorder records).
fn producer_config(options: &ProduceOptions<'_>, linger_ms: u64) -> ClientConfig {
    let batch_records = options.batch_records.max(1);
    let mut config = kafka_config(&env().brokers);
    config
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", options.compression)
        .set("batch.num.messages", batch_records.to_string())
        .set("linger.ms", linger_ms.to_string())
        .set("message.timeout.ms", "60000");
    config
}

/// The producer of `produce` and `produce_transaction`: batches of at most
/// `PRODUCE_BATCH_RECORDS` and `PRODUCE_BATCH_BYTES`, after a 5 ms linger
/// (so a batch may also be shorter).
fn default_producer_config() -> ClientConfig {
    let mut config = producer_config(&ProduceOptions::default(), 5);
    config.set("batch.size", PRODUCE_BATCH_BYTES.to_string());
    config
}

fn new_producer(config: &ClientConfig) -> HarnessProducer {
    config
        .create_with_context(DeliveryRouter)
        .unwrap_or_else(|error| panic!("cannot create a Kafka producer: {error}"))
}

/// The producer of this test binary for `name`, created with `config` on
/// first use. Shared because a new idempotent producer waits 500 ms before
/// it asks for its producer id (librdkafka's PID timer) and a test calls
/// `produce` many times. One with a fatal error is replaced.
fn shared_producer(name: &str, config: impl FnOnce() -> ClientConfig) -> Arc<HarnessProducer> {
    static PRODUCERS: Mutex<BTreeMap<String, Arc<HarnessProducer>>> = Mutex::new(BTreeMap::new());
    let mut producers = PRODUCERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(producer) = producers.get(name) {
        if producer.client().fatal_error().is_none() {
            return Arc::clone(producer);
        }
    }
    let producer = Arc::new(new_producer(&config()));
    producers.insert(name.to_owned(), Arc::clone(&producer));
    producer
}

/// Queues `records` for `topic`/`partition`, then waits for every delivery
/// report. Panics with the first failure.
fn send_all(
    producer: &HarnessProducer,
    topic: &str,
    partition: i32,
    records: &[KeyValue],
) -> Vec<i64> {
    let started = Instant::now();
    let deliveries = Arc::new(Deliveries {
        outcomes: Mutex::new(vec![None; records.len()]),
    });
    for (index, (key, value)) in records.iter().enumerate() {
        let mut record: BaseRecord<'_, [u8], [u8], _> =
            BaseRecord::with_opaque_to(topic, Box::new((Arc::clone(&deliveries), index)))
                .partition(partition);
        if let Some(key) = key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = value {
            record = record.payload(value.as_slice());
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    if started.elapsed() >= PRODUCE_DEADLINE {
                        panic!("producing to {topic}/{partition}: the producer queue is still full after {PRODUCE_DEADLINE:?}");
                    }
                    record = returned;
                    producer.poll(Duration::from_millis(2));
                }
                Err((error, _)) => {
                    panic!("producing record {index} to {topic}/{partition} failed: {error}")
                }
            }
        }
    }
    // Not Producer::flush: the rdkafka crate's flush polls 100 ms at a time,
    // and BaseProducer::poll always waits out its whole timeout; short polls
    // it is.
    loop {
        let missing = deliveries.lock().iter().filter(|o| o.is_none()).count();
        if missing == 0 {
            break;
        }
        if started.elapsed() >= PRODUCE_DEADLINE {
            panic!(
                "producing {} records to {topic}/{partition}: {missing} without a delivery report after {PRODUCE_DEADLINE:?}",
                records.len()
            );
        }
        producer.poll(Duration::from_millis(2));
    }
    let outcomes = std::mem::take(&mut *deliveries.lock());
    let mut offsets = Vec::with_capacity(records.len());
    for (index, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Some(Ok(offset)) => offsets.push(offset),
            Some(Err(error)) => {
                panic!("producing record {index} to {topic}/{partition} failed: {error}")
            }
            None => unreachable!("every record has a delivery report"),
        }
    }
    if let Some(pair) = offsets.windows(2).find(|pair| pair[0] >= pair[1]) {
        panic!(
            "records produced to {topic}/{partition} were appended out of order: offset {} before {}",
            pair[0], pair[1]
        );
    }
    offsets
}

/// Appends `records` to one partition, in order, each acknowledged by all
/// in-sync replicas (librdkafka, idempotent), in batches of at most 500
/// records and 512 KiB (see `PRODUCE_BATCH_RECORDS`). Returns the offset of
/// each record, from the delivery reports.
///
/// A `None` key or value goes out as a real null (a `None` value is a
/// tombstone), an empty `Vec` as an empty one: librdkafka keeps the two
/// apart on both sides.
pub fn produce(topic: &str, partition: i32, records: &[KeyValue]) -> Vec<i64> {
    let producer = shared_producer("produce", default_producer_config);
    send_all(&producer, topic, partition, records)
}

/// Like `produce`, compressed and batched as `options` say.
pub fn produce_with(
    topic: &str,
    partition: i32,
    records: &[KeyValue],
    options: &ProduceOptions<'_>,
) -> Vec<i64> {
    // A batch goes out when it is full or when its first record has waited
    // linger.ms: long enough for all the records of a call to be queued
    // (microseconds each), so that only the last batch can be short. (The
    // rdkafka crate's flush() would not cut the linger short either: it
    // calls librdkafka's rd_kafka_flush with a zero timeout, which sets the
    // "flushing" flag only for an instant.)
    let linger_ms = if options.batch_records <= 1 { 0 } else { 200 };
    let name = format!(
        "produce_with {} {}",
        options.compression, options.batch_records
    );
    let producer = shared_producer(&name, || producer_config(options, linger_ms));
    send_all(&producer, topic, partition, records)
}

/// Produces `records` in one transaction of a transactional producer of its
/// own (a new `transactional.id`), then commits it, or aborts it when
/// `commit` is false. Returns the offsets the records got (an aborted
/// transaction's records take offsets too, and so does the commit or abort
/// marker after them).
pub fn produce_transaction(
    topic: &str,
    partition: i32,
    records: &[KeyValue],
    commit: bool,
) -> Vec<i64> {
    let mut config = default_producer_config();
    config
        .set("transactional.id", unique_name("k2m_it_tx"))
        .set("transaction.timeout.ms", "60000");
    let producer = new_producer(&config);
    let fail = |step: &str, error: KafkaError| -> ! {
        panic!("transaction on {topic}/{partition}: {step} failed: {error}")
    };
    producer
        .init_transactions(KAFKA_REQUEST_TIMEOUT * 3)
        .unwrap_or_else(|error| fail("init_transactions", error));
    producer
        .begin_transaction()
        .unwrap_or_else(|error| fail("begin_transaction", error));
    let offsets = send_all(&producer, topic, partition, records);
    if commit {
        producer
            .commit_transaction(KAFKA_REQUEST_TIMEOUT * 3)
            .unwrap_or_else(|error| fail("commit_transaction", error));
    } else {
        producer
            .abort_transaction(KAFKA_REQUEST_TIMEOUT * 3)
            .unwrap_or_else(|error| fail("abort_transaction", error));
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

/// A record read back by `fetch_records`. `key` and `value` are empty for a
/// null as for an empty one; `null_key` and `null_value` tell them apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRecord {
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub null_key: bool,
    pub null_value: bool,
}

impl FetchedRecord {
    /// The key and value as `produce` takes them (`None` for a null).
    pub fn key_value(&self) -> KeyValue {
        (
            (!self.null_key).then(|| self.key.clone()),
            (!self.null_value).then(|| self.value.clone()),
        )
    }
}

/// Reads one partition from `from_offset` up to its high watermark (as it
/// was when the call began), with a consumer of the harness's own that
/// assigns itself the partition (no group membership, no commits) and reads
/// `read_committed`: records of aborted transactions and transaction
/// markers are skipped, and an open transaction ends the read at its first
/// record (the last stable offset). Panics on any error of that partition.
pub fn fetch_records(topic: &str, partition: i32, from_offset: i64) -> Vec<FetchedRecord> {
    try_fetch_records(topic, partition, from_offset).unwrap_or_else(|error| {
        panic!("fetching {topic}/{partition} from offset {from_offset} failed: {error}")
    })
}

/// Like `fetch_records`, with the error that Kafka (or librdkafka) reported.
/// An offset out of the partition's range is
/// `KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset)`:
/// the reader has `auto.offset.reset=error`, so librdkafka reports the
/// broker's OffsetOutOfRange that way instead of jumping elsewhere.
pub fn try_fetch_records(
    topic: &str,
    partition: i32,
    from_offset: i64,
) -> Result<Vec<FetchedRecord>, KafkaError> {
    let consumer: BaseConsumer = kafka_config(&env().brokers)
        // assign() needs a group.id; this group never joins, commits nor
        // stores offsets, so the broker never hears of it.
        .set("group.id", "kafka2mysql-it-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "50")
        .create()
        .unwrap_or_else(|error| panic!("cannot create a Kafka consumer: {error}"));
    let (_, high_watermark) = consumer.fetch_watermarks(topic, partition, KAFKA_REQUEST_TIMEOUT)?;
    let mut records = Vec::new();
    if from_offset == high_watermark {
        return Ok(records);
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(from_offset))?;
    consumer.assign(&assignment)?;
    let started = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let offset = message.offset();
                if offset >= high_watermark {
                    break;
                }
                records.push(FetchedRecord {
                    offset,
                    key: message.key().unwrap_or_default().to_vec(),
                    value: message.payload().unwrap_or_default().to_vec(),
                    null_key: message.key().is_none(),
                    null_value: message.payload().is_none(),
                });
                if offset + 1 >= high_watermark {
                    break;
                }
            }
            // The end for read_committed: the last stable offset.
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(error)) => return Err(error),
            None if started.elapsed() >= FETCH_DEADLINE => panic!(
                "reading {topic}/{partition} from offset {from_offset} up to the high watermark {high_watermark}: \
                 after {FETCH_DEADLINE:?}, {} records, the last at offset {:?}",
                records.len(),
                records.last().map(|record| record.offset)
            ),
            None => {}
        }
    }
    Ok(records)
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

/// A configuration (README.md, "Configuration reference") for the test services with quick
/// commits and millisecond backoff, with `overrides` (TOML text, e.g.
/// `"[mysql]\nwrite_mode = \"insert\""`) merged in key by key. When
/// `K2M_CLIENT` is set (e.g. `kafka-rust`), `[kafka]` gets `client =` it
/// (before the overrides, which may replace it).
pub fn test_config(topic: &str, group: &str, table: &str, overrides: &str) -> String {
    test_config_for_client(topic, group, table, overrides, k2m_client().as_deref())
}

/// The Kafka client the tests run the service with: `K2M_CLIENT`, or
/// `None` (the service's default) when it is unset or empty.
pub fn k2m_client() -> Option<String> {
    std::env::var("K2M_CLIENT")
        .ok()
        .map(|client| client.trim().to_owned())
        .filter(|client| !client.is_empty())
}

/// `test_config` with the `kafka.client` given here instead of by
/// `K2M_CLIENT`: `None` leaves the key out.
pub fn test_config_for_client(
    topic: &str,
    group: &str,
    table: &str,
    overrides: &str,
    client: Option<&str>,
) -> String {
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
    if let Some(client) = client {
        let Some(toml::Value::Table(kafka)) = config.get_mut("kafka") else {
            unreachable!("the base test config has a [kafka] table");
        };
        kafka.insert("client".to_owned(), toml::Value::from(client));
    }
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

    /// Waits until the log holds `line` (a part of a line) `times` times or
    /// more.
    pub fn wait_for_log(&self, line: &str, times: usize, deadline: Duration) {
        wait_until(
            &format!("{line:?} {times} times in the log"),
            deadline,
            || match self.log_text().matches(line).count() {
                n if n >= times => Ok(()),
                n => Err(format!("{n} times")),
            },
        );
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
