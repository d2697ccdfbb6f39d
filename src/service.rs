//! `kafka2mysql run`: start-up, signals and the hand-over to the coordinator.
//!
//! Start-up order: take the pid-file lock (`run_files::lock_run_files`, before the log
//! file is opened); connect to the broker and find the
//! partitions; read the table's schema and create the dead-letter (and offset)
//! tables; read earliest, latest and stored offsets and choose each
//! partition's start (exactly-once: and claim it in the offset table, see
//! `mysql::tables::claim_offsets`); start one worker per partition; run the
//! coordinator. With `kafka.assignment = "group"` no partition is started
//! here: the coordinator starts each one the group assigns, through the
//! same `Starter` (start position, claim, worker).
//! A technical failure during start-up (broker or database away) is retried
//! until it succeeds or a signal arrives; a fatal one (table missing, topic
//! missing, access denied) ends the process with exit code 2.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use log::{info, warn};

use crate::broker::{self, Broker};
use crate::config::{Assignment, Config, Delivery};
use crate::coordinator::{Coordinator, CoordinatorParts, Ending, PartitionStarter, Started};
use crate::error::{Class, Error, Exit, Policy};
use crate::metadata;
use crate::mysql::connect;
use crate::mysql::pool::ConnectionPool;
use crate::mysql::sink::{MysqlSink, Sink};
use crate::mysql::tables::{self, OffsetRow};
use crate::offsets::{
    refused_rewind_message, select_partitions, start_position, stored_position, Rewind, StartReason,
};
use crate::record::TableSchema;
use crate::retry::{Backoff, Decision, RetryState};
use crate::run_files::{Paths, PidLock};
use crate::status::Stats;
use crate::worker::{self, WorkerEvent, WorkerHandle, WorkerSettings};

/// How `run` ended, for the exit code.
#[derive(Debug)]
pub enum RunOutcome {
    /// Stopped by a signal after committing.
    Stopped,
    /// Ended early, with the reason and the exit code it means.
    Ended(Exit, String),
}

impl RunOutcome {
    pub fn exit(&self) -> Exit {
        match self {
            RunOutcome::Stopped => Exit::Ok,
            RunOutcome::Ended(exit, _) => *exit,
        }
    }
}

/// Turns SIGTERM and SIGINT into the closing of the returned channel; a second
/// one exits at once. SIGHUP reopens the log file.
pub fn install_signals() -> std::io::Result<Receiver<()>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let (sender, receiver) = crossbeam_channel::bounded::<()>(0);
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        let mut sender = Some(sender);
        for signal in signals.forever() {
            if signal == SIGHUP {
                crate::logging::reopen();
                continue;
            }
            if sender.take().is_some() {
                info!("signal {signal}: stopping gracefully (a second signal stops at once)");
            } else {
                warn!("second signal {signal}: exiting now without committing unfinished work (it will be applied again)");
                std::process::exit(1);
            }
        }
    })?;
    Ok(receiver)
}

/// Runs the service in the foreground until a signal stops it. `_lock` is
/// the pid lock from `run_files::lock_run_files`, held until the end.
pub fn run(config: Config, shutdown: Receiver<()>, _lock: Option<PidLock>) -> RunOutcome {
    let config = Arc::new(config);
    let paths = config.source.as_deref().map(Paths::for_config);
    info!(
        "kafka2mysql {} starting with {:?}",
        env!("CARGO_PKG_VERSION"),
        config
    );
    let pool = ConnectionPool::new(config.mysql_opts(), config.mysql.max_connections);
    let policy = Arc::new(Policy::from_config(&config));
    let sinks = |schema: &TableSchema| -> Box<dyn Sink> {
        Box::new(MysqlSink::new(
            &config,
            schema.clone(),
            pool.clone(),
            policy.clone(),
        ))
    };
    let status_file = paths.map(|p| p.status_file);
    match pipeline(&config, &policy, shutdown, status_file, &sinks) {
        Ok(Some(Ending::Clean)) | Ok(None) => {
            info!("stopped");
            RunOutcome::Stopped
        }
        Ok(Some(Ending::WorkerDied)) => {
            RunOutcome::Ended(Exit::Failed, "a worker thread ended unexpectedly".into())
        }
        Err(e) => RunOutcome::Ended(policy.exit(&e), e.to_string()),
    }
}

/// Start-up waits no longer than this between attempts.
const START_BACKOFF_CAP: Duration = Duration::from_secs(10);

/// Retries `attempt` while it fails with an error that is not fatal;
/// `Ok(None)` when a signal arrives first.
fn until_ready<T>(
    what: &str,
    config: &Config,
    policy: &Policy,
    shutdown: &Receiver<()>,
    mut attempt: impl FnMut() -> Result<T, Error>,
) -> Result<Option<T>, Error> {
    let backoff = Backoff::from_config(&config.retry).capped(START_BACKOFF_CAP);
    let mut retry = RetryState::for_ever(backoff, &[Class::Technical, Class::Business]);
    loop {
        let e = match attempt() {
            Ok(v) => return Ok(Some(v)),
            Err(e) => e,
        };
        let wait = match retry.next(policy.classify(&e)) {
            Decision::RetryAfter(wait) | Decision::Stuck(wait) => wait,
            Decision::GiveUp => return Err(e),
        };
        warn!(
            "{what}: {e}; retrying in {wait:?} (attempt {})",
            retry.failures()
        );
        if let Err(crossbeam_channel::RecvTimeoutError::Disconnected) = shutdown.recv_timeout(wait)
        {
            return Ok(None);
        }
    }
}

/// Start offset and committed group offset of every partition.
type Starts = BTreeMap<i32, (i64, Option<i64>)>;

/// Starts the pipeline and runs it until `shutdown` closes. `sinks` makes each
/// worker's sink: `MysqlSink` in the service; the benchmark passes one that
/// writes nothing, to measure the read path alone. `Ok(None)`: a signal
/// arrived during start-up.
pub fn run_pipeline(
    config: &Arc<Config>,
    shutdown: Receiver<()>,
    status_file: Option<std::path::PathBuf>,
    sinks: &dyn Fn(&TableSchema) -> Box<dyn Sink>,
) -> Result<Option<Ending>, Error> {
    let policy = Arc::new(Policy::from_config(config));
    pipeline(config, &policy, shutdown, status_file, sinks)
}

fn pipeline(
    config: &Arc<Config>,
    policy: &Arc<Policy>,
    shutdown: Receiver<()>,
    status_file: Option<std::path::PathBuf>,
    sinks: &dyn Fn(&TableSchema) -> Box<dyn Sink>,
) -> Result<Option<Ending>, Error> {
    let stats = Arc::new(Stats::default());
    // Up before the broker and the database are reached, so that a start
    // waiting for them is seen; it stops when the pipeline returns.
    let _metrics = crate::metrics::serve(config, stats.clone())?;
    let Some((broker, partitions)) = until_ready("kafka", config, policy, &shutdown, || {
        let mut broker = broker::join(config)?;
        let all = broker.partitions()?;
        Ok((broker, all))
    })?
    else {
        return Ok(None);
    };
    let group = config.kafka.assignment == Assignment::Group;
    let partitions = if group {
        Vec::new()
    } else {
        select_partitions(config, &partitions)?
    };

    let Some((schema, stored_in_mysql)) = until_ready("mysql", config, policy, &shutdown, || {
        let mut conn = connect(&config.mysql_opts())?;
        let schema = tables::load_schema(&mut conn, config)?;
        tables::create_service_tables(&mut conn, config)?;
        let stored = match config.mysql.delivery {
            Delivery::ExactlyOnce if !group => tables::stored_offsets(&mut conn, config)?,
            _ => BTreeMap::new(),
        };
        Ok((schema, stored))
    })?
    else {
        return Ok(None);
    };
    info!(
        "table {}.{}: {} columns, key {:?}",
        config.database(),
        schema.table,
        schema.columns.len(),
        config.mysql.key_columns
    );

    let mut broker = broker;
    let Some((starts, topic_id)) = until_ready("kafka offsets", config, policy, &shutdown, || {
        let topic_id = broker.topic_id().ok().flatten();
        let starts = start_positions(
            config,
            broker.as_mut(),
            &partitions,
            &stored_in_mysql,
            topic_id.as_deref(),
        )?;
        Ok((starts, topic_id))
    })?
    else {
        return Ok(None);
    };
    if config.mysql.delivery == Delivery::ExactlyOnce && !group {
        let claims = claims(&starts, &stored_in_mysql);
        let claimed = until_ready("mysql offset table", config, policy, &shutdown, || {
            let mut conn = connect(&config.mysql_opts())?;
            tables::claim_offsets(&mut conn, config, &claims, topic_id.as_deref())
        })?;
        if claimed.is_none() {
            return Ok(None);
        }
    }

    let (event_sender, events) = crossbeam_channel::unbounded();
    let (stop_workers, stop_receiver) = crossbeam_channel::bounded::<()>(0);
    let starter = Starter {
        config,
        policy,
        schema,
        sinks,
        events: event_sender,
        stats: stats.clone(),
    };
    let mut workers = BTreeMap::new();
    for (&partition, &(start, _)) in &starts {
        workers.insert(
            partition,
            starter.spawn(partition, start, stop_receiver.clone())?,
        );
    }
    if group {
        info!(
            "running: topic {} -> table {}, partitions as group {} assigns them",
            config.kafka.topic, starter.schema.table, config.kafka.group
        );
    } else {
        info!(
            "running: topic {} partitions {:?} -> table {}",
            config.kafka.topic, partitions, starter.schema.table
        );
    }
    let coordinator = Coordinator::new(CoordinatorParts {
        config: config.clone(),
        policy: Arc::clone(policy),
        broker,
        starts,
        workers,
        events,
        stop_workers,
        shutdown,
        stats,
        status_file,
        // Static assignment: the event sender goes with the starter, so
        // that the channel closes when the last worker ends.
        starter: group.then(|| Box::new(starter) as Box<dyn PartitionStarter>),
    });
    Ok(Some(coordinator.run()))
}

/// Starts partitions: at start-up the static ones, and each one the group
/// assigns (`PartitionStarter`, called by the coordinator).
struct Starter<'a> {
    config: &'a Arc<Config>,
    policy: &'a Arc<Policy>,
    schema: TableSchema,
    sinks: &'a dyn Fn(&TableSchema) -> Box<dyn Sink>,
    events: Sender<WorkerEvent>,
    stats: Arc<Stats>,
}

impl Starter<'_> {
    fn spawn(&self, partition: i32, start: i64, stop: Receiver<()>) -> Result<WorkerHandle, Error> {
        let config = self.config;
        Ok(worker::spawn(
            partition,
            start,
            (self.sinks)(&self.schema),
            Arc::new(metadata::mapper_for(config, &self.schema, partition).map_err(Error::Setup)?),
            WorkerSettings::from_config(config, Arc::clone(self.policy)),
            self.events.clone(),
            stop,
            self.stats.clone(),
        )?)
    }
}

/// One attempt: the coordinator tries again after a backoff when it fails.
/// In exactly-once mode the offset row is read and claimed here, as at
/// start-up; a row that moved in between (a former owner's last write
/// landing late) fails the claim, and the next attempt starts from where
/// that write left the row.
impl PartitionStarter for Starter<'_> {
    fn start(
        &mut self,
        broker: &mut dyn Broker,
        partitions: &[i32],
    ) -> Result<Vec<Started>, Error> {
        let config = self.config;
        let mut conn = match config.mysql.delivery {
            Delivery::ExactlyOnce => Some(connect(&config.mysql_opts())?),
            Delivery::AtLeastOnce => None,
        };
        let stored = match conn.as_mut() {
            Some(conn) => tables::stored_offsets(conn, config)?,
            None => BTreeMap::new(),
        };
        let topic_id = broker.topic_id().ok().flatten();
        let starts = start_positions(config, broker, partitions, &stored, topic_id.as_deref())?;
        if let Some(conn) = conn.as_mut() {
            let claims = claims(&starts, &stored);
            tables::claim_offsets(conn, config, &claims, topic_id.as_deref())?;
        }
        let mut started = Vec::with_capacity(starts.len());
        for (&partition, &(start, committed)) in &starts {
            let (stop, stop_receiver) = crossbeam_channel::bounded::<()>(0);
            started.push(Started {
                partition,
                start,
                committed,
                worker: self.spawn(partition, start, stop_receiver)?,
                stop,
            });
        }
        Ok(started)
    }
}

/// Exactly-once: each partition's offset row as read (`None`: no row) and
/// the start to move it to (`mysql::tables::claim_offsets`).
fn claims(
    starts: &Starts,
    stored_in_mysql: &BTreeMap<i32, OffsetRow>,
) -> BTreeMap<i32, (Option<i64>, i64)> {
    starts
        .iter()
        .map(|(&p, &(start, _))| {
            let read = stored_in_mysql.get(&p).map(|row| row.next_offset);
            (p, (read, start))
        })
        .collect()
}

/// Chooses each partition's start (docs/architecture.md, "Offsets") and logs it with its
/// reason. A position stored for a topic of the same name that was deleted
/// since (its id is not `topic_id`) is no position in this one.
fn start_positions(
    config: &Config,
    broker: &mut dyn Broker,
    partitions: &[i32],
    stored_in_mysql: &BTreeMap<i32, OffsetRow>,
    topic_id: Option<&str>,
) -> Result<Starts, Error> {
    let bounds = broker.log_bounds()?;
    let (earliest, latest) = (bounds.earliest, bounds.latest);
    let committed = broker.committed_offsets()?;
    let stale = broker.stale_commits();
    let mut starts = BTreeMap::new();
    for &p in partitions {
        let (Some(&e), Some(&l)) = (earliest.get(&p), latest.get(&p)) else {
            return Err(Error::Librdkafka(format!(
                "partition {p}: no log bounds (no leader?)"
            )));
        };
        let group = committed.get(&p).copied().flatten();
        let row = stored_in_mysql.get(&p);
        if let Some(row) = row.filter(|row| row.is_of_another_topic(topic_id)) {
            warn!(
                "topic {} partition {p}: the offset table's position {} belongs to a topic of the same name \
                 that was deleted (topic id {}, now {}); it is not used",
                config.kafka.topic,
                row.next_offset,
                row.topic_id.as_deref().unwrap_or_default(),
                topic_id.unwrap_or_default()
            );
        }
        let (in_table, stale) = tables::table_position(row, topic_id, stale.contains(&p));
        let (stored, source) = stored_position(config.mysql.delivery, group, in_table, stale);
        let rewind = Rewind::from_config(config);
        match start_position(stored, e, l, config.kafka.offset_reset, rewind) {
            Ok((start, reason)) => {
                info!(
                    "topic {} partition {p}: starting at offset {start} ({reason}; stored {} in {source}, earliest {e}, latest {l})",
                    config.kafka.topic,
                    stored.map_or("nothing".to_string(), |s| s.to_string()),
                );
                starts.insert(p, (start, group));
            }
            Err(StartReason::StoredOutOfRangeRefused { stored }) => {
                return Err(Error::Setup(format!(
                    "topic {} partition {p}: cannot start (stored {stored} in {source}): {}",
                    config.kafka.topic,
                    refused_rewind_message(p, stored, e, l)
                )))
            }
            Err(reason) => {
                return Err(Error::Setup(format!(
                    "topic {} partition {p}: cannot start ({reason}; earliest {e}, latest {l}); \
                     run kafka2mysql reset-offsets or change kafka.offset_reset",
                    config.kafka.topic
                )))
            }
        }
    }
    Ok(starts)
}
