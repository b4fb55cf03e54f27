//! The OpenAI-compatible door: `POST /v1/chat/completions` and `GET
//! /v1/models`, so the front ends and SDKs built on OpenAI's Chat
//! Completions API talk to the agents through the relay (README, "OpenAI-
//! compatible API"). Authenticated by `Authorization: Bearer` only: an app
//! token (the end user is the request's `user`) or a user session. Errors
//! come in OpenAI's shape. The domain is `relay::completions`.

use super::auth::{authenticate, bearer, client_ip};
use super::extract::idempotency_key;
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::Error;
use crate::ids::{ConversationId, UserId};
use crate::model::Message;
use crate::relay::attachments::party_of;
use crate::relay::completions::{Ask, End, File, Progress, Which};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::watch;

/// The header that names the conversation a request continues (and, in
/// answers, the conversation it went to).
pub const CONVERSATION_HEADER: &str = "x-clawrelay-conversation";

/// The model that lets the relay pick the agent.
pub const ANY_AGENT: &str = "clawrelay";

pub fn router(config: &crate::config::Config) -> Router<AppState> {
    if !config.openai.enabled {
        return Router::new();
    }
    // Images come inline (base64 `data:` URLs): room for the most a
    // message may carry, as base64, beside the rest of the request.
    let per_file = config.attachments.max_bytes.saturating_mul(4) / 3 + 4;
    let limit = per_file
        .saturating_mul(config.attachments.max_per_message as u64)
        .saturating_add(config.limits.max_body_bytes as u64);
    Router::new()
        .route(
            "/v1/chat/completions",
            post(completions).layer(DefaultBodyLimit::max(
                usize::try_from(limit).unwrap_or(usize::MAX),
            )),
        )
        .route("/v1/models", get(models))
}

/// An error in OpenAI's shape: `{"error":{"message","type","param","code"}}`.
/// `retry: false` adds `x-should-retry: false`, for the SDKs that retry
/// 409, 429 and 5xx by themselves, where a retry would start a second turn.
pub struct OpenAiError {
    error: Error,
    param: Option<&'static str>,
    retry: bool,
}

impl From<Error> for OpenAiError {
    fn from(error: Error) -> Self {
        OpenAiError {
            error,
            param: None,
            retry: true,
        }
    }
}

impl OpenAiError {
    fn invalid(param: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        OpenAiError {
            error: Error::bad_request(code, message),
            param: Some(param),
            retry: true,
        }
    }

    fn no_retry(mut self) -> Self {
        self.retry = false;
        self
    }
}

/// OpenAI's error `type` for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        409 => "conflict_error",
        429 => "rate_limit_error",
        504 => "timeout_error",
        _ => "server_error",
    }
}

/// The error object (also an error event in a stream).
fn error_body(error: &Error, param: Option<&str>) -> Value {
    let message = match error {
        Error::Internal(cause) => {
            tracing::error!(%cause, "internal error");
            "internal error".to_owned()
        }
        other => other.to_string(),
    };
    json!({"error": {
        "message": message,
        "type": error_type(status_of(error)),
        "param": param,
        "code": error.code(),
    }})
}

/// Our status, except that a field we cannot read is a 400 as OpenAI
/// answers it (not our 422), and no answer in time a 504.
fn status_of(error: &Error) -> StatusCode {
    match error {
        Error::Overloaded {
            code: "reply_timeout",
            ..
        } => StatusCode::GATEWAY_TIMEOUT,
        e => match e.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        },
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let status = status_of(&self.error);
        let body = error_body(&self.error, self.param);
        let mut response = (status, Json(body)).into_response();
        let h = response.headers_mut();
        if let Error::TooManyRequests {
            retry_after_secs, ..
        } = self.error
        {
            h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        if !self.retry {
            h.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        response
    }
}

/// `Authorization: Bearer` with an app token or a user session (never the
/// login cookie, never the public app), within the app's request rate.
pub struct BearerAuth(pub Principal);

impl FromRequestParts<AppState> for BearerAuth {
    type Rejection = OpenAiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, OpenAiError> {
        let token = bearer(&parts.headers)?;
        let ip = client_ip(state, parts);
        let principal = authenticate(state, ip, token).await?.principal;
        match &principal {
            Principal::App(app) => state.limits.check_app(app)?,
            Principal::User(s) => state.limits.check_app(&s.app)?,
            _ => {
                return Err(Error::Forbidden(
                    "this endpoint needs an app token or a user session's token",
                )
                .into())
            }
        }
        Ok(BearerAuth(principal))
    }
}

/// `GET /v1/models`: `clawrelay` (any agent) and, unless `[openai]
/// list_agents = false`, each agent's name.
#[utoipa::path(get, path = "/v1/models", tag = "app", security(("bearer" = [])), responses(
    (status = 200, description = "OpenAI's model list", body = Object),
    (status = 401, description = "OpenAI's error shape", body = Object),
    (status = 403, description = "OpenAI's error shape", body = Object),
    (status = 429, description = "OpenAI's error shape", body = Object),
    (status = 503, description = "OpenAI's error shape", body = Object),
))]
pub(crate) async fn models(
    State(state): State<AppState>,
    _auth: BearerAuth,
) -> Result<Json<Value>, OpenAiError> {
    let mut names = vec![ANY_AGENT.to_owned()];
    if state.config.openai.list_agents {
        names.extend(
            state
                .relay
                .agent_names()
                .await?
                .into_iter()
                .filter(|n| n != ANY_AGENT),
        );
    }
    let data: Vec<Value> = names
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "clawrelay"}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// Parameters that ask for what an agent's turn cannot give.
const REFUSED: [&str; 7] = [
    "tools",
    "functions",
    "audio",
    "logprobs",
    "top_logprobs",
    "prediction",
    "web_search_options",
];

/// A Chat Completions request, read.
struct Request {
    model: String,
    stream: bool,
    user: Option<String>,
    which: Which,
    text: String,
    files: Vec<File>,
}

/// Reads the request body; what cannot be honoured is a 400 naming it.
fn read_request(body: &[u8], named: Option<ConversationId>) -> Result<Request, OpenAiError> {
    let body: Value = serde_json::from_slice(body).map_err(|e| {
        OpenAiError::from(Error::bad_request(
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        ))
    })?;
    let Some(body) = body.as_object() else {
        return Err(Error::bad_request("invalid_body", "the body must be a JSON object").into());
    };
    check_parameters(body)?;
    let model =
        match body.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            _ => return Err(OpenAiError::invalid(
                "model",
                "invalid_model",
                "`model` is required: `clawrelay` (any agent) or an agent's name (GET /v1/models)",
            )),
        };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(OpenAiError::invalid(
                "stream",
                "invalid_stream",
                "`stream` must be true or false",
            ))
        }
    };
    let user = match body.get("user") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) => Some(u.clone()),
        Some(_) => {
            return Err(OpenAiError::invalid(
                "user",
                "invalid_user",
                "`user` must be a string",
            ))
        }
    };
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err(OpenAiError::invalid(
            "messages",
            "invalid_messages",
            "`messages` must be a list of messages",
        ));
    };
    let Some(last) = messages.last() else {
        return Err(OpenAiError::invalid(
            "messages",
            "invalid_messages",
            "`messages` is empty",
        ));
    };
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return Err(OpenAiError::invalid(
            "messages",
            "last_message_not_user",
            "the last message must be the user's (role `user`): it is what the agent answers",
        ));
    }
    let (text, files) = user_content(last.get("content"))?;
    let which = match named {
        Some(id) => Which::Named(id),
        None => match messages
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
        {
            Some(answer) => Which::Answered(plain_text(answer.get("content"))),
            None => Which::New,
        },
    };
    Ok(Request {
        model,
        stream,
        user,
        which,
        text,
        files,
    })
}

/// Refuses the parameters an agent's turn cannot honour (by name); the
/// harmless ones (`temperature`, `max_tokens`, `stop`, ...) are ignored.
fn check_parameters(body: &Map<String, Value>) -> Result<(), OpenAiError> {
    let present = |v: &Value| {
        !matches!(v, Value::Null | Value::Bool(false)) && !v.as_array().is_some_and(Vec::is_empty)
    };
    for name in REFUSED {
        if body.get(name).is_some_and(present) {
            return Err(OpenAiError::invalid(
                name,
                "unsupported_parameter",
                format!("`{name}` is not supported: an agent answers with text (and files) only"),
            ));
        }
    }
    if let Some(n) = body.get("n").filter(|v| !v.is_null()) {
        if n.as_u64() != Some(1) {
            return Err(OpenAiError::invalid(
                "n",
                "unsupported_parameter",
                "`n` must be 1: an agent gives one answer",
            ));
        }
    }
    if let Some(choice) = body.get("tool_choice").or(body.get("function_call")) {
        if !matches!(choice, Value::Null) && choice.as_str() != Some("none") {
            return Err(OpenAiError::invalid(
                "tool_choice",
                "unsupported_parameter",
                "`tool_choice` is not supported: an agent's tools are its own",
            ));
        }
    }
    let audio = body
        .get("modalities")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|x| x.as_str() == Some("audio")));
    if audio {
        return Err(OpenAiError::invalid(
            "modalities",
            "unsupported_parameter",
            "audio output is not supported",
        ));
    }
    let format = body
        .get("response_format")
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str);
    if format.is_some_and(|t| t != "text") {
        return Err(OpenAiError::invalid(
            "response_format",
            "unsupported_parameter",
            "`response_format` must be `text`: an agent's answer is not held to a schema",
        ));
    }
    Ok(())
}

/// The text of a message's content: a string, or its text parts joined.
fn plain_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// The user message's text and files (`image_url` parts with `data:`
/// URLs, `file` parts with `file_data`).
fn user_content(content: Option<&Value>) -> Result<(String, Vec<File>), OpenAiError> {
    let parts = match content {
        Some(Value::String(s)) => return Ok((s.clone(), Vec::new())),
        Some(Value::Array(parts)) => parts,
        _ => {
            return Err(OpenAiError::invalid(
                "messages",
                "invalid_content",
                "the user message's `content` must be a string or a list of parts",
            ))
        }
    };
    let mut texts = Vec::new();
    let mut files = Vec::new();
    for part in parts {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => texts.push(part.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("image_url") => {
                let url = part
                    .pointer("/image_url/url")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let Some((mime, bytes)) = data_url(url) else {
                    return Err(OpenAiError::invalid(
                        "messages",
                        "remote_image_not_supported",
                        "an `image_url` must be a `data:` URL (base64): the relay does not fetch remote images; download it and send its bytes",
                    ));
                };
                let n = files.len() + 1;
                let ext = mime.strip_prefix("image/").unwrap_or("bin").to_owned();
                files.push(File {
                    name: format!("image-{n}.{ext}"),
                    mime: Some(mime),
                    bytes,
                });
            }
            Some("file") => {
                let data = part
                    .pointer("/file/file_data")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let Some((mime, bytes)) = data_url(data) else {
                    return Err(OpenAiError::invalid(
                        "messages",
                        "invalid_file",
                        "a `file` part needs `file_data` as a `data:` URL (base64); uploaded file ids are not supported",
                    ));
                };
                let name = part
                    .pointer("/file/filename")
                    .and_then(Value::as_str)
                    .unwrap_or("file")
                    .to_owned();
                files.push(File {
                    name,
                    mime: Some(mime),
                    bytes,
                });
            }
            other => {
                return Err(OpenAiError::invalid(
                    "messages",
                    "unsupported_content",
                    format!(
                    "content parts of type `{}` are not supported (text, image_url and file are)",
                    other.unwrap_or("?")
                ),
                ))
            }
        }
    }
    Ok((texts.join("\n"), files))
}

/// The media type and bytes of a base64 `data:` URL.
fn data_url(url: &str) -> Option<(String, Bytes)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    let mime = mime.split(';').next().unwrap_or("").trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .ok()?;
    let mime = if mime.is_empty() {
        "application/octet-stream"
    } else {
        mime
    };
    Some((mime.to_owned(), Bytes::from(bytes)))
}

/// `POST /v1/chat/completions`: the request's last user message goes to
/// an agent as the user's message; the agent's answer comes back, streamed
/// (`stream: true`) or whole.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "app", security(("bearer" = [])),
    request_body(content = Object, description = "OpenAI's Chat Completions request (README, \"OpenAI-compatible API\")"),
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "The same request with the same key returns the stored answer (or joins it as it is written) without a second turn"),
        ("X-Clawrelay-Conversation" = Option<String>, Header, description = "The conversation of the user's to continue"),
    ),
    responses(
    (status = 200, description = "A `chat.completion`, or with `stream: true` `chat.completion.chunk` server-sent events",
        content((Object = "application/json"), (String = "text/event-stream"))),
    (status = 400, description = "OpenAI's error shape", body = Object),
    (status = 401, description = "OpenAI's error shape", body = Object),
    (status = 403, description = "OpenAI's error shape", body = Object),
    (status = 404, description = "OpenAI's error shape", body = Object),
    (status = 409, description = "OpenAI's error shape", body = Object),
    (status = 413, description = "OpenAI's error shape", body = Object),
    (status = 429, description = "OpenAI's error shape", body = Object),
    (status = 503, description = "OpenAI's error shape", body = Object),
    (status = 504, description = "OpenAI's error shape", body = Object),
))]
pub(crate) async fn completions(
    State(state): State<AppState>,
    BearerAuth(principal): BearerAuth,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, OpenAiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            OpenAiError::from(Error::TooLarge {
                code: "body_too_large",
                message: "the request is over the limit ([attachments] max_bytes, as base64, per file it may carry, and [limits] max_body_bytes)".into(),
            })
        } else {
            Error::bad_request("unreadable_body", rejection.body_text()).into()
        }
    })?;
    let key = idempotency_key(&headers)?;
    let named = match headers.get(CONVERSATION_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(ConversationId::parse)
                .ok_or_else(|| {
                    Error::not_found(
                        "conversation_not_found",
                        "X-Clawrelay-Conversation names no conversation",
                    )
                })?,
        ),
    };
    let request = read_request(&body, named)?;
    let (app, user) = match &principal {
        Principal::App(app) => {
            let Some(user) = &request.user else {
                return Err(OpenAiError::invalid(
                    "user",
                    "missing_user",
                    "`user` is required with an app token: the end user the message is from",
                ));
            };
            let user = UserId::parse(user).map_err(|why| {
                OpenAiError::invalid("user", "invalid_user", format!("`user` {why}"))
            })?;
            (app.clone(), user)
        }
        Principal::User(s) => {
            if request.user.as_ref().is_some_and(|u| u != s.user.as_str()) {
                return Err(Error::Forbidden("a user session speaks as its own user only").into());
            }
            (s.app.clone(), s.user.clone())
        }
        _ => unreachable!("BearerAuth lets only apps and user sessions in"),
    };
    state.limits.check_user(&app, &user)?;
    let agent = if request.model == ANY_AGENT {
        None
    } else {
        match state.relay.agent_named(&request.model).await? {
            Some(agent) => Some(agent),
            None => {
                return Err(OpenAiError {
                    error: Error::not_found(
                        "model_not_found",
                        format!(
                            "no agent named `{}`: use `clawrelay` (any agent) or a name GET /v1/models lists",
                            request.model
                        ),
                    ),
                    param: Some("model"),
                    retry: true,
                })
            }
        }
    };
    let ask = Ask {
        app,
        user,
        which: request.which,
        agent,
        text: request.text,
        files: request.files,
        key,
        poster: party_of(&principal).unwrap_or_default(),
    };
    let wait = Duration::from_secs(state.config.openai.reply_timeout_secs);
    let asked = state
        .relay
        .ask(ask, wait, state.shutdown.clone())
        .await
        .map_err(|e| {
            // A key used for another request: retrying changes nothing.
            let retry = !matches!(e, Error::Conflict { .. });
            OpenAiError {
                error: e,
                param: None,
                retry,
            }
        })?;
    let conversation = HeaderValue::from_str(asked.message.conversation_id.as_str())
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    let mut response = if request.stream {
        stream_answer(
            &asked.message,
            request.model,
            asked.turn,
            state.config.sse.keepalive_secs,
        )
    } else {
        // An error here (no answer in time) still names the conversation.
        whole_answer(&asked.message, &request.model, asked.turn)
            .await
            .unwrap_or_else(IntoResponse::into_response)
    };
    response
        .headers_mut()
        .insert(CONVERSATION_HEADER, conversation);
    Ok(response)
}

/// The id of the completion answering `message` (the same for a retry).
fn completion_id(message: &Message) -> String {
    format!("chatcmpl-{}", message.id)
}

fn timed_out() -> Error {
    Error::Overloaded {
        code: "reply_timeout",
        message: "the agent has not answered within [openai] reply_timeout_secs; the answer will still be stored (in the conversation's history), and the same request with the same Idempotency-Key returns it".into(),
    }
}

fn stopped() -> Error {
    Error::Unavailable(
        "the relay is shutting down; the answer will still be stored, and the same request with the same Idempotency-Key returns it".into(),
    )
}

/// Waits for the answer and answers one `chat.completion`.
async fn whole_answer(
    message: &Message,
    model: &str,
    mut turn: watch::Receiver<Progress>,
) -> Result<Response, OpenAiError> {
    let end = match turn.wait_for(|p| p.end.is_some()).await {
        Ok(p) => p.end.clone(),
        Err(_) => None,
    };
    let text = match end {
        Some(End::Answered(answer)) => answer.text,
        // Stopped by the user before a word was written: an empty answer.
        Some(End::Cancelled) => String::new(),
        Some(End::TimedOut) => return Err(OpenAiError::from(timed_out()).no_retry()),
        Some(End::Stopped) | None => return Err(OpenAiError::from(stopped()).no_retry()),
    };
    let body = json!({
        "id": completion_id(message),
        "object": "chat.completion",
        "created": message.timestamp / 1000,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop",
        }],
    });
    Ok(Json(body).into_response())
}

/// One `chat.completion.chunk`.
fn chunk(message: &Message, model: &str, delta: Value, finish: Option<&str>) -> Event {
    let body = json!({
        "id": completion_id(message),
        "object": "chat.completion.chunk",
        "created": message.timestamp / 1000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    });
    Event::default().data(body.to_string())
}

/// Streams the answer as `chat.completion.chunk` events: the role, the
/// pieces as the agent writes them, what the stored answer adds to them, a
/// last chunk with `finish_reason`, then `[DONE]`.
fn stream_answer(
    message: &Message,
    model: String,
    turn: watch::Receiver<Progress>,
    keepalive_secs: u64,
) -> Response {
    struct State {
        message: Message,
        model: String,
        turn: watch::Receiver<Progress>,
        /// Bytes of the answer sent so far.
        sent: usize,
        /// What the stored answer's text was compared with (what was sent).
        sent_text: String,
        started: bool,
        done: bool,
    }
    let start = State {
        message: message.clone(),
        model,
        turn,
        sent: 0,
        sent_text: String::new(),
        started: false,
        done: false,
    };
    let events = futures_util::stream::unfold(start, |mut s| async move {
        if s.done {
            return None;
        }
        if !s.started {
            s.started = true;
            let first = chunk(
                &s.message,
                &s.model,
                json!({"role": "assistant", "content": ""}),
                None,
            );
            return Some((vec![first], s));
        }
        // The first change not yet sent (the state as it is now included).
        let progress = match s
            .turn
            .wait_for(|p| p.end.is_some() || p.streamed.len() > s.sent)
            .await
        {
            Ok(p) => p.clone(),
            Err(_) => Progress {
                end: Some(End::Stopped),
                ..Progress::default()
            },
        };
        let mut out = Vec::new();
        match progress.end {
            None => {
                let piece = progress.streamed.get(s.sent..).unwrap_or_default();
                s.sent = progress.streamed.len();
                s.sent_text.push_str(piece);
                out.push(chunk(&s.message, &s.model, json!({"content": piece}), None));
            }
            Some(End::Answered(answer)) => {
                // What the stored answer adds to the pieces sent (all of
                // it when none were; nothing when they went astray).
                let rest = answer.text.strip_prefix(s.sent_text.as_str());
                if let Some(rest) = rest.filter(|r| !r.is_empty()) {
                    out.push(chunk(&s.message, &s.model, json!({"content": rest}), None));
                }
                out.push(chunk(&s.message, &s.model, json!({}), Some("stop")));
                out.push(Event::default().data("[DONE]"));
                s.done = true;
            }
            Some(End::Cancelled) => {
                out.push(chunk(&s.message, &s.model, json!({}), Some("stop")));
                out.push(Event::default().data("[DONE]"));
                s.done = true;
            }
            Some(end) => {
                let error = if matches!(end, End::TimedOut) {
                    timed_out()
                } else {
                    stopped()
                };
                out.push(Event::default().data(error_body(&error, None).to_string()));
                out.push(Event::default().data("[DONE]"));
                s.done = true;
            }
        }
        Some((out, s))
    })
    .flat_map(|batch| futures_util::stream::iter(batch.into_iter().map(Ok::<_, Infallible>)));
    let keep_alive = KeepAlive::new().interval(Duration::from_secs(keepalive_secs));
    let mut response = Sse::new(events).keep_alive(keep_alive).into_response();
    let h = response.headers_mut();
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
