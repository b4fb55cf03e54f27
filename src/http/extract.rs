//! Request extractors whose rejections are our JSON errors.

use crate::error::Error;
use crate::ids::IdempotencyKey;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

/// A JSON body. Read whatever the Content-Type says (curl's `-d` sends a form
/// type), bounded by `[limits] max_body_bytes`: unreadable JSON is a 400, a
/// missing or mistyped field a 422, an oversized body a 413.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let bytes = body_bytes(req, state).await?;
        parse(&bytes).map(ApiJson)
    }
}

/// A JSON body whose fields are all optional: an empty body (no bytes, or
/// only white space) is the default, as `{}` is; anything else as
/// [`ApiJson`].
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        parse(&bytes).map(OptionalJson)
    }
}

/// The body, bounded by `[limits] max_body_bytes`.
async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Error> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::TooLarge {
                code: "body_too_large",
                message: "the request body is over the limit ([limits] max_body_bytes)".into(),
            }
        } else {
            Error::bad_request("unreadable_body", rejection.body_text())
        }
    })
}

/// Unreadable JSON is a 400, a missing or mistyped field a 422.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            Error::invalid("invalid_field", e.to_string())
        } else {
            Error::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
        }
    })
}

/// A query string; a malformed one is a 400 that names the problem.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|rejection| Error::bad_request("invalid_query", rejection.body_text()))
    }
}

/// A path parameter; one that cannot be read (invalid UTF-8 after
/// percent-decoding, a wrong type) is a 400 in the usual JSON shape.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|rejection| Error::bad_request("invalid_path", rejection.body_text()))
    }
}

/// The `Idempotency-Key` header, if sent.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, Error> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(IdempotencyKey::parse)
        .map(Some)
        .ok_or_else(|| {
            Error::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
        })
}

/// A cursor from a query string: a non-negative integer.
pub fn cursor(value: Option<&str>) -> Result<Option<i64>, Error> {
    match value {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| Error::bad_request("invalid_cursor", format!("`{v}` is not a cursor"))),
    }
}

/// A page size: 1..=max, `default` when absent.
pub fn limit(value: Option<i64>, default: i64, max: i64) -> Result<i64, Error> {
    let n = value.unwrap_or(default);
    if !(1..=max).contains(&n) {
        return Err(Error::invalid(
            "invalid_limit",
            format!("`limit` must be 1 to {max}"),
        ));
    }
    Ok(n)
}

/// An optional id from a query string: absent is None, malformed is a 422
/// named `code` (an id that cannot exist never silently matches nothing).
pub fn query_id<T>(
    value: Option<String>,
    parse: fn(&str) -> Option<T>,
    code: &'static str,
    kind: &str,
) -> Result<Option<T>, Error> {
    value
        .map(|v| parse(&v).ok_or_else(|| Error::invalid(code, format!("`{v}` is not {kind}"))))
        .transpose()
}
