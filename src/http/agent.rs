//! The client (agent instance) endpoints: `GET /poll`, `POST /send`, `POST /ack`.

use super::extract::{idempotency_key, ApiJson, ApiQuery};
use crate::app::AppState;
use crate::auth::ClientAuth;
use crate::error::Error;
use crate::ids::{ConversationId, MessageId};
use crate::model::Message;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/poll", get(poll))
        .route("/send", post(send))
        .route("/ack", post(ack))
}

/// Most deliveries one poll may claim.
const MAX_CLAIM: i64 = 100;
/// Most ids one ack may name.
const MAX_ACK: usize = 1000;

#[derive(Deserialize)]
struct PollQuery {
    max: Option<i64>,
    wait: Option<u64>,
}

#[derive(Serialize)]
struct Messages {
    messages: Vec<Message>,
}

async fn poll(
    State(state): State<AppState>,
    ClientAuth(client): ClientAuth,
    ApiQuery(q): ApiQuery<PollQuery>,
) -> Result<Json<Messages>, Error> {
    let max = q.max.unwrap_or(10);
    if !(1..=MAX_CLAIM).contains(&max) {
        return Err(Error::invalid(
            "invalid_max",
            format!("`max` must be 1 to {MAX_CLAIM}"),
        ));
    }
    let wait = q.wait.filter(|s| *s > 0).map(Duration::from_secs);
    let messages = state
        .relay
        .poll(client, max, wait, state.shutdown.clone().wait())
        .await?;
    Ok(Json(Messages { messages }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendBody {
    to: String,
    text: String,
    conversation_id: String,
}

async fn send(
    State(state): State<AppState>,
    ClientAuth(client): ClientAuth,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendBody>,
) -> Result<Json<Value>, Error> {
    let key = idempotency_key(&headers)?;
    let conversation = ConversationId::parse(&body.conversation_id).ok_or_else(|| {
        Error::not_found(
            "conversation_not_found",
            format!("no conversation {}", body.conversation_id),
        )
    })?;
    let message = state
        .relay
        .send(client, conversation, body.to, body.text, None, key)
        .await?;
    Ok(Json(json!({ "ok": true, "message": message })))
}

#[derive(Deserialize)]
struct AckBody {
    ids: Vec<String>,
}

async fn ack(
    State(state): State<AppState>,
    ClientAuth(client): ClientAuth,
    ApiJson(body): ApiJson<AckBody>,
) -> Result<Json<Value>, Error> {
    if body.ids.is_empty() || body.ids.len() > MAX_ACK {
        return Err(Error::invalid(
            "invalid_ids",
            format!("`ids` must name 1 to {MAX_ACK} messages"),
        ));
    }
    let mut ids = Vec::with_capacity(body.ids.len());
    for id in &body.ids {
        ids.push(
            MessageId::parse(id).ok_or_else(|| {
                Error::invalid("invalid_ids", format!("`{id}` is not a message id"))
            })?,
        );
    }
    let outcome = state.relay.ack(client, ids).await?;
    Ok(Json(
        json!({ "ok": true, "acked": outcome.acked, "notAcked": outcome.not_acked }),
    ))
}
