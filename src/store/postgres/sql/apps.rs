//! Apps (`src/store/apps.rs`).

use crate::{Row, Rows, Statement};

pub fn insert(id: &str, name: &str, token_hash: &str, now: i64) -> Statement {
    sqlx::query!(
        "INSERT INTO apps (id, name, token_hash, created_at) VALUES ($1, $2, $3, $4)",
        id,
        name,
        token_hash,
        now
    )
}

/// Id, name, public (no token), created_at, revoked_at.
pub fn list() -> Rows<impl Row<(String, String, bool, i64, Option<i64>)>> {
    sqlx::query!(
        r#"SELECT id, name, token_hash IS NULL AS "public!", created_at, revoked_at
           FROM apps ORDER BY created_at, id"#
    )
    .map(|r| (r.id, r.name, r.public, r.created_at, r.revoked_at))
}

pub fn is_active(id: &str) -> Rows<impl Row<bool>> {
    sqlx::query!(
        r#"SELECT EXISTS (SELECT 1 FROM apps WHERE id = $1 AND revoked_at IS NULL) AS "found!""#,
        id
    )
    .map(|r| r.found)
}

/// The token hash (none for the public app) and the credentials' version.
pub fn credential(id: &str) -> Rows<impl Row<(Option<String>, i64)>> {
    sqlx::query!(
        r#"SELECT token_hash, COALESCE(credentials_changed_at, 0) AS "version!"
           FROM apps WHERE id = $1 AND revoked_at IS NULL"#,
        id
    )
    .map(|r| (r.token_hash, r.version))
}

pub fn revoke(id: &str, now: i64) -> Statement {
    sqlx::query!(
        "UPDATE apps SET revoked_at = $2, credentials_changed_at = $2
         WHERE id = $1 AND revoked_at IS NULL AND token_hash IS NOT NULL",
        id,
        now
    )
}

/// Returns the app's name.
pub fn set_token(id: &str, token_hash: &str, now: i64) -> Rows<impl Row<String>> {
    sqlx::query!(
        "UPDATE apps SET token_hash = $2, credentials_changed_at = $3
         WHERE id = $1 AND revoked_at IS NULL AND token_hash IS NOT NULL
         RETURNING name",
        id,
        token_hash,
        now
    )
    .map(|r| r.name)
}
