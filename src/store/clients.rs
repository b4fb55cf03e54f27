//! Clients: agent instances and their credentials.

use super::postgres::error as pg_error;
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
    match tx {
        Tx::Sqlite(c) => {
            c.prepare_cached(
                "INSERT INTO clients (id, name, token_hash, created_at) VALUES (?, ?, ?, ?)",
            )?
            .execute((id, name, token_hash, now))?;
        }
        Tx::Postgres(pg) => {
            pg.execute(pgsql::clients::insert(id.as_str(), name, token_hash, now))?;
        }
    }
    Ok(())
}

pub async fn list(db: &Reader) -> StoreResult<Vec<Row>> {
    type Columns = (String, String, i64, Option<i64>, i64, Option<i64>);
    let rows: Vec<Columns> = match db {
        Reader::Sqlite(pool) => sqlx::query!(
            "SELECT id, name, pending, last_seen_at, created_at, revoked_at FROM clients ORDER BY created_at, id"
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| (r.id, r.name, r.pending, r.last_seen_at, r.created_at, r.revoked_at))
        .collect(),
        Reader::Postgres(pool) => pgsql::clients::list()
            .fetch_all(pool)
        .await
        .map_err(pg_error)?,
    };
    Ok(rows
        .into_iter()
        .map(
            |(id, name, pending, last_seen_at, created_at, revoked_at)| Row {
                id: ClientId::from_db(id),
                name,
                pending,
                last_seen_at,
                created_at,
                revoked_at,
            },
        )
        .collect())
}

/// The token hash of a client that is not revoked.
pub async fn credential(db: &Reader, id: &ClientId) -> StoreResult<Option<Credential>> {
    let row: Option<(String, i64)> = match db {
        Reader::Sqlite(pool) => sqlx::query!(
            r#"SELECT token_hash AS "hash!: String", COALESCE(credentials_changed_at, 0) AS "version!: i64"
               FROM clients WHERE id = ? AND revoked_at IS NULL"#,
            id
        )
        .fetch_optional(pool)
        .await?
        .map(|r| (r.hash, r.version)),
        Reader::Postgres(pool) => pgsql::clients::credential(id.as_str())
            .fetch_optional(pool)
        .await
        .map_err(pg_error)?,
    };
    Ok(row.map(|(hash, version)| Credential { hash, version }))
}

/// Revokes a client. Returns false when there is no such active client.
pub fn revoke(tx: &Tx, id: &ClientId, now: i64) -> StoreResult<bool> {
    let n = match tx {
        Tx::Sqlite(c) => c
            .prepare_cached(
                "UPDATE clients SET revoked_at = ?2, credentials_changed_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            )?
            .execute((id, now))? as u64,
        Tx::Postgres(pg) => pg.execute(pgsql::clients::revoke(id.as_str(), now))?,
    };
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
    match tx {
        Tx::Sqlite(c) => Ok(c
            .prepare_cached(
                "UPDATE clients SET token_hash = ?2, credentials_changed_at = ?3
                 WHERE id = ?1 AND revoked_at IS NULL
                 RETURNING name",
            )?
            .query_row((id, token_hash, now), |r| r.get(0))
            .optional()?),
        Tx::Postgres(pg) => {
            pg.fetch_optional(pgsql::clients::set_token(id.as_str(), token_hash, now))
        }
    }
}

/// Of the active clients in `live`, the one with the fewest open deliveries
/// (ties broken at random), with that number.
pub fn least_loaded(tx: &Tx, live: &[ClientId]) -> StoreResult<Option<(ClientId, i64)>> {
    if live.is_empty() {
        return Ok(None);
    }
    let row: Option<(String, i64)> = match tx {
        Tx::Sqlite(c) => {
            let ids = serde_json::to_string(live).unwrap_or_else(|_| "[]".to_owned());
            c.prepare_cached(
                "SELECT id, pending FROM clients
                 WHERE revoked_at IS NULL AND id IN (SELECT value FROM json_each(?1))
                 ORDER BY pending, random() LIMIT 1",
            )?
            .query_row([ids], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
        }
        Tx::Postgres(pg) => pg.fetch_optional(pgsql::clients::least_loaded(
            &live.iter().map(ClientId::as_str).collect::<Vec<_>>(),
        ))?,
    };
    Ok(row.map(|(id, pending)| (ClientId::from_db(id), pending)))
}

pub fn set_last_seen(tx: &Tx, id: &ClientId, at: i64) -> StoreResult<()> {
    match tx {
        Tx::Sqlite(c) => {
            c.prepare_cached(
                "UPDATE clients SET last_seen_at = ?2 WHERE id = ?1 AND (last_seen_at IS NULL OR last_seen_at < ?2)",
            )?
            .execute((id, at))?;
        }
        Tx::Postgres(pg) => {
            pg.execute(pgsql::clients::set_last_seen(id.as_str(), at))?;
        }
    }
    Ok(())
}

/// The clients, apps and user sessions whose credential was revoked or
/// rotated after `since` (ms): their ids and when.
pub async fn credentials_changed_since(db: &Reader, since: i64) -> StoreResult<Vec<(String, i64)>> {
    match db {
        Reader::Sqlite(pool) => Ok(sqlx::query!(
            r#"SELECT id AS "id!", credentials_changed_at AS "at!: i64" FROM clients WHERE credentials_changed_at > ?1
               UNION ALL
               SELECT id, credentials_changed_at FROM apps WHERE credentials_changed_at > ?1
               UNION ALL
               SELECT id, revoked_at FROM sessions WHERE revoked_at > ?1"#,
            since
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| (r.id, r.at))
        .collect()),
        Reader::Postgres(pool) => pgsql::clients::credentials_changed_since(since)
            .fetch_all(pool)
        .await
        .map_err(pg_error),
    }
}
