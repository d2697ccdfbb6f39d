//! Everything kafka2mysql says to MySQL, by what it owns: `sink.rs` writes
//! (`MysqlSink`, one `WriteSet` in one transaction), `tables.rs` the target
//! table's schema and the service's own tables (dead letters, exactly-once
//! offsets) with their queries, `pool.rs` the workers' connections. Here:
//! opening a session, and quoting names.
//!
//! SQL is built only from names that come from the configuration and the
//! schema, always quoted; every value from a record is a bound parameter.

use mysql::prelude::Queryable;
use mysql::{Conn, Opts};

use crate::error::Error;

pub mod pool;
pub mod sink;
pub mod tables;

/// `` `name` `` with backticks doubled, for names from config and schema.
pub fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Opens a connection and prepares its session: strict SQL mode, so that a
/// value that does not fit its column is an error and never silently cut;
/// and English error messages, which `error::Alike` compares.
pub fn connect(opts: &Opts) -> Result<Conn, Error> {
    let mut conn = Conn::new(opts.clone())?;
    conn.query_drop(
        "SET SESSION sql_mode = IF(@@sql_mode = '', 'STRICT_ALL_TABLES', \
         CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')), SESSION lc_messages = 'en_US'",
    )?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted() {
        assert_eq!(quote("a`b"), "`a``b`");
    }
}
