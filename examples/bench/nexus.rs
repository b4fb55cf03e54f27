//! The performance anchor: openclaw-nexus, the in-memory Node relay of this
//! family (`@houchenyang/nexus-gateway` on npm), installed into the
//! git-ignored `.cache/nexus/` and driven with the same load shape as
//! clawrelay: K bots on WebSockets answering `echo: <text>` at once, N users
//! in a closed loop, each waiting for its own answer (`POST /api/chat`
//! returns the bot's reply). It listens on 127.0.0.1 only (a preloaded
//! script pins `listen` to loopback). Nexus sends every message to its first
//! bot and stores nothing: the comparison is durable against in-memory.

use super::relay::{await_ready, cpu_secs_of, status_mib_of};
use super::roundtrip::{Load, Report, Shared, Transport, Window};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const VERSION: &str = "1.0.6";
const BOT_TOKEN: &str = "bench-bot-token";

/// Pins every server socket of the Node process to 127.0.0.1.
const LOOPBACK: &str = r#"const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\d+$/.test(args[0]))) {
    const rest = args.slice(1).filter((a) => typeof a !== 'string');
    return listen.call(this, Number(args[0]), '127.0.0.1', ...rest);
  }
  if (args[0] && typeof args[0] === 'object') args[0] = { ...args[0], host: '127.0.0.1' };
  return listen.apply(this, args);
};
"#;

/// The gateway's entry point, installed on first use.
fn entry() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/nexus");
    let index = root.join("node_modules/@houchenyang/nexus-gateway/dist/index.js");
    if !index.exists() {
        std::fs::create_dir_all(&root).expect("create .cache/nexus");
        println!(
            "installing @houchenyang/nexus-gateway@{VERSION} into {}",
            root.display()
        );
        let ok = Command::new("npm")
            .args(["install", "--legacy-peer-deps", "--no-audit", "--no-fund"])
            .arg(format!("@houchenyang/nexus-gateway@{VERSION}"))
            .current_dir(&root)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok && index.exists(),
            "npm install of the nexus gateway failed (needs node and npm)"
        );
    }
    index
}

pub struct NexusProc {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl NexusProc {
    pub async fn start(users: usize) -> NexusProc {
        let index = entry();
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let accounts: serde_json::Map<String, Value> = (0..users)
            .map(|u| {
                (
                    format!("user{u}"),
                    json!({"password": format!("pw{u}"), "displayName": format!("user{u}")}),
                )
            })
            .collect();
        let config = json!({
            "port": port, "sessionTTL": 86_400_000, "pingInterval": 30_000,
            "botTimeout": 90_000, "botToken": BOT_TOKEN, "users": accounts,
        });
        std::fs::write(dir.path().join("config.json"), config.to_string()).expect("config");
        std::fs::write(dir.path().join("loopback.cjs"), LOOPBACK).expect("preload");
        let log = std::fs::File::create(dir.path().join("nexus.log")).expect("log");
        let mut child = Command::new("node")
            .arg("-r")
            .arg(dir.path().join("loopback.cjs"))
            .arg(&index)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start node");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let login = format!("{base}/api/login");
        await_ready(
            &mut child,
            "nexus",
            &dir.path().join("nexus.log"),
            Duration::from_secs(60),
            async || {
                let r = http
                    .post(&login)
                    .json(&json!({"username": "user0", "password": "pw0"}))
                    .send()
                    .await;
                matches!(r, Ok(r) if r.status().is_success())
            },
        )
        .await;
        NexusProc {
            child,
            base,
            _dir: dir,
        }
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn run(nexus: &NexusProc, load: &Load) -> Report {
    let shared = Arc::new(Shared::default());
    let mut tasks = Vec::new();
    for k in 0..load.agents {
        tasks.push(tokio::spawn(bot(nexus.base.clone(), k)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    for u in 0..load.users {
        tasks.push(tokio::spawn(user(
            http.clone(),
            nexus.base.clone(),
            u,
            shared.clone(),
        )));
    }
    tokio::time::sleep(load.warmup).await;
    let pid = nexus.child.id();
    let cpu0 = cpu_secs_of(pid);
    shared.measuring.store(true, Ordering::SeqCst);
    let window_start = clawrelay::store::now_ms();
    let t0 = Instant::now();
    tokio::time::sleep(load.duration).await;
    shared.measuring.store(false, Ordering::SeqCst);
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_secs_of(pid);
    shared.stop.store(true, Ordering::SeqCst);
    for t in &tasks {
        t.abort();
    }
    shared.report(Window {
        agents: load.agents,
        users: load.users,
        transport: Transport::Ws,
        synchronous: "nexus".into(),
        span: (window_start, clawrelay::store::now_ms()),
        secs,
        cpu_secs: cpu1 - cpu0,
        peak_rss_mib: status_mib_of(pid, "VmHWM:"),
    })
}

/// A bot: registers, answers every chat with `echo: <content>` at once.
async fn bot(base: String, k: usize) {
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("{}/bot-ws", base.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("bot socket");
    let register = json!({"type": "register", "botId": format!("bot{k}"), "botName": format!("bot{k}"), "token": BOT_TOKEN});
    ws.send(Message::Text(register.to_string().into()))
        .await
        .expect("register");
    let mut n = 0u64;
    while let Some(Ok(frame)) = ws.next().await {
        let Ok(text) = frame.to_text() else { continue };
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        let answer = match v["type"].as_str() {
            Some("chat") => {
                n += 1;
                json!({
                    "type": "reply", "id": format!("b{k}-{n}"), "replyTo": v["id"],
                    "content": format!("echo: {}", v["content"].as_str().unwrap_or("")),
                    "done": true, "timestamp": clawrelay::store::now_ms(),
                })
            }
            Some("ping") => json!({"type": "pong"}),
            _ => continue,
        };
        if ws
            .send(Message::Text(answer.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A user: logs in, then sends and waits for each answer in turn.
async fn user(http: reqwest::Client, base: String, u: usize, shared: Arc<Shared>) {
    let login: Value = http
        .post(format!("{base}/api/login"))
        .json(&json!({"username": format!("user{u}"), "password": format!("pw{u}")}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login answer");
    let token = login["token"].as_str().expect("a session token").to_owned();
    let mut seq = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        seq += 1;
        let text = format!("user{u}-{seq}");
        let started = Instant::now();
        let answer = http
            .post(format!("{base}/api/chat"))
            .bearer_auth(&token)
            .json(&json!({"message": text}))
            .send()
            .await;
        let content = match answer {
            Ok(r) => r.json::<Value>().await.ok().map(|v| v["content"].clone()),
            Err(_) => None,
        };
        match content {
            Some(Value::String(c)) if c == format!("echo: {text}") => shared.measured(started),
            Some(Value::String(_)) => {
                shared.cross_talk.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
