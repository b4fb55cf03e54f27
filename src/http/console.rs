//! The admin console's login over HTTP (`/admin/login`, `/admin/session`,
//! `/admin/session/refresh`, `/admin/logout`) and its first screen's data
//! (`GET /admin/overview`). A login with the admin token opens a console
//! session: its token goes in an HttpOnly, `SameSite=Strict` cookie and
//! never in a body; the answer carries the CSRF token the page sends with
//! every request. Everything else the console does is the admin API, which
//! accepts that cookie (see `auth`) as it accepts the admin token.

use super::auth::{authenticate, bearer, AdminAuth, CONSOLE_COOKIE};
use super::extract::ApiJson;
use crate::app::AppState;
use crate::auth::{csrf_token, Principal};
use crate::error::{Error, ErrorResponse};
use crate::ids::ConsoleSessionId;
use crate::relay::console::Overview;
use axum::extract::{ConnectInfo, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/login", post(login))
        .route("/admin/session", get(session))
        .route("/admin/session/refresh", post(refresh))
        .route("/admin/logout", post(logout))
        .route("/admin/overview", get(overview))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    /// The admin token.
    token: String,
}

/// A console login as the page sees it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConsoleSession {
    /// Unix ms; each refresh moves it (up to 12 hours after the login).
    expires_at: i64,
    /// Milliseconds from now to `expiresAt` (for a page whose clock is not
    /// the relay's).
    expires_in: i64,
    /// Send as `X-CSRF-Token` with every request.
    csrf_token: String,
}

impl ConsoleSession {
    fn new(expires_at: i64, token: &str) -> ConsoleSession {
        ConsoleSession {
            expires_at,
            expires_in: (expires_at - crate::store::now_ms()).max(0),
            csrf_token: csrf_token(token),
        }
    }
}

/// Logs in to the admin console with the admin token: a console session in
/// an HttpOnly cookie, and the CSRF token in the answer. Failures count
/// against the address like any wrong token.
#[utoipa::path(post, path = "/admin/login", tag = "public", request_body = LoginBody, responses(
    (status = 200, body = ConsoleSession),
    (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
    (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse), (status = 429, body = ErrorResponse),
    (status = 503, body = ErrorResponse),
))]
pub(crate) async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<crate::listener::PeerAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, Error> {
    crate::console::enabled(&state)?;
    const WRONG: Error = Error::Unauthorized("that is not the admin token");
    let ip = state.proxies.client_ip(peer.0.ip(), &headers);
    let token = body.token.trim();
    // A console session's own token is the admin's too, but it does not
    // open another one.
    if token.starts_with(ConsoleSessionId::PREFIX) {
        state.limits.failed_auth(Some(ip), None);
        return Err(WRONG);
    }
    let a = authenticate(&state, Some(ip), Some(token)).await?;
    if a.principal != Principal::Admin {
        state.limits.failed_auth(Some(ip), None);
        return Err(WRONG);
    }
    let login = state
        .relay
        .open_console_session(state.config.console.session_ms())
        .await?;
    let mut response = Json(ConsoleSession::new(login.expires_at, &login.token)).into_response();
    set_cookie(
        &state,
        peer,
        &headers,
        &mut response,
        &login.token,
        login.expires_at,
    );
    Ok(response)
}

/// The console session the request's cookie holds (its token and id).
pub(crate) struct ConsoleCookie {
    token: String,
    id: ConsoleSessionId,
}

impl axum::extract::FromRequestParts<AppState> for ConsoleCookie {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        crate::console::enabled(state)?;
        if bearer(&parts.headers)?.is_some() {
            return Err(Error::Forbidden(
                "this endpoint is the console's: it reads the console's login cookie, not a bearer token",
            ));
        }
        // The console's own cookie, whatever else the browser sends (a chat
        // session's cookie too: a reloaded page has no CSRF token yet to
        // say which it means).
        let token = super::auth::console_cookie(&parts.headers)
            .ok_or(Error::Unauthorized("no console login (POST /admin/login)"))?;
        super::auth::console_login(parts, state, token).await?;
        let id = token
            .split_once('.')
            .and_then(|(id, _)| ConsoleSessionId::parse(id))
            .ok_or(Error::Unauthorized(
                "the console cookie holds no console login",
            ))?;
        Ok(ConsoleCookie {
            token: token.to_owned(),
            id,
        })
    }
}

/// The console login of the request's cookie: until when, and its CSRF
/// token (for a page loaded after the login).
#[utoipa::path(get, path = "/admin/session", tag = "admin", security(("console" = [])), responses(
    (status = 200, body = ConsoleSession),
    (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse),
    (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn session(
    State(state): State<AppState>,
    login: ConsoleCookie,
) -> Result<Json<ConsoleSession>, Error> {
    let expires_at = state.relay.console_session_expiry(&login.id).await?;
    Ok(Json(ConsoleSession::new(expires_at, &login.token)))
}

/// Extends the console login by `[console] session_minutes` from now.
#[utoipa::path(post, path = "/admin/session/refresh", tag = "admin", security(("console" = [])), responses(
    (status = 200, body = ConsoleSession),
    (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse),
    (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<crate::listener::PeerAddr>,
    headers: HeaderMap,
    login: ConsoleCookie,
) -> Result<Response, Error> {
    let expires_at = state
        .relay
        .refresh_console_session(&login.id, state.config.console.session_ms())
        .await?;
    let mut response = Json(ConsoleSession::new(expires_at, &login.token)).into_response();
    set_cookie(
        &state,
        peer,
        &headers,
        &mut response,
        &login.token,
        expires_at,
    );
    Ok(response)
}

/// Ends the console login: its token stops working, the cookie is cleared.
#[utoipa::path(post, path = "/admin/logout", tag = "admin", security(("console" = [])), responses(
    (status = 204),
    (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse),
    (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    login: ConsoleCookie,
) -> Result<Response, Error> {
    state.relay.close_console_session(&login.id).await?;
    state.auth.forget(login.id.as_str());
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "clawrelay_console=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    Ok(response)
}

/// The relay at a glance: agents and their queues, dead letters, webhook
/// backlog, messages per minute over the last hour, database size, version.
#[utoipa::path(get, path = "/admin/overview", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, body = Overview),
    (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn overview(
    State(state): State<AppState>,
    _: AdminAuth,
) -> Result<Json<Overview>, Error> {
    Ok(Json(state.relay.overview().await?))
}

fn set_cookie(
    state: &AppState,
    peer: crate::listener::PeerAddr,
    headers: &HeaderMap,
    response: &mut Response,
    token: &str,
    expires_at: i64,
) {
    let secure = state.config.console.secure_cookie || state.proxies.https(peer.0.ip(), headers);
    super::auth::set_login_cookie(response, CONSOLE_COOKIE, token, expires_at, secure);
}
