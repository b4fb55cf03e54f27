//! Admin endpoints: clients, apps, dead letters.

use super::auth::AdminAuth;
use super::extract::{cursor, limit, query_id, ApiJson, ApiPath, ApiQuery};
use crate::app::AppState;
use crate::error::{Error, ErrorResponse};
use crate::ids::{AppId, ClientId, ConversationId, MessageId};
use crate::model::{AppInfo, ClientInfo, Delivery, DeliveryState, IssuedApp, IssuedClient};
use crate::relay::admin::DeliveryFilter;
use axum::extract::State;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/clients", post(create_client).get(list_clients))
        .route("/clients/{id}", delete(revoke_client))
        .route("/clients/{id}/token", post(rotate_client_token))
        .route("/apps", post(create_app).get(list_apps))
        .route("/apps/{id}", delete(revoke_app))
        .route("/apps/{id}/token", post(rotate_app_token))
        .route("/deliveries", get(list_deliveries))
        .route("/deliveries/{id}/requeue", post(requeue))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct NameBody {
    /// 1 to 128 bytes of printable text.
    name: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Done {
    pub(crate) ok: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Clients {
    clients: Vec<ClientInfo>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Apps {
    apps: Vec<AppInfo>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Deliveries {
    deliveries: Vec<Delivery>,
    /// Pass as `cursor` for the next page; null on the last one.
    next_cursor: Option<String>,
}

fn client_id(id: &str) -> Result<ClientId, Error> {
    ClientId::parse(id)
        .ok_or_else(|| Error::not_found("client_not_found", format!("no client {id}")))
}

fn app_id(id: &str) -> Result<AppId, Error> {
    AppId::parse(id).ok_or_else(|| Error::not_found("app_not_found", format!("no app {id}")))
}

/// Creates a client (an agent instance); its token is shown only here.
#[utoipa::path(post, path = "/clients", tag = "admin", security(("bearer" = [])), request_body = NameBody, responses(
    (status = 200, body = IssuedClient),
    (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse), (status = 429, body = ErrorResponse),
    (status = 503, body = ErrorResponse),
))]
pub(crate) async fn create_client(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiJson(body): ApiJson<NameBody>,
) -> Result<Json<IssuedClient>, Error> {
    Ok(Json(state.relay.create_client(&body.name).await?))
}

/// Lists clients with their state and pending deliveries.
#[utoipa::path(get, path = "/clients", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, body = Clients),
    (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 429, body = ErrorResponse),
    (status = 503, body = ErrorResponse),
))]
pub(crate) async fn list_clients(
    State(state): State<AppState>,
    _: AdminAuth,
) -> Result<Json<Clients>, Error> {
    Ok(Json(Clients {
        clients: state.relay.list_clients().await?,
    }))
}

/// Revokes a client; its open conversations move to other clients.
#[utoipa::path(delete, path = "/clients/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "Client id")), responses(
    (status = 200, body = Done),
    (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse),
    (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn revoke_client(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Done>, Error> {
    let id = client_id(&id)?;
    state.relay.revoke_client(&id).await?;
    state.auth.forget(id.as_str());
    Ok(Json(Done { ok: true }))
}

/// Replaces a client's token; the old one stops working.
#[utoipa::path(post, path = "/clients/{id}/token", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "Client id")), responses(
    (status = 200, body = IssuedClient),
    (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse),
    (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn rotate_client_token(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<IssuedClient>, Error> {
    let id = client_id(&id)?;
    let issued = state.relay.rotate_client_token(&id).await?;
    state.auth.forget(id.as_str());
    Ok(Json(issued))
}

/// Creates an app; its token is shown only here.
#[utoipa::path(post, path = "/apps", tag = "admin", security(("bearer" = [])), request_body = NameBody, responses(
    (status = 200, body = IssuedApp),
    (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse), (status = 429, body = ErrorResponse),
    (status = 503, body = ErrorResponse),
))]
pub(crate) async fn create_app(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiJson(body): ApiJson<NameBody>,
) -> Result<Json<IssuedApp>, Error> {
    Ok(Json(state.relay.create_app(&body.name).await?))
}

/// Lists apps.
#[utoipa::path(get, path = "/apps", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, body = Apps),
    (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 429, body = ErrorResponse),
    (status = 503, body = ErrorResponse),
))]
pub(crate) async fn list_apps(
    State(state): State<AppState>,
    _: AdminAuth,
) -> Result<Json<Apps>, Error> {
    Ok(Json(Apps {
        apps: state.relay.list_apps().await?,
    }))
}

/// Revokes an app's token; its conversations and history stay.
#[utoipa::path(delete, path = "/apps/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "App id")), responses(
    (status = 200, body = Done),
    (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse),
    (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn revoke_app(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Done>, Error> {
    let id = app_id(&id)?;
    state.relay.revoke_app(&id).await?;
    state.auth.forget(id.as_str());
    Ok(Json(Done { ok: true }))
}

/// Replaces an app's token; the old one stops working.
#[utoipa::path(post, path = "/apps/{id}/token", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "App id")), responses(
    (status = 200, body = IssuedApp),
    (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse),
    (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn rotate_app_token(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<IssuedApp>, Error> {
    let id = app_id(&id)?;
    let issued = state.relay.rotate_app_token(&id).await?;
    state.auth.forget(id.as_str());
    Ok(Json(issued))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(rename_all = "camelCase")]
pub(crate) struct DeliveriesQuery {
    state: Option<DeliveryState>,
    client_id: Option<String>,
    conversation_id: Option<String>,
    /// From a previous page's nextCursor.
    cursor: Option<String>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Deliveries, newest first (e.g. `?state=dead` for dead letters).
#[utoipa::path(get, path = "/deliveries", tag = "admin", security(("bearer" = [])), params(DeliveriesQuery), responses(
    (status = 200, body = Deliveries),
    (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    (status = 422, body = ErrorResponse), (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn list_deliveries(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> Result<Json<Deliveries>, Error> {
    let client = query_id(
        q.client_id,
        ClientId::parse,
        "invalid_client_id",
        "a client id",
    )?;
    let conversation = query_id(
        q.conversation_id,
        ConversationId::parse,
        "invalid_conversation_id",
        "a conversation id",
    )?;
    let page = state
        .relay
        .list_deliveries(DeliveryFilter {
            state: q.state,
            client,
            conversation,
            before: cursor(q.cursor.as_deref())?,
            limit: limit(q.limit, 100, 1000)?,
        })
        .await?;
    Ok(Json(Deliveries {
        deliveries: page.items,
        next_cursor: page.next.map(|n| n.to_string()),
    }))
}

/// Puts a dead delivery back in its conversation's queue.
#[utoipa::path(post, path = "/deliveries/{id}/requeue", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "Message id")), responses(
    (status = 200, body = Done),
    (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse),
    (status = 409, body = ErrorResponse), (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn requeue(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Done>, Error> {
    let id = MessageId::parse(&id)
        .ok_or_else(|| Error::not_found("message_not_found", format!("no message {id}")))?;
    state.relay.requeue(&id).await?;
    Ok(Json(Done { ok: true }))
}
