//! The delivery queue on PostgreSQL: the statements of `store::deliveries`
//! the claim path needs, where several relays claim at once.
//!
//! The model is SQLite's (one ready row per conversation, the rest queued
//! behind it; a lease moves `visible_at` past its end). What changes is
//! concurrency: a claim locks the rows it takes with `FOR UPDATE SKIP
//! LOCKED`, so relays claiming for the same agent take different rows
//! instead of waiting for each other, and a row another relay has just
//! leased is re-checked against its new `visible_at` and left alone. The
//! one-ready-row rule is enforced by a unique index
//! (`deliveries_ready_by_conversation`), and writers of a conversation take
//! turns on its row (`lock_conversation`).

use super::error;
use crate::ids::{ClientId, ConversationId, MessageId};
use crate::store::deliveries::Due;
use crate::store::StoreResult;
use sqlx::PgConnection;

/// Locks a conversation's row until the transaction ends, so that the
/// relays writing to one conversation (enqueue, ack, promote) take turns and
/// its messages commit in `seq` order.
pub async fn lock_conversation(
    conn: &mut PgConnection,
    conversation: &ConversationId,
) -> StoreResult<bool> {
    lock_row(
        conn,
        conversation,
        "SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE",
    )
    .await
}

/// Locks a conversation's row like `lock_conversation` if no other
/// transaction holds it; returns false at once when one does (or when the
/// conversation does not exist) instead of waiting.
///
/// A claim needs a conversation's lock while it already holds the rows it
/// took: to let a dead row's successor through. Every other writer takes
/// the conversation first and the row second (an ack, an enqueue), so a
/// claim that waited here could deadlock with an ack of the same row.
pub async fn try_lock_conversation(
    conn: &mut PgConnection,
    conversation: &ConversationId,
) -> StoreResult<bool> {
    lock_row(
        conn,
        conversation,
        "SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE SKIP LOCKED",
    )
    .await
}

async fn lock_row(
    conn: &mut PgConnection,
    conversation: &ConversationId,
    sql: &'static str,
) -> StoreResult<bool> {
    let found = sqlx::query(sql)
        .bind(conversation.as_str())
        .fetch_optional(conn)
        .await
        .map_err(error)?;
    Ok(found.is_some())
}

/// What became of a due row out of attempts that a claim tried to retire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retired {
    /// Dead; `promoted` is the client of the conversation's next message
    /// when one became ready (`Some(None)` when that message has no client).
    Dead { promoted: Option<Option<ClientId>> },
    /// Its conversation is busy (another relay is writing to it): the row
    /// stays as it is, neither leased nor dead, and the next claim retries.
    Busy,
}

/// Retires row `due` (locked by this claim, out of attempts): marks it dead
/// and makes the next message of its conversation ready, under the
/// conversation's lock so that an enqueue cannot queue a message behind it
/// meanwhile. When another transaction holds that lock the row is left for
/// a later claim (see `try_lock_conversation`).
pub async fn retire(conn: &mut PgConnection, due: &Due, now: i64) -> StoreResult<Retired> {
    if !try_lock_conversation(conn, &due.conversation_id).await? {
        return Ok(Retired::Busy);
    }
    mark_dead(conn, due.seq, now).await?;
    let promoted = promote_next(conn, &due.conversation_id, now).await?;
    Ok(Retired::Dead { promoted })
}

/// Queues the delivery of inbound message `seq`: ready if its conversation
/// has nothing in flight, else queued. Returns whether it is ready. The
/// caller holds the conversation's lock.
pub async fn enqueue(
    conn: &mut PgConnection,
    seq: i64,
    conversation: &ConversationId,
    client: Option<&ClientId>,
    now: i64,
) -> StoreResult<bool> {
    let state: String = sqlx::query_scalar(
        "INSERT INTO deliveries
            (message_seq, conversation_id, client_id, state, attempts, visible_at, created_at, updated_at)
         VALUES ($1, $2, $3,
                 CASE WHEN EXISTS (SELECT 1 FROM deliveries
                                   WHERE conversation_id = $2 AND state = 'ready')
                      THEN 'queued' ELSE 'ready' END,
                 0, $4, $4, $4)
         RETURNING state",
    )
    .bind(seq)
    .bind(conversation.as_str())
    .bind(client.map(ClientId::as_str))
    .bind(now)
    .fetch_one(conn)
    .await
    .map_err(error)?;
    Ok(state == "ready")
}

/// Up to `limit` of the client's due ready rows, oldest first, locked for
/// this transaction; rows another relay is claiming right now are skipped.
pub async fn due(
    conn: &mut PgConnection,
    client: &ClientId,
    now: i64,
    limit: i64,
) -> StoreResult<Vec<Due>> {
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT message_seq, conversation_id, attempts FROM deliveries
         WHERE client_id = $1 AND state = 'ready' AND visible_at <= $2
         ORDER BY visible_at, message_seq LIMIT $3
         FOR UPDATE SKIP LOCKED",
    )
    .bind(client.as_str())
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(error)?;
    Ok(rows
        .into_iter()
        .map(|(seq, conversation, attempts)| Due {
            seq,
            conversation_id: ConversationId::from_db(conversation),
            attempts,
        })
        .collect())
}

/// Leases rows until `until`, counting one more attempt each.
pub async fn lease(
    conn: &mut PgConnection,
    seqs: &[i64],
    until: i64,
    now: i64,
    owner: Option<&str>,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE deliveries SET attempts = attempts + 1, visible_at = $2, updated_at = $3, lease_owner = $4
         WHERE message_seq = ANY($1)",
    )
    .bind(seqs)
    .bind(until)
    .bind(now)
    .bind(owner)
    .execute(conn)
    .await
    .map_err(error)?;
    Ok(())
}

pub async fn mark_dead(conn: &mut PgConnection, seq: i64, now: i64) -> StoreResult<()> {
    sqlx::query(
        "UPDATE deliveries SET state = 'dead', updated_at = $2, lease_owner = NULL WHERE message_seq = $1",
    )
    .bind(seq)
    .bind(now)
    .execute(conn)
    .await
    .map_err(error)?;
    Ok(())
}

/// Makes the oldest queued row of a conversation ready, if nothing of it is
/// ready. Returns the client it belongs to when one was promoted.
pub async fn promote_next(
    conn: &mut PgConnection,
    conversation: &ConversationId,
    now: i64,
) -> StoreResult<Option<Option<ClientId>>> {
    let promoted: Option<Option<String>> = sqlx::query_scalar(
        "UPDATE deliveries SET state = 'ready', updated_at = $2
         WHERE message_seq = (SELECT message_seq FROM deliveries
                              WHERE conversation_id = $1 AND state = 'queued'
                              ORDER BY message_seq LIMIT 1)
           AND NOT EXISTS (SELECT 1 FROM deliveries WHERE conversation_id = $1 AND state = 'ready')
         RETURNING client_id",
    )
    .bind(conversation.as_str())
    .bind(now)
    .fetch_optional(conn)
    .await
    .map_err(error)?;
    Ok(promoted.map(|c| c.map(ClientId::from_db)))
}

/// Acks the client's claimed delivery of message `id`. Returns its
/// conversation when something was acked (not when another relay acked it
/// first). Like every writer of a conversation, it locks the conversation
/// before it changes the row.
pub async fn ack(
    conn: &mut PgConnection,
    client: &ClientId,
    id: &MessageId,
    now: i64,
) -> StoreResult<Option<ConversationId>> {
    let claimed: Option<(i64, String)> = sqlx::query_as(
        "SELECT d.message_seq, d.conversation_id FROM deliveries d JOIN messages m ON m.seq = d.message_seq
         WHERE m.id = $1 AND d.client_id = $2 AND d.state = 'ready' AND d.attempts > 0",
    )
    .bind(id.as_str())
    .bind(client.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(error)?;
    let Some((seq, conversation)) = claimed else {
        return Ok(None);
    };
    let conversation = ConversationId::from_db(conversation);
    lock_conversation(conn, &conversation).await?;
    // Re-checked under the lock: another relay may have acked it meanwhile.
    let done = sqlx::query(
        "UPDATE deliveries SET state = 'acked', updated_at = $3, lease_owner = NULL
         WHERE message_seq = $1 AND client_id = $2 AND state = 'ready' AND attempts > 0",
    )
    .bind(seq)
    .bind(client.as_str())
    .bind(now)
    .execute(conn)
    .await
    .map_err(error)?;
    Ok((done.rows_affected() == 1).then_some(conversation))
}

/// The earliest time one of the client's leased rows becomes due again.
pub async fn next_visible_at(
    conn: &mut PgConnection,
    client: &ClientId,
    now: i64,
) -> StoreResult<Option<i64>> {
    sqlx::query_scalar(
        "SELECT visible_at FROM deliveries
         WHERE client_id = $1 AND state = 'ready' AND visible_at > $2
         ORDER BY visible_at LIMIT 1",
    )
    .bind(client.as_str())
    .bind(now)
    .fetch_optional(conn)
    .await
    .map_err(error)
}
