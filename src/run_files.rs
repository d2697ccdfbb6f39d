//! The run files of one configuration: where they live (`Paths`: the pid
//! file and the status file, in `run/` beside the config's directory), and
//! the pid lock that keeps a second `run`, a `reset-offsets` or a
//! `replay-dead-letters` from working while another holds it. What the
//! status file says is `status.rs`'s.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::Exit;

/// Where the pid file and the status file of one configuration live:
/// `<config dir>/../run/<config file stem>.pid` and `.status.json`, so that an
/// installed tree (`PREFIX/conf`, `PREFIX/run`) and the repository
/// (`conf/`, `run/`) work alike, and two configurations never share them.
#[derive(Debug, Clone)]
pub struct Paths {
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
        }
    }
}

/// Why the pid lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it (`pid` as its file says, when it says one).
    #[error("already running (pid {}, lock {})", pid_text(*.pid), .pid_file.display())]
    Held { pid: Option<u32>, pid_file: PathBuf },
    /// The pid file cannot be created, opened or locked.
    #[error("cannot lock {}: {source}", .pid_file.display())]
    Failed {
        pid_file: PathBuf,
        source: std::io::Error,
    },
}

impl LockError {
    /// `run`'s exit code: 3 when another process runs, 1 otherwise.
    pub fn exit(&self) -> Exit {
        match self {
            LockError::Held { .. } => Exit::AlreadyRunning,
            LockError::Failed { .. } => Exit::Failed,
        }
    }
}

fn pid_text(pid: Option<u32>) -> String {
    pid.filter(|&p| p != 0)
        .map_or("?".to_string(), |p| p.to_string())
}

/// Takes the pid-file lock of `config`'s run files, before anything else
/// (the log file included) is touched, so that a refused second `run`
/// leaves the running instance's files alone. `None` for a config that
/// was not read from a file (tests and examples).
pub fn lock_run_files(config: &Config) -> Result<Option<PidLock>, LockError> {
    let Some(paths) = config.source.as_deref().map(Paths::for_config) else {
        return Ok(None);
    };
    PidLock::acquire(&paths.pid_file).map(Some)
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
    /// Takes the lock and writes our pid; `LockError::Held` when another
    /// process holds it.
    pub fn acquire(path: &Path) -> Result<PidLock, LockError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::io::AsRawFd;
        let failed = |source| LockError::Failed {
            pid_file: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map_err(failed)?;
        let lock = whole_file_lock();
        // SAFETY: fcntl on a descriptor we own, with a valid `flock`.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EACCES) => Err(LockError::Held {
                    pid: read_pid(path),
                    pid_file: path.to_path_buf(),
                }),
                _ => Err(failed(e)),
            };
        }
        file.set_len(0).map_err(failed)?;
        writeln!(file, "{}", std::process::id()).map_err(failed)?;
        file.flush().map_err(failed)?;
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
        match PidLock::acquire(&path).unwrap_err() {
            LockError::Held { pid, .. } => assert_eq!(pid, Some(me)),
            other => panic!("{other}"),
        }
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
