//! The relay's domain: what happens when an app posts, an agent polls,
//! replies and acks, and an admin manages credentials. Each operation that
//! changes data is one [`Store::write`] (one transaction); wake-ups are sent
//! only after it committed.
//!
//! - [`messages`]: inbound, send, outbox, reading conversations;
//! - [`delivery`]: the queue: assignment, claim (poll), ack, dead letters;
//! - [`live`]: what only streams see: deltas, typing, progress, expiry, and
//!   the stored part of an app's stream;
//! - [`admin`]: clients, apps, conversation and delivery listings;
//! - [`maintenance`]: the periodic tick (expiry, reassignment, poll times);
//! - [`retention`]: purging what is older than the configured retention;
//! - [`webhooks`]: apps' webhook endpoints and the events recorded for them;
//! - [`sessions`]: user sessions and the built-in accounts that log in;
//! - [`attachments`]: uploads, downloads and who may do either;
//! - [`completions`]: the OpenAI-compatible door: a request's message and
//!   the turn that follows its answer.

pub mod admin;
pub mod attachments;
pub mod completions;
pub mod console;
pub mod delivery;
pub mod live;
pub mod maintenance;
pub mod messages;
pub mod retention;
pub mod sessions;
pub mod stop;
pub mod webhooks;

use crate::config::Config;
use crate::error::Error;
use crate::hub::{Hub, Liveness};
use crate::ids::{AppId, ClientId};
use crate::store::{self, Store};
use std::sync::Arc;
use std::time::Duration;

/// The timing and size rules the domain applies, from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    pub lease_ms: i64,
    /// The longest renewals keep one claim alive, from the claim.
    pub max_lease_ms: i64,
    pub max_attempts: i64,
    pub long_poll_max: Duration,
    pub ttl_ms: i64,
    pub max_text_bytes: usize,
    /// How long expired conversations (and dead deliveries) are kept.
    pub retention_ms: i64,
    /// How long idempotency keys are kept.
    pub key_ttl_ms: i64,
    /// Most open deliveries one client may hold.
    pub max_pending: i64,
    /// A user session's lifetime when none is asked for, and the longest.
    pub session_ttl_ms: i64,
    pub session_max_ttl_ms: i64,
    /// `[attachments]`: the largest upload, the most per message, the
    /// quota per app or agent (None: none), how long an unreferenced upload
    /// is kept.
    pub attachment_max_bytes: u64,
    pub attachments_per_message: usize,
    pub attachment_quota: Option<i64>,
    pub unreferenced_ttl_ms: i64,
    /// How long an upload may send nothing (`[limits] request_timeout_secs`).
    pub upload_idle: Duration,
}

impl Rules {
    pub fn from_config(c: &Config) -> Rules {
        Rules {
            lease_ms: (c.delivery.lease_secs * 1000) as i64,
            max_lease_ms: (c.delivery.max_lease_secs.saturating_mul(1000)) as i64,
            max_attempts: c.delivery.max_attempts as i64,
            long_poll_max: Duration::from_secs(c.delivery.long_poll_max_secs),
            ttl_ms: (c.conversations.ttl_secs * 1000) as i64,
            max_text_bytes: c.limits.max_text_bytes,
            retention_ms: (c.conversations.retention_secs * 1000) as i64,
            key_ttl_ms: (c.idempotency.ttl_secs * 1000) as i64,
            max_pending: c.delivery.max_pending as i64,
            session_ttl_ms: (c.sessions.ttl_secs * 1000) as i64,
            session_max_ttl_ms: (c.sessions.max_ttl_secs * 1000) as i64,
            attachment_max_bytes: c.attachments.max_bytes,
            attachments_per_message: c.attachments.max_per_message,
            attachment_quota: (c.attachments.quota_mb > 0)
                .then(|| (c.attachments.quota_mb as i64).saturating_mul(1 << 20)),
            unreferenced_ttl_ms: (c.attachments.unreferenced_ttl_secs as i64).saturating_mul(1000),
            upload_idle: Duration::from_secs(c.limits.request_timeout_secs),
        }
    }

    /// Conversations idle since this time (or before) are expired.
    pub fn idle_cutoff(&self, now: i64) -> i64 {
        now - self.ttl_ms
    }
}

pub struct Relay {
    pub store: Store,
    pub hub: Arc<Hub>,
    pub rules: Rules,
    pub webhooks: crate::webhook::Webhooks,
    /// The other relays sharing the database (PostgreSQL), if any.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The hot operations as batched statements (PostgreSQL; on SQLite the
    /// writer batches every write).
    engine: Option<crate::store::postgres::engine::Engine>,
    /// Conversations not expired: counted at start and by every maintenance
    /// tick, raised by each conversation opened in between. Read by
    /// `/health` and `/metrics` without touching the database.
    active_conversations: std::sync::atomic::AtomicI64,
    /// One upload chunk at a time goes to the writer (see `attachments`).
    upload_turn: tokio::sync::Semaphore,
    /// When an agent's activity last renewed its leases in a conversation
    /// (see `delivery::renew_for_activity`).
    renewed:
        std::sync::Mutex<std::collections::HashMap<(ClientId, crate::ids::ConversationId), i64>>,
    /// The OpenAI-compatible door's turns running (see `completions`).
    turns: completions::Turns,
}

/// Who to wake once a write has committed.
#[derive(Debug, Default)]
enum Wake {
    #[default]
    Nobody,
    Client(ClientId),
    /// Unassigned work: whichever client polls first adopts it.
    AnyClient,
}

impl Relay {
    /// The domain over an open store; `started_at` is when this process started.
    pub async fn new(store: Store, config: &Config, started_at: i64) -> Result<Relay, Error> {
        let last_seq = store::messages::last_seq(store.reader()).await?;
        let hub = Arc::new(Hub::new(
            Liveness {
                stale_after_ms: (config.clients.stale_after_secs * 1000) as i64,
                disconnected_after_ms: (config.clients.disconnected_after_secs * 1000) as i64,
            },
            started_at,
            config.ws.outgoing_buffer,
            last_seq,
            config.limits.max_text_bytes,
        ));
        let known = store::clients::list(store.reader()).await?;
        hub.remember(known.into_iter().map(|c| (c.id, c.last_seen_at)));
        let rules = Rules::from_config(config);
        let active =
            store::conversations::count_active(store.reader(), rules.idle_cutoff(store::now_ms()))
                .await?;
        let webhooks = crate::webhook::Webhooks::from_config(config).map_err(Error::Internal)?;
        let cluster = store.postgres().map(|pg| {
            Arc::new(crate::cluster::Cluster::join(
                pg.clone(),
                hub.liveness().stale_after_ms,
            ))
        });
        let engine = store.postgres().zip(cluster.as_ref()).map(|(pg, cluster)| {
            crate::store::postgres::engine::Engine::start(
                pg.pool().clone(),
                pg.notices().clone(),
                cluster.others_wrote(),
                crate::store::postgres::engine::Rules {
                    ttl_ms: rules.ttl_ms,
                    max_pending: rules.max_pending,
                    lease_ms: rules.lease_ms,
                    max_attempts: rules.max_attempts,
                },
            )
        });
        Ok(Relay {
            store,
            hub,
            rules,
            webhooks,
            cluster,
            engine,
            active_conversations: std::sync::atomic::AtomicI64::new(active),
            upload_turn: tokio::sync::Semaphore::new(1),
            renewed: Default::default(),
            turns: Default::default(),
        })
    }

    /// At a server's start, on the SQLite file it holds alone: no socket of
    /// a previous run is alive, so what they held is due now. (Not in
    /// [`Relay::new`]: an admin command opens a relay too, beside the
    /// running server, whose sockets' claims must stay theirs; releasing
    /// them there once handed messages under work to a second agent.)
    pub async fn release_previous_sockets(&self, started_at: i64) -> Result<u64, Error> {
        Ok(self
            .store
            .write(move |tx| store::deliveries::release_all_owned(tx, started_at))
            .await?)
    }

    /// Conversations not expired (as of the last maintenance tick, plus those
    /// opened since).
    pub fn active_conversations(&self) -> i64 {
        self.active_conversations
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether this relay runs the background tasks: always on SQLite; on
    /// PostgreSQL while it leads the relays sharing the database.
    pub fn leads(&self) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.leads())
    }

    /// Wakes the polls and sockets that new work is for, on every relay.
    fn wake(&self, wake: Wake) {
        match wake {
            Wake::Nobody => {}
            Wake::Client(c) => {
                self.hub.wake_client(&c);
                if let Some(cluster) = &self.cluster {
                    cluster.wake_client(&c);
                }
            }
            Wake::AnyClient => {
                self.hub.note_unassigned();
                self.hub.wake_all_clients();
                if let Some(cluster) = &self.cluster {
                    cluster.wake_any_client();
                }
            }
        }
    }

    /// Announces the stored message at `cursor` of `app`, just committed,
    /// to the app's outbox polls and streams here (the other relays hear of
    /// it from the notification its transaction sent).
    fn announce(&self, app: &AppId, cursor: i64) {
        self.hub.wake_app(app, cursor);
    }

    /// Sends a live-only event to the app's streams, on every relay.
    fn publish(&self, app: &AppId, event: crate::hub::LiveEvent) {
        let event = self.hub.publish(app, event);
        if let Some(cluster) = &self.cluster {
            cluster.forward(app, &event);
        }
    }

    /// Message text: not over `[limits] max_text_bytes`, and not empty
    /// unless the message carries attachments.
    fn check_text(&self, text: &str, attachments: usize) -> Result<(), Error> {
        if text.trim().is_empty() && attachments == 0 {
            return Err(Error::invalid("empty_text", "`text` must not be empty"));
        }
        if text.len() > self.rules.max_text_bytes {
            return Err(Error::TooLarge {
                code: "text_too_large",
                message: format!(
                    "`text` is {} bytes, the limit is {} ([limits] max_text_bytes)",
                    text.len(),
                    self.rules.max_text_bytes
                ),
            });
        }
        Ok(())
    }
}
