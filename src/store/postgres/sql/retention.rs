//! Retention (`src/store/retention.rs`).

use crate::{Row, Rows, Statement};

/// What a purge with these cutoffs would delete.
pub struct Due {
    pub conversations: i64,
    pub messages: i64,
    pub deliveries: i64,
    pub dead_deliveries: i64,
    pub idempotency_keys: i64,
    pub webhook_events: i64,
    pub sessions: i64,
    pub attachments: i64,
}

pub fn due(
    expired_before: i64,
    keys_before: i64,
    sessions_before: i64,
    unreferenced_before: i64,
) -> Rows<impl Row<Due>> {
    sqlx::query_as!(
        Due,
        r#"SELECT
           (SELECT COUNT(*) FROM conversations WHERE expired_at IS NOT NULL AND expired_at < $1)
               AS "conversations!",
           (SELECT COUNT(*) FROM messages WHERE conversation_id IN
               (SELECT id FROM conversations WHERE expired_at IS NOT NULL AND expired_at < $1))
               AS "messages!",
           (SELECT COUNT(*) FROM deliveries WHERE message_seq IN
               (SELECT seq FROM messages WHERE conversation_id IN
                   (SELECT id FROM conversations
                    WHERE expired_at IS NOT NULL AND expired_at < $1)))
               AS "deliveries!",
           (SELECT COUNT(*) FROM deliveries WHERE state = 'dead' AND updated_at < $1
               AND conversation_id NOT IN
                   (SELECT id FROM conversations
                    WHERE expired_at IS NOT NULL AND expired_at < $1))
               AS "dead_deliveries!",
           (SELECT COUNT(*) FROM idempotency_keys WHERE created_at < $2) AS "idempotency_keys!",
           (SELECT COUNT(*) FROM webhook_events WHERE created_at < $1) AS "webhook_events!",
           (SELECT COUNT(*) FROM sessions WHERE expires_at < $3 OR revoked_at < $3) AS "sessions!",
           (SELECT COUNT(*) FROM attachments a
               WHERE (a.referenced_at IS NOT NULL OR a.created_at < $4)
                 AND NOT EXISTS (SELECT 1 FROM message_attachments ma
                     JOIN messages m ON m.seq = ma.message_seq
                     JOIN conversations c ON c.id = m.conversation_id
                     WHERE ma.attachment_id = a.id
                       AND (c.expired_at IS NULL OR c.expired_at >= $1)))
               AS "attachments!""#,
        expired_before,
        keys_before,
        sessions_before,
        unreferenced_before
    )
}

/// Up to `limit` conversations that expired before `expired_before`.
pub fn expired_conversations(expired_before: i64, limit: i64) -> Rows<impl Row<String>> {
    sqlx::query!(
        "SELECT id FROM conversations
         WHERE expired_at IS NOT NULL AND expired_at < $1 LIMIT $2",
        expired_before,
        limit
    )
    .map(|r| r.id)
}

pub fn delete_deliveries_of(conversations: &[String]) -> Statement {
    sqlx::query!(
        "DELETE FROM deliveries WHERE message_seq IN
             (SELECT seq FROM messages WHERE conversation_id = ANY($1))",
        conversations
    )
}

pub fn delete_messages_of(conversations: &[String]) -> Statement {
    sqlx::query!(
        "DELETE FROM messages WHERE conversation_id = ANY($1)",
        conversations
    )
}

pub fn delete_conversations(conversations: &[String]) -> Statement {
    sqlx::query!(
        "DELETE FROM conversations WHERE id = ANY($1)",
        conversations
    )
}

/// Deletes up to `limit` dead deliveries last changed before `before`.
pub fn delete_dead_deliveries(before: i64, limit: i64) -> Statement {
    sqlx::query!(
        "DELETE FROM deliveries WHERE message_seq IN
             (SELECT message_seq FROM deliveries
              WHERE state = 'dead' AND updated_at < $1 LIMIT $2)",
        before,
        limit
    )
}

/// Deletes up to `limit` idempotency keys recorded before `before`.
pub fn delete_idempotency_keys(before: i64, limit: i64) -> Statement {
    sqlx::query!(
        "DELETE FROM idempotency_keys WHERE (principal, key) IN
             (SELECT principal, key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)",
        before,
        limit
    )
}
