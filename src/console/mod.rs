//! The admin console: a page served from the binary at `/admin` (plain
//! HTML, CSS and ES modules compiled in; no CDN, no build step), on unless
//! `[console] enabled = false`.
//!
//! It is a front end over the documented admin API, as the CLI is: a login
//! with the admin token (`http::console`) sets an HttpOnly cookie the admin
//! API accepts like the token, each request carrying the login's CSRF
//! token. Every text it shows (messages, names, errors) goes in as text;
//! the page creates no HTML from strings at all, and its Content-Security-
//! Policy, as strict as the chat's, lets no Trusted Types policy exist, so
//! nothing can reach `innerHTML`.

use crate::app::AppState;
use crate::error::Error;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

const HTML: &str = include_str!("assets/console.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");
/// The modules `console.js` imports, served at `/admin/js/<name>`.
const MODULES: [(&str, &str); 6] = [
    ("ui.js", include_str!("assets/js/ui.js")),
    ("overview.js", include_str!("assets/js/overview.js")),
    ("agents.js", include_str!("assets/js/agents.js")),
    ("apps.js", include_str!("assets/js/apps.js")),
    (
        "conversations.js",
        include_str!("assets/js/conversations.js"),
    ),
    ("deliveries.js", include_str!("assets/js/deliveries.js")),
];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(page))
        .route("/admin/console.js", get(script))
        .route("/admin/console.css", get(style))
        .route("/admin/js/{name}", get(module))
}

/// 404 `console_disabled` when `[console] enabled = false` (the page, its
/// login and its cookie as a credential are all off then).
pub(crate) fn enabled(state: &AppState) -> Result<(), Error> {
    if state.config.console.enabled {
        Ok(())
    } else {
        Err(Error::not_found(
            "console_disabled",
            "the admin console is off ([console] enabled = false)",
        ))
    }
}

async fn page(State(state): State<AppState>) -> Result<Response, Error> {
    enabled(&state)?;
    Ok(asset("text/html; charset=utf-8", HTML))
}

async fn script(State(state): State<AppState>) -> Result<Response, Error> {
    enabled(&state)?;
    Ok(asset("text/javascript; charset=utf-8", SCRIPT))
}

async fn style(State(state): State<AppState>) -> Result<Response, Error> {
    enabled(&state)?;
    Ok(asset("text/css; charset=utf-8", STYLE))
}

async fn module(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, Error> {
    enabled(&state)?;
    let (_, body) = MODULES
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| Error::not_found("not_found", format!("no script {name} in the console")))?;
    Ok(asset("text/javascript; charset=utf-8", body))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    crate::webchat::served(
        content_type,
        body,
        &crate::webchat::policy(&[], "'none'"),
        true,
    )
}
