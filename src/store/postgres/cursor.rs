//! The global cursor of messages on PostgreSQL: `messages.pos`, numbered
//! after commit (why and how: `migrations/postgres/0001_init.sql`, at the
//! messages table).
//!
//! Outbox pages and app streams read `pos > cursor ORDER BY pos`; an app
//! that reconnects to another relay resumes from the same cursor with
//! nothing missed or repeated, because positions become visible only in
//! increasing order.

use super::error;
use crate::store::StoreResult;
use sqlx::PgPool;

/// Where a stamp announces new positions: the payload is the highest one.
pub const CHANNEL: &str = "clawrelay_messages";
/// Rows numbered per transaction, so a backlog never makes one huge stamp.
const BATCH: i64 = 10_000;

/// Gives a position to every committed message without one, in `seq` order,
/// and notifies [`CHANNEL`] when it numbered any. Returns how many it
/// numbered.
pub async fn stamp(pool: &PgPool) -> StoreResult<u64> {
    let mut total = 0;
    loop {
        let n = stamp_batch(pool).await?;
        total += n;
        if n < BATCH as u64 {
            return Ok(total);
        }
    }
}

async fn stamp_batch(pool: &PgPool) -> StoreResult<u64> {
    let mut tx = pool.begin().await.map_err(error)?;
    // Taken before the statements below take their snapshots, so this stamp
    // sees every row the previous one numbered.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(super::leader::keys::STAMP)
        .execute(&mut *tx)
        .await
        .map_err(error)?;
    let due: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM messages WHERE pos IS NULL ORDER BY seq LIMIT $1")
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await
            .map_err(error)?;
    if due.is_empty() {
        tx.rollback().await.map_err(error)?;
        return Ok(0);
    }
    let n = due.len() as i64;
    // One block of n numbers from the sequence (only stamps draw from it,
    // and they take turns).
    let last: i64 =
        sqlx::query_scalar("SELECT setval('messages_pos', nextval('messages_pos') + $1 - 1)")
            .bind(n)
            .fetch_one(&mut *tx)
            .await
            .map_err(error)?;
    let positions: Vec<i64> = (last - n + 1..=last).collect();
    sqlx::query(
        "UPDATE messages m SET pos = d.pos
         FROM UNNEST($1::bigint[], $2::bigint[]) AS d (seq, pos)
         WHERE m.seq = d.seq",
    )
    .bind(&due)
    .bind(&positions)
    .execute(&mut *tx)
    .await
    .map_err(error)?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(last.to_string())
        .execute(&mut *tx)
        .await
        .map_err(error)?;
    tx.commit().await.map_err(error)?;
    Ok(n as u64)
}
