//! Apps: the user-facing side and their credentials.

use super::{Credential, StoreResult};
use crate::ids::AppId;
use sqlx::{SqliteConnection, SqliteExecutor};

pub struct Row {
    pub id: AppId,
    pub name: String,
    pub public: bool,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

pub async fn insert(
    tx: &mut SqliteConnection,
    id: &AppId,
    name: &str,
    token_hash: &str,
    now: i64,
) -> StoreResult<()> {
    sqlx::query!(
        "INSERT INTO apps (id, name, token_hash, created_at) VALUES (?, ?, ?, ?)",
        id,
        name,
        token_hash,
        now
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn list(ex: impl SqliteExecutor<'_>) -> StoreResult<Vec<Row>> {
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

/// The token hash of an app that is not revoked (never the public app's).
pub async fn credential(
    ex: impl SqliteExecutor<'_>,
    id: &AppId,
) -> StoreResult<Option<Credential>> {
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
pub async fn revoke(tx: &mut SqliteConnection, id: &AppId, now: i64) -> StoreResult<bool> {
    let n = sqlx::query!(
        "UPDATE apps SET revoked_at = ?2, credentials_changed_at = ?2 WHERE id = ?1 AND revoked_at IS NULL AND token_hash IS NOT NULL",
        id,
        now
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Replaces the token hash of an active app. Returns its name, or None
/// when there is no such app.
pub async fn set_token(
    tx: &mut SqliteConnection,
    id: &AppId,
    token_hash: &str,
    now: i64,
) -> StoreResult<Option<String>> {
    let name = sqlx::query_scalar!(
        "UPDATE apps SET token_hash = ?2, credentials_changed_at = ?3
         WHERE id = ?1 AND revoked_at IS NULL AND token_hash IS NOT NULL
         RETURNING name",
        id,
        token_hash,
        now
    )
    .fetch_optional(&mut *tx)
    .await?;
    Ok(name)
}
