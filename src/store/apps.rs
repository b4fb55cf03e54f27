//! Apps: the user-facing side and their credentials.

use super::postgres::error as pg_error;
use super::{Credential, Reader, StoreResult, Tx};
use crate::ids::AppId;
use rusqlite::OptionalExtension;

pub struct Row {
    pub id: AppId,
    pub name: String,
    pub public: bool,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

pub fn insert(tx: &Tx, id: &AppId, name: &str, token_hash: &str, now: i64) -> StoreResult<()> {
    match tx {
        Tx::Sqlite(c) => {
            c.prepare_cached(
                "INSERT INTO apps (id, name, token_hash, created_at) VALUES (?, ?, ?, ?)",
            )?
            .execute((id, name, token_hash, now))?;
        }
        Tx::Postgres(pg) => {
            pg.execute(pgsql::apps::insert(id.as_str(), name, token_hash, now))?;
        }
    }
    Ok(())
}

pub async fn list(db: &Reader) -> StoreResult<Vec<Row>> {
    type Columns = (String, String, bool, i64, Option<i64>);
    let rows: Vec<Columns> = match db {
        Reader::Sqlite(pool) => sqlx::query!(
            r#"SELECT id, name, token_hash IS NULL AS "public!: bool", created_at, revoked_at
               FROM apps ORDER BY created_at, id"#
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| (r.id, r.name, r.public, r.created_at, r.revoked_at))
        .collect(),
        Reader::Postgres(pool) => pgsql::apps::list()
            .fetch_all(pool)
            .await
            .map_err(pg_error)?,
    };
    Ok(rows
        .into_iter()
        .map(|(id, name, public, created_at, revoked_at)| Row {
            id: AppId::from_db(id),
            name,
            public,
            created_at,
            revoked_at,
        })
        .collect())
}

/// Whether `id` is an app that is not revoked (the public app included).
pub async fn is_active(db: &Reader, id: &AppId) -> StoreResult<bool> {
    match db {
        Reader::Sqlite(pool) => Ok(sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM apps WHERE id = ? AND revoked_at IS NULL) AS "found!: bool""#,
            id
        )
        .fetch_one(pool)
        .await?),
        Reader::Postgres(pool) => pgsql::apps::is_active(id.as_str())
            .fetch_one(pool)
        .await
        .map_err(pg_error),
    }
}

/// The token hash of an app that is not revoked (never the public app's).
pub async fn credential(db: &Reader, id: &AppId) -> StoreResult<Option<Credential>> {
    let row: Option<(Option<String>, i64)> = match db {
        Reader::Sqlite(pool) => sqlx::query!(
            r#"SELECT token_hash AS "hash?: String", COALESCE(credentials_changed_at, 0) AS "version!: i64"
               FROM apps WHERE id = ? AND revoked_at IS NULL"#,
            id
        )
        .fetch_optional(pool)
        .await?
        .map(|r| (r.hash, r.version)),
        Reader::Postgres(pool) => pgsql::apps::credential(id.as_str())
            .fetch_optional(pool)
        .await
        .map_err(pg_error)?,
    };
    Ok(row.and_then(|(hash, version)| {
        Some(Credential {
            hash: hash?,
            version,
        })
    }))
}

/// Revokes an app. Returns false when there is no such active app with a token.
pub fn revoke(tx: &Tx, id: &AppId, now: i64) -> StoreResult<bool> {
    let n = match tx {
        Tx::Sqlite(c) => c
            .prepare_cached(
                "UPDATE apps SET revoked_at = ?2, credentials_changed_at = ?2 WHERE id = ?1 AND revoked_at IS NULL AND token_hash IS NOT NULL",
            )?
            .execute((id, now))? as u64,
        Tx::Postgres(pg) => pg.execute(pgsql::apps::revoke(id.as_str(), now))?,
    };
    Ok(n == 1)
}

/// Replaces the token hash of an active app. Returns its name, or None
/// when there is no such app.
pub fn set_token(tx: &Tx, id: &AppId, token_hash: &str, now: i64) -> StoreResult<Option<String>> {
    match tx {
        Tx::Sqlite(c) => Ok(c
            .prepare_cached(
                "UPDATE apps SET token_hash = ?2, credentials_changed_at = ?3
                 WHERE id = ?1 AND revoked_at IS NULL AND token_hash IS NOT NULL
                 RETURNING name",
            )?
            .query_row((id, token_hash, now), |r| r.get(0))
            .optional()?),
        Tx::Postgres(pg) => pg.fetch_optional(pgsql::apps::set_token(id.as_str(), token_hash, now)),
    }
}
