//! What only live streams see: an agent's streamed reply text, typing and
//! progress (validated, then broadcast to the conversation's app, never
//! stored), conversation expiry, and the stored part of an app's stream.

use super::Relay;
use crate::error::Error;
use crate::hub::LiveEvent;
use crate::ids::{AppId, ClientId, ConversationId, ReplyId, UserId};
use crate::model::Message;
use crate::store::conversations::{Adopted, Expired};
use crate::store::{conversations, messages};
use serde_json::{json, Value};
use std::sync::Arc;

/// Most bytes of a progress event's `data`, serialized.
const MAX_PROGRESS_BYTES: usize = 65_536;

fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

impl Relay {
    pub(super) fn publish_expired(&self, e: Expired) {
        let payload = json!({ "conversationId": e.id, "userId": e.user_id });
        self.publish(
            &e.app_id,
            LiveEvent {
                event: "conversation.expired",
                conversation_id: e.id,
                user_id: e.user_id.to_string(),
                payload,
                after: 0,
                answer: None,
            },
        );
    }

    /// A conversation that waited with no agent connected has one now (its
    /// waiting messages are on their way to it).
    pub(super) fn publish_assigned(&self, a: Adopted) {
        let payload = json!({ "conversationId": a.id, "userId": a.user_id });
        self.publish(
            &a.app_id,
            LiveEvent {
                event: "conversation.assigned",
                conversation_id: a.id,
                user_id: a.user_id,
                payload,
                after: 0,
                answer: None,
            },
        );
    }

    /// The app and user of a conversation `client` holds; anything else is
    /// "not found", as for `/send`.
    pub(super) async fn held_by(
        &self,
        client: &ClientId,
        conversation: &ConversationId,
    ) -> Result<(AppId, String), Error> {
        conversations::owners_of(self.store.reader(), conversation)
            .await?
            .filter(|o| o.client_id.as_ref() == Some(client))
            .map(|o| (o.app_id, o.user_id.as_str().to_owned()))
            .ok_or_else(|| {
                Error::not_found(
                    "conversation_not_found",
                    format!("no conversation {conversation} assigned to this client"),
                )
            })
    }

    async fn publish_for(
        &self,
        client: &ClientId,
        conversation: ConversationId,
        event: &'static str,
        fields: Value,
    ) -> Result<(), Error> {
        let (app, user) = self.held_by(client, &conversation).await?;
        let mut payload = json!({ "conversationId": conversation, "userId": &user });
        if let (Some(p), Value::Object(extra)) = (payload.as_object_mut(), fields) {
            p.extend(extra);
        }
        self.publish(
            &app,
            LiveEvent {
                event,
                conversation_id: conversation.clone(),
                user_id: user,
                payload,
                after: 0,
                answer: None,
            },
        );
        // The agent is at work on the conversation: its claims there last.
        self.renew_for_activity(client, &conversation).await;
        Ok(())
    }

    /// Tells the relay's waiters on the reply's conversation (see
    /// `completions`) that a reply answering message `answers` (its row
    /// number, when known) was stored there.
    pub(super) fn publish_reply_stored(&self, m: &Message, answers: Option<i64>) {
        // Nobody waits here, and no other relay to tell: nothing to do (the
        // common case, kept cheap).
        let here = self.hub.listens_to(&m.conversation_id);
        if !here && self.cluster.is_none() {
            return;
        }
        self.publish(
            &m.app_id,
            LiveEvent {
                event: LiveEvent::REPLY_STORED,
                conversation_id: m.conversation_id.clone(),
                user_id: m.to.clone(),
                payload: json!({}),
                after: 0,
                answer: answers
                    .filter(|_| here)
                    .map(|seq| (seq, Arc::new(m.clone()))),
            },
        );
    }

    /// A piece of a reply being written; the `send` with the same `replyId`
    /// stores the whole reply.
    pub async fn reply_delta(
        &self,
        client: &ClientId,
        conversation: ConversationId,
        reply_id: ReplyId,
        text: String,
    ) -> Result<(), Error> {
        if text.len() > self.rules.max_text_bytes {
            return Err(Error::TooLarge {
                code: "text_too_large",
                message: format!("`text` is over {} bytes", self.rules.max_text_bytes),
            });
        }
        if self
            .hub
            .turns
            .refuses(&conversation, Some(reply_id.as_str()))
        {
            return Err(super::messages::reply_stopped(&conversation));
        }
        let fields = json!({ "replyId": reply_id, "text": text });
        self.publish_for(client, conversation, "reply.delta", fields)
            .await
    }

    pub async fn typing(
        &self,
        client: &ClientId,
        conversation: ConversationId,
    ) -> Result<(), Error> {
        self.publish_for(client, conversation, "typing", json!({}))
            .await
    }

    /// Tool and reasoning progress (`tool_start`, `tool_result`,
    /// `reasoning_stream`, ...): `kind` is lowercase letters, digits, `_`, `.`.
    pub async fn progress(
        &self,
        client: &ClientId,
        conversation: ConversationId,
        kind: String,
        data: Value,
    ) -> Result<(), Error> {
        if !valid_kind(&kind) {
            return Err(Error::invalid(
                "invalid_kind",
                "`kind` must be 1 to 64 of a-z, 0-9, `_`, `.`",
            ));
        }
        if data.to_string().len() > MAX_PROGRESS_BYTES {
            return Err(Error::TooLarge {
                code: "data_too_large",
                message: format!("`data` is over {MAX_PROGRESS_BYTES} bytes"),
            });
        }
        self.publish_for(
            client,
            conversation,
            "progress",
            json!({ "kind": kind, "data": data }),
        )
        .await
    }

    /// Stored messages (both directions) of an app's stream after `after`;
    /// with `user`, of that user's conversations only.
    pub async fn stream_page(
        &self,
        app: &AppId,
        user: Option<&UserId>,
        conversation: Option<&ConversationId>,
        after: i64,
        limit: i64,
    ) -> Result<messages::Page, Error> {
        let reader = self.store.reader();
        Ok(match user {
            // What was just committed, when that reaches back to `after`
            // (SQLite: see `store::recent`); else the database.
            None => match self
                .store
                .recent()
                .and_then(|r| r.after(app, conversation, false, after, limit))
            {
                Some(page) => page,
                None => messages::stream(reader, app, conversation, after, limit).await?,
            },
            Some(user) => {
                messages::of_user(reader, app, user, conversation, after, limit, false).await?
            }
        })
    }

    /// The cursor of "now": a stream started without one begins here.
    pub async fn current_cursor(&self) -> Result<i64, Error> {
        Ok(messages::last_seq(self.store.reader()).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::valid_kind;

    #[test]
    fn progress_kinds_are_simple_names() {
        assert!(valid_kind("tool_start"));
        assert!(valid_kind("reasoning.stream2"));
        assert!(!valid_kind(""));
        assert!(!valid_kind("Tool"));
        assert!(!valid_kind("a b"));
    }
}
