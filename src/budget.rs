//! The process's one memory budget for records, `worker.max_buffered_bytes`,
//! and how the partitions read share it (docs/architecture.md, "Memory").
//!
//! Two parts, in the proportion of the defaults (`queue_batches + 1` batches
//! on our side, two fetch sizes in the client's prefetch):
//! - the client's prefetch: librdkafka holds up to `queued.max.messages.kbytes`
//!   per partition (each partition has a queue of its own) and fetches up to
//!   `max.partition.fetch.bytes` at a time; both are this part divided by the
//!   partitions read, so that they shrink as partitions are added;
//! - the records handed to the workers and not yet written: every partition
//!   may always hold its fair share (half of this part divided by the
//!   partitions), so that a partition that is blocked with a full queue
//!   never holds back the others; the other half is a pool that partitions
//!   borrow from while they have records waiting, so that the partitions
//!   writing get batches larger than their fair share.
//!
//! Many partitions (librdkafka, static assignment, more partitions than
//! `window`): the client fetches only `window` partitions at a time, in
//! turn (`broker/librdkafka.rs`, `Rotation`), so its part is divided by the
//! window rather than by every partition: fetches stay larger than the
//! producers' batches, and the records of one turn make one large write.
//!
//! Pure: the coordinator asks `room` for each partition before it fetches;
//! `Budget::new` is computed again whenever the set of partitions changes.

use crate::config::{Assignment, ClientKind, Config};

/// The smallest fetch size the client is given, whatever the partition
/// count: smaller fetches cost more round trips than they save memory.
const MIN_FETCH_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The client's fetch size per partition (`max.partition.fetch.bytes`).
    pub fetch_bytes: usize,
    /// The most bytes handed to a worker in one batch
    /// (`kafka.fetch_max_bytes_per_partition`).
    batch_bytes: usize,
    /// What the client may queue per partition (`queued.max.messages.kbytes`).
    pub client_queue_kbytes: usize,
    /// The partitions the client fetches at a time: all of them, or fewer
    /// in turn (`rotates`).
    pub window: usize,
    /// The client fetches `window` partitions at a time, in turn.
    pub rotates: bool,
    /// Bytes a partition may hold on our side without borrowing.
    fair_share: usize,
    /// Bytes the partitions may hold beyond their fair share, together.
    pool: usize,
    /// The most bytes one partition may hold on our side.
    partition_cap: usize,
    /// The most batches queued for one worker: `worker.queue_batches` of
    /// the largest size, or as many of the client's smaller fetches as
    /// make up the same bytes (the worker writes them as one).
    pub queue_batches: usize,
}

impl Budget {
    /// The shares of `partitions` partitions (at least one).
    pub fn new(config: &Config, partitions: usize) -> Budget {
        let partitions = partitions.max(1);
        let total = config.worker.max_buffered_bytes;
        let batches = config.worker.queue_batches + 1;
        let parts = batches + 2;
        let window = rotation_window(config);
        let rotates = config.kafka.client == ClientKind::Librdkafka
            && config.kafka.assignment == Assignment::Static
            && partitions > window;
        let window = if rotates { window } else { partitions };
        let client_share = total / parts * 2 / window;
        let largest_fetch = config.kafka.fetch_max_bytes_per_partition as usize;
        let fetch_bytes =
            (client_share / 2).clamp(MIN_FETCH_BYTES.min(largest_fetch), largest_fetch);
        let ours = total / parts * batches;
        // In turn, few partitions hold records at a time: most of our part
        // is the pool they borrow from.
        let fair_share = ours / if rotates { 8 } else { 2 } / partitions;
        let pool = ours - fair_share * partitions;
        // Only `max_connections` partitions write at a time: the pool is
        // shared among that many, not spread over every partition.
        // In turn, the window's partitions hold records at once.
        let writers = if rotates {
            window
        } else {
            config.mysql.max_connections.min(partitions)
        };
        let partition_cap = (batches * largest_fetch).min(fair_share + pool / writers);
        Budget {
            fetch_bytes,
            batch_bytes: largest_fetch,
            client_queue_kbytes: (2 * fetch_bytes / 1024).max(1),
            window,
            rotates,
            fair_share,
            pool,
            partition_cap,
            queue_batches: config.worker.queue_batches * largest_fetch.div_ceil(fetch_bytes),
        }
    }

    /// The bytes of the client's prefetch and of our side together, at most
    /// (records handed out whole may pass it by one record per partition).
    pub fn bound(&self, partitions: usize) -> usize {
        partitions * self.fair_share
            + partitions.min(self.window) * self.client_queue_kbytes * 1024
            + self.pool
    }

    /// What one partition may hold on our side, at most.
    pub fn partition_cap(&self) -> usize {
        self.partition_cap
    }

    /// What a partition holding `held` bytes on our side may still take,
    /// when all the partitions hold `borrowed` bytes beyond their fair
    /// shares. Never 0 below the fair share.
    pub fn room(&self, held: usize, borrowed: usize) -> usize {
        let own = self.fair_share.saturating_sub(held);
        let lent = self.pool.saturating_sub(borrowed);
        self.partition_cap
            .saturating_sub(held)
            .min(own + lent)
            .min(self.batch_bytes.max(own))
    }

    /// Bytes held beyond the fair share by a partition holding `held`.
    pub fn borrowed(&self, held: usize) -> usize {
        held.saturating_sub(self.fair_share)
    }
}

/// The partitions the client fetches at a time when there are more
/// (`kafka.fetch_window`): by default two for each database connection
/// (one writing, one filling), and no fewer than 8.
fn rotation_window(config: &Config) -> usize {
    match config.kafka.fetch_window {
        0 => (2 * config.mysql.max_connections).max(8),
        window => window,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WorkerConfig;

    fn config(budget: usize, connections: usize) -> Config {
        let mut config = Config::parse(
            "[kafka]\nbrokers = [\"127.0.0.1:1\"]\ntopic = \"t\"\ngroup = \"g\"\n\
             [mysql]\nurl = \"mysql://app@127.0.0.1:1/app\"\ntable = \"t\"\nkey_columns = [\"id\"]\n",
            None,
        )
        .expect("test config");
        config.worker.max_buffered_bytes = budget;
        config.mysql.max_connections = connections;
        config
    }

    /// With the defaults, 8 partitions get what they had before the budget:
    /// fetches of 512 KiB, librdkafka queues of 1 MiB, three batches each;
    /// 20 MiB is the least budget that keeps them so.
    #[test]
    fn the_default_budget_keeps_eight_partitions_as_they_were() {
        for total in [WorkerConfig::default().max_buffered_bytes, 20 * 1024 * 1024] {
            let budget = Budget::new(&config(total, 16), 8);
            assert_eq!(budget.fetch_bytes, 512 * 1024);
            assert_eq!(budget.client_queue_kbytes, 1024);
            assert_eq!(budget.partition_cap, 3 * 512 * 1024);
            assert_eq!(budget.queue_batches, 2);
            // Every partition can fill its three batches at once, and no more.
            let mut held = [0usize; 8];
            for _ in 0..10 {
                for p in 0..8 {
                    let borrowed = held.iter().map(|&h| budget.borrowed(h)).sum();
                    held[p] += budget.room(held[p], borrowed);
                }
            }
            assert_eq!(held, [3 * 512 * 1024; 8], "{total}");
        }
        let less = Budget::new(&config(20 * 1024 * 1024 - 1, 16), 8);
        assert!(less.fetch_bytes < 512 * 1024, "{less:?}");
    }

    /// However many partitions, the records held stay within the budget, and
    /// a partition that holds nothing may always take some.
    #[test]
    fn many_partitions_share_the_budget_and_none_is_starved() {
        for partitions in [1, 8, 64, 400, 5000] {
            let total = 20 * 1024 * 1024;
            let config = config(total, 8);
            let budget = Budget::new(&config, partitions);
            if partitions <= 400 {
                assert!(
                    budget.bound(partitions) <= total,
                    "{partitions}: {budget:?}"
                );
            }
            // Partitions take greedily, in order, as the coordinator does.
            let mut held = vec![0usize; partitions];
            for _ in 0..5 {
                for p in 0..partitions {
                    let borrowed = held.iter().map(|&h| budget.borrowed(h)).sum();
                    held[p] += budget.room(held[p], borrowed);
                }
            }
            let ours: usize = held.iter().sum();
            assert!(
                ours + partitions.min(budget.window) * budget.client_queue_kbytes * 1024
                    <= budget.bound(partitions),
                "{partitions}: {ours} held"
            );
            // The first partitions took the pool; the last still get their share.
            assert!(
                held[partitions - 1] > 0,
                "{partitions}: the last partition holds nothing"
            );
            let mut held = vec![budget.partition_cap; partitions];
            held[partitions - 1] = 0;
            let borrowed = held.iter().map(|&h| budget.borrowed(h)).sum();
            assert!(
                budget.room(0, borrowed) > 0,
                "{partitions}: no room below the fair share"
            );
        }
    }

    /// Beyond two partitions per connection, librdkafka fetches that many
    /// at a time (static assignment), with fetches sized for them: larger
    /// than the producers' batches, where a fetch for each of 400
    /// partitions would be 10 KiB.
    #[test]
    fn many_partitions_are_fetched_a_window_at_a_time() {
        let config = config(20 * 1024 * 1024, 16);
        let eight = Budget::new(&config, 8);
        assert!(!eight.rotates && eight.window == 8, "{eight:?}");
        assert!(!Budget::new(&config, 32).rotates);
        let many = Budget::new(&config, 400);
        assert!(many.rotates && many.window == 32, "{many:?}");
        assert_eq!(many.fetch_bytes, 128 * 1024);
        assert!(many.bound(400) <= 20 * 1024 * 1024, "{many:?}");
        let mut group = config.clone();
        group.kafka.assignment = Assignment::Group;
        let mut kafka_rust = config.clone();
        kafka_rust.kafka.client = ClientKind::KafkaRust;
        let mut wide = config.clone();
        wide.kafka.fetch_window = 400;
        for other in [group, kafka_rust, wide] {
            let budget = Budget::new(&other, 400);
            assert!(!budget.rotates && budget.window == 400, "{budget:?}");
        }
        let mut narrow = config.clone();
        narrow.kafka.fetch_window = 10;
        assert_eq!(Budget::new(&narrow, 400).window, 10);
    }

    /// The partitions that write take batches larger than their fair share
    /// from the pool: with 400 partitions and 8 connections, eight of them
    /// can hold several times their share at once.
    #[test]
    fn the_pool_lets_the_writing_partitions_take_larger_batches() {
        let budget = Budget::new(&config(20 * 1024 * 1024, 8), 400);
        assert!(budget.partition_cap >= 20 * budget.fair_share, "{budget:?}");
        let mut held = vec![0usize; 400];
        for p in 0..8 {
            while budget.room(held[p], held.iter().map(|&h| budget.borrowed(h)).sum()) > 0 {
                let borrowed = held.iter().map(|&h| budget.borrowed(h)).sum();
                held[p] += budget.room(held[p], borrowed);
            }
        }
        assert!(
            held[..8].iter().all(|&h| h == budget.partition_cap),
            "{:?}",
            &held[..8]
        );
    }
}
