//! Test harness: the real application on 127.0.0.1:0 against a temp SQLite
//! file, talked to over HTTP. `restart` stops it (graceful) and starts a new
//! one on the same file.
//!
//! With `TEST_POSTGRES_URL` set to a PostgreSQL URL (scripts/test.sh
//! sets it for its second run of this suite, on a throwaway cluster), each
//! app gets a new database of that server instead, and the tests that are
//! about the SQLite file itself say so and pass over it ([`sqlite_only`]).

use clawrelay::app::App;
use clawrelay::config::{Config, Secret};
use clawrelay::shutdown::ShutdownTrigger;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::SqlitePool;
use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;
use tokio::task::JoinHandle;

pub const ADMIN: &str = "test-admin-token";

/// Every wait in a test is bounded by this.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct TestApp {
    pub base: String,
    pub config: Config,
    pub http: reqwest::Client,
    trigger: ShutdownTrigger,
    server: Option<JoinHandle<std::io::Result<()>>>,
    // Last: the directory outlives the server using it.
    _dir: TempDir,
}

/// Short real intervals so time-based behaviour shows within a second or two.
pub fn fast_config() -> Config {
    let mut c = Config::default();
    c.server.admin_token = Some(Secret::new(ADMIN.to_owned()));
    c.delivery.lease_secs = 300;
    c.delivery.long_poll_max_secs = 10;
    c.clients.stale_after_secs = 30;
    c.clients.disconnected_after_secs = 300;
    c.tasks.maintenance_interval_secs = 1;
    // Tests make many requests (and deliberate auth failures) from one address.
    c.rate_limits.app_per_sec = 0;
    c.rate_limits.user_per_sec = 0;
    c.rate_limits.agent_per_sec = 0;
    c.rate_limits.failed_auth_per_min = 0;
    c
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

/// The PostgreSQL server the suite runs on, if any.
pub fn postgres_server() -> Option<String> {
    std::env::var("TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// True (after saying why on stderr) when the suite runs on PostgreSQL and
/// this test is about the SQLite file itself: the caller returns.
pub fn sqlite_only(why: &str) -> bool {
    let on_postgres = postgres_server().is_some();
    if on_postgres {
        eprintln!("passed over on PostgreSQL: {why}");
    }
    on_postgres
}

/// A new, empty database on the suite's PostgreSQL server; its URL.
async fn new_postgres_database(server: &str) -> String {
    use sqlx::Connection;
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(server)
        .await
        .expect("TEST_POSTGRES_URL accepts connections");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create a test database");
    let _ = admin.close().await;
    let mut url = url::Url::parse(server).expect("TEST_POSTGRES_URL is a URL");
    url.set_path(&name);
    url.to_string()
}

pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = fast_config();
    config.storage.path = dir.path().join("relay.db");
    if let Some(server) = postgres_server() {
        config.storage.url = Some(new_postgres_database(&server).await);
        config.storage.max_connections = 8;
    }
    tweak(&mut config);
    let (base, trigger, server) = start(config.clone()).await;
    TestApp {
        base,
        config,
        http: reqwest::Client::builder()
            .timeout(PATIENCE)
            .build()
            .expect("http client"),
        trigger,
        server: Some(server),
        _dir: dir,
    }
}

async fn start(config: Config) -> (String, ShutdownTrigger, JoinHandle<std::io::Result<()>>) {
    let app = App::build(config).await.expect("app builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let trigger = app.shutdown_trigger();
    let server = tokio::spawn(app.serve(listener));
    (base, trigger, server)
}

/// An HTTP answer: status and JSON body (Null when the body is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    pub fn ok(self) -> Value {
        assert!(
            self.status.is_success(),
            "expected 2xx, got {} {}",
            self.status,
            self.body
        );
        self.body
    }

    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl TestApp {
    pub async fn stop(&mut self) {
        self.trigger.trigger();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(PATIENCE, server)
                .await
                .expect("server stops in time")
                .expect("server task")
                .expect("server ran");
        }
    }

    /// Graceful stop, then a new server on the same database file.
    pub async fn restart(&mut self) {
        self.stop().await;
        let (base, trigger, server) = start(self.config.clone()).await;
        self.base = base;
        self.trigger = trigger;
        self.server = Some(server);
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.request_with(method, path, token, body, &[]).await
    }

    pub async fn request_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body read");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            headers,
        }
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: impl Into<String>,
    ) -> Reply {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header("content-type", "application/json")
            .body(body.into());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.json().await.unwrap_or(Value::Null);
        Reply {
            status,
            body,
            headers,
        }
    }

    /// `POST /attachments` with raw bytes and extra headers.
    pub async fn upload(
        &self,
        token: &str,
        path_and_query: &str,
        bytes: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self
            .http
            .post(format!("{}{}", self.base, path_and_query))
            .bearer_auth(token)
            .body(bytes);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("upload sent");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body read");
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            headers,
        }
    }

    /// `GET` of a download: status, headers and the raw bytes.
    pub async fn download(
        &self,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
        let mut req = self
            .http
            .get(format!("{}{}", self.base, path))
            .bearer_auth(token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("download sent");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("bytes read").to_vec();
        (status, headers, bytes)
    }

    /// One number from the database (a COUNT, a PRAGMA).
    pub async fn scalar(&self, sql: &str) -> i64 {
        if let Some(url) = &self.config.storage.url {
            let db = sqlx::PgPool::connect(url).await.expect("connect");
            let n: i64 = sqlx::query_scalar(sql).fetch_one(&db).await.expect(sql);
            db.close().await;
            return n;
        }
        let db = self.db().await;
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&db).await.expect(sql);
        db.close().await;
        n
    }

    /// A text column of every row `sql` returns, on either backend.
    pub async fn texts(&self, sql: &str) -> Vec<String> {
        if let Some(url) = &self.config.storage.url {
            let db = sqlx::PgPool::connect(url).await.expect("connect");
            let rows = sqlx::query_scalar(sql).fetch_all(&db).await.expect(sql);
            db.close().await;
            return rows;
        }
        let db = self.db().await;
        let rows = sqlx::query_scalar(sql).fetch_all(&db).await.expect(sql);
        db.close().await;
        rows
    }

    /// One binary value from the database, on either backend.
    pub async fn blob(&self, sql: &str) -> Vec<u8> {
        if let Some(url) = &self.config.storage.url {
            let db = sqlx::PgPool::connect(url).await.expect("connect");
            let v = sqlx::query_scalar(sql).fetch_one(&db).await.expect(sql);
            db.close().await;
            return v;
        }
        let db = self.db().await;
        let v = sqlx::query_scalar(sql).fetch_one(&db).await.expect(sql);
        db.close().await;
        v
    }

    /// Whether the app runs on the SQLite file (not on PostgreSQL).
    pub fn on_sqlite(&self) -> bool {
        self.config.storage.url.is_none()
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.request(Method::POST, path, Some(token), Some(body))
            .await
    }

    /// A new client; returns (id, token).
    pub async fn create_client(&self, name: &str) -> (String, String) {
        let b = self
            .post("/clients", ADMIN, json!({ "name": name }))
            .await
            .ok();
        (
            b["clientId"].as_str().unwrap().to_owned(),
            b["token"].as_str().unwrap().to_owned(),
        )
    }

    /// A new app; returns (id, token).
    pub async fn create_app(&self, name: &str) -> (String, String) {
        let b = self
            .post("/apps", ADMIN, json!({ "name": name }))
            .await
            .ok();
        (
            b["appId"].as_str().unwrap().to_owned(),
            b["token"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn inbound(&self, app_token: &str, from: &str, text: &str) -> Value {
        self.post("/inbound", app_token, json!({ "from": from, "text": text }))
            .await
            .ok()
    }

    /// Claimed messages of one poll.
    pub async fn poll(&self, client_token: &str, query: &str) -> Vec<Value> {
        let b = self.get(&format!("/poll{query}"), client_token).await.ok();
        b["messages"].as_array().cloned().unwrap_or_default()
    }

    pub async fn send(&self, client_token: &str, to_message: &Value, text: &str) -> Value {
        self.post(
            "/send",
            client_token,
            json!({ "to": to_message["from"], "text": text, "conversationId": to_message["conversationId"] }),
        )
        .await
        .ok()
    }

    pub async fn ack(&self, client_token: &str, ids: &[&Value]) -> Value {
        let ids: Vec<Value> = ids.iter().map(|m| m["id"].clone()).collect();
        self.post("/ack", client_token, json!({ "ids": ids }))
            .await
            .ok()
    }

    /// Runs an admin command of the real binary on this relay's database
    /// (`--db` is added); asserts it succeeded and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.cli_with_stdin(args, "");
        assert!(ok, "clawrelay {args:?}: {err}");
        out
    }

    /// Runs an admin command with `stdin` on its standard input; returns
    /// whether it succeeded, its stdout and its stderr.
    pub fn cli_with_stdin(&self, args: &[&str], stdin: &str) -> (bool, String, String) {
        use std::io::Write;
        let mut command = Command::new(env!("CARGO_BIN_EXE_clawrelay"));
        match &self.config.storage.url {
            Some(url) => command.arg("--database-url").arg(url),
            None => command.arg("--db").arg(&self.config.storage.path),
        };
        let mut child = command
            .args(args)
            .env("LOG_LEVEL", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("clawrelay runs");
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.as_bytes()).expect("stdin written");
        }
        let out = child.wait_with_output().expect("clawrelay ends");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }

    /// A direct read-only look at the database, for what the API does not show.
    pub async fn db(&self) -> SqlitePool {
        open_ro(&self.config.storage.path).await
    }

    /// Opens a user session of `user` with the app token; returns (token, body).
    pub async fn open_session(&self, app_token: &str, user: &str) -> (String, Value) {
        let b = self
            .post("/sessions", app_token, json!({ "userId": user }))
            .await
            .ok();
        (b["token"].as_str().expect("a session token").to_owned(), b)
    }

    /// Row counts of every table: to show a failed request wrote nothing.
    pub async fn row_counts(&self) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for table in [
            "clients",
            "apps",
            "conversations",
            "messages",
            "deliveries",
            "idempotency_keys",
            "settings",
            "webhooks",
            "webhook_events",
            "webhook_deliveries",
        ] {
            let n = self.scalar(&format!("SELECT COUNT(*) FROM {table}")).await;
            out.push((table.to_owned(), n));
        }
        out
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.trigger.trigger();
    }
}

/// Polls `check` until it returns Some, or panics after PATIENCE.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A read-only connection to the database file at `path` (one the tests did
/// not start in-process: a relay binary's, a backup). Opening beside a
/// relay that is writing can fail for a moment on a loaded machine (once in
/// a few runs of the PostgreSQL group): it is tried again for up to 10 s.
pub async fn open_ro(path: &std::path::Path) -> SqlitePool {
    let url = format!("sqlite://{}?mode=ro", path.display());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match SqlitePoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
        {
            Ok(pool) => return pool,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!(
                    "opening {} read-only failed, trying again: {e}",
                    path.display()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("open db {}: {e}", path.display()),
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The real binary, started on a free port.
pub struct Relay {
    pub child: Child,
    pub base: String,
}

/// Starts `clawrelay serve` on `db` with extra environment variables.
pub fn start_binary(db: &std::path::Path, env: &[(&str, &str)]) -> Relay {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_clawrelay"))
        .args(["serve", "--port", &port.to_string(), "--db"])
        .arg(db)
        .env("ADMIN_TOKEN", ADMIN)
        .env("LOG_LEVEL", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start clawrelay");
    Relay {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// GET `url` with `token`: asserts a 2xx answer, returns its JSON. For
/// relays a test runs as processes (a `TestApp` has `get`).
pub async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> Value {
    let reply = http.get(url).bearer_auth(token).send().await.unwrap();
    assert!(reply.status().is_success(), "GET {url}: {}", reply.status());
    reply.json().await.unwrap()
}

/// POST `body` as JSON to `url` with `token`: asserts a 2xx answer,
/// returns its JSON.
pub async fn post_json(http: &reqwest::Client, url: &str, token: &str, body: Value) -> Value {
    let reply = http
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        reply.status().is_success(),
        "POST {url}: {}",
        reply.status()
    );
    reply.json().await.unwrap()
}

pub async fn wait_ready(http: &reqwest::Client, base: &str) {
    eventually("the relay answers /health", || async {
        let r = http.get(format!("{base}/health")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
}

/// The `Set-Cookie` header of a reply.
pub fn set_cookie_of(r: &Reply) -> String {
    r.headers["set-cookie"].to_str().unwrap().to_owned()
}

/// A request with `cookie` (`name=value`) and extra headers, no bearer.
pub async fn with_cookie(
    app: &TestApp,
    method: Method,
    path: &str,
    cookie: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Reply {
    let mut h = vec![("cookie", cookie)];
    h.extend_from_slice(headers);
    app.request_with(method, path, None, body, &h).await
}

/// An agent's message to user `to` in conversation `conversation`, as the
/// store-level tests write them directly (`store::messages::insert`).
pub fn agent_message<'a>(
    conversation: &'a clawrelay::ids::ConversationId,
    app: &'a clawrelay::ids::AppId,
    agent: &'a clawrelay::ids::ClientId,
    to: &'a str,
    text: &'a str,
) -> clawrelay::store::messages::NewMessage<'a> {
    clawrelay::store::messages::NewMessage {
        conversation_id: conversation,
        app_id: app,
        client_id: Some(agent),
        direction: clawrelay::model::Direction::Outbound,
        from: "agent",
        to,
        text,
        reply_id: None,
        in_reply_to: None,
        attachments: &[],
        stopped: false,
        now: 1,
    }
}
