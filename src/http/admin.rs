//! Admin endpoints: clients, apps, dead letters.

use super::extract::{cursor, limit, query_id, ApiJson, ApiQuery};
use crate::app::AppState;
use crate::auth::AdminAuth;
use crate::error::Error;
use crate::ids::{AppId, ClientId, ConversationId, MessageId};
use crate::model::{DeliveryState, IssuedApp, IssuedClient};
use crate::relay::admin::DeliveryFilter;
use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

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

#[derive(Deserialize)]
struct NameBody {
    name: String,
}

fn client_id(id: &str) -> Result<ClientId, Error> {
    ClientId::parse(id)
        .ok_or_else(|| Error::not_found("client_not_found", format!("no client {id}")))
}

fn app_id(id: &str) -> Result<AppId, Error> {
    AppId::parse(id).ok_or_else(|| Error::not_found("app_not_found", format!("no app {id}")))
}

async fn create_client(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiJson(body): ApiJson<NameBody>,
) -> Result<Json<IssuedClient>, Error> {
    Ok(Json(state.relay.create_client(&body.name).await?))
}

async fn list_clients(State(state): State<AppState>, _: AdminAuth) -> Result<Json<Value>, Error> {
    Ok(Json(
        json!({ "clients": state.relay.list_clients().await? }),
    ))
}

async fn revoke_client(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let id = client_id(&id)?;
    state.relay.revoke_client(&id).await?;
    state.auth.forget(id.as_str());
    Ok(Json(json!({ "ok": true })))
}

async fn rotate_client_token(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(id): Path<String>,
) -> Result<Json<IssuedClient>, Error> {
    let id = client_id(&id)?;
    let issued = state.relay.rotate_client_token(&id).await?;
    state.auth.forget(id.as_str());
    Ok(Json(issued))
}

async fn create_app(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiJson(body): ApiJson<NameBody>,
) -> Result<Json<IssuedApp>, Error> {
    Ok(Json(state.relay.create_app(&body.name).await?))
}

async fn list_apps(State(state): State<AppState>, _: AdminAuth) -> Result<Json<Value>, Error> {
    Ok(Json(json!({ "apps": state.relay.list_apps().await? })))
}

async fn revoke_app(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let id = app_id(&id)?;
    state.relay.revoke_app(&id).await?;
    state.auth.forget(id.as_str());
    Ok(Json(json!({ "ok": true })))
}

async fn rotate_app_token(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(id): Path<String>,
) -> Result<Json<IssuedApp>, Error> {
    let id = app_id(&id)?;
    let issued = state.relay.rotate_app_token(&id).await?;
    state.auth.forget(id.as_str());
    Ok(Json(issued))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeliveriesQuery {
    state: Option<DeliveryState>,
    client_id: Option<String>,
    conversation_id: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

async fn list_deliveries(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> Result<Json<Value>, Error> {
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
    Ok(Json(json!({
        "deliveries": page.items,
        "nextCursor": page.next.map(|n| n.to_string()),
    })))
}

async fn requeue(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let id = MessageId::parse(&id)
        .ok_or_else(|| Error::not_found("message_not_found", format!("no message {id}")))?;
    state.relay.requeue(&id).await?;
    Ok(Json(json!({ "ok": true })))
}
