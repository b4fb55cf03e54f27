//! Admin console sessions (`src/store/console.rs`).

use crate::{Row, Rows, Statement};

pub fn insert(id: &str, token_hash: &str, now: i64, expires_at: i64) -> Statement {
    sqlx::query!(
        "INSERT INTO console_sessions (id, token_hash, created_at, expires_at)
         VALUES ($1, $2, $3, $4)",
        id,
        token_hash,
        now,
        expires_at
    )
}

/// A live console session's token hash and expiry.
pub fn credential(id: &str, now: i64) -> Rows<impl Row<(String, i64)>> {
    sqlx::query!(
        "SELECT token_hash, expires_at FROM console_sessions WHERE id = $1 AND expires_at > $2",
        id,
        now
    )
    .map(|r| (r.token_hash, r.expires_at))
}

/// Moves a live session's end to `expires_at`, at most `max_ms` after its
/// login; returns the new end.
pub fn refresh(id: &str, now: i64, expires_at: i64, max_ms: i64) -> Rows<impl Row<i64>> {
    sqlx::query!(
        "UPDATE console_sessions SET expires_at = LEAST($3, created_at + $4)
         WHERE id = $1 AND expires_at > $2
         RETURNING expires_at",
        id,
        now,
        expires_at,
        max_ms
    )
    .map(|r| r.expires_at)
}

pub fn delete(id: &str) -> Statement {
    sqlx::query!("DELETE FROM console_sessions WHERE id = $1", id)
}

pub fn delete_all() -> Statement {
    sqlx::query!("DELETE FROM console_sessions")
}

/// Deletes up to `limit` console sessions that expired before `before`.
pub fn delete_expired(before: i64, limit: i64) -> Statement {
    sqlx::query!(
        "DELETE FROM console_sessions WHERE id IN (
            SELECT id FROM console_sessions WHERE expires_at < $1 LIMIT $2)",
        before,
        limit
    )
}
