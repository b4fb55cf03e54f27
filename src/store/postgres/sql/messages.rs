//! Messages (`src/store/messages.rs`). Streams and outboxes read a
//! message's cursor position (`pos`) as its `seq`, and only positions below
//! `readable_pos()` (see `migrations/postgres/0003_engine.sql`).

use crate::{Row, Rows};

/// A message as stored.
pub struct Message {
    pub seq: i64,
    pub id: String,
    pub conversation_id: String,
    pub app_id: String,
    pub client_id: Option<String>,
    pub direction: String,
    pub sender: String,
    pub recipient: String,
    pub text: String,
    pub created_at: i64,
    pub reply_id: Option<String>,
    pub attachments: Option<String>,
    /// A reply the user stopped (stored as far as it was written).
    pub stopped: bool,
}

/// Stores a message; returns its row number and its cursor position (given
/// by the column's default, see `migrations/postgres/0003_engine.sql`). The
/// conversation's row is locked first, as every writer of a conversation's
/// rows locks it (see `deliveries`): the insert's foreign key alone takes a
/// share lock, and two writers holding it (an inbound message and a reply)
/// would deadlock upgrading it.
#[allow(clippy::too_many_arguments)]
pub fn insert(
    id: &str,
    conversation: &str,
    app: &str,
    client: Option<&str>,
    direction: &str,
    sender: &str,
    recipient: &str,
    text: &str,
    now: i64,
    reply_id: Option<&str>,
    attachments: Option<&str>,
    in_reply_to: Option<i64>,
    stopped: bool,
    search: Option<&str>,
) -> Rows<impl Row<(i64, i64)>> {
    sqlx::query!(
        "WITH c AS (SELECT id FROM conversations WHERE id = $2 FOR UPDATE)
         INSERT INTO messages
            (id, conversation_id, app_id, client_id, direction, sender, recipient, text,
             created_at, reply_id, attachments, in_reply_to, stopped, search)
         SELECT $1, c.id, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::text::tsvector
         FROM c
         RETURNING seq, pos",
        id,
        conversation,
        app,
        client,
        direction,
        sender,
        recipient,
        text,
        now,
        reply_id,
        attachments,
        in_reply_to,
        stopped,
        search
    )
    .map(|r| (r.seq, r.pos))
}

pub fn get(id: &str) -> Rows<impl Row<Message>> {
    sqlx::query_as!(
        Message,
        r#"SELECT pos AS seq, id, conversation_id, app_id, client_id, direction,
                  sender, recipient, text, created_at, reply_id, attachments, stopped
           FROM messages WHERE id = $1"#,
        id
    )
}

pub fn at(pos: i64) -> Rows<impl Row<Message>> {
    sqlx::query_as!(
        Message,
        r#"SELECT pos AS seq, id, conversation_id, app_id, client_id, direction,
                  sender, recipient, text, created_at, reply_id, attachments, stopped
           FROM messages WHERE pos = $1"#,
        pos
    )
}

pub fn seq_of(id: &str) -> Rows<impl Row<i64>> {
    sqlx::query!("SELECT seq FROM messages WHERE id = $1", id).map(|r| r.seq)
}

/// A conversation's messages in cursor order: the order its streams show
/// (each writer of a conversation locks its row, so it is also the order of
/// their commits but for writes that ran at once).
pub fn of_conversation(conversation: &str) -> Rows<impl Row<Message>> {
    sqlx::query_as!(
        Message,
        r#"SELECT pos AS seq, id, conversation_id, app_id, client_id, direction,
                  sender, recipient, text, created_at, reply_id, attachments, stopped
           FROM messages WHERE conversation_id = $1 ORDER BY pos"#,
        conversation
    )
}

/// Up to `limit` messages of a conversation before position `before`,
/// newest first.
pub fn history(conversation: &str, before: i64, limit: i64) -> Rows<impl Row<Message>> {
    sqlx::query_as!(
        Message,
        r#"SELECT pos AS seq, id, conversation_id, app_id, client_id, direction,
                  sender, recipient, text, created_at, reply_id, attachments, stopped
           FROM messages WHERE conversation_id = $1 AND pos < $2
           ORDER BY pos DESC LIMIT $3"#,
        conversation,
        before,
        limit
    )
}

/// The text of each conversation's first message (conversation, text).
pub fn first_texts(conversations: &[String]) -> Rows<impl Row<(String, String)>> {
    sqlx::query!(
        "SELECT DISTINCT ON (conversation_id) conversation_id, text FROM messages
         WHERE conversation_id = ANY($1) ORDER BY conversation_id, seq",
        conversations
    )
    .map(|r| (r.conversation_id, r.text))
}

/// A row of a cursor read: the position below which the read saw every
/// message (`readable_pos()` of its snapshot), and a message (none when the
/// read found nothing: the one row carries the horizon alone).
pub struct Paged {
    pub horizon: i64,
    pub seq: Option<i64>,
    pub id: Option<String>,
    pub conversation_id: Option<String>,
    pub app_id: Option<String>,
    pub client_id: Option<String>,
    pub direction: Option<String>,
    pub sender: Option<String>,
    pub recipient: Option<String>,
    pub text: Option<String>,
    pub created_at: Option<i64>,
    pub reply_id: Option<String>,
    pub attachments: Option<String>,
    pub stopped: Option<bool>,
}

impl Paged {
    /// The read's horizon, and its message if the row has one.
    pub fn into_parts(self) -> (i64, Option<Message>) {
        let message = match (
            self.seq,
            self.id,
            self.conversation_id,
            self.app_id,
            self.direction,
            self.sender,
            self.recipient,
            self.text,
            self.created_at,
        ) {
            (
                Some(seq),
                Some(id),
                Some(conversation_id),
                Some(app_id),
                Some(direction),
                Some(sender),
                Some(recipient),
                Some(text),
                Some(created_at),
            ) => Some(Message {
                seq,
                id,
                conversation_id,
                app_id,
                client_id: self.client_id,
                direction,
                sender,
                recipient,
                text,
                created_at,
                reply_id: self.reply_id,
                attachments: self.attachments,
                stopped: self.stopped.unwrap_or(false),
            }),
            _ => None,
        };
        (self.horizon, message)
    }
}

/// A cursor read: `$inner` selects the messages (`m`, every column of
/// `messages`) after a cursor and below `h.horizon`, the readable position
/// of the statement's snapshot; the row with a NULL message carries the
/// horizon when there are none.
/// (`OFFSET 0` keeps the planner from pulling `readable_pos()` up into the
/// rows, where it ran once per message read.)
macro_rules! paged {
    ($inner:tt, $($arg:expr),+ $(,)?) => {
        sqlx::query_as!(
            Paged,
            r#"SELECT h.horizon AS "horizon!", m.pos AS "seq?", m.id AS "id?",
                      m.conversation_id AS "conversation_id?", m.app_id AS "app_id?",
                      m.client_id AS "client_id?", m.direction AS "direction?",
                      m.sender AS "sender?", m.recipient AS "recipient?", m.text AS "text?",
                      m.created_at AS "created_at?", m.reply_id AS "reply_id?",
                      m.attachments AS "attachments?", m.stopped AS "stopped?"
               FROM (SELECT readable_pos() AS horizon OFFSET 0) h
               LEFT JOIN LATERAL ("# + $inner + r#") m ON true
               ORDER BY m.pos"#,
            $($arg),+
        )
    };
}

/// An app's replies after position `after`, up to `limit`, readable now.
pub fn outbox(app: &str, after: i64, limit: i64) -> Rows<impl Row<Paged>> {
    paged!(
        "SELECT * FROM messages
         WHERE app_id = $1 AND direction = 'outbound' AND pos > $2 AND pos < h.horizon
         ORDER BY pos LIMIT $3",
        app,
        after,
        limit
    )
}

/// Both directions of an app's conversations (or of one of them) after
/// position `after`, readable now.
pub fn stream(
    app: &str,
    after: i64,
    conversation: Option<&str>,
    limit: i64,
) -> Rows<impl Row<Paged>> {
    paged!(
        "SELECT * FROM messages
         WHERE app_id = $1 AND pos > $2 AND pos < h.horizon
           AND ($3::text IS NULL OR conversation_id = $3)
         ORDER BY pos LIMIT $4",
        app,
        after,
        conversation,
        limit
    )
}

/// The messages of one user's conversations of an app (or of one of them;
/// only the replies with `outbound_only`) after position `after`, readable
/// now.
pub fn user_stream(
    app: &str,
    user: &str,
    after: i64,
    conversation: Option<&str>,
    outbound_only: bool,
    limit: i64,
) -> Rows<impl Row<Paged>> {
    paged!(
        "SELECT m.* FROM conversations c JOIN messages m ON m.conversation_id = c.id
         WHERE c.app_id = $1 AND c.user_id = $2 AND m.pos > $3 AND m.pos < h.horizon
           AND ($4::text IS NULL OR c.id = $4) AND (NOT $5 OR m.direction = 'outbound')
         ORDER BY m.pos LIMIT $6",
        app,
        user,
        after,
        conversation,
        outbound_only,
        limit
    )
}

/// Where the turn of inbound message `id` stands: its row number, whether
/// an earlier message of its conversation waits for its answer, and the
/// position of its own answer.
pub fn turn_of(id: &str) -> Rows<impl Row<(i64, bool, Option<i64>)>> {
    sqlx::query!(
        r#"SELECT q.seq,
                  EXISTS (SELECT 1 FROM deliveries d
                          WHERE d.conversation_id = q.conversation_id AND d.message_seq < q.seq
                            AND d.state IN ('ready', 'queued')) AS "earlier_open!",
                  (SELECT r.pos FROM messages r WHERE r.in_reply_to = q.seq
                   ORDER BY r.seq LIMIT 1) AS answer
           FROM messages q WHERE q.id = $1"#,
        id
    )
    .map(|r| (r.seq, r.earlier_open, r.answer))
}

/// The conversation whose latest reply to `user` of `app` has this text
/// (white space at either end aside).
pub fn answered_with(app: &str, user: &str, text: &str) -> Rows<impl Row<String>> {
    sqlx::query!(
        r#"SELECT c.id AS conversation_id FROM conversations c
           JOIN LATERAL (
               SELECT m.seq, m.text FROM messages m
               WHERE m.conversation_id = c.id AND m.in_reply_to IS NOT NULL
               ORDER BY m.seq DESC LIMIT 1) a ON true
           WHERE c.app_id = $1 AND c.user_id = $2 AND c.expired_at IS NULL
             AND btrim(a.text, E' \t\n\r') = btrim($3, E' \t\n\r')
           ORDER BY a.seq DESC LIMIT 1"#,
        app,
        user,
        text
    )
    .map(|r| r.conversation_id)
}
