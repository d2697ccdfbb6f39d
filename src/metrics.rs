//! The Prometheus metrics endpoint: plain HTTP `GET /metrics` in the text
//! exposition format 0.0.4
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>), served
//! by one thread with `std::net`, off unless `metrics.listen` is set.
//!
//! What it shows comes from two owners, and it only reads both:
//! - the workers count what they write into their partition's
//!   `PartitionCounters` (atomics: records, rows, dead letters, retries, and
//!   the batch write latency histogram);
//! - the coordinator publishes its view of each partition (offsets, state)
//!   with `PartitionMetrics::publish` each time it writes the status file,
//!   about once a second.
//!
//! It must never slow the pipeline nor hold up a stop: a scrape takes two
//! short locks and reads atomics; each connection has read and write
//! timeouts; the thread is never joined (the process ends without it), and
//! dropping the `MetricsServer` closes the listener.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use log::{debug, info};

use crate::config::Config;
use crate::error::Error;
use crate::status::{PartitionStatus, Stats};

/// How long one connection may take to send its request or to take the
/// answer; the single serving thread is never held longer than this.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// A scrape request is a few hundred bytes; a longer head is refused.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The states a partition can be in, as the status file names them; each is
/// one series of `kafka2mysql_partition_state`, 1 for the current one.
const STATES: [&str; 3] = ["flowing", "retrying", "blocked"];

/// Upper bounds (seconds) of the batch write latency buckets: one
/// transaction of up to `worker.max_batch_rows` rows takes milliseconds on a
/// healthy database, seconds on a slow one.
const WRITE_SECONDS_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A latency histogram of atomics. Each bucket counts its own observations
/// (the last one those above every bound); they are summed into Prometheus'
/// cumulative buckets when rendered, so `+Inf` always equals `_count`.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; WRITE_SECONDS_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = WRITE_SECONDS_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(WRITE_SECONDS_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// What one partition's worker counts.
#[derive(Debug, Default)]
pub struct PartitionCounters {
    /// Records done with: written, skipped or dead-lettered.
    pub records_applied: AtomicU64,
    /// Rows inserted, updated or deleted.
    pub rows_written: AtomicU64,
    pub dead_letters: AtomicU64,
    /// Writes tried again (technical errors, and bad records before they are
    /// dead-lettered).
    pub retries: AtomicU64,
    /// Records the stale-write guard left alone (`mysql.version_column`).
    pub records_stale: AtomicU64,
    /// How long each successful write of rows or dead letters took (one
    /// transaction).
    pub write_seconds: Histogram,
}

impl PartitionCounters {
    pub fn add_applied(&self, records: usize, rows: usize, dead_letters: usize) {
        self.records_applied
            .fetch_add(records as u64, Ordering::Relaxed);
        self.rows_written.fetch_add(rows as u64, Ordering::Relaxed);
        self.dead_letters
            .fetch_add(dead_letters as u64, Ordering::Relaxed);
    }

    pub fn add_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_stale(&self, records: u64) {
        self.records_stale.fetch_add(records, Ordering::Relaxed);
    }
}

/// The per-partition part of `Stats`: the workers' counters and the
/// coordinator's last published view.
#[derive(Debug, Default)]
pub struct PartitionMetrics {
    counters: Mutex<BTreeMap<i32, Arc<PartitionCounters>>>,
    view: Mutex<Option<(Instant, BTreeMap<i32, PartitionStatus>)>>,
}

/// A poisoned lock only means that another thread panicked while holding
/// it; the data (counters and a copied view) is still good to show.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PartitionMetrics {
    /// The counters of `partition`, created at the first call (when its
    /// worker starts).
    pub fn counters(&self, partition: i32) -> Arc<PartitionCounters> {
        lock(&self.counters).entry(partition).or_default().clone()
    }

    /// The coordinator's view of every partition, as in the status file.
    pub fn publish(&self, partitions: &BTreeMap<i32, PartitionStatus>) {
        *lock(&self.view) = Some((Instant::now(), partitions.clone()));
    }
}

/// The endpoint's thread. Dropping it closes the listener; a request in
/// progress ends within `CONNECTION_TIMEOUT`.
pub struct MetricsServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl MetricsServer {
    /// The address it listens on (the port chosen by the system when the
    /// configuration says port 0).
    #[cfg(test)]
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the thread from `accept` so that it sees the flag and closes
        // the listener; it is never joined.
        let mut wake = self.address;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_millis(200));
    }
}

/// Starts the endpoint when `metrics.listen` is set. An address that cannot
/// be bound (in use, not local) is a setup error naming the key.
pub fn serve(config: &Config, stats: Arc<Stats>) -> Result<Option<MetricsServer>, Error> {
    let Some(listen) = config.metrics.listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(listen)
        .map_err(|e| Error::Setup(format!("metrics.listen: cannot listen on {listen}: {e}")))?;
    let address = listener
        .local_addr()
        .map_err(|e| Error::Setup(format!("metrics.listen: {listen}: {e}")))?;
    let stop = Arc::new(AtomicBool::new(false));
    let exposition = Exposition {
        stats,
        topic: config.kafka.topic.clone(),
        started: Instant::now(),
    };
    let thread_stop = stop.clone();
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || accept_loop(&listener, &thread_stop, &exposition))
        .map_err(|e| Error::Setup(format!("metrics.listen: cannot start its thread: {e}")))?;
    info!("metrics: serving http://{address}/metrics");
    Ok(Some(MetricsServer { address, stop }))
}

fn accept_loop(listener: &TcpListener, stop: &AtomicBool, exposition: &Exposition) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match stream {
            Ok(stream) => {
                if let Err(e) = answer(stream, exposition) {
                    debug!("metrics: a request failed: {e}");
                }
            }
            Err(e) => {
                // Out of file descriptors, for instance: do not spin.
                debug!("metrics: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Reads one request and answers it; the connection is closed after it.
fn answer(mut stream: TcpStream, exposition: &Exposition) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CONNECTION_TIMEOUT))?;
    stream.set_write_timeout(Some(CONNECTION_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let request_line = head.lines().next().unwrap_or("");
    let mut words = request_line.split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", CONTENT_TYPE, exposition.render()),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: the metrics are at /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET and HEAD\n".to_string(),
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

/// The request line and headers, up to the blank line that ends them.
fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST_BYTES {
            return Err(std::io::Error::other("request head too long"));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// A metric family's name and help, and how to read its value.
type Family<F> = (&'static str, &'static str, F);
type OffsetOf = fn(&PartitionStatus) -> Option<i64>;
type CounterOf = fn(&PartitionCounters) -> &AtomicU64;

/// Everything a scrape renders.
struct Exposition {
    stats: Arc<Stats>,
    topic: String,
    started: Instant,
}

impl Exposition {
    fn render(&self) -> String {
        let counters = lock(&self.stats.partitions.counters).clone();
        let view = lock(&self.stats.partitions.view).clone();
        let (view_age, partitions) = match view {
            Some((at, partitions)) => (Some(at.elapsed()), partitions),
            None => (None, BTreeMap::new()),
        };
        let mut out = Out::default();

        out.family(
            "kafka2mysql_uptime_seconds",
            "gauge",
            "Seconds since the service started.",
        );
        out.sample(
            "kafka2mysql_uptime_seconds",
            "",
            self.started.elapsed().as_secs_f64(),
        );
        if let Some(bytes) = resident_memory_bytes() {
            out.family(
                "kafka2mysql_resident_memory_bytes",
                "gauge",
                "Resident memory of the process (RSS).",
            );
            out.sample("kafka2mysql_resident_memory_bytes", "", bytes as f64);
        }
        if let Some(age) = view_age {
            out.family(
                "kafka2mysql_partition_view_age_seconds",
                "gauge",
                "Seconds since the coordinator last refreshed the per-partition offsets and states (about every second; more means it is stuck).",
            );
            out.sample(
                "kafka2mysql_partition_view_age_seconds",
                "",
                age.as_secs_f64(),
            );
        }
        if view_age.is_some() {
            out.family(
                "kafka2mysql_partitions_owned",
                "gauge",
                "Partitions this process reads now: its static list, or what the group assigned it.",
            );
            out.sample("kafka2mysql_partitions_owned", "", partitions.len() as f64);
        }
        out.family(
            "kafka2mysql_offset_resets_total",
            "counter",
            "Times a partition's position was moved because its offset was out of range or the topic was recreated.",
        );
        out.sample(
            "kafka2mysql_offset_resets_total",
            "",
            self.stats.offset_resets.load(Ordering::Relaxed) as f64,
        );

        let label = |p: i32| format!("topic=\"{}\",partition=\"{p}\"", escape(&self.topic));
        let offsets: [Family<OffsetOf>; 4] = [
            (
                "kafka2mysql_partition_committed_offset",
                "The offset last committed to the Kafka group (the next one to read).",
                |s| s.committed_offset,
            ),
            (
                "kafka2mysql_partition_applied_offset",
                "Every record below this offset is in MySQL, as a row or a dead letter.",
                |s| Some(s.applied_offset),
            ),
            (
                "kafka2mysql_partition_log_end_offset",
                "The partition's log end offset (high watermark) as of the last fetch.",
                |s| s.high_watermark,
            ),
            (
                "kafka2mysql_partition_lag",
                "Records in the log not yet in MySQL: log end offset minus applied offset.",
                |s| s.high_watermark.map(|h| (h - s.applied_offset).max(0)),
            ),
        ];
        for (name, help, value) in offsets {
            out.family(name, "gauge", help);
            for (&p, status) in &partitions {
                if let Some(v) = value(status) {
                    out.sample(name, &label(p), v as f64);
                }
            }
        }
        out.family(
            "kafka2mysql_partition_state",
            "gauge",
            "1 for the partition's current state (flowing, retrying or blocked), 0 for the others.",
        );
        for (&p, status) in &partitions {
            for state in STATES {
                let labels = format!("{},state=\"{state}\"", label(p));
                let on = status.state == state;
                out.sample(
                    "kafka2mysql_partition_state",
                    &labels,
                    f64::from(u8::from(on)),
                );
            }
        }

        let totals: [Family<CounterOf>; 5] = [
            (
                "kafka2mysql_records_applied_total",
                "Records done with: written as rows, skipped or dead-lettered.",
                |c| &c.records_applied,
            ),
            (
                "kafka2mysql_rows_written_total",
                "Rows inserted, updated or deleted in the target table.",
                |c| &c.rows_written,
            ),
            (
                "kafka2mysql_dead_letters_total",
                "Records written to the dead-letter table.",
                |c| &c.dead_letters,
            ),
            (
                "kafka2mysql_retries_total",
                "Writes tried again after a database error or a bad record.",
                |c| &c.retries,
            ),
            (
                "kafka2mysql_records_stale_total",
                "Records that mysql.version_column's guard left alone: the row holds a newer version.",
                |c| &c.records_stale,
            ),
        ];
        for (name, help, counter) in totals {
            out.family(name, "counter", help);
            for (&p, c) in &counters {
                out.sample(name, &label(p), counter(c).load(Ordering::Relaxed) as f64);
            }
        }
        let name = "kafka2mysql_batch_write_duration_seconds";
        out.family(
            name,
            "histogram",
            "How long one transaction of a batch's rows and dead letters took.",
        );
        for (&p, c) in &counters {
            let h = &c.write_seconds;
            let mut cumulative = 0;
            for (i, bucket) in h.buckets.iter().enumerate() {
                cumulative += bucket.load(Ordering::Relaxed);
                let le = WRITE_SECONDS_BUCKETS
                    .get(i)
                    .map_or("+Inf".to_string(), |b| b.to_string());
                let labels = format!("{},le=\"{le}\"", label(p));
                out.sample(&format!("{name}_bucket"), &labels, cumulative as f64);
            }
            let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            out.sample(&format!("{name}_sum"), &label(p), sum);
            out.sample(&format!("{name}_count"), &label(p), cumulative as f64);
        }
        out.0
    }
}

/// The exposition text being written.
#[derive(Default)]
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: f64) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
    }
}

/// A label value with `\`, `"` and newlines escaped, as the format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The process's resident set size, from `/proc/self/statm` (in pages; see
/// proc(5)).
fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the system; no memory is shared.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page_size).ok().map(|size| pages * size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition() -> Exposition {
        Exposition {
            stats: Arc::new(Stats::default()),
            topic: "orders".into(),
            started: Instant::now(),
        }
    }

    fn lines_of(text: &str, name: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(name))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn counters_and_histogram_render_per_partition() {
        let e = exposition();
        let c = e.stats.partitions.counters(2);
        c.add_applied(10, 8, 2);
        c.add_retry();
        c.write_seconds.observe(Duration::from_micros(500));
        c.write_seconds.observe(Duration::from_millis(30));
        c.write_seconds.observe(Duration::from_secs(60));
        let text = e.render();
        let labels = "topic=\"orders\",partition=\"2\"";
        for line in [
            format!("kafka2mysql_records_applied_total{{{labels}}} 10"),
            format!("kafka2mysql_rows_written_total{{{labels}}} 8"),
            format!("kafka2mysql_dead_letters_total{{{labels}}} 2"),
            format!("kafka2mysql_retries_total{{{labels}}} 1"),
            "# TYPE kafka2mysql_batch_write_duration_seconds histogram".to_string(),
            format!("kafka2mysql_batch_write_duration_seconds_count{{{labels}}} 3"),
            format!("kafka2mysql_batch_write_duration_seconds_sum{{{labels}}} 60.0305"),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in:\n{text}"
            );
        }
        let buckets = lines_of(&text, "kafka2mysql_batch_write_duration_seconds_bucket");
        let cumulative: Vec<&str> = buckets
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect();
        assert_eq!(
            cumulative,
            ["1", "1", "1", "1", "1", "2", "2", "2", "2", "2", "2", "2", "3"],
            "{buckets:#?}"
        );
        assert!(buckets[0].contains("le=\"0.001\""), "{}", buckets[0]);
        assert!(buckets[12].contains("le=\"+Inf\""), "{}", buckets[12]);
    }

    #[test]
    fn the_coordinators_view_gives_offsets_lag_and_one_state() {
        let e = exposition();
        let mut view = BTreeMap::new();
        view.insert(
            0,
            PartitionStatus {
                partition: 0,
                state: "blocked".into(),
                applied_offset: 40,
                committed_offset: Some(30),
                high_watermark: Some(100),
                ..Default::default()
            },
        );
        view.insert(
            1,
            PartitionStatus {
                partition: 1,
                state: "flowing".into(),
                applied_offset: 5,
                ..Default::default()
            },
        );
        e.stats.partitions.publish(&view);
        let text = e.render();
        let p0 = "topic=\"orders\",partition=\"0\"";
        for line in [
            format!("kafka2mysql_partition_committed_offset{{{p0}}} 30"),
            format!("kafka2mysql_partition_applied_offset{{{p0}}} 40"),
            format!("kafka2mysql_partition_log_end_offset{{{p0}}} 100"),
            format!("kafka2mysql_partition_lag{{{p0}}} 60"),
            format!("kafka2mysql_partition_state{{{p0},state=\"flowing\"}} 0"),
            format!("kafka2mysql_partition_state{{{p0},state=\"retrying\"}} 0"),
            format!("kafka2mysql_partition_state{{{p0},state=\"blocked\"}} 1"),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in:\n{text}"
            );
        }
        // Partition 1 has not been fetched yet: no log end and no lag rather
        // than made-up ones.
        let p1 = "partition=\"1\"";
        assert!(lines_of(&text, "kafka2mysql_partition_lag")
            .iter()
            .all(|l| !l.contains(p1)));
        assert!(lines_of(&text, "kafka2mysql_partition_committed_offset")
            .iter()
            .all(|l| !l.contains(p1)));
        assert!(text.contains("kafka2mysql_partition_view_age_seconds "));
    }

    #[test]
    fn every_family_has_help_and_type_and_rss_is_read() {
        let text = exposition().render();
        let types = lines_of(&text, "# TYPE").len();
        assert_eq!(types, lines_of(&text, "# HELP").len(), "{text}");
        assert!(resident_memory_bytes().is_some_and(|b| b > 1024 * 1024));
        assert!(
            text.contains("\nkafka2mysql_resident_memory_bytes "),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    fn request(address: SocketAddr, text: &str) -> String {
        let mut stream = TcpStream::connect(address).unwrap();
        stream.write_all(text.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn serves_metrics_and_404_and_stops_with_a_client_still_connected() {
        let mut config = Config::parse(
            "[kafka]\nbrokers = [\"127.0.0.1:9092\"]\ntopic = \"orders\"\ngroup = \"g\"\n\
             [mysql]\nurl = \"mysql://app@127.0.0.1:3306/app\"\ntable = \"orders\"\nkey_columns = [\"id\"]\n",
            None,
        )
        .unwrap();
        config.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
        let server = serve(&config, Arc::new(Stats::default()))
            .unwrap()
            .expect("listen is set");
        let address = server.address();

        let ok = request(address, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")),
            "{ok}"
        );
        assert!(
            ok.contains("\r\n\r\n# HELP kafka2mysql_uptime_seconds"),
            "{ok}"
        );
        let missing = request(address, "GET /other HTTP/1.1\r\n\r\n");
        assert!(
            missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{missing}"
        );
        let post = request(address, "POST /metrics HTTP/1.1\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");

        // A second server on the same address is a setup error naming the key.
        let mut taken = config.clone();
        taken.metrics.listen = Some(address);
        let e = serve(&taken, Arc::new(Stats::default())).err().unwrap();
        assert!(
            e.to_string()
                .starts_with("metrics.listen: cannot listen on"),
            "{e}"
        );

        // A client that connects and says nothing holds the thread until its
        // read timeout, never the one that drops the server.
        let _silent = TcpStream::connect(address).unwrap();
        let started = Instant::now();
        drop(server);
        assert!(started.elapsed() < Duration::from_secs(1));
        // Once the silent client timed out, the thread closes the listener.
        std::thread::sleep(CONNECTION_TIMEOUT + Duration::from_secs(1));
        assert!(
            TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_err(),
            "the listener should be closed"
        );
    }
}
