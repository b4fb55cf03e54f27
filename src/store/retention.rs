//! Retention: deleting what is older than the configured retention, in small
//! batches (each batch is one short write, so the writer never stalls behind
//! a purge).

use super::postgres::error as pg_error;
use super::{Reader, StoreResult, Tx};

/// What a purge removes (or, for a dry run, would remove).
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Purged {
    pub conversations: i64,
    pub messages: i64,
    pub deliveries: i64,
    pub dead_deliveries: i64,
    pub idempotency_keys: i64,
    /// Webhook events (with their per-endpoint rows) older than the retention.
    pub webhook_events: i64,
    /// User sessions that ended (expired or were revoked) over a day ago
    /// (a purge, not a dry run, also counts admin console sessions here).
    pub sessions: i64,
    /// Attachments no message carries any more (their messages were purged)
    /// or never carried past `[attachments] unreferenced_ttl_secs`.
    pub attachments: i64,
    /// Stored contents (blobs) no attachment uses any more, and their bytes.
    /// A dry run does not count these.
    pub blobs: i64,
    pub blob_bytes: i64,
}

impl Purged {
    pub fn is_empty(&self) -> bool {
        self.conversations
            + self.messages
            + self.deliveries
            + self.dead_deliveries
            + self.idempotency_keys
            + self.webhook_events
            + self.sessions
            + self.attachments
            + self.blobs
            == 0
    }

    pub fn add(&mut self, o: Purged) {
        self.conversations += o.conversations;
        self.messages += o.messages;
        self.deliveries += o.deliveries;
        self.dead_deliveries += o.dead_deliveries;
        self.idempotency_keys += o.idempotency_keys;
        self.webhook_events += o.webhook_events;
        self.sessions += o.sessions;
        self.attachments += o.attachments;
        self.blobs += o.blobs;
        self.blob_bytes += o.blob_bytes;
    }
}

/// Counts what a purge with these cutoffs would remove.
pub async fn count(
    db: &Reader,
    expired_before: i64,
    keys_before: i64,
    sessions_before: i64,
    unreferenced_before: i64,
) -> StoreResult<Purged> {
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            let r = pgsql::retention::due(
                expired_before,
                keys_before,
                sessions_before,
                unreferenced_before,
            )
            .fetch_one(pool)
            .await
            .map_err(pg_error)?;
            return Ok(Purged::from(r));
        }
    };
    let r = sqlx::query_as!(
        Due,
        r#"SELECT
             (SELECT COUNT(*) FROM conversations WHERE expired_at IS NOT NULL AND expired_at < ?1) AS "conversations!: i64",
             (SELECT COUNT(*) FROM messages WHERE conversation_id IN
                 (SELECT id FROM conversations WHERE expired_at IS NOT NULL AND expired_at < ?1)) AS "messages!: i64",
             (SELECT COUNT(*) FROM deliveries WHERE message_seq IN
                 (SELECT seq FROM messages WHERE conversation_id IN
                     (SELECT id FROM conversations WHERE expired_at IS NOT NULL AND expired_at < ?1))) AS "deliveries!: i64",
             (SELECT COUNT(*) FROM deliveries WHERE state = 'dead' AND updated_at < ?1
                 AND conversation_id NOT IN
                     (SELECT id FROM conversations WHERE expired_at IS NOT NULL AND expired_at < ?1)) AS "dead_deliveries!: i64",
             (SELECT COUNT(*) FROM idempotency_keys WHERE created_at < ?2) AS "idempotency_keys!: i64",
             (SELECT COUNT(*) FROM webhook_events WHERE created_at < ?1) AS "webhook_events!: i64",
             (SELECT COUNT(*) FROM sessions WHERE expires_at < ?3 OR revoked_at < ?3) AS "sessions!: i64",
             (SELECT COUNT(*) FROM attachments a
                 WHERE (a.referenced_at IS NOT NULL OR a.created_at < ?4)
                   AND NOT EXISTS (SELECT 1 FROM message_attachments ma
                       JOIN messages m ON m.seq = ma.message_seq
                       JOIN conversations c ON c.id = m.conversation_id
                       WHERE ma.attachment_id = a.id
                         AND (c.expired_at IS NULL OR c.expired_at >= ?1))) AS "attachments!: i64""#,
        expired_before,
        keys_before,
        sessions_before,
        unreferenced_before
    )
    .fetch_one(ex)
    .await?;
    Ok(Purged::from(r))
}

/// What a dry run counts (the row type both backends read, defined with the
/// PostgreSQL statements).
type Due = pgsql::retention::Due;

impl From<Due> for Purged {
    fn from(r: Due) -> Purged {
        Purged {
            conversations: r.conversations,
            messages: r.messages,
            deliveries: r.deliveries,
            dead_deliveries: r.dead_deliveries,
            idempotency_keys: r.idempotency_keys,
            webhook_events: r.webhook_events,
            sessions: r.sessions,
            attachments: r.attachments,
            ..Purged::default()
        }
    }
}

/// Deletes up to `limit` conversations expired before `expired_before`, with
/// their messages and deliveries.
pub fn purge_conversations(tx: &Tx, expired_before: i64, limit: i64) -> StoreResult<Purged> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let ids = pg.fetch_all(pgsql::retention::expired_conversations(
                expired_before,
                limit,
            ))?;
            if ids.is_empty() {
                return Ok(Purged::default());
            }
            let deliveries = pg.execute(pgsql::retention::delete_deliveries_of(&ids))?;
            let messages = pg.execute(pgsql::retention::delete_messages_of(&ids))?;
            let conversations = pg.execute(pgsql::retention::delete_conversations(&ids))?;
            return Ok(Purged {
                conversations: conversations as i64,
                messages: messages as i64,
                deliveries: deliveries as i64,
                ..Purged::default()
            });
        }
    };
    let ids: Vec<String> = tx
        .prepare_cached(
            "SELECT id FROM conversations WHERE expired_at IS NOT NULL AND expired_at < ? LIMIT ?",
        )?
        .query_map((expired_before, limit), |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Ok(Purged::default());
    }
    let list = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".to_owned());
    let deliveries = tx
        .prepare_cached(
            "DELETE FROM deliveries WHERE message_seq IN
                 (SELECT seq FROM messages WHERE conversation_id IN (SELECT value FROM json_each(?1)))",
        )?
        .execute([&list])? as i64;
    let messages = tx
        .prepare_cached(
            "DELETE FROM messages WHERE conversation_id IN (SELECT value FROM json_each(?1))",
        )?
        .execute([&list])? as i64;
    if messages > 0 {
        super::recent::deleted();
    }
    let conversations = tx
        .prepare_cached("DELETE FROM conversations WHERE id IN (SELECT value FROM json_each(?1))")?
        .execute([&list])? as i64;
    Ok(Purged {
        conversations,
        messages,
        deliveries,
        ..Purged::default()
    })
}

/// Deletes up to `limit` dead deliveries last touched before `before`.
pub fn purge_dead(tx: &Tx, before: i64, limit: i64) -> StoreResult<i64> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let n = pg.execute(pgsql::retention::delete_dead_deliveries(before, limit))?;
            return Ok(n as i64);
        }
    };
    let n = tx
        .prepare_cached(
            "DELETE FROM deliveries WHERE message_seq IN
                 (SELECT message_seq FROM deliveries WHERE state = 'dead' AND updated_at < ? LIMIT ?)",
        )?
        .execute((before, limit))?;
    Ok(n as i64)
}

/// Deletes up to `limit` idempotency keys recorded before `before`.
pub fn purge_keys(tx: &Tx, before: i64, limit: i64) -> StoreResult<i64> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let n = pg.execute(pgsql::retention::delete_idempotency_keys(before, limit))?;
            return Ok(n as i64);
        }
    };
    let n = tx
        .prepare_cached(
            "DELETE FROM idempotency_keys WHERE (principal, key) IN
                 (SELECT principal, key FROM idempotency_keys WHERE created_at < ? LIMIT ?)",
        )?
        .execute((before, limit))?;
    Ok(n as i64)
}
