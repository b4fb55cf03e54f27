//! Admin console sessions (see the migration `0016_console.sql`): a login
//! with the admin token, for a while.

use super::postgres::error as pg_error;
use super::{Reader, StoreResult, Tx};
use crate::ids::ConsoleSessionId;

pub fn insert(
    tx: &Tx,
    id: &ConsoleSessionId,
    token_hash: &str,
    now: i64,
    expires_at: i64,
) -> StoreResult<()> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            pg.execute(pgsql::console::insert(
                id.as_str(),
                token_hash,
                now,
                expires_at,
            ))?;
            return Ok(());
        }
    };
    tx.prepare_cached(
        "INSERT INTO console_sessions (id, token_hash, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute((id, token_hash, now, expires_at))?;
    Ok(())
}

/// A live console session's stored token hash and its expiry (Unix ms).
pub async fn credential(
    db: &Reader,
    id: &ConsoleSessionId,
    now: i64,
) -> StoreResult<Option<(String, i64)>> {
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            return pgsql::console::credential(id.as_str(), now)
                .fetch_optional(pool)
                .await
                .map_err(pg_error);
        }
    };
    let row = sqlx::query!(
        "SELECT token_hash, expires_at FROM console_sessions WHERE id = ?1 AND expires_at > ?2",
        id,
        now
    )
    .fetch_optional(ex)
    .await?;
    Ok(row.map(|r| (r.token_hash, r.expires_at)))
}

/// How long a console login lasts at most, refreshed or not: 12 hours.
pub const MAX_LIFETIME_MS: i64 = 12 * 3600 * 1000;

/// Moves a live console session's expiry to `expires_at`, but never past
/// [`MAX_LIFETIME_MS`] after its login; the new expiry, None when it is not
/// live.
pub fn refresh(
    tx: &Tx,
    id: &ConsoleSessionId,
    now: i64,
    expires_at: i64,
) -> StoreResult<Option<i64>> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            return pg.fetch_optional(pgsql::console::refresh(
                id.as_str(),
                now,
                expires_at,
                MAX_LIFETIME_MS,
            ));
        }
    };
    let mut stmt = tx.prepare_cached(
        "UPDATE console_sessions SET expires_at = MIN(?3, created_at + ?4)
         WHERE id = ?1 AND expires_at > ?2
         RETURNING expires_at",
    )?;
    let mut rows = stmt.query((id, now, expires_at, MAX_LIFETIME_MS))?;
    Ok(match rows.next()? {
        Some(row) => Some(row.get(0)?),
        None => None,
    })
}

/// Ends a console session (logout).
pub fn delete(tx: &Tx, id: &ConsoleSessionId) -> StoreResult<()> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            pg.execute(pgsql::console::delete(id.as_str()))?;
            return Ok(());
        }
    };
    tx.prepare_cached("DELETE FROM console_sessions WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

/// Ends every console session (the admin token changed).
pub fn delete_all(tx: &Tx) -> StoreResult<()> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            pg.execute(pgsql::console::delete_all())?;
            return Ok(());
        }
    };
    tx.prepare_cached("DELETE FROM console_sessions")?
        .execute([])?;
    Ok(())
}

/// Deletes up to `limit` console sessions that expired before `before`.
pub fn purge(tx: &Tx, before: i64, limit: i64) -> StoreResult<i64> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let n = pg.execute(pgsql::console::delete_expired(before, limit))?;
            return Ok(n as i64);
        }
    };
    let n = tx
        .prepare_cached(
            "DELETE FROM console_sessions WHERE id IN (
                SELECT id FROM console_sessions WHERE expires_at < ?1 LIMIT ?2)",
        )?
        .execute((before, limit))?;
    Ok(n as i64)
}
