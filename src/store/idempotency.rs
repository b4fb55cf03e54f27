//! Idempotency keys: (principal, key) → the message the first request stored.

use super::{StoreResult, Tx};
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
            pg.execute(
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || ' ' || $2, 1))")
                    .bind(principal)
                    .bind(key),
            )?;
            let id: Option<(String,)> = pg.fetch_optional(
                sqlx::query_as(
                    "SELECT message_id FROM idempotency_keys WHERE principal = $1 AND key = $2",
                )
                .bind(principal)
                .bind(key),
            )?;
            return Ok(id.map(|(id,)| MessageId::from_db(id)));
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
            pg.execute(
                sqlx::query(
                    "INSERT INTO idempotency_keys (principal, key, message_id, created_at)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (principal, key)
                     DO UPDATE SET message_id = excluded.message_id, created_at = excluded.created_at",
                )
                .bind(principal)
                .bind(key)
                .bind(message)
                .bind(now),
            )?;
            return Ok(());
        }
    };
    tx.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys (principal, key, message_id, created_at) VALUES (?, ?, ?, ?)",
    )?
    .execute((principal, key, message, now))?;
    Ok(())
}
