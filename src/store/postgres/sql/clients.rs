//! Agents' clients (`src/store/clients.rs`).

use crate::{Row, Rows, Statement};

pub fn insert(id: &str, name: &str, token_hash: &str, now: i64) -> Statement {
    sqlx::query!(
        "INSERT INTO clients (id, name, token_hash, created_at) VALUES ($1, $2, $3, $4)",
        id,
        name,
        token_hash,
        now
    )
}

/// Id, name, pending, last_seen_at, created_at, revoked_at.
#[allow(clippy::type_complexity)]
pub fn list() -> Rows<impl Row<(String, String, i64, Option<i64>, i64, Option<i64>)>> {
    sqlx::query!(
        r#"SELECT id, name, client_pending(id) AS "pending!", last_seen_at, created_at, revoked_at
           FROM clients ORDER BY created_at, id"#
    )
    .map(|r| {
        (
            r.id,
            r.name,
            r.pending,
            r.last_seen_at,
            r.created_at,
            r.revoked_at,
        )
    })
}

/// The token hash and the credentials' version.
pub fn credential(id: &str) -> Rows<impl Row<(String, i64)>> {
    sqlx::query!(
        r#"SELECT token_hash, COALESCE(credentials_changed_at, 0) AS "version!"
           FROM clients WHERE id = $1 AND revoked_at IS NULL"#,
        id
    )
    .map(|r| (r.token_hash, r.version))
}

pub fn revoke(id: &str, now: i64) -> Statement {
    sqlx::query!(
        "UPDATE clients SET revoked_at = $2, credentials_changed_at = $2
         WHERE id = $1 AND revoked_at IS NULL",
        id,
        now
    )
}

/// Returns the client's name.
pub fn set_token(id: &str, token_hash: &str, now: i64) -> Rows<impl Row<String>> {
    sqlx::query!(
        "UPDATE clients SET token_hash = $2, credentials_changed_at = $3
         WHERE id = $1 AND revoked_at IS NULL
         RETURNING name",
        id,
        token_hash,
        now
    )
    .map(|r| r.name)
}

/// Of the active clients among `live`, one with the fewest pending
/// deliveries (ties at random), with that number.
pub fn least_loaded(live: &[&str]) -> Rows<impl Row<(String, i64)>> {
    sqlx::query!(
        r#"SELECT id, client_pending(id) AS "pending!" FROM clients
           WHERE revoked_at IS NULL AND id = ANY($1)
           ORDER BY 2, random() LIMIT 1"#,
        live as &[&str]
    )
    .map(|r| (r.id, r.pending))
}

pub fn set_last_seen(id: &str, at: i64) -> Statement {
    sqlx::query!(
        "UPDATE clients SET last_seen_at = $2
         WHERE id = $1 AND (last_seen_at IS NULL OR last_seen_at < $2)",
        id,
        at
    )
}

/// Ids of clients, apps and sessions whose credentials changed after
/// `since`, with when.
pub fn credentials_changed_since(since: i64) -> Rows<impl Row<(String, i64)>> {
    sqlx::query!(
        r#"SELECT id AS "id!", credentials_changed_at AS "at!" FROM clients WHERE credentials_changed_at > $1
           UNION ALL
           SELECT id, credentials_changed_at FROM apps WHERE credentials_changed_at > $1
           UNION ALL
           SELECT id, revoked_at FROM sessions WHERE revoked_at > $1"#,
        since
    )
    .map(|r| (r.id, r.at))
}
