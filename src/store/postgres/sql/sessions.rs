//! User sessions and accounts (`src/store/sessions.rs`).

use crate::{Row, Rows, Statement};

#[allow(clippy::too_many_arguments)]
pub fn insert(
    id: &str,
    app: &str,
    user: &str,
    account: Option<&str>,
    token_hash: &str,
    now: i64,
    expires_at: i64,
) -> Statement {
    sqlx::query!(
        "INSERT INTO sessions
            (id, app_id, user_id, account_id, token_hash, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        id,
        app,
        user,
        account,
        token_hash,
        now,
        expires_at
    )
}

/// A live session's token hash, app, user, expiry and its app's
/// credentials' version.
#[allow(clippy::type_complexity)]
pub fn credential(id: &str, now: i64) -> Rows<impl Row<(String, String, String, i64, i64)>> {
    sqlx::query!(
        r#"SELECT s.token_hash, s.app_id, s.user_id, s.expires_at,
                  COALESCE(a.credentials_changed_at, 0) AS "version!"
           FROM sessions s
           JOIN apps a ON a.id = s.app_id
           LEFT JOIN accounts acc ON acc.id = s.account_id
           WHERE s.id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2
             AND a.revoked_at IS NULL AND acc.disabled_at IS NULL"#,
        id,
        now
    )
    .map(|r| (r.token_hash, r.app_id, r.user_id, r.expires_at, r.version))
}

pub fn refresh(id: &str, now: i64, expires_at: i64) -> Statement {
    sqlx::query!(
        "UPDATE sessions SET expires_at = $3
         WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2
           AND EXISTS (SELECT 1 FROM apps WHERE id = sessions.app_id AND revoked_at IS NULL)",
        id,
        now,
        expires_at
    )
}

pub fn revoke(id: &str, now: i64) -> Statement {
    sqlx::query!(
        "UPDATE sessions SET revoked_at = $2
         WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2",
        id,
        now
    )
}

/// Revokes an account's live sessions; returns their ids.
pub fn revoke_of_account(account: &str, now: i64) -> Rows<impl Row<String>> {
    sqlx::query!(
        "UPDATE sessions SET revoked_at = $2
         WHERE account_id = $1 AND revoked_at IS NULL AND expires_at > $2
         RETURNING id",
        account,
        now
    )
    .map(|r| r.id)
}

/// Deletes up to `limit` sessions that expired or were revoked before
/// `before`.
pub fn delete_ended(before: i64, limit: i64) -> Statement {
    sqlx::query!(
        "DELETE FROM sessions WHERE id IN (
            SELECT id FROM sessions WHERE expires_at < $1
            UNION SELECT id FROM sessions WHERE revoked_at < $1
            LIMIT $2)",
        before,
        limit
    )
}

pub fn insert_account(id: &str, app: &str, name: &str, password_hash: &str, now: i64) -> Statement {
    sqlx::query!(
        "INSERT INTO accounts (id, app_id, name, password_hash, created_at)
         VALUES ($1, $2, $3, $4, $5)",
        id,
        app,
        name,
        password_hash,
        now
    )
}

/// Requests for one account name take turns until their transactions end.
pub fn lock_account_name(name: &str) -> Statement {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 2))",
        name
    )
}

pub fn account_name_taken(name: &str) -> Rows<impl Row<bool>> {
    sqlx::query!(
        r#"SELECT EXISTS (SELECT 1 FROM accounts WHERE name = $1) AS "taken!""#,
        name
    )
    .map(|r| r.taken)
}

/// Id, app, name, password hash, created_at, disabled_at.
#[allow(clippy::type_complexity)]
pub fn accounts(
    name: Option<&str>,
    app: Option<&str>,
) -> Rows<impl Row<(String, String, String, String, i64, Option<i64>)>> {
    sqlx::query!(
        "SELECT id, app_id, name, password_hash, created_at, disabled_at FROM accounts
         WHERE ($1::text IS NULL OR name = $1) AND ($2::text IS NULL OR app_id = $2)
         ORDER BY name",
        name,
        app
    )
    .map(|r| {
        (
            r.id,
            r.app_id,
            r.name,
            r.password_hash,
            r.created_at,
            r.disabled_at,
        )
    })
}

/// Returns the account's id.
pub fn set_disabled(name: &str, at: Option<i64>) -> Rows<impl Row<String>> {
    sqlx::query!(
        "UPDATE accounts SET disabled_at = $2 WHERE name = $1 RETURNING id",
        name,
        at
    )
    .map(|r| r.id)
}

/// Returns the account's id.
pub fn set_password(name: &str, password_hash: &str) -> Rows<impl Row<String>> {
    sqlx::query!(
        "UPDATE accounts SET password_hash = $2 WHERE name = $1 RETURNING id",
        name,
        password_hash
    )
    .map(|r| r.id)
}
