//! The delivery queue (see the `deliveries` table in the migration for the
//! model: one ready row per conversation, later rows queued behind it).

use super::{Reader, StoreResult, Tx};
use crate::ids::{AppId, ClientId, ConversationId, MessageId};
use crate::model::{Delivery, DeliveryState, Direction, Message};
use rusqlite::OptionalExtension;

/// Queues the delivery of inbound message `seq`: ready if its conversation has
/// nothing in flight, else queued behind the conversation's open rows.
/// Returns whether it is ready (claimable now). One statement.
pub fn enqueue(
    tx: &Tx,
    seq: i64,
    conversation: &ConversationId,
    client: Option<&ClientId>,
    now: i64,
) -> StoreResult<bool> {
    let tx = tx.sqlite()?;
    let state: String = tx
        .prepare_cached(
            "INSERT INTO deliveries
                (message_seq, conversation_id, client_id, state, attempts, visible_at, created_at, updated_at)
             VALUES (?1, ?2, ?3,
                     CASE WHEN EXISTS (SELECT 1 FROM deliveries
                                       WHERE conversation_id = ?2 AND state = 'ready')
                          THEN 'queued' ELSE 'ready' END,
                     0, ?4, ?4, ?4)
             RETURNING state",
        )?
        .query_row((seq, conversation, client, now), |r| r.get(0))?;
    Ok(state == "ready")
}

fn has_ready(tx: &Tx, conversation: &ConversationId) -> StoreResult<bool> {
    let tx = tx.sqlite()?;
    let found = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM deliveries WHERE conversation_id = ? AND state = 'ready')",
        )?
        .query_row([conversation], |r| r.get(0))?;
    Ok(found)
}

/// A due ready row, as the claim sees it.
pub struct Due {
    pub seq: i64,
    pub conversation_id: ConversationId,
    pub attempts: i64,
}

/// Up to `limit` of the client's ready rows that are due, oldest first.
pub fn due(tx: &Tx, client: &ClientId, now: i64, limit: i64) -> StoreResult<Vec<Due>> {
    let tx = tx.sqlite()?;
    let mut stmt = tx.prepare_cached(
        "SELECT message_seq, conversation_id, attempts FROM deliveries
         WHERE client_id = ?1 AND state = 'ready' AND visible_at <= ?2
         ORDER BY visible_at, message_seq LIMIT ?3",
    )?;
    let rows = stmt.query_map((client, now, limit), |r| {
        Ok(Due {
            seq: r.get(0)?,
            conversation_id: ConversationId::from_db(r.get(1)?),
            attempts: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Leases ready rows until `until`, counting one more attempt each. `owner`
/// is the WebSocket session holding the leases (None for an HTTP poll).
pub fn lease(tx: &Tx, seqs: &[i64], until: i64, now: i64, owner: Option<&str>) -> StoreResult<()> {
    let tx = tx.sqlite()?;
    tx.prepare_cached(
        "UPDATE deliveries SET attempts = attempts + 1, visible_at = ?2, updated_at = ?3, lease_owner = ?4
         WHERE message_seq IN (SELECT value FROM json_each(?1))",
    )?
    .execute((json_list(seqs), until, now, owner))?;
    Ok(())
}

fn json_list(seqs: &[i64]) -> String {
    serde_json::to_string(seqs).unwrap_or_else(|_| "[]".to_owned())
}

pub fn mark_dead(tx: &Tx, seq: i64, now: i64) -> StoreResult<()> {
    let tx = tx.sqlite()?;
    tx.prepare_cached(
        "UPDATE deliveries SET state = 'dead', updated_at = ?2, lease_owner = NULL WHERE message_seq = ?1",
    )?
    .execute((seq, now))?;
    Ok(())
}

/// Makes the oldest queued row of a conversation ready, if nothing of that
/// conversation is ready. Returns the client it belongs to when one was
/// promoted. One statement.
pub fn promote_next(
    tx: &Tx,
    conversation: &ConversationId,
    now: i64,
) -> StoreResult<Option<Option<ClientId>>> {
    let tx = tx.sqlite()?;
    let promoted = tx
        .prepare_cached(
            "UPDATE deliveries SET state = 'ready', updated_at = ?2
             WHERE message_seq = (SELECT message_seq FROM deliveries
                                  WHERE conversation_id = ?1 AND state = 'queued'
                                  ORDER BY message_seq LIMIT 1)
               AND NOT EXISTS (SELECT 1 FROM deliveries WHERE conversation_id = ?1 AND state = 'ready')
             RETURNING client_id",
        )?
        .query_row((conversation, now), |r| r.get::<_, Option<String>>(0))
        .optional()?;
    Ok(promoted.map(|c| c.map(ClientId::from_db)))
}

/// Ends the leases a WebSocket session holds: its unacked deliveries are due
/// again now. Returns how many.
pub fn release_owner(tx: &Tx, owner: &str, now: i64) -> StoreResult<u64> {
    let tx = tx.sqlite()?;
    let n = tx
        .prepare_cached(
            "UPDATE deliveries SET visible_at = MIN(visible_at, ?2), lease_owner = NULL, updated_at = ?2
             WHERE lease_owner = ?1",
        )?
        .execute((owner, now))?;
    Ok(n as u64)
}

/// Ends every session-held lease: at start, when no socket of a previous run
/// can be alive.
pub fn release_all_owned(tx: &Tx, now: i64) -> StoreResult<u64> {
    let tx = tx.sqlite()?;
    let n = tx
        .prepare_cached(
            "UPDATE deliveries SET visible_at = MIN(visible_at, ?1), lease_owner = NULL, updated_at = ?1
             WHERE lease_owner IS NOT NULL",
        )?
        .execute([now])?;
    Ok(n as u64)
}

/// Deliveries a WebSocket session holds under a lease that has not ended.
pub async fn count_owned(db: &Reader, owner: &str, now: i64) -> StoreResult<i64> {
    let ex = db.sqlite()?;
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
pub async fn oldest_due(db: &Reader, client: &ClientId, now: i64) -> StoreResult<Option<i64>> {
    let ex = db.sqlite()?;
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
pub async fn earliest_ready(db: &Reader, client: &ClientId) -> StoreResult<Option<i64>> {
    let ex = db.sqlite()?;
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
pub fn next_visible_at(tx: &Tx, client: &ClientId, now: i64) -> StoreResult<Option<i64>> {
    let tx = tx.sqlite()?;
    let at = tx
        .prepare_cached(
            "SELECT visible_at FROM deliveries
             WHERE client_id = ?1 AND state = 'ready' AND visible_at > ?2
             ORDER BY visible_at LIMIT 1",
        )?
        .query_row((client, now), |r| r.get(0))
        .optional()?;
    Ok(at)
}

/// Acks the client's claimed delivery of message `id`. Returns its
/// conversation when something was acked.
pub fn ack(
    tx: &Tx,
    client: &ClientId,
    id: &MessageId,
    now: i64,
) -> StoreResult<Option<ConversationId>> {
    let tx = tx.sqlite()?;
    let conversation = tx
        .prepare_cached(
            "UPDATE deliveries SET state = 'acked', updated_at = ?3, lease_owner = NULL
             WHERE message_seq = (SELECT seq FROM messages WHERE id = ?1)
               AND client_id = ?2 AND state = 'ready' AND attempts > 0
             RETURNING conversation_id",
        )?
        .query_row((id, client, now), |r| r.get(0))
        .optional()?;
    Ok(conversation.map(ConversationId::from_db))
}

/// Acks whatever of the conversation the client has claimed (the implicit
/// ack of `/send`). Returns how many rows were acked.
pub fn ack_conversation(
    tx: &Tx,
    client: &ClientId,
    conversation: &ConversationId,
    now: i64,
) -> StoreResult<u64> {
    let tx = tx.sqlite()?;
    let done = tx
        .prepare_cached(
            "UPDATE deliveries SET state = 'acked', updated_at = ?3, lease_owner = NULL
             WHERE conversation_id = ?1 AND state = 'ready' AND client_id = ?2 AND attempts > 0",
        )?
        .execute((conversation, client, now))?;
    Ok(done as u64)
}

/// Hands every unassigned open delivery to `client`. Returns how many moved.
pub fn adopt_unassigned(tx: &Tx, client: &ClientId, now: i64) -> StoreResult<u64> {
    let tx = tx.sqlite()?;
    let moved = tx
        .prepare_cached(
            "UPDATE deliveries SET client_id = ?1, updated_at = ?2
             WHERE client_id IS NULL AND state IN ('ready', 'queued')",
        )?
        .execute((client, now))?;
    Ok(moved as u64)
}

/// Moves a conversation's open deliveries to `to` (None: unassigned). A lease
/// held by the previous client ends now, so the new one gets the row at once.
pub fn move_conversation(
    tx: &Tx,
    conversation: &ConversationId,
    to: Option<&ClientId>,
    now: i64,
) -> StoreResult<()> {
    let tx = tx.sqlite()?;
    tx.prepare_cached(
        "UPDATE deliveries SET client_id = ?2, visible_at = MIN(visible_at, ?3), updated_at = ?3,
                lease_owner = NULL
         WHERE conversation_id = ?1 AND state = 'ready'",
    )?
    .execute((conversation, to, now))?;
    tx.prepare_cached(
        "UPDATE deliveries SET client_id = ?2, updated_at = ?3
         WHERE conversation_id = ?1 AND state = 'queued'",
    )?
    .execute((conversation, to, now))?;
    Ok(())
}

/// Conversations with open deliveries held by `client` (every conversation
/// with a queued row also has a ready one, so the ready rows name them all).
pub fn open_conversations_of(tx: &Tx, client: &ClientId) -> StoreResult<Vec<ConversationId>> {
    let tx = tx.sqlite()?;
    let mut stmt = tx.prepare_cached(
        "SELECT conversation_id FROM deliveries WHERE client_id = ? AND state = 'ready'",
    )?;
    let ids = stmt.query_map([client], |r| r.get(0).map(ConversationId::from_db))?;
    Ok(ids.collect::<Result<_, _>>()?)
}

/// Puts a dead delivery back in the queue with a fresh attempt count, for the
/// conversation's current client. Returns the conversation and whether the
/// row is ready now, or None when `seq` is not a dead delivery.
pub fn requeue(tx: &Tx, seq: i64, now: i64) -> StoreResult<Option<(ConversationId, bool)>> {
    let conn = tx.sqlite()?;
    let conversation = conn
        .prepare_cached(
            "SELECT conversation_id FROM deliveries WHERE message_seq = ? AND state = 'dead'",
        )?
        .query_row([seq], |r| r.get(0))
        .optional()?;
    let Some(conversation) = conversation.map(ConversationId::from_db) else {
        return Ok(None);
    };
    let ready = !has_ready(tx, &conversation)?;
    let state = if ready { "ready" } else { "queued" };
    conn.prepare_cached(
        "UPDATE deliveries
         SET state = ?2, attempts = 0, visible_at = ?3, updated_at = ?3,
             client_id = (SELECT client_id FROM conversations WHERE id = deliveries.conversation_id)
         WHERE message_seq = ?1",
    )?
    .execute((seq, state, now))?;
    Ok(Some((conversation, ready)))
}

/// The messages of claimed rows, in claim order, with their attempt numbers.
/// One statement.
pub fn claimed_messages(tx: &Tx, seqs: &[i64]) -> StoreResult<Vec<Message>> {
    let tx = tx.sqlite()?;
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    let mut stmt = tx.prepare_cached(
        "SELECT m.id, m.conversation_id, d.client_id, m.app_id, m.sender, m.recipient,
                m.text, m.created_at, d.attempts, m.attachments
         FROM json_each(?1) AS j
         JOIN deliveries d ON d.message_seq = j.value
         JOIN messages m ON m.seq = d.message_seq
         ORDER BY j.key",
    )?;
    let rows = stmt.query_map([json_list(seqs)], |r| {
        Ok(Message {
            id: MessageId::from_db(r.get(0)?),
            conversation_id: ConversationId::from_db(r.get(1)?),
            client_id: r.get::<_, Option<String>>(2)?.map(ClientId::from_db),
            app_id: AppId::from_db(r.get(3)?),
            direction: Direction::Inbound,
            from: r.get(4)?,
            to: r.get(5)?,
            text: r.get(6)?,
            timestamp: r.get(7)?,
            attempt: Some(r.get(8)?),
            reply_id: None,
            attachments: super::attachments::from_column(r.get::<_, Option<String>>(9)?.as_deref()),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
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
pub async fn list(db: &Reader, f: Filter<'_>, now: i64) -> StoreResult<Vec<(i64, Delivery)>> {
    let ex = db.sqlite()?;
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
                  m.id, m.client_id AS message_client_id, m.app_id, m.sender, m.recipient, m.text,
                  m.attachments
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
                    attachments: super::attachments::from_column(r.attachments.as_deref()),
                },
            };
            (r.message_seq, delivery)
        })
        .collect())
}
