//! Messages in both directions: `/inbound` (app → agent), `/send` (agent →
//! app), the app's outbox, and reading a conversation.

use super::delivery::conversation_for;
use super::{webhooks, Relay, Wake};
use crate::auth::Principal;
use crate::error::Error;
use crate::ids::{
    AppId, AttachmentId, ClientId, ConversationId, EventId, IdempotencyKey, ReplyId, UserId,
};
use crate::model::{
    Attachment, Conversation, ConversationState, ConversationWithMessages, Direction, Message,
};
use crate::store::attachments::{self, Party};
use crate::store::messages::NewMessage;
use crate::store::postgres::engine;
use crate::store::{apps, clients, conversations, deliveries, idempotency, messages, now_ms, Tx};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

/// The message an idempotency key already stored, if any. A key reused for a
/// different request is a conflict, not a replay.
fn replay(
    tx: &Tx,
    principal: &str,
    key: Option<&IdempotencyKey>,
    same_request: impl Fn(&Message) -> bool,
) -> Result<Option<Message>, Error> {
    let Some(key) = key else { return Ok(None) };
    let Some(id) = idempotency::lookup(tx, principal, key)? else {
        return Ok(None);
    };
    // The message may have been purged (retention): the key is then stale,
    // and this request is a new one (recording it replaces the key).
    let Some(message) = messages::get(tx, &id)? else {
        return Ok(None);
    };
    if !same_request(&message) {
        return Err(Error::Conflict {
            code: "idempotency_key_reused",
            message: "this Idempotency-Key was already used for a different request".into(),
        });
    }
    Ok(Some(message))
}

/// Whether a stored message carries exactly the attachments `ids`.
fn same_attachments(m: &Message, ids: &[AttachmentId]) -> bool {
    m.attachments.len() == ids.len() && m.attachments.iter().zip(ids).all(|(a, id)| &a.id == id)
}

/// The attachments `ids` if `poster` may put them in a message (see
/// [`attachments::for_message`]); one that is unknown or not theirs is
/// refused without saying which of the two it is.
fn usable(tx: &Tx, ids: &[AttachmentId], poster: &Party) -> Result<Vec<Attachment>, Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    attachments::for_message(tx, ids, poster)?.map_err(|id| {
        Error::invalid(
            "unknown_attachment",
            format!("no attachment {id} that you may use (upload it with POST /attachments)"),
        )
    })
}

/// The longest an outbox read waits for replies stored but not yet
/// readable (see [`Relay::outbox_page`]): normally milliseconds, while a
/// write that began earlier commits.
const READABLE_WAIT: Duration = Duration::from_secs(2);

/// A page of an app's outbox.
pub struct OutboxPage {
    pub messages: Vec<std::sync::Arc<crate::model::SharedMessage>>,
    /// Pass as `after` to continue.
    pub cursor: i64,
}

/// A user's message for the agent side (`POST /inbound`).
pub struct Post {
    pub app: AppId,
    pub from: UserId,
    /// Which conversation of that user's it goes to.
    pub target: Target,
    pub text: String,
    pub attachments: Vec<AttachmentId>,
    pub key: Option<IdempotencyKey>,
    /// Who posts it (the app, or one user's session), for which uploads it
    /// may carry.
    pub poster: Party,
}

/// Which conversation of its user's an inbound message goes to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Target {
    /// The user's most recently active conversation, or a new one.
    #[default]
    Latest,
    /// This one (it must be the user's and active).
    Named(ConversationId),
    /// A new one, beside those still active: on this agent if one is named
    /// (connected or not), else assigned as a first message's would be.
    New(Option<ClientId>),
}

/// An agent's message for the user of a conversation it holds.
pub struct Reply {
    pub to: String,
    pub text: String,
    pub attachments: Vec<AttachmentId>,
    /// Closes the reply streamed as `reply.delta` events under this id.
    pub reply_id: Option<ReplyId>,
    pub key: Option<IdempotencyKey>,
    /// Whether storing it acks what the agent holds of the conversation
    /// (the answer), or not (an interim notice: "working on it").
    pub ack: bool,
}

impl Relay {
    /// `POST /inbound`: stores a user's message and queues its delivery, in one
    /// transaction.
    pub async fn inbound(&self, post: Post) -> Result<Message, Error> {
        let Post {
            app,
            from,
            target,
            text,
            attachments: attached,
            key,
            poster,
        } = post;
        self.check_text(&text, attached.len())?;
        let now = now_ms();
        // The engine takes the common case: no attachments, the user's
        // latest conversation.
        if let (Some(engine), true, Target::Latest) = (&self.engine, attached.is_empty(), &target) {
            let request = engine::Inbound {
                app: app.clone(),
                user: from.clone(),
                text: text.clone(),
                key: key.clone(),
                now,
                kept: self.hub.kept(now),
            };
            if let Some(stored) = engine.inbound(request).await? {
                let wake = match (&stored.message.client_id, stored.ready) {
                    (Some(c), true) => Wake::Client(c.clone()),
                    _ => Wake::Nobody,
                };
                self.wake(wake);
                self.announce(&stored.message.app_id, stored.cursor);
                crate::metrics::message_stored("inbound");
                return Ok(stored.message);
            }
        }
        let live = self.hub.live_clients(now);
        let hub = self.hub.clone();
        let ttl_ms = self.rules.ttl_ms;
        let max_pending = self.rules.max_pending;
        // `seq` 0: a replay, nothing new to announce.
        let ((seq, message), wake, expired, opened, hooked) = self
            .store
            .write(move |tx| {
                let same = |m: &Message| {
                    m.from == from.as_str() && m.text == text && same_attachments(m, &attached)
                };
                if let Some(m) = replay(tx, app.as_str(), key.as_ref(), same)? {
                    return Ok(((0, m), Wake::Nobody, None, false, Vec::new()));
                }
                let carried = usable(tx, &attached, &poster)?;
                let destination = conversation_for(
                    tx,
                    &hub,
                    &app,
                    &from,
                    &target,
                    &live,
                    ttl_ms,
                    max_pending,
                    now,
                )?;
                let (conversation, client) = (destination.conversation, destination.client);
                let stored = messages::insert(
                    tx,
                    NewMessage {
                        conversation_id: &conversation,
                        app_id: &app,
                        client_id: client.as_ref(),
                        direction: Direction::Inbound,
                        from: from.as_str(),
                        to: client.as_ref().map(ClientId::as_str).unwrap_or(""),
                        text: &text,
                        reply_id: None,
                        in_reply_to: None,
                        attachments: &carried,
                        stopped: false,
                        now,
                    },
                )?;
                let ready =
                    deliveries::enqueue(tx, stored.seq, &conversation, client.as_ref(), now)?;
                let mut hooked = Vec::new();
                if let Some(e) = &destination.expired {
                    hooked.extend(webhooks::record_expired(tx, e, now)?);
                }
                if !destination.opened {
                    conversations::touch(tx, &conversation, now)?;
                }
                if let Some(key) = &key {
                    idempotency::record(tx, app.as_str(), key, &stored.message.id, now)?;
                }
                let wake = match (ready, client) {
                    (false, _) => Wake::Nobody,
                    (true, Some(c)) => Wake::Client(c),
                    (true, None) => Wake::AnyClient,
                };
                Ok::<_, Error>((
                    (stored.cursor, stored.message),
                    wake,
                    destination.expired,
                    destination.opened,
                    hooked,
                ))
            })
            .await?;
        self.wake(wake);
        self.feed_webhooks(hooked);
        self.announce(&message.app_id, seq);
        if opened {
            self.active_conversations.fetch_add(1, Ordering::Relaxed);
        }
        crate::metrics::message_stored("inbound");
        if let Some(expired) = expired {
            self.publish_expired(expired);
        }
        Ok(message)
    }

    /// `POST /conversations`: opens a new conversation for `user` of `app`,
    /// beside those still active, assigned as a first message's would be.
    /// Messages that name it (`conversationId`) go to it.
    pub async fn open_conversation(&self, app: AppId, user: UserId) -> Result<Conversation, Error> {
        if !apps::is_active(self.store.reader(), &app).await? {
            return Err(Error::not_found(
                "app_not_found",
                format!("no active app {app}"),
            ));
        }
        let now = now_ms();
        let live = self.hub.live_clients(now);
        let (app2, user2) = (app.clone(), user.clone());
        let (id, client) = self
            .store
            .write(move |tx| {
                conversations::lock_user(tx, &app2, &user2)?;
                let client = clients::least_loaded(tx, &live)?.map(|(c, _)| c);
                let id = conversations::create(tx, &app2, &user2, client.as_ref(), now)?;
                Ok::<_, Error>((id, client))
            })
            .await?;
        if client.is_none() {
            self.hub.note_unassigned();
        }
        self.active_conversations.fetch_add(1, Ordering::Relaxed);
        // As written: nothing else can have touched it yet.
        Ok(Conversation {
            id,
            app_id: app,
            user_id: user.as_str().to_owned(),
            client_id: client,
            state: ConversationState::Active,
            created_at: now,
            updated_at: now,
            expired_at: None,
            message_count: 0,
        })
    }

    /// `POST /send`: stores an agent's reply in a conversation it holds and,
    /// unless `reply.ack` is false (an interim notice), acks what it had
    /// claimed of that conversation. `reply.reply_id` closes a reply streamed
    /// as `reply.delta` events.
    pub async fn send(
        &self,
        client: ClientId,
        conversation: ConversationId,
        reply: Reply,
    ) -> Result<Message, Error> {
        let Reply {
            to,
            text,
            attachments: attached,
            reply_id,
            key,
            ack,
        } = reply;
        self.check_text(&text, attached.len())?;
        if ack
            && self
                .hub
                .turns
                .refuses(&conversation, reply_id.as_ref().map(ReplyId::as_str))
        {
            return Err(reply_stopped(&conversation));
        }
        let rules = self.rules;
        if let (Some(engine), true) = (&self.engine, attached.is_empty()) {
            let now = now_ms();
            let request = engine::Reply {
                client: client.clone(),
                conversation: conversation.clone(),
                to: to.clone(),
                text: text.clone(),
                reply_id: reply_id.as_ref().map(|r| r.as_str().to_owned()),
                key: key.clone(),
                ack,
                now,
            };
            let body = |m: &Message| webhooks::reply_body(m, now);
            let event = EventId::generate().as_str().to_owned();
            if let Some(sent) = engine.send(request, body, event).await? {
                self.announce(&sent.message.app_id, sent.cursor);
                self.wake_webhooks(sent.hooked);
                let m = crate::metrics::get();
                crate::metrics::message_stored("outbound");
                m.acked.inc_by(sent.acked);
                self.hub.turns.settled(&sent.message.conversation_id);
                if sent.acked > 0 {
                    self.publish_reply_stored(&sent.message, None);
                }
                if let Some(c) = sent.promoted {
                    self.wake(Wake::Client(c));
                }
                return Ok(sent.message);
            }
        }
        let ((seq, message), promoted, acked, hooked) = self
            .store
            .write(move |tx| {
                let now = now_ms();
                let same = |m: &Message| {
                    m.conversation_id == conversation
                        && m.to == to
                        && m.text == text
                        && same_attachments(m, &attached)
                };
                if let Some(m) = replay(tx, client.as_str(), key.as_ref(), same)? {
                    return Ok(((0, m), None, (0, None), None));
                }
                let owners = conversations::owners(tx, &conversation)?
                    .filter(|o| o.client_id.as_ref() == Some(&client))
                    .ok_or_else(|| {
                        Error::not_found(
                            "conversation_not_found",
                            format!("no conversation {conversation} assigned to this client"),
                        )
                    })?;
                if owners.user_id.as_str() != to {
                    return Err(Error::invalid(
                        "wrong_recipient",
                        format!(
                            "`to` must be the conversation's user, `{}`",
                            owners.user_id.as_str()
                        ),
                    ));
                }
                let carried = usable(tx, &attached, &Party::client(&client))?;
                conversations::expire_or_touch(
                    tx,
                    &conversation,
                    rules.idle_cutoff(now),
                    rules.ttl_ms,
                    now,
                )?;
                // Acked first: the reply records the message it answers.
                let (acked, promoted) = if ack {
                    let acked = deliveries::ack_conversation(tx, &client, &conversation, now)?;
                    (acked, deliveries::promote_next(tx, &conversation, now)?)
                } else {
                    (deliveries::Acked::default(), None)
                };
                let stored = messages::insert(
                    tx,
                    NewMessage {
                        conversation_id: &conversation,
                        app_id: &owners.app_id,
                        client_id: Some(&client),
                        direction: Direction::Outbound,
                        from: client.as_str(),
                        to: &to,
                        text: &text,
                        reply_id: reply_id.as_ref().map(ReplyId::as_str),
                        in_reply_to: acked.last,
                        attachments: &carried,
                        stopped: false,
                        now,
                    },
                )?;
                let hooked = webhooks::record_reply(tx, &stored.message, now)?;
                if let Some(key) = &key {
                    idempotency::record(tx, client.as_str(), key, &stored.message.id, now)?;
                }
                Ok::<_, Error>((
                    (stored.cursor, stored.message),
                    promoted.flatten(),
                    (acked.count, acked.last),
                    hooked,
                ))
            })
            .await?;
        let (acked, answered) = acked;
        self.hub.turns.settled(&message.conversation_id);
        self.announce(&message.app_id, seq);
        self.feed_webhooks(Vec::from_iter(hooked));
        let m = crate::metrics::get();
        crate::metrics::message_stored("outbound");
        m.acked.inc_by(acked);
        if let Some(answers) = answered {
            self.publish_reply_stored(&message, Some(answers));
        }
        if let Some(c) = promoted {
            self.wake(Wake::Client(c));
        }
        Ok(message)
    }

    /// `GET /outbox`: the app's outbound messages after `after`, oldest first.
    /// With `wait`, waits (up to `long_poll_max`) for the first one.
    pub async fn outbox(
        &self,
        app: AppId,
        user: Option<&UserId>,
        after: i64,
        limit: i64,
        wait: Option<Duration>,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<OutboxPage, Error> {
        let deadline = Instant::now() + wait.unwrap_or_default().min(self.rules.long_poll_max);
        tokio::pin!(stop);
        loop {
            let wake = self.hub.app_wake(&app);
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let rows = self.outbox_page(&app, user, after, limit).await?;
            if !rows.is_empty() || Instant::now() >= deadline {
                let cursor = rows.last().map(|(seq, _)| *seq).unwrap_or(after);
                return Ok(OutboxPage {
                    messages: rows.into_iter().map(|(_, m)| m).collect(),
                    cursor,
                });
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = &mut stop => return Ok(OutboxPage { messages: Vec::new(), cursor: after }),
            }
        }
    }

    /// A page of the outbox that holds every reply this relay knows was
    /// stored before it: on PostgreSQL a reply committed while an older
    /// transaction still ran is readable only once that one ends, so a read
    /// that could not see one yet waits for it (up to [`READABLE_WAIT`])
    /// and reads again. A reply is in the outbox once its `/send` answered.
    async fn outbox_page(
        &self,
        app: &AppId,
        user: Option<&UserId>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, std::sync::Arc<crate::model::SharedMessage>)>, Error> {
        let waited_until = Instant::now() + READABLE_WAIT;
        loop {
            let target = self.hub.app_announced(app);
            let reader = self.store.reader();
            let page = match user {
                // What was just committed, when that reaches back to
                // `after` (SQLite: see `store::recent`); else the database.
                None => match self
                    .store
                    .recent()
                    .and_then(|r| r.after(app, None, true, after, limit))
                {
                    Some(page) => page,
                    None => messages::outbox(reader, app, after, limit).await?,
                },
                Some(user) => {
                    messages::of_user(reader, app, user, None, after, limit, true).await?
                }
            };
            let full = page.messages.len() as i64 >= limit;
            if page.horizon > target || full {
                return Ok(page.messages);
            }
            let readable = self.store.readable_beyond(target);
            if tokio::time::timeout_at(waited_until, readable)
                .await
                .is_err()
            {
                return Ok(page.messages);
            }
        }
    }

    /// `GET /conversations/:id`: for an admin any conversation, for a client
    /// or an app only its own (anything else is "not found").
    pub async fn conversation(
        &self,
        viewer: &Principal,
        id: &ConversationId,
    ) -> Result<ConversationWithMessages, Error> {
        let conversation = self.visible_conversation(viewer, id).await?;
        let messages = messages::of_conversation(self.store.reader(), id).await?;
        Ok(ConversationWithMessages {
            conversation,
            messages,
        })
    }

    /// The conversation, if `viewer` may read it (the admin any, a client
    /// one it holds, an app its own, a user session its user's); else 404.
    pub(super) async fn visible_conversation(
        &self,
        viewer: &Principal,
        id: &ConversationId,
    ) -> Result<Conversation, Error> {
        let not_found =
            || Error::not_found("conversation_not_found", format!("no conversation {id}"));
        let conversation =
            conversations::get(self.store.reader(), id, self.rules.idle_cutoff(now_ms()))
                .await?
                .ok_or_else(not_found)?;
        let visible = match viewer {
            Principal::Admin => true,
            Principal::Client(c) => conversation.client_id.as_ref() == Some(c),
            Principal::App(a) => &conversation.app_id == a,
            Principal::User(s) => {
                conversation.app_id == s.app && conversation.user_id == s.user.as_str()
            }
        };
        if !visible {
            return Err(not_found());
        }
        Ok(conversation)
    }

    /// A page of a conversation's history for `viewer` (as
    /// [`Relay::conversation`] decides who may read it): up to `limit`
    /// messages before position `before` (None: the latest), oldest first,
    /// and the position to ask for the page before it (None: there is
    /// none).
    pub async fn history(
        &self,
        viewer: &Principal,
        id: &ConversationId,
        before: Option<i64>,
        limit: i64,
    ) -> Result<(Vec<Message>, Option<i64>), Error> {
        self.visible_conversation(viewer, id).await?;
        // One more than asked: whether there is an earlier page.
        let mut rows = messages::history(
            self.store.reader(),
            id,
            before.unwrap_or(i64::MAX),
            limit + 1,
        )
        .await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next = more.then(|| rows.last().map(|(at, _)| *at)).flatten();
        rows.reverse();
        Ok((rows.into_iter().map(|(_, m)| m).collect(), next))
    }
}

/// A reply to a turn the user stopped: not stored.
pub(super) fn reply_stopped(conversation: &ConversationId) -> Error {
    Error::Conflict {
        code: "reply_stopped",
        message: format!(
            "the user stopped this reply in conversation {conversation}: it is not stored; \
             drop the turn (a new message there starts a new one)"
        ),
    }
}
