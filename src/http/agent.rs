//! The client (agent instance) endpoints: `GET /poll`, `POST /send`, `POST /ack`,
//! `POST /renew`.

use super::auth::ClientAuth;
use super::extract::{idempotency_key, ApiJson, ApiQuery};
use crate::app::AppState;
use crate::error::Error;
use crate::ids::{ConversationId, MessageId};
use crate::model::Message;
use crate::relay::messages::Reply;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/poll", get(poll))
        .route("/send", post(send))
        .route("/ack", post(ack))
        .route("/renew", post(renew))
}

/// Most deliveries one poll may claim.
const MAX_CLAIM: i64 = 100;
/// Most ids one ack may name.
const MAX_ACK: usize = 1000;

#[derive(Deserialize, utoipa::IntoParams)]
pub(crate) struct PollQuery {
    /// Most deliveries to claim, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    max: Option<i64>,
    /// Seconds to wait for a delivery (capped by long_poll_max_secs).
    wait: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Messages {
    messages: Vec<Message>,
    /// Turns the user stopped (`POST /conversations/{id}/stop`) among those
    /// this agent claimed before: drop their work and send nothing (absent:
    /// none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<crate::turns::Cancel>)]
    cancelled: Vec<std::sync::Arc<crate::turns::Cancel>>,
}

/// Claims due deliveries (leased for lease_secs), long-polling with `wait`.
#[utoipa::path(get, path = "/poll", tag = "agent", security(("bearer" = [])), params(PollQuery), responses(
    (status = 200, body = Messages),
    (status = 400, body = crate::error::ErrorResponse),
    (status = 401, body = crate::error::ErrorResponse),
    (status = 403, body = crate::error::ErrorResponse),
    (status = 422, body = crate::error::ErrorResponse),
    (status = 429, body = crate::error::ErrorResponse),
    (status = 503, body = crate::error::ErrorResponse),
))]
pub(crate) async fn poll(
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
    let polled = state
        .relay
        .poll(client, max, wait, state.shutdown.clone().wait())
        .await?;
    Ok(Json(Messages {
        messages: polled.messages,
        cancelled: polled.cancelled,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SendBody {
    to: String,
    /// May be empty when the reply carries attachments.
    #[serde(default)]
    text: String,
    conversation_id: String,
    /// Ids of uploads (`POST /attachments`) the reply carries, in order.
    #[serde(default)]
    attachments: Vec<String>,
    /// `false`: an interim notice ("working on it") that leaves the
    /// deliveries this agent holds of the conversation unacked. Default `true`.
    ack: Option<bool>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Sent {
    ok: bool,
    message: Message,
}

/// Stores a reply in a conversation this agent holds; acks what it had claimed of it (unless `ack` is false).
#[utoipa::path(post, path = "/send", tag = "agent", security(("bearer" = [])), request_body = SendBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the first result")),
    responses(
    (status = 200, body = Sent),
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
pub(crate) async fn send(
    State(state): State<AppState>,
    ClientAuth(client): ClientAuth,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendBody>,
) -> Result<Json<Sent>, Error> {
    let key = idempotency_key(&headers)?;
    let conversation = ConversationId::parse(&body.conversation_id).ok_or_else(|| {
        Error::not_found(
            "conversation_not_found",
            format!("no conversation {}", body.conversation_id),
        )
    })?;
    let message = state
        .relay
        .send(
            client,
            conversation,
            Reply {
                to: body.to,
                text: body.text,
                attachments: state.relay.attachment_ids(&body.attachments)?,
                reply_id: None,
                key,
                ack: body.ack.unwrap_or(true),
            },
        )
        .await?;
    Ok(Json(Sent { ok: true, message }))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct AckBody {
    ids: Vec<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Acked {
    ok: bool,
    acked: Vec<MessageId>,
    not_acked: Vec<MessageId>,
}

/// Acks claimed deliveries by message id.
#[utoipa::path(post, path = "/ack", tag = "agent", security(("bearer" = [])), request_body = AckBody, responses(
    (status = 200, body = Acked),
    (status = 400, body = crate::error::ErrorResponse),
    (status = 401, body = crate::error::ErrorResponse),
    (status = 403, body = crate::error::ErrorResponse),
    (status = 413, body = crate::error::ErrorResponse),
    (status = 422, body = crate::error::ErrorResponse),
    (status = 429, body = crate::error::ErrorResponse),
    (status = 503, body = crate::error::ErrorResponse),
))]
pub(crate) async fn ack(
    State(state): State<AppState>,
    ClientAuth(client): ClientAuth,
    ApiJson(body): ApiJson<AckBody>,
) -> Result<Json<Acked>, Error> {
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
    Ok(Json(Acked {
        ok: true,
        acked: outcome.acked,
        not_acked: outcome.not_acked,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RenewBody {
    /// The conversation the agent is still working on.
    conversation_id: String,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RenewedReply {
    ok: bool,
    #[serde(flatten)]
    renewed: crate::relay::delivery::Renewed,
}

/// The agent is still working on a conversation: its claims there that have
/// not ended last lease_secs from now (up to max_lease_secs from the claim).
#[utoipa::path(post, path = "/renew", tag = "agent", security(("bearer" = [])), request_body = RenewBody, responses(
    (status = 200, body = RenewedReply),
    (status = 400, body = crate::error::ErrorResponse),
    (status = 401, body = crate::error::ErrorResponse),
    (status = 403, body = crate::error::ErrorResponse),
    (status = 404, body = crate::error::ErrorResponse),
    (status = 413, body = crate::error::ErrorResponse),
    (status = 422, body = crate::error::ErrorResponse),
    (status = 429, body = crate::error::ErrorResponse),
    (status = 503, body = crate::error::ErrorResponse),
))]
pub(crate) async fn renew(
    State(state): State<AppState>,
    ClientAuth(client): ClientAuth,
    ApiJson(body): ApiJson<RenewBody>,
) -> Result<Json<RenewedReply>, Error> {
    let conversation = ConversationId::parse(&body.conversation_id).ok_or_else(|| {
        Error::not_found(
            "conversation_not_found",
            format!("no conversation {}", body.conversation_id),
        )
    })?;
    let renewed = state.relay.renew(client, conversation).await?;
    Ok(Json(RenewedReply { ok: true, renewed }))
}
