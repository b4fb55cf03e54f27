//! Typed identifiers. Every id the server issues is a prefixed UUIDv7
//! (`cli_…`, `app_…`, `conv_…`, `msg_…`), so an id says what it names and a
//! client id can never be passed where a conversation id is expected.
//!
//! `parse` is the only way to make an id from outside input; `from_db` trusts
//! values the store wrote itself.

use serde::Serialize;
use std::fmt;
use uuid::Uuid;

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new, time-ordered id.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, Uuid::now_v7().simple()))
            }

            /// Accepts exactly what `generate` makes: the prefix and 32 lowercase hex digits.
            pub fn parse(s: &str) -> Option<Self> {
                let rest = s.strip_prefix($prefix)?;
                let hex = rest.len() == 32
                    && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                hex.then(|| Self(s.to_owned()))
            }

            /// An id read back from the database, which only ever holds valid ids.
            pub fn from_db(s: String) -> Self {
                Self(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// An agent instance (an OpenClaw gateway) holding a client token.
    ClientId,
    "cli_"
);
prefixed_id!(
    /// A user-facing application holding an app token.
    AppId,
    "app_"
);
prefixed_id!(
    /// One conversation between an app user and the agent side.
    ConversationId,
    "conv_"
);
prefixed_id!(
    /// One stored message, in either direction.
    MessageId,
    "msg_"
);
prefixed_id!(
    /// An app's webhook endpoint.
    WebhookId,
    "wh_"
);
prefixed_id!(
    /// A user session: one user of one app, for a while (web chat).
    SessionId,
    "ses_"
);
prefixed_id!(
    /// An admin console login (`/admin`): the admin, for a while.
    ConsoleSessionId,
    "cns_"
);
prefixed_id!(
    /// A built-in account that logs in to the web chat.
    AccountId,
    "acc_"
);
prefixed_id!(
    /// An uploaded file or image, carried by messages.
    AttachmentId,
    "att_"
);
prefixed_id!(
    /// One webhook event (the `webhook-id` header): kept by every redelivery.
    EventId,
    "evt_"
);

prefixed_id!(
    /// A relay of a PostgreSQL cluster: it names itself at start, and in its
    /// notices and its WebSocket sessions' ids.
    RelayId,
    "rly_"
);

impl AppId {
    /// The built-in app behind the unauthenticated `/inbound` of `[inbound] public = true`.
    pub const PUBLIC: &'static str = "app_public";

    pub fn public() -> Self {
        Self(Self::PUBLIC.to_owned())
    }

    pub fn is_public(&self) -> bool {
        self.0 == Self::PUBLIC
    }

    /// Like `parse`, and also accepts the public app's fixed id.
    pub fn parse_any(s: &str) -> Option<Self> {
        if s == Self::PUBLIC {
            Some(Self::public())
        } else {
            Self::parse(s)
        }
    }
}

/// An app's own name for one of its users (the `from` of `/inbound`). Scoped
/// per app: "alice" of one app is not "alice" of another.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub const MAX_BYTES: usize = 256;

    /// Non-empty, at most 256 bytes, no control characters, not only spaces.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.trim().is_empty() {
            return Err("must not be empty");
        }
        if s.len() > Self::MAX_BYTES {
            return Err("must be at most 256 bytes");
        }
        if s.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(Self(s.to_owned()))
    }

    pub fn from_db(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An agent's id for a reply it streams (`reply.delta`) before sending it:
/// 1 to 128 visible ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ReplyId(String);

impl ReplyId {
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The value of an `Idempotency-Key` header: 1 to 255 visible ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Ids and other validated strings bind to SQL as TEXT, so queries take the
/// typed value and never a bare string.
macro_rules! sql_text {
    ($name:ident) => {
        impl sqlx::Type<sqlx::Sqlite> for $name {
            fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
                <str as sqlx::Type<sqlx::Sqlite>>::type_info()
            }
            fn compatible(ty: &sqlx::sqlite::SqliteTypeInfo) -> bool {
                <str as sqlx::Type<sqlx::Sqlite>>::compatible(ty)
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Sqlite> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut Vec<sqlx::sqlite::SqliteArgumentValue<'q>>,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <String as sqlx::Encode<'q, sqlx::Sqlite>>::encode_by_ref(&self.0, buf)
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, sqlx::Postgres>>::encode(self.0.as_str(), buf)
            }
        }

        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::from(self.0.as_str()))
            }
        }
    };
}

/// In the OpenAPI document every id is a string.
macro_rules! schema_string {
    ($name:ident, $example:literal) => {
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .examples([serde_json::json!($example)])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

schema_string!(ClientId, "cli_0193f0c2a1b27c4d9e8f7a6b5c4d3e2f");
schema_string!(AppId, "app_0193f0c2a1b27c4d9e8f7a6b5c4d3e2f");
schema_string!(ConversationId, "conv_0193f0c2a1b27c4d9e8f7a6b5c4d3e2f");
schema_string!(MessageId, "msg_0193f0c2a1b27c4d9e8f7a6b5c4d3e2f");
schema_string!(WebhookId, "wh_0193f0c2a1b27c4d9e8f7a6b5c4d3e2f");
schema_string!(EventId, "evt_0193f0c2a1b27c4d9e8f7a6b5c4d3e2f");
schema_string!(UserId, "alice");
schema_string!(SessionId, "ses_0193f0c2a1b27c4d9e8f7a6b5c4d3e2f");
schema_string!(AccountId, "acc_0193f0c2a1b27c4d9e8f7a6b5c4d3e2f");
schema_string!(AttachmentId, "att_0193f0c2a1b27c4d9e8f7a6b5c4d3e2f");

sql_text!(ClientId);
sql_text!(AppId);
sql_text!(ConversationId);
sql_text!(MessageId);
sql_text!(WebhookId);
sql_text!(EventId);
sql_text!(SessionId);
sql_text!(ConsoleSessionId);
sql_text!(AccountId);
sql_text!(AttachmentId);
sql_text!(UserId);
sql_text!(IdempotencyKey);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        let id = ClientId::generate();
        assert_eq!(ClientId::parse(id.as_str()), Some(id.clone()));
        assert!(id.as_str().starts_with("cli_"));
    }

    #[test]
    fn ids_of_another_kind_or_shape_are_rejected() {
        let conv = ConversationId::generate();
        assert_eq!(ClientId::parse(conv.as_str()), None);
        assert_eq!(ClientId::parse("cli_"), None);
        assert_eq!(
            ClientId::parse("cli_0123456789ABCDEF0123456789abcdef"),
            None
        );
        assert_eq!(ClientId::parse("cli_0123456789abcdef0123456789abcde"), None);
    }

    #[test]
    fn public_app_id_is_accepted_only_by_parse_any() {
        assert_eq!(AppId::parse(AppId::PUBLIC), None);
        assert!(AppId::parse_any(AppId::PUBLIC).is_some_and(|a| a.is_public()));
    }

    #[test]
    fn user_ids_must_be_printable_and_bounded() {
        assert!(UserId::parse("alice").is_ok());
        assert!(UserId::parse("用户 42").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("   ").is_err());
        assert!(UserId::parse("a\nb").is_err());
        assert!(UserId::parse(&"x".repeat(257)).is_err());
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        assert!(IdempotencyKey::parse("retry-1").is_some());
        assert!(IdempotencyKey::parse("").is_none());
        assert!(IdempotencyKey::parse("has space").is_none());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_none());
    }
}
