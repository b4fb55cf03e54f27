//! `GET /health`: no authentication, cheap, the seed's shape.

use super::auth::AdminAuth;
use crate::app::AppState;
use crate::error::Error;
use crate::store::now_ms;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Ok {
    ok: bool,
}

/// Readiness: 200 when the database answers, 503 otherwise (no authentication).
#[utoipa::path(get, path = "/ready", tag = "public", responses(
    (status = 200, body = Ok),
    (status = 503, body = crate::error::ErrorResponse),
))]
pub(crate) async fn ready(State(state): State<AppState>) -> Result<Json<Ok>, Error> {
    state.relay.store.ping().await?;
    Ok(Json(Ok { ok: true }))
}

/// Prometheus metrics in the text format.
#[utoipa::path(get, path = "/metrics", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, content_type = "text/plain", body = String),
    (status = 401, body = crate::error::ErrorResponse),
    (status = 403, body = crate::error::ErrorResponse),
    (status = 429, body = crate::error::ErrorResponse),
    (status = 503, body = crate::error::ErrorResponse),
))]
pub(crate) async fn metrics(
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

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Stats {
    commits: u64,
    operations: u64,
    failed_commits: u64,
    commit_micros: u64,
    log_syncs: u64,
}

/// What the single writer has done since start.
#[utoipa::path(get, path = "/stats", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, body = Stats),
    (status = 401, body = crate::error::ErrorResponse),
    (status = 403, body = crate::error::ErrorResponse),
    (status = 429, body = crate::error::ErrorResponse),
))]
pub(crate) async fn stats(State(state): State<AppState>, _: AdminAuth) -> Json<Stats> {
    use std::sync::atomic::Ordering::Relaxed;
    // PostgreSQL has no single writer: its counters stay at zero.
    let none = crate::store::WriterStats::default();
    let w = state.relay.store.writer_stats().unwrap_or(&none);
    Json(Stats {
        commits: w.commits.load(Relaxed),
        operations: w.operations.load(Relaxed),
        failed_commits: w.failed.load(Relaxed),
        commit_micros: w.commit_micros.load(Relaxed),
        log_syncs: w.syncs.load(Relaxed),
    })
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    ok: bool,
    server: &'static str,
    version: &'static str,
    /// Clients counting as connected.
    clients: usize,
    /// Conversations not expired (recounted every maintenance tick).
    conversations: i64,
}

/// Liveness and a summary (no authentication).
#[utoipa::path(get, path = "/health", tag = "public", responses(
    (status = 200, body = Health),
    (status = 503, body = crate::error::ErrorResponse),
))]
pub(crate) async fn health(State(state): State<AppState>) -> Result<Json<Health>, Error> {
    // O(1) in the size of the database: liveness is in memory, the count
    // of conversations kept by the relay.
    let relay = &state.relay;
    let clients = relay.hub.live_clients(now_ms()).len();
    let conversations = relay.active_conversations();
    Ok(Json(Health {
        ok: true,
        server: "clawrelay",
        version: env!("CARGO_PKG_VERSION"),
        clients,
        conversations,
    }))
}
