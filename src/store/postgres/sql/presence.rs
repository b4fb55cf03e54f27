//! Liveness across relays (`src/store/postgres/presence.rs`).

use crate::{Row, Rows, Statement};

/// Records that `relay` saw agent `clients[i]` at `times[i]` (ms); a row
/// never moves back in time.
pub fn seen(relay: &str, clients: &[&str], times: &[i64]) -> Statement {
    sqlx::query!(
        "INSERT INTO client_presence (client_id, relay_id, seen_at)
         SELECT s.client_id, $1, s.seen_at
         FROM UNNEST($2::text[], $3::bigint[]) AS s (client_id, seen_at)
         WHERE EXISTS (SELECT 1 FROM clients c WHERE c.id = s.client_id)
         ON CONFLICT (client_id, relay_id) DO UPDATE SET seen_at = EXCLUDED.seen_at
         WHERE client_presence.seen_at < EXCLUDED.seen_at",
        relay,
        clients as &[&str],
        times
    )
}

/// The active agents some relay saw at or after `since`, each with the
/// newest time any relay saw it.
pub fn recent(since: i64) -> Rows<impl Row<(String, i64)>> {
    sqlx::query!(
        r#"SELECT p.client_id, max(p.seen_at) AS "seen_at!" FROM client_presence p
           JOIN clients c ON c.id = p.client_id AND c.revoked_at IS NULL
           WHERE p.seen_at >= $1
           GROUP BY p.client_id
           ORDER BY p.client_id"#,
        since
    )
    .map(|r| (r.client_id, r.seen_at))
}

pub fn relay_gone(relay: &str) -> Statement {
    sqlx::query!("DELETE FROM client_presence WHERE relay_id = $1", relay)
}

/// Deletes rows not refreshed since `before`.
pub fn prune(before: i64) -> Statement {
    sqlx::query!("DELETE FROM client_presence WHERE seen_at < $1", before)
}

/// Records that `relay` is alive at `now`; returns how many other relays
/// were alive at or after `since`.
pub fn alive(relay: &str, now: i64, since: i64) -> Rows<impl Row<i64>> {
    sqlx::query!(
        r#"WITH me AS (INSERT INTO relays (id, seen_at) VALUES ($1, $2)
                       ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at)
           SELECT count(*) AS "others!" FROM relays WHERE id <> $1 AND seen_at >= $3"#,
        relay,
        now,
        since
    )
    .map(|r| r.others)
}

pub fn relay_left(relay: &str) -> Statement {
    sqlx::query!("DELETE FROM relays WHERE id = $1", relay)
}

/// Deletes the relays not alive since `before` (ms) and ends the leases
/// their WebSocket sessions held (a session's id names its relay, see
/// `store::postgres::presence::session_id`): those deliveries are due at
/// `now`. Returns the clients whose deliveries were released.
pub fn release_gone_relays(before: i64, now: i64) -> Rows<impl Row<String>> {
    sqlx::query!(
        r#"WITH gone AS (DELETE FROM relays WHERE seen_at < $1 RETURNING id),
           released AS (
               UPDATE deliveries d
               SET visible_at = LEAST(d.visible_at, $2), lease_owner = NULL, updated_at = $2
               FROM gone
               WHERE d.lease_owner IS NOT NULL
                 AND starts_with(d.lease_owner, 'ws_' || substr(gone.id, 5) || '_')
               RETURNING d.client_id)
           SELECT DISTINCT client_id AS "client_id!" FROM released WHERE client_id IS NOT NULL"#,
        before,
        now
    )
    .map(|r| r.client_id)
}
