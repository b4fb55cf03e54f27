//! The handles the domain's storage calls take, on either backend: [`Tx`],
//! an open write transaction, and [`Reader`], the connections reads use.
//!
//! The domain composes store write functions inside one [`Store::write`]
//! closure, so every multi-row change is one transaction. That closure is
//! synchronous and shared by both backends. On SQLite it runs on the writer
//! thread with the writer's connection; on PostgreSQL it runs on a blocking
//! thread that holds one pooled connection inside one transaction, and each
//! statement waits for its answer there ([`PgTx`]).
//!
//! A store function takes the handle and matches on the backend. What only
//! SQLite's file has (its backup, checkpoints, the writer's counters) asks
//! for it with [`Tx::sqlite`] or [`Reader::sqlite`], which answer
//! [`StoreError::Unsupported`] on PostgreSQL.
//!
//! [`Store::write`]: super::Store::write

use super::postgres::error as pg_error;
use super::{StoreError, StoreResult};
use pgsql::{Row, Rows, Statement};
use sqlx::postgres::PgPool;
use sqlx::{Postgres, SqlitePool};
use std::cell::RefCell;

/// An open write transaction.
pub enum Tx {
    /// The writer thread's connection (see `writer`).
    Sqlite(rusqlite::Connection),
    Postgres(PgTx),
}

impl Tx {
    /// The PostgreSQL transaction once the operation has run, and the
    /// messages it stored (see [`PgTx::stored`]).
    pub(super) fn into_postgres(self) -> Option<(sqlx::Transaction<'static, Postgres>, Stored)> {
        match self {
            Tx::Postgres(pg) => Some((pg.txn.into_inner(), pg.stored.into_inner())),
            Tx::Sqlite(_) => None,
        }
    }

    /// Whether PostgreSQL aborted this transaction for a concurrent one
    /// (false on SQLite).
    pub(super) fn aborted(&self) -> bool {
        match self {
            Tx::Postgres(pg) => pg.aborted.get(),
            Tx::Sqlite(_) => false,
        }
    }

    /// The SQLite connection, for what only the SQLite file has.
    pub(crate) fn sqlite(&self) -> StoreResult<&rusqlite::Connection> {
        match self {
            Tx::Sqlite(conn) => Ok(conn),
            Tx::Postgres(_) => Err(StoreError::Unsupported),
        }
    }
}

/// The connections reads use: SQLite's read-only pool, or PostgreSQL's pool.
#[derive(Clone)]
pub enum Reader {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Reader {
    /// The SQLite pool, for what only the SQLite file has (its backup).
    pub(crate) fn sqlite(&self) -> StoreResult<&SqlitePool> {
        match self {
            Reader::Sqlite(pool) => Ok(pool),
            Reader::Postgres(_) => Err(StoreError::Unsupported),
        }
    }
}

/// A PostgreSQL transaction, driven from a blocking thread: each statement
/// is run on the runtime and waited for, so the domain's synchronous
/// closures work unchanged. Never used on a runtime thread (blocking there
/// would stall every task on it): `Store::write` runs the closure with
/// `spawn_blocking`. The statements' I/O is driven by the runtime's own
/// threads: on a current-thread runtime, whatever blocks that one thread
/// (a synchronous call inside an async task) holds every PostgreSQL write
/// up with it. The relay's runtime is multi-threaded.
pub struct PgTx {
    txn: RefCell<sqlx::Transaction<'static, Postgres>>,
    runtime: tokio::runtime::Handle,
    stored: RefCell<Stored>,
    /// A statement failed because PostgreSQL aborted the transaction for a
    /// concurrent one (see `postgres::retryable`): the write may run again.
    aborted: std::cell::Cell<bool>,
}

/// The messages a transaction stored: their highest position and apps, for
/// the notification the other relays' readers wake on.
#[derive(Default)]
pub(crate) struct Stored {
    pub top: i64,
    pub apps: Vec<String>,
}

impl PgTx {
    pub(super) fn new(
        txn: sqlx::Transaction<'static, Postgres>,
        runtime: tokio::runtime::Handle,
    ) -> PgTx {
        PgTx {
            txn: RefCell::new(txn),
            runtime,
            stored: RefCell::default(),
            aborted: std::cell::Cell::new(false),
        }
    }

    /// The store's error for a failed statement; notes an abort that a run
    /// again may get past.
    fn failed(&self, e: sqlx::Error) -> StoreError {
        if super::postgres::retryable(&e) {
            self.aborted.set(true);
        }
        pg_error(e)
    }

    /// Notes a message this transaction stored, at position `pos`, of
    /// `app`: the other relays hear of it when the transaction commits.
    pub fn stored(&self, pos: i64, app: &str) {
        let mut stored = self.stored.borrow_mut();
        stored.top = stored.top.max(pos);
        if !stored.apps.iter().any(|a| a == app) {
            stored.apps.push(app.to_owned());
        }
    }

    /// Runs a statement; returns the number of rows it changed.
    pub fn execute(&self, query: Statement) -> StoreResult<u64> {
        let mut txn = self.txn.borrow_mut();
        let done = self
            .runtime
            .block_on(query.execute(&mut **txn))
            .map_err(|e| self.failed(e))?;
        Ok(done.rows_affected())
    }

    /// Runs a statement that returns exactly one row.
    pub fn fetch_one<O, F>(&self, query: Rows<F>) -> StoreResult<O>
    where
        F: Row<O>,
        O: Send + Unpin,
    {
        let mut txn = self.txn.borrow_mut();
        self.runtime
            .block_on(query.fetch_one(&mut **txn))
            .map_err(|e| self.failed(e))
    }

    /// Runs a statement that returns at most one row.
    pub fn fetch_optional<O, F>(&self, query: Rows<F>) -> StoreResult<Option<O>>
    where
        F: Row<O>,
        O: Send + Unpin,
    {
        let mut txn = self.txn.borrow_mut();
        self.runtime
            .block_on(query.fetch_optional(&mut **txn))
            .map_err(|e| self.failed(e))
    }

    /// Runs a statement and returns every row.
    pub fn fetch_all<O, F>(&self, query: Rows<F>) -> StoreResult<Vec<O>>
    where
        F: Row<O>,
        O: Send + Unpin,
    {
        let mut txn = self.txn.borrow_mut();
        self.runtime
            .block_on(query.fetch_all(&mut **txn))
            .map_err(|e| self.failed(e))
    }
}
