//! The OpenAI-compatible door's domain (`POST /v1/chat/completions`, see
//! `http::openai` for the wire format): a request's last user message is
//! posted as an inbound message, and its *turn* follows the agent's answer
//! to that message as the agent writes it.
//!
//! - **Which conversation.** A front end sends the whole history with
//!   every request; [`Which`] says which conversation it continues: the one
//!   it names, the user's conversation whose latest answer is the request's
//!   last assistant message, or a new one.
//! - **The answer.** A turn's answer is the reply that acks the message
//!   (`in_reply_to`, recorded by `send`), not an `ack: false` notice or a
//!   proactive send. While the agent writes it, the turn collects the
//!   `reply.delta` events of the conversation, once every earlier message
//!   of the conversation has its answer (until then the deltas are
//!   another message's).
//! - **Nothing lost.** A turn runs as its own task, registered by message:
//!   a client that goes away does not stop it, and the same request again
//!   (same `Idempotency-Key`) joins it and sees the reply from its start,
//!   or reads the stored answer. A turn ends when the answer is stored, or
//!   after the configured wait (the answer is still stored when it comes).

use super::attachments::UploadMeta;
use super::messages::{Post, Target};
use super::Relay;
use crate::error::Error;
use crate::hub::LiveEvent;
use crate::ids::{AppId, ClientId, ConversationId, IdempotencyKey, MessageId, UserId};
use crate::model::Message;
use crate::shutdown::Shutdown;
use crate::store::attachments::Party;
use crate::store::{clients, idempotency, messages, now_ms};
use axum::body::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Which conversation of the user's a request continues.
#[derive(Clone, Debug)]
pub enum Which {
    /// The one the request names (`X-Clawrelay-Conversation`).
    Named(ConversationId),
    /// The one whose latest answer has this text (the request's last
    /// assistant message); a new one when none has, or it has ended.
    Answered(String),
    /// A new one (the request has no assistant message).
    New,
}

/// A file the request carries (an `image_url` or `file` part), uploaded
/// as the message's attachment.
pub struct File {
    pub name: String,
    pub mime: Option<String>,
    pub bytes: Bytes,
}

/// A request's last user message, for the agent side.
pub struct Ask {
    pub app: AppId,
    pub user: UserId,
    pub which: Which,
    /// The agent a new conversation starts on (`model` names it).
    pub agent: Option<ClientId>,
    pub text: String,
    pub files: Vec<File>,
    pub key: Option<IdempotencyKey>,
    pub poster: Party,
}

/// How far a turn is.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// The answer as streamed so far (its `reply.delta` pieces).
    pub streamed: String,
    pub end: Option<End>,
}

#[derive(Clone, Debug)]
pub enum End {
    /// The answer, stored.
    Answered(Box<Message>),
    /// No answer within the wait; it is still stored when it comes.
    TimedOut,
    /// The relay is shutting down.
    Stopped,
    /// The user stopped the turn before the agent wrote anything
    /// (`POST /conversations/{id}/stop`; a turn stopped mid-answer ends
    /// `Answered` with what was written).
    Cancelled,
}

/// A posted message and its turn.
pub struct Asked {
    pub message: Message,
    pub turn: watch::Receiver<Progress>,
}

/// The turns running, by the message they answer.
#[derive(Default)]
pub struct Turns(Mutex<HashMap<MessageId, watch::Receiver<Progress>>>);

impl Turns {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MessageId, watch::Receiver<Progress>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Relay {
    /// The agent an OpenAI `model` names: an active client of that name
    /// (connected ones first, then the one seen last).
    pub async fn agent_named(&self, name: &str) -> Result<Option<ClientId>, Error> {
        let live = self.hub.live_clients(now_ms());
        let mut named: Vec<_> = clients::list(self.store.reader())
            .await?
            .into_iter()
            .filter(|c| c.revoked_at.is_none() && c.name == name)
            .collect();
        named.sort_by_key(|c| (!live.contains(&c.id), std::cmp::Reverse(c.last_seen_at)));
        Ok(named.into_iter().next().map(|c| c.id))
    }

    /// The names of the active agents, each once, sorted.
    pub async fn agent_names(&self) -> Result<Vec<String>, Error> {
        let mut names: Vec<String> = clients::list(self.store.reader())
            .await?
            .into_iter()
            .filter(|c| c.revoked_at.is_none())
            .map(|c| c.name)
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Posts the request's message (or finds it again, for a retry with the
    /// same key) and follows its turn for at most `wait`.
    pub async fn ask(
        self: &Arc<Self>,
        ask: Ask,
        wait: Duration,
        shutdown: Shutdown,
    ) -> Result<Asked, Error> {
        if let Some(message) = self.asked_before(&ask).await? {
            let turn = self.follow(&message, None, wait, shutdown).await;
            return Ok(Asked { message, turn });
        }
        let Ask {
            app,
            user,
            which,
            agent,
            text,
            files,
            key,
            poster,
        } = ask;
        let mut attachments = Vec::with_capacity(files.len());
        for file in files {
            let meta = UploadMeta {
                name: Some(file.name),
                declared: file.mime,
                length: Some(file.bytes.len() as u64),
            };
            let body = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(file.bytes)]);
            attachments.push(self.upload(poster.clone(), meta, body).await?.id);
        }
        // Found by its last answer (not named by the caller): a conversation
        // that has ended since gives way to a new one.
        let mut found = false;
        let target = match which {
            Which::Named(id) => Target::Named(id),
            Which::New => Target::New(agent.clone()),
            Which::Answered(last) => {
                match messages::answered_with(self.store.reader(), &app, &user, &last).await? {
                    Some(id) => {
                        found = true;
                        Target::Named(id)
                    }
                    None => Target::New(agent.clone()),
                }
            }
        };
        // Subscribed before the message is stored: no delta of its answer
        // comes before.
        let live = self.hub.subscribe_app(&app);
        let post = |target| Post {
            app: app.clone(),
            from: user.clone(),
            target,
            text: text.clone(),
            attachments: attachments.clone(),
            key: key.clone(),
            poster: poster.clone(),
        };
        let message = match self.inbound(post(target)).await {
            // The conversation its last answer came from has ended: a new
            // one, as for a first message.
            Err(Error::Conflict {
                code: "conversation_expired",
                ..
            }) if found => self.inbound(post(Target::New(agent))).await?,
            other => other?,
        };
        let turn = self.follow(&message, Some(live), wait, shutdown).await;
        Ok(Asked { message, turn })
    }

    /// The message a retry's key stored, if this request is one (the same
    /// user and text; a key used for another request is a conflict).
    async fn asked_before(&self, ask: &Ask) -> Result<Option<Message>, Error> {
        let Some(key) = &ask.key else { return Ok(None) };
        let Some(id) = idempotency::find(self.store.reader(), ask.app.as_str(), key).await? else {
            return Ok(None);
        };
        let id2 = id.clone();
        let Some(message) = self
            .store
            .write_relaxed(move |tx| messages::get(tx, &id2))
            .await?
        else {
            return Ok(None);
        };
        if message.from != ask.user.as_str() || message.text != ask.text {
            return Err(Error::Conflict {
                code: "idempotency_key_reused",
                message: "this Idempotency-Key was already used for a different request".into(),
            });
        }
        Ok(Some(message))
    }

    /// The turn of `message`: the running one if there is one (from its
    /// start), else a new one.
    async fn follow(
        self: &Arc<Self>,
        message: &Message,
        live: Option<broadcast::Receiver<Arc<LiveEvent>>>,
        wait: Duration,
        shutdown: Shutdown,
    ) -> watch::Receiver<Progress> {
        let mut turns = self.turns.lock();
        if let Some(turn) = turns.get(&message.id) {
            return turn.clone();
        }
        let (tx, rx) = watch::channel(Progress::default());
        turns.insert(message.id.clone(), rx.clone());
        drop(turns);
        let (id, conversation) = (message.id.clone(), message.conversation_id.clone());
        // The conversation's own events from now on, and those the app's
        // broadcast had for it before (the message's conversation may have
        // been opened with it); an event in both is taken once.
        let events = self.hub.subscribe_conversation(&conversation);
        let mut early = Vec::new();
        if let Some(mut app) = live {
            while let Ok(e) = app.try_recv() {
                if e.conversation_id == conversation {
                    early.push(e);
                }
            }
        }
        let relay = self.clone();
        tokio::spawn(async move {
            let end = tokio::select! {
                end = relay.run_turn(&id, early, events, &tx) => end,
                () = tokio::time::sleep(wait) => End::TimedOut,
                () = shutdown.wait() => End::Stopped,
            };
            tx.send_modify(|p| p.end = Some(end));
            relay.turns.lock().remove(&id);
        });
        rx
    }

    /// Follows a turn until its answer is stored: the conversation's
    /// events (`early` first, then `live`, skipping those already seen).
    async fn run_turn(
        &self,
        id: &MessageId,
        early: Vec<Arc<LiveEvent>>,
        mut live: broadcast::Receiver<Arc<LiveEvent>>,
        progress: &watch::Sender<Progress>,
    ) -> End {
        let mut early = std::collections::VecDeque::from(early);
        let seen = early.clone();
        loop {
            // Where it stands: answered, or whether the conversation's
            // deltas are this answer's (not while an earlier message waits
            // for its own).
            let (seq, ours) = match self.look_at_turn(id).await {
                Look::Answered(answer) => return End::Answered(answer),
                Look::Waiting { seq, ours } => (seq, ours),
            };
            // Until a reply is stored in the conversation (then, unless it
            // is this one's answer, look again).
            loop {
                let event = match early.pop_front() {
                    Some(e) => e,
                    None => match live.recv().await {
                        Ok(e) if seen.iter().any(|s| Arc::ptr_eq(s, &e)) => continue,
                        Ok(e) => e,
                        // Missed events: look at the store again.
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            break;
                        }
                    },
                };
                match event.event {
                    LiveEvent::REPLY_STORED => match &event.answer {
                        Some((answers, reply)) if Some(*answers) == seq => {
                            return End::Answered(Box::new(Message::clone(reply)));
                        }
                        // Another message's answer: this one may be next.
                        Some(_) if ours => {}
                        _ => break,
                    },
                    "reply.delta" if ours => {
                        if let Some(piece) = event.payload["text"].as_str() {
                            progress.send_modify(|p| p.streamed.push_str(piece));
                        }
                    }
                    // Stopped with nothing written (else its answer, the
                    // part written, came first).
                    "reply.stopped" if event.payload["messageId"].is_null() => {
                        let named = |key: &str| {
                            event.payload[key].as_array().is_some_and(|ids| {
                                ids.iter().any(|m| m.as_str() == Some(id.as_str()))
                            })
                        };
                        if named("cancelled") || named("withdrawn") {
                            return End::Cancelled;
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The turn of message `id` as the store has it. A failed read is
    /// logged and taken as "waiting, not yet ours" (the next event looks
    /// again).
    async fn look_at_turn(&self, id: &MessageId) -> Look {
        let db = self.store.reader();
        let turn = match messages::turn_of(db, id).await {
            Ok(Some(turn)) => turn,
            Ok(None) => {
                return Look::Waiting {
                    seq: None,
                    ours: false,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, message = %id, "could not read a turn; trying again");
                return Look::Waiting {
                    seq: None,
                    ours: false,
                };
            }
        };
        if let Some(cursor) = turn.answer {
            match messages::by_seq(db, cursor).await {
                Ok(Some(answer)) => return Look::Answered(Box::new(answer)),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, message = %id, "could not read a turn's answer; trying again")
                }
            }
        }
        Look::Waiting {
            seq: Some(turn.seq),
            ours: !turn.earlier_open,
        }
    }
}

/// A turn as the store has it.
enum Look {
    Answered(Box<Message>),
    /// `seq`: the message's row number (None when unknown).
    Waiting {
        seq: Option<i64>,
        ours: bool,
    },
}
