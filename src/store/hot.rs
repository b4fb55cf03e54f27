//! Reads on the hot path, run where they are asked for.
//!
//! A read through sqlx's SQLite pool hands its statement to the
//! connection's worker thread and its rows back: two thread switches, and the
//! wake-up of a sleeping thread in the round trip's latency. The few reads
//! every round trip makes (what a waiting agent's claim looks at first) are
//! one indexed look each, a few microseconds of SQLite's work. So they run on
//! the calling thread with a read-only connection the relay drives itself,
//! as the writer runs its transactions on its own.
//!
//! A read-only connection of a WAL database never waits for the writer, so
//! such a read does not stall the runtime thread that runs it. Idle
//! connections are kept for the next read; one is opened when all are in use.

use super::{StoreError, StoreResult, BUSY_TIMEOUT};
use rusqlite::{Connection, OpenFlags};
use sqlx::postgres::PgPool;
use std::path::PathBuf;
use std::sync::Mutex;

/// Idle connections kept (runtime threads reading at once, and a spare).
const KEEP: usize = 4;
/// Prepared statements each connection keeps.
const STATEMENT_CACHE: usize = 16;

/// The hot-path reads' connections: SQLite's own, or PostgreSQL's pool.
#[derive(Clone, Copy)]
pub enum Hot<'a> {
    Sqlite(&'a Connections),
    Postgres(&'a PgPool),
}

/// Read-only connections to the SQLite file, used on the calling thread.
pub struct Connections {
    path: PathBuf,
    /// Idle connections, and whether the store closed (then none is kept or
    /// opened: the writer, closing last, removes the write-ahead log only
    /// when no other connection is open).
    idle: Mutex<(Vec<Connection>, bool)>,
}

impl Connections {
    pub(super) fn new(path: PathBuf) -> Connections {
        Connections {
            path,
            idle: Mutex::new((Vec::new(), false)),
        }
    }

    /// Runs `read` on an idle connection (or a new one) on this thread.
    pub fn read<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).0.pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = read(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let (kept, closed) = &mut *idle;
        if !*closed && kept.len() < KEEP {
            kept.push(conn);
        }
        Ok(result?)
    }

    fn open(&self) -> StoreResult<Connection> {
        if self.idle.lock().unwrap_or_else(|e| e.into_inner()).1 {
            return Err(StoreError::Closed);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    /// Closes the idle connections; those in use close when their read ends.
    pub(super) fn close(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.0.clear();
        idle.1 = true;
    }
}
