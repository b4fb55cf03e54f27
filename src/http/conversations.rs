//! `GET /conversations` (admin) and `GET /conversations/:id` (admin, or the
//! client or app the conversation belongs to).

use super::extract::{cursor, limit, query_id, ApiQuery};
use crate::app::AppState;
use crate::auth::{AdminAuth, AnyAuth};
use crate::error::Error;
use crate::ids::{AppId, ClientId, ConversationId};
use crate::model::{ConversationState, ConversationWithMessages};
use crate::relay::admin::ConversationFilter;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/conversations", get(list))
        .route("/conversations/{id}", get(one))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    user_id: Option<String>,
    client_id: Option<String>,
    app_id: Option<String>,
    state: Option<ConversationState>,
    cursor: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, Error> {
    let client = query_id(
        q.client_id,
        ClientId::parse,
        "invalid_client_id",
        "a client id",
    )?;
    let app = query_id(q.app_id, AppId::parse_any, "invalid_app_id", "an app id")?;
    let page = state
        .relay
        .list_conversations(ConversationFilter {
            app,
            user: q.user_id,
            client,
            state: q.state,
            before: cursor(q.cursor.as_deref())?,
            limit: limit(q.limit, 50, 500)?,
        })
        .await?;
    Ok(Json(json!({
        "conversations": page.items,
        "nextCursor": page.next.map(|n| n.to_string()),
    })))
}

async fn one(
    State(state): State<AppState>,
    AnyAuth(viewer): AnyAuth,
    Path(id): Path<String>,
) -> Result<Json<ConversationWithMessages>, Error> {
    let id = ConversationId::parse(&id).ok_or_else(|| {
        Error::not_found("conversation_not_found", format!("no conversation {id}"))
    })?;
    Ok(Json(state.relay.conversation(&viewer, &id).await?))
}
