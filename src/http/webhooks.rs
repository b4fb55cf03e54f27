//! Admin endpoints for apps' webhooks: create, list, read, update, delete,
//! rotate the secret, recent attempts, replay.

use super::admin::Done;
use super::auth::AdminAuth;
use super::extract::{limit, ApiJson, ApiPath, ApiQuery, OptionalJson};
use crate::app::AppState;
use crate::error::{Error, ErrorResponse};
use crate::ids::{AppId, EventId, WebhookId};
use crate::model::{IssuedWebhook, WebhookAttempt, WebhookInfo};
use crate::relay::webhooks::Replay;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/apps/{id}/webhooks", post(create).get(list))
        .route("/webhooks/{id}", get(one).patch(update).delete(delete))
        .route("/webhooks/{id}/secret", post(rotate))
        .route("/webhooks/{id}/attempts", get(attempts))
        .route("/webhooks/{id}/replay", post(replay))
}

/// An app id, the public app's included (its users' replies can be pushed too).
fn app_id(id: &str) -> Result<AppId, Error> {
    AppId::parse_any(id).ok_or_else(|| Error::not_found("app_not_found", format!("no app {id}")))
}

fn webhook_id(id: &str) -> Result<WebhookId, Error> {
    WebhookId::parse(id)
        .ok_or_else(|| Error::not_found("webhook_not_found", format!("no webhook {id}")))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWebhookBody {
    /// http or https; must resolve to a public address unless
    /// `[webhooks] allow_private` or `allowed_networks` allow it.
    url: String,
    /// Default: all of `message`, `conversation.expired`, `delivery.dead`.
    events: Option<Vec<String>>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookChange {
    url: Option<String>,
    events: Option<Vec<String>>,
    /// true resumes delivery (and clears the failure record).
    enabled: Option<bool>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RotateBody {
    /// How long the old secret keeps signing, 0 to 2592000 (default
    /// `[webhooks] rotation_grace_secs`).
    grace_secs: Option<u64>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ReplayBody {
    /// One event to send again.
    event_id: Option<String>,
    /// Or: the events created at or after this time (Unix ms)...
    since: Option<i64>,
    /// ...and before this one (default: now).
    until: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Webhooks {
    webhooks: Vec<WebhookInfo>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Attempts {
    attempts: Vec<WebhookAttempt>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Replayed {
    /// Events queued again.
    replayed: usize,
}

#[derive(Deserialize, utoipa::IntoParams)]
pub(crate) struct AttemptsQuery {
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

/// Creates a webhook endpoint for an app; its secret is shown only here.
#[utoipa::path(post, path = "/apps/{id}/webhooks", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "App id")), request_body = NewWebhookBody, responses(
    (status = 200, body = IssuedWebhook),
    (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    (status = 404, body = ErrorResponse), (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse),
    (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn create(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<NewWebhookBody>,
) -> Result<Json<IssuedWebhook>, Error> {
    let app = app_id(&id)?;
    Ok(Json(
        state
            .relay
            .create_webhook(&app, &body.url, body.events)
            .await?,
    ))
}

/// Lists an app's webhook endpoints with their state and backlog.
#[utoipa::path(get, path = "/apps/{id}/webhooks", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "App id")), responses(
    (status = 200, body = Webhooks),
    (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse),
    (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn list(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Webhooks>, Error> {
    let app = app_id(&id)?;
    Ok(Json(Webhooks {
        webhooks: state.relay.list_webhooks(Some(&app)).await?,
    }))
}

/// One webhook endpoint.
#[utoipa::path(get, path = "/webhooks/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "Webhook id")), responses(
    (status = 200, body = WebhookInfo),
    (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse),
    (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn one(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<WebhookInfo>, Error> {
    Ok(Json(state.relay.webhook(&webhook_id(&id)?).await?))
}

/// Changes an endpoint's url, events or enabled state.
#[utoipa::path(patch, path = "/webhooks/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "Webhook id")), request_body = WebhookChange, responses(
    (status = 200, body = WebhookInfo),
    (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    (status = 404, body = ErrorResponse), (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse),
    (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn update(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<WebhookChange>,
) -> Result<Json<WebhookInfo>, Error> {
    let id = webhook_id(&id)?;
    Ok(Json(
        state
            .relay
            .update_webhook(&id, body.url, body.events, body.enabled)
            .await?,
    ))
}

/// Deletes an endpoint with its queue and attempts.
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "Webhook id")), responses(
    (status = 200, body = Done),
    (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse),
    (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Done>, Error> {
    state.relay.delete_webhook(&webhook_id(&id)?).await?;
    Ok(Json(Done { ok: true }))
}

/// Replaces the secret (shown only here); the old one also signs during the grace period.
/// The body may be left out (its one field is optional).
#[utoipa::path(post, path = "/webhooks/{id}/secret", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "Webhook id")), request_body = Option<RotateBody>, responses(
    (status = 200, body = IssuedWebhook),
    (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    (status = 404, body = ErrorResponse), (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse),
    (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn rotate(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiPath(id): ApiPath<String>,
    OptionalJson(body): OptionalJson<RotateBody>,
) -> Result<Json<IssuedWebhook>, Error> {
    let id = webhook_id(&id)?;
    Ok(Json(
        state
            .relay
            .rotate_webhook_secret(&id, body.grace_secs)
            .await?,
    ))
}

/// The endpoint's recent delivery attempts, newest first.
#[utoipa::path(get, path = "/webhooks/{id}/attempts", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "Webhook id"), AttemptsQuery), responses(
    (status = 200, body = Attempts),
    (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    (status = 404, body = ErrorResponse), (status = 422, body = ErrorResponse), (status = 429, body = ErrorResponse),
    (status = 503, body = ErrorResponse),
))]
pub(crate) async fn attempts(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<AttemptsQuery>,
) -> Result<Json<Attempts>, Error> {
    let id = webhook_id(&id)?;
    let limit = limit(q.limit, 20, 100)?;
    Ok(Json(Attempts {
        attempts: state.relay.webhook_attempts(&id, limit).await?,
    }))
}

/// Sends events again: one (`eventId`) or a time range (`since`, `until`).
#[utoipa::path(post, path = "/webhooks/{id}/replay", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "Webhook id")), request_body = ReplayBody, responses(
    (status = 200, body = Replayed),
    (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    (status = 404, body = ErrorResponse), (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse),
    (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn replay(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ReplayBody>,
) -> Result<Json<Replayed>, Error> {
    let id = webhook_id(&id)?;
    let replay = match (body.event_id, body.since) {
        (Some(event), None) if body.until.is_none() => Replay::One(
            EventId::parse(&event)
                .ok_or_else(|| Error::not_found("event_not_found", format!("no event {event}")))?,
        ),
        (None, Some(since)) => Replay::Between {
            since,
            until: body.until,
        },
        _ => {
            return Err(Error::invalid(
                "invalid_replay",
                "give either `eventId`, or `since` (and optionally `until`)",
            ))
        }
    };
    Ok(Json(Replayed {
        replayed: state.relay.replay_webhook(&id, replay).await?,
    }))
}
