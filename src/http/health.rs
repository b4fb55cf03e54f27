//! `GET /health`: no authentication, cheap, the seed's shape.

use crate::app::AppState;
use crate::error::Error;
use crate::model::ClientState;
use crate::store::{conversations, now_ms};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

async fn health(State(state): State<AppState>) -> Result<Json<Value>, Error> {
    let now = now_ms();
    let relay = &state.relay;
    let clients = relay
        .list_clients()
        .await?
        .iter()
        .filter(|c| c.state == ClientState::Connected)
        .count();
    let conversations =
        conversations::count_active(relay.store.reader(), relay.rules.idle_cutoff(now)).await?;
    Ok(Json(json!({
        "ok": true,
        "server": "clawrelay",
        "version": env!("CARGO_PKG_VERSION"),
        "clients": clients,
        "conversations": conversations,
    })))
}
