//! The app endpoints: `POST /inbound` and `GET /outbox`.

use super::extract::{cursor, idempotency_key, limit, ApiJson, ApiQuery};
use crate::app::AppState;
use crate::auth::AppAuth;
use crate::error::Error;
use crate::ids::UserId;
use crate::model::Message;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/inbound", post(inbound))
        .route("/outbox", get(outbox))
}

#[derive(Deserialize)]
struct InboundBody {
    from: String,
    text: String,
}

async fn inbound(
    State(state): State<AppState>,
    AppAuth(app): AppAuth,
    headers: HeaderMap,
    ApiJson(body): ApiJson<InboundBody>,
) -> Result<Json<Message>, Error> {
    let key = idempotency_key(&headers)?;
    let from = UserId::parse(&body.from)
        .map_err(|why| Error::invalid("invalid_from", format!("`from` {why}")))?;
    state.limits.check_user(&app, &from)?;
    let message = state.relay.inbound(app, from, body.text, key).await?;
    Ok(Json(message))
}

#[derive(Deserialize)]
struct OutboxQuery {
    after: Option<String>,
    wait: Option<u64>,
    limit: Option<i64>,
}

async fn outbox(
    State(state): State<AppState>,
    AppAuth(app): AppAuth,
    ApiQuery(q): ApiQuery<OutboxQuery>,
) -> Result<Json<Value>, Error> {
    let after = cursor(q.after.as_deref())?.unwrap_or(0);
    let limit = limit(q.limit, 100, 1000)?;
    let wait = q.wait.filter(|s| *s > 0).map(Duration::from_secs);
    let page = state
        .relay
        .outbox(app, after, limit, wait, state.shutdown.clone().wait())
        .await?;
    Ok(Json(
        json!({ "messages": page.messages, "cursor": page.cursor.to_string() }),
    ))
}
