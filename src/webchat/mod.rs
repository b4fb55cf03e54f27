//! The web chat page: static assets compiled into the binary (no CDN, no
//! build step), served at `/chat` (and `/`) when `[webchat] enabled`.
//!
//! The page talks to the same API as any app, with a user session: the login
//! cookie of a built-in account, or a token the embedding site hands it
//! (`/chat#token=…` or `postMessage`). An agent's Markdown is rendered and
//! sanitized here ([`markdown`]) and is the only HTML the page inserts;
//! everything else is put in as text. Every response carries a strict
//! Content-Security-Policy: scripts, styles and connections from the relay
//! itself only, no inline script, Trusted Types required (one policy, the
//! page's for that rendering), framing only by `[webchat] frame_ancestors`.

mod highlight;
pub mod markdown;

use crate::app::AppState;
use crate::error::Error;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

const HTML: &str = include_str!("assets/chat.html");
const SCRIPT: &str = include_str!("assets/chat.js");
const STYLE: &str = include_str!("assets/chat.css");
const ICON: &str = include_str!("assets/favicon.svg");
/// The modules `chat.js` imports, served at `/chat/js/<name>` (ES modules:
/// the browser loads them under `script-src 'self'`, no bundler).
const MODULES: [(&str, &str); 8] = [
    ("state.js", include_str!("assets/js/state.js")),
    ("i18n.js", include_str!("assets/js/i18n.js")),
    ("session.js", include_str!("assets/js/session.js")),
    ("stream.js", include_str!("assets/js/stream.js")),
    (
        "conversations.js",
        include_str!("assets/js/conversations.js"),
    ),
    ("render.js", include_str!("assets/js/render.js")),
    ("activity.js", include_str!("assets/js/activity.js")),
    ("compose.js", include_str!("assets/js/compose.js")),
];

/// The page's files as served (name, body; the HTML with its title not yet
/// filled in): for the benchmark's page weight.
pub fn assets() -> Vec<(&'static str, &'static str)> {
    let mut all = vec![
        ("chat.html", HTML),
        ("chat.js", SCRIPT),
        ("chat.css", STYLE),
    ];
    all.extend(MODULES);
    all
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/chat", get(page))
        .route("/chat/chat.js", get(script))
        .route("/chat/js/{name}", get(module))
        .route("/chat/chat.css", get(style))
        .route("/chat/favicon.svg", get(icon))
}

fn enabled(state: &AppState) -> Result<(), Error> {
    if state.config.webchat.enabled {
        Ok(())
    } else {
        Err(Error::not_found(
            "webchat_disabled",
            "the web chat is off ([webchat] enabled = false)",
        ))
    }
}

async fn root(State(state): State<AppState>) -> Result<Redirect, Error> {
    enabled(&state)?;
    Ok(Redirect::to("/chat"))
}

async fn page(State(state): State<AppState>) -> Result<Response, Error> {
    enabled(&state)?;
    let html = HTML.replace("{{title}}", &escape_html(&state.config.webchat.title));
    Ok(asset(&state, "text/html; charset=utf-8", html))
}

async fn script(State(state): State<AppState>) -> Result<Response, Error> {
    enabled(&state)?;
    Ok(asset(
        &state,
        "text/javascript; charset=utf-8",
        SCRIPT.to_owned(),
    ))
}

async fn module(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, Error> {
    enabled(&state)?;
    let (_, body) = MODULES
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| Error::not_found("not_found", format!("no script {name} in the chat")))?;
    Ok(asset(
        &state,
        "text/javascript; charset=utf-8",
        (*body).to_owned(),
    ))
}

async fn style(State(state): State<AppState>) -> Result<Response, Error> {
    enabled(&state)?;
    Ok(asset(&state, "text/css; charset=utf-8", STYLE.to_owned()))
}

async fn icon(State(state): State<AppState>) -> Result<Response, Error> {
    enabled(&state)?;
    Ok(asset(&state, "image/svg+xml", ICON.to_owned()))
}

fn asset(state: &AppState, content_type: &'static str, body: String) -> Response {
    let ancestors = &state.config.webchat.frame_ancestors;
    served(
        content_type,
        body,
        &content_security_policy(ancestors),
        ancestors.is_empty(),
    )
}

/// A page's file as the relay serves its pages (the chat's and the
/// console's): its type, policy `csp`, no sniffing, no referrer, checked
/// again on every load, and `X-Frame-Options: DENY` unless some site may
/// frame it.
pub(crate) fn served(
    content_type: &'static str,
    body: impl IntoResponse,
    csp: &str,
    deny_frames: bool,
) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(csp) = HeaderValue::from_str(csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if deny_frames {
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

/// The page's policy: everything from the relay itself, nothing inline,
/// framing by the configured ancestors only.
pub fn content_security_policy(frame_ancestors: &[String]) -> String {
    policy(frame_ancestors, "clawrelay-markdown")
}

/// The relay's pages' policy, with the Trusted Types policies a page may
/// create (`'none'`: none, so nothing can reach `innerHTML`).
pub fn policy(frame_ancestors: &[String], trusted_types: &str) -> String {
    let ancestors = if frame_ancestors.is_empty() {
        "'none'".to_owned()
    } else {
        frame_ancestors.join(" ")
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self' data: blob:; base-uri 'none'; form-action 'self'; frame-ancestors {ancestors}; \
         require-trusted-types-for 'script'; trusted-types {trusted_types}"
    )
}

pub(crate) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_ancestors_or_none() {
        let none = content_security_policy(&[]);
        assert!(none.contains("frame-ancestors 'none'"));
        assert!(none.contains("script-src 'self';"));
        assert!(!none.contains("unsafe-inline"));
        let some = content_security_policy(&["https://a.example".into(), "'self'".into()]);
        assert!(some.contains("frame-ancestors https://a.example 'self';"));
        assert!(
            some.contains("require-trusted-types-for 'script'; trusted-types clawrelay-markdown")
        );
    }

    #[test]
    fn the_title_is_escaped() {
        assert_eq!(
            escape_html("<b>\"A&B\"</b>"),
            "&lt;b&gt;&quot;A&amp;B&quot;&lt;/b&gt;"
        );
    }
}
