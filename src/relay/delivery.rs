//! The delivery queue's semantics.
//!
//! - Assignment (seed §4.3–4.4): a new conversation goes to the connected
//!   client with the fewest open deliveries (random tie-break) and stays there.
//!   When its client is revoked or gone (disconnected), the conversation and
//!   its open deliveries move to a live client; with none live, new work waits
//!   unassigned and the first client to poll adopts it.
//! - Claim: `poll` leases up to `max` due deliveries, oldest first, one per
//!   conversation at a time; a lease that ends unacked makes the row due again
//!   (at-least-once); after `max_attempts` leases it is dead.
//! - Ack: explicit (`/ack`) or implicit (`/send` to the conversation); either
//!   promotes the conversation's next queued message.

use super::messages::Target;
use super::{webhooks, Relay, Wake};
use crate::error::Error;
use crate::hub::Hub;
use crate::ids::{AppId, ClientId, ConversationId, MessageId, UserId};
use crate::model::Message;
use crate::store::conversations::Expired;
use crate::store::deliveries::Retired;
use crate::store::postgres::engine;
use crate::store::webhooks::Queued;
use crate::store::{clients, conversations, deliveries, now_ms, StoreResult, Tx};

use std::time::Duration;
use tokio::time::Instant;

/// Where an inbound message goes.
pub(super) struct Destination {
    pub conversation: ConversationId,
    pub client: Option<ClientId>,
    /// Whether the conversation was opened for this message.
    pub opened: bool,
    /// The user's previous conversation, if this message found it idle past
    /// its TTL and expired it.
    pub expired: Option<Expired>,
}

fn queue_full(client: &ClientId, max_pending: i64) -> Error {
    Error::Overloaded {
        code: "queue_full",
        message: format!(
            "client {client} already holds {max_pending} undelivered messages ([delivery] max_pending); retry later"
        ),
    }
}

/// The conversation an inbound message of `user` belongs to, and its client:
/// a new one (on the agent named, if one is), the one it names (it must be
/// that user's and active), or else the user's most recently active one.
/// Expires that one if idle and opens a new one; keeps an active one with
/// its client unless that client is revoked or gone.
#[allow(clippy::too_many_arguments)]
pub(super) fn conversation_for(
    tx: &Tx,
    hub: &Hub,
    app: &AppId,
    user: &UserId,
    target: &Target,
    live: &[ClientId],
    ttl_ms: i64,
    max_pending: i64,
    now: i64,
) -> Result<Destination, Error> {
    let full = |client: &ClientId| queue_full(client, max_pending);
    if let Target::New(agent) = target {
        let client = match agent {
            // The agent asked for, connected or not (its open deliveries
            // counted as any client's).
            Some(c) => clients::least_loaded(tx, std::slice::from_ref(c))?,
            None => clients::least_loaded(tx, live)?,
        };
        let client = match client {
            Some((c, pending)) if pending >= max_pending => return Err(full(&c)),
            other => other.map(|(c, _)| c),
        };
        let conversation = conversations::create(tx, app, user, client.as_ref(), now)?;
        return Ok(Destination {
            conversation,
            client,
            opened: true,
            expired: None,
        });
    }
    if let Target::Named(id) = target {
        let (active, expired) =
            conversations::find_of_user(tx, id, app, user)?.ok_or_else(|| {
                Error::not_found(
                    "conversation_not_found",
                    format!("no conversation {id} of user `{}`", user.as_str()),
                )
            })?;
        if expired || active.updated_at <= now - ttl_ms {
            return Err(Error::Conflict {
                code: "conversation_expired",
                message: format!(
                    "conversation {id} has ended; post without `conversationId` to continue the user's latest, or open a new one (POST /conversations)"
                ),
            });
        }
        return continue_in(tx, hub, active, live, max_pending, now);
    }
    let mut expired = None;
    if let Some(active) = conversations::find_active(tx, app, user)? {
        if active.updated_at > now - ttl_ms {
            return continue_in(tx, hub, active, live, max_pending, now);
        }
        conversations::expire(tx, &active.id, active.updated_at + ttl_ms)?;
        expired = Some(Expired {
            id: active.id,
            app_id: app.clone(),
            user_id: user.as_str().to_owned(),
        });
    }
    let client = match clients::least_loaded(tx, live)? {
        Some((c, pending)) if pending >= max_pending => return Err(full(&c)),
        Some((c, _)) => Some(c),
        None => None,
    };
    let conversation = conversations::create(tx, app, user, client.as_ref(), now)?;
    Ok(Destination {
        conversation,
        client,
        opened: true,
        expired,
    })
}

/// An active conversation takes the message: with its client (or a live
/// one, see [`keep_or_move`]), unless that client's queue is full.
fn continue_in(
    tx: &Tx,
    hub: &Hub,
    active: conversations::Active,
    live: &[ClientId],
    max_pending: i64,
    now: i64,
) -> Result<Destination, Error> {
    let client = keep_or_move(tx, hub, &active, live, now)?;
    if let Some((c, pending)) = &client {
        if *pending >= max_pending {
            return Err(queue_full(c, max_pending));
        }
    }
    Ok(Destination {
        conversation: active.id,
        client: client.map(|(c, _)| c),
        opened: false,
        expired: None,
    })
}

/// Keeps a conversation with `current` if that client is active (exists,
/// not revoked) and not gone; otherwise moves it to the least-loaded live
/// client. A gone (but not revoked) client keeps it when there is nowhere to
/// move it.
fn keep_or_move(
    tx: &Tx,
    hub: &Hub,
    found: &conversations::Active,
    live: &[ClientId],
    now: i64,
) -> StoreResult<Option<(ClientId, i64)>> {
    let (conversation, current, pending) =
        (&found.id, found.client_id.clone(), found.client_pending);
    let active = found.client_active && current.is_some();
    if active && current.as_ref().is_some_and(|c| !hub.is_gone(c, now)) {
        return Ok(current.map(|c| (c, pending)));
    }
    let target = clients::least_loaded(tx, live)?;
    if target.is_none() && active {
        return Ok(current.map(|c| (c, pending)));
    }
    let target_id = target.as_ref().map(|(c, _)| c.clone());
    if target_id != current {
        move_conversation(tx, conversation, target_id.as_ref(), now)?;
    }
    Ok(target)
}

/// Moves a conversation and its open deliveries to `to` (None: unassigned).
pub(super) fn move_conversation(
    tx: &Tx,
    conversation: &ConversationId,
    to: Option<&ClientId>,
    now: i64,
) -> StoreResult<()> {
    conversations::set_client(tx, conversation, to)?;
    deliveries::move_conversation(tx, conversation, to, now)
}

/// Moves every conversation with open deliveries held by `from` to live
/// clients (balanced one conversation at a time), or unassigns them when no
/// client is live. Returns the clients that received work.
pub(super) fn move_all_from(
    tx: &Tx,
    from: &ClientId,
    live: &[ClientId],
    now: i64,
) -> StoreResult<Vec<ClientId>> {
    let live: Vec<ClientId> = live.iter().filter(|c| *c != from).cloned().collect();
    let mut receivers = Vec::new();
    for conversation in deliveries::open_conversations_of(tx, from)? {
        let target = clients::least_loaded(tx, &live)?.map(|(c, _)| c);
        move_conversation(tx, &conversation, target.as_ref(), now)?;
        if let Some(t) = target {
            if !receivers.contains(&t) {
                receivers.push(t);
            }
        }
    }
    Ok(receivers)
}

/// What a socket's claim pushed.
pub struct SessionClaim {
    pub messages: Vec<Message>,
    /// When the client's earliest delivery is due (a lease ending), if any.
    pub next_due: Option<i64>,
    /// Whether the session's room ran out (it holds `max_in_flight`, or
    /// this claim filled what was left): then more may be due, and each of
    /// its acks is a reason to claim again. Otherwise only new work is,
    /// which wakes the session.
    pub full: bool,
}

/// Result of one claim transaction.
struct Claim {
    messages: Vec<Message>,
    /// Deliveries this claim found out of attempts and marked dead.
    dead: u64,
    /// Dead letters queued for webhooks.
    hooked: Vec<Queued>,
    /// When the earliest of this client's leases ends, if any.
    next_due: Option<i64>,
    /// Conversations that waited for an agent and are this client's now.
    adopted: Vec<conversations::Adopted>,
}

/// What a renewal of an agent's leases in a conversation did.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Renewed {
    /// Claims renewed: 0 when the agent holds none there that has not ended
    /// (answered, acked, moved to another agent, ended, or never its own).
    pub renewed: usize,
    /// When the renewed claims end now (Unix ms; the latest of them).
    pub lease_until: Option<i64>,
}

/// The most conversations whose last activity renewal is remembered; past
/// it those not renewed within a lease are forgotten.
const RENEWALS_REMEMBERED: usize = 10_000;

/// Counts claimed messages, and those of them delivered again, in the
/// metrics.
fn count_claimed(messages: &[Message]) {
    let m = crate::metrics::get();
    m.claimed.inc_by(messages.len() as u64);
    let again = messages
        .iter()
        .filter(|x| x.attempt.unwrap_or(1) > 1)
        .count();
    m.redelivered.inc_by(again as u64);
}

/// What `/ack` did with each id.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AckOutcome {
    /// Ids whose delivery this call acked.
    pub acked: Vec<MessageId>,
    /// Ids that are not a delivery this client holds (unknown, someone
    /// else's, never claimed, or already acked).
    pub not_acked: Vec<MessageId>,
}

/// What a poll got: claimed messages, and stops of turns it had claimed
/// before (see [`crate::turns`]).
#[derive(Default)]
pub struct Polled {
    pub messages: Vec<Message>,
    pub cancelled: Vec<std::sync::Arc<crate::turns::Cancel>>,
}

impl Relay {
    /// `GET /poll`: claims up to `max` due deliveries, and takes the
    /// client's cancel notices. With `wait`, waits (up to `long_poll_max`)
    /// until something is due or cancelled, or `stop` resolves.
    pub async fn poll(
        &self,
        client: ClientId,
        max: i64,
        wait: Option<Duration>,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<Polled, Error> {
        self.hub.touch(&client, now_ms());
        let _attached = wait.map(|_| self.hub.attach(&client));
        let deadline = Instant::now() + wait.unwrap_or_default().min(self.rules.long_poll_max);
        tokio::pin!(stop);
        loop {
            let wake = self.hub.client_wake(&client);
            let notified = wake.notified();
            tokio::pin!(notified);
            // Registered before the claim: a wake-up during the claim is not lost.
            notified.as_mut().enable();

            let claim = self.claim(client.clone(), max, None, false).await?;
            let cancelled = self.hub.turns.take_for_poll(&client);
            if !claim.messages.is_empty() || !cancelled.is_empty() || Instant::now() >= deadline {
                return Ok(Polled {
                    messages: claim.messages,
                    cancelled,
                });
            }
            let until = match claim.next_due {
                Some(at) => deadline
                    .min(Instant::now() + Duration::from_millis((at - now_ms()).max(0) as u64)),
                None => deadline,
            };
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {}
                _ = &mut stop => return Ok(Polled::default()),
            }
        }
    }

    /// Claims for a WebSocket session up to `max_in_flight` held at once:
    /// like a poll, but the leases are the session's, so they end when it
    /// closes. Returns the messages and when the client's next lease ends.
    pub async fn claim_for_session(
        &self,
        client: &ClientId,
        max_in_flight: i64,
        session: &str,
    ) -> Result<SessionClaim, Error> {
        // One read says whether there is room and anything due: a wake-up
        // with nothing to push (an ack of the session's own, work another
        // connection took) costs no more.
        let now = now_ms();
        let (held, earliest) =
            deliveries::session_view(self.store.hot(), client, session, now).await?;
        let room = max_in_flight - held;
        let nothing_due = earliest.is_none_or(|at| at > now) && !self.hub.unassigned_hinted();
        if room <= 0 || nothing_due {
            return Ok(SessionClaim {
                messages: Vec::new(),
                next_due: earliest,
                full: room <= 0,
            });
        }
        let claim = self
            .claim(client.clone(), room, Some(session.to_owned()), true)
            .await?;
        Ok(SessionClaim {
            full: claim.messages.len() as i64 >= room,
            messages: claim.messages,
            next_due: claim.next_due,
        })
    }

    /// A session closed: what it held unacked is due again now, for the same
    /// client's other connections or, after reassignment, another client.
    pub async fn release_session(&self, client: &ClientId, session: &str) -> Result<(), Error> {
        let session = session.to_owned();
        // Relaxed: a release undone by a crash is undone again at start
        // (`release_all_owned`), since no session outlives the process.
        let released = self
            .store
            .write_relaxed(move |tx| deliveries::release_owner(tx, &session, now_ms()))
            .await?;
        if released > 0 {
            self.wake(Wake::Client(client.clone()));
        }
        Ok(())
    }

    /// Claims for a poll or a socket; a stop of the claimed messages'
    /// conversations is over (the agent works on new messages there).
    async fn claim(
        &self,
        client: ClientId,
        max: i64,
        owner: Option<String>,
        looked: bool,
    ) -> Result<Claim, Error> {
        let claim = self.claim_due(client, max, owner, looked).await?;
        self.hub
            .turns
            .claimed(claim.messages.iter().map(|m| &m.conversation_id));
        Ok(claim)
    }

    async fn claim_due(
        &self,
        client: ClientId,
        max: i64,
        owner: Option<String>,
        looked: bool,
    ) -> Result<Claim, Error> {
        let mut taken = Vec::new();
        if let (Some(engine), false) = (&self.engine, self.hub.unassigned_hinted()) {
            let claimed = engine
                .claim(engine::Claim {
                    client: client.clone(),
                    max,
                    owner: owner.clone(),
                })
                .await?;
            count_claimed(&claimed.messages);
            if !claimed.exhausted {
                return Ok(Claim {
                    messages: claimed.messages,
                    dead: 0,
                    hooked: Vec::new(),
                    next_due: claimed.next_due,
                    adopted: Vec::new(),
                });
            }
            // A due delivery is out of attempts: the general claim below
            // retires it (and claims what room is left).
            taken = claimed.messages;
        }
        let mut claim = self
            .general_claim(client, max - taken.len() as i64, owner, looked)
            .await?;
        if !taken.is_empty() {
            taken.append(&mut claim.messages);
            claim.messages = taken;
            claim.next_due = None;
        }
        Ok(claim)
    }

    /// A claim as one general write: adopts unassigned work when hinted,
    /// retires deliveries out of attempts. `looked`: the caller has read
    /// that something is due.
    async fn general_claim(
        &self,
        client: ClientId,
        max: i64,
        owner: Option<String>,
        looked: bool,
    ) -> Result<Claim, Error> {
        // A wake-up with nothing due (a lease of the client ending later, an
        // ack elsewhere, work that another poll took) costs one read, not a
        // write transaction.
        if !looked && !self.hub.unassigned_hinted() {
            let earliest = deliveries::earliest_ready(self.store.hot(), &client).await?;
            if earliest.is_none_or(|at| at > now_ms()) {
                return Ok(Claim {
                    messages: Vec::new(),
                    dead: 0,
                    hooked: Vec::new(),
                    next_due: earliest,
                    adopted: Vec::new(),
                });
            }
        }
        let rules = self.rules;
        let adopt = self.hub.take_unassigned_hint();
        // Relaxed: a claim undone by a crash is a redelivery, which
        // at-least-once delivery allows.
        self.store
            .write_relaxed(move |tx| {
                let now = now_ms();
                let adopted = if adopt {
                    conversations::adopt_unassigned(tx, &client, now)?
                } else {
                    Vec::new()
                };
                let mut claimed = Vec::new();
                let mut dead = 0u64;
                let mut hooked = Vec::new();
                loop {
                    let room = max - claimed.len() as i64;
                    let due = deliveries::due(tx, &client, now, room)?;
                    if due.is_empty() {
                        break;
                    }
                    let mut lease = Vec::with_capacity(due.len());
                    let mut promoted = false;
                    for d in due {
                        if d.attempts >= rules.max_attempts {
                            // Rare: a delivery out of attempts dies here
                            // (or, on PostgreSQL, waits for the next claim
                            // while another relay writes to its conversation).
                            let Retired::Dead { promoted: next } = deliveries::retire(tx, &d, now)?
                            else {
                                continue;
                            };
                            dead += 1;
                            for m in deliveries::claimed_messages(tx, &[d.seq])? {
                                hooked.extend(webhooks::record_dead(tx, &m, d.attempts, now)?);
                            }
                            promoted |= next.is_some();
                        } else {
                            lease.push(d.seq);
                        }
                    }
                    if !lease.is_empty() {
                        let until = now + rules.lease_ms;
                        deliveries::lease(tx, &lease, until, now, owner.as_deref())?;
                        claimed.extend(lease);
                    }
                    // Only a dead letter can make more rows due in this claim.
                    if !promoted || claimed.len() as i64 >= max {
                        break;
                    }
                }
                let messages = deliveries::claimed_messages(tx, &claimed)?;
                // A poll that got something answers now; one that did not
                // may wait, until the earliest lease ends at the latest.
                let next_due = if messages.is_empty() {
                    deliveries::next_visible_at(tx, &client, now)?
                } else {
                    None
                };
                Ok::<_, Error>(Claim {
                    messages,
                    dead,
                    hooked,
                    next_due,
                    adopted,
                })
            })
            .await
            .map(|mut claim| {
                count_claimed(&claim.messages);
                crate::metrics::get().dead.inc_by(claim.dead);
                self.feed_webhooks(std::mem::take(&mut claim.hooked));
                for a in claim.adopted.drain(..) {
                    self.publish_assigned(a);
                }
                claim
            })
    }

    /// `POST /renew` (and WebSocket `renew`): the agent is still working on
    /// the conversation; the claims it holds there that have not ended end
    /// `lease_secs` from now (but not past `max_lease_secs` from their
    /// claim). A delivery answered, acked, moved or due again is not
    /// revived.
    /// A conversation not assigned to the client is "not found", as for
    /// `/send`.
    pub async fn renew(
        &self,
        client: ClientId,
        conversation: ConversationId,
    ) -> Result<Renewed, Error> {
        self.held_by(&client, &conversation).await?;
        self.renew_leases(client, conversation).await
    }

    async fn renew_leases(
        &self,
        client: ClientId,
        conversation: ConversationId,
    ) -> Result<Renewed, Error> {
        let rules = self.rules;
        // Relaxed: a renewal undone by a crash only lets the lease end
        // sooner, a redelivery at-least-once delivery allows.
        let ends = self
            .store
            .write_relaxed(move |tx| {
                deliveries::renew(
                    tx,
                    &client,
                    &conversation,
                    now_ms(),
                    rules.lease_ms,
                    rules.max_lease_ms,
                )
            })
            .await?;
        Ok(Renewed {
            renewed: ends.len(),
            lease_until: ends.into_iter().max(),
        })
    }

    /// The agent showed it is working on the conversation (typing, a reply
    /// delta, progress): renews its leases there, at most once per
    /// [`Relay::renew_every`] however much activity arrives. A failed
    /// renewal is only logged: the lease ends as it would have.
    pub(super) async fn renew_for_activity(
        &self,
        client: &ClientId,
        conversation: &ConversationId,
    ) {
        let now = now_ms();
        {
            let mut renewed = self.renewed.lock().unwrap_or_else(|p| p.into_inner());
            let key = (client.clone(), conversation.clone());
            if renewed
                .get(&key)
                .is_some_and(|at| now - *at < self.renew_every())
            {
                return;
            }
            if renewed.len() >= RENEWALS_REMEMBERED {
                let lease = self.rules.lease_ms;
                renewed.retain(|_, at| now - *at < lease);
            }
            renewed.insert(key, now);
        }
        if let Err(e) = self
            .renew_leases(client.clone(), conversation.clone())
            .await
        {
            tracing::warn!(client = %client, conversation = %conversation, error = %e, "renewing leases on activity failed");
        }
    }

    /// How often activity renews an agent's leases in one conversation: a
    /// third of a lease, at most every 5 s.
    fn renew_every(&self) -> i64 {
        (self.rules.lease_ms / 3).clamp(1, 5000)
    }

    /// `POST /ack`: acks the client's claimed deliveries of these messages.
    pub async fn ack(&self, client: ClientId, ids: Vec<MessageId>) -> Result<AckOutcome, Error> {
        let (outcome, promoted) = self
            .store
            .write(move |tx| {
                let now = now_ms();
                let mut outcome = AckOutcome {
                    acked: Vec::new(),
                    not_acked: Vec::new(),
                };
                let mut promoted = false;
                for id in &ids {
                    match deliveries::ack(tx, &client, id, now)? {
                        Some(c) => {
                            promoted |= deliveries::promote_next(tx, &c, now)?.is_some();
                            outcome.acked.push(id.clone());
                        }
                        None => outcome.not_acked.push(id.clone()),
                    }
                }
                Ok::<_, Error>((outcome, promoted.then(|| client.clone())))
            })
            .await?;
        crate::metrics::get()
            .acked
            .inc_by(outcome.acked.len() as u64);
        if let Some(client) = promoted {
            self.wake(Wake::Client(client));
        }
        Ok(outcome)
    }
}
