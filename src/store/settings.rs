//! Server settings kept in the database (the generated admin token's hash).

use super::postgres::error as pg_error;
use super::{Reader, StoreResult, Tx};

pub const ADMIN_TOKEN_HASH: &str = "admin_token_hash";
/// Which admin token the console sessions were opened with: the generated
/// token's hash itself, or an argon2id hash of the configured token. When
/// the admin token changes, the console sessions end (see `auth::Auth::new`).
pub const CONSOLE_ADMIN: &str = "console_admin";

pub async fn get(db: &Reader, key: &str) -> StoreResult<Option<String>> {
    match db {
        Reader::Sqlite(pool) => Ok(sqlx::query_scalar!(
            "SELECT value FROM settings WHERE key = ?",
            key
        )
        .fetch_optional(pool)
        .await?),
        Reader::Postgres(pool) => pgsql::settings::get(key)
            .fetch_optional(pool)
            .await
            .map_err(pg_error),
    }
}

pub fn set(tx: &Tx, key: &str, value: &str) -> StoreResult<()> {
    match tx {
        Tx::Sqlite(c) => {
            c.prepare_cached(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute((key, value))?;
        }
        Tx::Postgres(pg) => {
            pg.execute(pgsql::settings::set(key, value))?;
        }
    }
    Ok(())
}

/// A setting, read in a write transaction.
pub fn get_in(tx: &Tx, key: &str) -> StoreResult<Option<String>> {
    match tx {
        Tx::Sqlite(c) => {
            use rusqlite::OptionalExtension;
            Ok(
                c.prepare_cached("SELECT value FROM settings WHERE key = ?1")?
                    .query_row([key], |r| r.get(0))
                    .optional()?,
            )
        }
        Tx::Postgres(pg) => pg.fetch_optional(pgsql::settings::get(key)),
    }
}

pub fn remove(tx: &Tx, key: &str) -> StoreResult<()> {
    match tx {
        Tx::Sqlite(c) => {
            c.prepare_cached("DELETE FROM settings WHERE key = ?1")?
                .execute([key])?;
        }
        Tx::Postgres(pg) => {
            pg.execute(pgsql::settings::remove(key))?;
        }
    }
    Ok(())
}
