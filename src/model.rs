//! The relay's records as the API shows them: camelCase JSON, timestamps in
//! Unix milliseconds, field names compatible with the seed relay's API.

use crate::ids::{AppId, AttachmentId, ClientId, ConversationId, EventId, MessageId, WebhookId};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From an app user to the agent side.
    Inbound,
    /// From an agent to an app user.
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }

    pub fn from_db(s: &str) -> Direction {
        if s == "outbound" {
            Direction::Outbound
        } else {
            Direction::Inbound
        }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    /// The client the conversation was assigned to when the message was stored.
    pub client_id: Option<ClientId>,
    pub app_id: AppId,
    pub direction: Direction,
    pub from: String,
    pub to: String,
    pub text: String,
    pub timestamp: i64,
    /// In `/poll` answers: which delivery attempt this is (1 the first time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i64>,
    /// In `/poll` answers: when this claim ends (Unix ms) unless the agent
    /// answers, acks or renews it (`POST /renew`, or its activity on the
    /// conversation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<i64>,
    /// For a reply streamed as `reply.delta` events: the id the deltas used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_id: Option<String>,
    /// The files and images the message carries, in order (absent: none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// A reply the user stopped (`POST /conversations/{id}/stop`) while the
    /// agent wrote it: the text is what was streamed until then (absent:
    /// false).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
}

/// A stored message as the readers of the relay's window of recent messages
/// share it (see `store::recent`): one copy however many app streams and
/// outbox reads carry it, and its JSON written once, by the first of them,
/// then copied into every frame and response as it is.
#[derive(Debug)]
pub struct SharedMessage {
    message: Message,
    json: std::sync::OnceLock<Option<Box<serde_json::value::RawValue>>>,
}

impl SharedMessage {
    pub fn new(message: Message) -> std::sync::Arc<SharedMessage> {
        std::sync::Arc::new(SharedMessage {
            message,
            json: std::sync::OnceLock::new(),
        })
    }

    /// The message's JSON (as [`Message`] serializes), written on first use.
    pub fn json(&self) -> Option<&serde_json::value::RawValue> {
        self.json
            .get_or_init(|| serde_json::value::to_raw_value(&self.message).ok())
            .as_deref()
    }
}

impl std::ops::Deref for SharedMessage {
    type Target = Message;

    fn deref(&self) -> &Message {
        &self.message
    }
}

impl Serialize for SharedMessage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.json() {
            Some(json) => json.serialize(s),
            None => self.message.serialize(s),
        }
    }
}

/// An uploaded file as messages and `POST /attachments` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub id: AttachmentId,
    /// The file name given at upload (path parts and control characters removed).
    pub name: String,
    /// The type sniffed from the bytes (never the uploader's claim).
    pub mime: String,
    pub size: i64,
    /// Lowercase hex SHA-256 of the bytes (also the download's ETag).
    pub sha256: String,
    /// Where to download it (`GET`, with the same credentials), relative to the relay.
    pub url: String,
}

impl Attachment {
    pub fn url_of(id: &AttachmentId) -> String {
        format!("/attachments/{id}")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConversationState {
    Active,
    Expired,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    pub id: ConversationId,
    pub app_id: AppId,
    pub user_id: String,
    pub client_id: Option<ClientId>,
    pub state: ConversationState,
    pub created_at: i64,
    pub updated_at: i64,
    pub expired_at: Option<i64>,
    pub message_count: i64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationWithMessages {
    #[serde(flatten)]
    pub conversation: Conversation,
    pub messages: Vec<Message>,
}

/// A client's liveness, from its last poll (seed §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClientState {
    /// Created, never polled.
    Registered,
    /// Polled within `stale_after_secs`, or waiting in a long poll now.
    Connected,
    /// Silent longer than `stale_after_secs`.
    Stale,
    /// Silent longer than `disconnected_after_secs`: its conversations move away.
    Disconnected,
    Revoked,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientInfo {
    pub client_id: ClientId,
    pub name: String,
    pub state: ClientState,
    /// Deliveries assigned to this client and not yet acked or dead.
    pub pending: i64,
    pub last_seen_at: Option<i64>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppInfo {
    pub app_id: AppId,
    pub name: String,
    /// The built-in app of the unauthenticated public `/inbound`.
    pub public: bool,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// A newly issued credential: the only time a token is shown.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedClient {
    pub client_id: ClientId,
    pub token: String,
    pub name: String,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedApp {
    pub app_id: AppId,
    pub token: String,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Due for delivery now.
    Pending,
    /// Handed to the client, waiting for its ack until the lease ends.
    Leased,
    /// Waiting behind an earlier message of the same conversation.
    Queued,
    Acked,
    /// Not acked after `max_attempts` leases; kept for admins to requeue.
    Dead,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    pub client_id: Option<ClientId>,
    pub state: DeliveryState,
    pub attempts: i64,
    /// When a pending or leased delivery is (again) due.
    pub visible_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub message: Message,
}

/// An app's webhook endpoint as the admin API shows it (never its secret).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookInfo {
    pub webhook_id: WebhookId,
    pub app_id: AppId,
    pub url: String,
    /// The event types it receives: `message`, `conversation.expired`,
    /// `delivery.dead`.
    pub events: Vec<String>,
    pub enabled: bool,
    /// Failed attempts in a row (0 once one succeeds).
    pub failures: i64,
    /// When the current run of failures began; null when healthy.
    pub failing_since: Option<i64>,
    /// Why the relay disabled it (after `[webhooks] disable_after_failures`).
    pub disabled_reason: Option<String>,
    /// Events waiting for delivery to it.
    pub backlog: i64,
    /// Until when the previous secret also signs (after a rotation).
    pub old_secret_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A new endpoint or a rotated secret: the only time the secret is shown.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedWebhook {
    #[serde(flatten)]
    pub webhook: WebhookInfo,
    /// `whsec_` and the base64 of 32 random bytes (Standard Webhooks).
    pub secret: String,
}

/// One attempt to deliver an event to an endpoint.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAttempt {
    pub event_id: EventId,
    #[schema(example = "message")]
    pub event_type: String,
    pub at: i64,
    /// The HTTP status; null when there was no answer.
    pub status: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
    /// The first bytes (at most 256) of the receiver's answer.
    pub response: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_message_serializes_as_the_message_and_writes_its_json_once() {
        let message = Message {
            id: MessageId::generate(),
            conversation_id: ConversationId::generate(),
            client_id: None,
            app_id: AppId::generate(),
            direction: Direction::Outbound,
            from: "agent".into(),
            to: "user \"1\"\n".into(),
            text: "**bold** <b>é</b> 😀".into(),
            timestamp: 1_700_000_000_000,
            attempt: None,
            lease_until: None,
            reply_id: Some("r1".into()),
            attachments: Vec::new(),
            stopped: true,
        };
        let shared = SharedMessage::new(message.clone());
        let expected = serde_json::to_string(&message).unwrap();
        assert_eq!(serde_json::to_string(&*shared).unwrap(), expected);
        // Inside a larger document too, and from the same bytes each time.
        let first = shared.json().unwrap() as *const _;
        let page = serde_json::to_string(&[&*shared, &*shared]).unwrap();
        assert_eq!(page, format!("[{expected},{expected}]"));
        assert_eq!(first, shared.json().unwrap() as *const _);
    }
}
