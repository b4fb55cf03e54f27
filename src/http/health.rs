//! `GET /health`: no authentication, cheap, the seed's shape.

use crate::app::AppState;
use crate::auth::AdminAuth;
use crate::error::Error;
use crate::model::ClientState;
use crate::store::{conversations, now_ms};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
}

/// `GET /ready`: 200 when the database answers, 503 otherwise (no auth).
async fn ready(State(state): State<AppState>) -> Result<Json<Value>, Error> {
    state.relay.store.ping().await?;
    Ok(Json(json!({ "ok": true })))
}

/// `GET /metrics` (admin): Prometheus text format.
async fn metrics(
    State(state): State<AppState>,
    _: AdminAuth,
) -> Result<impl axum::response::IntoResponse, Error> {
    let body = state.relay.render_metrics().await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    ))
}

/// The router of a separate metrics listener (`[metrics] bind`): `/metrics`
/// without authentication, for a loopback or otherwise private address.
pub fn metrics_only(relay: std::sync::Arc<crate::relay::Relay>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let relay = relay.clone();
            async move {
                let body = relay.render_metrics().await?;
                Ok::<_, Error>((
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    body,
                ))
            }
        }),
    )
}

/// `GET /stats` (admin): what the single writer has done since start.
async fn stats(State(state): State<AppState>, _: AdminAuth) -> Json<Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let w = state.relay.store.writer_stats();
    Json(json!({
        "commits": w.commits.load(Relaxed),
        "operations": w.operations.load(Relaxed),
        "failedCommits": w.failed.load(Relaxed),
        "commitMicros": w.commit_micros.load(Relaxed),
    }))
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
