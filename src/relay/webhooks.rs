//! Webhook endpoints (admin API and CLI), the events the domain records for
//! them, and how an attempt's outcome is recorded. The sending itself is
//! `webhook::dispatch`.

use super::Relay;
use crate::error::Error;
use crate::ids::{AppId, EventId, WebhookId};
use crate::model::{IssuedWebhook, Message, WebhookAttempt, WebhookInfo};
use crate::store::conversations::Expired;
use crate::store::webhooks::{
    self, Change, Endpoint, NewWebhook, Outcome, Queued, Recorded, ReplayRange, Retry,
};
use crate::store::{apps, now_ms, StoreResult, Tx};
use crate::webhook::{envelope, normalize_events, sign, EVENT_TYPES};
use serde_json::json;
use std::collections::HashMap;

/// Which events a replay sends again (`POST /webhooks/{id}/replay`).
pub enum Replay {
    One(EventId),
    /// Events created at or after `since` and before `until` (None: now).
    Between {
        since: i64,
        until: Option<i64>,
    },
}

fn not_found(id: &WebhookId) -> Error {
    Error::not_found("webhook_not_found", format!("no webhook {id}"))
}

/// Records `message` (an agent's reply) for the app's endpoints, in the
/// caller's transaction. Returns the event when an endpoint got it.
pub(super) fn record_reply(tx: &Tx, m: &Message, now: i64) -> StoreResult<Option<Queued>> {
    webhooks::record_event(
        tx,
        &m.app_id,
        "message",
        &m.conversation_id,
        || reply_body(m, now),
        now,
    )
}

/// The webhook body of a reply stored at `now`.
pub(super) fn reply_body(m: &Message, now: i64) -> String {
    envelope("message", now, m)
}

/// Records `conversation.expired`, in the caller's transaction.
pub(super) fn record_expired(tx: &Tx, e: &Expired, now: i64) -> StoreResult<Option<Queued>> {
    webhooks::record_event(
        tx,
        &e.app_id,
        "conversation.expired",
        &e.id,
        || {
            envelope(
                "conversation.expired",
                now,
                json!({ "conversationId": e.id, "userId": e.user_id }),
            )
        },
        now,
    )
}

/// Records `delivery.dead` for an inbound message that ran out of attempts.
pub(super) fn record_dead(
    tx: &Tx,
    m: &Message,
    attempts: i64,
    now: i64,
) -> StoreResult<Option<Queued>> {
    webhooks::record_event(
        tx,
        &m.app_id,
        "delivery.dead",
        &m.conversation_id,
        || {
            envelope(
                "delivery.dead",
                now,
                json!({ "message": m, "attempts": attempts }),
            )
        },
        now,
    )
}

impl Relay {
    /// Hands the events a commit queued to the dispatcher, which sends them
    /// without reading them back; when another relay sharing the database
    /// leads (and so dispatches), wakes the leader, which reads them.
    pub(crate) fn feed_webhooks(&self, queued: Vec<Queued>) {
        if queued.is_empty() {
            return;
        }
        match self.cluster.as_ref() {
            Some(cluster) if !cluster.leads() => cluster.wake_webhooks(),
            _ => self.webhooks.feed(queued),
        }
    }

    /// Wakes the dispatcher to read the queue from the tables, after a
    /// commit that queued events it was not handed: this relay's, and, when
    /// another relay sharing the database leads (and so dispatches), the
    /// leader's.
    pub(crate) fn wake_webhooks(&self, queued: bool) {
        if queued {
            self.webhooks.wake.notify_one();
            if let Some(cluster) = self.cluster.as_ref().filter(|c| !c.leads()) {
                cluster.wake_webhooks();
            }
        }
    }

    async fn check_url(&self, url: &str) -> Result<String, Error> {
        self.webhooks
            .policy
            .check(url.trim())
            .await
            .map(|u| u.to_string())
            .map_err(|e| Error::invalid("invalid_url", format!("`url`: {e}")))
    }

    fn events(events: Option<Vec<String>>) -> Result<String, Error> {
        let events = events.unwrap_or_else(|| EVENT_TYPES.map(str::to_owned).to_vec());
        normalize_events(&events).map_err(|e| Error::invalid("invalid_events", e))
    }

    /// Creates an endpoint for an active app; its secret is shown only here.
    pub async fn create_webhook(
        &self,
        app: &AppId,
        url: &str,
        events: Option<Vec<String>>,
    ) -> Result<IssuedWebhook, Error> {
        if !apps::is_active(self.store.reader(), app).await? {
            return Err(Error::not_found(
                "app_not_found",
                format!("no active app {app}"),
            ));
        }
        let url = self.check_url(url).await?;
        let events = Self::events(events)?;
        let id = WebhookId::generate();
        let (bytes, secret) = sign::generate();
        let sealed = self.webhooks.vault.seal(id.as_str(), &bytes)?;
        let (id2, app2) = (id.clone(), app.clone());
        self.store
            .write(move |tx| {
                webhooks::insert(
                    tx,
                    NewWebhook {
                        id: &id2,
                        app_id: &app2,
                        url: &url,
                        events: &events,
                        secret: &sealed,
                        now: now_ms(),
                    },
                )
            })
            .await?;
        self.webhooks.changed();
        Ok(IssuedWebhook {
            webhook: self.webhook(&id).await?,
            secret,
        })
    }

    /// Endpoints of one app, or of all.
    pub async fn list_webhooks(&self, app: Option<&AppId>) -> Result<Vec<WebhookInfo>, Error> {
        Ok(webhooks::list(self.store.reader(), app, None).await?)
    }

    pub async fn webhook(&self, id: &WebhookId) -> Result<WebhookInfo, Error> {
        webhooks::list(self.store.reader(), None, Some(id))
            .await?
            .pop()
            .ok_or_else(|| not_found(id))
    }

    /// Changes an endpoint's url, events or enabled state. Enabling clears
    /// its failure record and makes its waiting events due now.
    pub async fn update_webhook(
        &self,
        id: &WebhookId,
        url: Option<String>,
        events: Option<Vec<String>>,
        enabled: Option<bool>,
    ) -> Result<WebhookInfo, Error> {
        self.webhook(id).await?;
        let url = match url {
            Some(u) => Some(self.check_url(&u).await?),
            None => None,
        };
        let events = match events {
            Some(e) => Some(Self::events(Some(e))?),
            None => None,
        };
        let id2 = id.clone();
        let found = self
            .store
            .write(move |tx| {
                let change = Change {
                    url: url.as_deref(),
                    events: events.as_deref(),
                    enabled,
                };
                webhooks::update(tx, &id2, change, now_ms())
            })
            .await?;
        if !found {
            return Err(not_found(id));
        }
        self.webhooks.changed();
        self.webhook(id).await
    }

    /// Deletes an endpoint with its queue and attempt history.
    pub async fn delete_webhook(&self, id: &WebhookId) -> Result<(), Error> {
        let id2 = id.clone();
        if !self
            .store
            .write(move |tx| webhooks::delete(tx, &id2))
            .await?
        {
            return Err(not_found(id));
        }
        self.webhooks.changed();
        Ok(())
    }

    /// A new secret; the old one also signs for `grace_secs` (default
    /// `[webhooks] rotation_grace_secs`).
    pub async fn rotate_webhook_secret(
        &self,
        id: &WebhookId,
        grace_secs: Option<u64>,
    ) -> Result<IssuedWebhook, Error> {
        let grace_ms = match grace_secs {
            Some(s) if s > 30 * 86_400 => {
                return Err(Error::invalid(
                    "invalid_grace",
                    "`graceSecs` must be at most 2592000 (30 days)",
                ))
            }
            Some(s) => (s * 1000) as i64,
            None => self.webhooks.rules.grace_ms,
        };
        self.webhook(id).await?;
        let (bytes, secret) = sign::generate();
        let sealed = self.webhooks.vault.seal(id.as_str(), &bytes)?;
        let id2 = id.clone();
        let found = self
            .store
            .write(move |tx| {
                let now = now_ms();
                webhooks::rotate_secret(tx, &id2, &sealed, now + grace_ms, now)
            })
            .await?;
        if !found {
            return Err(not_found(id));
        }
        self.webhooks.changed();
        Ok(IssuedWebhook {
            webhook: self.webhook(id).await?,
            secret,
        })
    }

    /// The endpoint's newest attempts, newest first.
    pub async fn webhook_attempts(
        &self,
        id: &WebhookId,
        limit: i64,
    ) -> Result<Vec<WebhookAttempt>, Error> {
        self.webhook(id).await?;
        Ok(webhooks::attempts(self.store.reader(), id, limit).await?)
    }

    /// Sends events again (delivered, failed or pending alike): they become
    /// due now with a fresh attempt count. Returns how many.
    pub async fn replay_webhook(&self, id: &WebhookId, replay: Replay) -> Result<usize, Error> {
        self.webhook(id).await?;
        let one = match &replay {
            Replay::One(event) => Some(event.clone()),
            Replay::Between { .. } => None,
        };
        let id2 = id.clone();
        let n = self
            .store
            .write(move |tx| {
                let now = now_ms();
                let range = match &replay {
                    Replay::One(event) => ReplayRange::One(event),
                    Replay::Between { since, until } => ReplayRange::Between {
                        since: *since,
                        until: until.unwrap_or(now + 1),
                    },
                };
                webhooks::replay(tx, &id2, range, now)
            })
            .await?;
        if let (0, Some(event)) = (n, one) {
            return Err(Error::not_found(
                "event_not_found",
                format!("no event {event} for webhook {id}"),
            ));
        }
        self.wake_webhooks(n > 0);
        Ok(n)
    }

    /// The keys that sign for an endpoint now: its secret, and the previous
    /// one during a rotation's grace period.
    pub(crate) fn webhook_keys(&self, e: &Endpoint, now: i64) -> Result<Vec<Vec<u8>>, Error> {
        let vault = &self.webhooks.vault;
        let mut keys = vec![vault.open(e.id.as_str(), &e.secret)?];
        if let (Some(old), Some(until)) = (&e.old_secret, e.old_secret_until) {
            if until > now {
                keys.push(vault.open(e.id.as_str(), old)?);
            }
        }
        Ok(keys)
    }

    /// Records a batch of attempts in one transaction: each delivered, or
    /// retried after a backoff, or given up past the horizon; disables an
    /// endpoint that keeps failing. Returns, per outcome in order, what was
    /// recorded and when a failed one is due again (None: the batch was not
    /// written; every row stays pending).
    pub(crate) async fn record_webhook_attempts(
        &self,
        outcomes: Vec<Outcome>,
    ) -> Option<Vec<(Recorded, Option<i64>)>> {
        use argon2::password_hash::rand_core::{OsRng, RngCore};
        let rules = self.webhooks.rules;
        let m = crate::metrics::get();
        for o in &outcomes {
            let endpoint = o.webhook_id.as_str();
            m.webhook_attempts
                .with_label_values(&[endpoint, if o.delivered() { "delivered" } else { "failed" }])
                .inc();
            m.webhook_seconds
                .with_label_values(&[endpoint])
                .observe(o.latency_ms as f64 / 1000.0);
            if !o.delivered() {
                tracing::warn!(webhook = %endpoint, status = ?o.status, error = o.error.as_deref().unwrap_or(""), "webhook attempt failed");
            }
        }
        // The jitter of a retry's backoff (a delivered attempt has none).
        let jitters: Vec<f64> = outcomes
            .iter()
            .map(|o| match o.delivered() {
                true => 0.0,
                false => f64::from(OsRng.next_u32()) / f64::from(u32::MAX),
            })
            .collect();
        let batch = std::sync::Arc::new(outcomes);
        let written = {
            let batch = batch.clone();
            self.store
                .write_relaxed(move |tx| {
                    let mut out = Vec::with_capacity(batch.len());
                    // Per endpoint, whether its last attempt recorded in
                    // this batch was delivered: then a delivered one finds
                    // no failure run to end.
                    let mut last_delivered: HashMap<&WebhookId, bool> = HashMap::new();
                    for (o, jitter) in batch.iter().zip(&jitters) {
                        let mut next_at = None;
                        let ends_failures = !last_delivered
                            .insert(&o.webhook_id, o.delivered())
                            .unwrap_or(false);
                        let recorded =
                            webhooks::record_attempt(tx, o, ends_failures, |attempts| {
                                let retry = Retry {
                                    next_at: now_ms() + rules.backoff_ms(attempts + 1, *jitter),
                                    give_up_before: o.at - rules.horizon_ms,
                                    disable_after: rules.disable_after,
                                };
                                next_at = Some(retry.next_at);
                                retry
                            })?;
                        out.push((recorded, next_at));
                    }
                    // Each endpoint of the batch, once.
                    for endpoint in last_delivered.keys() {
                        webhooks::trim_attempts(tx, endpoint)?;
                    }
                    Ok::<_, Error>(out)
                })
                .await
        };
        match written {
            Ok(recorded) => {
                for (o, (r, _)) in batch.iter().zip(&recorded) {
                    if r.gave_up {
                        tracing::warn!(webhook = %o.webhook_id, "webhook event given up after the retry horizon");
                    }
                    if r.disabled {
                        self.webhooks.changed();
                        tracing::warn!(webhook = %o.webhook_id, "webhook endpoint disabled after repeated failures");
                    }
                }
                Some(recorded)
            }
            Err(e) => {
                tracing::warn!(error = %e, attempts = batch.len(), "recording webhook attempts failed; their events stay pending");
                None
            }
        }
    }
}
