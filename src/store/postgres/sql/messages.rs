//! Messages (`src/store/messages.rs`). Streams and outboxes read a
//! message's cursor position (`pos`) as its `seq`: only messages with a
//! position are read that way.

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
}

/// Stores a message; returns its row number. The conversation's row is
/// locked first, as every writer of a conversation's rows locks it (see
/// `deliveries`): the insert's foreign key alone takes a share lock, and
/// two writers holding it (an inbound message and a reply) would deadlock
/// upgrading it.
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
) -> Rows<impl Row<i64>> {
    sqlx::query!(
        "WITH c AS (SELECT id FROM conversations WHERE id = $2 FOR UPDATE)
         INSERT INTO messages
            (id, conversation_id, app_id, client_id, direction, sender, recipient, text,
             created_at, reply_id, attachments)
         SELECT $1, c.id, $3, $4, $5, $6, $7, $8, $9, $10, $11 FROM c
         RETURNING seq",
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
        attachments
    )
    .map(|r| r.seq)
}

pub fn get(id: &str) -> Rows<impl Row<Message>> {
    sqlx::query_as!(
        Message,
        r#"SELECT COALESCE(pos, 0) AS "seq!", id, conversation_id, app_id, client_id, direction,
                  sender, recipient, text, created_at, reply_id, attachments
           FROM messages WHERE id = $1"#,
        id
    )
}

pub fn at(pos: i64) -> Rows<impl Row<Message>> {
    sqlx::query_as!(
        Message,
        r#"SELECT COALESCE(pos, 0) AS "seq!", id, conversation_id, app_id, client_id, direction,
                  sender, recipient, text, created_at, reply_id, attachments
           FROM messages WHERE pos = $1"#,
        pos
    )
}

pub fn seq_of(id: &str) -> Rows<impl Row<i64>> {
    sqlx::query!("SELECT seq FROM messages WHERE id = $1", id).map(|r| r.seq)
}

/// A conversation's messages in `seq` order, which is its commit order (its
/// writers take turns on its row).
pub fn of_conversation(conversation: &str) -> Rows<impl Row<Message>> {
    sqlx::query_as!(
        Message,
        r#"SELECT COALESCE(pos, 0) AS "seq!", id, conversation_id, app_id, client_id, direction,
                  sender, recipient, text, created_at, reply_id, attachments
           FROM messages WHERE conversation_id = $1 ORDER BY seq"#,
        conversation
    )
}

pub fn outbox(app: &str, after: i64, limit: i64) -> Rows<impl Row<Message>> {
    sqlx::query_as!(
        Message,
        r#"SELECT COALESCE(pos, 0) AS "seq!", id, conversation_id, app_id, client_id, direction,
                  sender, recipient, text, created_at, reply_id, attachments
           FROM messages WHERE app_id = $1 AND direction = 'outbound' AND pos > $2
           ORDER BY pos LIMIT $3"#,
        app,
        after,
        limit
    )
}

pub fn stream(
    app: &str,
    after: i64,
    conversation: Option<&str>,
    limit: i64,
) -> Rows<impl Row<Message>> {
    sqlx::query_as!(
        Message,
        r#"SELECT COALESCE(pos, 0) AS "seq!", id, conversation_id, app_id, client_id, direction,
                  sender, recipient, text, created_at, reply_id, attachments
           FROM messages
           WHERE app_id = $1 AND pos > $2 AND ($3::text IS NULL OR conversation_id = $3)
           ORDER BY pos LIMIT $4"#,
        app,
        after,
        conversation,
        limit
    )
}

pub fn user_stream(
    app: &str,
    user: &str,
    after: i64,
    conversation: Option<&str>,
    outbound_only: bool,
    limit: i64,
) -> Rows<impl Row<Message>> {
    sqlx::query_as!(
        Message,
        r#"SELECT m.pos AS "seq!", m.id, m.conversation_id, m.app_id, m.client_id, m.direction,
                  m.sender, m.recipient, m.text, m.created_at, m.reply_id, m.attachments
           FROM conversations c JOIN messages m ON m.conversation_id = c.id
           WHERE c.app_id = $1 AND c.user_id = $2 AND m.pos > $3
             AND ($4::text IS NULL OR c.id = $4) AND (NOT $5 OR m.direction = 'outbound')
           ORDER BY m.pos LIMIT $6"#,
        app,
        user,
        after,
        conversation,
        outbound_only,
        limit
    )
}
