//! The HTTP API: one router per resource, assembled here with the layers
//! every request goes through (request id, tracing span, body limit).
//! Handlers parse, authorize (by their extractors), call one domain function
//! and shape the response.

pub(crate) mod accounts;
pub(crate) mod admin;
pub(crate) mod agent;
pub(crate) mod attachments;
pub mod auth;
pub(crate) mod console;
pub(crate) mod conversations;
pub(crate) mod events;
pub mod extract;
pub mod health;
pub(crate) mod inbound;
pub mod openai;
pub mod openapi;
pub(crate) mod sessions;
pub(crate) mod webhooks;

use crate::app::AppState;
use crate::error::Error;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

/// Routes that wait by design (long polls, streams, an agent's answer,
/// bounded by `[openai] reply_timeout_secs`) or stream a large body in
/// (uploads, which time out when the body stalls instead) and are not
/// timed out.
const WAITING_ROUTES: [&str; 6] = [
    "/poll",
    "/outbox",
    "/events",
    "/ws",
    "/attachments",
    "/v1/chat/completions",
];

/// Answers 503 `request_timeout` when a request takes longer than
/// `[limits] request_timeout_secs` (long polls and streams excepted). A write
/// already queued may still commit: clients retry with the same
/// Idempotency-Key.
async fn request_timeout(
    axum::extract::State(limit): axum::extract::State<std::time::Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if WAITING_ROUTES.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => Error::Overloaded {
            code: "request_timeout",
            message: format!(
                "the request took longer than {} s ([limits] request_timeout_secs); retry with the same Idempotency-Key",
                limit.as_secs()
            ),
        }
        .into_response(),
    }
}

/// Observes each request's duration by route (the matched pattern, so ids do
/// not make new series), method and status.
async fn observe(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    crate::metrics::get()
        .http
        .with_label_values(&[route.as_str(), method.as_str(), response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

pub fn router(state: AppState) -> Router {
    let max_body = state.config.limits.max_body_bytes;
    let timeout = std::time::Duration::from_secs(state.config.limits.request_timeout_secs);
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .merge(health::router())
        .merge(admin::router())
        .merge(accounts::router())
        .merge(console::router())
        .merge(webhooks::router())
        .merge(conversations::router())
        .merge(agent::router())
        .merge(inbound::router())
        .merge(events::router())
        .merge(sessions::router())
        .merge(attachments::router(&state.config))
        .merge(openai::router(&state.config))
        .merge(crate::webchat::router())
        .merge(crate::console::router())
        .merge(openapi::router())
        .merge(crate::ws::router())
        .fallback(|| async { Error::not_found("no_route", "no such endpoint") })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(timeout, request_timeout))
        .route_layer(axum::middleware::from_fn(observe))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}
