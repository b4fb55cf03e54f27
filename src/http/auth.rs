//! The extractors that say what access a handler needs, over the
//! credentials of [`crate::auth`]: the bearer token, the client's address
//! (through trusted proxies), failed-authentication limits, then the role.

use crate::app::AppState;
use crate::auth::{presented_id, Authenticated, Lane, Principal};
use crate::error::Error;
use crate::ids::{AppId, ClientId};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use std::net::IpAddr;

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
    let ip = client_ip(state, parts);
    let token = bearer(&parts.headers)?;
    authenticate(state, ip, token).await
}

/// Requires the admin token.
pub struct AdminAuth;

/// Requires a client (agent instance) token.
pub struct ClientAuth(pub ClientId);

/// Requires an app token; with `[inbound] public = true`, no token at all
/// means the built-in public app. `.1` is the version of the credential
/// (0 for the public app), for streams that close when it changes.
pub struct AppAuth(pub AppId, pub i64);

/// Any valid token.
pub struct AnyAuth(pub Principal);

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
        let (app, version) = if bearer(&parts.headers)?.is_none() && state.config.inbound.public {
            (AppId::public(), 0)
        } else {
            let a = principal(parts, state).await?;
            match a.principal {
                Principal::App(id) => (id, a.version),
                _ => return Err(Error::Forbidden("this endpoint needs an app token")),
            }
        };
        state.limits.check_app(&app)?;
        Ok(AppAuth(app, version))
    }
}

impl FromRequestParts<AppState> for AnyAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        Ok(AnyAuth(principal(parts, state).await?.principal))
    }
}
