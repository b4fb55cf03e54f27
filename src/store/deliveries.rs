//! The delivery queue (see the `deliveries` table in the migration for the
//! model: one ready row per conversation, later rows queued behind it).

use super::StoreResult;
use crate::ids::{AppId, ClientId, ConversationId, MessageId};
use crate::model::{Delivery, DeliveryState, Direction, Message};
use sqlx::{SqliteConnection, SqliteExecutor};

/// Queues the delivery of inbound message `seq`: ready if its conversation has
/// nothing in flight, else queued behind the conversation's open rows.
/// Returns whether it is ready (claimable now). One statement.
pub async fn enqueue(
    tx: &mut SqliteConnection,
    seq: i64,
    conversation: &ConversationId,
    client: Option<&ClientId>,
    now: i64,
) -> StoreResult<bool> {
    let state = sqlx::query_scalar!(
        r#"INSERT INTO deliveries
              (message_seq, conversation_id, client_id, state, attempts, visible_at, created_at, updated_at)
           VALUES (?1, ?2, ?3,
                   CASE WHEN EXISTS (SELECT 1 FROM deliveries
                                     WHERE conversation_id = ?2 AND state = 'ready')
                        THEN 'queued' ELSE 'ready' END,
                   0, ?4, ?4, ?4)
           RETURNING state"#,
        seq,
        conversation,
        client,
        now,
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(state == "ready")
}

async fn has_ready(
    ex: impl SqliteExecutor<'_>,
    conversation: &ConversationId,
) -> StoreResult<bool> {
    let found = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM deliveries WHERE conversation_id = ? AND state = 'ready') AS "found!: bool""#,
        conversation
    )
    .fetch_one(ex)
    .await?;
    Ok(found)
}

/// A due ready row, as the claim sees it.
pub struct Due {
    pub seq: i64,
    pub conversation_id: ConversationId,
    pub attempts: i64,
}

/// Up to `limit` of the client's ready rows that are due, oldest first.
pub async fn due(
    tx: &mut SqliteConnection,
    client: &ClientId,
    now: i64,
    limit: i64,
) -> StoreResult<Vec<Due>> {
    let rows = sqlx::query!(
        r#"SELECT message_seq AS "message_seq!", conversation_id, attempts FROM deliveries
         WHERE client_id = ?1 AND state = 'ready' AND visible_at <= ?2
         ORDER BY visible_at, message_seq LIMIT ?3"#,
        client,
        now,
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Due {
            seq: r.message_seq,
            conversation_id: ConversationId::from_db(r.conversation_id),
            attempts: r.attempts,
        })
        .collect())
}

/// Leases ready rows until `until`, counting one more attempt each. `owner`
/// is the WebSocket session holding the leases (None for an HTTP poll).
pub async fn lease(
    tx: &mut SqliteConnection,
    seqs: &[i64],
    until: i64,
    now: i64,
    owner: Option<&str>,
) -> StoreResult<()> {
    let seqs = json_list(seqs);
    sqlx::query!(
        "UPDATE deliveries SET attempts = attempts + 1, visible_at = ?2, updated_at = ?3, lease_owner = ?4
         WHERE message_seq IN (SELECT value FROM json_each(?1))",
        seqs,
        until,
        now,
        owner
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn json_list(seqs: &[i64]) -> String {
    serde_json::to_string(seqs).unwrap_or_else(|_| "[]".to_owned())
}

pub async fn mark_dead(tx: &mut SqliteConnection, seq: i64, now: i64) -> StoreResult<()> {
    sqlx::query!(
        "UPDATE deliveries SET state = 'dead', updated_at = ?2, lease_owner = NULL WHERE message_seq = ?1",
        seq,
        now
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Makes the oldest queued row of a conversation ready, if nothing of that
/// conversation is ready. Returns the client it belongs to when one was
/// promoted. One statement.
pub async fn promote_next(
    tx: &mut SqliteConnection,
    conversation: &ConversationId,
    now: i64,
) -> StoreResult<Option<Option<ClientId>>> {
    let promoted = sqlx::query!(
        "UPDATE deliveries SET state = 'ready', updated_at = ?2
         WHERE message_seq = (SELECT message_seq FROM deliveries
                              WHERE conversation_id = ?1 AND state = 'queued'
                              ORDER BY message_seq LIMIT 1)
           AND NOT EXISTS (SELECT 1 FROM deliveries WHERE conversation_id = ?1 AND state = 'ready')
         RETURNING client_id",
        conversation,
        now
    )
    .fetch_optional(&mut *tx)
    .await?;
    Ok(promoted.map(|r| r.client_id.map(ClientId::from_db)))
}

/// Ends the leases a WebSocket session holds: its unacked deliveries are due
/// again now. Returns how many.
pub async fn release_owner(tx: &mut SqliteConnection, owner: &str, now: i64) -> StoreResult<u64> {
    let n = sqlx::query!(
        "UPDATE deliveries SET visible_at = MIN(visible_at, ?2), lease_owner = NULL, updated_at = ?2
         WHERE lease_owner = ?1",
        owner,
        now
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(n)
}

/// Ends every session-held lease: at start, when no socket of a previous run
/// can be alive.
pub async fn release_all_owned(tx: &mut SqliteConnection, now: i64) -> StoreResult<u64> {
    let n = sqlx::query!(
        "UPDATE deliveries SET visible_at = MIN(visible_at, ?1), lease_owner = NULL, updated_at = ?1
         WHERE lease_owner IS NOT NULL",
        now
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(n)
}

/// Deliveries a WebSocket session holds under a lease that has not ended.
pub async fn count_owned(ex: impl SqliteExecutor<'_>, owner: &str, now: i64) -> StoreResult<i64> {
    let n = sqlx::query_scalar!(
        r#"SELECT COUNT(*) AS "n!: i64" FROM deliveries
           WHERE lease_owner = ?1 AND state = 'ready' AND visible_at > ?2"#,
        owner,
        now
    )
    .fetch_one(ex)
    .await?;
    Ok(n)
}

/// When the client's oldest due, unclaimed delivery became due (for the
/// oldest-pending gauge): the first entry of its claim range.
pub async fn oldest_due(
    ex: impl SqliteExecutor<'_>,
    client: &ClientId,
    now: i64,
) -> StoreResult<Option<i64>> {
    let at = sqlx::query_scalar!(
        "SELECT visible_at FROM deliveries
         WHERE client_id = ?1 AND state = 'ready' AND visible_at <= ?2
         ORDER BY visible_at LIMIT 1",
        client,
        now
    )
    .fetch_optional(ex)
    .await?;
    Ok(at)
}

/// When the client's earliest ready row is or was due: in the past, a claim
/// finds something; in the future, nothing is due before then. None: the
/// client has no ready row. One look at the claim index, no write.
pub async fn earliest_ready(
    ex: impl SqliteExecutor<'_>,
    client: &ClientId,
) -> StoreResult<Option<i64>> {
    let at = sqlx::query_scalar!(
        r#"SELECT MIN(visible_at) AS "at: i64" FROM deliveries
           WHERE client_id = ?1 AND state = 'ready'"#,
        client
    )
    .fetch_one(ex)
    .await?;
    Ok(at)
}

/// The earliest time one of the client's leased rows becomes due again.
pub async fn next_visible_at(
    ex: impl SqliteExecutor<'_>,
    client: &ClientId,
    now: i64,
) -> StoreResult<Option<i64>> {
    let at = sqlx::query_scalar!(
        "SELECT visible_at FROM deliveries
         WHERE client_id = ?1 AND state = 'ready' AND visible_at > ?2
         ORDER BY visible_at LIMIT 1",
        client,
        now
    )
    .fetch_optional(ex)
    .await?;
    Ok(at)
}

/// Acks the client's claimed delivery of message `id`. Returns its
/// conversation when something was acked.
pub async fn ack(
    tx: &mut SqliteConnection,
    client: &ClientId,
    id: &MessageId,
    now: i64,
) -> StoreResult<Option<ConversationId>> {
    let conversation = sqlx::query_scalar!(
        "UPDATE deliveries SET state = 'acked', updated_at = ?3, lease_owner = NULL
         WHERE message_seq = (SELECT seq FROM messages WHERE id = ?1)
           AND client_id = ?2 AND state = 'ready' AND attempts > 0
         RETURNING conversation_id",
        id,
        client,
        now
    )
    .fetch_optional(&mut *tx)
    .await?;
    Ok(conversation.map(ConversationId::from_db))
}

/// Acks whatever of the conversation the client has claimed (the implicit
/// ack of `/send`). Returns how many rows were acked.
pub async fn ack_conversation(
    tx: &mut SqliteConnection,
    client: &ClientId,
    conversation: &ConversationId,
    now: i64,
) -> StoreResult<u64> {
    let done = sqlx::query!(
        "UPDATE deliveries SET state = 'acked', updated_at = ?3, lease_owner = NULL
         WHERE conversation_id = ?1 AND state = 'ready' AND client_id = ?2 AND attempts > 0",
        conversation,
        client,
        now
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(done)
}

/// Hands every unassigned open delivery to `client`. Returns how many moved.
pub async fn adopt_unassigned(
    tx: &mut SqliteConnection,
    client: &ClientId,
    now: i64,
) -> StoreResult<u64> {
    let moved = sqlx::query!(
        "UPDATE deliveries SET client_id = ?1, updated_at = ?2
         WHERE client_id IS NULL AND state IN ('ready', 'queued')",
        client,
        now
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(moved)
}

/// Moves a conversation's open deliveries to `to` (None: unassigned). A lease
/// held by the previous client ends now, so the new one gets the row at once.
pub async fn move_conversation(
    tx: &mut SqliteConnection,
    conversation: &ConversationId,
    to: Option<&ClientId>,
    now: i64,
) -> StoreResult<()> {
    sqlx::query!(
        "UPDATE deliveries SET client_id = ?2, visible_at = MIN(visible_at, ?3), updated_at = ?3,
                lease_owner = NULL
         WHERE conversation_id = ?1 AND state = 'ready'",
        conversation,
        to,
        now
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE deliveries SET client_id = ?2, updated_at = ?3
         WHERE conversation_id = ?1 AND state = 'queued'",
        conversation,
        to,
        now
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Conversations with open deliveries held by `client` (every conversation
/// with a queued row also has a ready one, so the ready rows name them all).
pub async fn open_conversations_of(
    ex: impl SqliteExecutor<'_>,
    client: &ClientId,
) -> StoreResult<Vec<ConversationId>> {
    let ids = sqlx::query_scalar!(
        "SELECT conversation_id FROM deliveries WHERE client_id = ? AND state = 'ready'",
        client
    )
    .fetch_all(ex)
    .await?;
    Ok(ids.into_iter().map(ConversationId::from_db).collect())
}

/// Puts a dead delivery back in the queue with a fresh attempt count, for the
/// conversation's current client. Returns the conversation and whether the
/// row is ready now, or None when `seq` is not a dead delivery.
pub async fn requeue(
    tx: &mut SqliteConnection,
    seq: i64,
    now: i64,
) -> StoreResult<Option<(ConversationId, bool)>> {
    let conversation = sqlx::query_scalar!(
        "SELECT conversation_id FROM deliveries WHERE message_seq = ? AND state = 'dead'",
        seq
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(conversation) = conversation.map(ConversationId::from_db) else {
        return Ok(None);
    };
    let ready = !has_ready(&mut *tx, &conversation).await?;
    let state = if ready { "ready" } else { "queued" };
    sqlx::query!(
        "UPDATE deliveries
         SET state = ?2, attempts = 0, visible_at = ?3, updated_at = ?3,
             client_id = (SELECT client_id FROM conversations WHERE id = deliveries.conversation_id)
         WHERE message_seq = ?1",
        seq,
        state,
        now
    )
    .execute(&mut *tx)
    .await?;
    Ok(Some((conversation, ready)))
}

/// The messages of claimed rows, in claim order, with their attempt numbers.
/// One statement.
pub async fn claimed_messages(
    tx: &mut SqliteConnection,
    seqs: &[i64],
) -> StoreResult<Vec<Message>> {
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    let list = json_list(seqs);
    let rows = sqlx::query!(
        r#"SELECT m.id, m.conversation_id, d.client_id, m.app_id, m.sender, m.recipient,
                  m.text, m.created_at, d.attempts
           FROM json_each(?1) AS j
           JOIN deliveries d ON d.message_seq = j.value
           JOIN messages m ON m.seq = d.message_seq
           ORDER BY j.key"#,
        list
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Message {
            id: MessageId::from_db(r.id),
            conversation_id: ConversationId::from_db(r.conversation_id),
            client_id: r.client_id.map(ClientId::from_db),
            app_id: AppId::from_db(r.app_id),
            direction: Direction::Inbound,
            from: r.sender,
            to: r.recipient,
            text: r.text,
            timestamp: r.created_at,
            attempt: Some(r.attempts),
            reply_id: None,
        })
        .collect())
}

/// Admin listing filter.
pub struct Filter<'a> {
    pub state: Option<DeliveryState>,
    pub client: Option<&'a ClientId>,
    pub conversation: Option<&'a ConversationId>,
    /// Only rows with a sequence number below this (the pagination cursor).
    pub before: Option<i64>,
    pub limit: i64,
}

/// Deliveries, newest first, each with its message. Returns the rows and the
/// sequence number to pass as `before` for the next page.
pub async fn list(
    ex: impl SqliteExecutor<'_>,
    f: Filter<'_>,
    now: i64,
) -> StoreResult<Vec<(i64, Delivery)>> {
    // The stored state plus the lease decide the state an admin sees.
    let (stored, leased): (Option<&str>, Option<bool>) = match f.state {
        None => (None, None),
        Some(DeliveryState::Pending) => (Some("ready"), Some(false)),
        Some(DeliveryState::Leased) => (Some("ready"), Some(true)),
        Some(DeliveryState::Queued) => (Some("queued"), None),
        Some(DeliveryState::Acked) => (Some("acked"), None),
        Some(DeliveryState::Dead) => (Some("dead"), None),
    };
    let client = f.client;
    let conversation = f.conversation;
    let before = f.before.unwrap_or(i64::MAX);
    let rows = sqlx::query!(
        r#"SELECT d.message_seq AS "message_seq!", d.conversation_id, d.client_id, d.state, d.attempts, d.visible_at,
                  d.created_at, d.updated_at,
                  m.id, m.client_id AS message_client_id, m.app_id, m.sender, m.recipient, m.text
           FROM deliveries d JOIN messages m ON m.seq = d.message_seq
           WHERE d.message_seq < ?1
             AND (?2 IS NULL OR d.state = ?2)
             AND (?3 IS NULL OR (d.visible_at > ?4 AND d.attempts > 0) = ?3)
             AND (?5 IS NULL OR d.client_id = ?5)
             AND (?6 IS NULL OR d.conversation_id = ?6)
           ORDER BY d.message_seq DESC LIMIT ?7"#,
        before,
        stored,
        leased,
        now,
        client,
        conversation,
        f.limit
    )
    .fetch_all(ex)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let state = match r.state.as_str() {
                "queued" => DeliveryState::Queued,
                "acked" => DeliveryState::Acked,
                "dead" => DeliveryState::Dead,
                _ if r.visible_at > now && r.attempts > 0 => DeliveryState::Leased,
                _ => DeliveryState::Pending,
            };
            let conversation_id = ConversationId::from_db(r.conversation_id);
            let delivery = Delivery {
                message_id: MessageId::from_db(r.id.clone()),
                conversation_id: conversation_id.clone(),
                client_id: r.client_id.map(ClientId::from_db),
                state,
                attempts: r.attempts,
                visible_at: r.visible_at,
                created_at: r.created_at,
                updated_at: r.updated_at,
                message: Message {
                    id: MessageId::from_db(r.id),
                    conversation_id,
                    client_id: r.message_client_id.map(ClientId::from_db),
                    app_id: AppId::from_db(r.app_id),
                    direction: Direction::Inbound,
                    from: r.sender,
                    to: r.recipient,
                    text: r.text,
                    timestamp: r.created_at,
                    attempt: None,
                    reply_id: None,
                },
            };
            (r.message_seq, delivery)
        })
        .collect())
}
