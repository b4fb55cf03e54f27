//! User sessions and the built-in accounts that open them by logging in (see
//! the migration `0008_sessions.sql` for the model).

use super::postgres::error as pg_error;
use super::{Reader, StoreResult, Tx};
use crate::ids::{AccountId, AppId, SessionId, UserId};
use rusqlite::OptionalExtension;

pub struct NewSession<'a> {
    pub id: &'a SessionId,
    pub app: &'a AppId,
    pub user: &'a UserId,
    pub account: Option<&'a AccountId>,
    pub token_hash: &'a str,
    pub now: i64,
    pub expires_at: i64,
}

pub fn insert(tx: &Tx, s: NewSession<'_>) -> StoreResult<()> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            pg.execute(pgsql::sessions::insert(
                s.id.as_str(),
                s.app.as_str(),
                s.user.as_str(),
                s.account.map(AccountId::as_str),
                s.token_hash,
                s.now,
                s.expires_at,
            ))?;
            return Ok(());
        }
    };
    tx.prepare_cached(
        "INSERT INTO sessions (id, app_id, user_id, account_id, token_hash, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute((
        s.id,
        s.app,
        s.user,
        s.account,
        s.token_hash,
        s.now,
        s.expires_at,
    ))?;
    Ok(())
}

/// A live session's stored token and whom it speaks for.
pub struct SessionCredential {
    pub hash: String,
    pub app: AppId,
    pub user: UserId,
    /// The app's credential version: a session ends with its app's token.
    pub version: i64,
    pub expires_at: i64,
}

/// The credential of a session that is neither revoked nor expired, of an
/// app that is not revoked and (for a login) an account that is not disabled.
pub async fn credential(
    db: &Reader,
    id: &SessionId,
    now: i64,
) -> StoreResult<Option<SessionCredential>> {
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            let row = pgsql::sessions::credential(id.as_str(), now)
                .fetch_optional(pool)
                .await
                .map_err(pg_error)?;
            return Ok(
                row.map(|(hash, app, user, expires_at, version)| SessionCredential {
                    hash,
                    app: AppId::from_db(app),
                    user: UserId::from_db(user),
                    version,
                    expires_at,
                }),
            );
        }
    };
    let row = sqlx::query!(
        r#"SELECT s.token_hash, s.app_id, s.user_id, s.expires_at,
                  COALESCE(a.credentials_changed_at, 0) AS "version!: i64"
           FROM sessions s
           JOIN apps a ON a.id = s.app_id
           LEFT JOIN accounts acc ON acc.id = s.account_id
           WHERE s.id = ?1 AND s.revoked_at IS NULL AND s.expires_at > ?2
             AND a.revoked_at IS NULL AND acc.disabled_at IS NULL"#,
        id,
        now
    )
    .fetch_optional(ex)
    .await?;
    Ok(row.map(|r| SessionCredential {
        hash: r.token_hash,
        app: AppId::from_db(r.app_id),
        user: UserId::from_db(r.user_id),
        version: r.version,
        expires_at: r.expires_at,
    }))
}

/// Moves a live session's expiry to `expires_at`. None: no such live session.
pub fn refresh(tx: &Tx, id: &SessionId, now: i64, expires_at: i64) -> StoreResult<Option<i64>> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let n = pg.execute(pgsql::sessions::refresh(id.as_str(), now, expires_at))?;
            return Ok((n == 1).then_some(expires_at));
        }
    };
    let n = tx
        .prepare_cached(
            "UPDATE sessions SET expires_at = ?3
             WHERE id = ?1 AND revoked_at IS NULL AND expires_at > ?2
               AND EXISTS (SELECT 1 FROM apps WHERE id = sessions.app_id AND revoked_at IS NULL)",
        )?
        .execute((id, now, expires_at))?;
    Ok((n == 1).then_some(expires_at))
}

/// Revokes one session. Returns false when it was not live.
pub fn revoke(tx: &Tx, id: &SessionId, now: i64) -> StoreResult<bool> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let n = pg.execute(pgsql::sessions::revoke(id.as_str(), now))?;
            return Ok(n == 1);
        }
    };
    let n = tx
        .prepare_cached(
            "UPDATE sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL AND expires_at > ?2",
        )?
        .execute((id, now))?;
    Ok(n == 1)
}

/// Revokes every live session of an account; returns their ids.
pub fn revoke_for_account(tx: &Tx, account: &AccountId, now: i64) -> StoreResult<Vec<SessionId>> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let ids = pg.fetch_all(pgsql::sessions::revoke_of_account(account.as_str(), now))?;
            return Ok(ids.into_iter().map(SessionId::from_db).collect());
        }
    };
    let mut stmt = tx.prepare_cached(
        "UPDATE sessions SET revoked_at = ?2
         WHERE account_id = ?1 AND revoked_at IS NULL AND expires_at > ?2 RETURNING id",
    )?;
    let ids = stmt
        .query_map((account, now), |r| r.get::<_, String>(0))?
        .map(|r| r.map(SessionId::from_db))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ids)
}

/// Deletes sessions that expired or were revoked before `before`.
pub fn purge(tx: &Tx, before: i64, limit: i64) -> StoreResult<i64> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let n = pg.execute(pgsql::sessions::delete_ended(before, limit))?;
            return Ok(n as i64);
        }
    };
    let n = tx
        .prepare_cached(
            "DELETE FROM sessions WHERE id IN (
                SELECT id FROM sessions WHERE expires_at < ?1
                UNION SELECT id FROM sessions WHERE revoked_at < ?1
                LIMIT ?2)",
        )?
        .execute((before, limit))?;
    Ok(n as i64)
}

pub struct Account {
    pub id: AccountId,
    pub app: AppId,
    pub name: String,
    pub password_hash: String,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
}

pub fn insert_account(
    tx: &Tx,
    id: &AccountId,
    app: &AppId,
    name: &str,
    password_hash: &str,
    now: i64,
) -> StoreResult<()> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            pg.execute(pgsql::sessions::insert_account(
                id.as_str(),
                app.as_str(),
                name,
                password_hash,
                now,
            ))?;
            return Ok(());
        }
    };
    tx.prepare_cached(
        "INSERT INTO accounts (id, app_id, name, password_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute((id, app, name, password_hash, now))?;
    Ok(())
}

/// Whether an account has this login name (inside a write, before inserting).
/// On PostgreSQL the writers asking for one name take turns from here to the
/// end of their transactions (an advisory lock), so two relays creating the
/// same account at once see each other's instead of colliding on the
/// unique index.
pub fn name_taken(tx: &Tx, name: &str) -> StoreResult<bool> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            pg.execute(pgsql::sessions::lock_account_name(name))?;
            return pg.fetch_one(pgsql::sessions::account_name_taken(name));
        }
    };
    Ok(tx
        .prepare_cached("SELECT 1 FROM accounts WHERE name = ?1")?
        .query_row([name], |_| Ok(()))
        .optional()?
        .is_some())
}

/// The accounts with login name `name` (at most one), or all of them, or
/// those of one app; by name.
pub async fn accounts(
    db: &Reader,
    name: Option<&str>,
    app: Option<&AppId>,
) -> StoreResult<Vec<Account>> {
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            let rows = pgsql::sessions::accounts(name, app.map(AppId::as_str))
                .fetch_all(pool)
                .await
                .map_err(pg_error)?;
            return Ok(rows
                .into_iter()
                .map(
                    |(id, app, name, password_hash, created_at, disabled_at)| Account {
                        id: AccountId::from_db(id),
                        app: AppId::from_db(app),
                        name,
                        password_hash,
                        created_at,
                        disabled_at,
                    },
                )
                .collect());
        }
    };
    let rows = sqlx::query!(
        r#"SELECT id, app_id, name, password_hash, created_at, disabled_at FROM accounts
           WHERE (?1 IS NULL OR name = ?1) AND (?2 IS NULL OR app_id = ?2)
           ORDER BY name"#,
        name,
        app
    )
    .fetch_all(ex)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Account {
            id: AccountId::from_db(r.id),
            app: AppId::from_db(r.app_id),
            name: r.name,
            password_hash: r.password_hash,
            created_at: r.created_at,
            disabled_at: r.disabled_at,
        })
        .collect())
}

/// Disables (`Some(now)`) or enables (`None`) the account named `name`;
/// returns its id, None for no such account.
pub fn set_disabled(tx: &Tx, name: &str, at: Option<i64>) -> StoreResult<Option<AccountId>> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let id = pg.fetch_optional(pgsql::sessions::set_disabled(name, at))?;
            return Ok(id.map(AccountId::from_db));
        }
    };
    Ok(tx
        .prepare_cached("UPDATE accounts SET disabled_at = ?2 WHERE name = ?1 RETURNING id")?
        .query_row((name, at), |r| r.get::<_, String>(0))
        .optional()?
        .map(AccountId::from_db))
}

/// Replaces the password hash of the account named `name`; returns its id.
pub fn set_password(tx: &Tx, name: &str, password_hash: &str) -> StoreResult<Option<AccountId>> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let id = pg.fetch_optional(pgsql::sessions::set_password(name, password_hash))?;
            return Ok(id.map(AccountId::from_db));
        }
    };
    Ok(tx
        .prepare_cached("UPDATE accounts SET password_hash = ?2 WHERE name = ?1 RETURNING id")?
        .query_row((name, password_hash), |r| r.get::<_, String>(0))
        .optional()?
        .map(AccountId::from_db))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{apps, Store, Synchronous};

    /// Ended sessions go once they ended before the cutoff; live ones stay.
    #[tokio::test]
    async fn purge_takes_only_sessions_that_ended_before_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), Synchronous::Full)
            .await
            .unwrap();
        let app = AppId::generate();
        let user = UserId::parse("alice").unwrap();
        let ids: Vec<SessionId> = (0..4).map(|_| SessionId::generate()).collect();
        let (app2, user2, ids2) = (app.clone(), user.clone(), ids.clone());
        store
            .write(move |tx| {
                apps::insert(tx, &app2, "web", "hash", 0)?;
                // Expired at 100, expired at 1000, revoked at 50, live until 5000.
                for (id, expires_at) in ids2.iter().zip([100, 1000, 5000, 5000]) {
                    let s = NewSession {
                        id,
                        app: &app2,
                        user: &user2,
                        account: None,
                        token_hash: "hash",
                        now: 0,
                        expires_at,
                    };
                    insert(tx, s)?;
                }
                revoke(tx, &ids2[2], 50)?;
                Ok::<_, crate::store::StoreError>(())
            })
            .await
            .unwrap();
        let purged = store.write(|tx| purge(tx, 500, 100)).await.unwrap();
        assert_eq!(purged, 2);
        for (id, kept) in ids.iter().zip([false, true, false, true]) {
            let row: Option<i64> =
                sqlx::query_scalar("SELECT expires_at FROM sessions WHERE id = ?")
                    .bind(id.as_str())
                    .fetch_optional(store.reader().sqlite().unwrap())
                    .await
                    .unwrap();
            assert_eq!(row.is_some(), kept, "{id}");
        }
        assert!(credential(store.reader(), &ids[3], 4000)
            .await
            .unwrap()
            .is_some());
        assert!(credential(store.reader(), &ids[3], 6000)
            .await
            .unwrap()
            .is_none());
        store.close().await;
    }
}
