//! The PostgreSQL backend (`[storage] url`): several relays share one
//! database and behave as one relay (`docs/postgres.md`).
//!
//! What is here is the part of scale-out that does not depend on how the
//! domain's write operations reach the database: opening and migrating the
//! database (`migrations/postgres/`), the global cursor of messages
//! ([`cursor`]), wake-ups across relays ([`wakeups`]), liveness of agents
//! across relays ([`presence`]) and leadership of the background tasks
//! ([`leader`]); `crate::cluster` puts them to work. The domain's reads and
//! writes are in the store's modules beside SQLite's, one arm per backend.
//!
//! Every PostgreSQL statement, these modules' and the store's, is in `sql/`
//! (the `clawrelay-pgsql` crate, imported as `pgsql`): checked at compile
//! time against `migrations/postgres/`, one function per statement.

mod batch;
pub mod cursor;
pub mod engine;
pub mod leader;
pub mod presence;
pub mod wakeups;

use super::{StoreError, StoreResult};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::ConnectOptions;
use std::str::FromStr;
use std::time::Duration;

/// How long a relay waits for a connection from its pool before it reports
/// the database unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A pool of connections to one PostgreSQL database, migrated.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The readable message position, and the readers waiting for it.
    horizon: std::sync::Arc<cursor::Horizon>,
    /// Stored messages the other relays are to hear of.
    notices: std::sync::Arc<cursor::Notices>,
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`) with up to
    /// `max_connections` connections and applies the migrations this relay
    /// knows. Relays starting together are safe: the migrator holds an
    /// advisory lock while it runs.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<PgStore> {
        PgStore::connect_with(url, max_connections, true).await
    }

    /// Like [`connect`](PgStore::connect), but when the database has no
    /// clawrelay schema yet and `create` is false, refuses instead of
    /// creating it (admin commands do not set up a database by accident).
    pub async fn connect_with(
        url: &str,
        max_connections: u32,
        create: bool,
    ) -> StoreResult<PgStore> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| {
                StoreError::Schema(format!(
                    "invalid PostgreSQL URL ({e}); expected postgres://user:password@host:port/database"
                ))
            })?
            .application_name("clawrelay")
            // Notices ("already exists, skipping") are not the relay's news.
            .options([("client_min_messages", "warning")])
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A connection that broke fails its statement, which reports the
            // database unavailable; a ping before every use would cost a
            // round trip each time.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(error)?;
        if !create {
            let found = pgsql::store::migrated()
                .fetch_one(&pool)
                .await
                .map_err(error)?;
            if !found {
                pool.close().await;
                return Err(StoreError::Schema(
                    "the database has no clawrelay schema yet; start the server on it, run \
                     `clawrelay migrate`, or pass --create"
                        .to_owned(),
                ));
            }
        }
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| match e {
                sqlx::migrate::MigrateError::Execute(inner) => error(inner),
                other => StoreError::from(other),
            })?;
        cursor::ensure_base(&pool).await?;
        Ok(PgStore {
            horizon: cursor::Horizon::start(pool.clone()),
            notices: Default::default(),
            pool,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The readable message position as this relay knows it, and the
    /// readers waiting for it to move.
    pub fn horizon(&self) -> &cursor::Horizon {
        &self.horizon
    }

    /// Stored messages the other relays are to hear of (see
    /// [`cursor::Notices`]).
    pub fn notices(&self) -> &std::sync::Arc<cursor::Notices> {
        &self.notices
    }

    /// Folds the per-session open-delivery counts into `clients.pending`
    /// (see `migrations/postgres/0003_engine.sql`); returns how many
    /// clients changed.
    pub async fn fold_pending(&self) -> StoreResult<i64> {
        pgsql::engine::fold_pending()
            .fetch_one(&self.pool)
            .await
            .map_err(error)
    }

    /// Whether the database answers a query.
    pub async fn ping(&self) -> StoreResult<()> {
        pgsql::store::ping()
            .fetch_one(&self.pool)
            .await
            .map_err(error)?;
        Ok(())
    }

    /// The database's size on disk in bytes.
    pub async fn database_size(&self) -> StoreResult<u64> {
        let bytes = pgsql::store::database_size()
            .fetch_one(&self.pool)
            .await
            .map_err(error)?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// How many times a write PostgreSQL aborted (a deadlock, a serialization
/// failure) runs again before its caller hears of it.
pub const RETRIES: u32 = 3;

/// Begins a write transaction; a relaxed one (`durable` false) commits
/// without waiting for the flush.
pub(crate) async fn begin(
    pool: &PgPool,
    durable: bool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut txn = pool.begin().await?;
    if !durable {
        pgsql::store::commit_without_flush()
            .execute(&mut *txn)
            .await?;
    }
    Ok(txn)
}

/// Whether PostgreSQL aborted the transaction for running at the same time
/// as another (deadlock detected, serialization failure): it may succeed if
/// run again.
pub(crate) fn retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("40001" | "40P01")),
        _ => false,
    }
}

/// A PostgreSQL failure in the store's terms, by its SQLSTATE class: what
/// retrying later can fix (the server shutting down, out of connections or
/// disk, a lost connection, a deadlock or serialization failure) is
/// unavailability, an integrity violation is a bug in the caller.
pub(crate) fn error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let message = db.message().to_owned();
            match code.get(..2).unwrap_or("") {
                // Deadlock detected, serialization failure, lock not available.
                "40" | "55" => {
                    tracing::warn!(sqlstate = %code, detail = %message, "PostgreSQL aborted a transaction; answered as unavailable");
                    StoreError::Busy
                }
                // Insufficient resources: disk full (53100), out of memory,
                // too many connections.
                "53" if code == "53100" => StoreError::Full,
                "53" | "57" | "08" | "58" => StoreError::Io(message),
                "23" => StoreError::Constraint(message),
                _ => StoreError::Other(e.to_string()),
            }
        }
        sqlx::Error::PoolTimedOut => StoreError::Busy,
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => StoreError::Closed,
        sqlx::Error::Io(io) => StoreError::Io(io.to_string()),
        _ => StoreError::Other(e.to_string()),
    }
}
