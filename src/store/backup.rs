//! Online backup: a consistent copy of the database while the relay runs.
//!
//! `VACUUM INTO` writes a transactionally consistent snapshot of the database
//! (a read transaction: writers are not blocked) into a new file, which is
//! then opened and checked with `PRAGMA integrity_check`.

use super::{StoreError, StoreResult};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqlitePool};
use std::path::Path;

/// Refuses a backup destination that exists or whose folder does not.
pub fn check_destination(dest: &Path) -> StoreResult<()> {
    if dest.exists() {
        return Err(StoreError::Schema(format!(
            "{} already exists; choose a new file",
            dest.display()
        )));
    }
    let folder = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        return Err(StoreError::Schema(format!(
            "folder {} does not exist; create it first (mkdir -p {}) or choose another path",
            folder.display(),
            folder.display()
        )));
    }
    Ok(())
}

/// Writes a consistent copy of the database to `dest`, which must not exist
/// (its folder must), and verifies it. Returns the size of the copy in bytes.
pub async fn backup_to(readers: &SqlitePool, dest: &Path) -> StoreResult<u64> {
    check_destination(dest)?;
    let target = dest.to_string_lossy().into_owned();
    sqlx::query!("VACUUM INTO ?", target)
        .execute(readers)
        .await?;

    let mut copy = SqliteConnectOptions::new()
        .filename(dest)
        .read_only(true)
        .connect()
        .await?;
    let check: Vec<String> = sqlx::query_scalar!(r#"PRAGMA integrity_check"#)
        .fetch_all(&mut copy)
        .await?
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
    let _ = copy.close().await;
    if check != ["ok"] {
        return Err(StoreError::Schema(format!(
            "the backup failed its integrity check: {}",
            check.join("; ")
        )));
    }
    Ok(std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0))
}
