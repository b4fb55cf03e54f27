//! The round-trip load: K agents answer every message at once (`echo: <text>`),
//! N app users each send a message and wait for its answer, which reaches them
//! through one app-side reader (the outbox long poll, or the live stream) the
//! way an app backend fans replies out. Every answer is checked against what
//! was sent: a wrong one is counted as cross-talk, never as a round trip.

use super::relay::{percentile, RelayProc, ADMIN};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Agents long-poll GET /poll and answer with POST /send; the app reads GET /outbox.
    Poll,
    /// Agents and the app hold WebSockets.
    Ws,
    /// Agents long-poll; replies reach the app through a webhook endpoint
    /// (a local receiver answering 200), signed and queued per endpoint.
    Webhook,
    /// As `ws`, but agents stream: a `reply.delta` ("echo: ") before the
    /// `send`; the first token's time is when the app's stream shows it.
    WsStream,
    /// Agents as `ws-stream`; each user is an OpenAI client: `POST
    /// /v1/chat/completions` with `stream: true` and its previous exchange
    /// (the conversation is found by its last answer), reading the chunks.
    Openai,
}

impl Transport {
    /// Whether agents write a delta before the reply.
    fn streams(self) -> bool {
        matches!(self, Transport::WsStream | Transport::Openai)
    }
}

#[derive(Clone, Debug)]
pub struct Load {
    pub agents: usize,
    pub users: usize,
    pub transport: Transport,
    pub warmup: Duration,
    pub duration: Duration,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub agents: usize,
    pub users: usize,
    pub transport: Transport,
    pub synchronous: String,
    pub seconds: f64,
    pub round_trips: u64,
    pub round_trips_per_sec: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// The slowest round trips: (seconds into the window they ended, ms).
    pub slowest: Vec<(f64, f64)>,
    pub errors: u64,
    pub cross_talk: u64,
    pub relay_cpu_ms_per_round_trip: f64,
    pub relay_peak_rss_mib: f64,
    pub commits_per_sec: f64,
    pub operations_per_commit: f64,
    /// Streaming transports: from sending to the answer's first piece.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_p99_ms: Option<f64>,
    /// Webhook transport: from the reply's commit to its arrival at the
    /// receiver (ms resolution: the reply's timestamp is Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_p99_ms: Option<f64>,
    /// Where a round trip's time goes (see [`STAGES`]); empty for the
    /// OpenAI transport.
    pub stages: Vec<Stage>,
    /// The measured window, Unix ms (to pick the relay's records of it).
    #[serde(skip)]
    pub window: (i64, i64),
    /// What PostgreSQL did in the window (on PostgreSQL, when measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pg: Option<super::pgstats::PgNumbers>,
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<String>>>>;

/// What the load's tasks share: when to stop and measure, and the counts.
#[derive(Default)]
pub struct Shared {
    pub stop: AtomicBool,
    pub measuring: AtomicBool,
    pub round_trips: AtomicU64,
    pub errors: AtomicU64,
    pub cross_talk: AtomicU64,
    /// (finished at, Unix ms; latency, ms) of each measured round trip.
    pub latencies: Mutex<Vec<(i64, f64)>>,
    /// Webhook lags (ms) measured.
    pub lags: Mutex<Vec<f64>>,
    /// Times to the first piece of an answer (ms) measured.
    pub first_pieces: Mutex<Vec<f64>>,
    /// When each user's message now waiting was sent (streaming over the
    /// app's stream: its first delta ends the wait for the first piece).
    pub sent_at: Mutex<HashMap<String, Instant>>,
    /// Each user's round trip under way, stage by stage.
    pub stamps: Mutex<HashMap<String, Stamps>>,
    /// The stages of each measured round trip, ms (see [`STAGES`]).
    pub stages: Mutex<Vec<[f64; 4]>>,
}

/// The stages of a round trip, as the bench sees them from outside:
/// - `inbound`: the user's POST /inbound, sent to answered (its commit);
/// - `to agent`: sent to the agent holding it (commit, wake-up, claim, push
///   or poll answer);
/// - `reply commit`: the agent's send, sent to answered (POST /send, or the
///   WebSocket `send`'s `res`);
/// - `to app`: the agent's send to the answer reaching its user (the reply's
///   commit, the app stream's or outbox's wake-up and read, the fan-out).
pub const STAGES: [&str; 4] = ["inbound", "to agent", "reply commit", "to app"];

/// When a round trip passed each point.
pub struct Stamps {
    /// The user's message: a late answer to an earlier one (a WebSocket
    /// `res` after the reply already reached the user) stamps nothing.
    text: String,
    sent: Instant,
    inbound_ok: Option<Instant>,
    at_agent: Option<Instant>,
    reply_sent: Option<Instant>,
    reply_ok: Option<Instant>,
}

/// A point of a round trip, stamped by the side that sees it.
#[derive(Clone, Copy)]
pub enum Point {
    InboundOk,
    AtAgent,
    ReplySent,
    ReplyOk,
}

/// p50 and p99 of one stage, ms.
#[derive(Debug, Serialize)]
pub struct Stage {
    pub stage: &'static str,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The measured window of one run: what `Shared::report` needs besides the counts.
pub struct Window {
    pub agents: usize,
    pub users: usize,
    pub transport: Transport,
    pub synchronous: String,
    /// Unix ms at its start and end.
    pub span: (i64, i64),
    pub secs: f64,
    /// The relay's CPU seconds used in it.
    pub cpu_secs: f64,
    pub peak_rss_mib: f64,
}

impl Shared {
    /// The report of a finished run (writer counters left at zero).
    pub fn report(&self, w: Window) -> Report {
        let n = self.round_trips.load(Ordering::SeqCst);
        let mut timed = std::mem::take(&mut *self.latencies.lock().unwrap());
        timed.sort_by(|a, b| b.1.total_cmp(&a.1));
        let slowest = timed
            .iter()
            .take(5)
            .map(|(at, ms)| (((at - w.span.0) as f64 / 1000.0), *ms))
            .collect();
        let mut lat: Vec<f64> = timed.iter().map(|(_, ms)| *ms).collect();
        lat.sort_by(f64::total_cmp);
        let mut lags = std::mem::take(&mut *self.lags.lock().unwrap());
        lags.sort_by(f64::total_cmp);
        let lag = |q| (!lags.is_empty()).then(|| percentile(&lags, q));
        let mut firsts = std::mem::take(&mut *self.first_pieces.lock().unwrap());
        firsts.sort_by(f64::total_cmp);
        let first = |q| (!firsts.is_empty()).then(|| percentile(&firsts, q));
        let samples = std::mem::take(&mut *self.stages.lock().unwrap());
        let stages = if samples.is_empty() {
            Vec::new()
        } else {
            STAGES
                .iter()
                .enumerate()
                .map(|(i, stage)| {
                    let mut v: Vec<f64> = samples
                        .iter()
                        .map(|s| s[i])
                        .filter(|x| !x.is_nan())
                        .collect();
                    v.sort_by(f64::total_cmp);
                    Stage {
                        stage,
                        p50_ms: percentile(&v, 0.50),
                        p99_ms: percentile(&v, 0.99),
                    }
                })
                .collect()
        };
        Report {
            stages,
            agents: w.agents,
            users: w.users,
            transport: w.transport,
            synchronous: w.synchronous,
            seconds: w.secs,
            round_trips: n,
            round_trips_per_sec: n as f64 / w.secs,
            p50_ms: percentile(&lat, 0.50),
            p95_ms: percentile(&lat, 0.95),
            p99_ms: percentile(&lat, 0.99),
            p999_ms: percentile(&lat, 0.999),
            slowest,
            max_ms: lat.last().copied().unwrap_or(0.0),
            errors: self.errors.load(Ordering::SeqCst),
            cross_talk: self.cross_talk.load(Ordering::SeqCst),
            relay_cpu_ms_per_round_trip: if n > 0 {
                w.cpu_secs * 1000.0 / n as f64
            } else {
                0.0
            },
            relay_peak_rss_mib: w.peak_rss_mib,
            commits_per_sec: 0.0,
            operations_per_commit: 0.0,
            lag_p50_ms: lag(0.50),
            lag_p99_ms: lag(0.99),
            ttft_p50_ms: first(0.50),
            ttft_p99_ms: first(0.99),
            window: w.span,
            pg: None,
        }
    }

    /// Records the first piece of an answer to a message sent at `started`,
    /// if measuring.
    pub fn first_piece(&self, started: Instant) {
        if self.measuring.load(Ordering::Relaxed) {
            self.first_pieces
                .lock()
                .unwrap()
                .push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }

    /// A user's round trip, its message `text`, starts now.
    pub fn begin(&self, user: &str, text: &str) -> Instant {
        let sent = Instant::now();
        self.stamps.lock().unwrap().insert(
            user.to_owned(),
            Stamps {
                text: text.to_owned(),
                sent,
                inbound_ok: None,
                at_agent: None,
                reply_sent: None,
                reply_ok: None,
            },
        );
        sent
    }

    /// `user`'s round trip of message `text` passed `point` now (the first
    /// time counts).
    pub fn stamp(&self, user: &str, text: &str, point: Point) {
        let now = Instant::now();
        if let Some(s) = self
            .stamps
            .lock()
            .unwrap()
            .get_mut(user)
            .filter(|s| s.text == text)
        {
            let slot = match point {
                Point::InboundOk => &mut s.inbound_ok,
                Point::AtAgent => &mut s.at_agent,
                Point::ReplySent => &mut s.reply_sent,
                Point::ReplyOk => &mut s.reply_ok,
            };
            slot.get_or_insert(now);
        }
    }

    /// Records the stages of `user`'s round trip, answered now.
    fn stages_of(&self, user: &str) {
        let now = Instant::now();
        let Some(s) = self.stamps.lock().unwrap().remove(user) else {
            return;
        };
        let ms = |a: Instant, b: Option<Instant>| {
            b.map(|b| b.saturating_duration_since(a).as_secs_f64() * 1000.0)
        };
        let stages = (|| {
            let reply_sent = s.reply_sent?;
            // The send's answer may come after the reply reached the user
            // (a WebSocket `res`): that stage is then not known (NaN).
            Some([
                ms(s.sent, s.inbound_ok)?,
                ms(s.sent, s.at_agent)?,
                ms(reply_sent, s.reply_ok).unwrap_or(f64::NAN),
                ms(reply_sent, Some(now))?,
            ])
        })();
        if let Some(stages) = stages {
            self.stages.lock().unwrap().push(stages);
        }
    }

    /// Counts `user`'s round trip that started at `started`, if measuring,
    /// with its stages.
    pub fn measured_with_stages(&self, user: &str, started: Instant) {
        if self.measuring.load(Ordering::Relaxed) {
            self.stages_of(user);
        }
        self.measured(started);
    }

    /// Counts a round trip that started at `started`, if measuring.
    pub fn measured(&self, started: Instant) {
        if self.measuring.load(Ordering::Relaxed) {
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            self.latencies.lock().unwrap().push((
                clawrelay::store::now_ms(),
                started.elapsed().as_secs_f64() * 1000.0,
            ));
        }
    }
}

async fn post(
    http: &reqwest::Client,
    url: String,
    token: &str,
    body: Value,
) -> Result<Value, String> {
    let r = http
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let v: Value = r.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {v}"));
    }
    Ok(v)
}

async fn stats(http: &reqwest::Client, base: &str) -> (u64, u64) {
    let v: Value = match http
        .get(format!("{base}/stats"))
        .bearer_auth(ADMIN)
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    (
        v["commits"].as_u64().unwrap_or(0),
        v["operations"].as_u64().unwrap_or(0),
    )
}

pub async fn run(relay: &RelayProc, load: &Load, synchronous: &str) -> Report {
    run_on(std::slice::from_ref(relay), load, synchronous, None).await
}

/// The load on relays sharing one database: agent k connects to relay
/// k mod n, user u posts to relay u mod n, the app reads its outbox (or
/// stream) through the first relay. CPU is the relays' sum. `pg` measures
/// what PostgreSQL did over the same window.
pub async fn run_on(
    relays: &[RelayProc],
    load: &Load,
    synchronous: &str,
    pg: Option<&super::pgstats::Probe>,
) -> Report {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let bases: Vec<String> = relays.iter().map(|r| r.base.clone()).collect();
    let on = |i: usize| bases[i % bases.len()].clone();
    let base = on(0);
    let cpu = || relays.iter().map(RelayProc::cpu_secs).sum::<f64>();
    let app = post(
        &http,
        format!("{base}/apps"),
        ADMIN,
        json!({"name": "bench"}),
    )
    .await
    .expect("app");
    let app_token = app["token"].as_str().unwrap().to_owned();
    let mut agent_tokens = Vec::new();
    for k in 0..load.agents {
        let c = post(
            &http,
            format!("{base}/clients"),
            ADMIN,
            json!({"name": format!("agent-{k}")}),
        )
        .await
        .expect("client");
        agent_tokens.push(c["token"].as_str().unwrap().to_owned());
    }

    let shared = Arc::new(Shared::default());
    let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
    let mut tasks = Vec::new();
    if load.transport == Transport::Webhook {
        let (url, receiver) = app_webhook(shared.clone(), waiters.clone()).await;
        tasks.push(receiver);
        let app_id = app["appId"].as_str().unwrap();
        post(
            &http,
            format!("{base}/apps/{app_id}/webhooks"),
            ADMIN,
            json!({"url": url, "events": ["message"]}),
        )
        .await
        .expect("webhook");
    }

    for (k, token) in agent_tokens.into_iter().enumerate() {
        let (http, base, shared) = (http.clone(), on(k), shared.clone());
        let transport = load.transport;
        tasks.push(tokio::spawn(async move {
            match transport {
                Transport::Poll | Transport::Webhook => agent_poll(http, base, token, shared).await,
                Transport::Ws | Transport::WsStream | Transport::Openai => {
                    agent_ws(base, token, shared, transport.streams()).await
                }
            }
        }));
    }
    // Agents connected before users start: new conversations spread over them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        let (http, base, token, shared, waiters) = (
            http.clone(),
            base.clone(),
            app_token.clone(),
            shared.clone(),
            waiters.clone(),
        );
        let transport = load.transport;
        tasks.push(tokio::spawn(async move {
            match transport {
                Transport::Poll => app_outbox(http, base, token, shared, waiters).await,
                Transport::Ws | Transport::WsStream => {
                    app_stream(base, token, shared, waiters).await
                }
                Transport::Webhook | Transport::Openai => {}
            }
        }));
    }
    // More streams of the same app (a dashboard, a second backend), each
    // carrying every message: `BENCH_WATCHERS=N` (WebSocket transports).
    let watchers: usize = std::env::var("BENCH_WATCHERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if matches!(load.transport, Transport::Ws | Transport::WsStream) {
        for _ in 0..watchers {
            let (base, token, shared) = (base.clone(), app_token.clone(), shared.clone());
            tasks.push(tokio::spawn(watch(base, token, shared)));
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for u in 0..load.users {
        let (http, base, token, shared, waiters) = (
            http.clone(),
            on(u),
            app_token.clone(),
            shared.clone(),
            waiters.clone(),
        );
        let name = format!("user{u}");
        tasks.push(if load.transport == Transport::Openai {
            tokio::spawn(openai_user(http, base, token, name, shared))
        } else {
            tokio::spawn(user(http, base, token, name, shared, waiters))
        });
    }

    tokio::time::sleep(load.warmup).await;
    let (c0, o0) = stats(&http, &base).await;
    if let Some(pg) = pg {
        pg.start().await;
    }
    let cpu0 = cpu();
    shared.measuring.store(true, Ordering::SeqCst);
    let window_start = clawrelay::store::now_ms();
    let t0 = Instant::now();
    tokio::time::sleep(load.duration).await;
    shared.measuring.store(false, Ordering::SeqCst);
    let window = (window_start, clawrelay::store::now_ms());
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = cpu();
    let pg = match pg {
        Some(pg) => Some(pg.finish().await),
        None => None,
    };
    let (c1, o1) = stats(&http, &base).await;
    shared.stop.store(true, Ordering::SeqCst);
    for t in &tasks {
        t.abort();
    }

    let commits = c1.saturating_sub(c0);
    Report {
        pg,
        commits_per_sec: commits as f64 / secs,
        operations_per_commit: if commits > 0 {
            o1.saturating_sub(o0) as f64 / commits as f64
        } else {
            0.0
        },
        ..shared.report(Window {
            agents: load.agents,
            users: load.users,
            transport: load.transport,
            synchronous: synchronous.to_owned(),
            span: window,
            secs,
            cpu_secs: cpu1 - cpu0,
            peak_rss_mib: relays
                .iter()
                .map(RelayProc::peak_rss_mib)
                .fold(0.0, f64::max),
        })
    }
}

/// One app user: send, wait for the answer, check it, repeat.
async fn user(
    http: reqwest::Client,
    base: String,
    token: String,
    name: String,
    shared: Arc<Shared>,
    waiters: Waiters,
) {
    let mut seq = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        seq += 1;
        let text = format!("{name}-{seq}");
        let (tx, rx) = oneshot::channel();
        waiters.lock().unwrap().insert(name.clone(), tx);
        let started = shared.begin(&name, &text);
        shared.sent_at.lock().unwrap().insert(name.clone(), started);
        let posted = post(
            &http,
            format!("{base}/inbound"),
            &token,
            json!({"from": name, "text": text}),
        )
        .await;
        shared.stamp(&name, &text, Point::InboundOk);
        if let Err(e) = posted {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("inbound failed: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(answer)) if answer == format!("echo: {text}") => {
                shared.measured_with_stages(&name, started)
            }
            Ok(Ok(answer)) => {
                shared.cross_talk.fetch_add(1, Ordering::Relaxed);
                eprintln!("cross-talk: {name} sent {text:?}, got {answer:?}");
            }
            _ => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                waiters.lock().unwrap().remove(&name);
            }
        }
    }
}

fn deliver(waiters: &Waiters, reply: &Value) {
    let (Some(to), Some(text)) = (reply["to"].as_str(), reply["text"].as_str()) else {
        return;
    };
    if let Some(tx) = waiters.lock().unwrap().remove(to) {
        let _ = tx.send(text.to_owned());
    }
}

/// The app backend over HTTP: one outbox long poll, fanning replies out.
async fn app_outbox(
    http: reqwest::Client,
    base: String,
    token: String,
    shared: Arc<Shared>,
    waiters: Waiters,
) {
    let mut cursor = "0".to_owned();
    while !shared.stop.load(Ordering::Relaxed) {
        let url = format!("{base}/outbox?after={cursor}&wait=10&limit=1000");
        let Ok(r) = http.get(url).bearer_auth(&token).send().await else {
            continue;
        };
        let Ok(v) = r.json::<Value>().await else {
            continue;
        };
        for m in v["messages"].as_array().into_iter().flatten() {
            deliver(&waiters, m);
        }
        if let Some(c) = v["cursor"].as_str() {
            cursor = c.to_owned();
        }
    }
}

/// The app backend as a webhook receiver: answers 200 at once and fans the
/// replies out; records how long after its commit each reply arrived.
async fn app_webhook(
    shared: Arc<Shared>,
    waiters: Waiters,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("receiver");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let hook = move |body: axum::body::Bytes| {
        let (shared, waiters) = (shared.clone(), waiters.clone());
        async move {
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                if v["type"] == "message" {
                    if shared.measuring.load(Ordering::Relaxed) {
                        let sent = v["data"]["timestamp"].as_i64().unwrap_or(0);
                        let lag = (clawrelay::store::now_ms() - sent) as f64;
                        shared.lags.lock().unwrap().push(lag);
                    }
                    deliver(&waiters, &v["data"]);
                }
            }
            "ok"
        }
    };
    let router = axum::Router::new().route("/hook", axum::routing::post(hook));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (url, task)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(base: &str, params: Value) -> Socket {
    let url = format!("{}/ws", base.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket");
    let connect = json!({"type": "req", "id": 0, "method": "connect", "params": params});
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        connect.to_string().into(),
    ))
    .await
    .expect("connect");
    ws
}

/// The app backend over WebSocket: the live stream, fanning replies out.
async fn app_stream(base: String, token: String, shared: Arc<Shared>, waiters: Waiters) {
    let mut ws = open(&base, json!({"role": "app", "token": token})).await;
    while let Some(Ok(frame)) = ws.next().await {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(text) = frame.to_text() else { continue };
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        if v["event"] == "message" && v["payload"]["message"]["direction"] == "outbound" {
            deliver(&waiters, &v["payload"]["message"]);
        }
        if v["event"] == "reply.delta" {
            let user = v["payload"]["userId"].as_str().unwrap_or_default();
            if let Some(sent) = shared.sent_at.lock().unwrap().remove(user) {
                shared.first_piece(sent);
            }
        }
    }
}

/// Another stream of the app: reads every frame, looks at none.
async fn watch(base: String, token: String, shared: Arc<Shared>) {
    let mut ws = open(&base, json!({"role": "app", "token": token})).await;
    while let Some(Ok(_)) = ws.next().await {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
    }
}

/// An agent over HTTP: long-poll, answer each message at once, and keep
/// polling while the answers are on their way.
async fn agent_poll(http: reqwest::Client, base: String, token: String, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        let url = format!("{base}/poll?wait=10&max=100");
        let Ok(r) = http.get(url).bearer_auth(&token).send().await else {
            continue;
        };
        let Ok(v) = r.json::<Value>().await else {
            continue;
        };
        let messages = v["messages"].as_array().cloned().unwrap_or_default();
        for m in &messages {
            let (user, text) = (m["from"].as_str(), m["text"].as_str());
            shared.stamp(
                user.unwrap_or_default(),
                text.unwrap_or_default(),
                Point::AtAgent,
            );
        }
        for m in messages {
            let user = m["from"].as_str().unwrap_or_default().to_owned();
            let text = m["text"].as_str().unwrap_or_default().to_owned();
            let body = json!({"to": m["from"], "text": format!("echo: {}", m["text"].as_str().unwrap_or("")), "conversationId": m["conversationId"]});
            let (http, base, token, shared) =
                (http.clone(), base.clone(), token.clone(), shared.clone());
            tokio::spawn(async move {
                shared.stamp(&user, &text, Point::ReplySent);
                let sent = post(&http, format!("{base}/send"), &token, body).await;
                shared.stamp(&user, &text, Point::ReplyOk);
                if sent.is_err() {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }
}

/// An agent over WebSocket: pushed messages answered with `send` at once
/// (with `deltas`, after a `reply.delta` of its first piece).
async fn agent_ws(base: String, token: String, shared: Arc<Shared>, deltas: bool) {
    let mut ws = open(
        &base,
        json!({"role": "agent", "token": token, "maxInFlight": 1000}),
    )
    .await;
    let mut id = 0u64;
    // Requests of `send` awaiting their `res`: id -> the user answered and
    // the message.
    let mut sending: HashMap<u64, (String, String)> = HashMap::new();
    loop {
        let frame = match ws.next().await {
            Some(Ok(frame)) => frame,
            other => {
                eprintln!("agent socket ended: {other:?}");
                return;
            }
        };
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(text) = frame.to_text() else { continue };
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        if v["type"] == "res" && v["ok"] == false {
            shared.errors.fetch_add(1, Ordering::Relaxed);
        }
        if v["type"] == "res" {
            if let Some((user, text)) = v["id"].as_u64().and_then(|id| sending.remove(&id)) {
                shared.stamp(&user, &text, Point::ReplyOk);
            }
        }
        if v["event"] != "message" {
            continue;
        }
        let m = &v["payload"];
        let user = m["from"].as_str().unwrap_or_default().to_owned();
        let asked = m["text"].as_str().unwrap_or_default().to_owned();
        shared.stamp(&user, &asked, Point::AtAgent);
        let mut frames = Vec::new();
        id += 1;
        let reply_id = format!("r{id}");
        if deltas {
            frames.push(
                json!({"type": "req", "id": format!("d{id}"), "method": "reply.delta", "params": {
                "conversationId": m["conversationId"], "replyId": reply_id, "text": "echo: "}}),
            );
        }
        frames.push(
            json!({"type": "req", "id": id, "method": "send", "params": {
            "conversationId": m["conversationId"], "to": m["from"], "replyId": reply_id,
            "text": format!("echo: {}", m["text"].as_str().unwrap_or(""))}}),
        );
        shared.stamp(&user, &asked, Point::ReplySent);
        sending.insert(id, (user, asked));
        for req in frames {
            if ws
                .send(tokio_tungstenite::tungstenite::Message::Text(
                    req.to_string().into(),
                ))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// One OpenAI client: asks through `/v1/chat/completions` (streamed) with
/// its previous exchange, reads the chunks, checks the answer, repeats.
async fn openai_user(
    http: reqwest::Client,
    base: String,
    token: String,
    name: String,
    shared: Arc<Shared>,
) {
    let mut seq = 0u64;
    let mut previous: Option<(String, String)> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        seq += 1;
        let text = format!("{name}-{seq}");
        let mut messages = Vec::new();
        if let Some((asked, answered)) = &previous {
            messages.push(json!({"role": "user", "content": asked}));
            messages.push(json!({"role": "assistant", "content": answered}));
        }
        messages.push(json!({"role": "user", "content": text}));
        let body =
            json!({"model": "clawrelay", "user": name, "stream": true, "messages": messages});
        let started = Instant::now();
        let sent = http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await;
        let mut response = match sent {
            Ok(r) if r.status().is_success() => r,
            other => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("completion failed: {:?}", other.map(|r| r.status()));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (mut buffer, mut answer, mut first, mut done) =
            (String::new(), String::new(), false, false);
        while !done {
            let Ok(Some(bytes)) = response.chunk().await else {
                break;
            };
            buffer.push_str(&String::from_utf8_lossy(&bytes));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                for data in event.lines().filter_map(|l| l.strip_prefix("data: ")) {
                    if data == "[DONE]" {
                        done = true;
                        continue;
                    }
                    let Ok(v) = serde_json::from_str::<Value>(data) else {
                        continue;
                    };
                    let piece = v["choices"][0]["delta"]["content"].as_str().unwrap_or("");
                    if !piece.is_empty() {
                        if !first {
                            first = true;
                            shared.first_piece(started);
                        }
                        answer.push_str(piece);
                    }
                }
            }
        }
        if answer == format!("echo: {text}") {
            shared.measured(started);
            previous = Some((text, answer));
        } else if done {
            shared.cross_talk.fetch_add(1, Ordering::Relaxed);
            eprintln!("cross-talk: {name} sent {text:?}, got {answer:?}");
        } else {
            shared.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}
