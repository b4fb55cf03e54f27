//! The one error type of the API and the domain. Each variant has one HTTP
//! status; the body is always `{"error":{"code","message"}}`. Internal errors
//! are logged with their cause and answered with a generic message.

use crate::store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400: the request could not be read (bad JSON, bad query string).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 401: no credentials, or wrong ones.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: valid credentials of a role that may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404: no such thing, or not this principal's.
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// 405: the path exists, the method does not.
    #[error("this endpoint does not take that method")]
    MethodNotAllowed,
    /// 409: conflicts with what is stored (an idempotency key reused differently).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// 413: a body or a field over its size limit.
    #[error("{message}")]
    TooLarge { code: &'static str, message: String },
    /// 416: a `Range` that lies past the end of what is downloaded.
    #[error("the range lies outside the {size} bytes there are")]
    RangeNotSatisfiable { size: u64 },
    /// 422: well-formed, but a field is missing or invalid.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// 429: over a rate limit; `Retry-After` says when to come back.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_secs: u64,
    },
    /// 503: a capacity limit is reached (e.g. WebSocket connections).
    #[error("{message}")]
    Overloaded { code: &'static str, message: String },
    /// 503: the storage cannot take the request now; nothing was written.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug. Logged, never described to the caller.
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The body of every error response (for the OpenAPI document; rendered by
/// `IntoResponse` below).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code, e.g. `invalid_json`, `queue_full`.
    pub code: String,
    /// What is wrong, for people.
    pub message: String,
}

impl Error {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Error {
        Error::Invalid {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Error {
        Error::NotFound {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Error {
        Error::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Error::Overloaded { .. } | Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest { code, .. }
            | Error::NotFound { code, .. }
            | Error::Conflict { code, .. }
            | Error::TooLarge { code, .. }
            | Error::Invalid { code, .. }
            | Error::Overloaded { code, .. } => code,
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::TooManyRequests { .. } => "rate_limited",
            Error::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            Error::Unavailable(_) => "storage_unavailable",
            Error::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        if e.is_unavailable() {
            Error::Unavailable(format!("storage unavailable, nothing was written: {e}"))
        } else {
            Error::Internal(e.to_string())
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let message = match &self {
            Error::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                "internal error".to_owned()
            }
            Error::Unavailable(cause) => {
                tracing::warn!(%cause, "storage unavailable");
                self.to_string()
            }
            other => other.to_string(),
        };
        let body = json!({ "error": { "code": self.code(), "message": message } });
        let mut response = (self.status(), Json(body)).into_response();
        if let Error::TooManyRequests {
            retry_after_secs, ..
        } = self
        {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after_secs),
            );
        }
        if let Error::RangeNotSatisfiable { size } = self {
            if let Ok(v) = axum::http::HeaderValue::from_str(&format!("bytes */{size}")) {
                response
                    .headers_mut()
                    .insert(axum::http::header::CONTENT_RANGE, v);
            }
        }
        response
    }
}
