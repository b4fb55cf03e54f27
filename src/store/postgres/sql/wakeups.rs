//! Wake-ups across relays (`src/store/postgres/wakeups.rs`).

use crate::{Row, Rows};

/// Notifies `channels[i]` with `payloads[i]`, in order, when the
/// statement's transaction commits; returns how many.
pub fn notify_all(channels: &[&str], payloads: &[String]) -> Rows<impl Row<i64>> {
    sqlx::query!(
        r#"SELECT count(pg_notify(t.c, t.p)) AS "n!" FROM unnest($1::text[], $2::text[]) AS t (c, p)"#,
        channels as &[&str],
        payloads
    )
    .map(|r| r.n)
}
