//! What the running service tells the outside: counters for the periodic stats
//! line, and the status file (per-partition state, offsets, last error) that
//! `kafka2mysql status` reads while the service runs.
//!
//! The status file sits beside the pid file (see `paths`), is rewritten about
//! once a second by the coordinator, atomically (write then rename).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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
    pub blocked_partitions: AtomicU64,
    pub offset_resets: AtomicU64,
    pub records_fetched: AtomicU64,
}

impl Stats {
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

    pub fn partition_blocked(&self) {
        self.blocked_partitions.fetch_add(1, Ordering::Relaxed);
    }

    pub fn partition_unblocked(&self) {
        self.blocked_partitions.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            records_applied: self.records_applied.load(Ordering::Relaxed),
            rows_written: self.rows_written.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            blocked_partitions: self.blocked_partitions.load(Ordering::Relaxed),
            offset_resets: self.offset_resets.load(Ordering::Relaxed),
            records_fetched: self.records_fetched.load(Ordering::Relaxed),
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
}

/// One partition as the running service sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStatus {
    pub partition: i32,
    /// "flowing" or "blocked".
    pub state: String,
    /// Unix seconds since when the partition is blocked.
    pub blocked_since: Option<u64>,
    pub blocked_at_offset: Option<i64>,
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

pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ServiceStatus {
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }

    pub fn read(path: &Path) -> Option<ServiceStatus> {
        let text = std::fs::read(path).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

/// Where the pid file and the status file of one configuration live:
/// `<config dir>/../run/<config file stem>.pid` and `.status.json`, so that an
/// installed tree (`PREFIX/conf`, `PREFIX/run`) and the repository
/// (`conf/`, `run/`) work alike, and two configurations never share them.
#[derive(Debug, Clone)]
pub struct Paths {
    pub run_dir: PathBuf,
    pub pid_file: PathBuf,
    pub status_file: PathBuf,
}

impl Paths {
    pub fn for_config(config_file: &Path) -> Paths {
        let absolute =
            std::fs::canonicalize(config_file).unwrap_or_else(|_| config_file.to_path_buf());
        let dir = absolute
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let run_dir = dir
            .parent()
            .map(|p| p.join("run"))
            .unwrap_or_else(|| dir.join("run"));
        let stem = absolute
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "kafka2mysql".into());
        Paths {
            pid_file: run_dir.join(format!("{stem}.pid")),
            status_file: run_dir.join(format!("{stem}.status.json")),
            run_dir,
        }
    }
}

/// The pid file, held with an exclusive `flock` for the life of the process:
/// a second `run` with the same configuration refuses to start, and
/// `reset-offsets` refuses while the lock is held.
#[derive(Debug)]
pub struct PidLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl PidLock {
    /// Takes the lock and writes our pid; `Err(Some(pid))` when another
    /// process holds it.
    pub fn acquire(path: &Path) -> Result<PidLock, std::io::Result<Option<u32>>> {
        use std::io::Write;
        use std::os::unix::io::AsRawFd;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(Err)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(Err)?;
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(Ok(read_pid(path)));
        }
        file.set_len(0).map_err(Err)?;
        writeln!(file, "{}", std::process::id()).map_err(Err)?;
        file.flush().map_err(Err)?;
        Ok(PidLock {
            _file: file,
            path: path.to_path_buf(),
        })
    }

    /// The pid of the process holding the lock, if one does.
    pub fn holder(path: &Path) -> Option<u32> {
        use std::os::unix::io::AsRawFd;
        let file = std::fs::File::open(path).ok()?;
        // SAFETY: as above.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        if rc == 0 {
            // SAFETY: as above.
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
            return None;
        }
        Some(read_pid(path).unwrap_or(0))
    }
}

impl Drop for PidLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_sit_in_run_beside_conf() {
        let p = Paths::for_config(Path::new("/opt/k2m/conf/orders.toml"));
        assert_eq!(p.pid_file, PathBuf::from("/opt/k2m/run/orders.pid"));
        assert_eq!(
            p.status_file,
            PathBuf::from("/opt/k2m/run/orders.status.json")
        );
    }

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
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
