//! Stop: the user (or the app, or the admin) ends the agent's work on a
//! conversation while it answers.
//!
//! In one transaction every open delivery of the conversation ends (acked,
//! with `stopped_at`, so none comes again): those no agent claimed yet are
//! withdrawn, those claimed are cancelled. A reply being streamed for them
//! is stored as far as it was written, marked `stopped` (it answers the
//! latest cancelled message, as a `send` would). Then the app's streams get
//! `reply.stopped`, and the agent holding the cancelled deliveries a cancel
//! notice (see [`crate::turns`]), on whichever relay it is connected to.

use super::webhooks;
use super::Relay;
use crate::auth::Principal;
use crate::error::Error;
use crate::hub::LiveEvent;
use crate::ids::{ClientId, ConversationId, MessageId};
use crate::model::{Direction, Message};
use crate::store::messages::NewMessage;
use crate::store::{conversations, deliveries, messages, now_ms};
use crate::turns::Cancel;
use serde_json::json;
use std::sync::Arc;

/// What a stop did.
pub struct Stopped {
    /// Messages no agent had claimed yet: never delivered now.
    pub withdrawn: Vec<MessageId>,
    /// Messages an agent was working on: told to stop, never redelivered.
    pub cancelled: Vec<MessageId>,
    /// The reply as far as it was streamed, stored and marked stopped.
    pub message: Option<Message>,
}

impl Relay {
    /// `POST /conversations/{id}/stop`: for whoever may read the
    /// conversation but its agent (a user session its own conversations).
    /// Stopping a conversation with nothing in progress does nothing.
    pub async fn stop(&self, who: &Principal, id: &ConversationId) -> Result<Stopped, Error> {
        if matches!(who, Principal::Client(_)) {
            return Err(Error::Forbidden(
                "an agent does not stop its own turns: send, ack or drop them",
            ));
        }
        let conversation = self.visible_conversation(who, id).await?;
        // From here the reply's late pieces are dropped: what is stored is
        // what the streams showed.
        let taken = self.hub.turns.stop(id, now_ms());
        let rules = self.rules;
        let (app, user, conv) = (
            conversation.app_id.clone(),
            conversation.user_id.clone(),
            id.clone(),
        );
        let reply_id = taken.reply_id.clone();
        let text = taken.text;
        let written = self
            .store
            .write(move |tx| {
                let now = now_ms();
                let ended = deliveries::stop_conversation(tx, &conv, now)?;
                // The agent at work, and the latest message it worked on.
                let working = ended
                    .iter()
                    .filter(|s| s.claimed)
                    .filter_map(|s| Some((s.seq, s.client_id.clone()?)))
                    .max_by_key(|(seq, _)| *seq);
                let mut stored = None;
                if let (Some((answers, client)), false) = (working, text.trim().is_empty()) {
                    conversations::expire_or_touch(
                        tx,
                        &conv,
                        rules.idle_cutoff(now),
                        rules.ttl_ms,
                        now,
                    )?;
                    let m = messages::insert(
                        tx,
                        NewMessage {
                            conversation_id: &conv,
                            app_id: &app,
                            client_id: Some(&client),
                            direction: Direction::Outbound,
                            from: client.as_str(),
                            to: &user,
                            text: &text,
                            reply_id: reply_id.as_deref(),
                            in_reply_to: Some(answers),
                            attachments: &[],
                            stopped: true,
                            now,
                        },
                    )?;
                    let hooked = webhooks::record_reply(tx, &m.message, now)?;
                    stored = Some((m, answers, hooked));
                }
                Ok::<_, Error>((ended, stored))
            })
            .await;
        let (ended, stored) = match written {
            Ok(w) => w,
            Err(e) => {
                // Nothing was stopped: the reply may go on.
                self.hub.turns.claimed([id]);
                return Err(e);
            }
        };
        let mut out = Stopped {
            withdrawn: Vec::new(),
            cancelled: Vec::new(),
            message: None,
        };
        let mut agents: Vec<ClientId> = Vec::new();
        for s in ended {
            if s.claimed {
                out.cancelled.push(s.message_id);
                if let Some(c) = s.client_id.filter(|c| !agents.contains(c)) {
                    agents.push(c);
                }
            } else {
                out.withdrawn.push(s.message_id);
            }
        }
        if let Some((m, answers, hooked)) = stored {
            self.announce(&m.message.app_id, m.cursor);
            self.feed_webhooks(Vec::from_iter(hooked));
            crate::metrics::message_stored("outbound");
            self.publish_reply_stored(&m.message, Some(answers));
            out.message = Some(m.message);
        }
        if !out.cancelled.is_empty() {
            let cancel = Arc::new(Cancel {
                conversation_id: id.clone(),
                message_ids: out.cancelled.clone(),
                reply_id: taken.reply_id.clone(),
            });
            for client in &agents {
                self.tell_cancel(client, cancel.clone());
            }
        }
        if !out.cancelled.is_empty() || !out.withdrawn.is_empty() {
            self.publish(
                &conversation.app_id,
                LiveEvent {
                    event: "reply.stopped",
                    conversation_id: id.clone(),
                    user_id: conversation.user_id.clone(),
                    payload: json!({
                        "conversationId": id,
                        "userId": conversation.user_id,
                        "replyId": taken.reply_id,
                        "withdrawn": out.withdrawn,
                        "cancelled": out.cancelled,
                        "messageId": out.message.as_ref().map(|m| &m.id),
                    }),
                    after: 0,
                    answer: None,
                },
            );
        } else {
            // Nothing was in progress: nothing to refuse either.
            self.hub.turns.claimed([id]);
        }
        Ok(out)
    }

    /// Tells `client` (its sockets and its next poll, on every relay) that
    /// its turn ended.
    pub(crate) fn tell_cancel(&self, client: &ClientId, cancel: Arc<Cancel>) {
        self.hub.turns.notify(client, cancel.clone(), now_ms());
        self.hub.wake_client(client);
        if let Some(cluster) = &self.cluster {
            cluster.cancel(client, &cancel);
        }
    }

    /// A cancel notice another relay sent: the stop holds here too, and the
    /// client's sockets and polls here hear of it.
    pub(crate) fn heard_cancel(&self, client: &ClientId, cancel: Cancel) {
        let now = now_ms();
        self.hub.turns.stopped_elsewhere(&cancel, now);
        self.hub.turns.notify(client, Arc::new(cancel), now);
        self.hub.wake_client(client);
    }
}
