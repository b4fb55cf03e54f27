//! Leadership of the background tasks (`src/store/postgres/leader.rs`).

use crate::{Row, Rows};

/// Takes the session-level advisory lock `key` if no other session holds
/// it; says whether it did.
pub fn try_lock(key: i64) -> Rows<impl Row<bool>> {
    sqlx::query!(r#"SELECT pg_try_advisory_lock($1) AS "got!""#, key).map(|r| r.got)
}

/// Whether this session holds the advisory lock `key`.
pub fn holds(key: i64) -> Rows<impl Row<bool>> {
    sqlx::query!(
        r#"SELECT EXISTS (SELECT 1 FROM pg_locks
                          WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
                            AND objsubid = 1 AND (classid::bigint << 32) | objid::bigint = $1)
               AS "held!""#,
        key
    )
    .map(|r| r.held)
}

/// Gives the session-level advisory lock `key` up.
pub fn unlock(key: i64) -> Rows<impl Row<bool>> {
    sqlx::query!(r#"SELECT pg_advisory_unlock($1) AS "released!""#, key).map(|r| r.released)
}
