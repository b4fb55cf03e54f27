//! The periodic maintenance tick: indexes messages for search (SQLite's
//! writer does it in batches), persists poll times, marks idle
//! conversations expired, and moves work away from clients that are gone.
//! Of relays sharing a database, each persists its own poll times; only the
//! leader expires and moves (`crate::cluster`).

use super::delivery::move_all_from;
use super::{webhooks, Relay, Wake};
use crate::error::Error;
use crate::store::{clients, conversations, now_ms};

/// Conversations marked expired per transaction: keeps each write short.
const EXPIRE_BATCH: i64 = 500;
/// Batches per tick, so one tick never runs long; the rest waits for the next.
const EXPIRE_BATCHES_PER_TICK: usize = 20;

#[derive(Debug, Default)]
pub struct TickReport {
    pub expired: u64,
    pub moved_from: usize,
}

impl Relay {
    pub async fn maintain(&self) -> Result<TickReport, Error> {
        let mut report = TickReport::default();
        // Another process (the admin CLI) may have left work unassigned.
        self.hub.note_unassigned();
        // What the writer has not indexed for search yet. A failure here
        // holds up no other work of the tick (a search indexes first too).
        if let Err(e) = self.store.catch_up_search().await {
            tracing::warn!(error = %e, "indexing stored messages for search failed; the next tick tries again");
        }

        let seen = self.hub.unpersisted_last_seen();
        if !seen.is_empty() {
            self.store
                .write_relaxed(move |tx| {
                    for (id, at) in &seen {
                        clients::set_last_seen(tx, id, *at)?;
                    }
                    Ok::<_, Error>(())
                })
                .await?;
        }

        let rules = self.rules;
        let leads = self.leads();
        for _ in 0..EXPIRE_BATCHES_PER_TICK {
            if !leads {
                break;
            }
            let expired = self
                .store
                .write_relaxed(move |tx| {
                    let now = now_ms();
                    let expired = conversations::expire_idle(
                        tx,
                        rules.idle_cutoff(now),
                        rules.ttl_ms,
                        EXPIRE_BATCH,
                    )?;
                    let mut hooked = Vec::new();
                    for e in &expired {
                        hooked.extend(webhooks::record_expired(tx, e, now)?);
                    }
                    Ok::<_, Error>((expired, hooked))
                })
                .await?;
            let (expired, hooked) = expired;
            self.feed_webhooks(hooked);
            let n = expired.len();
            report.expired += n as u64;
            for e in expired {
                self.publish_expired(e);
            }
            if (n as i64) < EXPIRE_BATCH {
                break;
            }
        }

        let now = now_ms();
        let active =
            conversations::count_active(self.store.reader(), self.rules.idle_cutoff(now)).await?;
        self.active_conversations
            .store(active, std::sync::atomic::Ordering::Relaxed);
        let live = self.hub.live_clients(now);
        if leads && !live.is_empty() {
            let gone: Vec<_> = clients::list(self.store.reader())
                .await?
                .into_iter()
                .filter(|c| c.revoked_at.is_none() && c.pending > 0 && self.hub.is_gone(&c.id, now))
                .map(|c| c.id)
                .collect();
            for from in gone {
                let live = live.clone();
                let receivers = self
                    .store
                    .write(move |tx| move_all_from(tx, &from, &live, now))
                    .await?;
                report.moved_from += 1;
                for c in receivers {
                    self.wake(Wake::Client(c));
                }
            }
        }
        Ok(report)
    }
}
