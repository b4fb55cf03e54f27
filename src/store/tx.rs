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
use std::cell::{Cell, RefCell};

/// An open write transaction.
pub enum Tx {
    /// The writer thread's connection (see `writer`).
    Sqlite(rusqlite::Connection),
    Postgres(PgTx),
}

impl Tx {
    /// The PostgreSQL transaction once the operation has run, and whether
    /// it stored messages (see [`PgTx::stamp_after_commit`]).
    pub(super) fn into_postgres(self) -> Option<(sqlx::Transaction<'static, Postgres>, bool)> {
        match self {
            Tx::Postgres(pg) => Some((pg.txn.into_inner(), pg.stamp.get())),
            Tx::Sqlite(_) => None,
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
    stamp: Cell<bool>,
}

impl PgTx {
    pub(super) fn new(
        txn: sqlx::Transaction<'static, Postgres>,
        runtime: tokio::runtime::Handle,
    ) -> PgTx {
        PgTx {
            txn: RefCell::new(txn),
            runtime,
            stamp: Cell::new(false),
        }
    }

    /// Asks for the cursor's stamp once this transaction has committed: it
    /// stored messages, which get their positions then.
    pub fn stamp_after_commit(&self) {
        self.stamp.set(true);
    }

    /// Runs a statement; returns the number of rows it changed.
    pub fn execute(&self, query: Statement) -> StoreResult<u64> {
        let mut txn = self.txn.borrow_mut();
        let done = self
            .runtime
            .block_on(query.execute(&mut **txn))
            .map_err(pg_error)?;
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
            .map_err(pg_error)
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
            .map_err(pg_error)
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
            .map_err(pg_error)
    }
}
