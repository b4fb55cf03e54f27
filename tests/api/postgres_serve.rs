//! The relay on PostgreSQL, as an operator runs it: the real binary chosen
//! onto a throwaway PostgreSQL 15 by `DATABASE_URL`, its admin commands, a
//! second server joining the first, and a round trip across the two that
//! survives kill -9.

use super::helpers::{free_port, get_json, wait_ready, ADMIN};
use super::postgres::Cluster;
use serde_json::{json, Value};
use std::process::{Command, Stdio};

/// Runs `clawrelay args…` with `DATABASE_URL=url`; returns (ok, stdout, stderr).
fn cli(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_clawrelay"))
        .args(args)
        .env("DATABASE_URL", url)
        .env_remove("CLAWRELAY_STORAGE__PATH")
        .output()
        .expect("run clawrelay");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn token_of(stdout: &str) -> String {
    let v: Value = serde_json::from_str(stdout).expect("the command prints JSON");
    v["token"].as_str().expect("a token").to_owned()
}

/// A server process, killed (SIGKILL) at the latest when dropped: a failed
/// assertion leaves no server behind.
struct Server(std::process::Child);

impl Server {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn serve(url: &str, port: u16) -> Server {
    Server(
        Command::new(env!("CARGO_BIN_EXE_clawrelay"))
            .args(["serve", "--port", &port.to_string()])
            .env("DATABASE_URL", url)
            .env("ADMIN_TOKEN", ADMIN)
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start clawrelay"),
    )
}

#[tokio::test]
async fn postgres_relay_runs_on_database_url() {
    let cluster = Cluster::start();
    let url = cluster.url.clone();

    // An admin command does not set up a database by accident.
    let (ok, _, err) = cli(&url, &["client", "list"]);
    assert!(!ok);
    assert!(err.contains("no clawrelay schema"), "{err}");
    assert!(err.contains("clawrelay migrate"), "{err}");
    let (ok, out, err) = cli(&url, &["migrate"]);
    assert!(ok, "{err}");
    assert!(out.contains("is migrated"), "{out}");
    let (ok, agent, err) = cli(&url, &["client", "create", "--name", "bot"]);
    assert!(ok, "{err}");
    let (ok, site, err) = cli(&url, &["app", "create", "--name", "site"]);
    assert!(ok, "{err}");
    let (agent, site) = (token_of(&agent), token_of(&site));

    // Not both backends at once; a backup is pg_dump's job.
    let (ok, _, err) = cli(&url, &["client", "list", "--db", "/tmp/x.db"]);
    assert!(!ok && err.contains("choose one"), "{err}");
    let (ok, _, err) = cli(&url, &["backup", "/tmp/clawrelay-never-written.db"]);
    assert!(!ok && err.contains("pg_dump"), "{err}");
    // The password is never shown.
    let (ok, out, err) = cli(
        "postgres://relay:hunter2-secret@db.example:5432/relay",
        &["config", "check"],
    );
    assert!(ok, "{err}");
    assert!(!out.contains("hunter2"), "{out}");
    assert!(
        out.contains("postgres://relay:***@db.example:5432/relay"),
        "{out}"
    );
    let (ok, _, err) = cli("sqlite://relay.db", &["config", "check"]);
    assert!(!ok && err.contains("storage.url"), "{err}");

    let http = reqwest::Client::new();
    let port = free_port();
    let mut first = serve(&url, port);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &base).await;

    // A second server on the database joins the first: the agent polls
    // it, the app posts to the first.
    let port_b = free_port();
    let mut second = serve(&url, port_b);
    let base_b = format!("http://127.0.0.1:{port_b}");
    wait_ready(&http, &base_b).await;

    let post = |base: &str, path: &str, token: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let poll_url = format!("{base_b}/poll?wait=30");
    let poll = get_json(&http, &poll_url, &agent);
    let inbound = async {
        // The poll is waiting on the second server by now.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let reply = post(
            &base,
            "/inbound",
            &site,
            json!({ "from": "ann", "text": "hello" }),
        )
        .await
        .unwrap();
        assert!(reply.status().is_success(), "{}", reply.status());
        let at = std::time::Instant::now();
        (reply.json::<Value>().await.unwrap(), at)
    };
    let (polled, (inbound, posted_at)) = tokio::join!(poll, inbound);
    let woke_after = posted_at.elapsed();
    println!("an inbound message on relay A woke a long poll on relay B after {woke_after:?}");
    // The poll ends after 30 s anyway and then claims once more: well
    // before that, it was woken. (The bound is loose on purpose.)
    assert!(
        woke_after < std::time::Duration::from_secs(15),
        "the poll on relay B was not woken: it returned after {woke_after:?}"
    );
    assert_eq!(inbound["text"], "hello");
    let message = &polled["messages"][0];
    assert_eq!(message["id"], inbound["id"], "{polled}");
    let sent = post(
        &base_b,
        "/send",
        &agent,
        json!({ "to": "ann", "text": "hi ann", "conversationId": message["conversationId"] }),
    )
    .await
    .unwrap();
    assert!(sent.status().is_success(), "{:?}", sent.text().await);
    second.kill();

    // kill -9: what was answered is there after a restart.
    first.kill();
    let port = free_port();
    let mut again = serve(&url, port);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &base).await;
    let outbox = get_json(&http, &format!("{base}/outbox"), &site).await;
    let texts: Vec<&str> = outbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["hi ann"]);
    let ready = http.get(format!("{base}/ready")).send().await.unwrap();
    assert!(ready.status().is_success());
    again.kill();
}
