//! Clients: agent instances and their credentials.

use super::{Credential, Reader, StoreResult, Tx};
use crate::ids::ClientId;
use rusqlite::OptionalExtension;

pub struct Row {
    pub id: ClientId,
    pub name: String,
    pub pending: i64,
    pub last_seen_at: Option<i64>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

pub fn insert(tx: &Tx, id: &ClientId, name: &str, token_hash: &str, now: i64) -> StoreResult<()> {
    let tx = tx.sqlite()?;
    tx.prepare_cached(
        "INSERT INTO clients (id, name, token_hash, created_at) VALUES (?, ?, ?, ?)",
    )?
    .execute((id, name, token_hash, now))?;
    Ok(())
}

pub async fn list(db: &Reader) -> StoreResult<Vec<Row>> {
    let ex = db.sqlite()?;
    let rows = sqlx::query!(
        "SELECT id, name, pending, last_seen_at, created_at, revoked_at FROM clients ORDER BY created_at, id"
    )
    .fetch_all(ex)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Row {
            id: ClientId::from_db(r.id),
            name: r.name,
            pending: r.pending,
            last_seen_at: r.last_seen_at,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        })
        .collect())
}

/// The token hash of a client that is not revoked.
pub async fn credential(db: &Reader, id: &ClientId) -> StoreResult<Option<Credential>> {
    let ex = db.sqlite()?;
    let row = sqlx::query!(
        r#"SELECT token_hash AS "hash?: String", COALESCE(credentials_changed_at, 0) AS "version!: i64"
           FROM clients WHERE id = ? AND revoked_at IS NULL"#,
        id
    )
    .fetch_optional(ex)
    .await?;
    Ok(row.and_then(|r| {
        Some(Credential {
            hash: r.hash?,
            version: r.version,
        })
    }))
}

/// Revokes a client. Returns false when there is no such active client.
pub fn revoke(tx: &Tx, id: &ClientId, now: i64) -> StoreResult<bool> {
    let tx = tx.sqlite()?;
    let n = tx
        .prepare_cached(
            "UPDATE clients SET revoked_at = ?2, credentials_changed_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        )?
        .execute((id, now))?;
    Ok(n == 1)
}

/// Replaces the token hash of an active client. Returns its name, or None
/// when there is no such client.
pub fn set_token(
    tx: &Tx,
    id: &ClientId,
    token_hash: &str,
    now: i64,
) -> StoreResult<Option<String>> {
    let tx = tx.sqlite()?;
    let name = tx
        .prepare_cached(
            "UPDATE clients SET token_hash = ?2, credentials_changed_at = ?3
             WHERE id = ?1 AND revoked_at IS NULL
             RETURNING name",
        )?
        .query_row((id, token_hash, now), |r| r.get(0))
        .optional()?;
    Ok(name)
}

/// Of the active clients in `live`, the one with the fewest open deliveries;
/// Of the active clients in `live`, the one with the fewest open deliveries
/// (ties broken at random), with that number.
pub fn least_loaded(tx: &Tx, live: &[ClientId]) -> StoreResult<Option<(ClientId, i64)>> {
    let tx = tx.sqlite()?;
    if live.is_empty() {
        return Ok(None);
    }
    let ids = serde_json::to_string(live).unwrap_or_else(|_| "[]".to_owned());
    let row = tx
        .prepare_cached(
            "SELECT id, pending FROM clients
             WHERE revoked_at IS NULL AND id IN (SELECT value FROM json_each(?1))
             ORDER BY pending, random() LIMIT 1",
        )?
        .query_row([ids], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .optional()?;
    Ok(row.map(|(id, pending)| (ClientId::from_db(id), pending)))
}

pub fn set_last_seen(tx: &Tx, id: &ClientId, at: i64) -> StoreResult<()> {
    let tx = tx.sqlite()?;
    tx.prepare_cached(
        "UPDATE clients SET last_seen_at = ?2 WHERE id = ?1 AND (last_seen_at IS NULL OR last_seen_at < ?2)",
    )?
    .execute((id, at))?;
    Ok(())
}

/// The clients, apps and user sessions whose credential was revoked or
/// rotated after `since` (ms): their ids and when.
pub async fn credentials_changed_since(db: &Reader, since: i64) -> StoreResult<Vec<(String, i64)>> {
    let ex = db.sqlite()?;
    let rows = sqlx::query!(
        r#"SELECT id AS "id!", credentials_changed_at AS "at!: i64" FROM clients WHERE credentials_changed_at > ?1
           UNION ALL
           SELECT id, credentials_changed_at FROM apps WHERE credentials_changed_at > ?1
           UNION ALL
           SELECT id, revoked_at FROM sessions WHERE revoked_at > ?1"#,
        since
    )
    .fetch_all(ex)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.at)).collect())
}
