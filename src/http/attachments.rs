//! `POST /attachments` (an app, a user session or an agent uploads a file)
//! and `GET /attachments/:id` (whoever may read it downloads it, with
//! `Range`, `ETag` and safe headers).

use super::auth::AnyAuth;
use super::extract::{ApiPath, ApiQuery};
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{Error, ErrorResponse};
use crate::ids::AttachmentId;
use crate::model::Attachment;
use crate::relay::attachments::{inline, party_of, UploadMeta};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;

/// Room for a multipart form's boundaries and part headers around the file.
const FORM_OVERHEAD: usize = 64 * 1024;

pub fn router(config: &crate::config::Config) -> Router<AppState> {
    // A raw upload is read as a stream and held to `[attachments] max_bytes`
    // chunk by chunk; a multipart form as a whole is held to that plus room
    // for its framing (other parts included).
    let form_limit = usize::try_from(config.attachments.max_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(FORM_OVERHEAD);
    Router::new()
        .route(
            "/attachments",
            post(upload).layer(DefaultBodyLimit::max(form_limit)),
        )
        .route("/attachments/{id}", get(download))
}

/// The request rate limit of whoever sends the request.
fn check_rate(state: &AppState, who: &Principal) -> Result<(), Error> {
    match who {
        Principal::Admin => Ok(()),
        Principal::App(app) => state.limits.check_app(app),
        Principal::User(s) => state.limits.check_app(&s.app),
        Principal::Client(c) => state.limits.check_agent(c),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
pub(crate) struct UploadQuery {
    /// The file's name (else the `X-Filename` header, percent-encoded UTF-8,
    /// or a multipart part's filename). Path parts and control characters
    /// are removed.
    filename: Option<String>,
}

/// Uploads a file: the raw bytes as the body, or `multipart/form-data` with a
/// `file` part. The type is sniffed from the bytes; a claimed image, audio
/// or video type the bytes do not match is refused. Reference the answer's
/// `attachmentId` in the `attachments` of `/inbound`, `/send` or their
/// WebSocket methods.
#[utoipa::path(post, path = "/attachments", tag = "any", security(("bearer" = [])), params(UploadQuery,
        ("X-Filename" = Option<String>, Header, description = "The file's name, percent-encoded UTF-8")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
    (status = 201, body = Uploaded),
    (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse), (status = 429, body = ErrorResponse),
    (status = 503, body = ErrorResponse),
))]
pub(crate) async fn upload(
    State(state): State<AppState>,
    AnyAuth(who): AnyAuth,
    ApiQuery(q): ApiQuery<UploadQuery>,
    request: Request,
) -> Result<(StatusCode, Json<Uploaded>), Error> {
    let uploader = party_of(&who).ok_or(Error::Forbidden(
        "uploads need an app token, a user session or a client token",
    ))?;
    check_rate(&state, &who)?;
    let headers = request.headers();
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let named = q.filename.or_else(|| {
        headers
            .get("x-filename")
            .and_then(|v| v.to_str().ok())
            .map(|v| percent_decode_str(v).decode_utf8_lossy().into_owned())
    });
    let multipart = declared.as_deref().is_some_and(|t| {
        t.trim_start()
            .to_ascii_lowercase()
            .starts_with("multipart/form-data")
    });
    let relay = &state.relay;
    let attachment = if multipart {
        let mut form = Multipart::from_request(request, &state)
            .await
            .map_err(multipart_error)?;
        let field = loop {
            let field = form.next_field().await.map_err(multipart_error)?;
            match field {
                Some(f) if f.name() == Some("file") || f.file_name().is_some() => break f,
                Some(_) => continue,
                None => {
                    return Err(Error::invalid(
                        "missing_file",
                        "the form has no `file` part",
                    ))
                }
            }
        };
        let meta = UploadMeta {
            name: named.or_else(|| field.file_name().map(str::to_owned)),
            declared: field.content_type().map(str::to_owned),
            // The part's size is not known before it is read.
            length: None,
        };
        relay.upload(uploader, meta, bytes_of(field)).await?
    } else {
        let meta = UploadMeta {
            name: named,
            declared,
            length,
        };
        relay
            .upload(uploader, meta, request.into_body().into_data_stream())
            .await?
    };
    Ok((StatusCode::CREATED, Json(Uploaded::from(attachment))))
}

/// A form that cannot be read: too large for the limit (413), or malformed.
fn multipart_error(e: impl IntoResponse + std::fmt::Display) -> Error {
    let text = e.to_string();
    if e.into_response().status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::TooLarge {
            code: "attachment_too_large",
            message: "the form is larger than [attachments] max_bytes allows".into(),
        }
    } else {
        Error::bad_request("invalid_multipart", text)
    }
}

/// A multipart part as a stream of bytes.
fn bytes_of(
    field: axum::extract::multipart::Field<'_>,
) -> impl Stream<Item = Result<axum::body::Bytes, String>> + Unpin + '_ {
    Box::pin(futures_util::stream::unfold(
        field,
        |mut field| async move {
            match field.chunk().await {
                Ok(Some(bytes)) => Some((Ok(bytes), field)),
                Ok(None) => None,
                Err(e) => Some((Err(e.body_text()), field)),
            }
        },
    ))
}

/// What an upload answers: the attachment, under the field names of the
/// upload API (`attachmentId`) and of messages (`id`, `url`).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Uploaded {
    attachment_id: AttachmentId,
    #[serde(flatten)]
    attachment: Attachment,
}

impl From<Attachment> for Uploaded {
    fn from(attachment: Attachment) -> Self {
        Uploaded {
            attachment_id: attachment.id.clone(),
            attachment,
        }
    }
}

/// Downloads an attachment: for its uploader, the app, user and agent of a
/// conversation with a message that carries it, and the admin (anyone
/// else: 404). Supports one `Range` (with `If-Range`) and `If-None-Match`.
#[utoipa::path(get, path = "/attachments/{id}", tag = "any", security(("bearer" = [])),
    params(("id" = String, Path, description = "Attachment id"),
        ("Range" = Option<String>, Header, description = "One byte range, e.g. bytes=0-1023")),
    responses(
    (status = 200, description = "The bytes", content_type = "application/octet-stream"),
    (status = 206, description = "The requested range", content_type = "application/octet-stream"),
    (status = 304, description = "Not modified (If-None-Match)"),
    (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
    (status = 416, body = ErrorResponse), (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse),
))]
pub(crate) async fn download(
    State(state): State<AppState>,
    AnyAuth(viewer): AnyAuth,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    check_rate(&state, &viewer)?;
    let id = AttachmentId::parse(&id)
        .ok_or_else(|| Error::not_found("attachment_not_found", format!("no attachment {id}")))?;
    let d = state.relay.attachment(&viewer, &id).await?;
    let a = &d.attachment;
    let size = a.size as u64;
    let etag = format!("\"{}\"", a.sha256);
    let mut response = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, "private, no-cache")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; sandbox",
        )
        .header(header::CONTENT_DISPOSITION, disposition(a));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if fresh {
        return Ok(response
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .map_err(|e| Error::Internal(e.to_string()))?
            .into_response());
    }
    let content_type = if a.mime == "text/plain" {
        "text/plain; charset=utf-8".to_owned()
    } else {
        a.mime.clone()
    };
    response = response.header(header::CONTENT_TYPE, content_type);
    let (status, range) = match requested_range(&headers, &etag, size)? {
        Some(r) => {
            response = response.header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{size}", r.start(), r.end()),
            );
            (StatusCode::PARTIAL_CONTENT, r)
        }
        None => (StatusCode::OK, 0..=size.saturating_sub(1)),
    };
    let length = range.end() - range.start() + 1;
    let body = Body::from_stream(state.relay.attachment_bytes(&d, range));
    response
        .status(status)
        .header(header::CONTENT_LENGTH, length)
        .body(body)
        .map_err(|e| Error::Internal(e.to_string()))
}

/// The one byte range to send, if a satisfiable single range was asked for
/// (and `If-Range`, when sent, names this content). A malformed `Range` or
/// several ranges are answered with the whole file, as HTTP allows; a range
/// past the end is a 416.
fn requested_range(
    headers: &HeaderMap,
    etag: &str,
    size: u64,
) -> Result<Option<std::ops::RangeInclusive<u64>>, Error> {
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    if let Some(if_range) = headers.get(header::IF_RANGE) {
        if if_range.as_bytes() != etag.as_bytes() {
            return Ok(None);
        }
    }
    let Ok(parsed) = http_range_header::parse_range_header(range) else {
        return Ok(None);
    };
    match parsed.validate(size) {
        Ok(ranges) if ranges.len() == 1 => Ok(ranges.into_iter().next()),
        Ok(_) => Ok(None),
        Err(_) => Err(Error::RangeNotSatisfiable { size }),
    }
}

/// `Content-Disposition`: inline for the few image types a browser shows
/// safely, a download for everything else; the name as an ASCII fallback
/// and in full (RFC 6266 `filename*`).
fn disposition(a: &Attachment) -> HeaderValue {
    let kind = if inline(&a.mime) {
        "inline"
    } else {
        "attachment"
    };
    let ascii: String = a
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let full = utf8_percent_encode(&a.name, NON_ALPHANUMERIC);
    HeaderValue::from_str(&format!(
        "{kind}; filename=\"{ascii}\"; filename*=UTF-8''{full}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}
