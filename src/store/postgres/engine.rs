//! The hot operations on PostgreSQL, one statement per batch of requests:
//! an inbound message, a claim, a reply with its ack. Each is a function of
//! the schema (`migrations/postgres/0003_engine.sql`) that takes a batch as
//! arrays, run by a [`Batcher`] that gathers the requests arriving while
//! the last batch was written (group commit, as SQLite's writer does).
//!
//! They are the common case of the domain's rules (`crate::relay`): a
//! message to an active conversation with a live agent, a claim of due
//! deliveries, a reply of the agent that holds the conversation. A request
//! outside it (a user's first message, an expired conversation, an agent
//! that is gone, an idempotency key already used, attachments, a delivery
//! out of attempts) is answered "not here", and the domain runs it as a
//! general write (`Store::write`), which follows the same locks.

use super::batch::{Batcher, Run};
use super::cursor::Notices;
use crate::ids::{AppId, ClientId, ConversationId, IdempotencyKey, MessageId, UserId};
use crate::model::{Direction, Message};
use crate::store::StoreResult;
use futures_util::FutureExt;
use sqlx::PgPool;
use std::sync::Arc;

/// Lanes per kind of request: batches written at once (see [`Batcher`]).
const LANES: usize = 1;
/// The largest batch.
const MAX_BATCH: usize = 256;

/// A user's message for an agent (`POST /inbound` without attachments).
pub struct Inbound {
    pub app: AppId,
    pub user: UserId,
    pub text: String,
    pub key: Option<IdempotencyKey>,
    pub now: i64,
    /// Clients not gone (see `Hub::is_gone`): a conversation stays with one
    /// of them.
    pub kept: Arc<Vec<ClientId>>,
}

/// An inbound message stored.
pub struct Stored {
    pub message: Message,
    /// Its cursor position.
    pub cursor: i64,
    /// Whether its delivery is claimable now (else queued behind one).
    pub ready: bool,
}

/// A claim of up to `max` due deliveries (for a WebSocket session: `owner`).
pub struct Claim {
    pub client: ClientId,
    pub max: i64,
    pub owner: Option<String>,
}

/// What a claim took.
pub struct Claimed {
    pub messages: Vec<Message>,
    /// A due delivery is out of attempts: the general claim retires it.
    pub exhausted: bool,
    /// When nothing was claimed: when the client's next lease ends.
    pub next_due: Option<i64>,
}

/// An agent's reply in a conversation it holds (`POST /send` without
/// attachments).
pub struct Reply {
    pub client: ClientId,
    pub conversation: ConversationId,
    pub to: String,
    pub text: String,
    pub reply_id: Option<String>,
    pub key: Option<IdempotencyKey>,
    pub ack: bool,
    pub now: i64,
}

/// A reply stored.
pub struct Sent {
    pub message: Message,
    pub cursor: i64,
    /// Deliveries it acked.
    pub acked: u64,
    /// The client of the conversation's next message, made ready by the ack.
    pub promoted: Option<ClientId>,
    /// Whether webhook events were queued.
    pub hooked: bool,
}

/// The domain's rules the functions apply.
#[derive(Clone, Copy)]
pub struct Rules {
    pub ttl_ms: i64,
    pub max_pending: i64,
    pub lease_ms: i64,
    pub max_attempts: i64,
}

struct InboundJob {
    request: Inbound,
    id: MessageId,
}

struct ReplyJob {
    request: Reply,
    id: MessageId,
    /// The reply's webhook body (when its app is known), and the event's id.
    payload: Option<String>,
    event: String,
}

/// What the inbound function answered for a message it stored.
struct Queued {
    pos: i64,
    conversation: String,
    client: String,
    ready: bool,
}

/// What the reply function answered for a reply it stored.
struct Replied {
    pos: i64,
    app: String,
    acked: i64,
    /// The promoted delivery's client, if one was promoted.
    promoted: Option<Option<String>>,
    hooked: bool,
}

/// The batchers of one relay.
pub struct Engine {
    inbound: Batcher<InboundJob, Option<Queued>>,
    claim: Batcher<Claim, Claimed>,
    send: Batcher<ReplyJob, Option<Replied>>,
    /// The apps of conversations this relay's claims handed out, for the
    /// webhook bodies of their replies.
    apps: std::sync::Mutex<std::collections::HashMap<ConversationId, AppId>>,
}

/// Conversations whose apps are remembered before the memory starts over.
const REMEMBERED: usize = 100_000;

impl Engine {
    /// Starts the batchers on `pool`; the messages they store are added to
    /// `notices` (for the other relays) once committed. `others_wrote` is
    /// when another relay was last heard storing messages (the cluster
    /// keeps it): while they write, batches gather longer.
    pub fn start(
        pool: PgPool,
        notices: Arc<Notices>,
        others_wrote: Arc<std::sync::atomic::AtomicI64>,
        rules: Rules,
    ) -> Engine {
        Engine {
            inbound: Batcher::start(
                "inbound",
                "full",
                LANES,
                MAX_BATCH,
                others_wrote.clone(),
                inbound(pool.clone(), notices.clone(), rules),
            ),
            claim: Batcher::start(
                "claim",
                "relaxed",
                LANES,
                MAX_BATCH,
                others_wrote.clone(),
                claim(pool.clone(), rules),
            ),
            send: Batcher::start(
                "send",
                "full",
                LANES,
                MAX_BATCH,
                others_wrote,
                send(pool, notices, rules),
            ),
            apps: Default::default(),
        }
    }

    /// Stores an inbound message if its conversation is an active one with
    /// a live agent (else None: the general path takes it).
    pub async fn inbound(&self, request: Inbound) -> StoreResult<Option<Stored>> {
        let id = MessageId::generate();
        let (app, user, text, now) = (
            request.app.clone(),
            request.user.clone(),
            request.text.clone(),
            request.now,
        );
        let done = self
            .inbound
            .submit(InboundJob {
                request,
                id: id.clone(),
            })
            .await?;
        Ok(done.map(|q| {
            let (pos, ready) = (q.pos, q.ready);
            let client = ClientId::from_db(q.client);
            Stored {
                message: Message {
                    id,
                    conversation_id: ConversationId::from_db(q.conversation),
                    to: client.as_str().to_owned(),
                    client_id: Some(client),
                    app_id: app,
                    direction: Direction::Inbound,
                    from: user.as_str().to_owned(),
                    text,
                    timestamp: now,
                    attempt: None,
                    lease_until: None,
                    reply_id: None,
                    attachments: Vec::new(),
                    stopped: false,
                },
                cursor: pos,
                ready,
            }
        }))
    }

    /// Claims due deliveries.
    pub async fn claim(&self, request: Claim) -> StoreResult<Claimed> {
        let claimed = self.claim.submit(request).await?;
        self.remember(&claimed.messages);
        Ok(claimed)
    }

    /// Stores an agent's reply if the agent holds the conversation and the
    /// reply goes to its user (else None: the general path takes it, and
    /// says what is wrong). `payload` makes the reply's webhook body; it is
    /// made when the conversation's app is known here (from a claim of this
    /// relay), and a reply to an app with webhooks whose body could not be
    /// made goes the general path.
    pub async fn send(
        &self,
        request: Reply,
        payload: impl FnOnce(&Message) -> String,
        event: String,
    ) -> StoreResult<Option<Sent>> {
        let id = MessageId::generate();
        let app = self.app_of(&request.conversation);
        let known = app.is_some();
        let mut message = Message {
            id: id.clone(),
            conversation_id: request.conversation.clone(),
            client_id: Some(request.client.clone()),
            // The conversation's, as the write finds it (set below).
            app_id: app.unwrap_or_else(|| AppId::from_db(String::new())),
            direction: Direction::Outbound,
            from: request.client.as_str().to_owned(),
            to: request.to.clone(),
            text: request.text.clone(),
            timestamp: request.now,
            attempt: None,
            lease_until: None,
            reply_id: request.reply_id.clone(),
            attachments: Vec::new(),
            stopped: false,
        };
        let payload = known.then(|| payload(&message));
        let done = self
            .send
            .submit(ReplyJob {
                payload,
                request,
                id,
                event,
            })
            .await?;
        Ok(done.map(|r| {
            message.app_id = AppId::from_db(r.app);
            Sent {
                message,
                cursor: r.pos,
                acked: r.acked as u64,
                promoted: r.promoted.flatten().map(ClientId::from_db),
                hooked: r.hooked,
            }
        }))
    }

    /// The app of a conversation this relay handed out.
    fn app_of(&self, conversation: &ConversationId) -> Option<AppId> {
        self.apps.lock().ok()?.get(conversation).cloned()
    }

    /// Remembers the apps of claimed messages' conversations.
    fn remember(&self, messages: &[Message]) {
        let Ok(mut apps) = self.apps.lock() else {
            return;
        };
        if apps.len() + messages.len() > REMEMBERED {
            apps.clear();
        }
        for m in messages {
            apps.insert(m.conversation_id.clone(), m.app_id.clone());
        }
    }
}

fn inbound(pool: PgPool, notices: Arc<Notices>, rules: Rules) -> Run<InboundJob, Option<Queued>> {
    Arc::new(move |jobs: Arc<Vec<InboundJob>>| {
        let (pool, notices) = (pool.clone(), notices.clone());
        async move {
            let app: Vec<&str> = jobs.iter().map(|j| j.request.app.as_str()).collect();
            let user: Vec<&str> = jobs.iter().map(|j| j.request.user.as_str()).collect();
            let text: Vec<&str> = jobs.iter().map(|j| j.request.text.as_str()).collect();
            let key: Vec<Option<&str>> = jobs
                .iter()
                .map(|j| j.request.key.as_ref().map(IdempotencyKey::as_str))
                .collect();
            let id: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
            let now: Vec<i64> = jobs.iter().map(|j| j.request.now).collect();
            let kept: Vec<&str> = jobs
                .first()
                .map(|j| j.request.kept.iter().map(ClientId::as_str).collect())
                .unwrap_or_default();
            let search: Vec<Option<String>> = jobs
                .iter()
                .map(|j| crate::search::tsvector(&j.request.text))
                .collect();
            let rows = pgsql::engine::inbound(
                &app,
                &user,
                &text,
                &key,
                &id,
                &now,
                rules.ttl_ms,
                rules.max_pending,
                &kept,
                &search,
            )
            .fetch_all(&pool)
            .await?;
            let mut done: Vec<_> = (0..jobs.len()).map(|_| None).collect();
            let mut top = 0;
            for r in rows {
                if let (Some(_), Some(pos), Some(conversation), Some(client), Some(ready)) =
                    (r.seq, r.pos, r.conversation, r.client, r.ready)
                {
                    if let Some(slot) = done.get_mut((r.n - 1) as usize) {
                        top = top.max(pos);
                        *slot = Some(Queued {
                            pos,
                            conversation,
                            client,
                            ready,
                        });
                    }
                }
            }
            if top > 0 {
                let stored = jobs.iter().zip(&done).filter(|(_, d)| d.is_some());
                notices.stored(top, stored.map(|(j, _)| j.request.app.as_str()));
            }
            Ok(done)
        }
        .boxed()
    })
}

fn claim(pool: PgPool, rules: Rules) -> Run<Claim, Claimed> {
    Arc::new(move |jobs: Arc<Vec<Claim>>| {
        let pool = pool.clone();
        async move {
            let client: Vec<&str> = jobs.iter().map(|j| j.client.as_str()).collect();
            let max: Vec<i32> = jobs
                .iter()
                .map(|j| j.max.clamp(0, i32::MAX as i64) as i32)
                .collect();
            let owner: Vec<Option<&str>> = jobs.iter().map(|j| j.owner.as_deref()).collect();
            let now = crate::store::now_ms();
            let until = now + rules.lease_ms;
            let rows = pgsql::engine::claim(&client, &max, &owner, now, until, rules.max_attempts)
                .fetch_all(&pool)
                .await?;
            let mut done: Vec<Claimed> = (0..jobs.len())
                .map(|_| Claimed {
                    messages: Vec::new(),
                    exhausted: false,
                    next_due: None,
                })
                .collect();
            for r in rows {
                let Some(c) = done.get_mut((r.n - 1) as usize) else {
                    continue;
                };
                c.exhausted |= r.exhausted.unwrap_or(false);
                if let (
                    Some(id),
                    Some(conversation),
                    Some(app),
                    Some(sender),
                    Some(recipient),
                    Some(text),
                    Some(created_at),
                    Some(attempts),
                ) = (
                    r.id,
                    r.conversation_id,
                    r.app_id,
                    r.sender,
                    r.recipient,
                    r.text,
                    r.created_at,
                    r.attempts,
                ) {
                    c.messages.push(Message {
                        id: MessageId::from_db(id),
                        conversation_id: ConversationId::from_db(conversation),
                        client_id: r.client_id.map(ClientId::from_db),
                        app_id: AppId::from_db(app),
                        direction: Direction::Inbound,
                        from: sender,
                        to: recipient,
                        text,
                        timestamp: created_at,
                        attempt: Some(attempts),
                        lease_until: Some(until),
                        reply_id: None,
                        attachments: crate::store::attachments::from_column(
                            r.attachments.as_deref(),
                        ),
                        stopped: false,
                    });
                } else {
                    c.next_due = r.next_due;
                }
            }
            Ok(done)
        }
        .boxed()
    })
}

fn send(pool: PgPool, notices: Arc<Notices>, rules: Rules) -> Run<ReplyJob, Option<Replied>> {
    Arc::new(move |jobs: Arc<Vec<ReplyJob>>| {
        let (pool, notices) = (pool.clone(), notices.clone());
        async move {
            let client: Vec<&str> = jobs.iter().map(|j| j.request.client.as_str()).collect();
            let conversation: Vec<&str> = jobs
                .iter()
                .map(|j| j.request.conversation.as_str())
                .collect();
            let to: Vec<&str> = jobs.iter().map(|j| j.request.to.as_str()).collect();
            let text: Vec<&str> = jobs.iter().map(|j| j.request.text.as_str()).collect();
            let reply_id: Vec<Option<&str>> =
                jobs.iter().map(|j| j.request.reply_id.as_deref()).collect();
            let key: Vec<Option<&str>> = jobs
                .iter()
                .map(|j| j.request.key.as_ref().map(IdempotencyKey::as_str))
                .collect();
            let id: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
            let ack: Vec<bool> = jobs.iter().map(|j| j.request.ack).collect();
            let payload: Vec<Option<&str>> = jobs.iter().map(|j| j.payload.as_deref()).collect();
            let event: Vec<&str> = jobs.iter().map(|j| j.event.as_str()).collect();
            let now: Vec<i64> = jobs.iter().map(|j| j.request.now).collect();
            let search: Vec<Option<String>> = jobs
                .iter()
                .map(|j| crate::search::tsvector(&j.request.text))
                .collect();
            let rows = pgsql::engine::send(
                &client,
                &conversation,
                &to,
                &text,
                &reply_id,
                &key,
                &id,
                &ack,
                &payload,
                &event,
                &now,
                rules.ttl_ms,
                &search,
            )
            .fetch_all(&pool)
            .await?;
            let mut done: Vec<Option<Replied>> = (0..jobs.len()).map(|_| None).collect();
            let mut top = 0;
            for r in rows {
                if let (Some(_), Some(pos), Some(app), Some(acked), Some(promoted), Some(hooked)) =
                    (r.seq, r.pos, r.app_id, r.acked, r.promoted, r.hooked)
                {
                    if let Some(slot) = done.get_mut((r.n - 1) as usize) {
                        top = top.max(pos);
                        *slot = Some(Replied {
                            pos,
                            app,
                            acked,
                            promoted: promoted.then_some(r.promoted_to),
                            hooked,
                        });
                    }
                }
            }
            if top > 0 {
                let apps = done.iter().flatten().map(|d| d.app.as_str());
                notices.stored(top, apps);
            }
            Ok(done)
        }
        .boxed()
    })
}
