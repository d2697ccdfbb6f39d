//! What the running service tells the outside: counters for the periodic stats
//! line, and the status file (per-partition state, offsets, last error) that
//! `kafka2mysql status` reads while the service runs.
//!
//! The status file sits beside the pid file (`run_files.rs`), is rewritten about
//! once a second by the coordinator, atomically (write then rename).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Counters shared by the coordinator and the workers.
#[derive(Debug, Default)]
pub struct Stats {
    pub records_applied: AtomicU64,
    pub rows_written: AtomicU64,
    pub dead_letters: AtomicU64,
    pub retries: AtomicU64,
    pub offset_resets: AtomicU64,
    pub records_fetched: AtomicU64,
    /// The same per partition, with the coordinator's view, for the metrics
    /// endpoint (`metrics.rs`).
    pub partitions: crate::metrics::PartitionMetrics,
    /// Records not written because the table held them already (see
    /// `mysql::sink::Sink::holds`).
    pub records_already_written: AtomicU64,
    /// Records the stale-write guard left alone (`mysql.version_column`):
    /// the row holds a newer version.
    pub records_stale: AtomicU64,
}

impl Stats {
    pub fn add_applied(&self, records: usize, rows: usize, dead_letters: usize) {
        self.records_applied
            .fetch_add(records as u64, Ordering::Relaxed);
        self.rows_written.fetch_add(rows as u64, Ordering::Relaxed);
        self.dead_letters
            .fetch_add(dead_letters as u64, Ordering::Relaxed);
    }

    pub fn add_already_written(&self, records: usize) {
        self.records_already_written
            .fetch_add(records as u64, Ordering::Relaxed);
    }

    pub fn add_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_stale(&self, records: u64) {
        self.records_stale.fetch_add(records, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            records_applied: self.records_applied.load(Ordering::Relaxed),
            rows_written: self.rows_written.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            // Not a counter: the coordinator's map says it (`reporter.rs`).
            blocked_partitions: 0,
            offset_resets: self.offset_resets.load(Ordering::Relaxed),
            records_fetched: self.records_fetched.load(Ordering::Relaxed),
            records_already_written: self.records_already_written.load(Ordering::Relaxed),
            records_stale: self.records_stale.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    pub records_applied: u64,
    pub rows_written: u64,
    pub dead_letters: u64,
    pub retries: u64,
    pub blocked_partitions: u64,
    pub offset_resets: u64,
    pub records_fetched: u64,
    /// Missing in status files written before it was counted.
    #[serde(default)]
    pub records_already_written: u64,
    /// Records the stale-write guard left alone (`mysql.version_column`);
    /// missing in status files written before it was counted.
    #[serde(default)]
    pub records_stale: u64,
}

/// One partition as the running service sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStatus {
    pub partition: i32,
    /// "flowing"; "retrying" (a technical fault: it resumes by itself once
    /// the fault clears); "blocked" (the operator must act).
    pub state: String,
    /// Unix seconds since when the partition is retrying or blocked.
    pub blocked_since: Option<u64>,
    pub blocked_at_offset: Option<i64>,
    /// "technical", "business" or "fatal".
    #[serde(default)]
    pub error_class: Option<String>,
    pub last_error: Option<String>,
    /// Next offset to fetch.
    pub fetch_offset: i64,
    /// Everything below is in MySQL.
    pub applied_offset: i64,
    /// Last offset committed to the Kafka group.
    pub committed_offset: Option<i64>,
    pub high_watermark: Option<i64>,
}

/// The status file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub pid: u32,
    pub started_at: u64,
    pub updated_at: u64,
    pub topic: String,
    pub group: String,
    pub partitions: BTreeMap<i32, PartitionStatus>,
    pub stats: StatsSnapshot,
}

pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ServiceStatus {
    /// Writes the file atomically (a new file, then renamed), readable by
    /// its owner only: its last errors may quote record values.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&text)?;
        drop(file);
        std::fs::rename(&tmp, path)
    }

    pub fn read(path: &Path) -> Option<ServiceStatus> {
        let text = std::fs::read(path).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_file_round_trips() {
        let dir = std::env::temp_dir().join(format!("k2m-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.status.json");
        let mut s = ServiceStatus {
            pid: 7,
            topic: "t".into(),
            ..Default::default()
        };
        s.partitions.insert(
            1,
            PartitionStatus {
                partition: 1,
                state: "blocked".into(),
                ..Default::default()
            },
        );
        s.write(&path).unwrap();
        assert_eq!(ServiceStatus::read(&path), Some(s));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the status file is its owner's only");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
