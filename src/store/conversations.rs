//! Conversations: threads of an (app, user), each sticky to one client; a
//! message names its conversation or continues the user's latest.
//!
//! A conversation is expired when `expired_at` is set, or when it has been
//! idle since before `idle_cutoff` (now − ttl) and the expiry task has not
//! marked it yet; readers take `idle_cutoff` so both look the same.

use super::postgres::error as pg_error;
use super::{Reader, StoreResult, Tx};
use crate::ids::{AppId, ClientId, ConversationId, UserId};
use crate::model::{Conversation, ConversationState};
use rusqlite::OptionalExtension;

/// What the write path needs of a user's active conversation.
pub struct Active {
    pub id: ConversationId,
    pub client_id: Option<ClientId>,
    /// Whether that client exists and is not revoked.
    pub client_active: bool,
    /// That client's open deliveries.
    pub client_pending: i64,
    pub updated_at: i64,
}

impl Active {
    /// From columns id, client_id, updated_at, client active, its pending.
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Active> {
        Ok(Active {
            id: ConversationId::from_db(r.get(0)?),
            client_id: r.get::<_, Option<String>>(1)?.map(ClientId::from_db),
            updated_at: r.get(2)?,
            client_active: r.get(3)?,
            client_pending: r.get(4)?,
        })
    }

    fn from_pg(
        (id, client, updated_at, client_active, client_pending): (
            String,
            Option<String>,
            i64,
            bool,
            i64,
        ),
    ) -> Active {
        Active {
            id: ConversationId::from_db(id),
            client_id: client.map(ClientId::from_db),
            client_active,
            client_pending,
            updated_at,
        }
    }
}

/// The user's most recently active conversation (a user may have several
/// active at once). On PostgreSQL the writers of one user
/// take turns from here to the end of their transactions (an advisory lock
/// on the user): two relays taking a first message of the same user at
/// once would otherwise both open a conversation, and the second would
/// open a second one for a message that meant to continue. The second
/// waits, then finds the first's conversation (each statement sees what committed before it).
/// The conversation's row is locked too, as every writer of a conversation
/// locks it: an agent's adoption of unassigned work, which takes no user
/// lock, once committed between this read and the caller's move of the
/// conversation, and the move handed the conversation to another agent
/// than the one holding its first delivery.
pub fn find_active(tx: &Tx, app: &AppId, user: &UserId) -> StoreResult<Option<Active>> {
    let tx = match tx {
        Tx::Sqlite(c) => c,
        Tx::Postgres(pg) => {
            pg.execute(pgsql::conversations::lock_user(app.as_str(), user.as_str()))?;
            let row = pg.fetch_optional(pgsql::conversations::find_active(
                app.as_str(),
                user.as_str(),
            ))?;
            return Ok(row.map(Active::from_pg));
        }
    };
    let row = tx
        .prepare_cached(
            "SELECT c.id, c.client_id, c.updated_at,
                    (cl.id IS NOT NULL AND cl.revoked_at IS NULL),
                    COALESCE(cl.pending, 0)
             FROM conversations c LEFT JOIN clients cl ON cl.id = c.client_id
             WHERE c.app_id = ? AND c.user_id = ? AND c.expired_at IS NULL
             ORDER BY c.updated_at DESC, c.id DESC LIMIT 1",
        )?
        .query_row((app, user), Active::from_row)
        .optional()?;
    Ok(row)
}

/// Conversation `id` if it belongs to that app and user, read and locked as
/// [`find_active`] does; with whether it is marked expired.
pub fn find_of_user(
    tx: &Tx,
    id: &ConversationId,
    app: &AppId,
    user: &UserId,
) -> StoreResult<Option<(Active, bool)>> {
    let tx = match tx {
        Tx::Sqlite(c) => c,
        Tx::Postgres(pg) => {
            pg.execute(pgsql::conversations::lock_user(app.as_str(), user.as_str()))?;
            let row = pg.fetch_optional(pgsql::conversations::find_of_user(
                id.as_str(),
                app.as_str(),
                user.as_str(),
            ))?;
            return Ok(
                row.map(|(id, client, updated_at, active, pending, expired)| {
                    let row = (id, client, updated_at, active, pending);
                    (Active::from_pg(row), expired)
                }),
            );
        }
    };
    let row = tx
        .prepare_cached(
            "SELECT c.id, c.client_id, c.updated_at,
                    (cl.id IS NOT NULL AND cl.revoked_at IS NULL),
                    COALESCE(cl.pending, 0), c.expired_at IS NOT NULL
             FROM conversations c LEFT JOIN clients cl ON cl.id = c.client_id
             WHERE c.id = ? AND c.app_id = ? AND c.user_id = ?",
        )?
        .query_row((id, app, user), |r| Ok((Active::from_row(r)?, r.get(5)?)))
        .optional()?;
    Ok(row)
}

/// Takes the (app, user) turn a writer of the user's conversations takes
/// (PostgreSQL: an advisory lock until the transaction ends; SQLite: its one
/// writer already serializes them).
pub fn lock_user(tx: &Tx, app: &AppId, user: &UserId) -> StoreResult<()> {
    if let Tx::Postgres(pg) = tx {
        pg.execute(pgsql::conversations::lock_user(app.as_str(), user.as_str()))?;
    }
    Ok(())
}

pub fn create(
    tx: &Tx,
    app: &AppId,
    user: &UserId,
    client: Option<&ClientId>,
    now: i64,
) -> StoreResult<ConversationId> {
    let id = ConversationId::generate();
    let tx = match tx {
        Tx::Sqlite(c) => c,
        Tx::Postgres(pg) => {
            pg.execute(pgsql::conversations::create(
                id.as_str(),
                app.as_str(),
                user.as_str(),
                client.map(ClientId::as_str),
                now,
            ))?;
            return Ok(id);
        }
    };
    tx.prepare_cached(
        "INSERT INTO conversations (id, app_id, user_id, client_id, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
    )?
    .execute((&id, app, user, client, now))?;
    Ok(id)
}

/// Marks a conversation expired as of `at` (the moment its TTL ran out).
pub fn expire(tx: &Tx, id: &ConversationId, at: i64) -> StoreResult<()> {
    let tx = match tx {
        Tx::Sqlite(c) => c,
        Tx::Postgres(pg) => {
            pg.execute(pgsql::conversations::mark_expired(id.as_str(), at))?;
            return Ok(());
        }
    };
    tx.prepare_cached(
        "UPDATE conversations SET expired_at = ?2 WHERE id = ?1 AND expired_at IS NULL",
    )?
    .execute((id, at))?;
    Ok(())
}

/// A conversation that just expired: for the `conversation.expired` event.
pub struct Expired {
    pub id: ConversationId,
    pub app_id: AppId,
    pub user_id: String,
}

/// Marks up to `limit` conversations idle since before `idle_cutoff` expired.
pub fn expire_idle(
    tx: &Tx,
    idle_cutoff: i64,
    ttl_ms: i64,
    limit: i64,
) -> StoreResult<Vec<Expired>> {
    let tx = match tx {
        Tx::Sqlite(c) => c,
        Tx::Postgres(pg) => {
            let rows = pg.fetch_all(pgsql::conversations::expire_idle(
                idle_cutoff,
                ttl_ms,
                limit,
            ))?;
            return Ok(rows
                .into_iter()
                .map(|(id, app_id, user_id)| Expired {
                    id: ConversationId::from_db(id),
                    app_id: AppId::from_db(app_id),
                    user_id,
                })
                .collect());
        }
    };
    let mut stmt = tx.prepare_cached(
        "UPDATE conversations SET expired_at = updated_at + ?2
         WHERE seq IN (SELECT seq FROM conversations
                       WHERE expired_at IS NULL AND updated_at <= ?1 LIMIT ?3)
         RETURNING id, app_id, user_id",
    )?;
    let rows = stmt.query_map((idle_cutoff, ttl_ms, limit), |r| {
        Ok(Expired {
            id: ConversationId::from_db(r.get(0)?),
            app_id: AppId::from_db(r.get(1)?),
            user_id: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Records activity, after marking the conversation expired if it has been
/// idle since before `idle_cutoff` (then it stays as it was). One statement.
pub fn expire_or_touch(
    tx: &Tx,
    id: &ConversationId,
    idle_cutoff: i64,
    ttl_ms: i64,
    now: i64,
) -> StoreResult<()> {
    let tx = match tx {
        Tx::Sqlite(c) => c,
        Tx::Postgres(pg) => {
            pg.execute(pgsql::conversations::expire_or_touch(
                id.as_str(),
                idle_cutoff,
                ttl_ms,
                now,
            ))?;
            return Ok(());
        }
    };
    tx.prepare_cached(
        "UPDATE conversations
         SET expired_at = CASE WHEN updated_at <= ?2 THEN updated_at + ?3 END,
             updated_at = CASE WHEN updated_at <= ?2 THEN updated_at ELSE ?4 END
         WHERE id = ?1 AND expired_at IS NULL",
    )?
    .execute((id, idle_cutoff, ttl_ms, now))?;
    Ok(())
}

/// Records activity. An expired conversation stays expired.
pub fn touch(tx: &Tx, id: &ConversationId, now: i64) -> StoreResult<()> {
    let tx = match tx {
        Tx::Sqlite(c) => c,
        Tx::Postgres(pg) => {
            pg.execute(pgsql::conversations::touch(id.as_str(), now))?;
            return Ok(());
        }
    };
    tx.prepare_cached(
        "UPDATE conversations SET updated_at = ?2 WHERE id = ?1 AND expired_at IS NULL",
    )?
    .execute((id, now))?;
    Ok(())
}

pub fn set_client(tx: &Tx, id: &ConversationId, client: Option<&ClientId>) -> StoreResult<()> {
    let tx = match tx {
        Tx::Sqlite(c) => c,
        Tx::Postgres(pg) => {
            pg.execute(pgsql::conversations::assign(
                id.as_str(),
                client.map(ClientId::as_str),
            ))?;
            return Ok(());
        }
    };
    tx.prepare_cached("UPDATE conversations SET client_id = ?2 WHERE id = ?1")?
        .execute((id, client))?;
    Ok(())
}

/// A conversation an agent just adopted: for the `conversation.assigned` event.
pub struct Adopted {
    pub id: ConversationId,
    pub app_id: AppId,
    pub user_id: String,
}

/// Assigns every unassigned conversation to `client`, with its open
/// deliveries. Returns the conversations.
///
/// On PostgreSQL the conversations are locked first (skipping those another
/// transaction holds: an adoption racing this one, or an inbound message
/// being added, which wakes the agents again when it commits), and only
/// their deliveries move, read after the locks are held: a conversation
/// and its deliveries always go to the same agent. (Moving every unassigned
/// delivery in a second statement once handed one agent the deliveries of
/// conversations a concurrent adoption took.)
pub fn adopt_unassigned(tx: &Tx, client: &ClientId, now: i64) -> StoreResult<Vec<Adopted>> {
    let tx = match tx {
        Tx::Sqlite(c) => c,
        Tx::Postgres(pg) => {
            let taken = pg.fetch_all(pgsql::conversations::adopt_unassigned(client.as_str()))?;
            if !taken.is_empty() {
                let ids: Vec<String> = taken.iter().map(|(id, _, _)| id.clone()).collect();
                pg.execute(pgsql::deliveries::adopt(client.as_str(), &ids, now))?;
            }
            return Ok(taken
                .into_iter()
                .map(|(id, app, user)| Adopted {
                    id: ConversationId::from_db(id),
                    app_id: AppId::from_db(app),
                    user_id: user,
                })
                .collect());
        }
    };
    let adopted = tx
        .prepare_cached(
            "UPDATE conversations SET client_id = ?1 WHERE client_id IS NULL
             RETURNING id, app_id, user_id",
        )?
        .query_map([client], |r| {
            Ok(Adopted {
                id: ConversationId::from_db(r.get(0)?),
                app_id: AppId::from_db(r.get(1)?),
                user_id: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    if !adopted.is_empty() {
        tx.prepare_cached(
            "UPDATE deliveries SET client_id = ?1, updated_at = ?2
             WHERE client_id IS NULL AND state IN ('ready', 'queued')",
        )?
        .execute((client, now))?;
    }
    Ok(adopted)
}

/// The owner fields of a conversation: for authorization and routing.
pub struct Owners {
    pub app_id: AppId,
    pub user_id: UserId,
    pub client_id: Option<ClientId>,
}

/// The owners of a conversation a write is about to change. On PostgreSQL
/// its row is locked first, as every writer of a conversation locks it, so
/// the owners read stay true until the transaction ends (a reply checked
/// against its agent cannot be stored after the conversation moved).
pub fn owners(tx: &Tx, id: &ConversationId) -> StoreResult<Option<Owners>> {
    let tx = match tx {
        Tx::Sqlite(c) => c,
        Tx::Postgres(pg) => {
            let row = pg.fetch_optional(pgsql::conversations::owners_locked(id.as_str()))?;
            return Ok(row.map(Owners::from_columns));
        }
    };
    let row = tx
        .prepare_cached("SELECT app_id, user_id, client_id FROM conversations WHERE id = ?")?
        .query_row([id], |r| {
            Ok(Owners {
                app_id: AppId::from_db(r.get(0)?),
                user_id: UserId::from_db(r.get(1)?),
                client_id: r.get::<_, Option<String>>(2)?.map(ClientId::from_db),
            })
        })
        .optional()?;
    Ok(row)
}

impl Owners {
    fn from_columns((app_id, user_id, client_id): (String, String, Option<String>)) -> Owners {
        Owners {
            app_id: AppId::from_db(app_id),
            user_id: UserId::from_db(user_id),
            client_id: client_id.map(ClientId::from_db),
        }
    }
}

/// [`owners`], for readers.
pub async fn owners_of(db: &Reader, id: &ConversationId) -> StoreResult<Option<Owners>> {
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            let row = pgsql::conversations::owners(id.as_str())
                .fetch_optional(pool)
                .await
                .map_err(pg_error)?;
            return Ok(row.map(Owners::from_columns));
        }
    };
    let row = sqlx::query!(
        "SELECT app_id, user_id, client_id FROM conversations WHERE id = ?",
        id
    )
    .fetch_optional(ex)
    .await?;
    Ok(row.map(|r| Owners {
        app_id: AppId::from_db(r.app_id),
        user_id: UserId::from_db(r.user_id),
        client_id: r.client_id.map(ClientId::from_db),
    }))
}

/// A conversation as listed (the row type both backends read, defined with
/// the PostgreSQL statements).
type Row = pgsql::conversations::Conversation;

/// The conversation of `row`, with its sequence number (the cursor).
fn into_model(row: Row, idle_cutoff: i64) -> (i64, Conversation) {
    let expired = row.expired_at.is_some() || row.updated_at <= idle_cutoff;
    let conversation = Conversation {
        id: ConversationId::from_db(row.id),
        app_id: AppId::from_db(row.app_id),
        user_id: row.user_id,
        client_id: row.client_id.map(ClientId::from_db),
        state: if expired {
            ConversationState::Expired
        } else {
            ConversationState::Active
        },
        created_at: row.created_at,
        updated_at: row.updated_at,
        expired_at: row.expired_at,
        message_count: row.message_count,
    };
    (row.seq, conversation)
}

pub async fn get(
    db: &Reader,
    id: &ConversationId,
    idle_cutoff: i64,
) -> StoreResult<Option<Conversation>> {
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            let row = pgsql::conversations::get(id.as_str())
                .fetch_optional(pool)
                .await
                .map_err(pg_error)?;
            return Ok(row.map(|r| into_model(r, idle_cutoff).1));
        }
    };
    let row = sqlx::query_as!(
        Row,
        r#"SELECT c.seq AS "seq!", c.id, c.app_id, c.user_id, c.client_id, c.created_at, c.updated_at,
                  c.expired_at,
                  (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS "message_count!: i64"
           FROM conversations c WHERE c.id = ?"#,
        id
    )
    .fetch_optional(ex)
    .await?;
    Ok(row.map(|r| into_model(r, idle_cutoff).1))
}

pub struct Filter<'a> {
    pub app: Option<&'a AppId>,
    pub user: Option<&'a str>,
    pub client: Option<&'a ClientId>,
    pub state: Option<ConversationState>,
    /// Only conversations with a sequence number below this (the cursor).
    pub before: Option<i64>,
    pub limit: i64,
}

/// Conversations, newest first, each with its sequence number (the cursor).
///
/// One statement per driving filter, because SQLite plans a statement once:
/// with `(?3 IS NULL OR c.user_id = ?3)` alone it cannot use an index on
/// `user_id`, and `?userId=` scanned every conversation. The most selective
/// filter given leads (user, then client, then app) through its index; the
/// others are checked on the rows it finds.
pub async fn list(
    db: &Reader,
    f: Filter<'_>,
    idle_cutoff: i64,
) -> StoreResult<Vec<(i64, Conversation)>> {
    let app = f.app;
    let client = f.client;
    let active: Option<bool> = f.state.map(|s| s == ConversationState::Active);
    let before = f.before.unwrap_or(i64::MAX);
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            // As on SQLite, the most selective filter given leads, so that
            // a generic plan still uses its index.
            use pgsql::conversations::Lead;
            let lead = match (f.user.is_some(), client.is_some(), app.is_some()) {
                (true, _, _) => Lead::User,
                (false, true, _) => Lead::Client,
                (false, false, true) => Lead::App,
                (false, false, false) => Lead::None,
            };
            let rows = pgsql::conversations::list(
                pool,
                lead,
                before,
                app.map(AppId::as_str),
                f.user,
                client.map(ClientId::as_str),
                active,
                idle_cutoff,
                f.limit,
            )
            .await
            .map_err(pg_error)?;
            return Ok(rows
                .into_iter()
                .map(|r| into_model(r, idle_cutoff))
                .collect());
        }
    };
    /// The statement led by `$lead` (a WHERE condition, a literal).
    macro_rules! led_by {
        ($lead:tt) => {
            sqlx::query_as!(
                Row,
                r#"SELECT c.seq AS "seq!", c.id, c.app_id, c.user_id, c.client_id, c.created_at,
                          c.updated_at, c.expired_at,
                          (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id)
                              AS "message_count!: i64"
                   FROM conversations c
                   WHERE "#
                    + $lead
                    + r#"
                     AND c.seq < ?1
                     AND (?2 IS NULL OR c.app_id = ?2)
                     AND (?3 IS NULL OR c.user_id = ?3)
                     AND (?4 IS NULL OR c.client_id = ?4)
                     AND (?5 IS NULL OR (c.expired_at IS NULL AND c.updated_at > ?6) = ?5)
                   ORDER BY c.seq DESC LIMIT ?7"#,
                before,
                app,
                f.user,
                client,
                active,
                idle_cutoff,
                f.limit
            )
            .fetch_all(ex)
            .await?
        };
    }
    let rows = match (f.user.is_some(), client.is_some(), app.is_some()) {
        (true, _, _) => led_by!("c.user_id = ?3"),
        (false, true, _) => led_by!("c.client_id = ?4"),
        (false, false, true) => led_by!("c.app_id = ?2"),
        (false, false, false) => led_by!("1"),
    };
    Ok(rows
        .into_iter()
        .map(|r| into_model(r, idle_cutoff))
        .collect())
}

pub async fn count_active(db: &Reader, idle_cutoff: i64) -> StoreResult<i64> {
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            return pgsql::conversations::count_active(idle_cutoff)
                .fetch_one(pool)
                .await
                .map_err(pg_error);
        }
    };
    let n = sqlx::query_scalar!(
        r#"SELECT COUNT(*) AS "n!: i64" FROM conversations
           WHERE expired_at IS NULL AND updated_at > ?"#,
        idle_cutoff
    )
    .fetch_one(ex)
    .await?;
    Ok(n)
}
