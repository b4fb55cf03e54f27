//! The WebSocket protocol of `GET /ws`: every frame both sides exchange and
//! every close code, as Rust types. This module is the single source of
//! truth; `docs/protocol.md` describes the same with examples.
//!
//! Frames are JSON text frames in the envelope of OpenClaw's gateway protocol:
//! - request (peer → server): `{"type":"req","id","method","params"}`;
//! - response (server → peer): `{"type":"res","id","ok":true,"payload"}` or
//!   `{"type":"res","id","ok":false,"error":{"code","message"}}`;
//! - event (server → peer): `{"type":"event","event","payload","seq"}`, `seq`
//!   counting the events of this connection from 1.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version `connect` answers with.
pub const PROTOCOL_VERSION: u32 = 1;

/// Close codes. 1xxx are WebSocket's own; 4xxx are this protocol's.
pub mod close {
    /// The peer closed, or the server ended a session normally.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down; reconnect later.
    pub const GOING_AWAY: u16 = 1001;
    /// A server error; reconnect.
    pub const INTERNAL: u16 = 1011;
    /// A frame over `[ws] max_frame_bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// Too many failed authentications from this address or for this id,
    /// and the token did not verify (or could not be verified in time).
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The first frame was not a valid `connect` request.
    pub const PROTOCOL: u16 = 4000;
    /// Missing or wrong token, or the credential was revoked or rotated
    /// (sent at once to the open sockets of that client or app).
    pub const UNAUTHORIZED: u16 = 4001;
    /// A valid token of another role than the one `connect` asked for.
    pub const FORBIDDEN: u16 = 4003;
    /// No `connect` within `[ws] connect_timeout_secs`, or silent (no frame,
    /// no pong) for `[ws] idle_timeout_secs`.
    pub const TIMEOUT: u16 = 4008;
    /// The peer does not read fast enough (slow consumer).
    pub const SLOW_CONSUMER: u16 = 4029;
}

/// The role a connection takes in `connect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An agent instance with a client token: deliveries are pushed to it.
    Agent,
    /// An app with an app token: its conversations are streamed to it.
    App,
}

/// A request frame, checked for its envelope; `params` is typed per method.
#[derive(Debug)]
pub struct Request {
    pub id: Value,
    pub method: String,
    pub params: Value,
}

/// Why a frame was refused: becomes an error response.
#[derive(Debug)]
pub struct FrameError {
    /// The request id when it could be read, else null.
    pub id: Value,
    pub code: &'static str,
    pub message: String,
}

impl Request {
    /// Reads a text frame: JSON, `type` "req", an `id` (string or number), a
    /// `method` (string), optional `params`.
    pub fn parse(text: &str) -> Result<Request, FrameError> {
        let value: Value = serde_json::from_str(text).map_err(|e| FrameError {
            id: Value::Null,
            code: "invalid_json",
            message: format!("the frame is not valid JSON: {e}"),
        })?;
        let Value::Object(mut obj) = value else {
            return Err(FrameError {
                id: Value::Null,
                code: "invalid_frame",
                message: "a frame must be a JSON object".into(),
            });
        };
        let id = obj.remove("id").unwrap_or(Value::Null);
        let bad = |message: &str| FrameError {
            id: id.clone(),
            code: "invalid_frame",
            message: message.to_owned(),
        };
        if !(id.is_string() || id.is_number()) {
            return Err(bad("`id` must be a string or a number"));
        }
        if obj.get("type").and_then(Value::as_str) != Some("req") {
            return Err(bad("`type` must be \"req\""));
        }
        let Some(Value::String(method)) = obj.remove("method") else {
            return Err(bad("`method` must be a string"));
        };
        let params = obj
            .remove("params")
            .unwrap_or(Value::Object(Default::default()));
        Ok(Request { id, method, params })
    }

    /// The params as `T`, or an `invalid_params` error naming the problem.
    pub fn params<T: serde::de::DeserializeOwned>(&self) -> Result<T, FrameError> {
        serde_json::from_value(self.params.clone()).map_err(|e| FrameError {
            id: self.id.clone(),
            code: "invalid_params",
            message: format!("invalid params for `{}`: {e}", self.method),
        })
    }
}

/// A frame the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame<'a, P: ?Sized = Value> {
    Res {
        id: &'a Value,
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        payload: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<ErrorBody<'a>>,
    },
    Event {
        event: &'a str,
        /// Serialized as it is: no JSON tree is built for it first.
        payload: &'a P,
        seq: u64,
    },
}

#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

/// `connect` params, both roles.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectParams {
    pub role: Role,
    /// The token; or send `Authorization: Bearer` on the upgrade request.
    pub token: Option<String>,
    /// Agent: most unacked deliveries pushed at once (default 10, 1..=1000).
    pub max_in_flight: Option<i64>,
    /// App: replay stored events after this cursor first (default: none,
    /// start live now).
    pub after: Option<String>,
    /// App: only this conversation.
    pub conversation_id: Option<String>,
}

/// Agent: `ack`.
#[derive(Debug, Deserialize)]
pub struct AckParams {
    pub ids: Vec<String>,
}

/// Agent: `send` (as `POST /send`; `replyId` closes a streamed reply).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendParams {
    pub conversation_id: String,
    pub to: String,
    #[serde(default)]
    pub text: String,
    /// Ids of uploads (`POST /attachments`) the reply carries.
    #[serde(default)]
    pub attachments: Vec<String>,
    pub reply_id: Option<String>,
    pub idempotency_key: Option<String>,
    /// `false`: an interim notice, the held deliveries stay unacked.
    pub ack: Option<bool>,
}

/// Agent: `reply.delta`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeltaParams {
    pub conversation_id: String,
    pub reply_id: String,
    pub text: String,
}

/// Agent: `typing`, and `renew` (its claims in the conversation last).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypingParams {
    pub conversation_id: String,
}

/// Agent: `progress`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressParams {
    pub conversation_id: String,
    pub kind: String,
    #[serde(default)]
    pub data: Value,
}

/// App: `inbound` (as `POST /inbound`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundParams {
    /// Required of an app; a user session may leave it out.
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub text: String,
    /// Ids of uploads (`POST /attachments`) the message carries.
    #[serde(default)]
    pub attachments: Vec<String>,
    pub idempotency_key: Option<String>,
    /// The conversation of that user's it continues (as `POST /inbound`).
    #[serde(default)]
    pub conversation_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_request_frame_parses() {
        let r = Request::parse(r#"{"type":"req","id":"1","method":"ack","params":{"ids":[]}}"#)
            .unwrap();
        assert_eq!((r.id, r.method.as_str()), (json!("1"), "ack"));
    }

    #[test]
    fn each_malformed_frame_names_its_problem() {
        let code = |t: &str| Request::parse(t).unwrap_err().code;
        assert_eq!(code("{"), "invalid_json");
        assert_eq!(code("[1]"), "invalid_frame");
        assert_eq!(code(r#"{"type":"req","method":"x"}"#), "invalid_frame");
        assert_eq!(
            code(r#"{"type":"res","id":1,"method":"x"}"#),
            "invalid_frame"
        );
        assert_eq!(code(r#"{"type":"req","id":1,"method":7}"#), "invalid_frame");
        let e = Request::parse(r#"{"type":"req","id":9,"method":7}"#).unwrap_err();
        assert_eq!(e.id, json!(9));
    }

    #[test]
    fn frames_serialize_in_the_gateway_envelope() {
        let id = json!("a");
        let res = serde_json::to_value::<ServerFrame<'_, Value>>(ServerFrame::Res {
            id: &id,
            ok: false,
            payload: None,
            error: Some(ErrorBody {
                code: "x",
                message: "y",
            }),
        })
        .unwrap();
        assert_eq!(
            res,
            json!({"type":"res","id":"a","ok":false,"error":{"code":"x","message":"y"}})
        );
        let payload = json!({});
        let ev = serde_json::to_value(ServerFrame::Event {
            event: "typing",
            payload: &payload,
            seq: 3,
        })
        .unwrap();
        assert_eq!(
            ev,
            json!({"type":"event","event":"typing","payload":{},"seq":3})
        );
    }
}
