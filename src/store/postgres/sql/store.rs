//! The store's own statements (`src/store/mod.rs`,
//! `src/store/postgres/mod.rs`).

use crate::{Row, Rows, Statement};

/// Whether the database has been migrated by sqlx (has its table).
pub fn migrated() -> Rows<impl Row<bool>> {
    sqlx::query!(r#"SELECT to_regclass('_sqlx_migrations') IS NOT NULL AS "migrated!""#)
        .map(|r| r.migrated)
}

/// Whether the database answers.
pub fn ping() -> Rows<impl Row<bool>> {
    sqlx::query!(r#"SELECT true AS "ok!""#).map(|r| r.ok)
}

/// The database's size on disk in bytes.
pub fn database_size() -> Rows<impl Row<i64>> {
    sqlx::query!(r#"SELECT pg_database_size(current_database()) AS "bytes!""#).map(|r| r.bytes)
}

/// The transaction's commit returns before its WAL is flushed (for writes
/// that may be lost in a crash of the database server).
pub fn commit_without_flush() -> Statement {
    sqlx::query!("SET LOCAL synchronous_commit = off")
}
