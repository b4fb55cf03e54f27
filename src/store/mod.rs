//! The storage layer. Every SQL statement of clawrelay lives under this module
//! (PostgreSQL's in `postgres/sql/`, a crate of its own so that sqlx checks
//! them at compile time against PostgreSQL, as it checks SQLite's reads here).
//!
//! SQLite runs in WAL mode. Writes go through one writer connection owned by
//! the [`writer`] thread, which runs each operation inside `BEGIN IMMEDIATE`
//! and lets concurrent operations share one commit (group commit); reads use a
//! small pool of read-only connections that never block the writer.
//!
//! The functions in the submodules are building blocks: write functions are
//! synchronous and take the writer's [`Tx`] (`rusqlite`, a transaction is
//! already open), read functions take the reader pool (sqlx, async,
//! compile-time-checked queries), except the few every round trip makes,
//! which run on the calling thread ([`hot`]). The domain layer composes write functions
//! inside one [`Store::write`] call, so every multi-row change is one
//! transaction.

pub mod apps;
pub mod attachments;
pub mod backup;
mod checkpoint;
pub mod clients;
pub mod console;
pub mod conversations;
pub mod deliveries;
pub mod hot;
pub mod idempotency;
pub mod messages;
pub mod postgres;
pub mod recent;
pub mod retention;
pub mod search;
pub mod sessions;
pub mod settings;
mod tx;
pub mod webhooks;
mod writer;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use tx::{PgTx, Reader, Tx};
pub use writer::WriterStats;

/// How long a connection waits for a lock held by another process (the admin
/// CLI writing while the server runs) before reporting the database busy.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const READERS: u32 = 4;

/// `[storage] synchronous`: how hard a commit pushes data to the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync on every commit: a 2xx survives power loss.
    Full,
    /// fsync at WAL checkpoints: survives a process crash, a power loss may
    /// lose the last commits (never corrupts).
    Normal,
}

/// How the database is opened: `[storage]` without its path.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub synchronous: Synchronous,
    /// The write-ahead log is checkpointed and started over once it grows
    /// past this many bytes (`[storage] wal_limit_mb`).
    pub wal_limit: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            synchronous: Synchronous::Full,
            wal_limit: 64 << 20,
        }
    }
}

impl From<Synchronous> for Options {
    fn from(synchronous: Synchronous) -> Self {
        Options {
            synchronous,
            ..Options::default()
        }
    }
}

/// A failure of the database. Cloneable so that one failed group commit can
/// be reported to every operation in it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// Locked by another process for longer than the busy timeout.
    #[error("the database is busy")]
    Busy,
    /// The disk or the database file is full.
    #[error("the disk is full")]
    Full,
    /// The operating system failed a read or write.
    #[error("disk I/O error: {0}")]
    Io(String),
    /// The writer has shut down.
    #[error("the store is closed")]
    Closed,
    /// A constraint the schema enforces was violated: a bug in the caller.
    #[error("constraint violated: {0}")]
    Constraint(String),
    /// The file is not a clawrelay database, or migrations failed.
    #[error("{0}")]
    Schema(String),
    #[error("database error: {0}")]
    Other(String),
    /// The operation is the SQLite file's own (a file backup, say): on
    /// PostgreSQL its tools do it.
    #[error("this operation is for the SQLite file; on PostgreSQL use its own tools (pg_dump)")]
    Unsupported,
}

impl StoreError {
    /// True when the failure is the storage's condition (retry later), not a bug.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Busy | Self::Full | Self::Io(_) | Self::Closed)
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) => match sqlite_primary_code(db.as_ref()) {
                5 | 6 => Self::Busy,
                13 => Self::Full,
                10 | 14 => Self::Io(db.message().to_owned()),
                19 => Self::Constraint(db.message().to_owned()),
                11 | 26 => Self::Schema(format!(
                    "not a clawrelay database (or corrupted): {}",
                    db.message()
                )),
                _ => Self::Other(e.to_string()),
            },
            sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => Self::Closed,
            sqlx::Error::Io(io) => Self::Io(io.to_string()),
            _ => Self::Other(e.to_string()),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match &e {
            rusqlite::Error::SqliteFailure(f, message) => {
                let message = message.clone().unwrap_or_else(|| f.to_string());
                match f.code {
                    C::DatabaseBusy | C::DatabaseLocked => Self::Busy,
                    C::DiskFull => Self::Full,
                    C::SystemIoFailure | C::CannotOpen => Self::Io(message),
                    C::ConstraintViolation => Self::Constraint(message),
                    C::NotADatabase | C::DatabaseCorrupt => Self::Schema(format!(
                        "not a clawrelay database (or corrupted): {message}"
                    )),
                    _ => Self::Other(e.to_string()),
                }
            }
            _ => Self::Other(e.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        use sqlx::migrate::MigrateError as M;
        match e {
            M::VersionMissing(v) => Self::Schema(format!(
                "the database was written by a newer clawrelay (schema version {v} is unknown to this one)"
            )),
            M::Execute(inner) => Self::from(inner),
            other => Self::Schema(format!("migration failed: {other}")),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A client's or app's stored token: its argon2id hash, and the time its
/// credential last changed (revoke or rotate; 0: never), which tells the
/// sessions opened with an older token from those opened with this one.
pub struct Credential {
    pub hash: String,
    pub version: i64,
}

/// The database: SQLite's file (one writer thread and a pool of readers),
/// or a PostgreSQL database several relays share.
#[derive(Clone)]
pub struct Store {
    reader: Reader,
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqliteFile),
    Postgres(postgres::PgStore),
}

/// Brings the SQLite file's schema up to date. Two processes that open a new
/// file at the same moment (a server starting while an admin command runs)
/// both see no migration applied and both apply the first: the second one's
/// transaction fails (the file is locked, or "table … already exists",
/// "duplicate column", a row the other inserted) and leaves nothing behind,
/// so it tries again and finds what the first applied. An error that is not
/// of that race (the migration it failed on is not applied by another
/// process) is reported at once.
async fn migrate_sqlite(conn: &mut sqlx::SqliteConnection) -> StoreResult<()> {
    use sqlx::migrate::MigrateError;
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        let result = sqlx::migrate!("./migrations").run(&mut *conn).await;
        let raced = match &result {
            Err(MigrateError::ExecuteMigration(e, version)) => {
                is_locked(e) || applied_meanwhile(conn, *version).await
            }
            Err(MigrateError::Execute(e)) => is_locked(e) || records_a_version(e),
            _ => false,
        };
        if !raced || std::time::Instant::now() >= deadline {
            return Ok(result?);
        }
        tracing::debug!("a migration met another process's; trying again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SQLITE_BUSY or SQLITE_LOCKED.
fn is_locked(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|db| matches!(sqlite_primary_code(db), 5 | 6))
}

/// Recording a migration as applied failed on its version: another process
/// recorded it first.
fn records_a_version(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|db| {
        sqlite_primary_code(db) == 19 && db.message().contains("_sqlx_migrations")
    })
}

/// An SQLite error's primary result code: the low byte of the extended code
/// the error carries (0 when it carries none).
fn sqlite_primary_code(db: &dyn sqlx::error::DatabaseError) -> i32 {
    db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0) & 0xff
}

/// Whether another process has applied migration `version` (so it failed
/// here on what that process created).
async fn applied_meanwhile(conn: &mut sqlx::SqliteConnection, version: i64) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM _sqlx_migrations WHERE version = ?)")
        .bind(version)
        .fetch_one(conn)
        .await
        .unwrap_or(false)
}

/// The first connection to the file. On a new file it switches the file
/// to WAL, which needs it to itself, and SQLite waits for no lock there:
/// another process opening the new file at the same moment (a server
/// starting while an admin command runs) makes it fail at once ("database
/// is locked"). So it tries again until [`BUSY_TIMEOUT`], as the
/// migration does.
async fn connect_first(options: &SqliteConnectOptions) -> StoreResult<sqlx::SqliteConnection> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match options.connect().await.map_err(StoreError::from) {
            Err(StoreError::Busy) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            done => return done,
        }
    }
}

#[derive(Clone)]
struct SqliteFile {
    writer: writer::Writer,
    /// The messages committed last (see [`recent`]).
    recent: std::sync::Arc<recent::Recent>,
    /// The hot path's reads (see [`hot`]).
    hot: std::sync::Arc<hot::Connections>,
    checkpointer: std::sync::Arc<tokio::sync::Mutex<Option<checkpoint::Checkpointer>>>,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if missing) and migrates the database at `path`.
    pub async fn open(path: &Path, options: impl Into<Options>) -> StoreResult<Store> {
        let options = options.into();
        let synchronous = options.synchronous;
        let sync = match synchronous {
            Synchronous::Full => SqliteSynchronous::Full,
            Synchronous::Normal => SqliteSynchronous::Normal,
        };
        let base = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sync)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // Statements are compile-time checked; logging each one is noise.
            .disable_statement_logging();

        let mut conn = connect_first(&base.clone().create_if_missing(true)).await?;
        migrate_sqlite(&mut conn).await?;
        conn.close().await?;
        let recent = std::sync::Arc::new(recent::Recent::default());
        let cue = std::sync::Arc::new(checkpoint::Cue::default());
        let writer = writer::Writer::spawn(
            open_writer(path, &options)?,
            synchronous == Synchronous::Full,
            writer::WalBound::new(wal_path(path), options.wal_limit, cue.clone()),
            recent.clone(),
        )
        .map_err(|e| StoreError::Io(format!("cannot start the writer thread: {e}")))?;
        let checkpoints = base.clone().connect().await?;

        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .min_connections(1)
            // A connection to a local file does not go stale; a ping before
            // every use is one more hand-off to its worker thread per read.
            .test_before_acquire(false)
            .connect_with(base.read_only(true))
            .await?;

        Ok(Store {
            reader: Reader::Sqlite(readers),
            backend: Backend::Sqlite(SqliteFile {
                writer,
                checkpointer: std::sync::Arc::new(tokio::sync::Mutex::new(Some(
                    checkpoint::Checkpointer::spawn(checkpoints, cue),
                ))),
                path: path.to_owned(),
                recent,
                hot: std::sync::Arc::new(hot::Connections::new(path.to_owned())),
            }),
        })
    }

    /// Connects to the PostgreSQL database at `url` with a pool of up to
    /// `max_connections` and migrates it (see [`postgres::PgStore`]).
    pub async fn connect_postgres(url: &str, max_connections: u32) -> StoreResult<Store> {
        Store::connect_postgres_with(url, max_connections, true).await
    }

    /// Like [`connect_postgres`](Store::connect_postgres); without `create`
    /// a database with no clawrelay schema is refused, not set up.
    pub async fn connect_postgres_with(
        url: &str,
        max_connections: u32,
        create: bool,
    ) -> StoreResult<Store> {
        let pg = postgres::PgStore::connect_with(url, max_connections, create).await?;
        Ok(Store {
            reader: Reader::Postgres(pg.pool().clone()),
            backend: Backend::Postgres(pg),
        })
    }

    /// Counters of SQLite's writer (commits, batch sizes, commit time); None
    /// on PostgreSQL, which has no single writer.
    pub fn writer_stats(&self) -> Option<&WriterStats> {
        match &self.backend {
            Backend::Sqlite(file) => Some(&file.writer.stats),
            Backend::Postgres(_) => None,
        }
    }

    /// Writes a consistent, verified copy of the SQLite database to `dest`
    /// (which must not exist) while writers go on. Returns its size in
    /// bytes. A PostgreSQL database is backed up with `pg_dump`.
    pub async fn backup_to(&self, dest: &Path) -> StoreResult<u64> {
        backup::backup_to(self.reader.sqlite()?, dest).await
    }

    /// Whether the database answers a query.
    pub async fn ping(&self) -> StoreResult<()> {
        match &self.backend {
            Backend::Sqlite(_) => {
                sqlx::query_scalar!(r#"SELECT 1 AS "one!: i64""#)
                    .fetch_one(self.reader.sqlite()?)
                    .await?;
                Ok(())
            }
            Backend::Postgres(pg) => pg.ping().await,
        }
    }

    /// Resolves once a cursor read starting now sees every message up to
    /// position `pos`: at once on SQLite (its one writer commits in cursor
    /// order); on PostgreSQL once every transaction older than the one that
    /// stored it has ended (see [`postgres::cursor`]).
    pub async fn readable_beyond(&self, pos: i64) {
        if let Backend::Postgres(pg) = &self.backend {
            pg.horizon().beyond(pos).await;
        }
    }

    /// The PostgreSQL store (None on SQLite): what relays sharing the
    /// database coordinate through (`crate::cluster`).
    pub fn postgres(&self) -> Option<&postgres::PgStore> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(pg) => Some(pg),
        }
    }

    /// The messages committed last, on SQLite (None on PostgreSQL, where
    /// relays share the database): what streams that keep up read.
    pub fn recent(&self) -> Option<&recent::Recent> {
        match &self.backend {
            Backend::Sqlite(file) => Some(&file.recent),
            Backend::Postgres(_) => None,
        }
    }

    /// The connections the hot path's reads use (see [`hot`]).
    pub fn hot(&self) -> hot::Hot<'_> {
        match &self.backend {
            Backend::Sqlite(file) => hot::Hot::Sqlite(&file.hot),
            Backend::Postgres(pg) => hot::Hot::Postgres(pg.pool()),
        }
    }

    /// The connections reads use.
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// The SQLite file (None on PostgreSQL).
    pub fn path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite(file) => Some(&file.path),
            Backend::Postgres(_) => None,
        }
    }

    /// The database's size in bytes: SQLite's file (without its write-ahead
    /// log), or what PostgreSQL reports for the database.
    pub async fn database_size(&self) -> StoreResult<u64> {
        match &self.backend {
            Backend::Sqlite(file) => {
                Ok(std::fs::metadata(&file.path).map(|m| m.len()).unwrap_or(0))
            }
            Backend::Postgres(pg) => pg.database_size().await,
        }
    }

    /// The size of SQLite's write-ahead log in bytes (0 when there is none,
    /// and on PostgreSQL).
    pub fn wal_size(&self) -> u64 {
        self.path()
            .and_then(|path| std::fs::metadata(wal_path(path)).ok())
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Runs `op` inside a write transaction and resolves once that transaction
    /// is committed (on disk as far as `[storage] synchronous` promises).
    ///
    /// On SQLite, operations submitted concurrently may share one
    /// transaction; each runs in its own savepoint, so an operation that
    /// returns `Err` is rolled back alone and its error is returned to its
    /// caller only. On PostgreSQL each operation is a transaction of its own,
    /// and runs again when PostgreSQL aborted it as a deadlock (hence
    /// `FnMut`: `op` must be safe to run again after a rollback).
    pub async fn write<T, E, F>(&self, op: F) -> Result<T, E>
    where
        F: FnMut(&Tx) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(file) => file.writer.submit(op, true).await,
            Backend::Postgres(pg) => write_postgres(pg, op, true).await,
        }
    }

    /// Like [`Store::write`], for changes a crash may undo without breaking a
    /// promise: claims and lease releases (an undone claim is a redelivery),
    /// bookkeeping the next maintenance tick redoes. Such a transaction may
    /// skip the fsync; it is still never reordered after a later durable one.
    pub async fn write_relaxed<T, E, F>(&self, op: F) -> Result<T, E>
    where
        F: FnMut(&Tx) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(file) => file.writer.submit(op, false).await,
            Backend::Postgres(pg) => write_postgres(pg, op, false).await,
        }
    }

    /// Indexes for search every message still waiting (SQLite, where the
    /// writer indexes in batches: see [`search`]; PostgreSQL indexes each
    /// message as it stores it).
    pub async fn catch_up_search(&self) -> StoreResult<()> {
        if let Backend::Sqlite(file) = &self.backend {
            if !search::waiting(&file.hot)? {
                return Ok(());
            }
            loop {
                let looked = self
                    .write_relaxed(|tx| search::catch_up(tx, search::CATCH_UP_BATCH))
                    .await?;
                if (looked as i64) < search::CATCH_UP_BATCH {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Finishes queued writes and closes every connection. On SQLite the
    /// writer closes last: as the last connection it checkpoints the WAL into
    /// the main file and removes it (a read-only connection cannot), so a
    /// stopped relay leaves one self-contained file.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(file) => {
                match self.catch_up_search().await {
                    Ok(()) | Err(StoreError::Closed) => {}
                    Err(e) => tracing::warn!(
                        error = %e,
                        "indexing the last messages for search failed; the next start does it"
                    ),
                }
                if let Some(c) = file.checkpointer.lock().await.take() {
                    c.stop().await;
                }
                if let Reader::Sqlite(readers) = &self.reader {
                    readers.close().await;
                }
                file.hot.close();
                file.writer.close().await;
            }
            Backend::Postgres(pg) => pg.close().await,
        }
    }
}

/// A write on PostgreSQL: one transaction on a pooled connection, `op` run
/// on a blocking thread (its statements wait for their answers there, see
/// [`PgTx`]), committed when it returns `Ok` and rolled back otherwise. A
/// relaxed write commits with `synchronous_commit = off`: PostgreSQL then
/// answers before the commit record is flushed, and still flushes it before
/// any later synchronous commit's, so it is never reordered after one.
///
/// A transaction PostgreSQL aborted as a deadlock or a serialization
/// failure (it ran at the same time as another that took the same rows in
/// another order) is rolled back and `op` runs again, up to
/// [`postgres::RETRIES`] times, before its caller hears of it (503).
///
/// When `op` stored messages, the other relays' readers hear of them once
/// it committed (see [`postgres::cursor::Notices`]).
///
/// The commit happens on that blocking thread too, not in the caller's
/// future: a transaction ends as soon as `op` returns, however the caller
/// polls. (A caller that awaited another write before polling this one, as
/// a socket that claims while its requests run, would otherwise hold this
/// transaction's locks open while that other write waits for them.)
async fn write_postgres<T, E, F>(pg: &postgres::PgStore, mut op: F, durable: bool) -> Result<T, E>
where
    F: FnMut(&Tx) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    let runtime = tokio::runtime::Handle::current();
    let pool = pg.pool().clone();
    let notices = pg.notices().clone();
    let ran = tokio::task::spawn_blocking(move || {
        let mut tries = 0;
        loop {
            tries += 1;
            let attempt = runtime.block_on(postgres::begin(&pool, durable));
            let txn = attempt.map_err(|e| E::from(postgres::error(e)))?;
            let tx = Tx::Postgres(PgTx::new(txn, runtime.clone()));
            let result = op(&tx);
            let aborted = tx.aborted();
            let Some((txn, stored)) = tx.into_postgres() else {
                return Err(E::from(StoreError::Closed));
            };
            let value = match result {
                Ok(value) => value,
                Err(e) => {
                    // A failed rollback leaves nothing committed either: the
                    // connection is closed instead of returned to the pool.
                    let _ = runtime.block_on(txn.rollback());
                    if aborted && tries <= postgres::RETRIES {
                        tracing::debug!(tries, "PostgreSQL aborted a write; running it again");
                        continue;
                    }
                    return Err(e);
                }
            };
            let started = std::time::Instant::now();
            match runtime.block_on(txn.commit()) {
                Ok(()) => {}
                Err(e) if postgres::retryable(&e) && tries <= postgres::RETRIES => continue,
                Err(e) => return Err(E::from(postgres::error(e))),
            }
            if stored.top > 0 {
                notices.stored(stored.top, stored.apps.iter().map(String::as_str));
            }
            // The same series as SQLite's writer (one operation per commit).
            let durability = if durable { "full" } else { "relaxed" };
            let m = crate::metrics::get();
            m.commit_seconds
                .with_label_values(&[durability])
                .observe(started.elapsed().as_secs_f64());
            m.batch_size.with_label_values(&[durability]).observe(1.0);
            return Ok(value);
        }
    })
    .await;
    match ran {
        Ok(done) => done,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(E::from(StoreError::Closed)),
    }
}

/// The writer's connection, set up as [`Store::open`]'s sqlx options set up
/// the others. The database exists and is migrated already.
fn open_writer(path: &Path, options: &Options) -> StoreResult<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    // Each commit's log frames in one system call (see `walbuf`).
    walbuf::register().map_err(StoreError::Other)?;
    let conn = rusqlite::Connection::open_with_flags_and_vfs(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        walbuf::NAME,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Other(format!(
            "the database could not switch to WAL mode (it is in {mode} mode)"
        )));
    }
    // With `synchronous = full` the writer syncs the log itself after each
    // durable commit (see `writer::Syncer`), so the commit itself never does.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // Each operation of a shared transaction runs in a savepoint, whose
    // journal (the pages it changed, as they were) is a temporary file
    // past 64 KiB: kept in memory, it costs no system calls.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Checkpoints run off the write path (see `checkpoint`), and the writer
    // resets the log when it outgrows its limit (see `writer`).
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    let _: i64 = conn.query_row(
        &format!("PRAGMA journal_size_limit = {}", options.wal_limit),
        [],
        |r| r.get(0),
    )?;
    Ok(conn)
}

/// Whether a database file may be opened at `path`, in words a user can act
/// on: the directory that is missing or not writable, the file that is
/// read-only or absent (`create`: an absent file is created). SQLite's own
/// errors for these ("unable to open database file", "disk I/O error") name
/// neither the path nor the cause.
pub fn check_path(path: &Path, create: bool) -> Result<(), String> {
    let shown = path.display();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a directory (database {shown})", dir.display())),
        Err(e) => {
            return Err(format!(
                "the directory {} of database {shown} cannot be used: {e}; create it or fix --db / [storage] path",
                dir.display()
            ))
        }
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => return Err(format!("database {shown} is a directory")),
        Ok(_) => {
            if let Err(e) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
            {
                return Err(format!(
                    "database {shown} cannot be opened for writing ({e}); check its owner and mode (the relay runs as this user)"
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !create {
                return Err(format!(
                    "no database at {shown}; start the relay once (clawrelay serve), pass --create to make a new one, or fix --db / [storage] path"
                ));
            }
        }
        Err(e) => return Err(format!("database {shown} cannot be read: {e}")),
    }
    // SQLite writes its -wal and -shm files beside the database.
    let probe = dir.join(format!(".clawrelay-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!(
            "the directory {} is not writable ({e}): SQLite keeps database {shown}'s -wal and -shm files there; give this user write access to it",
            dir.display()
        )),
    }
}

/// The write-ahead log SQLite keeps beside the database at `path`.
fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::{applied_meanwhile, is_locked, records_a_version};
    use sqlx::Connection;

    /// Of the errors a migration's statements meet, only a lock or another
    /// process's record of the same version are taken as the race by their
    /// code alone (the others are checked against the versions applied).
    #[tokio::test]
    async fn only_locks_and_a_recorded_version_are_the_race_by_their_code() {
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        for sql in [
            "CREATE TABLE _sqlx_migrations (version INTEGER PRIMARY KEY)",
            "INSERT INTO _sqlx_migrations VALUES (1)",
            "CREATE TABLE t (x INTEGER UNIQUE)",
            "INSERT INTO t VALUES (1)",
        ] {
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
        let fails = [
            ("INSERT INTO _sqlx_migrations VALUES (1)", true),
            ("INSERT INTO t VALUES (1)", false),
            ("CREATE TABLE t (x INTEGER)", false),
            ("SELECT * FROM no_such_table", false),
            ("THIS IS NOT SQL", false),
        ];
        for (sql, raced) in fails {
            let e = sqlx::query(sql).execute(&mut conn).await.unwrap_err();
            assert!(!is_locked(&e), "{sql}: {e}");
            assert_eq!(records_a_version(&e), raced, "{sql}: {e}");
        }
        // The other errors count when the version is applied by then.
        assert!(applied_meanwhile(&mut conn, 1).await);
        assert!(!applied_meanwhile(&mut conn, 2).await);
    }
}
