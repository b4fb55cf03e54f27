//! The global cursor of messages on PostgreSQL: `messages.pos`, given when
//! a message is stored (the storing transaction's id and the message's
//! order in it; why and how: `migrations/postgres/0003_engine.sql`).
//!
//! Outbox pages and app streams read `pos > cursor ORDER BY pos`, below the
//! readable position of their statement's snapshot: every transaction with
//! a lower id has ended then, so a reader never later finds a message
//! behind a position it has passed, on any relay. No writer waits for
//! another and nothing runs after a commit.
//!
//! A message committed while an older transaction still runs is stored but
//! not yet readable. A reader that was told of such a message (its position
//! is not below the horizon its read reported) waits on [`Horizon`] for the
//! readable position to pass it, then reads again.

use super::error;
use crate::store::StoreResult;
use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::watch;

/// Where stored messages are announced: the payload is the highest
/// position, then the apps whose messages were stored, space-separated
/// (left out when they would not fit: then any app's may be new). Sent by
/// the transaction that stores them, delivered when it commits.
pub const CHANNEL: &str = "clawrelay_messages";

/// The first and the longest pause between two looks at the readable
/// position while a reader waits for it.
const FIRST_LOOK: Duration = Duration::from_micros(500);
const LONGEST_PAUSE: Duration = Duration::from_millis(20);

/// The highest position stored (0 for none).
pub async fn highest(pool: &PgPool) -> StoreResult<i64> {
    pgsql::cursor::highest()
        .fetch_one(pool)
        .await
        .map_err(error)
}

/// Keeps new positions above the stored ones (a database restored into a
/// cluster whose transaction ids are lower than those that stored its
/// messages): run by every relay when it connects.
pub async fn ensure_base(pool: &PgPool) -> StoreResult<i64> {
    pgsql::cursor::ensure_base()
        .fetch_one(pool)
        .await
        .map_err(error)
}

/// The readable position as this relay last saw it, and the readers
/// waiting for it to pass a position. One task looks at the database while
/// anyone waits (a cheap statement, every [`FIRST_LOOK`] at first, then
/// less often while the position does not move), and not at all otherwise;
/// every cursor read also reports what it saw.
pub struct Horizon {
    seen: watch::Sender<i64>,
    wanted: watch::Sender<i64>,
}

impl Horizon {
    /// Starts the task that looks for waiting readers. It ends when the
    /// returned `Horizon` is dropped.
    pub fn start(pool: PgPool) -> std::sync::Arc<Horizon> {
        let horizon = std::sync::Arc::new(Horizon {
            seen: watch::channel(0).0,
            wanted: watch::channel(0).0,
        });
        let weak = std::sync::Arc::downgrade(&horizon);
        let mut wanted = horizon.wanted.subscribe();
        tokio::spawn(async move {
            loop {
                // Sleeps until a reader waits for more than was seen.
                let target = {
                    let Some(h) = weak.upgrade() else { return };
                    let seen = *h.seen.borrow();
                    let target = *wanted.borrow_and_update();
                    if target < seen {
                        drop(h);
                        if wanted.changed().await.is_err() {
                            return;
                        }
                        continue;
                    }
                    target
                };
                let mut pause = FIRST_LOOK;
                loop {
                    tokio::time::sleep(pause).await;
                    let Some(h) = weak.upgrade() else { return };
                    match pgsql::cursor::readable().fetch_one(&pool).await {
                        Ok(pos) => h.saw(pos),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read the readable message position")
                        }
                    }
                    if *h.seen.borrow() > target.max(*h.wanted.borrow()) {
                        break;
                    }
                    pause = (pause * 2).min(LONGEST_PAUSE);
                }
            }
        });
        horizon
    }

    /// Records a readable position some read saw.
    pub fn saw(&self, pos: i64) {
        self.seen.send_if_modified(|seen| {
            let higher = pos > *seen;
            if higher {
                *seen = pos;
            }
            higher
        });
    }

    /// Resolves once a read starting now sees every message up to `pos`.
    pub async fn beyond(&self, pos: i64) {
        let mut seen = self.seen.subscribe();
        if *seen.borrow_and_update() > pos {
            return;
        }
        self.wanted.send_if_modified(|wanted| {
            let higher = pos > *wanted;
            if higher {
                *wanted = pos;
            }
            higher
        });
        let _ = seen.wait_for(|seen| *seen > pos).await;
    }
}

/// Messages this relay stored that the other relays have not been told of
/// yet: the highest position and the apps. Writers add to it after their
/// commits; the cluster's task takes it and notifies [`CHANNEL`] once for
/// everything added while its last notification was sent (a notification
/// in the writing transaction would make every commit wait for the others':
/// PostgreSQL queues notifications under one lock held through the commit).
#[derive(Default)]
pub struct Notices {
    pending: std::sync::Mutex<(i64, std::collections::BTreeSet<String>)>,
    added: tokio::sync::Notify,
}

impl Notices {
    /// Messages up to position `top` of `apps` were committed.
    pub fn stored<'a>(&self, top: i64, apps: impl IntoIterator<Item = &'a str>) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        pending.0 = pending.0.max(top);
        for app in apps {
            if !pending.1.contains(app) {
                pending.1.insert(app.to_owned());
            }
        }
        drop(pending);
        self.added.notify_one();
    }

    /// Waits for stored messages, then takes what was added.
    pub async fn take(&self) -> (i64, Vec<String>) {
        loop {
            if let Some(taken) = self.try_take() {
                return taken;
            }
            self.added.notified().await;
        }
    }

    /// Takes what was added, if anything.
    pub fn try_take(&self) -> Option<(i64, Vec<String>)> {
        let mut pending = self.pending.lock().ok()?;
        if pending.0 == 0 {
            return None;
        }
        let (top, apps) = std::mem::take(&mut *pending);
        Some((top, apps.into_iter().collect()))
    }
}
