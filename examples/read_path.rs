//! The benchmark's read path: kafka2mysql's whole pipeline (coordinator,
//! fetch, copy into batches, worker queues, JSON to rows, offset commits)
//! with a sink that counts the records it is given and writes nothing.
//! `scripts/bench.sh` runs it to compare the service's read rate with kcat's.
//!
//! ```text
//! cargo run --release --example read_path -- --config FILE --expect N
//! ```
//!
//! It stops once N records were applied and prints one line:
//! `read_path records=N seconds=S records_per_s=R cpu_s=C peak_rss_kib=K`.
//! The time runs from the start of the pipeline (connecting to the broker
//! and the database included) to the moment the N-th record was counted.
//!
//! It lives here and not in the production command line on purpose: a
//! service that reads a topic and throws the records away is of no use to an
//! operator and dangerous in a config file. It still needs the database for
//! the table's schema (the mapping from JSON to rows is part of the path).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka2mysql::config::Config;
use kafka2mysql::service::run_pipeline;
use kafka2mysql::Error;
use kafka2mysql::TableSchema;
use kafka2mysql::{Sink, WriteSet};

/// Counts what it is asked to write; never fails.
struct CountingSink {
    records: Arc<AtomicU64>,
}

impl Sink for CountingSink {
    fn apply(&mut self, write: WriteSet<'_>) -> Result<(), Error> {
        let n = write.rows.len() + write.dead_letters.len();
        self.records.fetch_add(n as u64, Ordering::Relaxed);
        Ok(())
    }
}

struct Args {
    config: PathBuf,
    expect: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut config = None;
    let mut expect = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => config = args.next().map(PathBuf::from),
            "--expect" => {
                let text = args.next().ok_or("--expect needs a number")?;
                expect = Some(
                    text.parse::<u64>()
                        .map_err(|e| format!("--expect {text:?}: {e}"))?,
                );
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        config: config.ok_or("--config FILE is required")?,
        expect: expect.ok_or("--expect N is required")?,
    })
}

/// User plus system CPU seconds and peak resident memory (KiB) of this process.
fn cpu_and_peak_rss() -> (f64, u64) {
    // SAFETY: getrusage only writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        seconds(usage.ru_utime) + seconds(usage.ru_stime),
        usage.ru_maxrss as u64,
    )
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("read_path: {e}\nusage: read_path --config FILE --expect N");
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(&args.config) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("read_path: bad config: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) =
        kafka2mysql::logging::init(config.log.level.to_filter(), config.log.file.as_deref())
    {
        eprintln!("read_path: cannot open log file: {e}");
        return ExitCode::from(2);
    }

    let records = Arc::new(AtomicU64::new(0));
    let pipeline_ended = Arc::new(AtomicBool::new(false));
    let (shutdown_sender, shutdown) = crossbeam_channel::bounded::<()>(0);
    let started = Instant::now();
    // Watches the counter and closes the shutdown channel once every expected
    // record was counted; reports when that was.
    let watcher = {
        let records = records.clone();
        let pipeline_ended = pipeline_ended.clone();
        let expect = args.expect;
        std::thread::spawn(move || {
            while records.load(Ordering::Relaxed) < expect
                && !pipeline_ended.load(Ordering::Relaxed)
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            let elapsed = started.elapsed();
            let (cpu, rss) = cpu_and_peak_rss();
            drop(shutdown_sender);
            (elapsed, cpu, rss)
        })
    };
    let sinks = |_: &TableSchema| -> Box<dyn Sink> {
        Box::new(CountingSink {
            records: records.clone(),
        })
    };
    let outcome = run_pipeline(&config, shutdown, None, &sinks);
    pipeline_ended.store(true, Ordering::Relaxed);
    match outcome {
        Ok(Some(_)) => {}
        Ok(None) => {
            eprintln!("read_path: stopped during start-up");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("read_path: {e}");
            return ExitCode::from(1);
        }
    }
    let (elapsed, cpu, rss) = watcher.join().expect("watcher thread");
    let n = records.load(Ordering::Relaxed);
    if n < args.expect {
        eprintln!(
            "read_path: the pipeline stopped after {n} of {} records",
            args.expect
        );
        return ExitCode::from(1);
    }
    let seconds = elapsed.as_secs_f64();
    println!(
        "read_path records={n} seconds={seconds:.3} records_per_s={:.0} cpu_s={cpu:.2} peak_rss_kib={rss}",
        n as f64 / seconds
    );
    ExitCode::SUCCESS
}
