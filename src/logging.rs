//! Logging set-up: `log` + `simplelog`, to stderr or to `log.file`. The file
//! is reopened on SIGHUP (`reopen`) so that logrotate can move it away.
//! Lines carry a UTC timestamp, the level and the thread (`partition-3`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use simplelog::{ConfigBuilder, LevelFilter, ThreadLogMode, WriteLogger};

/// A log file that can be reopened in place.
#[derive(Clone)]
struct ReopenableFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl ReopenableFile {
    fn open(path: &Path) -> io::Result<ReopenableFile> {
        Ok(ReopenableFile {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(open_append(path)?)),
        })
    }

    fn reopen(&self) -> io::Result<()> {
        let fresh = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for ReopenableFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

static LOG_FILE: OnceLock<ReopenableFile> = OnceLock::new();

/// Starts logging at `level`, to `file` when given, else to stderr. Calling it
/// twice keeps the first set-up.
pub fn init(level: LevelFilter, file: Option<&Path>) -> io::Result<()> {
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_thread_level(LevelFilter::Error)
        .set_thread_mode(ThreadLogMode::Names)
        .set_target_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        // The kafka crate logs every failed connection attempt at error level;
        // our own lines say what matters, once.
        .add_filter_ignore_str("kafka::")
        .build();
    let result = match file {
        Some(path) => {
            let f = ReopenableFile::open(path)?;
            let _ = LOG_FILE.set(f.clone());
            WriteLogger::init(level, config, f)
        }
        None => WriteLogger::init(level, config, io::stderr()),
    };
    // A second init (tests) is harmless.
    let _ = result;
    Ok(())
}

/// Reopens the log file (SIGHUP). Stderr needs nothing.
pub fn reopen() {
    if let Some(f) = LOG_FILE.get() {
        if let Err(e) = f.reopen() {
            log::error!("cannot reopen log file {}: {e}", f.path.display());
        } else {
            log::info!("log file reopened");
        }
    }
}
