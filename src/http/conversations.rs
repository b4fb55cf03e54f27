//! `GET /conversations` (admin), `POST /conversations` (a new conversation
//! for a user: the admin, the user's app, or the user's own session) and
//! `GET /conversations/:id` (admin, or the client or app the conversation
//! belongs to).

use super::auth::AnyAuth;
use super::extract::{cursor, limit, query_id, ApiJson, ApiPath, ApiQuery};
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{Error, ErrorResponse};
use crate::ids::{AppId, ClientId, ConversationId, UserId};
use crate::model::{Conversation, ConversationState, ConversationWithMessages};
use crate::relay::admin::{ConversationFilter, SearchMatch};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/conversations", get(list).post(open))
        .route("/conversations/{id}", get(one))
        .route("/conversations/{id}/messages", get(history))
        .route("/conversations/{id}/stop", post(stop))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(rename_all = "camelCase")]
pub(crate) struct ListQuery {
    user_id: Option<String>,
    client_id: Option<String>,
    app_id: Option<String>,
    state: Option<ConversationState>,
    /// Search: only conversations with a message holding every word (a
    /// Chinese, Japanese or Korean word anywhere in the text, two
    /// characters and more), ordered by their latest matching message,
    /// each with it (`match`).
    q: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Conversations {
    conversations: Vec<ListedConversation>,
    /// Pass as `cursor` for the next page; null on the last one.
    next_cursor: Option<String>,
    /// The stream's position when this list was read: `GET
    /// /events?after=` it gets every message stored since (the web chat
    /// opens its stream there, and reads each conversation's history by
    /// page).
    stream_cursor: String,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListedConversation {
    #[serde(flatten)]
    conversation: Conversation,
    /// The first words of its first message ("" when it has none yet, or
    /// only files).
    title: String,
    /// With `q`: its latest message that matches, and a snippet of it.
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    found: Option<SearchMatch>,
}

/// Conversations, newest first, with filters: for the admin any; for an
/// app its own users'; for a user session its own user's (the chat's list).
/// With `q`, those whose messages hold the words, by latest match.
#[utoipa::path(get, path = "/conversations", tag = "any", security(("bearer" = [])), params(ListQuery), responses(
    (status = 200, body = Conversations),
    (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    (status = 422, body = ErrorResponse), (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn list(
    State(state): State<AppState>,
    AnyAuth(who): AnyAuth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Conversations>, Error> {
    let client = query_id(
        q.client_id,
        ClientId::parse,
        "invalid_client_id",
        "a client id",
    )?;
    let app = query_id(q.app_id, AppId::parse_any, "invalid_app_id", "an app id")?;
    let (app, user) = scope(&who, app, q.user_id)?;
    // Read first: whatever is stored after it, the stream brings.
    let stream_cursor = state.relay.current_cursor().await?.to_string();
    let filter = ConversationFilter {
        app,
        user,
        client,
        state: q.state,
        before: cursor(q.cursor.as_deref())?,
        limit: limit(q.limit, 50, 500)?,
    };
    let (items, next): (Vec<(Conversation, Option<SearchMatch>)>, _) = match q.q.as_deref() {
        Some(text) => {
            let page = state.relay.search_conversations(filter, text).await?;
            let items = page.items.into_iter().map(|(c, m)| (c, Some(m))).collect();
            (items, page.next)
        }
        None => {
            let page = state.relay.list_conversations(filter).await?;
            (
                page.items.into_iter().map(|c| (c, None)).collect(),
                page.next,
            )
        }
    };
    let mut titles = state
        .relay
        .conversation_titles(items.iter().map(|(c, _)| c))
        .await?;
    Ok(Json(Conversations {
        conversations: items
            .into_iter()
            .map(|(c, found)| ListedConversation {
                title: titles.remove(&c.id).unwrap_or_default(),
                conversation: c,
                found,
            })
            .collect(),
        next_cursor: next.map(|n| n.to_string()),
        stream_cursor,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OpenBody {
    /// The user: required of an app and of the admin; a user session opens
    /// its own (naming another user is forbidden).
    user_id: Option<String>,
    /// The app: required of the admin only.
    app_id: Option<String>,
}

/// Opens a new conversation for a user, beside those still active (each
/// expires on its own when idle). Post into it with `conversationId`;
/// messages without one continue the user's most recently active
/// conversation.
#[utoipa::path(post, path = "/conversations", tag = "app", security(("bearer" = [])), request_body = OpenBody, responses(
    (status = 201, body = Conversation),
    (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    (status = 404, body = ErrorResponse), (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse),
    (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn open(
    State(state): State<AppState>,
    AnyAuth(who): AnyAuth,
    ApiJson(body): ApiJson<OpenBody>,
) -> Result<(StatusCode, Json<Conversation>), Error> {
    let app = body
        .app_id
        .map(|id| AppId::parse_any(&id).ok_or_else(|| not_yours(&id)))
        .transpose()?;
    let (app, user) = scope(&who, app, body.user_id)?;
    let app = app.ok_or_else(|| Error::invalid("invalid_app_id", "`appId` is required"))?;
    let user = user.ok_or_else(|| Error::invalid("invalid_user_id", "`userId` is required"))?;
    let user = UserId::parse(&user)
        .map_err(|why| Error::invalid("invalid_user_id", format!("`userId` {why}")))?;
    state.limits.check_user(&app, &user)?;
    let conversation = state.relay.open_conversation(app, user).await?;
    Ok((StatusCode::CREATED, Json(conversation)))
}

/// One conversation with its messages: for an admin any, for a client or an app its own.
#[utoipa::path(get, path = "/conversations/{id}", tag = "any", security(("bearer" = [])),
    params(("id" = String, Path, description = "Conversation id")), responses(
    (status = 200, body = ConversationWithMessages),
    (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse),
    (status = 503, body = ErrorResponse),
))]
pub(crate) async fn one(
    State(state): State<AppState>,
    AnyAuth(viewer): AnyAuth,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ConversationWithMessages>, Error> {
    let id = ConversationId::parse(&id).ok_or_else(|| {
        Error::not_found("conversation_not_found", format!("no conversation {id}"))
    })?;
    Ok(Json(state.relay.conversation(&viewer, &id).await?))
}

/// The app and user a request about conversations may act on, from those it
/// names: the admin any (or none); an app its own app and any of its users;
/// a user session its own app and user. Another app than the caller's is
/// unknown (404), another user of a session forbidden, an agent forbidden.
fn scope(
    who: &Principal,
    app: Option<AppId>,
    user: Option<String>,
) -> Result<(Option<AppId>, Option<String>), Error> {
    let own_app = match who {
        Principal::Admin => return Ok((app, user)),
        Principal::App(own) => own,
        Principal::User(s) => &s.app,
        Principal::Client(_) => {
            return Err(Error::Forbidden(
                "conversations are for the admin, an app or a user session",
            ))
        }
    };
    if let Some(other) = app.as_ref().filter(|a| *a != own_app) {
        return Err(not_yours(other.as_str()));
    }
    let user = match who {
        Principal::User(s) => {
            if user.as_deref().is_some_and(|u| u != s.user.as_str()) {
                return Err(Error::Forbidden(
                    "a user session acts for its own user only",
                ));
            }
            Some(s.user.as_str().to_owned())
        }
        _ => user,
    };
    Ok((Some(own_app.clone()), user))
}

/// Another app than the caller's: as unknown.
fn not_yours(app: &str) -> Error {
    Error::not_found("app_not_found", format!("no app {app}"))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub(crate) struct HistoryQuery {
    /// The `before` of the previous page (default: the latest messages).
    before: Option<String>,
    /// Most messages, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct History {
    /// Oldest first. On a user session's reads an agent's message also
    /// carries `html`, its Markdown rendered (as on its streams).
    #[schema(value_type = Vec<crate::model::Message>)]
    messages: Vec<serde_json::Value>,
    /// Pass as `before` for the page before this one; null on the first.
    before: Option<String>,
}

/// A conversation's history by page, latest first: for whoever may read the
/// conversation (as `GET /conversations/{id}`), a user session its own.
#[utoipa::path(get, path = "/conversations/{id}/messages", tag = "any", security(("bearer" = [])),
    params(("id" = String, Path, description = "Conversation id"), HistoryQuery), responses(
    (status = 200, body = History),
    (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
    (status = 422, body = ErrorResponse), (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn history(
    State(state): State<AppState>,
    AnyAuth(viewer): AnyAuth,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<History>, Error> {
    let id = ConversationId::parse(&id).ok_or_else(|| {
        Error::not_found("conversation_not_found", format!("no conversation {id}"))
    })?;
    let before = cursor(q.before.as_deref())?;
    let limit = limit(q.limit, 50, 200)?;
    let (messages, earlier) = state.relay.history(&viewer, &id, before, limit).await?;
    Ok(Json(History {
        messages: messages
            .iter()
            .map(|m| crate::ws::feed::viewed(&viewer, m).to_value())
            .collect(),
        before: earlier.map(|b| b.to_string()),
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StopAnswer {
    /// Whether anything was in progress (false: the stop did nothing).
    stopped: bool,
    /// Messages no agent had claimed yet: withdrawn, never delivered.
    #[schema(value_type = Vec<String>)]
    withdrawn: Vec<crate::ids::MessageId>,
    /// Messages an agent was working on: it is told to stop (a `cancel`
    /// event on its socket, `cancelled` in its next poll), and they are
    /// never delivered again.
    #[schema(value_type = Vec<String>)]
    cancelled: Vec<crate::ids::MessageId>,
    /// The reply as far as it was streamed, stored with `stopped: true`
    /// (null: nothing was streamed yet). A user session's carries `html`.
    #[schema(value_type = Option<crate::model::Message>)]
    message: Option<serde_json::Value>,
}

/// Stops the agent's work on a conversation: every message of it not yet
/// answered is withdrawn (not claimed yet) or cancelled (claimed), and a
/// reply being streamed is stored as far as it got, marked stopped. For an
/// admin any conversation, for an app its users', for a user session its
/// own. Stopping when nothing is in progress does nothing.
#[utoipa::path(post, path = "/conversations/{id}/stop", tag = "app", security(("bearer" = [])),
    params(("id" = String, Path, description = "Conversation id")), responses(
    (status = 200, body = StopAnswer),
    (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse),
    (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn stop(
    State(state): State<AppState>,
    AnyAuth(who): AnyAuth,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<StopAnswer>, Error> {
    let id = ConversationId::parse(&id).ok_or_else(|| {
        Error::not_found("conversation_not_found", format!("no conversation {id}"))
    })?;
    let done = state.relay.stop(&who, &id).await?;
    Ok(Json(StopAnswer {
        stopped: !done.withdrawn.is_empty() || !done.cancelled.is_empty(),
        withdrawn: done.withdrawn,
        cancelled: done.cancelled,
        message: done
            .message
            .map(|m| crate::ws::feed::viewed(&who, &m).to_value()),
    }))
}
