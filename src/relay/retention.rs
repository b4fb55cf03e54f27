//! Retention: conversations expired longer than `[conversations]
//! retention_secs` go with their messages and deliveries, dead deliveries
//! older than that go too, and idempotency keys older than `[idempotency]
//! ttl_secs`, webhook events older than the retention, and user sessions
//! that ended over a day ago (kept that long so a revocation by the admin
//! CLI reaches running servers); then attachments no message carries any
//! more (or never did, past `[attachments] unreferenced_ttl_secs`), the
//! stored contents no attachment uses, and what abandoned uploads staged. Each batch is one short write, so the
//! writer never stalls behind a purge; a crash mid-purge only leaves the
//! rest for next time.

use super::Relay;
use crate::error::Error;
use crate::relay::attachments::STAGED_ABANDONED_MS;
use crate::store::now_ms;
use crate::store::retention::{self, Purged};
use crate::store::{attachments, console, sessions, webhooks};

/// Conversations deleted per transaction.
const CONVERSATION_BATCH: i64 = 50;
/// Rows of the other kinds deleted per transaction.
const ROW_BATCH: i64 = 1000;
/// Blobs (up to 4 × `[attachments] max_bytes` of deletes) per transaction.
const BLOB_BATCH: i64 = 4;
/// How long a session that ended is kept.
const SESSIONS_KEPT_MS: i64 = 86_400_000;

impl Relay {
    fn cutoffs(&self) -> (i64, i64, i64, i64) {
        let now = now_ms();
        (
            now - self.rules.retention_ms,
            now - self.rules.key_ttl_ms,
            now - SESSIONS_KEPT_MS,
            now - self.rules.unreferenced_ttl_ms,
        )
    }

    /// What a purge now would remove.
    pub async fn purge_preview(&self) -> Result<Purged, Error> {
        let (expired_before, keys_before, sessions_before, unreferenced_before) = self.cutoffs();
        Ok(retention::count(
            self.store.reader(),
            expired_before,
            keys_before,
            sessions_before,
            unreferenced_before,
        )
        .await?)
    }

    /// Purges in batches, at most `max_batches` of them (None: until done).
    pub async fn purge(&self, max_batches: Option<usize>) -> Result<Purged, Error> {
        let (expired_before, keys_before, sessions_before, unreferenced_before) = self.cutoffs();
        let staged_before = now_ms() - STAGED_ABANDONED_MS;
        let mut total = Purged::default();
        let mut batches = 0usize;
        loop {
            if max_batches.is_some_and(|m| batches >= m) {
                break;
            }
            batches += 1;
            let step = self
                .store
                .write_relaxed(move |tx| {
                    let mut p =
                        retention::purge_conversations(tx, expired_before, CONVERSATION_BATCH)?;
                    if p.conversations == 0 {
                        p.dead_deliveries = retention::purge_dead(tx, expired_before, ROW_BATCH)?;
                        if p.dead_deliveries == 0 {
                            p.idempotency_keys = retention::purge_keys(tx, keys_before, ROW_BATCH)?;
                        }
                        if p.dead_deliveries == 0 && p.idempotency_keys == 0 {
                            p.webhook_events =
                                webhooks::purge_events(tx, expired_before, ROW_BATCH)?;
                        }
                        if p.dead_deliveries + p.idempotency_keys + p.webhook_events == 0 {
                            p.sessions = sessions::purge(tx, sessions_before, ROW_BATCH)?
                                + console::purge(tx, sessions_before, ROW_BATCH)?;
                        }
                        if p.dead_deliveries + p.idempotency_keys + p.webhook_events + p.sessions
                            == 0
                        {
                            // Abandoned uploads count as blobs.
                            let staged = attachments::purge_staged(tx, staged_before, BLOB_BATCH)?;
                            p.attachments = attachments::purge_unreferenced(
                                tx,
                                unreferenced_before,
                                ROW_BATCH,
                            )?;
                            let (blobs, bytes) = attachments::purge_blobs(tx, BLOB_BATCH)?;
                            p.blobs = staged + blobs;
                            p.blob_bytes = bytes;
                        }
                    }
                    Ok::<_, Error>(p)
                })
                .await?;
            if step.is_empty() {
                break;
            }
            let purged = &crate::metrics::get().purged;
            for (kind, n) in [
                ("conversations", step.conversations),
                ("messages", step.messages),
                ("deliveries", step.deliveries + step.dead_deliveries),
                ("idempotency_keys", step.idempotency_keys),
                ("webhook_events", step.webhook_events),
                ("sessions", step.sessions),
                ("attachments", step.attachments),
                ("blobs", step.blobs),
            ] {
                purged.with_label_values(&[kind]).inc_by(n as u64);
            }
            total.add(step);
            // Let other writes in between batches.
            tokio::task::yield_now().await;
        }
        Ok(total)
    }
}
