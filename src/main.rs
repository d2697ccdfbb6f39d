//! The `kafka2mysql` command line: parse, set up logging, run, exit.
//! Exit codes of `run`: 0 clean stop, 1 runtime failure, 2 bad config or
//! setup, 3 already running (nothing was done); the one table of them is
//! `error::Exit`. The other commands document theirs in `commands.rs` and
//! `replay.rs`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use kafka2mysql::commands::{self, ResetTarget};
use kafka2mysql::config::Config;
use kafka2mysql::logging;
use kafka2mysql::replay;
use kafka2mysql::run_files;
use kafka2mysql::service::{self, RunOutcome};
use kafka2mysql::Exit;

#[derive(Parser)]
#[command(
    name = "kafka2mysql",
    version,
    about = "Moves the records of one Kafka topic into one MySQL table"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service in the foreground until SIGTERM or SIGINT.
    Run {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate the config, reach the broker and the database, check the table.
    Check {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Per partition: committed, earliest, latest, lag, state; dead letters.
    /// Exit 0 all flowing, 1 something retrying, blocked or unreachable,
    /// 3 not running.
    Status {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only what the running service's own files say (pid lock, status
        /// file): asks neither the broker nor the database.
        #[arg(long)]
        local: bool,
    },
    /// Stop the running service: SIGTERM, then SIGKILL after
    /// worker.shutdown_timeout_ms plus 5 s.
    Stop {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Move the group's committed offsets (refused while the service runs).
    ResetOffsets {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// earliest, latest or an offset.
        #[arg(long, value_name = "earliest|latest|OFFSET")]
        to: ResetTarget,
        /// Only this partition (default: every configured partition).
        #[arg(long, value_name = "P")]
        partition: Option<i32>,
    },
    /// Apply the dead letters again, in offset order per partition, each
    /// removed with its row's write; what still fails stays (refused while
    /// the service runs). Exit 0 all replayed, 1 some still fail, 2 setup,
    /// 3 the service runs.
    ReplayDeadLetters {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Only this partition's dead letters.
        #[arg(long, value_name = "P")]
        partition: Option<i32>,
        /// Only dead letters written at or after this time (RFC 3339, or
        /// YYYY-MM-DD[ HH:MM:SS] in mysql.time_zone).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Show what would be replayed and whether each maps; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("kafka2mysql: bad config: {e}");
        Exit::Setup.exit_code()
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let lock = match run_files::lock_run_files(&config) {
                Ok(lock) => lock,
                Err(e) => {
                    eprintln!("kafka2mysql: {e}");
                    return e.exit().exit_code();
                }
            };
            if let Err(e) = logging::init(config.log.level.to_filter(), config.log.file.as_deref())
            {
                eprintln!("kafka2mysql: cannot open log file (log.file): {e}");
                return Exit::Setup.exit_code();
            }
            let shutdown = match service::install_signals() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("kafka2mysql: cannot install signal handlers: {e}");
                    return Exit::Failed.exit_code();
                }
            };
            let outcome = service::run(config, shutdown, lock);
            match &outcome {
                RunOutcome::Stopped => {}
                RunOutcome::Ended(Exit::Setup, message) => {
                    log::error!("setup error: {message}");
                    eprintln!("kafka2mysql: setup error: {message}");
                }
                RunOutcome::Ended(_, message) => {
                    log::error!("failed: {message}");
                    eprintln!("kafka2mysql: {message}");
                }
            }
            outcome.exit().exit_code()
        }
        Command::Check { config } => match load(&config) {
            Ok(c) => commands::check(&c),
            Err(code) => code,
        },
        Command::Status {
            config,
            json,
            local,
        } => match load(&config) {
            Ok(c) => commands::status(&c, json, local),
            Err(code) => code,
        },
        Command::Stop { config } => match load(&config) {
            Ok(c) => commands::stop(&c),
            Err(code) => code,
        },
        Command::ResetOffsets {
            config,
            to,
            partition,
        } => match load(&config) {
            Ok(c) => commands::reset_offsets(&c, to, partition),
            Err(code) => code,
        },
        Command::ReplayDeadLetters {
            config,
            partition,
            since,
            dry_run,
        } => match load(&config) {
            Ok(c) => replay::replay_dead_letters(
                &c,
                &replay::ReplayOptions {
                    partition,
                    since,
                    dry_run,
                },
            ),
            Err(code) => code,
        },
    }
}
