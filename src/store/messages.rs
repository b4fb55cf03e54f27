//! Messages: the permanent record of both directions of every conversation.

use super::postgres::error as pg_error;
use super::{Reader, StoreResult, Tx};
use crate::ids::{AppId, ClientId, ConversationId, MessageId, UserId};
use crate::model::{Attachment, Direction, Message, SharedMessage};
use rusqlite::OptionalExtension;
use std::sync::Arc;

pub struct NewMessage<'a> {
    pub conversation_id: &'a ConversationId,
    pub app_id: &'a AppId,
    pub client_id: Option<&'a ClientId>,
    pub direction: Direction,
    pub from: &'a str,
    pub to: &'a str,
    pub text: &'a str,
    pub reply_id: Option<&'a str>,
    /// The inbound message (its row number) a reply answers.
    pub in_reply_to: Option<i64>,
    pub attachments: &'a [Attachment],
    /// A reply the user stopped, stored as far as it was written.
    pub stopped: bool,
    pub now: i64,
}

/// A message as stored (the row type both backends read, defined with the
/// PostgreSQL statements). `seq` is the cursor: on SQLite the row's `seq`
/// (commit order, one writer), on PostgreSQL its `pos` (see
/// `store::postgres::cursor`).
type Row = pgsql::messages::Message;

/// A message just stored.
pub struct Inserted {
    /// Its row (what its delivery and attachments refer to).
    pub seq: i64,
    /// Its cursor position: `seq` on SQLite, `pos` on PostgreSQL.
    pub cursor: i64,
    pub message: Message,
}

/// A page of a cursor read: messages with their cursors, oldest first, and
/// the position below which the read saw every message stored (`i64::MAX`
/// on SQLite, whose one writer commits in cursor order; on PostgreSQL a
/// message stored while an older transaction still runs is readable only
/// once that one ends, see `store::postgres::cursor`).
pub struct Page {
    pub messages: Vec<(i64, Arc<SharedMessage>)>,
    pub horizon: i64,
}

impl Page {
    fn sqlite(rows: Vec<Row>) -> Page {
        Page {
            messages: numbered(rows),
            horizon: i64::MAX,
        }
    }

    fn postgres(rows: Vec<pgsql::messages::Paged>) -> Page {
        let mut horizon = i64::MAX;
        let mut messages = Vec::with_capacity(rows.len());
        for row in rows {
            let (h, message) = row.into_parts();
            horizon = horizon.min(h);
            if let Some(m) = message {
                messages.push((m.seq, SharedMessage::new(Message::from(m))));
            }
        }
        Page { messages, horizon }
    }
}

impl From<Row> for Message {
    fn from(r: Row) -> Message {
        Message {
            id: MessageId::from_db(r.id),
            conversation_id: ConversationId::from_db(r.conversation_id),
            client_id: r.client_id.map(ClientId::from_db),
            app_id: AppId::from_db(r.app_id),
            direction: Direction::from_db(&r.direction),
            from: r.sender,
            to: r.recipient,
            text: r.text,
            timestamp: r.created_at,
            attempt: None,
            lease_until: None,
            reply_id: r.reply_id,
            attachments: super::attachments::from_column(r.attachments.as_deref()),
            stopped: r.stopped,
        }
    }
}

/// Stores a message (and which attachments it carries).
pub fn insert(tx: &Tx, m: NewMessage<'_>) -> StoreResult<Inserted> {
    let id = MessageId::generate();
    let (seq, cursor) = match tx {
        Tx::Sqlite(conn) => {
            insert_sqlite(conn, &id, &m)?;
            let seq = conn.last_insert_rowid();
            super::search::note_stored(seq);
            (seq, seq)
        }
        Tx::Postgres(pg) => {
            // Locks the conversation's row first (see the statement).
            let (seq, pos) = pg.fetch_one(pgsql::messages::insert(
                id.as_str(),
                m.conversation_id.as_str(),
                m.app_id.as_str(),
                m.client_id.map(ClientId::as_str),
                m.direction.as_str(),
                m.from,
                m.to,
                m.text,
                m.now,
                m.reply_id,
                super::attachments::to_column(m.attachments).as_deref(),
                m.in_reply_to,
                m.stopped,
                crate::search::tsvector(m.text).as_deref(),
            ))?;
            pg.stored(pos, m.app_id.as_str());
            (seq, pos)
        }
    };
    super::attachments::link(tx, seq, m.attachments, m.now)?;
    let message = Message {
        id,
        conversation_id: m.conversation_id.clone(),
        client_id: m.client_id.cloned(),
        app_id: m.app_id.clone(),
        direction: m.direction,
        from: m.from.to_owned(),
        to: m.to.to_owned(),
        text: m.text.to_owned(),
        timestamp: m.now,
        attempt: None,
        lease_until: None,
        reply_id: m.reply_id.map(str::to_owned),
        attachments: m.attachments.to_vec(),
        stopped: m.stopped,
    };
    if let Tx::Sqlite(_) = tx {
        super::recent::stored(seq, &message);
    }
    Ok(Inserted {
        seq,
        cursor,
        message,
    })
}

fn insert_sqlite(
    conn: &rusqlite::Connection,
    id: &MessageId,
    m: &NewMessage<'_>,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO messages
            (id, conversation_id, app_id, client_id, direction, sender, recipient, text, created_at, reply_id,
             attachments, in_reply_to, stopped)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute((
        id,
        m.conversation_id,
        m.app_id,
        m.client_id,
        m.direction.as_str(),
        m.from,
        m.to,
        m.text,
        m.now,
        m.reply_id,
        super::attachments::to_column(m.attachments),
        m.in_reply_to,
        m.stopped,
    ))?;
    Ok(())
}

pub fn get(tx: &Tx, id: &MessageId) -> StoreResult<Option<Message>> {
    let tx = match tx {
        Tx::Sqlite(c) => c,
        Tx::Postgres(pg) => {
            let row = pg.fetch_optional(pgsql::messages::get(id.as_str()))?;
            return Ok(row.map(Message::from));
        }
    };
    let row = tx
        .prepare_cached(
            "SELECT seq, id, conversation_id, app_id, client_id, direction, sender, recipient, text,
                    created_at, reply_id, attachments, stopped
             FROM messages WHERE id = ?",
        )?
        .query_row([id], |r| {
            Ok(Row {
                seq: r.get(0)?,
                id: r.get(1)?,
                conversation_id: r.get(2)?,
                app_id: r.get(3)?,
                client_id: r.get(4)?,
                direction: r.get(5)?,
                sender: r.get(6)?,
                recipient: r.get(7)?,
                text: r.get(8)?,
                created_at: r.get(9)?,
                reply_id: r.get(10)?,
                attachments: r.get(11)?,
                stopped: r.get(12)?,
            })
        })
        .optional()?;
    Ok(row.map(Message::from))
}

/// The message at cursor position `seq`.
pub async fn by_seq(db: &Reader, seq: i64) -> StoreResult<Option<Message>> {
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            let row = pgsql::messages::at(seq)
                .fetch_optional(pool)
                .await
                .map_err(pg_error)?;
            return Ok(row.map(Message::from));
        }
    };
    let row = sqlx::query_as!(
        Row,
        r#"SELECT seq AS "seq!", id, conversation_id, app_id, client_id, direction, sender, recipient, text,
                created_at, reply_id, attachments, stopped AS "stopped: bool"
         FROM messages WHERE seq = ?"#,
        seq
    )
    .fetch_optional(ex)
    .await?;
    Ok(row.map(Message::from))
}

/// A message's row number (the key of its delivery).
pub fn seq_of(tx: &Tx, id: &MessageId) -> StoreResult<Option<i64>> {
    let tx = match tx {
        Tx::Sqlite(c) => c,
        Tx::Postgres(pg) => {
            return pg.fetch_optional(pgsql::messages::seq_of(id.as_str()));
        }
    };
    let seq = tx
        .prepare_cached("SELECT seq FROM messages WHERE id = ?")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(seq)
}

/// Where the turn of inbound message `id` stands (see
/// `relay::completions`), if the message is stored.
pub struct TurnRow {
    /// Its row number (what a reply's `in_reply_to` names).
    pub seq: i64,
    /// Whether a message stored before it in its conversation still waits
    /// for its answer (its delivery ready or queued): the agent answers that
    /// one first.
    pub earlier_open: bool,
    /// The cursor of its answer (the first reply that names it), if stored.
    pub answer: Option<i64>,
}

pub async fn turn_of(db: &Reader, id: &MessageId) -> StoreResult<Option<TurnRow>> {
    let row = match db {
        Reader::Postgres(pool) => pgsql::messages::turn_of(id.as_str())
            .fetch_optional(pool)
            .await
            .map_err(pg_error)?,
        Reader::Sqlite(pool) => sqlx::query!(
            r#"SELECT q.seq AS "seq!",
                      EXISTS (SELECT 1 FROM deliveries d
                              WHERE d.conversation_id = q.conversation_id AND d.message_seq < q.seq
                                AND (d.state = 'ready' OR d.state = 'queued')) AS "earlier_open!: bool",
                      (SELECT r.seq FROM messages r WHERE r.in_reply_to = q.seq
                       ORDER BY r.seq LIMIT 1) AS "answer?: i64"
               FROM messages q WHERE q.id = ?"#,
            id
        )
        .fetch_optional(pool)
        .await?
        .map(|r| (r.seq, r.earlier_open, r.answer)),
    };
    Ok(row.map(|(seq, earlier_open, answer)| TurnRow {
        seq,
        earlier_open,
        answer,
    }))
}

/// The active conversation of `user` of `app` whose latest answer (a reply
/// to a message, see `in_reply_to`) has this text, white space at either
/// end aside; of several, the one answered last. Read through the user's
/// active conversations (`conversations_active_user`) and each one's
/// latest answer (`messages_by_conversation`, from its end): no index on
/// the text of every reply, which every reply would write. The cost grows
/// with the user's active conversations (about 1 µs each).
pub async fn answered_with(
    db: &Reader,
    app: &AppId,
    user: &UserId,
    text: &str,
) -> StoreResult<Option<ConversationId>> {
    let id = match db {
        Reader::Postgres(pool) => pgsql::messages::answered_with(app.as_str(), user.as_str(), text)
            .fetch_optional(pool)
            .await
            .map_err(pg_error)?,
        Reader::Sqlite(pool) => {
            let (app, user) = (app.as_str(), user.as_str());
            sqlx::query_scalar!(
                r#"SELECT c.id AS "id!" FROM conversations c
                   JOIN messages a ON a.seq = (
                       SELECT m.seq FROM messages m
                       WHERE m.conversation_id = c.id AND m.in_reply_to IS NOT NULL
                       ORDER BY m.seq DESC LIMIT 1)
                   WHERE c.app_id = ?1 AND c.user_id = ?2 AND c.expired_at IS NULL
                     AND trim(a.text, char(32, 9, 10, 13)) = trim(?3, char(32, 9, 10, 13))
                   ORDER BY a.seq DESC LIMIT 1"#,
                app,
                user,
                text
            )
            .fetch_optional(pool)
            .await?
        }
    };
    Ok(id.map(ConversationId::from_db))
}

/// Every message of a conversation, oldest first.
pub async fn of_conversation(
    db: &Reader,
    conversation: &ConversationId,
) -> StoreResult<Vec<Message>> {
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            let rows = pgsql::messages::of_conversation(conversation.as_str())
                .fetch_all(pool)
                .await
                .map_err(pg_error)?;
            return Ok(rows.into_iter().map(Message::from).collect());
        }
    };
    let rows = sqlx::query_as!(
        Row,
        r#"SELECT seq AS "seq!", id, conversation_id, app_id, client_id, direction, sender, recipient, text,
                created_at, reply_id, attachments, stopped AS "stopped: bool"
         FROM messages WHERE conversation_id = ? ORDER BY seq"#,
        conversation
    )
    .fetch_all(ex)
    .await?;
    Ok(rows.into_iter().map(Message::from).collect())
}

/// A page of a conversation's history: up to `limit` messages stored
/// before position `before` (a cursor; `i64::MAX`: the latest), newest
/// first, each with its position.
pub async fn history(
    db: &Reader,
    conversation: &ConversationId,
    before: i64,
    limit: i64,
) -> StoreResult<Vec<(i64, Message)>> {
    let rows = match db {
        Reader::Postgres(pool) => pgsql::messages::history(conversation.as_str(), before, limit)
            .fetch_all(pool)
            .await
            .map_err(pg_error)?,
        Reader::Sqlite(pool) => {
            sqlx::query_as!(
                Row,
                r#"SELECT seq AS "seq!", id, conversation_id, app_id, client_id, direction, sender,
                          recipient, text, created_at, reply_id, attachments, stopped AS "stopped: bool"
                   FROM messages WHERE conversation_id = ?1 AND seq < ?2
                   ORDER BY seq DESC LIMIT ?3"#,
                conversation,
                before,
                limit
            )
            .fetch_all(pool)
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|r| (r.seq, Message::from(r)))
        .collect())
}

/// The text of each listed conversation's first message (none for a
/// conversation without messages).
pub async fn first_texts(
    db: &Reader,
    conversations: &[ConversationId],
) -> StoreResult<Vec<(ConversationId, String)>> {
    let ids: Vec<String> = conversations
        .iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    let rows = match db {
        Reader::Postgres(pool) => pgsql::messages::first_texts(&ids)
            .fetch_all(pool)
            .await
            .map_err(pg_error)?,
        Reader::Sqlite(pool) => {
            let ids = serde_json::to_string(&ids).unwrap_or_default();
            sqlx::query!(
                r#"SELECT conversation_id AS "conversation_id!", text AS "text!" FROM messages
                   WHERE seq IN (SELECT MIN(seq) FROM messages
                                 WHERE conversation_id IN (SELECT value FROM json_each(?1))
                                 GROUP BY conversation_id)"#,
                ids
            )
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|r| (r.conversation_id, r.text))
            .collect()
        }
    };
    Ok(rows
        .into_iter()
        .map(|(id, text)| (ConversationId::from_db(id), text))
        .collect())
}

/// An app's outbound messages after cursor `after`, in cursor order, each
/// with its cursor.
pub async fn outbox(db: &Reader, app: &AppId, after: i64, limit: i64) -> StoreResult<Page> {
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            let rows = pgsql::messages::outbox(app.as_str(), after, limit)
                .fetch_all(pool)
                .await
                .map_err(pg_error)?;
            return Ok(Page::postgres(rows));
        }
    };
    let rows = sqlx::query_as!(
        Row,
        r#"SELECT seq AS "seq!", id, conversation_id, app_id, client_id, direction, sender,
                  recipient, text, created_at, reply_id, attachments, stopped AS "stopped: bool"
           FROM messages
           WHERE app_id = ?1 AND direction = 'outbound' AND seq > ?2
           ORDER BY seq LIMIT ?3"#,
        app,
        after,
        limit
    )
    .fetch_all(ex)
    .await?;
    Ok(Page::sqlite(rows))
}

/// Both directions of an app's conversations (or of one of them) after
/// cursor `after`, in cursor order: the stored part of a live stream.
pub async fn stream(
    db: &Reader,
    app: &AppId,
    conversation: Option<&ConversationId>,
    after: i64,
    limit: i64,
) -> StoreResult<Page> {
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            let rows = pgsql::messages::stream(
                app.as_str(),
                after,
                conversation.map(ConversationId::as_str),
                limit,
            )
            .fetch_all(pool)
            .await
            .map_err(pg_error)?;
            return Ok(Page::postgres(rows));
        }
    };
    let rows = sqlx::query_as!(
        Row,
        r#"SELECT seq AS "seq!", id, conversation_id, app_id, client_id, direction, sender,
                  recipient, text, created_at, reply_id, attachments, stopped AS "stopped: bool"
           FROM messages
           WHERE app_id = ?1 AND seq > ?2 AND (?3 IS NULL OR conversation_id = ?3)
           ORDER BY seq LIMIT ?4"#,
        app,
        after,
        conversation,
        limit
    )
    .fetch_all(ex)
    .await?;
    Ok(Page::sqlite(rows))
}

/// The messages of one user's conversations of an app (or of one of them)
/// after `after`, in cursor order; only the replies with `outbound_only`.
/// Read through the user's conversations, so a user's history costs what
/// that user has, not what the app has.
pub async fn of_user(
    db: &Reader,
    app: &AppId,
    user: &UserId,
    conversation: Option<&ConversationId>,
    after: i64,
    limit: i64,
    outbound_only: bool,
) -> StoreResult<Page> {
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            let rows = pgsql::messages::user_stream(
                app.as_str(),
                user.as_str(),
                after,
                conversation.map(ConversationId::as_str),
                outbound_only,
                limit,
            )
            .fetch_all(pool)
            .await
            .map_err(pg_error)?;
            return Ok(Page::postgres(rows));
        }
    };
    let rows = sqlx::query_as!(
        Row,
        r#"SELECT m.seq AS "seq!", m.id, m.conversation_id, m.app_id, m.client_id, m.direction,
                  m.sender, m.recipient, m.text, m.created_at, m.reply_id, m.attachments,
                  m.stopped AS "stopped: bool"
           FROM conversations c JOIN messages m ON m.conversation_id = c.id
           WHERE c.app_id = ?1 AND c.user_id = ?2 AND m.seq > ?3
             AND (?4 IS NULL OR c.id = ?4) AND (?5 = 0 OR m.direction = 'outbound')
           ORDER BY m.seq LIMIT ?6"#,
        app,
        user,
        after,
        conversation,
        outbound_only,
        limit
    )
    .fetch_all(ex)
    .await?;
    Ok(Page::sqlite(rows))
}

/// Rows as (cursor, message).
fn numbered(rows: Vec<Row>) -> Vec<(i64, Arc<SharedMessage>)> {
    rows.into_iter()
        .map(|r| (r.seq, SharedMessage::new(Message::from(r))))
        .collect()
}

/// The newest sequence number (0 for an empty database): "now" as a cursor.
pub async fn last_seq(db: &Reader) -> StoreResult<i64> {
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            return pgsql::cursor::highest()
                .fetch_one(pool)
                .await
                .map_err(pg_error);
        }
    };
    let seq = sqlx::query_scalar!(r#"SELECT COALESCE(MAX(seq), 0) AS "seq!: i64" FROM messages"#)
        .fetch_one(ex)
        .await?;
    Ok(seq)
}
