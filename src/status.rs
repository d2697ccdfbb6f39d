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

/// The pid file, held with an exclusive lock for the life of the process: a
/// second `run` with the same configuration refuses to start, and
/// `reset-offsets` holds it while it works.
///
/// The lock is an open file description lock (`F_OFD_SETLK`), so that
/// `holder` can ask whether it is held without taking it (a `status` during a
/// start never makes the start fail). The file is never removed: removing a
/// locked file lets a second process lock a new file of the same name while
/// the first still runs. At the end its content is cleared instead.
#[derive(Debug)]
pub struct PidLock {
    file: std::fs::File,
}

/// A whole-file write lock, as `fcntl` takes it.
fn whole_file_lock() -> libc::flock {
    // SAFETY: `flock` is a plain C struct; all zeroes is a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock
}

impl PidLock {
    /// Takes the lock and writes our pid; `Err(Some(pid))` when another
    /// process holds it.
    pub fn acquire(path: &Path) -> Result<PidLock, std::io::Result<Option<u32>>> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::io::AsRawFd;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(Err)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map_err(Err)?;
        let lock = whole_file_lock();
        // SAFETY: fcntl on a descriptor we own, with a valid `flock`.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EACCES) => Err(Ok(read_pid(path))),
                _ => Err(Err(e)),
            };
        }
        file.set_len(0).map_err(Err)?;
        writeln!(file, "{}", std::process::id()).map_err(Err)?;
        file.flush().map_err(Err)?;
        Ok(PidLock { file })
    }

    /// Whether a process holds the lock, and its pid as the file says (0
    /// while a starting process has not written it yet). Never takes the
    /// lock and never creates the file.
    pub fn holder(path: &Path) -> Option<u32> {
        use std::os::unix::io::AsRawFd;
        let file = std::fs::File::open(path).ok()?;
        let mut lock = whole_file_lock();
        // SAFETY: as above; F_OFD_GETLK only fills in `lock`.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
        if rc != 0 || lock.l_type == libc::F_UNLCK as libc::c_short {
            return None;
        }
        Some(read_pid(path).unwrap_or(0))
    }
}

impl Drop for PidLock {
    fn drop(&mut self) {
        // Cleared while still locked; the lock goes with the descriptor.
        let _ = self.file.set_len(0);
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
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the status file is its owner's only");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_pid_lock_is_seen_without_taking_it_and_its_file_stays() {
        let dir = std::env::temp_dir().join(format!("k2m-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.pid");
        assert_eq!(PidLock::holder(&path), None, "no file: nobody");
        assert!(!path.exists(), "asking creates nothing");
        let lock = PidLock::acquire(&path).unwrap();
        let me = std::process::id();
        assert_eq!(PidLock::holder(&path), Some(me));
        // A second lock in the same process conflicts too (a lock of its own
        // open file description), as a second process's would.
        assert_eq!(PidLock::acquire(&path).unwrap_err().unwrap(), Some(me));
        assert_eq!(
            PidLock::holder(&path),
            Some(me),
            "still held after a refusal"
        );
        drop(lock);
        assert!(path.exists(), "the pid file is never removed");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        assert_eq!(PidLock::holder(&path), None);
        let again = PidLock::acquire(&path).unwrap();
        assert_eq!(PidLock::holder(&path), Some(me));
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
