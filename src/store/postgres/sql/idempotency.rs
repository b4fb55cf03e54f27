//! Idempotency keys (`src/store/idempotency.rs`).

use crate::{Row, Rows, Statement};

/// Requests with one key take turns until their transactions end.
pub fn lock(principal: &str, key: &str) -> Statement {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || ' ' || $2, 1))",
        principal,
        key
    )
}

pub fn lookup(principal: &str, key: &str) -> Rows<impl Row<String>> {
    sqlx::query!(
        "SELECT message_id FROM idempotency_keys WHERE principal = $1 AND key = $2",
        principal,
        key
    )
    .map(|r| r.message_id)
}

pub fn record(principal: &str, key: &str, message: &str, now: i64) -> Statement {
    sqlx::query!(
        "INSERT INTO idempotency_keys (principal, key, message_id, created_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (principal, key)
         DO UPDATE SET message_id = excluded.message_id, created_at = excluded.created_at",
        principal,
        key,
        message,
        now
    )
}
