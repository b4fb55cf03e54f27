//! The delivery queue (`src/store/deliveries.rs`, which says how relays
//! take turns on a conversation's rows).

use crate::{Row, Rows, Statement};

/// Queues message `seq`'s delivery: ready unless the conversation has a
/// ready row, else queued behind it. Returns the state given.
///
/// The row goes to the conversation's client as the caller's lock on the
/// conversation finds it: the conversation may have been adopted or moved
/// since the caller looked (a delivery is always its conversation's).
pub fn enqueue(seq: i64, conversation: &str, now: i64) -> Rows<impl Row<String>> {
    sqlx::query!(
        "INSERT INTO deliveries
            (message_seq, conversation_id, client_id, state, attempts, visible_at,
             created_at, updated_at)
         SELECT $1, c.id, c.client_id,
                CASE WHEN EXISTS (SELECT 1 FROM deliveries
                                  WHERE conversation_id = $2 AND state = 'ready')
                     THEN 'queued' ELSE 'ready' END,
                0, $3, $3, $3
         FROM conversations c WHERE c.id = $2
         RETURNING state",
        seq,
        conversation,
        now
    )
    .map(|r| r.state)
}

/// Locks a conversation's row until the transaction ends; a row when it
/// exists.
pub fn lock_conversation(conversation: &str) -> Rows<impl Row<bool>> {
    sqlx::query!(
        r#"SELECT true AS "locked!" FROM conversations WHERE id = $1 FOR UPDATE"#,
        conversation
    )
    .map(|r| r.locked)
}

/// Like [`lock_conversation`], but no row at once when another transaction
/// holds the lock.
pub fn try_lock_conversation(conversation: &str) -> Rows<impl Row<bool>> {
    sqlx::query!(
        r#"SELECT true AS "locked!" FROM conversations WHERE id = $1 FOR UPDATE SKIP LOCKED"#,
        conversation
    )
    .map(|r| r.locked)
}

/// Up to `limit` of the client's due ready rows, oldest first, locked;
/// rows other transactions hold are skipped. Seq, conversation, attempts.
pub fn due(client: &str, now: i64, limit: i64) -> Rows<impl Row<(i64, String, i64)>> {
    sqlx::query!(
        "SELECT message_seq, conversation_id, attempts FROM deliveries
         WHERE client_id = $1 AND state = 'ready' AND visible_at <= $2
         ORDER BY visible_at, message_seq LIMIT $3
         FOR UPDATE SKIP LOCKED",
        client,
        now,
        limit
    )
    .map(|r| (r.message_seq, r.conversation_id, r.attempts))
}

pub fn lease(seqs: &[i64], until: i64, now: i64, owner: Option<&str>) -> Statement {
    sqlx::query!(
        "UPDATE deliveries
         SET attempts = attempts + 1, visible_at = $2, updated_at = $3, lease_owner = $4,
             leased_at = $3
         WHERE message_seq = ANY($1)",
        seqs,
        until,
        now,
        owner
    )
}

pub fn mark_dead(seq: i64, now: i64) -> Statement {
    sqlx::query!(
        "UPDATE deliveries SET state = 'dead', updated_at = $2, lease_owner = NULL
         WHERE message_seq = $1",
        seq,
        now
    )
}

/// Makes the conversation's first queued row ready when none is; returns
/// that row's client.
pub fn promote(conversation: &str, now: i64) -> Rows<impl Row<Option<String>>> {
    sqlx::query!(
        "UPDATE deliveries SET state = 'ready', updated_at = $2
         WHERE message_seq = (SELECT message_seq FROM deliveries
                              WHERE conversation_id = $1 AND state = 'queued'
                              ORDER BY message_seq LIMIT 1)
           AND NOT EXISTS (SELECT 1 FROM deliveries
                           WHERE conversation_id = $1 AND state = 'ready')
         RETURNING client_id",
        conversation,
        now
    )
    .map(|r| r.client_id)
}

/// Ends the leases a WebSocket session held: its rows are due now.
pub fn release_leases(owner: &str, now: i64) -> Statement {
    sqlx::query!(
        "UPDATE deliveries
         SET visible_at = LEAST(visible_at, $2), lease_owner = NULL, updated_at = $2
         WHERE lease_owner = $1",
        owner,
        now
    )
}

pub fn count_leased_by(owner: &str, now: i64) -> Rows<impl Row<i64>> {
    sqlx::query!(
        r#"SELECT COUNT(*) AS "n!" FROM deliveries
           WHERE lease_owner = $1 AND state = 'ready' AND visible_at > $2"#,
        owner,
        now
    )
    .map(|r| r.n)
}

/// A socket's leases that have not ended, and the client's earliest ready
/// row's time (`store::deliveries::session_view`).
pub fn session_view(owner: &str, now: i64, client: &str) -> Rows<impl Row<(i64, Option<i64>)>> {
    sqlx::query!(
        r#"SELECT (SELECT COUNT(*) FROM deliveries
                   WHERE lease_owner = $1 AND state = 'ready' AND visible_at > $2) AS "held!",
                  (SELECT MIN(visible_at) FROM deliveries
                   WHERE client_id = $3 AND state = 'ready') AS earliest"#,
        owner,
        now,
        client
    )
    .map(|r| (r.held, r.earliest))
}

/// Dead letters kept (the partial index `deliveries_dead`).
pub fn count_dead() -> Rows<impl Row<i64>> {
    sqlx::query!(r#"SELECT COUNT(*) AS "n!" FROM deliveries WHERE state = 'dead'"#).map(|r| r.n)
}

/// When the client's oldest due ready row became due.
pub fn oldest_due(client: &str, now: i64) -> Rows<impl Row<i64>> {
    sqlx::query!(
        "SELECT visible_at FROM deliveries
         WHERE client_id = $1 AND state = 'ready' AND visible_at <= $2
         ORDER BY visible_at LIMIT 1",
        client,
        now
    )
    .map(|r| r.visible_at)
}

/// When the client's earliest ready row is (or was) due.
pub fn earliest_ready(client: &str) -> Rows<impl Row<Option<i64>>> {
    sqlx::query!(
        "SELECT MIN(visible_at) AS at FROM deliveries WHERE client_id = $1 AND state = 'ready'",
        client
    )
    .map(|r| r.at)
}

/// When the client's next leased ready row comes due.
pub fn next_due(client: &str, now: i64) -> Rows<impl Row<i64>> {
    sqlx::query!(
        "SELECT visible_at FROM deliveries
         WHERE client_id = $1 AND state = 'ready' AND visible_at > $2
         ORDER BY visible_at LIMIT 1",
        client,
        now
    )
    .map(|r| r.visible_at)
}

/// The row and conversation of message `id` when the client has claimed it.
pub fn claimed(id: &str, client: &str) -> Rows<impl Row<(i64, String)>> {
    sqlx::query!(
        "SELECT d.message_seq, d.conversation_id
         FROM deliveries d JOIN messages m ON m.seq = d.message_seq
         WHERE m.id = $1 AND d.client_id = $2 AND d.state = 'ready' AND d.attempts > 0",
        id,
        client
    )
    .map(|r| (r.message_seq, r.conversation_id))
}

pub fn ack(seq: i64, client: &str, now: i64) -> Statement {
    sqlx::query!(
        "UPDATE deliveries SET state = 'acked', updated_at = $3, lease_owner = NULL
         WHERE message_seq = $1 AND client_id = $2 AND state = 'ready' AND attempts > 0",
        seq,
        client,
        now
    )
}

pub fn ack_conversation(
    conversation: &str,
    client: &str,
    now: i64,
) -> Rows<impl Row<(i64, Option<i64>)>> {
    sqlx::query!(
        r#"WITH acked AS (
             UPDATE deliveries SET state = 'acked', updated_at = $3, lease_owner = NULL
             WHERE conversation_id = $1 AND state = 'ready' AND client_id = $2
               AND attempts > 0
             RETURNING message_seq)
         SELECT count(*) AS "n!", max(message_seq) AS last FROM acked"#,
        conversation,
        client,
        now
    )
    .map(|r| (r.n, r.last))
}

/// Ends every open delivery of a (locked) conversation: the user stopped
/// the agent's work on it (see `store::deliveries::stop_conversation`).
/// Returns each one's message id, client and whether it was ever claimed.
pub fn stop_conversation(
    conversation: &str,
    now: i64,
) -> Rows<impl Row<(i64, String, Option<String>, bool)>> {
    sqlx::query!(
        r#"WITH s AS (
             UPDATE deliveries SET state = 'acked', stopped_at = $2, updated_at = $2,
                    lease_owner = NULL
             WHERE conversation_id = $1 AND state IN ('ready', 'queued')
             RETURNING message_seq, client_id, attempts)
         SELECT s.message_seq, m.id, s.client_id, s.attempts > 0 AS "claimed!"
         FROM s JOIN messages m ON m.seq = s.message_seq ORDER BY s.message_seq"#,
        conversation,
        now
    )
    .map(|r| (r.message_seq, r.id, r.client_id, r.claimed))
}

/// Hands the open deliveries of `conversations` (just adopted by
/// `client`, and locked) to it.
pub fn adopt(client: &str, conversations: &[String], now: i64) -> Statement {
    sqlx::query!(
        "UPDATE deliveries SET client_id = $1, updated_at = $3
         WHERE conversation_id = ANY($2) AND state IN ('ready', 'queued')",
        client,
        conversations,
        now
    )
}

/// Moves the conversation's ready row to client `to`, due now.
pub fn move_ready(conversation: &str, to: Option<&str>, now: i64) -> Statement {
    sqlx::query!(
        "UPDATE deliveries
         SET client_id = $2, visible_at = LEAST(visible_at, $3), updated_at = $3,
             lease_owner = NULL
         WHERE conversation_id = $1 AND state = 'ready'",
        conversation,
        to,
        now
    )
}

pub fn move_queued(conversation: &str, to: Option<&str>, now: i64) -> Statement {
    sqlx::query!(
        "UPDATE deliveries SET client_id = $2, updated_at = $3
         WHERE conversation_id = $1 AND state = 'queued'",
        conversation,
        to,
        now
    )
}

pub fn open_conversations_of(client: &str) -> Rows<impl Row<String>> {
    sqlx::query!(
        "SELECT conversation_id FROM deliveries WHERE client_id = $1 AND state = 'ready'",
        client
    )
    .map(|r| r.conversation_id)
}

/// The conversation of row `seq` when it is dead.
pub fn dead(seq: i64) -> Rows<impl Row<String>> {
    sqlx::query!(
        "SELECT conversation_id FROM deliveries WHERE message_seq = $1 AND state = 'dead'",
        seq
    )
    .map(|r| r.conversation_id)
}

/// Gives dead row `seq` of `conversation` fresh attempts, ready unless the
/// conversation has a ready row, for the conversation's client. Returns the
/// state given.
pub fn requeue(seq: i64, conversation: &str, now: i64) -> Rows<impl Row<String>> {
    sqlx::query!(
        "UPDATE deliveries
         SET state = CASE WHEN EXISTS (SELECT 1 FROM deliveries
                                       WHERE conversation_id = $2 AND state = 'ready')
                          THEN 'queued' ELSE 'ready' END,
             attempts = 0, visible_at = $3, updated_at = $3,
             client_id = (SELECT client_id FROM conversations WHERE id = $2)
         WHERE message_seq = $1
         RETURNING state",
        seq,
        conversation,
        now
    )
    .map(|r| r.state)
}

/// A claimed row's message.
pub struct Claimed {
    pub id: String,
    pub conversation_id: String,
    pub client_id: Option<String>,
    pub app_id: String,
    pub sender: String,
    pub recipient: String,
    pub text: String,
    pub created_at: i64,
    pub attempts: i64,
    pub attachments: Option<String>,
    /// When its lease ends.
    pub lease_until: i64,
}

/// The messages of rows `seqs`, in that order.
pub fn claimed_messages(seqs: &[i64]) -> Rows<impl Row<Claimed>> {
    sqlx::query_as!(
        Claimed,
        "SELECT m.id, m.conversation_id, d.client_id, m.app_id, m.sender, m.recipient,
                m.text, m.created_at, d.attempts, m.attachments, d.visible_at AS lease_until
         FROM unnest($1::bigint[]) WITH ORDINALITY AS j(seq, n)
         JOIN deliveries d ON d.message_seq = j.seq
         JOIN messages m ON m.seq = d.message_seq
         ORDER BY j.n",
        seqs
    )
}

/// A row of the admin listing, with its message.
pub struct Listed {
    pub message_seq: i64,
    pub conversation_id: String,
    pub client_id: Option<String>,
    pub state: String,
    pub attempts: i64,
    pub visible_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub id: String,
    pub message_client_id: Option<String>,
    pub app_id: String,
    pub sender: String,
    pub recipient: String,
    pub text: String,
    pub attachments: Option<String>,
}

/// Rows with `message_seq < before`, newest first; `leased` compares with
/// whether the row is claimed and its lease runs after `now`.
pub fn list(
    before: i64,
    state: Option<&str>,
    leased: Option<bool>,
    now: i64,
    client: Option<&str>,
    conversation: Option<&str>,
    limit: i64,
) -> Rows<impl Row<Listed>> {
    sqlx::query_as!(
        Listed,
        "SELECT d.message_seq, d.conversation_id, d.client_id, d.state, d.attempts,
                d.visible_at, d.created_at, d.updated_at,
                m.id, m.client_id AS message_client_id, m.app_id, m.sender, m.recipient,
                m.text, m.attachments
         FROM deliveries d JOIN messages m ON m.seq = d.message_seq
         WHERE d.message_seq < $1
           AND ($2::text IS NULL OR d.state = $2)
           AND ($3::boolean IS NULL OR (d.visible_at > $4 AND d.attempts > 0) = $3)
           AND ($5::text IS NULL OR d.client_id = $5)
           AND ($6::text IS NULL OR d.conversation_id = $6)
         ORDER BY d.message_seq DESC LIMIT $7",
        before,
        state,
        leased,
        now,
        client,
        conversation,
        limit
    )
}

/// Moves the end of `client`'s leases in `conversation` that have not ended
/// to `now + lease_ms`, but not past `max_lease_ms` from their claim (nor
/// back); answers each renewed lease's new end.
pub fn renew(
    conversation: &str,
    client: &str,
    now: i64,
    lease_ms: i64,
    max_lease_ms: i64,
) -> Rows<impl Row<i64>> {
    sqlx::query!(
        "UPDATE deliveries
         SET visible_at = GREATEST(visible_at,
                                   LEAST($3 + $4, COALESCE(leased_at, $3) + $5)),
             updated_at = $3
         WHERE conversation_id = $1 AND client_id = $2 AND state = 'ready'
           AND attempts > 0 AND visible_at > $3
         RETURNING visible_at",
        conversation,
        client,
        now,
        lease_ms,
        max_lease_ms
    )
    .map(|r| r.visible_at)
}
