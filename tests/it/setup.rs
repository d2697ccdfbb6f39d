//! A test's own topic, group, table, dead-letter table and config file, and
//! the records most tests produce. Shared by the `it` and `outage` binaries.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use crate::common::*;

/// One test's topic, group, table and config file.
pub struct Setup {
    pub topic: String,
    pub group: String,
    pub table: String,
    /// The dead-letter table (`TABLE_dl`, created by the service).
    pub dead_letters: String,
    pub dir: PathBuf,
    pub config: PathBuf,
}

impl Setup {
    /// Creates the topic and the table (`columns` is the DDL column list),
    /// writes the config with `overrides` to `DIR/conf/kafka2mysql.toml` (so
    /// that its pid and status files are `DIR/run/...`, the test's own).
    pub fn new(prefix: &str, partitions: i32, columns: &str, overrides: &str) -> Setup {
        let topic = unique_name(prefix);
        create_topic(&topic, partitions);
        Setup::existing_topic(&topic, columns, overrides)
    }

    /// Like `new`, for a topic the test created itself (with its own topic
    /// configuration); the table and the group are named after it.
    pub fn existing_topic(topic: &str, columns: &str, overrides: &str) -> Setup {
        let topic = topic.to_string();
        let group = format!("{topic}_g");
        let table = topic.clone();
        create_table(&table, columns);
        let dir = test_dir(&topic);
        // Each test has its own dead-letter table unless the overrides name one.
        let mut text: toml::Table = test_config(&topic, &group, &table, overrides)
            .parse()
            .expect("config");
        let mysql = text
            .get_mut("mysql")
            .and_then(|m| m.as_table_mut())
            .expect("[mysql]");
        let dead_letters = format!("{table}_dl");
        mysql
            .entry("dead_letter_table")
            .or_insert_with(|| dead_letters.clone().into());
        let config = write_config(&dir.join("conf"), &toml::to_string(&text).expect("toml"));
        Setup {
            topic,
            group,
            table,
            dead_letters,
            dir,
            config,
        }
    }

    /// Makes the config connect as a new MariaDB user of this test's own
    /// (`WITH` options as given, e.g. `MAX_USER_CONNECTIONS 4`, or empty),
    /// allowed to create tables and to use the test's table and dead-letter
    /// table; returns its name. Start the service with `MYSQL_PASSWORD` set
    /// to `password`. Revoking from it disturbs no other test.
    pub fn own_user(&self, password: &str, with: &str) -> String {
        let user = unique_name("u");
        let with = if with.is_empty() {
            String::new()
        } else {
            format!(" WITH {with}")
        };
        root_sql(&format!(
            "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'{with}; \
             GRANT CREATE ON kafka2mysql.* TO '{user}'@'127.0.0.1'; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON kafka2mysql.`{t}` TO '{user}'@'127.0.0.1'; \
             CREATE TABLE IF NOT EXISTS kafka2mysql.`{dl}` (id INT); DROP TABLE kafka2mysql.`{dl}`; \
             GRANT ALL ON kafka2mysql.`{dl}` TO '{user}'@'127.0.0.1';",
            t = self.table,
            dl = self.dead_letters
        ));
        let text = std::fs::read_to_string(&self.config)
            .unwrap()
            .replace("k2m@", &format!("{user}@"));
        std::fs::write(&self.config, text).unwrap();
        user
    }

    pub fn config_arg(&self) -> &str {
        self.config.to_str().expect("utf-8 path")
    }

    pub fn start(&self) -> Service {
        Service::start(&["run", "--config", self.config_arg()])
    }

    pub fn status_file(&self) -> PathBuf {
        self.dir.join("run/kafka2mysql.status.json")
    }

    pub fn count(&self, filter: &str) -> i64 {
        query_count(&format!("SELECT COUNT(*) FROM `{}` {filter}", self.table))
    }

    pub fn wait_rows(&self, expected: i64, deadline: Duration) {
        let sql = format!("SELECT COUNT(*) FROM `{}`", self.table);
        wait_for_eq(
            &format!("{expected} rows in {}", self.table),
            deadline,
            expected,
            || query_count(&sql),
        );
    }

    /// The group's committed offsets, read with Kafka's consumer-groups tool,
    /// equal every partition's log end offset (lag 0).
    pub fn assert_committed_at_log_end(&self) {
        let expected: std::collections::BTreeMap<i32, Option<i64>> = log_end_offsets(&self.topic)
            .into_iter()
            .map(|(p, o)| (p, Some(o)))
            .collect();
        assert_eq!(
            group_offsets(&self.group, &self.topic),
            expected,
            "committed offsets (Kafka's tool) vs log end offsets"
        );
    }

    /// Waits until the group's committed offsets (Kafka's consumer-groups
    /// tool) equal every partition's log end offset, while the service runs.
    pub fn wait_committed_at_log_end(&self, deadline: Duration) {
        wait_until("the committed offsets at the log end", deadline, || {
            let end = log_end_offsets(&self.topic);
            let committed = group_offsets(&self.group, &self.topic);
            if end.iter().all(|(p, o)| committed.get(p) == Some(&Some(*o))) {
                Ok(())
            } else {
                Err(format!("committed {committed:?}, log end {end:?}"))
            }
        });
    }

    /// Produces `orders(p, first, count)` to each partition in `partitions`.
    pub fn produce_orders(&self, partitions: std::ops::Range<i32>, first: i64, count: i64) {
        for p in partitions {
            produce_json(&self.topic, p, &orders(p, first, count));
        }
    }

    /// Inserts row `id` in a transaction left open: a worker writing that id
    /// waits on the row lock until `RowLock::release`.
    pub fn hold_row_lock(&self, id: i64) -> RowLock {
        use mysql::prelude::Queryable;
        let mut conn = mysql_conn();
        conn.query_drop("START TRANSACTION").unwrap();
        conn.query_drop(format!(
            "INSERT INTO `{}` (id, name) VALUES ({id}, 'lock')",
            self.table
        ))
        .unwrap();
        RowLock(conn)
    }

    /// Waits until the table has at least `rows` rows (to act in the middle
    /// of a load: kill the service at that moment).
    pub fn wait_rows_at_least(&self, rows: i64, deadline: Duration) {
        let sql = format!("SELECT COUNT(*) FROM `{}`", self.table);
        wait_until(
            &format!("at least {rows} rows in {}", self.table),
            deadline,
            || {
                let seen = query_count(&sql);
                if seen >= rows {
                    Ok(())
                } else {
                    Err(format!("{seen} rows"))
                }
            },
        );
    }

    /// Waits until the status file shows `partition` in `state` ("flowing",
    /// "retrying" or "blocked") and returns that partition's status.
    pub fn wait_state(&self, partition: i32, state: &str, deadline: Duration) -> serde_json::Value {
        wait_until(
            &format!("partition {partition} {state}"),
            deadline,
            || match self.live(partition) {
                Some(p) if p["state"] == state => Ok(p),
                other => Err(format!("{other:?}")),
            },
        )
    }

    /// The running service's view of one partition, from its status file.
    pub fn live(&self, partition: i32) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.status_file()).ok()?;
        let status: serde_json::Value = serde_json::from_str(&text).ok()?;
        status["partitions"].get(partition.to_string()).cloned()
    }
}

pub const ORDERS: &str =
    "id BIGINT PRIMARY KEY, name VARCHAR(64), amount DECIMAL(12,2), note VARCHAR(16)";

/// `count` records for one partition: ids `partition * 1_000_000 + first ..`.
pub fn orders(partition: i32, first: i64, count: i64) -> Vec<serde_json::Value> {
    (first..first + count)
        .map(|i| {
            let id = partition as i64 * 1_000_000 + i;
            json!({"id": id, "name": format!("name-{id}"), "amount": (id % 1000) as f64 + 0.25})
        })
        .collect()
}

/// Stops the service with SIGTERM and expects exit code 0.
pub fn sigterm_clean(service: &mut Service) {
    let status = service.sigterm_and_wait(Duration::from_secs(30));
    assert!(
        status.success(),
        "SIGTERM should stop the service with exit 0, got {status:?}\n{}",
        service.log_text()
    );
}

/// A row lock held by an open transaction (see `Setup::hold_row_lock`).
pub struct RowLock(mysql::Conn);

impl RowLock {
    /// Rolls the transaction back: the row is gone and the waiter goes on.
    pub fn release(mut self) {
        use mysql::prelude::Queryable;
        self.0.query_drop("ROLLBACK").unwrap();
    }
}
