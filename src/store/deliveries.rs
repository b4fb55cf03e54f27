//! The delivery queue (see the `deliveries` table in the migration for the
//! model: one ready row per conversation, later rows queued behind it).
//!
//! On PostgreSQL several relays claim at once, and two rules keep the model
//! whole there:
//! - A claim locks the rows it takes with `FOR UPDATE SKIP LOCKED` (see
//!   [`due`]): relays claiming for the same agent take different rows
//!   instead of waiting for each other, and a row another relay has just
//!   leased is re-checked against its new `visible_at` and left alone.
//! - The writers of one conversation's rows (enqueue, ack, promote, requeue)
//!   take turns on the conversation's row ([`lock_conversation`]), always
//!   before they touch a delivery row. So an enqueue cannot queue a message
//!   behind a ready row that an ack on another relay is finishing, and the
//!   one-ready-row rule (enforced by `deliveries_ready_by_conversation`)
//!   holds. The claim, which holds its rows first, only ever tries that
//!   lock ([`retire`]).

use super::hot::Hot;
use super::postgres::error as pg_error;
use super::tx::PgTx;
use super::{Reader, StoreResult, Tx};
use crate::ids::{AppId, ClientId, ConversationId, MessageId};
use crate::model::{Delivery, DeliveryState, Direction, Message};
use rusqlite::{params, OptionalExtension};

/// Queues the delivery of inbound message `seq`: ready if its conversation has
/// nothing in flight, else queued behind the conversation's open rows.
/// Returns whether it is ready (claimable now). One statement (on
/// PostgreSQL after the conversation's lock).
pub fn enqueue(
    tx: &Tx,
    seq: i64,
    conversation: &ConversationId,
    client: Option<&ClientId>,
    now: i64,
) -> StoreResult<bool> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            lock_conversation(pg, conversation)?;
            // The conversation's client under its lock (see the statement).
            let state =
                pg.fetch_one(pgsql::deliveries::enqueue(seq, conversation.as_str(), now))?;
            return Ok(state == "ready");
        }
    };
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

/// Locks a conversation's row until the transaction ends (PostgreSQL), so
/// that the relays writing to one conversation's deliveries take turns.
/// Returns false when the conversation does not exist.
fn lock_conversation(pg: &PgTx, conversation: &ConversationId) -> StoreResult<bool> {
    let found = pg.fetch_optional(pgsql::deliveries::lock_conversation(conversation.as_str()))?;
    Ok(found.is_some())
}

/// Locks a conversation's row like [`lock_conversation`] if no other
/// transaction holds it; returns false at once when one does, instead of
/// waiting.
///
/// A claim needs a conversation's lock while it already holds the rows it
/// took: to let a dead row's successor through. Every other writer takes
/// the conversation first and the row second (an ack, an enqueue), so a
/// claim that waited here could deadlock with an ack of the same row.
fn try_lock_conversation(pg: &PgTx, conversation: &ConversationId) -> StoreResult<bool> {
    let found = pg.fetch_optional(pgsql::deliveries::try_lock_conversation(
        conversation.as_str(),
    ))?;
    Ok(found.is_some())
}

/// A due ready row, as the claim sees it.
pub struct Due {
    pub seq: i64,
    pub conversation_id: ConversationId,
    pub attempts: i64,
}

/// Up to `limit` of the client's ready rows that are due, oldest first. On
/// PostgreSQL they are locked until the transaction ends, and rows another
/// relay is claiming right now are skipped.
pub fn due(tx: &Tx, client: &ClientId, now: i64, limit: i64) -> StoreResult<Vec<Due>> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let rows = pg.fetch_all(pgsql::deliveries::due(client.as_str(), now, limit))?;
            return Ok(rows
                .into_iter()
                .map(|(seq, conversation, attempts)| Due {
                    seq,
                    conversation_id: ConversationId::from_db(conversation),
                    attempts,
                })
                .collect());
        }
    };
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
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            pg.execute(pgsql::deliveries::lease(seqs, until, now, owner))?;
            return Ok(());
        }
    };
    tx.prepare_cached(
        "UPDATE deliveries SET attempts = attempts + 1, visible_at = ?2, updated_at = ?3, lease_owner = ?4,
                               leased_at = ?3
         WHERE message_seq IN (SELECT value FROM json_each(?1))",
    )?
    .execute((json_list(seqs), until, now, owner))?;
    Ok(())
}

/// Renews `client`'s leases in `conversation` that have not ended (it is
/// still working on it): each now ends `lease_ms` from `now`, but not past
/// `max_lease_ms` from its claim, and never earlier than it did. A delivery
/// acked, dead, moved or due again is not a lease any more and is left as
/// it is. Answers the new ends.
pub fn renew(
    tx: &Tx,
    client: &ClientId,
    conversation: &ConversationId,
    now: i64,
    lease_ms: i64,
    max_lease_ms: i64,
) -> StoreResult<Vec<i64>> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            return pg.fetch_all(pgsql::deliveries::renew(
                conversation.as_str(),
                client.as_str(),
                now,
                lease_ms,
                max_lease_ms,
            ));
        }
    };
    let mut stmt = tx.prepare_cached(
        "UPDATE deliveries
         SET visible_at = MAX(visible_at, MIN(?3 + ?4, COALESCE(leased_at, ?3) + ?5)),
             updated_at = ?3
         WHERE conversation_id = ?1 AND client_id = ?2 AND state = 'ready'
           AND attempts > 0 AND visible_at > ?3
         RETURNING visible_at",
    )?;
    let ends = stmt.query_map((conversation, client, now, lease_ms, max_lease_ms), |r| {
        r.get(0)
    })?;
    Ok(ends.collect::<Result<_, _>>()?)
}

fn json_list(seqs: &[i64]) -> String {
    serde_json::to_string(seqs).unwrap_or_else(|_| "[]".to_owned())
}

/// What became of a due row out of attempts that a claim tried to retire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retired {
    /// Dead; `promoted` is the client of the conversation's next message
    /// when one became ready (`Some(None)` when that message has no client).
    Dead { promoted: Option<Option<ClientId>> },
    /// Its conversation is busy (on PostgreSQL, another relay is writing to
    /// it): the row stays as it is, neither leased nor dead, and the next
    /// claim retries.
    Busy,
}

/// Retires row `due` (taken by this claim, out of attempts): marks it dead
/// and makes the next message of its conversation ready. On PostgreSQL this
/// happens under the conversation's lock, so that an enqueue cannot queue a
/// message behind it meanwhile; when another transaction holds that lock
/// the row is left for a later claim (see [`try_lock_conversation`]).
pub fn retire(tx: &Tx, due: &Due, now: i64) -> StoreResult<Retired> {
    if let Tx::Postgres(pg) = tx {
        if !try_lock_conversation(pg, &due.conversation_id)? {
            return Ok(Retired::Busy);
        }
    }
    mark_dead(tx, due.seq, now)?;
    let promoted = promote_next(tx, &due.conversation_id, now)?;
    Ok(Retired::Dead { promoted })
}

fn mark_dead(tx: &Tx, seq: i64, now: i64) -> StoreResult<()> {
    match tx {
        Tx::Sqlite(conn) => {
            conn.prepare_cached(
                "UPDATE deliveries SET state = 'dead', updated_at = ?2, lease_owner = NULL
                 WHERE message_seq = ?1",
            )?
            .execute((seq, now))?;
        }
        Tx::Postgres(pg) => {
            pg.execute(pgsql::deliveries::mark_dead(seq, now))?;
        }
    }
    Ok(())
}

/// Makes the oldest queued row of a conversation ready, if nothing of that
/// conversation is ready. Returns the client it belongs to when one was
/// promoted. One statement. On PostgreSQL the caller holds the
/// conversation's lock (taken by the ack, `ack_conversation` or `retire`
/// before it).
pub fn promote_next(
    tx: &Tx,
    conversation: &ConversationId,
    now: i64,
) -> StoreResult<Option<Option<ClientId>>> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let promoted =
                pg.fetch_optional(pgsql::deliveries::promote(conversation.as_str(), now))?;
            return Ok(promoted.map(|c| c.map(ClientId::from_db)));
        }
    };
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
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            return pg.execute(pgsql::deliveries::release_leases(owner, now));
        }
    };
    let n = tx
        .prepare_cached(
            "UPDATE deliveries SET visible_at = MIN(visible_at, ?2), lease_owner = NULL, updated_at = ?2
             WHERE lease_owner = ?1",
        )?
        .execute((owner, now))?;
    Ok(n as u64)
}

/// Ends every session-held lease: at start, when no socket of a previous run
/// can be alive. On PostgreSQL other relays' sockets are alive, so this
/// releases nothing there: the leases of a relay that died end when their
/// lease time does, like an HTTP poll's.
pub fn release_all_owned(tx: &Tx, now: i64) -> StoreResult<u64> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(_) => return Ok(0),
    };
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
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            return pgsql::deliveries::count_leased_by(owner, now)
                .fetch_one(pool)
                .await
                .map_err(pg_error);
        }
    };
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

/// What an agent's session looks at before claiming, in one read: how many
/// deliveries it holds under a lease that has not ended, and when the
/// client's earliest ready delivery is (or was) due ([`earliest_ready`]).
pub async fn session_view(
    db: Hot<'_>,
    client: &ClientId,
    owner: &str,
    now: i64,
) -> StoreResult<(i64, Option<i64>)> {
    let conns = match db {
        Hot::Sqlite(conns) => conns,
        Hot::Postgres(pool) => {
            return pgsql::deliveries::session_view(owner, now, client.as_str())
                .fetch_one(pool)
                .await
                .map_err(pg_error);
        }
    };
    conns.read(|conn| {
        conn.prepare_cached(
            "SELECT (SELECT COUNT(*) FROM deliveries
                     WHERE lease_owner = ?1 AND state = 'ready' AND visible_at > ?2),
                    (SELECT MIN(visible_at) FROM deliveries
                     WHERE client_id = ?3 AND state = 'ready')",
        )?
        .query_row(params![owner, now, client.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
    })
}

/// How many dead letters are kept.
pub async fn count_dead(db: &Reader) -> StoreResult<i64> {
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            return pgsql::deliveries::count_dead()
                .fetch_one(pool)
                .await
                .map_err(pg_error);
        }
    };
    let n =
        sqlx::query_scalar!(r#"SELECT COUNT(*) AS "n!: i64" FROM deliveries WHERE state = 'dead'"#)
            .fetch_one(ex)
            .await?;
    Ok(n)
}

/// When the client's oldest due, unclaimed delivery became due (for the
/// oldest-pending gauge): the first entry of its claim range.
pub async fn oldest_due(db: &Reader, client: &ClientId, now: i64) -> StoreResult<Option<i64>> {
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            return pgsql::deliveries::oldest_due(client.as_str(), now)
                .fetch_optional(pool)
                .await
                .map_err(pg_error);
        }
    };
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
pub async fn earliest_ready(db: Hot<'_>, client: &ClientId) -> StoreResult<Option<i64>> {
    let conns = match db {
        Hot::Sqlite(conns) => conns,
        Hot::Postgres(pool) => {
            return pgsql::deliveries::earliest_ready(client.as_str())
                .fetch_one(pool)
                .await
                .map_err(pg_error);
        }
    };
    conns.read(|conn| {
        conn.prepare_cached(
            "SELECT MIN(visible_at) FROM deliveries WHERE client_id = ?1 AND state = 'ready'",
        )?
        .query_row([client.as_str()], |r| r.get(0))
    })
}

/// The earliest time one of the client's leased rows becomes due again.
pub fn next_visible_at(tx: &Tx, client: &ClientId, now: i64) -> StoreResult<Option<i64>> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            return pg.fetch_optional(pgsql::deliveries::next_due(client.as_str(), now));
        }
    };
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
/// conversation when something was acked (on PostgreSQL, not when another
/// relay acked it first).
pub fn ack(
    tx: &Tx,
    client: &ClientId,
    id: &MessageId,
    now: i64,
) -> StoreResult<Option<ConversationId>> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => return ack_postgres(pg, client, id, now),
    };
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

/// Finds the claimed row first, then locks its conversation like every
/// writer of a conversation, then acks it if it is still claimed.
fn ack_postgres(
    pg: &PgTx,
    client: &ClientId,
    id: &MessageId,
    now: i64,
) -> StoreResult<Option<ConversationId>> {
    let claimed = pg.fetch_optional(pgsql::deliveries::claimed(id.as_str(), client.as_str()))?;
    let Some((seq, conversation)) = claimed else {
        return Ok(None);
    };
    let conversation = ConversationId::from_db(conversation);
    lock_conversation(pg, &conversation)?;
    let done = pg.execute(pgsql::deliveries::ack(seq, client.as_str(), now))?;
    Ok((done == 1).then_some(conversation))
}

/// Acks whatever of the conversation the client has claimed (the implicit
/// ack of `/send`). Returns how many rows were acked.
pub fn ack_conversation(
    tx: &Tx,
    client: &ClientId,
    conversation: &ConversationId,
    now: i64,
) -> StoreResult<Acked> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            lock_conversation(pg, conversation)?;
            let (n, last) = pg.fetch_one(pgsql::deliveries::ack_conversation(
                conversation.as_str(),
                client.as_str(),
                now,
            ))?;
            return Ok(Acked {
                count: n as u64,
                last,
            });
        }
    };
    let seqs = tx
        .prepare_cached(
            "UPDATE deliveries SET state = 'acked', updated_at = ?3, lease_owner = NULL
             WHERE conversation_id = ?1 AND state = 'ready' AND client_id = ?2 AND attempts > 0
             RETURNING message_seq",
        )?
        .query_map((conversation, client, now), |r| r.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Acked {
        count: seqs.len() as u64,
        last: seqs.into_iter().max(),
    })
}

/// What a reply acked: how many deliveries, and the latest of their
/// messages (the one the reply answers).
#[derive(Default)]
pub struct Acked {
    pub count: u64,
    pub last: Option<i64>,
}

/// A delivery ended by a stop.
pub struct Stopped {
    /// The message's row number.
    pub seq: i64,
    pub message_id: MessageId,
    /// The agent it was assigned to (None: unassigned).
    pub client_id: Option<ClientId>,
    /// Whether an agent ever claimed it (it may be at work on it): else it
    /// was withdrawn before anyone saw it.
    pub claimed: bool,
}

/// Ends every open delivery of the conversation (ready or queued) as the
/// user's stop: acked, with `stopped_at`, so none is delivered again.
/// Returns them, oldest first.
pub fn stop_conversation(
    tx: &Tx,
    conversation: &ConversationId,
    now: i64,
) -> StoreResult<Vec<Stopped>> {
    let stopped = |(seq, id, client, claimed): (i64, String, Option<String>, bool)| Stopped {
        seq,
        message_id: MessageId::from_db(id),
        client_id: client.map(ClientId::from_db),
        claimed,
    };
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            lock_conversation(pg, conversation)?;
            let rows = pg.fetch_all(pgsql::deliveries::stop_conversation(
                conversation.as_str(),
                now,
            ))?;
            return Ok(rows.into_iter().map(stopped).collect());
        }
    };
    // `state = … OR state = …`, not `IN`: SQLite reads each of the two
    // partial indexes by conversation (there is no full one, see migration
    // 0019).
    let rows = tx
        .prepare_cached(
            "SELECT d.message_seq, m.id, d.client_id, d.attempts > 0
             FROM deliveries d JOIN messages m ON m.seq = d.message_seq
             WHERE d.conversation_id = ?1 AND (d.state = 'ready' OR d.state = 'queued')
             ORDER BY d.message_seq",
        )?
        .query_map([conversation], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    tx.prepare_cached(
        "UPDATE deliveries SET state = 'acked', stopped_at = ?2, updated_at = ?2, lease_owner = NULL
         WHERE conversation_id = ?1 AND (state = 'ready' OR state = 'queued')",
    )?
    .execute((conversation, now))?;
    Ok(rows.into_iter().map(stopped).collect())
}

/// Moves a conversation's open deliveries to `to` (None: unassigned). A lease
/// held by the previous client ends now, so the new one gets the row at once.
pub fn move_conversation(
    tx: &Tx,
    conversation: &ConversationId,
    to: Option<&ClientId>,
    now: i64,
) -> StoreResult<()> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            lock_conversation(pg, conversation)?;
            pg.execute(pgsql::deliveries::move_ready(
                conversation.as_str(),
                to.map(ClientId::as_str),
                now,
            ))?;
            pg.execute(pgsql::deliveries::move_queued(
                conversation.as_str(),
                to.map(ClientId::as_str),
                now,
            ))?;
            return Ok(());
        }
    };
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
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let ids = pg.fetch_all(pgsql::deliveries::open_conversations_of(client.as_str()))?;
            return Ok(ids.into_iter().map(ConversationId::from_db).collect());
        }
    };
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
    let conn = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => return requeue_postgres(pg, seq, now),
    };
    let conversation = conn
        .prepare_cached(
            "SELECT conversation_id FROM deliveries WHERE message_seq = ? AND state = 'dead'",
        )?
        .query_row([seq], |r| r.get(0))
        .optional()?;
    let Some(conversation) = conversation.map(ConversationId::from_db) else {
        return Ok(None);
    };
    let ready: bool = !conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM deliveries WHERE conversation_id = ? AND state = 'ready')",
        )?
        .query_row([&conversation], |r| r.get::<_, bool>(0))?;
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

/// `requeue` under the conversation's lock, the dead row re-checked under it.
fn requeue_postgres(pg: &PgTx, seq: i64, now: i64) -> StoreResult<Option<(ConversationId, bool)>> {
    let found = pg.fetch_optional(pgsql::deliveries::dead(seq))?;
    let Some(conversation) = found else {
        return Ok(None);
    };
    let conversation = ConversationId::from_db(conversation);
    lock_conversation(pg, &conversation)?;
    if pg.fetch_optional(pgsql::deliveries::dead(seq))?.is_none() {
        return Ok(None);
    }
    let state = pg.fetch_one(pgsql::deliveries::requeue(seq, conversation.as_str(), now))?;
    Ok(Some((conversation, state == "ready")))
}

/// The messages of claimed rows, in claim order, with their attempt numbers.
/// One statement.
pub fn claimed_messages(tx: &Tx, seqs: &[i64]) -> StoreResult<Vec<Message>> {
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let rows = pg.fetch_all(pgsql::deliveries::claimed_messages(seqs))?;
            return Ok(rows.into_iter().map(Message::from).collect());
        }
    };
    let mut stmt = tx.prepare_cached(
        "SELECT m.id, m.conversation_id, d.client_id, m.app_id, m.sender, m.recipient,
                m.text, m.created_at, d.attempts, m.attachments, d.visible_at
         FROM json_each(?1) AS j
         JOIN deliveries d ON d.message_seq = j.value
         JOIN messages m ON m.seq = d.message_seq
         ORDER BY j.key",
    )?;
    let rows = stmt.query_map([json_list(seqs)], |r| {
        Ok(ClaimedRow {
            id: r.get(0)?,
            conversation_id: r.get(1)?,
            client_id: r.get(2)?,
            app_id: r.get(3)?,
            sender: r.get(4)?,
            recipient: r.get(5)?,
            text: r.get(6)?,
            created_at: r.get(7)?,
            attempts: r.get(8)?,
            attachments: r.get(9)?,
            lease_until: r.get(10)?,
        })
    })?;
    rows.map(|r| Ok(Message::from(r?))).collect()
}

/// A claimed row's message, as `claimed_messages` reads it (the row type
/// both backends read, defined with the PostgreSQL statements).
type ClaimedRow = pgsql::deliveries::Claimed;

impl From<ClaimedRow> for Message {
    fn from(r: ClaimedRow) -> Message {
        Message {
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
            lease_until: Some(r.lease_until),
            reply_id: None,
            attachments: super::attachments::from_column(r.attachments.as_deref()),
            stopped: false,
        }
    }
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

/// A row of the admin listing (the row type both backends read, defined
/// with the PostgreSQL statements).
type ListRow = pgsql::deliveries::Listed;

/// The delivery of `row`, with its sequence number (the cursor).
fn listed(row: ListRow, now: i64) -> (i64, Delivery) {
    let state = match row.state.as_str() {
        "queued" => DeliveryState::Queued,
        "acked" => DeliveryState::Acked,
        "dead" => DeliveryState::Dead,
        _ if row.visible_at > now && row.attempts > 0 => DeliveryState::Leased,
        _ => DeliveryState::Pending,
    };
    let conversation_id = ConversationId::from_db(row.conversation_id);
    let delivery = Delivery {
        message_id: MessageId::from_db(row.id.clone()),
        conversation_id: conversation_id.clone(),
        client_id: row.client_id.map(ClientId::from_db),
        state,
        attempts: row.attempts,
        visible_at: row.visible_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
        message: Message {
            id: MessageId::from_db(row.id),
            conversation_id,
            client_id: row.message_client_id.map(ClientId::from_db),
            app_id: AppId::from_db(row.app_id),
            direction: Direction::Inbound,
            from: row.sender,
            to: row.recipient,
            text: row.text,
            timestamp: row.created_at,
            attempt: None,
            lease_until: None,
            reply_id: None,
            attachments: super::attachments::from_column(row.attachments.as_deref()),
            stopped: false,
        },
    };
    (row.message_seq, delivery)
}

/// Deliveries, newest first, each with its message. Returns the rows and the
/// sequence number to pass as `before` for the next page.
pub async fn list(db: &Reader, f: Filter<'_>, now: i64) -> StoreResult<Vec<(i64, Delivery)>> {
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
    let rows =
        match db {
            Reader::Sqlite(ex) => sqlx::query_as!(
                ListRow,
                r#"SELECT d.message_seq AS "message_seq!", d.conversation_id, d.client_id, d.state,
                          d.attempts, d.visible_at, d.created_at, d.updated_at,
                          m.id, m.client_id AS message_client_id, m.app_id, m.sender, m.recipient,
                          m.text, m.attachments
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
            .await?,
            Reader::Postgres(pool) => pgsql::deliveries::list(
                before,
                stored,
                leased,
                now,
                client.map(ClientId::as_str),
                conversation.map(ConversationId::as_str),
                f.limit,
            )
            .fetch_all(pool)
            .await
            .map_err(pg_error)?,
        };
    Ok(rows.into_iter().map(|r| listed(r, now)).collect())
}
