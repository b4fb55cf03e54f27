//! Idempotency keys: (principal, key) → the message the first request stored.

use super::postgres::error as pg_error;
use super::{Reader, StoreResult, Tx};
use crate::ids::{IdempotencyKey, MessageId};
use rusqlite::OptionalExtension;

/// The message a key stored. On PostgreSQL this takes the key's turn (see
/// below): call it before the conversation's locks, as the domain does.
pub fn lookup(tx: &Tx, principal: &str, key: &IdempotencyKey) -> StoreResult<Option<MessageId>> {
    let tx = match tx {
        Tx::Sqlite(c) => c,
        Tx::Postgres(pg) => {
            // Requests with one key take turns until their transactions
            // end, so a retry racing its original on another relay waits
            // and then finds what the original recorded.
            pg.execute(pgsql::idempotency::lock(principal, key.as_str()))?;
            let id = pg.fetch_optional(pgsql::idempotency::lookup(principal, key.as_str()))?;
            return Ok(id.map(MessageId::from_db));
        }
    };
    let id = tx
        .prepare_cached("SELECT message_id FROM idempotency_keys WHERE principal = ? AND key = ?")?
        .query_row((principal, key), |r| r.get(0))
        .optional()?;
    Ok(id.map(MessageId::from_db))
}

pub fn record(
    tx: &Tx,
    principal: &str,
    key: &IdempotencyKey,
    message: &MessageId,
    now: i64,
) -> StoreResult<()> {
    let tx = match tx {
        Tx::Sqlite(c) => c,
        Tx::Postgres(pg) => {
            pg.execute(pgsql::idempotency::record(
                principal,
                key.as_str(),
                message.as_str(),
                now,
            ))?;
            return Ok(());
        }
    };
    tx.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys (principal, key, message_id, created_at) VALUES (?, ?, ?, ?)",
    )?
    .execute((principal, key, message, now))?;
    Ok(())
}

/// The message a key stored, read outside a write (no turn taken): for a
/// caller that must know before it writes whether a request is a retry.
pub async fn find(
    db: &Reader,
    principal: &str,
    key: &IdempotencyKey,
) -> StoreResult<Option<MessageId>> {
    let id = match db {
        Reader::Postgres(pool) => pgsql::idempotency::lookup(principal, key.as_str())
            .fetch_optional(pool)
            .await
            .map_err(pg_error)?,
        Reader::Sqlite(pool) => {
            let key = key.as_str();
            sqlx::query_scalar!(
                "SELECT message_id FROM idempotency_keys WHERE principal = ? AND key = ?",
                principal,
                key
            )
            .fetch_optional(pool)
            .await?
        }
    };
    Ok(id.map(MessageId::from_db))
}
