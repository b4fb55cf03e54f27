//! Wake-ups across relays (`src/store/postgres/wakeups.rs`).

use crate::{Row, Rows};

/// Notifies `channel` once per payload, in order, when the statement's
/// transaction commits; returns how many.
pub fn notify_all(channel: &str, payloads: &[String]) -> Rows<impl Row<i64>> {
    sqlx::query!(
        r#"SELECT count(pg_notify($1, p)) AS "n!" FROM unnest($2::text[]) AS p"#,
        channel,
        payloads
    )
    .map(|r| r.n)
}
