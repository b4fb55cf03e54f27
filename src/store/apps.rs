//! Apps: the user-facing side and their credentials.

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
    let tx = tx.sqlite()?;
    tx.prepare_cached("INSERT INTO apps (id, name, token_hash, created_at) VALUES (?, ?, ?, ?)")?
        .execute((id, name, token_hash, now))?;
    Ok(())
}

pub async fn list(db: &Reader) -> StoreResult<Vec<Row>> {
    let ex = db.sqlite()?;
    let rows = sqlx::query!(
        r#"SELECT id, name, token_hash IS NULL AS "public!: bool", created_at, revoked_at
           FROM apps ORDER BY created_at, id"#
    )
    .fetch_all(ex)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Row {
            id: AppId::from_db(r.id),
            name: r.name,
            public: r.public,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        })
        .collect())
}

/// Whether `id` is an app that is not revoked (the public app included).
pub async fn is_active(db: &Reader, id: &AppId) -> StoreResult<bool> {
    let ex = db.sqlite()?;
    let found = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM apps WHERE id = ? AND revoked_at IS NULL) AS "found!: bool""#,
        id
    )
    .fetch_one(ex)
    .await?;
    Ok(found)
}

/// The token hash of an app that is not revoked (never the public app's).
pub async fn credential(db: &Reader, id: &AppId) -> StoreResult<Option<Credential>> {
    let ex = db.sqlite()?;
    let row = sqlx::query!(
        r#"SELECT token_hash AS "hash?: String", COALESCE(credentials_changed_at, 0) AS "version!: i64"
           FROM apps WHERE id = ? AND revoked_at IS NULL"#,
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

/// Revokes an app. Returns false when there is no such active app with a token.
pub fn revoke(tx: &Tx, id: &AppId, now: i64) -> StoreResult<bool> {
    let tx = tx.sqlite()?;
    let n = tx
        .prepare_cached(
            "UPDATE apps SET revoked_at = ?2, credentials_changed_at = ?2 WHERE id = ?1 AND revoked_at IS NULL AND token_hash IS NOT NULL",
        )?
        .execute((id, now))?;
    Ok(n == 1)
}

/// Replaces the token hash of an active app. Returns its name, or None
/// when there is no such app.
pub fn set_token(tx: &Tx, id: &AppId, token_hash: &str, now: i64) -> StoreResult<Option<String>> {
    let tx = tx.sqlite()?;
    let name = tx
        .prepare_cached(
            "UPDATE apps SET token_hash = ?2, credentials_changed_at = ?3
             WHERE id = ?1 AND revoked_at IS NULL AND token_hash IS NOT NULL
             RETURNING name",
        )?
        .query_row((id, token_hash, now), |r| r.get(0))
        .optional()?;
    Ok(name)
}
