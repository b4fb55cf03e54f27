//! The app endpoints: `POST /inbound` and `GET /outbox`, for an app or a
//! user session (held to its user).

use super::auth::AppSideAuth;
use super::extract::{cursor, idempotency_key, limit, ApiJson, ApiQuery};
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::Error;
use crate::ids::{AppId, ConversationId, IdempotencyKey, UserId};
use crate::model::Message;
use crate::relay::attachments::party_of;
use crate::relay::messages::{Post, Target};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/inbound", post(inbound))
        .route("/outbox", get(outbox))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct InboundBody {
    /// The app's name for its user. With a user session: optional, and
    /// only that session's user.
    #[serde(default)]
    from: Option<String>,
    /// May be empty when the message carries attachments.
    #[serde(default)]
    text: String,
    /// Ids of uploads (`POST /attachments`) the message carries, in order.
    #[serde(default)]
    attachments: Vec<String>,
    /// The conversation of that user's it continues (active; see `POST
    /// /conversations`). Without it: the user's most recently active
    /// conversation, or a new one.
    #[serde(default, rename = "conversationId")]
    conversation_id: Option<String>,
}

/// Stores a user's message and queues its delivery; answers the stored message.
#[utoipa::path(post, path = "/inbound", tag = "app", security(("bearer" = [])), request_body = InboundBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the first result")),
    responses(
    (status = 200, body = Message),
    (status = 400, body = crate::error::ErrorResponse),
    (status = 401, body = crate::error::ErrorResponse),
    (status = 403, body = crate::error::ErrorResponse),
    (status = 404, body = crate::error::ErrorResponse),
    (status = 409, body = crate::error::ErrorResponse),
    (status = 413, body = crate::error::ErrorResponse),
    (status = 422, body = crate::error::ErrorResponse),
    (status = 429, body = crate::error::ErrorResponse),
    (status = 503, body = crate::error::ErrorResponse),
))]
pub(crate) async fn inbound(
    State(state): State<AppState>,
    AppSideAuth(sender, _): AppSideAuth,
    headers: HeaderMap,
    ApiJson(body): ApiJson<InboundBody>,
) -> Result<Json<Message>, Error> {
    let key = idempotency_key(&headers)?;
    let post = post_of(
        &state,
        &sender,
        body.from.as_deref(),
        body.conversation_id.as_deref(),
        body.text,
        &body.attachments,
        key,
    )?;
    let message = state.relay.inbound(post).await?;
    Ok(Json(message))
}

/// A user's message as `/inbound` and the WebSocket `inbound` take it:
/// checks who posts for whom, the per-user rate and the attachment list.
pub(crate) fn post_of(
    state: &AppState,
    sender: &Principal,
    from: Option<&str>,
    conversation: Option<&str>,
    text: String,
    attachments: &[String],
    key: Option<IdempotencyKey>,
) -> Result<Post, Error> {
    let (app, from) = sender_of(sender, from)?;
    let conversation = conversation
        .map(|c| {
            ConversationId::parse(c).ok_or_else(|| {
                Error::not_found("conversation_not_found", format!("no conversation {c}"))
            })
        })
        .transpose()?;
    state.limits.check_user(&app, &from)?;
    Ok(Post {
        app,
        from,
        target: conversation.map_or(Target::Latest, Target::Named),
        text,
        attachments: state.relay.attachment_ids(attachments)?,
        key,
        poster: party_of(sender).unwrap_or_default(),
    })
}

/// The app and user a message is posted for: an app names its user in
/// `from`; a user session is its user (a `from` naming anyone else is refused).
fn sender_of(sender: &Principal, from: Option<&str>) -> Result<(AppId, UserId), Error> {
    match sender {
        Principal::User(s) => match from {
            Some(f) if f != s.user.as_str() => Err(Error::Forbidden(
                "a user session posts as its own user only",
            )),
            _ => Ok((s.app.clone(), s.user.clone())),
        },
        Principal::App(app) => {
            let from = from.ok_or_else(|| Error::invalid("invalid_from", "`from` is required"))?;
            let from = UserId::parse(from)
                .map_err(|why| Error::invalid("invalid_from", format!("`from` {why}")))?;
            Ok((app.clone(), from))
        }
        _ => Err(Error::Forbidden(
            "this endpoint needs an app token or a user session",
        )),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
pub(crate) struct OutboxQuery {
    /// The cursor of the last message read (default 0: from the start).
    after: Option<String>,
    /// Seconds to wait for a reply (capped by long_poll_max_secs).
    wait: Option<u64>,
    /// Most messages, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Outbox {
    #[schema(value_type = Vec<Message>)]
    messages: Vec<std::sync::Arc<crate::model::SharedMessage>>,
    /// Pass as `after` to continue.
    cursor: String,
}

/// The replies to this app's users, in order, resumable from a cursor.
#[utoipa::path(get, path = "/outbox", tag = "app", security(("bearer" = [])), params(OutboxQuery), responses(
    (status = 200, body = Outbox),
    (status = 400, body = crate::error::ErrorResponse),
    (status = 401, body = crate::error::ErrorResponse),
    (status = 403, body = crate::error::ErrorResponse),
    (status = 422, body = crate::error::ErrorResponse),
    (status = 429, body = crate::error::ErrorResponse),
    (status = 503, body = crate::error::ErrorResponse),
))]
pub(crate) async fn outbox(
    State(state): State<AppState>,
    AppSideAuth(viewer, _): AppSideAuth,
    ApiQuery(q): ApiQuery<OutboxQuery>,
) -> Result<Json<Outbox>, Error> {
    let Some(app) = viewer.app().cloned() else {
        return Err(Error::Forbidden(
            "this endpoint needs an app token or a user session",
        ));
    };
    let after = cursor(q.after.as_deref())?.unwrap_or(0);
    let limit = limit(q.limit, 100, 1000)?;
    let wait = q.wait.filter(|s| *s > 0).map(Duration::from_secs);
    let page = state
        .relay
        .outbox(
            app,
            viewer.user(),
            after,
            limit,
            wait,
            state.shutdown.clone().wait(),
        )
        .await?;
    Ok(Json(Outbox {
        messages: page.messages,
        cursor: page.cursor.to_string(),
    }))
}
