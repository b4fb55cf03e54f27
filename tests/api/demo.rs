//! `serve --demo`: a first look at the relay doing its job, on a database of
//! its own. (The chat in a real browser: e2e/webchat, test_demo_answers_at_once.)

use crate::helpers::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `serve --demo` process and what it printed: the chat's address and
/// the demo account's password.
struct DemoRelay {
    child: Child,
    chat: String,
    password: String,
}

impl DemoRelay {
    fn start(db: &std::path::Path) -> DemoRelay {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_clawrelay"))
            .args(["serve", "--demo", "--port", &port.to_string(), "--db"])
            .arg(db)
            .env_remove("ADMIN_TOKEN")
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start clawrelay");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (mut chat, mut password) = (None, None);
        for line in out.lines().map_while(Result::ok) {
            if let Some((_, rest)) = line.split_once("open ") {
                chat = rest.split_whitespace().next().map(str::to_owned);
            }
            if let Some(p) = line.trim().strip_prefix("password:") {
                password = Some(p.trim().to_owned());
                break;
            }
        }
        let chat = chat.expect("the demo printed the chat's address");
        assert_eq!(chat, format!("http://127.0.0.1:{port}/chat"));
        DemoRelay {
            child,
            chat,
            password: password.expect("the demo printed a password"),
        }
    }

    fn base(&self) -> &str {
        self.chat.strip_suffix("/chat").unwrap()
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Logs in as the demo account: (cookie, CSRF token), or the status.
async fn login(
    http: &reqwest::Client,
    base: &str,
    password: &str,
) -> Result<(String, String), u16> {
    let r = http
        .post(format!("{base}/login"))
        .json(&json!({ "name": "demo", "password": password }))
        .send()
        .await
        .unwrap();
    if !r.status().is_success() {
        return Err(r.status().as_u16());
    }
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let body: Value = r.json().await.unwrap();
    Ok((cookie, body["csrfToken"].as_str().unwrap().to_owned()))
}

/// Sends `text` as the logged-in demo user and waits for the echo agent's
/// stored reply to it; returns the reply's text.
async fn talk(
    http: &reqwest::Client,
    base: &str,
    session: &(String, String),
    text: &str,
) -> String {
    let (cookie, csrf) = session;
    let sent = http
        .post(format!("{base}/inbound"))
        .header("cookie", cookie)
        .header("x-csrf-token", csrf)
        .json(&json!({ "text": text }))
        .send()
        .await
        .unwrap();
    assert!(sent.status().is_success(), "{}", sent.status());
    let deadline = Instant::now() + PATIENCE;
    let mut after = "0".to_owned();
    loop {
        let page: Value = http
            .get(format!("{base}/outbox?after={after}&wait=2"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for m in page["messages"].as_array().unwrap() {
            let reply = m["text"].as_str().unwrap();
            if reply.starts_with(&format!("**Echo:** {text}\n")) {
                return reply.to_owned();
            }
        }
        if let Some(c) = page["cursor"].as_str() {
            after = c.to_owned();
        }
        assert!(Instant::now() < deadline, "no echo of {text:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The demo answers at once: log in with the printed password, and the
/// built-in echo agent answers in Markdown. A second `--demo` start reuses
/// the demo's app and agent (the database holds still only the demo's),
/// with a new password; the old one no longer logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_talks_at_once_and_a_second_start_reuses_it() {
    if sqlite_only("runs the relay binary on a SQLite file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let http = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();

    let first = DemoRelay::start(&db);
    wait_ready(&http, first.base()).await;
    let chat = http.get(&first.chat).send().await.unwrap();
    assert_eq!(chat.status(), 200, "the web chat is on");
    let session = login(&http, first.base(), &first.password).await.unwrap();
    let reply = talk(&http, first.base(), &session, "hello there").await;
    assert!(reply.contains("- 11 characters, 2 words"), "{reply}");
    let old_password = first.password.clone();
    first.stop();

    let second = DemoRelay::start(&db);
    wait_ready(&http, second.base()).await;
    assert_ne!(second.password, old_password);
    assert_eq!(
        login(&http, second.base(), &old_password).await.err(),
        Some(401)
    );
    let session = login(&http, second.base(), &second.password).await.unwrap();
    talk(&http, second.base(), &session, "again").await;
    let base = second.base().to_owned();
    second.stop();

    let listed = |what: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_clawrelay"))
            .args([what, "list", "--db"])
            .arg(&db)
            .env("LOG_LEVEL", "warn")
            .output()
            .unwrap();
        assert!(out.status.success());
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    assert_eq!(listed("client").as_array().unwrap().len(), 1, "{base}");
    let apps = listed("app");
    let own: Vec<&Value> = apps
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["public"] != true)
        .collect();
    assert_eq!(own.len(), 1, "{apps}");
}

/// `--demo` refuses a database that holds apps or clients of its own, says
/// why and what to do, and changes nothing.
#[test]
fn the_demo_refuses_a_database_with_real_clients() {
    if sqlite_only("runs the relay binary on a SQLite file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_clawrelay"))
            .args(args)
            .arg("--db")
            .arg(&db)
            .env("ADMIN_TOKEN", ADMIN)
            .env("LOG_LEVEL", "warn")
            .output()
            .unwrap()
    };
    let made = run(&["client", "create", "--name", "my-gateway", "--create"]);
    assert!(made.status.success());
    let port = free_port().to_string();
    let out = run(&["serve", "--demo", "--port", &port]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--demo refuses this database")
            && stderr.contains("0 app(s) and 1 client(s)")
            && stderr.contains("--db demo.db"),
        "{stderr}"
    );
    let apps = run(&["app", "list"]);
    let apps: Value = serde_json::from_slice(&apps.stdout).unwrap();
    assert!(
        apps.as_array().unwrap().iter().all(|a| a["name"] != "demo"),
        "{apps}"
    );
}
