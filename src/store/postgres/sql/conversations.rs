//! Conversations (`src/store/conversations.rs`).

use crate::{Row, Rows, Statement};
use sqlx::PgPool;

/// The writers of one (app, user) take turns until their transactions end.
pub fn lock_user(app: &str, user: &str) -> Statement {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || ' ' || $2, 0))",
        app,
        user
    )
}

/// The user's most recently active conversation: id, client, updated_at,
/// whether the client is active, its pending count. Its row is locked first and read as
/// the lock finds it (an adoption or a move that committed meanwhile is
/// seen): the caller decides where the conversation goes from what it reads.
#[allow(clippy::type_complexity)]
pub fn find_active(
    app: &str,
    user: &str,
) -> Rows<impl Row<(String, Option<String>, i64, bool, i64)>> {
    sqlx::query!(
        r#"WITH c AS MATERIALIZED (
               SELECT id, client_id, updated_at FROM conversations
               WHERE app_id = $1 AND user_id = $2 AND expired_at IS NULL
               ORDER BY updated_at DESC, id DESC LIMIT 1
               FOR UPDATE)
           SELECT c.id AS "id!", c.client_id, c.updated_at AS "updated_at!",
                  (cl.id IS NOT NULL AND cl.revoked_at IS NULL) AS "client_active!",
                  COALESCE(client_pending(cl.id), 0) AS "client_pending!"
           FROM c LEFT JOIN clients cl ON cl.id = c.client_id"#,
        app,
        user
    )
    .map(|r| {
        (
            r.id,
            r.client_id,
            r.updated_at,
            r.client_active,
            r.client_pending,
        )
    })
}

/// Conversation `id` if it is the user's, as [`find_active`] reads it, and
/// whether it is marked expired.
#[allow(clippy::type_complexity)]
pub fn find_of_user(
    id: &str,
    app: &str,
    user: &str,
) -> Rows<impl Row<(String, Option<String>, i64, bool, i64, bool)>> {
    sqlx::query!(
        r#"WITH c AS MATERIALIZED (
               SELECT id, client_id, updated_at, expired_at FROM conversations
               WHERE id = $1 AND app_id = $2 AND user_id = $3
               FOR UPDATE)
           SELECT c.id AS "id!", c.client_id, c.updated_at AS "updated_at!",
                  (cl.id IS NOT NULL AND cl.revoked_at IS NULL) AS "client_active!",
                  COALESCE(client_pending(cl.id), 0) AS "client_pending!",
                  (c.expired_at IS NOT NULL) AS "expired!"
           FROM c LEFT JOIN clients cl ON cl.id = c.client_id"#,
        id,
        app,
        user
    )
    .map(|r| {
        (
            r.id,
            r.client_id,
            r.updated_at,
            r.client_active,
            r.client_pending,
            r.expired,
        )
    })
}

pub fn create(id: &str, app: &str, user: &str, client: Option<&str>, now: i64) -> Statement {
    sqlx::query!(
        "INSERT INTO conversations (id, app_id, user_id, client_id, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $5)",
        id,
        app,
        user,
        client,
        now
    )
}

pub fn mark_expired(id: &str, at: i64) -> Statement {
    sqlx::query!(
        "UPDATE conversations SET expired_at = $2 WHERE id = $1 AND expired_at IS NULL",
        id,
        at
    )
}

/// Marks up to `limit` conversations idle since `idle_cutoff` expired;
/// returns their id, app and user.
pub fn expire_idle(
    idle_cutoff: i64,
    ttl_ms: i64,
    limit: i64,
) -> Rows<impl Row<(String, String, String)>> {
    sqlx::query!(
        "UPDATE conversations SET expired_at = updated_at + $2
         WHERE seq IN (SELECT seq FROM conversations
                       WHERE expired_at IS NULL AND updated_at <= $1 LIMIT $3)
         RETURNING id, app_id, user_id",
        idle_cutoff,
        ttl_ms,
        limit
    )
    .map(|r| (r.id, r.app_id, r.user_id))
}

pub fn expire_or_touch(id: &str, idle_cutoff: i64, ttl_ms: i64, now: i64) -> Statement {
    sqlx::query!(
        "UPDATE conversations
         SET expired_at = CASE WHEN updated_at <= $2 THEN updated_at + $3 END,
             updated_at = CASE WHEN updated_at <= $2 THEN updated_at ELSE $4 END
         WHERE id = $1 AND expired_at IS NULL",
        id,
        idle_cutoff,
        ttl_ms,
        now
    )
}

pub fn touch(id: &str, now: i64) -> Statement {
    sqlx::query!(
        "UPDATE conversations SET updated_at = $2 WHERE id = $1 AND expired_at IS NULL",
        id,
        now
    )
}

pub fn assign(id: &str, client: Option<&str>) -> Statement {
    sqlx::query!(
        "UPDATE conversations SET client_id = $2 WHERE id = $1",
        id,
        client
    )
}

/// Assigns the unassigned conversations no other transaction holds to
/// `client`, locking them until the transaction ends; returns their ids.
pub fn adopt_unassigned(client: &str) -> Rows<impl Row<(String, String, String)>> {
    sqlx::query!(
        "UPDATE conversations SET client_id = $1
         WHERE id IN (SELECT id FROM conversations WHERE client_id IS NULL
                      ORDER BY id FOR UPDATE SKIP LOCKED)
         RETURNING id, app_id, user_id",
        client
    )
    .map(|r| (r.id, r.app_id, r.user_id))
}

/// App, user and client.
pub fn owners(id: &str) -> Rows<impl Row<(String, String, Option<String>)>> {
    sqlx::query!(
        "SELECT app_id, user_id, client_id FROM conversations WHERE id = $1",
        id
    )
    .map(|r| (r.app_id, r.user_id, r.client_id))
}

/// App, user and client, the conversation's row locked until the
/// transaction ends (a writer of the conversation takes its turn first).
pub fn owners_locked(id: &str) -> Rows<impl Row<(String, String, Option<String>)>> {
    sqlx::query!(
        "SELECT app_id, user_id, client_id FROM conversations WHERE id = $1 FOR UPDATE",
        id
    )
    .map(|r| (r.app_id, r.user_id, r.client_id))
}

/// A conversation as listed, with its message count.
pub struct Conversation {
    pub seq: i64,
    pub id: String,
    pub app_id: String,
    pub user_id: String,
    pub client_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub expired_at: Option<i64>,
    pub message_count: i64,
}

pub fn get(id: &str) -> Rows<impl Row<Conversation>> {
    sqlx::query_as!(
        Conversation,
        r#"SELECT c.seq, c.id, c.app_id, c.user_id, c.client_id, c.created_at, c.updated_at,
                  c.expired_at,
                  (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS "message_count!"
           FROM conversations c WHERE c.id = $1"#,
        id
    )
}

/// Which filter of [`list`] leads, through its index.
pub enum Lead {
    User,
    Client,
    App,
    None,
}

/// Conversations with `seq < before`, newest first, filtered by what is
/// given; `active` compares with whether the conversation is active (not
/// marked expired and updated after `idle_cutoff`). One statement per
/// leading filter, so that a generic plan still uses its index.
#[allow(clippy::too_many_arguments)]
pub async fn list(
    pool: &PgPool,
    lead: Lead,
    before: i64,
    app: Option<&str>,
    user: Option<&str>,
    client: Option<&str>,
    active: Option<bool>,
    idle_cutoff: i64,
    limit: i64,
) -> Result<Vec<Conversation>, sqlx::Error> {
    /// The statement led by `$lead` (a WHERE condition, a literal); the
    /// other filters are checked on the rows it finds.
    macro_rules! led_by {
        ($lead:tt) => {
            sqlx::query_as!(
                Conversation,
                r#"SELECT c.seq, c.id, c.app_id, c.user_id, c.client_id, c.created_at,
                          c.updated_at, c.expired_at,
                          (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id)
                              AS "message_count!"
                   FROM conversations c
                   WHERE "# + $lead + r#"
                     AND c.seq < $1
                     AND ($2::text IS NULL OR c.app_id = $2)
                     AND ($3::text IS NULL OR c.user_id = $3)
                     AND ($4::text IS NULL OR c.client_id = $4)
                     AND ($5::boolean IS NULL OR (c.expired_at IS NULL AND c.updated_at > $6) = $5)
                   ORDER BY c.seq DESC LIMIT $7"#,
                before,
                app,
                user,
                client,
                active,
                idle_cutoff,
                limit
            )
            .fetch_all(pool)
            .await
        };
    }
    match lead {
        Lead::User => led_by!("c.user_id = $3"),
        Lead::Client => led_by!("c.client_id = $4"),
        Lead::App => led_by!("c.app_id = $2"),
        Lead::None => led_by!("TRUE"),
    }
}

pub fn count_active(idle_cutoff: i64) -> Rows<impl Row<i64>> {
    sqlx::query!(
        r#"SELECT COUNT(*) AS "n!" FROM conversations
           WHERE expired_at IS NULL AND updated_at > $1"#,
        idle_cutoff
    )
    .map(|r| r.n)
}
