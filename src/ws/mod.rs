//! `GET /ws`: the WebSocket transport. One protocol ([`protocol`]), two
//! roles: agents get deliveries pushed from the durable queue ([`agent`]),
//! apps get their conversations streamed, replayable by cursor ([`app`],
//! over the [`feed`] that Server-Sent Events share).
//!
//! Each connection is one task. It holds a permit of the connection cap for
//! its whole life; shutdown waits for every permit before the store closes.

pub mod agent;
pub mod app;
pub mod feed;
pub mod protocol;

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::Error;
use crate::hub::{CredentialWatch, RevocationSeen};
use crate::relay::Relay;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use protocol::{close, ConnectParams, ErrorBody, FrameError, Request, Role, ServerFrame};
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

/// Bytes read from a socket at a time.
const READ_BUFFER: usize = 4096;
/// Bytes of frames a corked connection (see [`Conn::cork`]) holds before it
/// writes them anyway. The buffer keeps its size once grown, so this is
/// what a socket may keep; 8 KiB wrote as few times as 16 KiB did (6 700
/// against 6 300 writes/s, bench roundtrip --transport ws).
const WRITE_BUFFER: usize = 8 * 1024;

pub fn router() -> Router<AppState> {
    Router::new().route("/ws", get(upgrade))
}

/// Upgrades to the WebSocket protocol of agents and apps (see docs/protocol.md).
#[utoipa::path(get, path = "/ws", tag = "public", responses(
    (status = 101, description = "Switching to the WebSocket protocol; the first frame must be `connect`"),
    (status = 400, body = crate::error::ErrorResponse, description = "Not a WebSocket upgrade request"),
    (status = 503, body = crate::error::ErrorResponse),
))]
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    parts: Parts,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return Error::bad_request("not_a_websocket_upgrade", rejection.body_text())
                .into_response()
        }
    };
    let ip = crate::http::auth::client_ip(&state, &parts);
    let headers: &HeaderMap = &parts.headers;
    let Ok(permit) = state.ws_slots.clone().try_acquire_owned() else {
        return Error::Overloaded {
            code: "too_many_connections",
            message: format!(
                "the relay holds its maximum of {} WebSocket connections",
                state.config.ws.max_connections
            ),
        }
        .into_response();
    };
    let header_token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    let max = state.config.ws.max_frame_bytes;
    // Small buffers: tungstenite's defaults (128 KiB to read, 128 KiB to
    // write) cost ~145 KiB per open socket, and the memory stayed with the
    // process after a burst of sockets closed. Reads grow past this for a
    // large frame; a frame is written when it is sent, unless the
    // connection is corked (then up to WRITE_BUFFER bytes wait for more).
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| async move {
            let conn = Conn::new(
                socket,
                Duration::from_secs(state.config.ws.send_timeout_secs),
            );
            handshake(conn, state, header_token, ip).await;
            drop(permit);
        })
}

/// Why a session ended, and so how its socket is closed.
pub enum Exit {
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The peer is gone (closed, reset, or stopped reading): nothing to send.
    Gone,
}

/// A connection: the socket, this connection's event counter, and when the
/// peer was last heard from.
pub struct Conn {
    socket: WebSocket,
    seq: u64,
    send_timeout: Duration,
    last_heard: Instant,
    /// Frames sent wait in the socket's buffer until [`Conn::uncork`].
    corked: bool,
}

impl Conn {
    fn new(socket: WebSocket, send_timeout: Duration) -> Conn {
        Conn {
            socket,
            seq: 0,
            send_timeout,
            last_heard: Instant::now(),
            corked: false,
        }
    }

    /// From now until [`Conn::uncork`], frames sent are buffered (written
    /// only once `WRITE_BUFFER` bytes wait): frames that are ready together
    /// go out in one write, not one system call each.
    pub fn cork(&mut self) {
        self.corked = true;
    }

    /// Writes the frames buffered since [`Conn::cork`]; frames are written
    /// as they are sent again.
    pub async fn uncork(&mut self) -> Result<(), Exit> {
        self.corked = false;
        let flushed = futures_util::SinkExt::flush(&mut self.socket);
        sent(tokio::time::timeout(self.send_timeout, flushed).await)
    }

    /// Sends one frame. A peer that does not take it within the send timeout
    /// is a slow consumer.
    async fn send<P: serde::Serialize + ?Sized>(
        &mut self,
        frame: &ServerFrame<'_, P>,
    ) -> Result<(), Exit> {
        let text = serde_json::to_string(frame)
            .map_err(|_| Exit::Close(close::INTERNAL, "encoding error"))?;
        let message = Message::Text(text.into());
        if self.corked {
            let queued = futures_util::SinkExt::feed(&mut self.socket, message);
            sent(tokio::time::timeout(self.send_timeout, queued).await)
        } else {
            sent(tokio::time::timeout(self.send_timeout, self.socket.send(message)).await)
        }
    }

    pub async fn event<P: serde::Serialize + ?Sized>(
        &mut self,
        event: &str,
        payload: &P,
    ) -> Result<(), Exit> {
        self.seq += 1;
        let seq = self.seq;
        self.send(&ServerFrame::Event {
            event,
            payload,
            seq,
        })
        .await
    }

    pub async fn ok(&mut self, id: &Value, payload: Value) -> Result<(), Exit> {
        self.send::<Value>(&ServerFrame::Res {
            id,
            ok: true,
            payload: Some(payload),
            error: None,
        })
        .await
    }

    pub async fn error(&mut self, id: &Value, code: &str, message: &str) -> Result<(), Exit> {
        self.send::<Value>(&ServerFrame::Res {
            id,
            ok: false,
            payload: None,
            error: Some(ErrorBody { code, message }),
        })
        .await
    }

    pub async fn frame_error(&mut self, e: &FrameError) -> Result<(), Exit> {
        self.error(&e.id, e.code, &e.message).await
    }

    /// The answer to a request whose handling produced `result`.
    pub async fn answer(&mut self, id: &Value, result: Result<Value, Error>) -> Result<(), Exit> {
        match result {
            Ok(payload) => self.ok(id, payload).await,
            Err(e) => {
                if let Error::Internal(cause) = &e {
                    tracing::error!(%cause, "internal error in a websocket request");
                    return self.error(id, "internal", "internal error").await;
                }
                self.error(id, e.code(), &e.to_string()).await
            }
        }
    }

    /// The next message from the peer; None when it is gone. Any frame,
    /// including a pong, counts as being heard from.
    pub async fn recv(&mut self) -> Option<Result<Message, axum::Error>> {
        let m = self.socket.recv().await;
        if matches!(m, Some(Ok(_))) {
            self.last_heard = Instant::now();
        }
        m
    }

    pub fn silent_for(&self) -> Duration {
        self.last_heard.elapsed()
    }

    pub async fn ping(&mut self) -> Result<(), Exit> {
        let ping = self.socket.send(Message::Ping(Default::default()));
        sent(tokio::time::timeout(self.send_timeout, ping).await)
    }

    /// Ends the connection as `exit` says (best effort: a short wait at most).
    pub async fn finish(mut self, exit: Exit) {
        if let Exit::Close(code, reason) = exit {
            let frame = Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            }));
            let _ = tokio::time::timeout(Duration::from_secs(1), self.socket.send(frame)).await;
        }
    }
}

/// How a write within the send timeout went: a peer that did not take it
/// in time is a slow consumer.
fn sent(r: Result<Result<(), axum::Error>, tokio::time::error::Elapsed>) -> Result<(), Exit> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Exit::Gone),
        Err(_) => Err(Exit::Close(close::SLOW_CONSUMER, "slow consumer")),
    }
}

/// The optional `idempotencyKey` param of `send` and `inbound`.
pub(crate) fn idempotency_param(
    value: Option<&str>,
) -> Result<Option<crate::ids::IdempotencyKey>, Error> {
    value
        .map(|k| {
            crate::ids::IdempotencyKey::parse(k).ok_or_else(|| {
                Error::invalid(
                    "invalid_idempotency_key",
                    "`idempotencyKey` must be 1 to 255 visible ASCII characters",
                )
            })
        })
        .transpose()
}

/// Resolves when the credential a session was opened with is revoked or
/// replaced (announced by this process, or found by the poll of changes the
/// admin CLI made).
pub async fn credential_gone(watch: &mut CredentialWatch, relay: &Relay, principal: &Principal) {
    loop {
        match watch.revoked(&principal.revocation_keys()).await {
            RevocationSeen::Revoked => return,
            RevocationSeen::Missed => {
                if let Ok(false) = relay.credential_current(principal, watch.version()).await {
                    return;
                }
            }
        }
    }
}

/// What an error while reading a frame means for the session.
pub fn read_error(e: &axum::Error) -> Exit {
    let text = e.to_string();
    if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
        Exit::Close(close::TOO_BIG, "frame too large")
    } else {
        Exit::Gone
    }
}

/// The first frame must be `connect`; then the session of its role runs.
async fn handshake(
    mut conn: Conn,
    state: AppState,
    header_token: Option<String>,
    ip: Option<std::net::IpAddr>,
) {
    let timeout = Duration::from_secs(state.config.ws.connect_timeout_secs);
    let deadline = Instant::now() + timeout;
    let text = loop {
        match tokio::time::timeout_at(deadline, conn.recv()).await {
            Err(_) => {
                return conn
                    .finish(Exit::Close(close::TIMEOUT, "no connect in time"))
                    .await
            }
            Ok(None) => return,
            Ok(Some(Err(e))) => return conn.finish(read_error(&e)).await,
            Ok(Some(Ok(Message::Text(t)))) => break t,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(Message::Close(_)))) => return,
            Ok(Some(Ok(Message::Binary(_)))) => {
                let _ = conn
                    .error(&Value::Null, "invalid_frame", "frames are JSON text")
                    .await;
                return conn
                    .finish(Exit::Close(close::PROTOCOL, "connect first"))
                    .await;
            }
        }
    };
    let refuse = |code: u16, reason: &'static str| Exit::Close(code, reason);
    let request = match Request::parse(&text) {
        Ok(r) => r,
        Err(e) => {
            let _ = conn.frame_error(&e).await;
            return conn.finish(refuse(close::PROTOCOL, "connect first")).await;
        }
    };
    if request.method != "connect" {
        let _ = conn
            .error(
                &request.id,
                "connect_required",
                "the first request must be `connect`",
            )
            .await;
        return conn.finish(refuse(close::PROTOCOL, "connect first")).await;
    }
    let params: ConnectParams = match request.params() {
        Ok(p) => p,
        Err(e) => {
            let _ = conn.frame_error(&e).await;
            return conn
                .finish(refuse(close::PROTOCOL, "invalid connect"))
                .await;
        }
    };
    let token = params.token.clone().or(header_token);
    let authenticated = match crate::http::auth::authenticate(&state, ip, token.as_deref()).await {
        Ok(a) => a,
        Err(e) => {
            let _ = conn.error(&request.id, e.code(), &e.to_string()).await;
            let code = match e {
                Error::Unauthorized(_) => close::UNAUTHORIZED,
                Error::TooManyRequests { .. } => close::TRY_AGAIN_LATER,
                _ => close::INTERNAL,
            };
            return conn.finish(refuse(code, "unauthorized")).await;
        }
    };
    let watch = match state
        .relay
        .watch_session(&authenticated.principal, authenticated.version)
        .await
    {
        Ok(watch) => watch,
        Err(e) => {
            let _ = conn.error(&request.id, e.code(), &e.to_string()).await;
            let code = match e {
                Error::Unauthorized(_) => close::UNAUTHORIZED,
                _ => close::INTERNAL,
            };
            return conn.finish(refuse(code, "revoked")).await;
        }
    };
    match (params.role, authenticated.principal) {
        (Role::Agent, Principal::Client(client)) => {
            agent::run(conn, state, client, watch, request.id, params).await
        }
        (Role::App, viewer @ (Principal::App(_) | Principal::User(_))) => {
            app::run(conn, state, viewer, watch, request.id, params).await
        }
        (role, _) => {
            let message = match role {
                Role::Agent => "role `agent` needs a client token",
                Role::App => "role `app` needs an app token or a user session",
            };
            let _ = conn.error(&request.id, "forbidden", message).await;
            conn.finish(refuse(close::FORBIDDEN, "wrong role")).await
        }
    }
}
