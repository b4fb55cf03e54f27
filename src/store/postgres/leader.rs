//! Leadership of the background tasks across relays: the relay holding a
//! session-level advisory lock runs them. The lock lives as long as the
//! connection that took it, so when the leading relay dies (its process
//! killed, its host gone) PostgreSQL ends its session and another relay's
//! next attempt succeeds.

use super::error;
use crate::store::StoreResult;
use sqlx::{Connection, PgConnection, PgPool};

/// The session-level advisory locks, one key per use (`claw` and a
/// number), listed together so that no two uses share one. (Transaction
/// locks on hashed names, in `conversations`, `idempotency`, `sessions` and
/// `attachments`, are 64-bit hashes: a clash with these is not a concern.)
pub mod keys {
    // 0x636c_6177_0001 was the cursor's stamps' (before version 0003 of
    // the schema): not to be reused.
    /// Held by the relay that runs the background tasks (`crate::cluster`).
    pub const MAINTENANCE: i64 = 0x636c_6177_0002;
}

/// A held advisory lock, on a connection of its own (taken out of the pool,
/// so that returning it can never hand the lock to other work).
pub struct Leadership {
    conn: PgConnection,
    key: i64,
}

impl Leadership {
    /// Takes the lock `key` if no other session holds it.
    pub async fn try_acquire(pool: &PgPool, key: i64) -> StoreResult<Option<Leadership>> {
        let conn = pool.acquire().await.map_err(error)?.detach();
        match Leadership::try_take(conn, key).await? {
            Ok(held) => Ok(Some(held)),
            Err(conn) => {
                conn.close().await.map_err(error)?;
                Ok(None)
            }
        }
    }

    /// Takes the lock `key` on `conn` (a connection of its own, out of any
    /// pool) if no other session holds it; else gives `conn` back for the
    /// next attempt.
    pub async fn try_take(
        mut conn: PgConnection,
        key: i64,
    ) -> StoreResult<Result<Leadership, PgConnection>> {
        let got = pgsql::leader::try_lock(key)
            .fetch_one(&mut conn)
            .await
            .map_err(error)?;
        Ok(if got {
            Ok(Leadership { conn, key })
        } else {
            Err(conn)
        })
    }

    /// Whether this session still holds the lock. False once the connection
    /// is gone (the database restarted, or ended the session): the lock went
    /// with it, and another relay may lead by now.
    pub async fn still_held(&mut self) -> bool {
        let held = pgsql::leader::holds(self.key)
            .fetch_one(&mut self.conn)
            .await;
        held.unwrap_or(false)
    }

    /// Gives the lock up: released at once (the session would release it
    /// when it ends, which PostgreSQL notices a moment after the connection
    /// closes), then the connection closes.
    pub async fn release(mut self) {
        let _ = pgsql::leader::unlock(self.key)
            .fetch_one(&mut self.conn)
            .await;
        let _ = self.conn.close().await;
    }
}
