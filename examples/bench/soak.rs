//! The long run: a mixed load for N minutes on one release relay (SQLite,
//! full durability), watched minute by minute.
//!
//! The load: agents over WebSocket and over long poll answer every message
//! (`echo: <text>`); three apps' users send in a closed loop (a message, its
//! answer, a short pause), each app reading its answers its own way: a
//! WebSocket stream, a Server-Sent Events stream (both reconnect every
//! minute from their last cursor), a signed webhook to a local receiver; a
//! user uploads a file with a message every few seconds; users are new each
//! minute, so conversations go idle, expire and are purged by the retention
//! task (ttl 60 s, retention 120 s, purge every 30 s); through the CLI, beside
//! the running relay, an agent is created and an older one revoked every
//! minute, and the newest agent's token rotated half-way.
//!
//! Printed per minute: round trips, p99, errors, and the relay's RSS, open
//! file descriptors, threads, database and WAL size; at the end the slope of
//! each (least squares, per minute, from the second minute on) and the check
//! of every message sent against the answers received: none lost, none
//! answered twice.

use super::relay::{percentile, status_mib_of, RelayProc, ADMIN};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// One minute of the run.
#[derive(Debug, Serialize)]
pub struct Minute {
    pub minute: u64,
    pub round_trips: u64,
    pub p99_ms: f64,
    pub errors: u64,
    pub rss_mib: f64,
    pub fds: u64,
    pub threads: u64,
    pub db_mib: f64,
    pub wal_mib: f64,
}

#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub minutes: Vec<Minute>,
    /// Per metric: its least-squares slope per minute (minute 2 on).
    pub slopes: Vec<(String, f64)>,
    pub sent: usize,
    pub answered: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub errors: u64,
    pub first_errors: Vec<String>,
    /// The first messages answered twice.
    pub first_duplicates: Vec<String>,
    pub cli_commands: u64,
    pub uploads: u64,
}

/// What the load's tasks share.
#[derive(Default)]
struct Soak {
    stop: AtomicBool,
    /// Set when the users have stopped and the answers are being awaited.
    draining: AtomicBool,
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
    round_trips: AtomicU64,
    /// This minute's round-trip latencies (ms).
    latencies: Mutex<Vec<f64>>,
    /// Texts of the messages the relay took (2xx).
    sent: Mutex<HashSet<String>>,
    /// The answers seen, per text of the message answered: their ids.
    answers: Mutex<HashMap<String, HashSet<String>>>,
    /// Users waiting for an answer: user → (text, wake-up).
    waiters: Mutex<HashMap<String, (String, oneshot::Sender<()>)>>,
    cli_commands: AtomicU64,
    uploads: AtomicU64,
}

impl Soak {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().unwrap();
        if first.len() < 20 {
            eprintln!("soak error: {what}");
            first.push(what);
        }
    }

    /// An agent's answer, as an app read it (stream, SSE, webhook).
    fn answer(&self, reply: &Value) {
        let (Some(text), Some(id), Some(to)) = (
            reply["text"].as_str(),
            reply["id"].as_str(),
            reply["to"].as_str(),
        ) else {
            return;
        };
        let Some(asked) = text.strip_prefix("echo: ") else {
            return;
        };
        self.answers
            .lock()
            .unwrap()
            .entry(asked.to_owned())
            .or_default()
            .insert(id.to_owned());
        let mut waiters = self.waiters.lock().unwrap();
        if waiters.get(to).is_some_and(|(t, _)| t == asked) {
            if let Some((_, tx)) = waiters.remove(to) {
                let _ = tx.send(());
            }
        }
    }
}

/// The relay's minute-by-minute readings.
fn reading(pid: u32, db: &Path) -> (f64, u64, u64, f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0;
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    (
        status_mib_of(pid, "VmRSS:"),
        fds,
        threads,
        size(db.to_path_buf()),
        size(PathBuf::from(wal)),
    )
}

/// A column of the table, and how to read it off a minute.
type Metric = (&'static str, fn(&Minute) -> f64);

/// Least-squares slope of `ys` over their index.
fn slope(ys: &[f64]) -> f64 {
    let n = ys.len() as f64;
    if ys.len() < 2 {
        return 0.0;
    }
    let mx = (n - 1.0) / 2.0;
    let my = ys.iter().sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, y) in ys.iter().enumerate() {
        num += (i as f64 - mx) * (y - my);
        den += (i as f64 - mx).powi(2);
    }
    num / den
}

/// Runs an admin command of the relay binary on `db` (beside the running
/// relay); its JSON output.
async fn cli(soak: &Soak, bin: &Path, db: &Path, args: &[&str]) -> Option<Value> {
    let mut command = std::process::Command::new(bin);
    command
        .args(args)
        .arg("--db")
        .arg(db)
        .env("LOG_LEVEL", "warn");
    let what = args.join(" ");
    soak.cli_commands.fetch_add(1, Ordering::Relaxed);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap();
    match out {
        Ok(o) if o.status.success() => {
            Some(serde_json::from_slice(&o.stdout).unwrap_or(Value::Null))
        }
        Ok(o) => {
            soak.error(format!(
                "clawrelay {what}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            None
        }
        Err(e) => {
            soak.error(format!("clawrelay {what}: {e}"));
            None
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_open(base: &str, params: Value) -> Option<Socket> {
    let url = format!("{}/ws", base.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.ok()?;
    let connect = json!({"type": "req", "id": 0, "method": "connect", "params": params});
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        connect.to_string().into(),
    ))
    .await
    .ok()?;
    Some(ws)
}

/// An agent over WebSocket, for the whole run: answers each pushed message.
async fn agent_ws(soak: Arc<Soak>, base: String, token: String) {
    while !soak.stop.load(Ordering::Relaxed) {
        let Some(mut ws) = ws_open(
            &base,
            json!({"role": "agent", "token": token, "maxInFlight": 100}),
        )
        .await
        else {
            soak.error("agent WebSocket did not open".into());
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let mut id = 0u64;
        loop {
            let frame = tokio::select! {
                f = ws.next() => f,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    if soak.stop.load(Ordering::Relaxed) { return; }
                    continue;
                }
            };
            let Some(Ok(frame)) = frame else {
                if !soak.stop.load(Ordering::Relaxed) {
                    soak.error("agent WebSocket closed".into());
                }
                break;
            };
            let Ok(v) = serde_json::from_str::<Value>(frame.to_text().unwrap_or("")) else {
                continue;
            };
            if v["type"] == "res" && v["ok"] == false {
                soak.error(format!("agent WebSocket request failed: {v}"));
            }
            if v["event"] != "message" {
                continue;
            }
            let m = &v["payload"];
            id += 1;
            let req = json!({"type": "req", "id": id, "method": "send", "params": {
                "conversationId": m["conversationId"], "to": m["from"],
                "text": format!("echo: {}", m["text"].as_str().unwrap_or(""))}});
            if ws
                .send(tokio_tungstenite::tungstenite::Message::Text(
                    req.to_string().into(),
                ))
                .await
                .is_err()
            {
                break;
            }
        }
    }
}

/// An agent over long poll until `done`: answers each message. Its token
/// may be replaced while it runs (a rotation).
async fn agent_poll(
    soak: Arc<Soak>,
    http: reqwest::Client,
    base: String,
    token: Arc<Mutex<String>>,
    done: Arc<AtomicBool>,
) {
    let current = || token.lock().unwrap().clone();
    while !done.load(Ordering::Relaxed) && !soak.stop.load(Ordering::Relaxed) {
        let used = current();
        let r = http
            .get(format!("{base}/poll?wait=2&max=50"))
            .bearer_auth(&used)
            .send()
            .await;
        let v: Value = match r {
            Ok(r) if r.status().is_success() => r.json().await.unwrap_or(Value::Null),
            // Rotated while the request was on its way: the next one has
            // the new token.
            Ok(r) if r.status() == 401 && used != current() => continue,
            Ok(r) => {
                soak.error(format!("poll: {}", r.status()));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => {
                soak.error(format!("poll: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        for m in v["messages"].as_array().into_iter().flatten() {
            let body = json!({"to": m["from"], "conversationId": m["conversationId"],
                "text": format!("echo: {}", m["text"].as_str().unwrap_or(""))});
            for _ in 0..2 {
                let used = current();
                match http
                    .post(format!("{base}/send"))
                    .bearer_auth(&used)
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => break,
                    Ok(r) if r.status() == 401 && used != current() => continue,
                    Ok(r) => {
                        let status = r.status();
                        soak.error(format!(
                            "send: {status} {}",
                            r.text().await.unwrap_or_default()
                        ));
                        break;
                    }
                    Err(e) => {
                        soak.error(format!("send: {e}"));
                        break;
                    }
                }
            }
        }
    }
}

/// Agents that come and go through the CLI: every 30 s alternately a new
/// agent is created (and the one before it stopped and revoked), or the
/// newest one's token is rotated.
async fn churn(soak: Arc<Soak>, http: reqwest::Client, base: String, bin: PathBuf, db: PathBuf) {
    type Running = (
        String,
        Arc<Mutex<String>>,
        Arc<AtomicBool>,
        tokio::task::JoinHandle<()>,
    );
    let mut running: Option<Running> = None;
    let mut n = 0u64;
    while !soak.stop.load(Ordering::Relaxed) {
        n += 1;
        if n % 2 == 1 {
            let name = format!("churn-{n}");
            let Some(created) = cli(&soak, &bin, &db, &["client", "create", "--name", &name]).await
            else {
                tokio::time::sleep(Duration::from_secs(30)).await;
                continue;
            };
            let id = created["clientId"].as_str().unwrap_or("").to_owned();
            let token = Arc::new(Mutex::new(
                created["token"].as_str().unwrap_or("").to_owned(),
            ));
            let done = Arc::new(AtomicBool::new(false));
            let task = tokio::spawn(agent_poll(
                soak.clone(),
                http.clone(),
                base.clone(),
                token.clone(),
                done.clone(),
            ));
            if let Some((old, _, done, task)) = running.replace((id, token, done, task)) {
                done.store(true, Ordering::Relaxed);
                let _ = task.await;
                cli(&soak, &bin, &db, &["client", "revoke", &old]).await;
            }
        } else if let Some((id, token, _, _)) = &running {
            if let Some(rotated) = cli(&soak, &bin, &db, &["client", "rotate", id]).await {
                match rotated["token"].as_str() {
                    Some(t) => *token.lock().unwrap() = t.to_owned(),
                    None => soak.error(format!("client rotate printed no token: {rotated}")),
                }
            }
        }
        for _ in 0..60 {
            if soak.stop.load(Ordering::Relaxed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    if let Some((_, _, done, task)) = running {
        done.store(true, Ordering::Relaxed);
        let _ = task.await;
    }
}

/// App 0 reads its answers on a WebSocket stream, reconnecting every
/// minute from the last cursor it handled.
async fn app_ws(soak: Arc<Soak>, base: String, token: String) {
    let mut cursor: Option<String> = None;
    while !soak.stop.load(Ordering::Relaxed) {
        let mut params = json!({"role": "app", "token": token});
        if let Some(c) = &cursor {
            params["after"] = json!(c);
        }
        let Some(mut ws) = ws_open(&base, params).await else {
            soak.error("app WebSocket did not open".into());
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let frame = tokio::select! {
                f = ws.next() => f,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    if soak.stop.load(Ordering::Relaxed) || Instant::now() > until { break; }
                    continue;
                }
            };
            let Some(Ok(frame)) = frame else {
                if !soak.stop.load(Ordering::Relaxed) {
                    soak.error("app WebSocket closed".into());
                }
                break;
            };
            let Ok(v) = serde_json::from_str::<Value>(frame.to_text().unwrap_or("")) else {
                continue;
            };
            if v["type"] == "res" && cursor.is_none() {
                cursor = v["payload"]["cursor"].as_str().map(str::to_owned);
            }
            if v["event"] == "message" {
                let m = &v["payload"]["message"];
                if m["direction"] == "outbound" {
                    soak.answer(m);
                }
                if let Some(c) = v["payload"]["cursor"].as_str() {
                    cursor = Some(c.to_owned());
                }
            }
        }
        let _ = ws.close(None).await;
    }
}

/// App 1 reads its answers as Server-Sent Events, reconnecting every
/// minute from the last event id.
async fn app_sse(soak: Arc<Soak>, base: String, token: String) {
    let http = reqwest::Client::new();
    let mut cursor: Option<String> = None;
    while !soak.stop.load(Ordering::Relaxed) {
        let url = match &cursor {
            Some(c) => format!("{base}/events?after={c}"),
            None => format!("{base}/events"),
        };
        let mut response = match http.get(url).bearer_auth(&token).send().await {
            Ok(r) if r.status().is_success() => r,
            other => {
                soak.error(format!("events: {:?}", other.map(|r| r.status())));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let until = Instant::now() + Duration::from_secs(60);
        let mut buffer = String::new();
        loop {
            let chunk = tokio::select! {
                c = response.chunk() => c,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    if soak.stop.load(Ordering::Relaxed) || Instant::now() > until { break; }
                    continue;
                }
            };
            let chunk = match chunk {
                Ok(Some(c)) => c,
                _ => {
                    if !soak.stop.load(Ordering::Relaxed) {
                        soak.error("event stream ended".into());
                    }
                    break;
                }
            };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let (mut id, mut data, mut kind) = (None, String::new(), "");
                for line in event.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        kind = if v.trim() == "message" { "message" } else { "" };
                    }
                }
                if kind == "message" {
                    if let Ok(v) = serde_json::from_str::<Value>(&data) {
                        if v["message"]["direction"] == "outbound" {
                            soak.answer(&v["message"]);
                        }
                    }
                    if id.is_some() {
                        cursor = id;
                    }
                }
            }
        }
    }
}

/// App 2 receives its answers as webhooks (answering 200 at once).
async fn app_webhook(soak: Arc<Soak>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("receiver");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let hook = move |body: axum::body::Bytes| {
        let soak = soak.clone();
        async move {
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                if v["type"] == "message" {
                    soak.answer(&v["data"]);
                }
            }
            "ok"
        }
    };
    let router = axum::Router::new().route("/hook", axum::routing::post(hook));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    url
}

/// A user of an app, in a closed loop: a message, its answer, a pause. The
/// user is a new one each minute (`g<minute>`). With `upload`, each
/// message carries a file uploaded first, every 3 s.
async fn user(
    soak: Arc<Soak>,
    http: reqwest::Client,
    base: String,
    token: String,
    name: String,
    started: Instant,
    upload: bool,
) {
    let mut seq = 0u64;
    let pause = Duration::from_millis(if upload { 3000 } else { 250 });
    while !soak.stop.load(Ordering::Relaxed) && !soak.draining.load(Ordering::Relaxed) {
        seq += 1;
        let who = format!("{name}g{}", started.elapsed().as_secs() / 60);
        let text = format!("{who}#{seq}");
        let mut body = json!({"from": who, "text": text});
        if upload {
            let file: Vec<u8> = (0..64 * 1024)
                .map(|i: u64| (i.wrapping_mul(31).wrapping_add(seq) % 251) as u8)
                .collect();
            let r = http
                .post(format!("{base}/attachments?filename=soak-{seq}.bin"))
                .bearer_auth(&token)
                .body(file)
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => {
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    body["attachments"] = json!([v["id"]]);
                    soak.uploads.fetch_add(1, Ordering::Relaxed);
                }
                other => {
                    soak.error(format!("upload: {:?}", other.map(|r| r.status())));
                    tokio::time::sleep(pause).await;
                    continue;
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        soak.waiters
            .lock()
            .unwrap()
            .insert(who.clone(), (text.clone(), tx));
        let t = Instant::now();
        let r = http
            .post(format!("{base}/inbound"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => {
                soak.sent.lock().unwrap().insert(text.clone());
            }
            other => {
                soak.waiters.lock().unwrap().remove(&who);
                let what = match other {
                    Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                    Err(e) => e.to_string(),
                };
                soak.error(format!("inbound: {what}"));
                tokio::time::sleep(pause).await;
                continue;
            }
        }
        // An answer that arrived before the wait began already counts.
        let answered_early = soak.answers.lock().unwrap().contains_key(&text);
        if answered_early
            || tokio::time::timeout(Duration::from_secs(60), rx)
                .await
                .is_ok()
        {
            soak.round_trips.fetch_add(1, Ordering::Relaxed);
            soak.latencies
                .lock()
                .unwrap()
                .push(t.elapsed().as_secs_f64() * 1000.0);
        } else {
            soak.waiters.lock().unwrap().remove(&who);
            soak.error(format!("no answer to {text} within 60 s"));
        }
        tokio::time::sleep(pause).await;
    }
}

async fn create(http: &reqwest::Client, base: &str, kind: &str, name: &str) -> Value {
    http.post(format!("{base}/{kind}"))
        .bearer_auth(ADMIN)
        .json(&json!({ "name": name }))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json")
}

pub async fn run(bin: &Path, minutes: u64, users_per_app: usize) -> SoakReport {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("soak.db");
    let extra =
        "[conversations]\nttl_secs = 60\nretention_secs = 120\ncleanup_interval_secs = 30\n";
    let relay = RelayProc::start_with(bin, &db, "full", dir.path(), extra).await;
    let base = relay.base.clone();
    let http = reqwest::Client::new();
    let soak = Arc::new(Soak::default());

    let mut tasks = Vec::new();
    for k in 0..2 {
        let c = create(&http, &base, "clients", &format!("ws-agent-{k}")).await;
        let token = c["token"].as_str().unwrap().to_owned();
        tasks.push(tokio::spawn(agent_ws(soak.clone(), base.clone(), token)));
    }
    let c = create(&http, &base, "clients", "poll-agent").await;
    let token = Arc::new(Mutex::new(c["token"].as_str().unwrap().to_owned()));
    tasks.push(tokio::spawn(agent_poll(
        soak.clone(),
        http.clone(),
        base.clone(),
        token,
        Arc::new(AtomicBool::new(false)),
    )));
    tasks.push(tokio::spawn(churn(
        soak.clone(),
        http.clone(),
        base.clone(),
        bin.to_path_buf(),
        db.clone(),
    )));

    let mut apps = Vec::new();
    for a in 0..3 {
        let app = create(&http, &base, "apps", &format!("app-{a}")).await;
        apps.push((
            app["appId"].as_str().unwrap().to_owned(),
            app["token"].as_str().unwrap().to_owned(),
        ));
    }
    tasks.push(tokio::spawn(app_ws(
        soak.clone(),
        base.clone(),
        apps[0].1.clone(),
    )));
    tasks.push(tokio::spawn(app_sse(
        soak.clone(),
        base.clone(),
        apps[1].1.clone(),
    )));
    let hook = app_webhook(soak.clone()).await;
    let registered = http
        .post(format!("{base}/apps/{}/webhooks", apps[2].0))
        .bearer_auth(ADMIN)
        .json(&json!({"url": hook, "events": ["message"]}))
        .send()
        .await
        .expect("register webhook");
    assert!(registered.status().is_success(), "{}", registered.status());
    // The streams are open before the first message.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let mut users = Vec::new();
    for (a, (_, token)) in apps.iter().enumerate() {
        for u in 0..users_per_app {
            users.push(tokio::spawn(user(
                soak.clone(),
                http.clone(),
                base.clone(),
                token.clone(),
                format!("a{a}u{u}"),
                started,
                false,
            )));
        }
    }
    users.push(tokio::spawn(user(
        soak.clone(),
        http.clone(),
        base.clone(),
        apps[0].1.clone(),
        "a0up".into(),
        started,
        true,
    )));

    println!(
        "{:>6} {:>8} {:>8} {:>6} {:>8} {:>5} {:>7} {:>7} {:>7}",
        "minute", "rt", "p99 ms", "errors", "rss MiB", "fds", "threads", "db MiB", "wal MiB"
    );
    let mut rows = Vec::new();
    let mut errors_before = 0;
    for minute in 1..=minutes {
        let next = started + Duration::from_secs(60 * minute);
        tokio::time::sleep_until(next.into()).await;
        let mut lat = std::mem::take(&mut *soak.latencies.lock().unwrap());
        lat.sort_by(f64::total_cmp);
        let errors = soak.errors.load(Ordering::Relaxed);
        let (rss_mib, fds, threads, db_mib, wal_mib) = reading(relay.pid(), &db);
        let row = Minute {
            minute,
            round_trips: soak.round_trips.swap(0, Ordering::Relaxed),
            p99_ms: percentile(&lat, 0.99),
            errors: errors - errors_before,
            rss_mib,
            fds,
            threads,
            db_mib,
            wal_mib,
        };
        errors_before = errors;
        println!(
            "{:>6} {:>8} {:>8.1} {:>6} {:>8.1} {:>5} {:>7} {:>7.1} {:>7.1}",
            row.minute,
            row.round_trips,
            row.p99_ms,
            row.errors,
            row.rss_mib,
            row.fds,
            row.threads,
            row.db_mib,
            row.wal_mib
        );
        rows.push(row);
    }

    // The users stop; every message they sent gets its answer (or is lost).
    soak.draining.store(true, Ordering::Relaxed);
    for u in users {
        let _ = u.await;
    }
    let drain = Instant::now();
    loop {
        let missing = {
            let sent = soak.sent.lock().unwrap();
            let answers = soak.answers.lock().unwrap();
            sent.iter().filter(|t| !answers.contains_key(*t)).count()
        };
        if missing == 0 || drain.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Late duplicates would show up now.
    tokio::time::sleep(Duration::from_secs(5)).await;
    soak.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    relay.stop().await;
    // BENCH_KEEP=1 keeps the database, to look at what the relay stored.
    if std::env::var_os("BENCH_KEEP").is_some() {
        println!("kept {}", db.display());
        std::mem::forget(dir);
    }

    let first_errors = soak.first_errors.lock().unwrap().clone();
    let sent = soak.sent.lock().unwrap();
    let answers = soak.answers.lock().unwrap();
    let lost = sent.iter().filter(|t| !answers.contains_key(*t)).count();
    let duplicated = answers.values().filter(|ids| ids.len() > 1).count();
    let first_duplicates = answers
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .take(10)
        .map(|(text, ids)| format!("{text}: {ids:?}"))
        .collect();
    let steady = if rows.len() > 2 {
        &rows[1..]
    } else {
        &rows[..]
    };
    let series = |f: fn(&Minute) -> f64| steady.iter().map(f).collect::<Vec<f64>>();
    let metrics: [Metric; 7] = [
        ("round trips/min", |m| m.round_trips as f64),
        ("p99 ms", |m| m.p99_ms),
        ("rss MiB", |m| m.rss_mib),
        ("fds", |m| m.fds as f64),
        ("threads", |m| m.threads as f64),
        ("db MiB", |m| m.db_mib),
        ("wal MiB", |m| m.wal_mib),
    ];
    let slopes = metrics
        .iter()
        .map(|(name, f)| ((*name).to_owned(), slope(&series(*f))))
        .collect();
    SoakReport {
        minutes: rows,
        slopes,
        sent: sent.len(),
        answered: sent.iter().filter(|t| answers.contains_key(*t)).count(),
        lost,
        duplicated,
        errors: soak.errors.load(Ordering::Relaxed),
        first_errors,
        first_duplicates,
        cli_commands: soak.cli_commands.load(Ordering::Relaxed),
        uploads: soak.uploads.load(Ordering::Relaxed),
    }
}
