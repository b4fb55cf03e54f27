//! Liveness across relays: which agents some relay has seen lately
//! (`client_presence`, see `migrations/postgres/0002_presence.sql`).
//!
//! Each relay writes its own rows ([`seen`]): the time it last saw each
//! agent, refreshed while the agent's connection is up (the caller
//! throttles it to a few times per stale window). Every relay reads what
//! all of them saw ([`recent`]) and counts an agent as connected while the
//! newest of its rows is fresh, so a relay that dies stops counting once its
//! rows are old. The leader deletes rows too old to matter ([`prune`]); a
//! relay that shuts down deletes its own ([`relay_gone`]). A relay that
//! stops saying it is alive is gone: the leader ends the leases its
//! sockets held ([`release_gone_relays`]).

use super::error;
use crate::ids::ClientId;
use crate::store::StoreResult;
use sqlx::PgPool;

/// Records that `relay` saw each agent at its time (ms). A row never moves
/// back in time.
pub async fn seen(pool: &PgPool, relay: &str, seen: &[(ClientId, i64)]) -> StoreResult<()> {
    if seen.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = seen.iter().map(|(c, _)| c.as_str()).collect();
    let times: Vec<i64> = seen.iter().map(|(_, at)| *at).collect();
    pgsql::presence::seen(relay, &ids, &times)
        .execute(pool)
        .await
        .map_err(error)?;
    Ok(())
}

/// The active agents some relay saw at or after `since` (ms), each with the
/// newest time any relay saw it.
pub async fn recent(pool: &PgPool, since: i64) -> StoreResult<Vec<(ClientId, i64)>> {
    let rows = pgsql::presence::recent(since)
        .fetch_all(pool)
        .await
        .map_err(error)?;
    Ok(rows
        .into_iter()
        .map(|(id, at)| (ClientId::from_db(id), at))
        .collect())
}

/// The id of a new WebSocket session of `relay` (`rly_<hex>`): it starts
/// with `ws_<hex>_`, so the relay's leases can be found when it dies.
pub fn session_id(relay: &str) -> String {
    let relay = relay
        .strip_prefix(crate::ids::RelayId::PREFIX)
        .unwrap_or(relay);
    format!("ws_{relay}_{}", uuid::Uuid::new_v4().simple())
}

/// Relays not alive since `before` (ms) are gone: their rows are deleted and
/// the leases their sockets held end at `now`. Returns the clients whose
/// deliveries are due again.
pub async fn release_gone_relays(
    pool: &PgPool,
    before: i64,
    now: i64,
) -> StoreResult<Vec<ClientId>> {
    let rows = pgsql::presence::release_gone_relays(before, now)
        .fetch_all(pool)
        .await
        .map_err(error)?;
    Ok(rows.into_iter().map(ClientId::from_db).collect())
}

/// `relay` shuts down: its rows go (what they said lives on in the other
/// relays' memory and in `clients.last_seen_at`).
pub async fn relay_gone(pool: &PgPool, relay: &str) -> StoreResult<u64> {
    let done = pgsql::presence::relay_gone(relay)
        .execute(pool)
        .await
        .map_err(error)?;
    pgsql::presence::relay_left(relay)
        .execute(pool)
        .await
        .map_err(error)?;
    Ok(done.rows_affected())
}

/// Records that `relay` is alive now; returns how many other relays said
/// so at or after `since` (ms).
pub async fn alive(pool: &PgPool, relay: &str, now: i64, since: i64) -> StoreResult<i64> {
    pgsql::presence::alive(relay, now, since)
        .fetch_one(pool)
        .await
        .map_err(error)
}

/// Deletes presence rows not refreshed since `before` (ms). (Relays that
/// fell silent are deleted sooner, by [`release_gone_relays`].)
pub async fn prune(pool: &PgPool, before: i64) -> StoreResult<u64> {
    let done = pgsql::presence::prune(before)
        .execute(pool)
        .await
        .map_err(error)?;
    Ok(done.rows_affected())
}
