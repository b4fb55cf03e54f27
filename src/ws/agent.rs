//! An agent's WebSocket session: deliveries are claimed from the durable
//! queue (the same claim as `GET /poll`, leases owned by this session) and
//! pushed as `message` events, never more than `maxInFlight` unacked at once.
//! When the socket closes, for whatever reason, the session's unacked
//! deliveries are due again at once.
//!
//! Requests are pipelined: the session goes on reading frames while earlier
//! requests wait for their commit, so an agent answering many conversations
//! at once has its sends share group commits (with each other and with
//! HTTP) instead of committing one by one. Each request runs as a task of
//! its own: it makes progress (and gives back the database connection it
//! reads with) while the session itself waits for something else, such as
//! a claim that needs a connection too. Requests about one conversation
//! still run one after the other, in the order they arrived (a `send` never
//! overtakes the deltas or the `send` before it); responses to requests about
//! different conversations may come in another order than the requests
//! (match them by `id`).

use super::protocol::{
    close, AckParams, ConnectParams, DeltaParams, FrameError, ProgressParams, Request, SendParams,
    TypingParams, PROTOCOL_VERSION,
};
use super::{credential_gone, read_error, Conn, Exit};
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::Error;
use crate::hub::CredentialWatch;
use crate::ids::{ClientId, ConversationId, MessageId, ReplyId};
use crate::relay::messages::Reply;
use crate::store::now_ms;
use axum::extract::ws::Message;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::Instant;

const DEFAULT_IN_FLIGHT: i64 = 10;
const MAX_IN_FLIGHT: i64 = 1000;
/// Requests of one socket being handled at once; past this the session
/// stops reading frames until one finishes.
const PIPELINE: usize = 64;

/// A request handled: its id, whether it may have acked deliveries (`send`,
/// `ack`), and its outcome.
type Handled = (Value, bool, Result<Result<Value, Error>, FrameError>);

pub async fn run(
    mut conn: Conn,
    state: AppState,
    client: ClientId,
    watch: CredentialWatch,
    connect_id: Value,
    params: ConnectParams,
) {
    let max_in_flight = params.max_in_flight.unwrap_or(DEFAULT_IN_FLIGHT);
    if !(1..=MAX_IN_FLIGHT).contains(&max_in_flight) {
        let _ = conn
            .error(
                &connect_id,
                "invalid_params",
                &format!("`maxInFlight` must be 1 to {MAX_IN_FLIGHT}"),
            )
            .await;
        return conn
            .finish(Exit::Close(close::PROTOCOL, "invalid connect"))
            .await;
    }
    let relay = state.relay.clone();
    let session = match &relay.cluster {
        Some(cluster) => cluster.session_id(),
        None => format!("ws_{}", uuid::Uuid::new_v4().simple()),
    };
    relay.hub.touch(&client, now_ms());
    let _attached = relay.hub.attach(&client);
    let cfg = &state.config.ws;
    let hello = json!({
        "protocol": PROTOCOL_VERSION,
        "role": "agent",
        "clientId": client,
        "session": session,
        "maxInFlight": max_in_flight,
        "pingIntervalMs": cfg.ping_interval_secs * 1000,
        "idleTimeoutMs": cfg.idle_timeout_secs * 1000,
    });
    let exit = match conn.ok(&connect_id, hello).await {
        Ok(()) => {
            let mut session_loop = Session {
                conn: &mut conn,
                state: &state,
                client: &client,
                session: &session,
                max_in_flight,
                watch,
                principal: Principal::Client(client.clone()),
            };
            session_loop.run().await
        }
        Err(exit) => exit,
    };
    if let Err(e) = relay.release_session(&client, &session).await {
        tracing::warn!(error = %e, %session, "could not release a closed session's deliveries");
    }
    conn.finish(exit).await;
}

struct Session<'a> {
    conn: &'a mut Conn,
    state: &'a AppState,
    client: &'a ClientId,
    session: &'a str,
    max_in_flight: i64,
    watch: CredentialWatch,
    principal: Principal,
}

impl Session<'_> {
    async fn run(&mut self) -> Exit {
        let relay = self.state.relay.clone();
        let cfg = &self.state.config.ws;
        let idle_timeout = Duration::from_secs(cfg.idle_timeout_secs);
        let mut ping = tokio::time::interval(Duration::from_secs(cfg.ping_interval_secs));
        ping.tick().await;
        let stop = self.state.shutdown.clone().wait();
        tokio::pin!(stop);
        // Requests being handled, each a task: driven by the runtime, not
        // by this loop (which may be waiting on a claim meanwhile).
        let mut running: JoinSet<Handled> = JoinSet::new();
        // Per conversation with requests running, the end of the last one:
        // each request waits for the one before it (arrival order, whatever
        // order the tasks start in).
        let mut lanes: HashMap<String, oneshot::Receiver<()>> = HashMap::new();
        // Whether something may have become claimable, or room freed, since
        // the last claim: at start, on a wake-up, when a lease ends, after
        // an ack or a send while the session was full. The claim itself
        // counts what the session holds.
        let mut look = true;
        let mut next_due: Option<i64> = None;
        // Whether the last claim left work behind for want of room: then an
        // ack of this session's is a reason to look again. (New work, and
        // a conversation's next message made ready by an ack, wake it.)
        let mut full = false;
        // Cancel notices (stops) from here on are this socket's to tell.
        let mut notices = relay.hub.turns.notice_mark(self.client);
        // The wake-up waited on, kept until it fires: one that comes while
        // the loop is busy with another branch (a request's answer, a
        // frame) is taken on the next pass, not lost with a new waiter.
        let mut notified = Box::pin(relay.hub.client_wake(self.client).notified_owned());
        notified.as_mut().enable();
        loop {
            // Push what fits.
            if look {
                look = false;
                match relay
                    .claim_for_session(self.client, self.max_in_flight, self.session)
                    .await
                {
                    Ok(claim) => {
                        full = claim.full;
                        // Wake when the earliest claim this session holds
                        // ends (then, if it was not renewed, it is due
                        // again): a claim that got nothing says when the
                        // client's next one ends; the messages pushed say
                        // when theirs do.
                        let now = now_ms();
                        next_due = [
                            claim.next_due,
                            claim.messages.iter().filter_map(|m| m.lease_until).min(),
                            next_due.filter(|at| *at > now),
                        ]
                        .into_iter()
                        .flatten()
                        .min();
                        // The messages go out in one write.
                        self.conn.cork();
                        for m in &claim.messages {
                            if let Err(exit) = self.conn.event("message", m).await {
                                return exit;
                            }
                        }
                        if let Err(exit) = self.conn.uncork().await {
                            return exit;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "claim for a websocket session failed");
                        next_due = Some(now_ms() + 1000);
                        full = true;
                    }
                }
            }
            let now = now_ms();
            let due_in = next_due
                .filter(|at| *at > now)
                .map(|at| Duration::from_millis((at - now) as u64))
                .unwrap_or(Duration::from_secs(3600));

            tokio::select! {
                Some(handled) = running.join_next(), if !running.is_empty() => {
                    // The answers ready with it go out in one write.
                    self.conn.cork();
                    let mut handled = Some(handled);
                    while let Some(done) = handled {
                        match done {
                            Ok((id, frees, result)) => {
                                let answered = match result {
                                    Ok(result) => self.conn.answer(&id, result).await,
                                    Err(e) => self.conn.frame_error(&e).await,
                                };
                                if let Err(exit) = answered {
                                    return exit;
                                }
                                look |= frees && full;
                            }
                            // A request that panicked: counted as an internal
                            // error in the log; its peer gets no answer.
                            Err(_) => tracing::error!("a websocket request's task failed"),
                        }
                        handled = running.try_join_next();
                    }
                    if let Err(exit) = self.conn.uncork().await {
                        return exit;
                    }
                    lanes.retain(|_, last| {
                        matches!(last.try_recv(), Err(oneshot::error::TryRecvError::Empty))
                    });
                }
                frame = self.conn.recv(), if running.len() < PIPELINE => match frame {
                    None | Some(Ok(Message::Close(_))) => return Exit::Gone,
                    Some(Err(e)) => return read_error(&e),
                    Some(Ok(Message::Text(text))) => {
                        let request = match Request::parse(&text) {
                            Ok(r) => r,
                            Err(e) => {
                                if let Err(exit) = self.conn.frame_error(&e).await {
                                    return exit;
                                }
                                continue;
                            }
                        };
                        // Requests about one conversation wait for each other.
                        let (done, end) = oneshot::channel::<()>();
                        let before = request
                            .params
                            .get("conversationId")
                            .and_then(Value::as_str)
                            .and_then(|c| lanes.insert(c.to_owned(), end));
                        let (state, client) = (self.state.clone(), self.client.clone());
                        running.spawn(async move {
                            if let Some(before) = before {
                                // Its sender is dropped when that request ends.
                                let _ = before.await;
                            }
                            let _done = done;
                            let result = call(&state, &client, &request).await;
                            let frees = matches!(request.method.as_str(), "send" | "ack");
                            (request.id, frees, result)
                        });
                    }
                    Some(Ok(Message::Binary(_))) => {
                        if let Err(exit) = self.conn.error(&Value::Null, "invalid_frame", "frames are JSON text").await {
                            return exit;
                        }
                    }
                    Some(Ok(_)) => {}
                },
                // New work for this client, or acks made elsewhere (HTTP, another socket).
                _ = &mut notified => {
                    notified = Box::pin(relay.hub.client_wake(self.client).notified_owned());
                    notified.as_mut().enable();
                    let (cancels, next) = relay.hub.turns.notices_since(self.client, notices);
                    notices = next;
                    for cancel in cancels {
                        let payload = serde_json::to_value(&*cancel).unwrap_or(Value::Null);
                        if let Err(exit) = self.conn.event("cancel", &payload).await {
                            return exit;
                        }
                    }
                    look = true;
                }
                // A lease ended: what it held is due again.
                _ = tokio::time::sleep_until(Instant::now() + due_in) => look = true,
                _ = ping.tick() => {
                    if self.conn.silent_for() > idle_timeout {
                        return Exit::Close(close::TIMEOUT, "idle timeout");
                    }
                    relay.hub.touch(self.client, now_ms());
                    if let Err(exit) = self.conn.ping().await {
                        return exit;
                    }
                }
                _ = credential_gone(&mut self.watch, &relay, &self.principal) => {
                    return Exit::Close(close::UNAUTHORIZED, "revoked");
                }
                _ = &mut stop => return Exit::Close(close::GOING_AWAY, "server shutting down"),
            }
        }
    }
}

/// Runs one agent request; `Err` when the frame itself is unusable.
async fn call(
    state: &AppState,
    client: &ClientId,
    r: &Request,
) -> Result<Result<Value, Error>, FrameError> {
    let relay = &state.relay;
    let client = client.clone();
    Ok(match r.method.as_str() {
        "ack" => {
            let p: AckParams = r.params()?;
            match parse_ids(&p.ids) {
                Ok(ids) => relay
                    .ack(client, ids)
                    .await
                    .map(|o| json!({ "acked": o.acked, "notAcked": o.not_acked })),
                Err(e) => Err(e),
            }
        }
        "send" => {
            let p: SendParams = r.params()?;
            match send_args(relay, &p) {
                Ok((conversation, reply_id, key, attachments)) => relay
                    .send(
                        client,
                        conversation,
                        Reply {
                            to: p.to,
                            text: p.text,
                            attachments,
                            reply_id,
                            key,
                            ack: p.ack.unwrap_or(true),
                        },
                    )
                    .await
                    .map(|m| json!({ "message": m })),
                Err(e) => Err(e),
            }
        }
        "reply.delta" => {
            let p: DeltaParams = r.params()?;
            match (conversation_id(&p.conversation_id), reply_id(&p.reply_id)) {
                (Ok(c), Ok(id)) => relay
                    .reply_delta(&client, c, id, p.text)
                    .await
                    .map(|()| json!({})),
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
        "typing" => {
            let p: TypingParams = r.params()?;
            match conversation_id(&p.conversation_id) {
                Ok(c) => relay.typing(&client, c).await.map(|()| json!({})),
                Err(e) => Err(e),
            }
        }
        "progress" => {
            let p: ProgressParams = r.params()?;
            match conversation_id(&p.conversation_id) {
                Ok(c) => relay
                    .progress(&client, c, p.kind, p.data)
                    .await
                    .map(|()| json!({})),
                Err(e) => Err(e),
            }
        }
        "renew" => {
            let p: TypingParams = r.params()?;
            match conversation_id(&p.conversation_id) {
                Ok(c) => relay.renew(client, c).await.map(|renewed| json!(renewed)),
                Err(e) => Err(e),
            }
        }
        "ping" => Ok(json!({ "ts": now_ms() })),
        other => Err(Error::invalid(
            "unknown_method",
            format!("agents have no method `{other}`"),
        )),
    })
}

fn conversation_id(s: &str) -> Result<ConversationId, Error> {
    ConversationId::parse(s)
        .ok_or_else(|| Error::not_found("conversation_not_found", format!("no conversation {s}")))
}

fn reply_id(s: &str) -> Result<ReplyId, Error> {
    ReplyId::parse(s).ok_or_else(|| {
        Error::invalid(
            "invalid_reply_id",
            "`replyId` must be 1 to 128 visible ASCII characters",
        )
    })
}

fn parse_ids(ids: &[String]) -> Result<Vec<MessageId>, Error> {
    if ids.is_empty() || ids.len() > 1000 {
        return Err(Error::invalid(
            "invalid_ids",
            "`ids` must name 1 to 1000 messages",
        ));
    }
    ids.iter()
        .map(|id| {
            MessageId::parse(id)
                .ok_or_else(|| Error::invalid("invalid_ids", format!("`{id}` is not a message id")))
        })
        .collect()
}

type SendArgs = (
    ConversationId,
    Option<ReplyId>,
    Option<crate::ids::IdempotencyKey>,
    Vec<crate::ids::AttachmentId>,
);

fn send_args(relay: &crate::relay::Relay, p: &SendParams) -> Result<SendArgs, Error> {
    let conversation = conversation_id(&p.conversation_id)?;
    let reply = p.reply_id.as_deref().map(reply_id).transpose()?;
    let key = super::idempotency_param(p.idempotency_key.as_deref())?;
    let attachments = relay.attachment_ids(&p.attachments)?;
    Ok((conversation, reply, key, attachments))
}
