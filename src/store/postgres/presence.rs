//! Liveness across relays: which agents hold a connection on some relay
//! (`client_presence`, see `migrations/postgres/0002_presence.sql`).
//!
//! Each relay writes its own rows: `seen` while an agent's connection is up
//! (the caller throttles it to a few times per stale window), `gone` when
//! the agent's last connection on it closes, `relay_gone` when it shuts
//! down. A relay that dies stops refreshing, and its rows stop counting once
//! they are older than the stale window; `prune` deletes them later.

use super::error;
use crate::ids::ClientId;
use crate::store::StoreResult;
use sqlx::{PgConnection, PgPool};

/// Records that `relay` holds a connection of `client` at `now` (ms).
pub async fn seen(pool: &PgPool, client: &ClientId, relay: &str, now: i64) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO client_presence (client_id, relay_id, seen_at) VALUES ($1, $2, $3)
         ON CONFLICT (client_id, relay_id) DO UPDATE SET seen_at = EXCLUDED.seen_at
         WHERE client_presence.seen_at < EXCLUDED.seen_at",
    )
    .bind(client.as_str())
    .bind(relay)
    .bind(now)
    .execute(pool)
    .await
    .map_err(error)?;
    Ok(())
}

/// The agent's last connection on `relay` closed.
pub async fn gone(pool: &PgPool, client: &ClientId, relay: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM client_presence WHERE client_id = $1 AND relay_id = $2")
        .bind(client.as_str())
        .bind(relay)
        .execute(pool)
        .await
        .map_err(error)?;
    Ok(())
}

/// `relay` shuts down: none of its connections count any more.
pub async fn relay_gone(pool: &PgPool, relay: &str) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM client_presence WHERE relay_id = $1")
        .bind(relay)
        .execute(pool)
        .await
        .map_err(error)?;
    Ok(done.rows_affected())
}

/// Deletes rows not refreshed since `before` (ms): relays that died.
pub async fn prune(pool: &PgPool, before: i64) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM client_presence WHERE seen_at < $1")
        .bind(before)
        .execute(pool)
        .await
        .map_err(error)?;
    Ok(done.rows_affected())
}

/// The active agents some relay has seen since `since` (ms), by id.
pub async fn live(pool: &PgPool, since: i64) -> StoreResult<Vec<ClientId>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT c.id FROM clients c
         WHERE c.revoked_at IS NULL
           AND EXISTS (SELECT 1 FROM client_presence p WHERE p.client_id = c.id AND p.seen_at >= $1)
         ORDER BY c.id",
    )
    .bind(since)
    .fetch_all(pool)
    .await
    .map_err(error)?;
    Ok(ids.into_iter().map(ClientId::from_db).collect())
}

/// Of the active agents some relay has seen since `since` (ms), the one
/// with the fewest open deliveries (ties broken at random), with that
/// number: SQLite's `clients::least_loaded` over the whole cluster.
pub async fn least_loaded(
    conn: &mut PgConnection,
    since: i64,
) -> StoreResult<Option<(ClientId, i64)>> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT c.id, c.pending FROM clients c
         WHERE c.revoked_at IS NULL
           AND EXISTS (SELECT 1 FROM client_presence p WHERE p.client_id = c.id AND p.seen_at >= $1)
         ORDER BY c.pending, random() LIMIT 1",
    )
    .bind(since)
    .fetch_optional(conn)
    .await
    .map_err(error)?;
    Ok(row.map(|(id, pending)| (ClientId::from_db(id), pending)))
}
