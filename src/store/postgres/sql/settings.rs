//! Server settings (`src/store/settings.rs`).

use crate::{Row, Rows, Statement};

pub fn get(key: &str) -> Rows<impl Row<String>> {
    sqlx::query!("SELECT value FROM settings WHERE key = $1", key).map(|r| r.value)
}

pub fn set(key: &str, value: &str) -> Statement {
    sqlx::query!(
        "INSERT INTO settings (key, value) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        key,
        value
    )
}

pub fn remove(key: &str) -> Statement {
    sqlx::query!("DELETE FROM settings WHERE key = $1", key)
}
