//! Idempotency keys: (principal, key) → the message the first request stored.

use super::{StoreResult, Tx};
use crate::ids::{IdempotencyKey, MessageId};
use rusqlite::OptionalExtension;

pub fn lookup(tx: &Tx, principal: &str, key: &IdempotencyKey) -> StoreResult<Option<MessageId>> {
    let tx = tx.sqlite()?;
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
    let tx = tx.sqlite()?;
    tx.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys (principal, key, message_id, created_at) VALUES (?, ?, ?, ?)",
    )?
    .execute((principal, key, message, now))?;
    Ok(())
}
