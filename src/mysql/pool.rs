//! The workers' database connections: at most `mysql.max_connections` for the
//! whole process, however many partitions it reads.
//!
//! A worker borrows a connection for one write (a transaction, or the check
//! after a duplicate key) and gives it back at once, so a partition that
//! waits between writes, retries or blocks holds none. Workers that find
//! every connection lent out wait their turn, first come first served, so
//! that no partition starves behind busier ones. Waiting is not an error: it
//! ends when another worker's write ends, and a write that fails gives its
//! connection back too (a broken one is closed and its place freed, so the
//! next borrower connects anew).
//!
//! Each waiting borrower sleeps on a condition variable of its own, and a
//! connection coming back wakes only the first in line: with hundreds of
//! partitions waiting, waking them all at every write cost more CPU than
//! the writes.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use mysql::prelude::Queryable;
use mysql::{Conn, Opts};

use crate::error::Error;
use crate::mysql::connect;
use crate::mysql::sink::supports_bulk_execute;

/// What the workers need to know about the server, read on the first connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Server {
    pub max_allowed_packet: usize,
    /// MariaDB 10.2 or later: rows go in with `COM_STMT_BULK_EXECUTE`.
    pub bulk: bool,
}

pub struct ConnectionPool {
    opts: Opts,
    limit: usize,
    state: Mutex<State>,
    server: OnceLock<Server>,
}

struct State {
    idle: Vec<Conn>,
    /// Connections lent out, idle, or being opened.
    open: usize,
    /// The borrowers waiting, in arrival order, each woken by its own.
    waiting: VecDeque<Arc<Condvar>>,
}

impl State {
    fn has_room(&self, limit: usize) -> bool {
        !self.idle.is_empty() || self.open < limit
    }
}

/// A borrowed connection; dropping it gives the connection back.
pub struct Lease {
    conn: Option<Conn>,
    pool: Arc<ConnectionPool>,
}

impl ConnectionPool {
    /// A pool of at most `limit` (at least 1) connections opened with `opts`.
    pub fn new(opts: Opts, limit: usize) -> Arc<ConnectionPool> {
        Arc::new(ConnectionPool {
            opts,
            limit: limit.max(1),
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
                waiting: VecDeque::new(),
            }),
            server: OnceLock::new(),
        })
    }

    /// The server's facts; `None` until a connection was opened.
    pub fn server(&self) -> Option<Server> {
        self.server.get().copied()
    }

    /// Lends an idle connection, or opens one while fewer than the limit are
    /// open, or waits for one to come back. Fails only when opening fails.
    pub fn take(self: &Arc<Self>) -> Result<Lease, Error> {
        let mut state = self.lock();
        if !state.waiting.is_empty() || !state.has_room(self.limit) {
            let turn = Arc::new(Condvar::new());
            state.waiting.push_back(Arc::clone(&turn));
            while !(state.waiting.front().is_some_and(|w| Arc::ptr_eq(w, &turn))
                && state.has_room(self.limit))
            {
                state = turn
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            state.waiting.pop_front();
        }
        let idle = state.idle.pop();
        if idle.is_none() {
            state.open += 1;
        }
        // The next in line may be served too (a connection idle, or room).
        Self::wake_first(state, self.limit);
        let conn = match idle {
            Some(conn) => conn,
            None => match self.open() {
                Ok(conn) => conn,
                Err(e) => {
                    self.closed();
                    return Err(e);
                }
            },
        };
        Ok(Lease {
            conn: Some(conn),
            pool: self.clone(),
        })
    }

    fn open(&self) -> Result<Conn, Error> {
        let mut conn = connect(&self.opts)?;
        if self.server.get().is_none() {
            let (packet, version): (u64, String) = conn
                .query_first("SELECT @@max_allowed_packet, @@version")?
                .unwrap_or((4 * 1024 * 1024, String::new()));
            let _ = self.server.set(Server {
                max_allowed_packet: usize::try_from(packet).unwrap_or(usize::MAX),
                bulk: supports_bulk_execute(&version),
            });
        }
        Ok(conn)
    }

    fn give_back(&self, conn: Conn) {
        let mut state = self.lock();
        state.idle.push(conn);
        Self::wake_first(state, self.limit);
    }

    fn closed(&self) {
        let mut state = self.lock();
        state.open -= 1;
        Self::wake_first(state, self.limit);
    }

    /// Wakes the first borrower in line when there is a connection for it.
    fn wake_first(state: MutexGuard<'_, State>, limit: usize) {
        let first = state
            .waiting
            .front()
            .filter(|_| state.has_room(limit))
            .cloned();
        drop(state);
        if let Some(turn) = first {
            turn.notify_one();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Lease {
    /// Closes the connection instead of giving it back: after an error that
    /// may have broken it.
    pub fn discard(mut self) {
        self.conn = None;
        self.pool.closed();
    }
}

impl Deref for Lease {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        self.conn
            .as_ref()
            .expect("a lease holds its connection until dropped")
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn
            .as_mut()
            .expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.give_back(conn);
        }
    }
}
