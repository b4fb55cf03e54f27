//! Test-side peers of the real-time transports: a WebSocket client speaking
//! the relay's frames, and a Server-Sent Events reader.

use crate::helpers::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::VecDeque;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// What the server sent: a JSON text frame, or the end of the connection.
#[derive(Debug)]
pub enum Frame {
    Json(Value),
    Closed(Option<u16>),
}

pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Events that arrived while waiting for a response.
    pending: VecDeque<Value>,
}

impl Ws {
    pub async fn open(app: &TestApp) -> Ws {
        Ws::open_at(&app.base).await
    }

    /// A socket to the relay at `base` (`http://host:port`).
    pub async fn open_at(base: &str) -> Ws {
        let url = format!("{}/ws", base.replacen("http", "ws", 1));
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        Ws {
            stream,
            next_id: 0,
            pending: VecDeque::new(),
        }
    }

    /// A connected agent session.
    pub async fn agent(app: &TestApp, token: &str, max_in_flight: i64) -> Ws {
        Ws::agent_at(&app.base, token, max_in_flight).await
    }

    /// A connected agent session on the relay at `base`.
    pub async fn agent_at(base: &str, token: &str, max_in_flight: i64) -> Ws {
        let mut ws = Ws::open_at(base).await;
        let hello = ws
            .request(
                "connect",
                json!({"role": "agent", "token": token, "maxInFlight": max_in_flight}),
            )
            .await;
        assert_eq!(hello["ok"], true, "{hello}");
        ws
    }

    /// A connected app session; returns it and the `connect` payload.
    pub async fn app(app: &TestApp, token: &str, after: Option<&str>) -> (Ws, Value) {
        let mut ws = Ws::open(app).await;
        let mut params = json!({"role": "app", "token": token});
        if let Some(a) = after {
            params["after"] = json!(a);
        }
        let hello = ws.request("connect", params).await;
        assert_eq!(hello["ok"], true, "{hello}");
        (ws, hello["payload"].clone())
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::Text(text.into()))
            .await
            .expect("frame sent");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.stream
            .send(Message::Binary(bytes.into()))
            .await
            .expect("frame sent");
    }

    /// The next JSON frame or the end of the connection (bounded by PATIENCE).
    pub async fn frame(&mut self) -> Frame {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.stream.next())
                .await
                .expect("a frame in time");
            match next {
                Some(Ok(Message::Text(t))) => {
                    return Frame::Json(serde_json::from_str(&t).expect("JSON frame"))
                }
                Some(Ok(Message::Close(c))) => return Frame::Closed(c.map(|c| u16::from(c.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Frame::Closed(None),
            }
        }
    }

    /// Sends a request and returns its response; events seen meanwhile are kept.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        let frame = json!({"type": "req", "id": id, "method": method, "params": params});
        self.send_text(&frame.to_string()).await;
        self.response(&id).await
    }

    pub async fn response(&mut self, id: &str) -> Value {
        loop {
            match self.frame().await {
                Frame::Json(v) if v["type"] == "res" && v["id"] == id => return v,
                Frame::Json(v) if v["type"] == "event" => self.pending.push_back(v),
                Frame::Json(v) => panic!("unexpected frame while waiting for {id}: {v}"),
                Frame::Closed(code) => panic!("closed ({code:?}) while waiting for {id}"),
            }
        }
    }

    /// Sends request frames back to back without waiting, then collects their
    /// responses, which may come in any order; events seen meanwhile are kept.
    pub async fn pipeline(&mut self, requests: &[(&str, Value)]) -> Vec<Value> {
        let mut ids = Vec::new();
        for (method, params) in requests {
            self.next_id += 1;
            let id = format!("r{}", self.next_id);
            let frame = json!({"type": "req", "id": id, "method": method, "params": params});
            self.send_text(&frame.to_string()).await;
            ids.push(id);
        }
        let mut answers: std::collections::HashMap<String, Value> = Default::default();
        while answers.len() < ids.len() {
            match self.frame().await {
                Frame::Json(v) if v["type"] == "res" => {
                    let id = v["id"].as_str().expect("string id").to_owned();
                    assert!(ids.contains(&id), "a response to no request: {v}");
                    assert!(
                        answers.insert(id, v).is_none(),
                        "two responses to one request"
                    );
                }
                Frame::Json(v) if v["type"] == "event" => self.pending.push_back(v),
                Frame::Json(v) => panic!("unexpected frame: {v}"),
                Frame::Closed(code) => panic!("closed ({code:?}) during a pipeline"),
            }
        }
        ids.iter()
            .map(|id| answers.remove(id).expect("answered"))
            .collect()
    }

    /// The next event frame.
    pub async fn event(&mut self) -> Value {
        if let Some(e) = self.pending.pop_front() {
            return e;
        }
        match self.frame().await {
            Frame::Json(v) if v["type"] == "event" => v,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// The next event, or None when none comes within `wait` (for a peer
    /// that idles between requests).
    pub async fn event_within(&mut self, wait: std::time::Duration) -> Option<Value> {
        if let Some(e) = self.pending.pop_front() {
            return Some(e);
        }
        loop {
            match tokio::time::timeout(wait, self.stream.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).expect("JSON frame");
                    if v["type"] == "event" {
                        return Some(v);
                    }
                    panic!("unexpected frame: {v}");
                }
                Ok(Some(Ok(_))) => continue,
                Ok(_) => panic!("the connection ended"),
            }
        }
    }

    /// Whether an event arrives within `ms` milliseconds.
    pub async fn quiet_for(&mut self, ms: u64) -> bool {
        if !self.pending.is_empty() {
            return false;
        }
        let wait = std::time::Duration::from_millis(ms);
        match tokio::time::timeout(wait, self.stream.next()).await {
            Err(_) => true,
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                self.pending.push_back(v);
                false
            }
            Ok(_) => false,
        }
    }

    /// Reads until the connection ends; returns the close code, if one came.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            if let Frame::Closed(code) = self.frame().await {
                return code;
            }
        }
    }
}

/// One Server-Sent Event.
#[derive(Debug, Default, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

pub struct Sse {
    response: reqwest::Response,
    buffer: String,
}

impl Sse {
    pub async fn open(app: &TestApp, token: &str, query: &str, last_event_id: Option<&str>) -> Sse {
        let mut req = app
            .http
            .get(format!("{}/events{query}", app.base))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        // No overall timeout on a stream: each read below has its own.
        let response = req
            .timeout(std::time::Duration::from_secs(3600))
            .send()
            .await
            .expect("events");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        Sse {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (comments such as keep-alives are skipped).
    pub async fn event(&mut self) -> SseEvent {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut ev = SseEvent::default();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        ev.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        ev.event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if ev.event.is_empty() && data.is_empty() {
                    continue;
                }
                ev.data = serde_json::from_str(&data).unwrap_or(Value::Null);
                return ev;
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
                .await
                .expect("an event in time")
                .expect("stream readable")
                .expect("stream still open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads until the server ends the stream; false if it is still open
    /// after `PATIENCE`.
    pub async fn ended(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return false,
                Ok(Ok(Some(_))) => continue,
                Ok(_) => return true,
            }
        }
    }
}
