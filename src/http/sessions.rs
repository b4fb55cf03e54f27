//! User sessions over HTTP: an app opens one for its user (`POST /sessions`),
//! a built-in account logs in (`POST /login`, the session in an HttpOnly
//! cookie), and a session reads itself, extends itself and ends
//! (`GET /session`, `POST /sessions/refresh`, `POST /logout`).

use super::auth::{AppAuth, SessionAuth, SESSION_COOKIE};
use super::extract::ApiJson;
use crate::app::AppState;
use crate::auth::{csrf_token, Lane, UserSession};
use crate::error::{Error, ErrorResponse};
use crate::ids::{AppId, SessionId, UserId};
use crate::relay::sessions::{check_account_name, IssuedSession};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sessions", post(open))
        .route("/sessions/refresh", post(refresh))
        .route("/session", get(whoami))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/signup", post(signup))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct OpenBody {
    /// The app's name for its user: whom the session speaks for.
    user_id: String,
    /// Lifetime in seconds (default `[sessions] ttl_secs`, at most `max_ttl_secs`).
    ttl_secs: Option<u64>,
}

/// Opens a session for one of the app's users; the token is shown once.
#[utoipa::path(post, path = "/sessions", tag = "app", security(("bearer" = [])), request_body = OpenBody, responses(
    (status = 200, body = IssuedSession),
    (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse), (status = 429, body = ErrorResponse),
    (status = 503, body = ErrorResponse),
))]
pub(crate) async fn open(
    State(state): State<AppState>,
    AppAuth(app): AppAuth,
    ApiJson(body): ApiJson<OpenBody>,
) -> Result<Json<IssuedSession>, Error> {
    let user = UserId::parse(&body.user_id)
        .map_err(|why| Error::invalid("invalid_user_id", format!("`userId` {why}")))?;
    let ttl = ttl_ms(body.ttl_secs)?;
    Ok(Json(state.relay.open_session(&app, user, None, ttl).await?))
}

fn ttl_ms(secs: Option<u64>) -> Result<Option<i64>, Error> {
    secs.map(|s| {
        i64::try_from(s)
            .ok()
            .and_then(|s| s.checked_mul(1000))
            .ok_or_else(|| Error::invalid("invalid_ttl", "`ttlSecs` is too large"))
    })
    .transpose()
}

/// A session as its holder sees it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionInfo {
    session_id: SessionId,
    app_id: AppId,
    user_id: UserId,
    /// Unix ms.
    expires_at: i64,
    /// For a login (cookie): send as `X-CSRF-Token` with every POST.
    csrf_token: Option<String>,
}

impl SessionInfo {
    fn new(s: UserSession, expires_at: i64, cookie: Option<&str>) -> SessionInfo {
        SessionInfo {
            session_id: s.session,
            app_id: s.app,
            user_id: s.user,
            expires_at,
            csrf_token: cookie.map(csrf_token),
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RefreshBody {
    /// New lifetime from now, in seconds (default `[sessions] ttl_secs`).
    ttl_secs: Option<u64>,
}

/// Extends a live session (its token or the login cookie) from now.
#[utoipa::path(post, path = "/sessions/refresh", tag = "user", security(("bearer" = [])), request_body = RefreshBody, responses(
    (status = 200, body = SessionInfo),
    (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    (status = 422, body = ErrorResponse), (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    SessionAuth { session, cookie }: SessionAuth,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<crate::listener::PeerAddr>,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Response, Error> {
    let ttl = ttl_ms(body.ttl_secs)?;
    let expires_at = state.relay.refresh_session(&session, ttl).await?;
    let info = SessionInfo::new(session, expires_at, cookie.as_deref());
    let mut response = Json(info).into_response();
    if let Some(token) = cookie {
        let secure = secure(&state, peer, &headers);
        set_cookie(&mut response, &token, expires_at, secure);
    }
    Ok(response)
}

/// Who this session is, until when (and, for a login, its CSRF token).
#[utoipa::path(get, path = "/session", tag = "user", security(("bearer" = [])), responses(
    (status = 200, body = SessionInfo),
    (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 429, body = ErrorResponse),
    (status = 503, body = ErrorResponse),
))]
pub(crate) async fn whoami(
    State(state): State<AppState>,
    SessionAuth { session, cookie }: SessionAuth,
) -> Result<Json<SessionInfo>, Error> {
    let expires_at = state.relay.session_expiry(&session.session).await?;
    Ok(Json(SessionInfo::new(
        session,
        expires_at,
        cookie.as_deref(),
    )))
}

/// Ends the session: its token stops working, its streams close, the cookie is cleared.
#[utoipa::path(post, path = "/logout", tag = "user", security(("bearer" = [])), responses(
    (status = 204),
    (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 429, body = ErrorResponse),
    (status = 503, body = ErrorResponse),
))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    SessionAuth { session, .. }: SessionAuth,
) -> Result<Response, Error> {
    state.relay.close_session(&session.session).await?;
    state.auth.forget(session.session.as_str());
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "clawrelay_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    Ok(response)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    name: String,
    password: String,
}

/// Logs a built-in account in: the session goes in an HttpOnly cookie; the
/// answer carries the CSRF token the page sends with every POST.
#[utoipa::path(post, path = "/login", tag = "public", request_body = LoginBody, responses(
    (status = 200, body = SessionInfo),
    (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 413, body = ErrorResponse),
    (status = 422, body = ErrorResponse), (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<crate::listener::PeerAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, Error> {
    const WRONG: Error = Error::Unauthorized("wrong name or password");
    let ip = state.proxies.client_ip(peer.0.ip(), &headers);
    // Failures count against the address and the name (bounded: a long
    // name counts as one).
    let key = format!("login:{}", truncate(&body.name, 64));
    let blocked = state.limits.blocked(Some(ip), &key);
    let lane = if blocked.is_some() {
        Lane::Suspect
    } else {
        Lane::Normal
    };
    let account = match check_account_name(&body.name) {
        Ok(_) => state.relay.account(&body.name).await?,
        Err(_) => None,
    };
    let hash = account.as_ref().map(|a| a.password_hash.as_str());
    let matched = state
        .auth
        .check_password(&body.password, hash, lane)
        .await?;
    let account = match account {
        Some(a) if matched && a.disabled_at.is_none() => a,
        _ => {
            state.limits.failed_auth(Some(ip), Some(&key));
            return Err(blocked.unwrap_or(WRONG));
        }
    };
    let user = UserId::from_db(account.name);
    let issued = state
        .relay
        .open_session(&account.app, user, Some(account.id), None)
        .await?;
    Ok(logged_in(&state, peer, &headers, issued))
}

/// `POST /signup` (with `[webchat] signup_app`): the body of a login.
#[utoipa::path(post, path = "/signup", tag = "public", request_body = LoginBody, responses(
    (status = 200, body = SessionInfo),
    (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse),
    (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse), (status = 429, body = ErrorResponse),
    (status = 503, body = ErrorResponse),
))]
pub(crate) async fn signup(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<crate::listener::PeerAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, Error> {
    let Some(app) = AppId::parse_any(&state.config.webchat.signup_app) else {
        return Err(Error::not_found(
            "signup_disabled",
            "sign-up is off ([webchat] signup_app is not set)",
        ));
    };
    // Each sign-up counts like a failed login of its address: one address
    // cannot create accounts faster than it could guess passwords.
    let ip = state.proxies.client_ip(peer.0.ip(), &headers);
    if let Some(blocked) = state.limits.blocked(Some(ip), "signup") {
        return Err(blocked);
    }
    state.limits.failed_auth(Some(ip), None);
    let account = state
        .relay
        .create_account(&app, &body.name, body.password)
        .await?;
    let user = UserId::from_db(account.name);
    let issued = state
        .relay
        .open_session(&app, user, Some(account.id), None)
        .await?;
    Ok(logged_in(&state, peer, &headers, issued))
}

/// The answer to a login: the session's token in the cookie, not in the body.
fn logged_in(
    state: &AppState,
    peer: crate::listener::PeerAddr,
    headers: &HeaderMap,
    issued: IssuedSession,
) -> Response {
    let info = SessionInfo {
        session_id: issued.session_id,
        app_id: issued.app_id,
        user_id: issued.user_id,
        expires_at: issued.expires_at,
        csrf_token: Some(csrf_token(&issued.token)),
    };
    let mut response = Json(info).into_response();
    let secure = secure(state, peer, headers);
    set_cookie(&mut response, &issued.token, issued.expires_at, secure);
    response
}

/// Whether the cookie is marked `Secure`: configured, or the request came
/// over https through a trusted proxy.
fn secure(state: &AppState, peer: crate::listener::PeerAddr, headers: &HeaderMap) -> bool {
    state.config.webchat.secure_cookie || state.proxies.https(peer.0.ip(), headers)
}

fn set_cookie(response: &mut Response, token: &str, expires_at: i64, secure: bool) {
    super::auth::set_login_cookie(response, SESSION_COOKIE, token, expires_at, secure);
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
