//! `GET /events`: an app's live stream (or a user session's: that user's
//! conversations) as Server-Sent Events, for clients that cannot hold a
//! WebSocket. The same feed as the WebSocket app role:
//! stored messages carry their cursor as the SSE `id`, so a reconnecting
//! `EventSource` resumes by itself (`Last-Event-ID`).

use super::auth::AppSideAuth;
use super::extract::{cursor, ApiQuery};
use crate::app::AppState;
use crate::error::Error;
use crate::ids::ConversationId;
use crate::ws::feed::{self, FeedItem};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;

pub fn router() -> Router<AppState> {
    Router::new().route("/events", get(events))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(rename_all = "camelCase")]
pub(crate) struct EventsQuery {
    /// Replay stored messages after this cursor first (Last-Event-ID wins).
    after: Option<String>,
    /// Only this conversation.
    conversation_id: Option<String>,
}

/// The app's live stream as Server-Sent Events (see docs/protocol.md).
#[utoipa::path(get, path = "/events", tag = "app", security(("bearer" = [])), params(EventsQuery), responses(
    (status = 200, content_type = "text/event-stream", body = String),
    (status = 400, body = crate::error::ErrorResponse),
    (status = 401, body = crate::error::ErrorResponse),
    (status = 403, body = crate::error::ErrorResponse),
    (status = 404, body = crate::error::ErrorResponse),
    (status = 429, body = crate::error::ErrorResponse),
    (status = 503, body = crate::error::ErrorResponse),
))]
pub(crate) async fn events(
    State(state): State<AppState>,
    AppSideAuth(viewer, version): AppSideAuth,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Response, Error> {
    let conversation = match q.conversation_id.as_deref() {
        Some(c) => {
            let id = ConversationId::parse(c).ok_or_else(|| {
                Error::not_found("conversation_not_found", format!("no conversation {c}"))
            })?;
            state.relay.conversation(&viewer, &id).await?;
            Some(id)
        }
        None => None,
    };
    // A reconnecting EventSource says where it stopped; that wins over `after`.
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let start = match cursor(last_event_id.or(q.after.as_deref()))? {
        Some(c) => c,
        None => state.relay.current_cursor().await?,
    };
    let viewed_by = viewer.clone();
    let watch = state.relay.watch_session(&viewer, version).await?;
    let feed = feed::spawn(
        state.relay.clone(),
        viewer,
        conversation,
        start,
        state.config.ws.outgoing_buffer,
        watch,
        state.shutdown.clone(),
    );
    let stream =
        futures_util::stream::unfold((feed, viewed_by), |(mut items, viewer)| async move {
            let event = match items.items.recv().await? {
                FeedItem::Stored { cursor, message } => Event::default()
                    .id(cursor.to_string())
                    .event("message")
                    .json_data(feed::stored_payload(&viewer, cursor, &message)),
                FeedItem::Live(live) => Event::default().event(live.event).json_data(&live.payload),
            };
            let event = event.unwrap_or_else(|_| Event::default().comment("unencodable event"));
            Some((Ok::<_, Infallible>(event), (items, viewer)))
        });
    let keep_alive =
        KeepAlive::new().interval(Duration::from_secs(state.config.sse.keepalive_secs));
    let mut response = Sse::new(stream).keep_alive(keep_alive).into_response();
    let h = response.headers_mut();
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}
