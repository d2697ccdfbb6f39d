//! A scripted broker for unit tests: per-partition logs held in memory,
//! answered as the `Broker` contract in `broker/mod.rs` says, and every
//! fetch request and commit recorded so that a test can say what was asked
//! and committed, and when. It never touches the network. For group
//! assignment a test scripts the group's rebalances (`rebalance`) and reads
//! the `assign` and `unassign` calls that completed them.
//!
//! `FakeBroker` is a shared handle: the coordinator owns one clone (as its
//! `Box<dyn Broker>`), the test keeps another to append records, script
//! failures and read what happened.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::broker::{Broker, FetchOutcome, FetchRequest, LogBounds, PartitionFetch, Rebalance};
use crate::error::Error;
use crate::record::Record;

/// How long a fetch with nothing to return waits, as a real broker waits up
/// to `kafka.fetch_max_wait` (so that an idle coordinator does not spin).
const EMPTY_FETCH_WAIT: Duration = Duration::from_millis(2);

/// One `commit` call: when it came and what it sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub at: Instant,
    pub offsets: Vec<(i32, i64)>,
}

/// One partition's log: the record at offset `start + i` is `records[i]`.
#[derive(Default)]
struct Log {
    start: i64,
    records: Vec<Record>,
}

impl Log {
    fn end(&self) -> i64 {
        self.start + self.records.len() as i64
    }
}

/// One `unassign` call: when, which partitions, and how many partition
/// fetches had been asked for before it (an index into `fetches`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unassign {
    pub at: Instant,
    pub partitions: Vec<i32>,
    pub fetches_before: usize,
}

#[derive(Default)]
struct State {
    /// Rebalances the coordinator has not taken yet.
    rebalances: VecDeque<Rebalance>,
    assigns: Vec<Vec<(i32, i64)>>,
    unassigns: Vec<Unassign>,
    logs: BTreeMap<i32, Log>,
    max_records_per_fetch: usize,
    /// Per partition, how many more fetches answer `Retry`.
    retries: BTreeMap<i32, u32>,
    committed: BTreeMap<i32, i64>,
    commits: Vec<Commit>,
    /// Every requested partition and offset, in the order asked.
    fetches: Vec<FetchRequest>,
    fetch_calls: u64,
    metadata_reloads: u64,
    /// Commits are sent but not answered (`commit_answer` gives `None`)
    /// while this is set, as by a slow group coordinator.
    commit_answers_held: bool,
    /// A commit sent and not answered yet.
    commit_in_flight: bool,
    /// Partitions the client does not read now (`Broker::reading`), as
    /// out of librdkafka's window.
    not_reading: BTreeSet<i32>,
    /// What `topic_id` answers: the topic's id, or that it does not exist.
    topic: TopicState,
}

/// The topic as `Broker::topic_id` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicState {
    Id(String),
    Missing,
}

impl Default for TopicState {
    fn default() -> TopicState {
        TopicState::Id("fake-topic-id".into())
    }
}

#[derive(Clone, Default)]
pub struct FakeBroker(Arc<Mutex<State>>);

/// The record at `offset` of every fake log: a JSON object whose `id` is
/// the offset.
pub fn record(offset: i64) -> Record {
    Record::new(offset, b"", format!(r#"{{"id": {offset}}}"#).as_bytes())
}

impl FakeBroker {
    /// A broker whose fetches return at most `max_records_per_fetch`
    /// records of a partition.
    pub fn new(max_records_per_fetch: usize) -> FakeBroker {
        let broker = FakeBroker::default();
        broker.state().max_records_per_fetch = max_records_per_fetch;
        broker
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().expect("fake broker state")
    }

    /// The client the coordinator owns.
    pub fn client(&self) -> Box<dyn Broker> {
        Box::new(self.clone())
    }

    /// Creates `partition` with the records `start..end` (below `start`
    /// they were deleted).
    pub fn log(&self, partition: i32, start: i64, end: i64) {
        let records = (start..end).map(record).collect();
        self.state().logs.insert(partition, Log { start, records });
    }

    /// Appends `count` records to `partition`'s log.
    pub fn append(&self, partition: i32, count: i64) {
        let mut state = self.state();
        let log = state.logs.entry(partition).or_default();
        let end = log.end();
        log.records.extend((end..end + count).map(record));
    }

    /// Whether the client reads `partition` now (`Broker::reading`).
    pub fn set_reading(&self, partition: i32, reading: bool) {
        let mut state = self.state();
        match reading {
            true => state.not_reading.remove(&partition),
            false => state.not_reading.insert(partition),
        };
    }

    /// What `Broker::topic_id` answers from now on.
    pub fn set_topic(&self, topic: TopicState) {
        self.state().topic = topic;
    }

    /// The next `times` fetches of `partition` answer `Retry`.
    pub fn fail_fetches(&self, partition: i32, times: u32) {
        self.state().retries.insert(partition, times);
    }

    /// Every offset at which `partition` was fetched, in order.
    pub fn fetches_of(&self, partition: i32) -> Vec<i64> {
        self.state()
            .fetches
            .iter()
            .filter(|r| r.partition == partition)
            .map(|r| r.offset)
            .collect()
    }

    /// How many times `fetch` was called.
    pub fn fetch_calls(&self) -> u64 {
        self.state().fetch_calls
    }

    pub fn metadata_reloads(&self) -> u64 {
        self.state().metadata_reloads
    }

    /// Holds or releases the answers to commits (`State::commit_answers_held`).
    pub fn hold_commit_answers(&self, held: bool) {
        self.state().commit_answers_held = held;
    }

    /// Every `commit` call so far.
    pub fn commits(&self) -> Vec<Commit> {
        self.state().commits.clone()
    }

    /// The group gives (`Rebalance::Assigned`) or takes partitions.
    pub fn rebalance(&self, rebalance: Rebalance) {
        self.state().rebalances.push_back(rebalance);
    }

    /// Every `assign` call so far: partitions and start offsets.
    pub fn assigns(&self) -> Vec<Vec<(i32, i64)>> {
        self.state().assigns.clone()
    }

    /// Every `unassign` call so far.
    pub fn unassigns(&self) -> Vec<Unassign> {
        self.state().unassigns.clone()
    }

    /// The partitions fetched after the `fetches_before`-th request.
    pub fn fetched_since(&self, fetches_before: usize) -> Vec<i32> {
        self.state().fetches[fetches_before..]
            .iter()
            .map(|r| r.partition)
            .collect()
    }

    /// The group's committed offsets, as the commits left them.
    pub fn committed(&self) -> BTreeMap<i32, i64> {
        self.state().committed.clone()
    }
}

impl Broker for FakeBroker {
    fn partitions(&mut self) -> Result<Vec<i32>, Error> {
        Ok(self.state().logs.keys().copied().collect())
    }

    fn reload_metadata(&mut self) -> Result<(), Error> {
        self.state().metadata_reloads += 1;
        Ok(())
    }

    fn log_bounds(&mut self) -> Result<LogBounds, Error> {
        let state = self.state();
        Ok(LogBounds {
            earliest: state.logs.iter().map(|(&p, l)| (p, l.start)).collect(),
            latest: state.logs.iter().map(|(&p, l)| (p, l.end())).collect(),
        })
    }

    fn committed_offsets(&mut self) -> Result<BTreeMap<i32, Option<i64>>, Error> {
        let state = self.state();
        Ok(state
            .logs
            .keys()
            .map(|&p| (p, state.committed.get(&p).copied()))
            .collect())
    }

    fn commit(&mut self, offsets: &[(i32, i64)]) -> Result<(), Error> {
        let mut state = self.state();
        state.committed.extend(offsets.iter().copied());
        state.commits.push(Commit {
            at: Instant::now(),
            offsets: offsets.to_vec(),
        });
        Ok(())
    }

    /// Recorded at once; the answer waits while answers are held.
    fn commit_begin(&mut self, offsets: &[(i32, i64)]) -> Result<(), Error> {
        self.commit(offsets)?;
        self.state().commit_in_flight = true;
        Ok(())
    }

    fn commit_answer(&mut self, wait: Duration) -> Option<Result<(), Error>> {
        let mut state = self.state();
        if state.commit_answers_held {
            drop(state);
            std::thread::sleep(wait.min(EMPTY_FETCH_WAIT));
            return None;
        }
        std::mem::take(&mut state.commit_in_flight).then_some(Ok(()))
    }

    fn fetch(&mut self, requests: &[FetchRequest]) -> Result<Vec<PartitionFetch>, Error> {
        let mut guard = self.state();
        let state = &mut *guard;
        state.fetch_calls += 1;
        state.fetches.extend_from_slice(requests);
        let max = state.max_records_per_fetch;
        let mut answered_something = false;
        let mut fetches = Vec::with_capacity(requests.len());
        for request in requests {
            let outcome = match state.retries.get_mut(&request.partition) {
                Some(left) if *left > 0 => {
                    *left -= 1;
                    FetchOutcome::fetch_failed("scripted fetch failure".into())
                }
                _ => match state.logs.get(&request.partition) {
                    None => FetchOutcome::fetch_failed("unknown partition".into()),
                    Some(log) if request.offset < log.start || request.offset > log.end() => {
                        FetchOutcome::out_of_range()
                    }
                    Some(log) => {
                        let from = (request.offset - log.start) as usize;
                        let records: Vec<Record> =
                            log.records.iter().skip(from).take(max).cloned().collect();
                        FetchOutcome::Records {
                            next_offset: request.offset + records.len() as i64,
                            records,
                            high_watermark: Some(log.end()),
                        }
                    }
                },
            };
            answered_something |=
                !matches!(&outcome, FetchOutcome::Records { records, .. } if records.is_empty());
            fetches.push(PartitionFetch {
                partition: request.partition,
                outcome,
            });
        }
        drop(guard);
        if !answered_something {
            std::thread::sleep(EMPTY_FETCH_WAIT);
        }
        Ok(fetches)
    }

    fn probe_fetch(&mut self, partition: i32, offset: i64) -> Result<Option<i64>, Error> {
        let state = self.state();
        Ok(state
            .logs
            .get(&partition)
            .filter(|l| offset >= l.start && offset < l.end())
            .map(|_| offset))
    }

    fn topic_id(&mut self) -> Result<Option<String>, Error> {
        match &self.state().topic {
            TopicState::Id(id) => Ok(Some(id.clone())),
            TopicState::Missing => Err(Error::NoSuchTopic("fake".into())),
        }
    }

    fn reading(&self, partition: i32) -> bool {
        !self.state().not_reading.contains(&partition)
    }

    fn rebalance(&mut self) -> Option<Rebalance> {
        self.state().rebalances.pop_front()
    }

    fn assign(&mut self, starts: &[(i32, i64)]) -> Result<(), Error> {
        self.state().assigns.push(starts.to_vec());
        Ok(())
    }

    fn unassign(&mut self, partitions: &[i32]) -> Result<(), Error> {
        let mut state = self.state();
        let fetches_before = state.fetches.len();
        state.unassigns.push(Unassign {
            at: Instant::now(),
            partitions: partitions.to_vec(),
            fetches_before,
        });
        Ok(())
    }
}
