//! The OpenAPI 3 document of the HTTP API, generated from the handlers'
//! `#[utoipa::path]` annotations and the types they exchange, served at
//! `GET /openapi.json`.

use super::{
    accounts, admin, agent, attachments, console, conversations, events, health, inbound, openai,
    sessions, webhooks,
};
use crate::app::AppState;
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "clawrelay",
        description = "A durable message relay between apps and AI agents. Tokens go in `Authorization: Bearer`; tags say which token an operation takes (admin = the admin token, or the admin console's login cookie with X-CSRF-Token on changes; agent = client token, app = app token or, where it says so, a user session, user = a user session's token or the login cookie, any, public = none).",
    ),
    paths(
        health::health, health::ready, health::stats, health::metrics,
        admin::create_client, admin::list_clients, admin::revoke_client, admin::rotate_client_token,
        admin::create_app, admin::list_apps, admin::revoke_app, admin::rotate_app_token,
        admin::list_deliveries, admin::requeue,
        accounts::create, accounts::list, accounts::update, accounts::reset_password,
        console::login, console::session, console::refresh, console::logout, console::overview,
        webhooks::create, webhooks::list, webhooks::one, webhooks::update, webhooks::delete,
        webhooks::rotate, webhooks::attempts, webhooks::replay,
        conversations::list, conversations::open, conversations::one, conversations::history,
        conversations::stop,
        agent::poll, agent::send, agent::ack, agent::renew,
        inbound::inbound, inbound::outbox,
        events::events,
        sessions::open, sessions::refresh, sessions::whoami, sessions::logout, sessions::login, sessions::signup,
        attachments::upload, attachments::download,
        openai::completions, openai::models,
        crate::ws::upgrade,
        openapi_json,
    ),
    modifiers(&Bearer),
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // The admin console's login (POST /admin/login); the admin API
        // takes it like the admin token, with X-CSRF-Token on changes.
        components.add_security_scheme(
            "console",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "clawrelay_console",
                "The admin console's login cookie, with its CSRF token in X-CSRF-Token",
            ))),
        );
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "public", responses((status = 200, description = "The OpenAPI 3 document")))]
pub(crate) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
