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

/// Where a stamp announces new positions: the payload is the highest one,
/// then the apps whose messages it numbered, space-separated (left out when
/// they would not fit: then any app's may be new).
pub const CHANNEL: &str = "clawrelay_messages";
/// The longest payload with apps in it (NOTIFY takes just under 8000 bytes).
const MAX_PAYLOAD: usize = 4000;
/// Rows numbered per transaction, so a backlog never makes one huge stamp.
const BATCH: i64 = 10_000;

/// What a stamp did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamped {
    /// Messages it numbered.
    pub numbered: u64,
    /// The highest position given so far (by it or an earlier stamp): every
    /// message committed before the stamp began has a position up to it.
    pub highest: i64,
}

/// Gives a position to every committed message without one, in `seq` order,
/// and notifies [`CHANNEL`] when it numbered any.
pub async fn stamp(pool: &PgPool) -> StoreResult<Stamped> {
    let mut total = 0;
    loop {
        let (n, highest) = stamp_batch(pool).await?;
        total += n;
        if n < BATCH as u64 {
            return Ok(Stamped {
                numbered: total,
                highest,
            });
        }
    }
}

/// Numbers up to [`BATCH`] messages; returns how many and the highest
/// position given so far.
async fn stamp_batch(pool: &PgPool) -> StoreResult<(u64, i64)> {
    let mut tx = pool.begin().await.map_err(error)?;
    // Taken before the statements below take their snapshots, so this stamp
    // sees every row the previous one numbered.
    pgsql::cursor::lock(super::leader::keys::STAMP)
        .execute(&mut *tx)
        .await
        .map_err(error)?;
    let due = pgsql::cursor::unnumbered(BATCH)
        .fetch_all(&mut *tx)
        .await
        .map_err(error)?;
    if due.is_empty() {
        // Under the lock: every position given is committed and visible.
        let highest = pgsql::cursor::highest()
            .fetch_one(&mut *tx)
            .await
            .map_err(error)?;
        tx.rollback().await.map_err(error)?;
        return Ok((0, highest));
    }
    let n = due.len() as i64;
    // One block of n numbers from the sequence (only stamps draw from it,
    // and they take turns).
    let last = pgsql::cursor::draw(n)
        .fetch_one(&mut *tx)
        .await
        .map_err(error)?;
    let positions: Vec<i64> = (last - n + 1..=last).collect();
    let (seqs, apps): (Vec<i64>, std::collections::BTreeSet<String>) = due.into_iter().unzip();
    let mut payload = last.to_string();
    for app in &apps {
        payload.push(' ');
        payload.push_str(app);
    }
    if payload.len() > MAX_PAYLOAD {
        payload = last.to_string();
    }
    pgsql::cursor::number(&seqs, &positions)
        .execute(&mut *tx)
        .await
        .map_err(error)?;
    pgsql::cursor::notify(CHANNEL, &payload)
        .execute(&mut *tx)
        .await
        .map_err(error)?;
    tx.commit().await.map_err(error)?;
    Ok((n as u64, last))
}
