//! Background tasks. Each runs until shutdown; one tick's work is a domain
//! call (`Relay::maintain`) that tests can make directly.

use crate::relay::Relay;
use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::time::Duration;

/// The rhythm of a background task: `next` waits one interval and says
/// whether to run a tick (false once shutdown begins).
struct Ticks {
    interval: Duration,
    stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl Ticks {
    fn new(interval: Duration, shutdown: Shutdown) -> Ticks {
        Ticks {
            interval,
            stop: Box::pin(shutdown.wait()),
        }
    }

    async fn next(&mut self) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(self.interval) => true,
            _ = &mut self.stop => false,
        }
    }
}

/// Every `interval`: persist poll times, expire idle conversations, move work
/// away from gone clients. A failed tick is logged and retried next time.
pub async fn maintenance(
    relay: Arc<Relay>,
    limits: Arc<crate::limits::Limiters>,
    interval: Duration,
    shutdown: Shutdown,
) {
    let mut ticks = Ticks::new(interval, shutdown);
    while ticks.next().await {
        limits.prune();
        match relay.maintain().await {
            Ok(r) if r.expired > 0 || r.moved_from > 0 => {
                tracing::info!(
                    expired = r.expired,
                    moved_from_clients = r.moved_from,
                    "maintenance"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "maintenance tick failed"),
        }
    }
}

/// Every `interval`: purge what is older than the retention (bounded per
/// run; the rest waits for the next one). Of relays sharing a database,
/// only the leader purges.
pub async fn retention(relay: Arc<Relay>, interval: Duration, shutdown: Shutdown) {
    let mut ticks = Ticks::new(interval, shutdown);
    while ticks.next().await {
        if !relay.leads() {
            continue;
        }
        match relay.purge(Some(1000)).await {
            Ok(p) if !p.is_empty() => tracing::info!(
                conversations = p.conversations,
                messages = p.messages,
                deliveries = p.deliveries,
                dead_deliveries = p.dead_deliveries,
                idempotency_keys = p.idempotency_keys,
                attachments = p.attachments,
                blobs = p.blobs,
                blob_bytes = p.blob_bytes,
                "retention purge"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention purge failed"),
        }
    }
}

/// Every `interval` (`[auth] cache_ttl_secs`): finds the tokens another
/// process (the admin CLI) revoked or rotated, forgets them from the
/// verified-token cache and closes the sockets and streams opened with them.
pub async fn credentials(
    relay: Arc<Relay>,
    auth: Arc<crate::auth::Auth>,
    interval: Duration,
    shutdown: Shutdown,
) {
    let mut ticks = Ticks::new(interval, shutdown);
    let mut since = crate::store::now_ms();
    while ticks.next().await {
        match relay.credentials_changed_since(since).await {
            Ok((keys, newest)) => {
                for key in &keys {
                    auth.forget(key);
                }
                if !keys.is_empty() {
                    tracing::info!(
                        changed = keys.len(),
                        "revoked or rotated credentials applied"
                    );
                }
                since = newest;
            }
            Err(e) => tracing::warn!(error = %e, "checking for changed credentials failed"),
        }
    }
}

/// Indexes the messages stored before search existed, a batch at a time,
/// until none is left (of relays sharing a database, the leader does).
pub async fn search_backfill(relay: Arc<Relay>, shutdown: Shutdown) {
    let mut indexed = 0u64;
    loop {
        if shutdown.is_triggered() {
            return;
        }
        if !relay.leads() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        match relay.backfill_search(500).await {
            Ok(0) => {
                if indexed > 0 {
                    tracing::info!(
                        messages = indexed,
                        "search: the earlier messages are indexed"
                    );
                }
                return;
            }
            Ok(n) => {
                indexed += n;
                if indexed % 50_000 < n {
                    tracing::info!(messages = indexed, "search: indexing the earlier messages");
                }
                tokio::task::yield_now().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "search: indexing the earlier messages failed; trying again");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}
