//! Webhooks against a real receiver on 127.0.0.1 that verifies Standard
//! Webhooks signatures and can answer 200, fail, hang or close.

use crate::helpers::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the receiver answers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Ok,
    Status(u16),
    /// Reads the request and never answers.
    Hang,
    /// Reads the request and closes the connection without an answer.
    Close,
}

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Got {
    id: String,
    /// Index in `secrets` of each key that one of the signatures verifies with.
    verified_by: Vec<usize>,
    signatures: usize,
    headers: HashMap<String, String>,
    raw: Vec<u8>,
    body: Value,
    at: Instant,
    answered: Mode,
}

#[derive(Default)]
struct ReceiverState {
    /// Answers for the next requests, then `steady`.
    script: Vec<Mode>,
    steady: Option<Mode>,
    secrets: Vec<Vec<u8>>,
    got: Vec<Got>,
}

#[derive(Clone)]
struct Receiver {
    url: String,
    state: Arc<Mutex<ReceiverState>>,
}

fn verify(secret: &[u8], id: &str, ts: &str, body: &[u8], sig: &str) -> bool {
    let Some(b64) = sig.strip_prefix("v1,") else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    STANDARD
        .decode(b64)
        .is_ok_and(|expected| mac.verify_slice(&expected).is_ok())
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(ReceiverState {
            steady: Some(Mode::Ok),
            ..Default::default()
        }));
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, s.clone()));
            }
        });
        Receiver { url, state }
    }

    fn answer(&self, steady: Mode, script: &[Mode]) {
        let mut s = self.state.lock().unwrap();
        s.steady = Some(steady);
        s.script = script.to_vec();
    }

    fn trust(&self, whsec: &str) {
        let bytes = STANDARD
            .decode(whsec.strip_prefix("whsec_").unwrap())
            .unwrap();
        self.state.lock().unwrap().secrets.push(bytes);
    }

    fn got(&self) -> Vec<Got> {
        self.state.lock().unwrap().got.clone()
    }

    fn delivered(&self) -> Vec<Got> {
        self.got()
            .into_iter()
            .filter(|g| g.answered == Mode::Ok)
            .collect()
    }

    async fn wait_delivered(&self, n: usize) -> Vec<Got> {
        eventually(&format!("{n} events delivered"), || async {
            let d = self.delivered();
            (d.len() >= n).then_some(d)
        })
        .await
    }
}

/// The endpoint's attempts (newest first) once the relay has recorded at
/// least `n`: a receiver has a delivery before the relay records how the
/// attempt went.
async fn recorded_attempts(app: &TestApp, hook: &str, n: usize) -> Vec<Value> {
    eventually(&format!("{n} attempts recorded"), || async {
        let r = app
            .get(&format!("/webhooks/{hook}/attempts?limit=100"), ADMIN)
            .await
            .ok();
        let a = r["attempts"].as_array()?.clone();
        (a.len() >= n).then_some(a)
    })
    .await
}

async fn serve(mut stream: tokio::net::TcpStream, state: Arc<Mutex<ReceiverState>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = &buf[head_end..head_end + length];
    let id = headers.get("webhook-id").cloned().unwrap_or_default();
    let ts = headers
        .get("webhook-timestamp")
        .cloned()
        .unwrap_or_default();
    let sigs: Vec<String> = headers
        .get("webhook-signature")
        .map(|s| s.split(' ').map(str::to_owned).collect())
        .unwrap_or_default();
    let mode = {
        let mut s = state.lock().unwrap();
        let mode = if s.script.is_empty() {
            s.steady.unwrap_or(Mode::Ok)
        } else {
            s.script.remove(0)
        };
        let verified_by = s
            .secrets
            .iter()
            .enumerate()
            .filter(|(_, k)| sigs.iter().any(|sig| verify(k, &id, &ts, body, sig)))
            .map(|(i, _)| i)
            .collect();
        let fresh = ts
            .parse::<i64>()
            .is_ok_and(|t| (t - now_secs()).abs() < 300);
        assert!(fresh, "webhook-timestamp `{ts}` is not now");
        s.got.push(Got {
            id,
            verified_by,
            signatures: sigs.len(),
            headers: headers.clone(),
            raw: body.to_vec(),
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
            at: Instant::now(),
            answered: mode,
        });
        mode
    };
    let status = match mode {
        Mode::Ok => 200,
        Mode::Status(s) => s,
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        }
        Mode::Close => return,
    };
    let reply =
        format!("HTTP/1.1 {status} X\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbody");
    let _ = stream.write_all(reply.as_bytes()).await;
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A relay whose webhooks may reach the loopback receiver, retrying fast.
async fn relay(tweak: impl FnOnce(&mut clawrelay::config::Config)) -> TestApp {
    spawn_with(|c| {
        c.webhooks.allowed_networks = vec!["127.0.0.1/32".into()];
        c.webhooks.retry_initial_ms = 200;
        c.webhooks.timeout_secs = 1;
        tweak(c);
    })
    .await
}

/// A relay with an app, an agent and one endpoint on a fresh receiver.
struct Fixture {
    app: TestApp,
    rx: Receiver,
    app_id: String,
    app_token: String,
    client: String,
    hook: String,
    secret: String,
}

async fn fixture(tweak: impl FnOnce(&mut clawrelay::config::Config), endpoint: Value) -> Fixture {
    let app = relay(tweak).await;
    let rx = Receiver::start().await;
    let (app_id, app_token) = app.create_app("site").await;
    let (_, client) = app.create_client("agent").await;
    let (hook, secret) = create_webhook(&app, &app_id, &rx.url, endpoint).await;
    rx.trust(&secret);
    Fixture {
        app,
        rx,
        app_id,
        app_token,
        client,
        hook,
        secret,
    }
}

/// `PATCH /webhooks/{hook}`.
async fn patch(app: &TestApp, hook: &str, body: Value) -> Value {
    app.request(
        Method::PATCH,
        &format!("/webhooks/{hook}"),
        Some(ADMIN),
        Some(body),
    )
    .await
    .ok()
}

/// Creates an endpoint; returns (id, secret).
async fn create_webhook(app: &TestApp, app_id: &str, url: &str, extra: Value) -> (String, String) {
    let mut body = json!({ "url": url });
    if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
        b.extend(e);
    }
    let w = app
        .post(&format!("/apps/{app_id}/webhooks"), ADMIN, body)
        .await
        .ok();
    (
        w["webhookId"].as_str().unwrap().to_owned(),
        w["secret"].as_str().unwrap().to_owned(),
    )
}

/// A user's message, claimed by the agent: the message to answer.
async fn claimed(app: &TestApp, app_token: &str, client: &str, user: &str) -> Value {
    app.inbound(app_token, user, "hello").await;
    let got = app.poll(client, "?max=10").await;
    got.into_iter().find(|m| m["from"] == user).unwrap()
}

/// The texts of the replies received, per conversation, in arrival order.
fn texts_by_conversation(got: &[Got]) -> BTreeMap<String, Vec<String>> {
    let mut texts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for g in got {
        let data = &g.body["data"];
        texts
            .entry(data["conversationId"].as_str().unwrap().to_owned())
            .or_default()
            .push(data["text"].as_str().unwrap().to_owned());
    }
    texts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reply_arrives_once_signed_and_in_order_per_conversation() {
    let Fixture {
        app,
        rx,
        app_token,
        client,
        hook,
        secret,
        ..
    } = fixture(|_| {}, json!({})).await;

    let mut sent = Vec::new();
    for user in ["u1", "u2", "u3"] {
        let m = claimed(&app, &app_token, &client, user).await;
        for i in 0..5 {
            sent.push(app.send(&client, &m, &format!("{user}-r{i}")).await);
        }
    }
    let got = rx.wait_delivered(15).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_now = rx.got();
    assert_eq!(got_now.len(), 15, "no request beyond the 15 answered ones");

    // Exactly once each, every one signed with the endpoint's secret.
    let mut ids: Vec<&str> = got.iter().map(|g| g.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 15);
    assert!(got.iter().all(|g| g.id.starts_with("evt_")));
    assert!(got
        .iter()
        .all(|g| g.verified_by == vec![0] && g.signatures == 1));

    // The body is the outbox's JSON of the message, in an envelope.
    let outbox = app.get("/outbox?limit=100", &app_token).await.ok();
    let by_id: HashMap<String, Value> = outbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap().to_owned(), m.clone()))
        .collect();
    for g in &got {
        assert_eq!(g.body["type"], "message");
        assert!(g.body["timestamp"].is_i64());
        let data = &g.body["data"];
        assert_eq!(&by_id[data["id"].as_str().unwrap()], data);
    }
    let per_conversation = texts_by_conversation(&got);
    assert_eq!(per_conversation.len(), 3);
    for texts in per_conversation.values() {
        let user = texts[0].split('-').next().unwrap().to_owned();
        let expected: Vec<String> = (0..5).map(|i| format!("{user}-r{i}")).collect();
        assert_eq!(texts, &expected, "in order within the conversation");
    }

    // The admin view: nothing waiting, 15 successful attempts.
    let attempts = recorded_attempts(&app, &hook, 15).await;
    let info = app.get(&format!("/webhooks/{hook}"), ADMIN).await.ok();
    assert_eq!(info["backlog"], 0);
    assert_eq!(info["failures"], 0);
    assert!(
        info.get("secret").is_none(),
        "the secret is shown only once"
    );
    assert_eq!(attempts.len(), 15);
    assert!(attempts
        .iter()
        .all(|a| a["status"] == 200 && a["response"] == "body"));

    // The secret is not in the database in clear.
    let raw = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let stored = app.blob("SELECT secret FROM webhooks").await;
    assert!(!stored.windows(raw.len()).any(|w| w == raw.as_slice()));
    let key = std::fs::metadata(format!("{}.webhook-key", app.config.storage.path.display()))
        .expect("the key file exists");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(key.permissions().mode() & 0o777, 0o600);

    readme_verifiers_accept_it_and_refuse_a_changed_body(&secret, &got[0]);

    let text = app.metrics().await;
    assert!(
        text.contains(&format!(
            "clawrelay_webhook_attempts_total{{result=\"delivered\",webhook=\"{hook}\"}} 15"
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_with_growing_delays_until_the_receiver_recovers() {
    let Fixture {
        app,
        rx,
        app_token,
        client,
        hook,
        ..
    } = fixture(|_| {}, json!({})).await;
    rx.answer(
        Mode::Ok,
        &[Mode::Status(500), Mode::Status(503), Mode::Status(500)],
    );
    let m = claimed(&app, &app_token, &client, "u1").await;
    app.send(&client, &m, "answer").await;

    rx.wait_delivered(1).await;
    let got = rx.got();
    assert_eq!(got.len(), 4, "three failures, then the delivery");
    assert!(
        got.iter().all(|g| g.id == got[0].id),
        "a retry keeps its webhook-id"
    );
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps[0] >= Duration::from_millis(180), "{gaps:?}");
    assert!(
        gaps[1] > gaps[0] && gaps[2] > gaps[1],
        "delays grow: {gaps:?}"
    );

    let attempts = recorded_attempts(&app, &hook, 4).await;
    let statuses: Vec<i64> = attempts
        .iter()
        .map(|a| a["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, vec![200, 500, 503, 500], "newest first");
    let info = app.get(&format!("/webhooks/{hook}"), ADMIN).await.ok();
    assert_eq!(
        (info["failures"].as_i64(), info["failingSince"].is_null()),
        (Some(0), true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_hangs_or_closes_is_retried() {
    let Fixture {
        app,
        rx,
        app_token,
        client,
        hook,
        ..
    } = fixture(|_| {}, json!({})).await;
    rx.answer(Mode::Ok, &[Mode::Hang, Mode::Close]);
    let m = claimed(&app, &app_token, &client, "u1").await;
    app.send(&client, &m, "answer").await;

    rx.wait_delivered(1).await;
    assert_eq!(rx.got().len(), 3);
    let a = recorded_attempts(&app, &hook, 3).await;
    assert_eq!(a.len(), 3);
    assert!(
        a[2]["error"]
            .as_str()
            .unwrap()
            .contains("no answer within 1 s"),
        "{a:?}"
    );
    assert!(a[2]["status"].is_null());
    assert!(
        a[1]["status"].is_null() && a[1]["error"].is_string(),
        "{a:?}"
    );
    assert_eq!(a[0]["status"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_events_pending_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let http = reqwest::Client::new();
    let rx = Receiver::start().await;
    rx.answer(Mode::Status(503), &[]);
    let env = [
        ("CLAWRELAY_WEBHOOKS__ALLOWED_NETWORKS", "[\"127.0.0.1/32\"]"),
        ("CLAWRELAY_WEBHOOKS__RETRY_INITIAL_MS", "100"),
        ("CLAWRELAY_WEBHOOKS__RETRY_MAX_SECS", "1"),
    ];
    let mut relay = start_binary(&db, &env);
    wait_ready(&http, &relay.base).await;
    let call = |base: &str, method: Method, path: &str, token: &str, body: Option<Value>| {
        let mut r = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(token.to_owned());
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let res = r.send().await.unwrap();
            assert!(res.status().is_success(), "{}", res.status());
            res.json::<Value>().await.unwrap()
        }
    };
    let base = relay.base.clone();
    let app = call(
        &base,
        Method::POST,
        "/apps",
        ADMIN,
        Some(json!({"name": "site"})),
    )
    .await;
    let client = call(
        &base,
        Method::POST,
        "/clients",
        ADMIN,
        Some(json!({"name": "a"})),
    )
    .await;
    let (app_id, app_token) = (
        app["appId"].as_str().unwrap(),
        app["token"].as_str().unwrap(),
    );
    let client_token = client["token"].as_str().unwrap();
    let hook = call(
        &base,
        Method::POST,
        &format!("/apps/{app_id}/webhooks"),
        ADMIN,
        Some(json!({ "url": rx.url })),
    )
    .await;
    rx.trust(hook["secret"].as_str().unwrap());
    for u in 0..10 {
        call(
            &base,
            Method::POST,
            "/inbound",
            app_token,
            Some(json!({"from": format!("u{u}"), "text": "hi"})),
        )
        .await;
    }
    let polled = call(&base, Method::GET, "/poll?max=10", client_token, None).await;
    let mut replies = 0;
    for m in polled["messages"].as_array().unwrap() {
        for i in 0..2 {
            let body = json!({"to": m["from"], "text": format!("r{i}"), "conversationId": m["conversationId"]});
            call(&base, Method::POST, "/send", client_token, Some(body)).await;
            replies += 1;
        }
    }
    assert_eq!(replies, 20);
    eventually("the receiver refused some attempts", || async {
        (rx.got().len() >= 5).then_some(())
    })
    .await;
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();

    rx.answer(Mode::Ok, &[]);
    let failed_before = rx.got().len();
    let mut relay = start_binary(&db, &env);
    wait_ready(&http, &relay.base).await;
    let delivered = rx.wait_delivered(20).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ids: Vec<String> = rx.delivered().iter().map(|g| g.id.clone()).collect();
    assert_eq!(ids.len(), 20, "each delivered once");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20);
    assert!(
        delivered.iter().all(|g| g.verified_by == vec![0]),
        "signed with the same secret after the restart"
    );
    assert!(failed_before >= 5);
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_endpoint_stops_receiving_and_resumes_after_enable() {
    let Fixture {
        app,
        rx,
        app_token,
        client,
        hook,
        ..
    } = fixture(|_| {}, json!({})).await;
    let path = format!("/webhooks/{hook}");
    let off = patch(&app, &hook, json!({"enabled": false})).await;
    assert_eq!(off["enabled"], false);

    let m = claimed(&app, &app_token, &client, "u1").await;
    app.send(&client, &m, "while disabled").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(rx.got().is_empty(), "a disabled endpoint receives nothing");
    assert_eq!(app.get(&path, ADMIN).await.ok()["backlog"], 1);

    patch(&app, &hook, json!({"enabled": true})).await;
    let got = rx.wait_delivered(1).await;
    assert_eq!(got[0].body["data"]["text"], "while disabled");
}

/// A backlog longer than the dispatcher reads from the tables at once (256
/// rows) is delivered whole, once each and in order per conversation, when
/// the endpoint is enabled again while new replies keep coming: the new
/// ones, handed to the dispatcher at their commit, wait behind the older
/// ones of their conversation still in the tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_past_the_read_window_arrives_in_order_behind_new_replies() {
    let Fixture {
        app,
        rx,
        app_token,
        client,
        hook,
        ..
    } = fixture(|_| {}, json!({})).await;
    patch(&app, &hook, json!({"enabled": false})).await;
    let (a, b) = (
        claimed(&app, &app_token, &client, "u1").await,
        claimed(&app, &app_token, &client, "u2").await,
    );
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut send = |m: &Value, text: String| {
        expected
            .entry(m["conversationId"].as_str().unwrap().to_owned())
            .or_default()
            .push(text.clone());
        let (app, client, m) = (&app, &client, m.clone());
        async move { app.send(client, &m, &text).await }
    };
    // Past the window: the rest of u1's backlog is in the tables only.
    for i in 0..300 {
        send(&a, format!("u1-r{i}")).await;
    }
    for i in 0..20 {
        send(&b, format!("u2-r{i}")).await;
    }
    assert_eq!(
        app.get(&format!("/webhooks/{hook}"), ADMIN).await.ok()["backlog"],
        320
    );
    patch(&app, &hook, json!({"enabled": true})).await;
    for i in 300..450 {
        send(&a, format!("u1-r{i}")).await;
    }
    for i in 20..30 {
        send(&b, format!("u2-r{i}")).await;
    }
    let got = rx.wait_delivered(480).await;
    let mut ids: Vec<&str> = got.iter().map(|g| g.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 480, "each event once");
    assert!(
        texts_by_conversation(&got) == expected,
        "in order within each conversation"
    );
    eventually("the backlog is recorded delivered", || async {
        let info = app.get(&format!("/webhooks/{hook}"), ADMIN).await.ok();
        (info["backlog"] == 0).then_some(())
    })
    .await;
}

/// The gauge of a metric line `name{webhook="hook"} value`, if listed.
fn webhook_gauge(metrics: &str, name: &str, hook: &str) -> Option<f64> {
    let prefix = format!("{name}{{webhook=\"{hook}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
}

/// An endpoint's backlog and lag gauges read 0 while nothing is pending
/// (as an idle agent's queue gauges do), the backlog while events wait, and
/// 0 again once they are delivered: they never vanish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gauges_read_zero_when_nothing_is_pending() {
    let Fixture {
        app,
        rx,
        app_token,
        client,
        hook,
        ..
    } = fixture(|_| {}, json!({})).await;
    let gauges = || async {
        let text = app.metrics().await;
        (
            webhook_gauge(&text, "clawrelay_webhook_backlog", &hook),
            webhook_gauge(&text, "clawrelay_webhook_lag_seconds", &hook),
        )
    };
    assert_eq!(gauges().await, (Some(0.0), Some(0.0)), "a new endpoint");
    patch(&app, &hook, json!({"enabled": false})).await;
    let m = claimed(&app, &app_token, &client, "u1").await;
    app.send(&client, &m, "held back").await;
    assert_eq!(gauges().await.0, Some(1.0), "one event waits");
    patch(&app, &hook, json!({"enabled": true})).await;
    rx.wait_delivered(1).await;
    eventually("the backlog is recorded delivered", || async {
        (gauges().await == (Some(0.0), Some(0.0))).then_some(())
    })
    .await;
}

/// `POST /webhooks/:id/secret` with no body rotates with the default grace
/// (its only field is optional), as `{}` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_rotates_without_a_body() {
    let Fixture {
        app, hook, secret, ..
    } = fixture(|_| {}, json!({})).await;
    for body in ["", "  \n"] {
        let r = app
            .raw(
                Method::POST,
                &format!("/webhooks/{hook}/secret"),
                Some(ADMIN),
                body,
            )
            .await;
        assert_eq!(r.status, 200, "{body:?}: {}", r.body);
        assert_ne!(r.body["secret"].as_str().unwrap(), secret);
        assert!(
            r.body["oldSecretUntil"].is_i64(),
            "the default grace applies"
        );
    }
    let r = app
        .raw(
            Method::POST,
            &format!("/webhooks/{hook}/secret"),
            Some(ADMIN),
            "{",
        )
        .await;
    assert_eq!(r.status, 400, "unreadable JSON is still refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_keeps_failing_is_disabled_with_the_reason() {
    let tweak = |c: &mut clawrelay::config::Config| {
        c.webhooks.disable_after_failures = 3;
        c.webhooks.retry_initial_ms = 50;
    };
    let Fixture {
        app,
        rx,
        app_token,
        client,
        hook,
        ..
    } = fixture(tweak, json!({})).await;
    rx.answer(Mode::Status(500), &[]);
    let m = claimed(&app, &app_token, &client, "u1").await;
    app.send(&client, &m, "answer").await;
    let path = format!("/webhooks/{hook}");
    let info = eventually("the endpoint is disabled", || async {
        let info = app.get(&path, ADMIN).await.ok();
        (info["enabled"] == false).then_some(info)
    })
    .await;
    assert_eq!(info["failures"], 3);
    assert!(info["failingSince"].is_i64());
    let reason = info["disabledReason"].as_str().unwrap();
    assert!(
        reason.contains("3 failed attempts") && reason.contains("HTTP 500"),
        "{reason}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.got().len(), 3, "no attempt once disabled");

    rx.answer(Mode::Ok, &[]);
    let on = patch(&app, &hook, json!({"enabled": true})).await;
    assert!(on["disabledReason"].is_null() && on["failures"] == 0);
    let got = rx.wait_delivered(1).await;
    assert_eq!(got[0].body["data"]["text"], "answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_and_malformed_targets_are_refused_at_creation() {
    // The default policy: public addresses only.
    let app = spawn_app().await;
    let (app_id, _) = app.create_app("site").await;
    let before = app.row_counts().await;
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hook",
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]/hook",
        "http://[::ffff:192.168.0.1]/hook",
        "ftp://example.com/hook",
        "http://user:pass@93.184.216.34/hook",
        "not a url",
    ] {
        let r = app
            .post(
                &format!("/apps/{app_id}/webhooks"),
                ADMIN,
                json!({ "url": url }),
            )
            .await;
        assert_eq!(r.status, 422, "{url}: {:?}", r.body);
        assert_eq!(r.error_code(), "invalid_url");
    }
    let r = app
        .post(
            &format!("/apps/{app_id}/webhooks"),
            ADMIN,
            json!({ "url": "https://93.184.216.34/hook", "events": ["message", "everything"] }),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.error_code()), (422, "invalid_events"));
    let r = app
        .post(
            "/apps/app_0193f0c2a1b27c4d9e8f7a6b5c4d3e2f/webhooks",
            ADMIN,
            json!({ "url": "https://93.184.216.34/hook" }),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(app.row_counts().await, before, "nothing was stored");
    // An app token may not manage webhooks.
    let (_, app_token) = app.create_app("other").await;
    let r = app
        .post(
            &format!("/apps/{app_id}/webhooks"),
            &app_token,
            json!({ "url": "https://93.184.216.34/" }),
        )
        .await;
    assert_eq!(r.status, 403);
    // A public address is accepted (nothing is sent until an event happens).
    let r = app
        .post(
            &format!("/apps/{app_id}/webhooks"),
            ADMIN,
            json!({ "url": "https://93.184.216.34/hook", "events": ["delivery.dead"] }),
        )
        .await
        .ok();
    assert_eq!(r["events"], json!(["delivery.dead"]));
    // The public app (of `[inbound] public`) may have endpoints too.
    app.post(
        "/apps/app_public/webhooks",
        ADMIN,
        json!({ "url": "https://93.184.216.34/hook" }),
    )
    .await
    .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_verifies_during_the_grace_period() {
    let Fixture {
        app,
        rx,
        app_token,
        client,
        hook,
        secret: old,
        ..
    } = fixture(|_| {}, json!({})).await;
    let rotated = app
        .post(
            &format!("/webhooks/{hook}/secret"),
            ADMIN,
            json!({ "graceSecs": 60 }),
        )
        .await
        .ok();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(rotated["oldSecretUntil"].is_i64());
    rx.trust(&new);
    let m = claimed(&app, &app_token, &client, "u1").await;
    app.send(&client, &m, "during grace").await;
    let got = rx.wait_delivered(1).await;
    assert_eq!(got[0].signatures, 2);
    assert_eq!(got[0].verified_by, vec![0, 1], "old and new both verify");

    // Without grace, only the newest secret signs.
    let newest = app
        .post(
            &format!("/webhooks/{hook}/secret"),
            ADMIN,
            json!({ "graceSecs": 0 }),
        )
        .await
        .ok();
    rx.trust(newest["secret"].as_str().unwrap());
    app.send(&client, &m, "after").await;
    let got = rx.wait_delivered(2).await;
    assert_eq!(got[1].signatures, 1);
    assert_eq!(got[1].verified_by, vec![2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_and_dead_letters_are_pushed_and_events_can_be_replayed() {
    let tweak = |c: &mut clawrelay::config::Config| {
        c.delivery.max_attempts = 1;
        c.delivery.lease_secs = 1;
        c.conversations.ttl_secs = 2;
    };
    let events = json!({ "events": ["conversation.expired", "delivery.dead"] });
    let Fixture {
        app,
        rx,
        app_id,
        app_token,
        client,
        hook,
        ..
    } = fixture(tweak, events).await;
    let m = claimed(&app, &app_token, &client, "u1").await;
    // The lease ends unacked; the next claim finds it out of attempts.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(app.poll(&client, "").await.is_empty());
    let got = rx.wait_delivered(2).await;
    let kinds: Vec<&str> = got
        .iter()
        .map(|g| g.body["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["delivery.dead", "conversation.expired"]);
    assert_eq!(got[0].body["data"]["message"]["id"], m["id"]);
    assert_eq!(got[0].body["data"]["attempts"], 1);
    assert_eq!(got[1].body["data"]["conversationId"], m["conversationId"]);
    assert_eq!(got[1].body["data"]["userId"], "u1");

    // Replay: one event, then a range; the webhook-id stays the same.
    let r = app
        .post(
            &format!("/webhooks/{hook}/replay"),
            ADMIN,
            json!({ "eventId": got[0].id }),
        )
        .await
        .ok();
    assert_eq!(r["replayed"], 1);
    let again = rx.wait_delivered(3).await;
    assert_eq!(again[2].id, got[0].id);
    let r = app
        .post(
            &format!("/webhooks/{hook}/replay"),
            ADMIN,
            json!({ "since": 0 }),
        )
        .await
        .ok();
    assert_eq!(r["replayed"], 2);
    rx.wait_delivered(5).await;
    let r = app
        .post(
            &format!("/webhooks/{hook}/replay"),
            ADMIN,
            json!({ "eventId": "evt_0193f0c2a1b27c4d9e8f7a6b5c4d3e2f" }),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (404, "event_not_found")
    );
    let r = app
        .post(&format!("/webhooks/{hook}/replay"), ADMIN, json!({}))
        .await;
    assert_eq!((r.status.as_u16(), r.error_code()), (422, "invalid_replay"));

    // Delete: the endpoint and its queue go.
    app.request(
        Method::DELETE,
        &format!("/webhooks/{hook}"),
        Some(ADMIN),
        None,
    )
    .await
    .ok();
    assert_eq!(
        app.get(&format!("/webhooks/{hook}"), ADMIN).await.status,
        404
    );
    let listed = app
        .get(&format!("/apps/{app_id}/webhooks"), ADMIN)
        .await
        .ok();
    assert_eq!(listed["webhooks"], json!([]));
}

/// The README's code block in `lang` that defines `verify`.
fn readme_snippet(lang: &str) -> String {
    let readme = include_str!("../../README.md");
    let start = readme
        .find(&format!("```{lang}\n"))
        .unwrap_or_else(|| panic!("the README has a {lang} block"));
    let code = &readme[start..];
    let code = &code[code.find('\n').unwrap() + 1..];
    let code = &code[..code.find("```").unwrap()];
    // The block is indented under a list item.
    code.lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the README's receiver code on a real request: it must accept it and
/// refuse the same request with one byte more in the body.
fn readme_verifiers_accept_it_and_refuse_a_changed_body(secret: &str, got: &Got) {
    let dir = tempfile::tempdir().unwrap();
    let case = json!({
        "secret": secret,
        "headers": got.headers,
        "body": STANDARD.encode(&got.raw),
    });
    std::fs::write(dir.path().join("case.json"), case.to_string()).unwrap();
    let python = format!(
        "{}\nimport json, sys\ncase = json.load(open(sys.argv[1]))\nbody = base64.b64decode(case['body'])\nprint(verify(case['secret'], case['headers'], body), verify(case['secret'], case['headers'], body + b' '))\n",
        readme_snippet("python")
    );
    let node = format!(
        "{}\nconst c = JSON.parse(require('fs').readFileSync(process.argv[2], 'utf8'));\nconst b = Buffer.from(c.body, 'base64');\nconsole.log(verify(c.secret, c.headers, b), verify(c.secret, c.headers, Buffer.concat([b, Buffer.from(' ')])));\n",
        readme_snippet("js")
    );
    std::fs::write(dir.path().join("verify.py"), python).unwrap();
    std::fs::write(dir.path().join("verify.js"), node).unwrap();
    let run = |cmd: &str, file: &str| {
        std::process::Command::new(cmd)
            .arg(dir.path().join(file))
            .arg(dir.path().join("case.json"))
            .output()
    };
    let out = run("python3", "verify.py").expect("python3 runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "True False",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Node is optional here (the OpenClaw e2e installs its own).
    if let Ok(out) = run("node", "verify.js") {
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "true false",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_takes_the_webhook_key_along() {
    if sqlite_only("clawrelay backup is SQLite's; PostgreSQL's is pg_dump") {
        return;
    }
    let Fixture { app, .. } = fixture(|_| {}, json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("b.db");
    let out = app.cli(&["backup", backup.to_str().unwrap()]);
    let key = format!("{}.webhook-key", app.config.storage.path.display());
    let copy = dir.path().join("b.db.webhook-key");
    assert_eq!(std::fs::read(&key).unwrap(), std::fs::read(&copy).unwrap());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&copy).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(out.contains("webhook key"), "{out}");
}

/// Relays sharing a PostgreSQL database: only the leader (here relay A,
/// started first) dispatches. Replies sent through relay B queue their
/// events there; B's signal wakes A's dispatcher, which delivers each once
/// and in order (without the signal A would find them only at its next
/// rescan, up to a second later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cluster_events_queued_on_another_relay_are_sent_by_the_leader() {
    let pg = super::postgres::Cluster::start();
    let key = tempfile::tempdir().unwrap();
    // One database and one webhook key for both relays.
    let shared = |c: &mut clawrelay::config::Config| {
        c.storage.url = Some(pg.url.clone());
        c.webhooks.key_file = key.path().join("webhook.key");
    };
    let Fixture {
        app: a,
        rx,
        app_token,
        client,
        ..
    } = fixture(&shared, json!({})).await;
    let b = relay(&shared).await;
    let mut delays = Vec::new();
    for i in 0..5 {
        let m = claimed(&b, &app_token, &client, &format!("u{i}")).await;
        let sent_at = Instant::now();
        b.send(&client, &m, &format!("r{i}")).await;
        let got = rx.wait_delivered(i + 1).await;
        delays.push(got[i].at.saturating_duration_since(sent_at));
    }
    println!("reply sent through relay B → delivered by relay A's dispatcher: {delays:?}");
    // Woken by B's signal, not found by A's rescan (once a second): with
    // the signal the delays are tens of ms, without it most are 0.8-1 s.
    // The bound is loose on purpose.
    delays.sort();
    assert!(
        delays[2] < Duration::from_millis(500),
        "the leader's dispatcher was not woken by relay B: {delays:?}"
    );
    let texts: Vec<Value> = rx
        .delivered()
        .iter()
        .map(|g| g.body["data"]["text"].clone())
        .collect();
    assert_eq!(texts, ["r0", "r1", "r2", "r3", "r4"]);
    drop((a, b));
}
