//! The extractors that say what access a handler needs, over the
//! credentials of [`crate::auth`]: the bearer token (or a login's session
//! cookie), the client's address (through trusted proxies),
//! failed-authentication limits, then the role.
//!
//! A request that authenticates with a login cookie (the chat's session, or
//! the admin console's) is one a browser may have been tricked into
//! sending, so it must prove it comes from the relay's own page: it is
//! refused when the browser says it is cross-site (`Sec-Fetch-Site`), and an
//! unsafe method must carry `X-CSRF-Token`, a value derived from the token
//! in the cookie that only a page able to read the login response (or
//! `GET /session`, `GET /admin/session`) knows. The cookies themselves are
//! `SameSite=Strict`, so most browsers do not send them cross-site at all.

use crate::app::AppState;
use crate::auth::{csrf_token, presented_id, Authenticated, Lane, Principal, UserSession};
use crate::error::Error;
use crate::ids::{AppId, ClientId};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use std::net::IpAddr;

/// The cookie a login sets: the session token, HttpOnly.
pub const SESSION_COOKIE: &str = "clawrelay_session";

/// The cookie an admin console login sets: the console session's token,
/// HttpOnly.
pub const CONSOLE_COOKIE: &str = "clawrelay_console";

/// The value of cookie `name` in the `Cookie` header, if one is there.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// Sets login cookie `name` to `token` until `expires_at` (Unix ms):
/// HttpOnly, SameSite=Strict, `Secure` when asked.
pub fn set_login_cookie(
    response: &mut axum::response::Response,
    name: &str,
    token: &str,
    expires_at: i64,
    secure: bool,
) {
    // Rounded up: the cookie never goes before the login does.
    let max_age = ((expires_at - crate::store::now_ms() + 999) / 1000).max(0);
    let value = format!(
        "{name}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    // The token is our own ASCII; a value a header cannot hold is impossible.
    if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
}

/// The console login's token in the `Cookie` header, if one is there.
pub fn console_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, CONSOLE_COOKIE)
}

/// The credential a request presents: `Authorization` wins over the
/// cookies. A browser logged in to both the chat and the console sends
/// both cookies: the console's is the one meant when the request carries
/// its CSRF token (the console sends it with every request).
#[derive(Clone, Copy)]
enum Presented<'a> {
    Nothing,
    Bearer(&'a str),
    Cookie(&'a str),
    Console(&'a str),
}

fn presented(headers: &HeaderMap) -> Result<Presented<'_>, Error> {
    if let Some(token) = bearer(headers)? {
        return Ok(Presented::Bearer(token));
    }
    Ok(
        match (
            cookie(headers, SESSION_COOKIE),
            cookie(headers, CONSOLE_COOKIE),
        ) {
            (Some(session), Some(console)) => {
                if csrf_matches(headers, console) {
                    Presented::Console(console)
                } else {
                    Presented::Cookie(session)
                }
            }
            (Some(session), None) => Presented::Cookie(session),
            (None, Some(console)) => Presented::Console(console),
            (None, None) => Presented::Nothing,
        },
    )
}

/// Whether the request's `X-CSRF-Token` is the one of session token `token`.
fn csrf_matches(headers: &HeaderMap, token: &str) -> bool {
    let sent = headers
        .get("x-csrf-token")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    crate::auth::constant_time_eq(sent, csrf_token(token).as_bytes())
}

/// What a request authenticated by a cookie must also show (see the
/// module's documentation); `from` says where the page gets its CSRF token.
fn check_cookie_request(parts: &Parts, token: &str, from: &'static str) -> Result<(), Error> {
    let cross_site = parts
        .headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site");
    if cross_site {
        return Err(Error::Forbidden(
            "a login cookie is not accepted on cross-site requests",
        ));
    }
    if !parts.method.is_safe() && !csrf_matches(&parts.headers, token) {
        return Err(Error::Forbidden(from));
    }
    Ok(())
}

/// The bearer token of `Authorization`, if the header is there.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, Error> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Error::Unauthorized("malformed Authorization header"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err(Error::Unauthorized(
            "expected `Authorization: Bearer <token>`",
        )),
    }
}

/// The client's address: the TCP peer, or the one a trusted proxy names.
pub fn client_ip(state: &AppState, parts: &Parts) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<crate::listener::PeerAddr>>()?
        .0
         .0
        .ip();
    Some(state.proxies.client_ip(peer, &parts.headers))
}

/// Verifies `token` for a request from `ip`. Failures count against the
/// address and the presented id; a source over its limit is still verified
/// (a valid token is never refused for someone else's failures), in the
/// narrow lane, and its failures are answered 429.
pub async fn authenticate(
    state: &AppState,
    ip: Option<IpAddr>,
    token: Option<&str>,
) -> Result<Authenticated, Error> {
    let Some(token) = token else {
        state.limits.failed_auth(ip, None);
        return Err(Error::Unauthorized("missing bearer token"));
    };
    let id = presented_id(token);
    let blocked = state.limits.blocked(ip, id);
    let lane = if blocked.is_some() {
        Lane::Suspect
    } else {
        Lane::Normal
    };
    match state.auth.authenticate(token, lane).await {
        Err(Error::Unauthorized(m)) => {
            state.limits.failed_auth(ip, Some(id));
            Err(blocked.unwrap_or(Error::Unauthorized(m)))
        }
        other => other,
    }
}

async fn principal(parts: &Parts, state: &AppState) -> Result<Authenticated, Error> {
    principal_of(parts, state, presented(&parts.headers)?).await
}

/// [`principal`] for what the request was already found to present.
async fn principal_of(
    parts: &Parts,
    state: &AppState,
    presented: Presented<'_>,
) -> Result<Authenticated, Error> {
    let ip = client_ip(state, parts);
    match presented {
        Presented::Bearer(token) if token.starts_with(crate::ids::ConsoleSessionId::PREFIX) => {
            state.limits.failed_auth(ip, None);
            Err(Error::Unauthorized(
                "a console login's token works only in the console's cookie",
            ))
        }
        Presented::Bearer(token) => authenticate(state, ip, Some(token)).await,
        Presented::Cookie(token) => {
            check_cookie_request(
                parts,
                token,
                "a request authenticated by the session cookie needs the X-CSRF-Token header (from POST /login or GET /session)",
            )?;
            let a = authenticate(state, ip, Some(token)).await?;
            // The cookie only ever carries a session; anything else in it is not a login.
            match a.principal {
                Principal::User(_) => Ok(a),
                _ => Err(Error::Unauthorized("the session cookie holds no session")),
            }
        }
        Presented::Console(token) => console_login(parts, state, token).await,
        Presented::Nothing => authenticate(state, ip, None).await,
    }
}

/// The admin, by the console's login cookie holding `token`: what such a
/// request must also show (see the module's documentation), then the
/// console session itself.
pub async fn console_login(
    parts: &Parts,
    state: &AppState,
    token: &str,
) -> Result<Authenticated, Error> {
    if !state.config.console.enabled {
        return Err(Error::Unauthorized(
            "the admin console is off ([console] enabled = false)",
        ));
    }
    check_cookie_request(
        parts,
        token,
        "a request authenticated by the console cookie needs the X-CSRF-Token header (from POST /admin/login or GET /admin/session)",
    )?;
    let ip = client_ip(state, parts);
    let well_formed = token
        .split_once('.')
        .is_some_and(|(id, _)| crate::ids::ConsoleSessionId::parse(id).is_some());
    if !well_formed {
        state.limits.failed_auth(ip, None);
        return Err(Error::Unauthorized(
            "the console cookie holds no console login",
        ));
    }
    let a = authenticate(state, ip, Some(token)).await?;
    match a.principal {
        Principal::Admin => Ok(a),
        _ => Err(Error::Unauthorized(
            "the console cookie holds no console login",
        )),
    }
}

/// What a user-side request presents: the console's cookie is the admin's
/// and says nothing for an app or a user, so it counts as nothing there.
fn presented_user_side(headers: &HeaderMap) -> Result<Presented<'_>, Error> {
    Ok(match presented(headers)? {
        Presented::Console(_) => Presented::Nothing,
        other => other,
    })
}

/// Requires the admin token.
pub struct AdminAuth;

/// Requires a client (agent instance) token.
pub struct ClientAuth(pub ClientId);

/// Requires an app token (never the public app, which has none).
pub struct AppAuth(pub AppId);

/// Any valid token.
pub struct AnyAuth(pub Principal);

/// The user-facing side: an app token (or, with `[inbound] public = true`,
/// none: the public app), or a user session, which is held to its user.
/// `.1` is the version of the credential (0 for the public app), for streams
/// that close when it changes.
pub struct AppSideAuth(pub Principal, pub i64);

/// Requires a user session (bearer token or the login cookie).
pub struct SessionAuth {
    pub session: UserSession,
    /// The token, when it came in the cookie (a login's page): what the
    /// CSRF token is derived from and the cookie is set again with.
    pub cookie: Option<String>,
}

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        match principal(parts, state).await?.principal {
            Principal::Admin => Ok(AdminAuth),
            _ => Err(Error::Forbidden("this endpoint needs the admin token")),
        }
    }
}

impl FromRequestParts<AppState> for ClientAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        match principal(parts, state).await?.principal {
            Principal::Client(id) => {
                state.limits.check_agent(&id)?;
                Ok(ClientAuth(id))
            }
            _ => Err(Error::Forbidden("this endpoint needs a client token")),
        }
    }
}

impl FromRequestParts<AppState> for AppAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        match principal(parts, state).await?.principal {
            Principal::App(app) => {
                state.limits.check_app(&app)?;
                Ok(AppAuth(app))
            }
            _ => Err(Error::Forbidden("this endpoint needs an app token")),
        }
    }
}

impl FromRequestParts<AppState> for AppSideAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let presented = presented_user_side(&parts.headers)?;
        if matches!(presented, Presented::Nothing) && state.config.inbound.public {
            state.limits.check_app(&AppId::public())?;
            return Ok(AppSideAuth(Principal::App(AppId::public()), 0));
        }
        let a = principal_of(parts, state, presented).await?;
        match &a.principal {
            Principal::App(app) => state.limits.check_app(app)?,
            Principal::User(s) => state.limits.check_app(&s.app)?,
            _ => {
                return Err(Error::Forbidden(
                    "this endpoint needs an app token or a user session",
                ))
            }
        }
        Ok(AppSideAuth(a.principal, a.version))
    }
}

impl FromRequestParts<AppState> for SessionAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let presented = presented_user_side(&parts.headers)?;
        let cookie = match presented {
            Presented::Cookie(token) => Some(token.to_owned()),
            _ => None,
        };
        let a = principal_of(parts, state, presented).await?;
        match a.principal {
            Principal::User(session) => Ok(SessionAuth { session, cookie }),
            _ => Err(Error::Forbidden("this endpoint needs a user session")),
        }
    }
}

impl FromRequestParts<AppState> for AnyAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        Ok(AnyAuth(principal(parts, state).await?.principal))
    }
}
