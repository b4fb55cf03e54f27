//! An app's WebSocket session: its conversations streamed (replay after the
//! `connect` cursor, then live), and `inbound` to post user messages. A user
//! session connects in the same role, held to its user: its conversations
//! only, and `inbound` as that user only.

use super::feed::{self, FeedItem};
use super::protocol::{close, ConnectParams, InboundParams, Request, PROTOCOL_VERSION};
use super::{read_error, Conn, Exit};
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::Error;
use crate::hub::CredentialWatch;
use crate::ids::ConversationId;
use axum::extract::ws::Message;
use serde_json::{json, Value};
use std::time::Duration;

/// The most stream items written at once.
const WRITE_BATCH: usize = 64;

pub async fn run(
    mut conn: Conn,
    state: AppState,
    viewer: Principal,
    watch: CredentialWatch,
    connect_id: Value,
    params: ConnectParams,
) {
    let relay = state.relay.clone();
    let Some(app) = viewer.app().cloned() else {
        return conn
            .finish(Exit::Close(close::FORBIDDEN, "not an app"))
            .await;
    };
    let start = match start_cursor(&state, &viewer, &params).await {
        Ok(c) => c,
        Err(e) => {
            let _ = conn.error(&connect_id, e.code(), &e.to_string()).await;
            return conn
                .finish(Exit::Close(close::PROTOCOL, "invalid connect"))
                .await;
        }
    };
    let conversation = params
        .conversation_id
        .as_deref()
        .and_then(ConversationId::parse);
    let mut feed = feed::spawn(
        relay.clone(),
        viewer.clone(),
        conversation,
        start,
        state.config.ws.outgoing_buffer,
        watch,
        state.shutdown.clone(),
    );
    let hello = json!({
        "protocol": PROTOCOL_VERSION,
        "role": "app",
        "appId": app,
        "userId": viewer.user(),
        "cursor": start.to_string(),
        "pingIntervalMs": state.config.ws.ping_interval_secs * 1000,
    });
    if let Err(exit) = conn.ok(&connect_id, hello).await {
        return conn.finish(exit).await;
    }

    let idle_timeout = Duration::from_secs(state.config.ws.idle_timeout_secs);
    let mut ping = tokio::time::interval(Duration::from_secs(state.config.ws.ping_interval_secs));
    ping.tick().await;
    let stop = state.shutdown.clone().wait();
    tokio::pin!(stop);
    let exit = loop {
        tokio::select! {
            item = feed.items.recv() => {
                // The items waiting already go out with it, in one write.
                conn.cork();
                let mut item = item;
                let mut taken = 0;
                let sent = loop {
                    let sent = match item {
                        Some(FeedItem::Stored { cursor, message }) => {
                            conn.event("message", &feed::stored_payload(&viewer, cursor, &message)).await
                        }
                        Some(FeedItem::Live(event)) => conn.event(event.event, &event.payload).await,
                        None if feed.was_slow() => break Err(Exit::Close(close::SLOW_CONSUMER, "slow consumer")),
                        None if feed.was_revoked() => break Err(Exit::Close(close::UNAUTHORIZED, "revoked")),
                        None => break Err(Exit::Close(close::GOING_AWAY, "stream ended")),
                    };
                    taken += 1;
                    if sent.is_err() || taken == WRITE_BATCH {
                        break sent;
                    }
                    match feed.items.try_recv() {
                        Ok(next) => item = Some(next),
                        Err(_) => break Ok(()),
                    }
                };
                let written = match sent {
                    Ok(()) => conn.uncork().await,
                    Err(exit) => Err(exit),
                };
                if let Err(exit) = written {
                    break exit;
                }
            }
            frame = conn.recv() => match frame {
                None | Some(Ok(Message::Close(_))) => break Exit::Gone,
                Some(Err(e)) => break read_error(&e),
                Some(Ok(Message::Text(text))) => {
                    if let Err(exit) = request(&mut conn, &state, &viewer, &text).await {
                        break exit;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    if let Err(exit) = conn.error(&Value::Null, "invalid_frame", "frames are JSON text").await {
                        break exit;
                    }
                }
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if conn.silent_for() > idle_timeout {
                    break Exit::Close(close::TIMEOUT, "idle timeout");
                }
                if let Err(exit) = conn.ping().await {
                    break exit;
                }
            }
            _ = &mut stop => break Exit::Close(close::GOING_AWAY, "server shutting down"),
        }
    };
    conn.finish(exit).await;
}

/// Where the stream starts: after `after`, or now. A conversation filter must
/// name one of this app's (or this user's) conversations.
async fn start_cursor(
    state: &AppState,
    viewer: &Principal,
    params: &ConnectParams,
) -> Result<i64, Error> {
    if let Some(c) = &params.conversation_id {
        let id = ConversationId::parse(c).ok_or_else(|| {
            Error::not_found("conversation_not_found", format!("no conversation {c}"))
        })?;
        state.relay.conversation(viewer, &id).await?;
    }
    match params.after.as_deref() {
        Some(after) => crate::http::extract::cursor(Some(after))?
            .ok_or_else(|| Error::bad_request("invalid_cursor", "`after` is empty")),
        None => state.relay.current_cursor().await,
    }
}

async fn request(
    conn: &mut Conn,
    state: &AppState,
    viewer: &Principal,
    text: &str,
) -> Result<(), Exit> {
    let request = match Request::parse(text) {
        Ok(r) => r,
        Err(e) => return conn.frame_error(&e).await,
    };
    let result = match request.method.as_str() {
        "inbound" => {
            let p: InboundParams = match request.params() {
                Ok(p) => p,
                Err(e) => return conn.frame_error(&e).await,
            };
            inbound(state, viewer, p).await
        }
        "ping" => Ok(json!({ "ts": crate::store::now_ms() })),
        other => Err(Error::invalid(
            "unknown_method",
            format!("apps have no method `{other}`"),
        )),
    };
    conn.answer(&request.id, result).await
}

async fn inbound(state: &AppState, viewer: &Principal, p: InboundParams) -> Result<Value, Error> {
    let key = super::idempotency_param(p.idempotency_key.as_deref())?;
    let post = crate::http::inbound::post_of(
        state,
        viewer,
        p.from.as_deref(),
        p.conversation_id.as_deref(),
        p.text,
        &p.attachments,
        key,
    )?;
    let message = state.relay.inbound(post).await?;
    Ok(json!({ "message": message }))
}
