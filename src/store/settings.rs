//! Server settings kept in the database (the generated admin token's hash).

use super::{Reader, StoreResult, Tx};

pub const ADMIN_TOKEN_HASH: &str = "admin_token_hash";

pub async fn get(db: &Reader, key: &str) -> StoreResult<Option<String>> {
    let ex = db.sqlite()?;
    let value = sqlx::query_scalar!("SELECT value FROM settings WHERE key = ?", key)
        .fetch_optional(ex)
        .await?;
    Ok(value)
}

pub fn set(tx: &Tx, key: &str, value: &str) -> StoreResult<()> {
    let tx = tx.sqlite()?;
    tx.prepare_cached(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute((key, value))?;
    Ok(())
}
