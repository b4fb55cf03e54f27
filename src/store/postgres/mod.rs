//! The PostgreSQL backend (`[storage] url`): several relays share one
//! database and behave as one relay (`docs/postgres.md`).
//!
//! What is here is the part of scale-out that does not depend on how the
//! domain's write operations reach the database: opening and migrating the
//! database (`migrations/postgres/`), the commit-ordered cursor of messages
//! ([`cursor`]), wake-ups across relays ([`wakeups`]), liveness of agents
//! across relays ([`presence`]) and leadership of the background tasks
//! ([`leader`]); `crate::cluster` puts them to work. The domain's reads and
//! writes are in the store's modules beside SQLite's, one arm per backend.
//!
//! Every PostgreSQL statement, these modules' and the store's, is in `sql/`
//! (the `clawrelay-pgsql` crate, imported as `pgsql`): checked at compile
//! time against `migrations/postgres/`, one function per statement.

pub mod cursor;
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
    /// The highest message position this relay's stamps found given (see
    /// [`cursor::Stamped::highest`]).
    stamped: std::sync::Arc<std::sync::atomic::AtomicI64>,
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
        Ok(PgStore {
            pool,
            stamped: Default::default(),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Numbers the committed messages without a position (see
    /// [`cursor::stamp`]) and remembers the highest position given.
    pub async fn stamp(&self) -> StoreResult<cursor::Stamped> {
        let done = cursor::stamp(&self.pool).await?;
        self.stamped
            .fetch_max(done.highest, std::sync::atomic::Ordering::SeqCst);
        Ok(done)
    }

    /// The highest position this relay's stamps found given: a message this
    /// relay stored and stamped has a position up to it.
    pub fn stamped(&self) -> i64 {
        self.stamped.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the database answers a query.
    pub async fn ping(&self) -> StoreResult<()> {
        pgsql::store::ping()
            .fetch_one(&self.pool)
            .await
            .map_err(error)?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
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
