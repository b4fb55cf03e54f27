//! The message cursor (`src/store/postgres/cursor.rs`; how positions are
//! given and read: `migrations/postgres/0003_engine.sql`).

use crate::{Row, Rows};

/// The highest position stored (0 for none).
pub fn highest() -> Rows<impl Row<i64>> {
    sqlx::query!(r#"SELECT highest_pos() AS "pos!""#).map(|r| r.pos)
}

/// The position below which a statement starting now reads every message.
pub fn readable() -> Rows<impl Row<i64>> {
    sqlx::query!(r#"SELECT readable_pos() AS "pos!""#).map(|r| r.pos)
}

/// Keeps new positions above the stored ones (after a restore into another
/// cluster); returns the base added to transaction ids.
pub fn ensure_base() -> Rows<impl Row<i64>> {
    sqlx::query!(r#"SELECT ensure_cursor_base() AS "base!""#).map(|r| r.base)
}
