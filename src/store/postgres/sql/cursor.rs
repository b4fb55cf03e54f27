//! The global cursor of messages (`src/store/postgres/cursor.rs`).

use crate::{Row, Rows, Statement};

/// Stamps take turns on the advisory lock `key` until their transactions
/// end.
pub fn lock(key: i64) -> Statement {
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", key)
}

/// Up to `limit` messages without a position, in `seq` order: seq and app.
pub fn unnumbered(limit: i64) -> Rows<impl Row<(i64, String)>> {
    sqlx::query!(
        "SELECT seq, app_id FROM messages WHERE pos IS NULL ORDER BY seq LIMIT $1",
        limit
    )
    .map(|r| (r.seq, r.app_id))
}

/// The highest position given (0 for none).
pub fn highest() -> Rows<impl Row<i64>> {
    sqlx::query!(r#"SELECT coalesce(max(pos), 0) AS "pos!" FROM messages"#).map(|r| r.pos)
}

/// Draws a block of `n` positions from the sequence; returns the last.
pub fn draw(n: i64) -> Rows<impl Row<i64>> {
    sqlx::query!(
        r#"SELECT setval('messages_pos', nextval('messages_pos') + $1 - 1) AS "last!""#,
        n
    )
    .map(|r| r.last)
}

/// Gives message `seqs[i]` position `positions[i]`.
pub fn number(seqs: &[i64], positions: &[i64]) -> Statement {
    sqlx::query!(
        "UPDATE messages m SET pos = d.pos
         FROM UNNEST($1::bigint[], $2::bigint[]) AS d (seq, pos)
         WHERE m.seq = d.seq",
        seqs,
        positions
    )
}

/// Notifies `channel` with `payload` when the transaction commits.
pub fn notify(channel: &str, payload: &str) -> Statement {
    sqlx::query!("SELECT pg_notify($1, $2)", channel, payload)
}
