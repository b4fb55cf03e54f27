//! Idempotency keys: (principal, key) → the message the first request stored.

use super::StoreResult;
use crate::ids::{IdempotencyKey, MessageId};
use sqlx::SqliteConnection;

pub async fn lookup(
    tx: &mut SqliteConnection,
    principal: &str,
    key: &IdempotencyKey,
) -> StoreResult<Option<MessageId>> {
    let id = sqlx::query_scalar!(
        "SELECT message_id FROM idempotency_keys WHERE principal = ? AND key = ?",
        principal,
        key
    )
    .fetch_optional(&mut *tx)
    .await?;
    Ok(id.map(MessageId::from_db))
}

pub async fn record(
    tx: &mut SqliteConnection,
    principal: &str,
    key: &IdempotencyKey,
    message: &MessageId,
    now: i64,
) -> StoreResult<()> {
    sqlx::query!(
        "INSERT OR REPLACE INTO idempotency_keys (principal, key, message_id, created_at) VALUES (?, ?, ?, ?)",
        principal,
        key,
        message,
        now
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}
