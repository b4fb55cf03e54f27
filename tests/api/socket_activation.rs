//! Socket activation: `serve` takes the listening socket systemd passes
//! (`LISTEN_FDS`, `LISTEN_PID`) over its configured address, and a restart
//! refuses no connection: the socket stays open in systemd while the old
//! process drains and the new one opens the database, and the requests that
//! arrive meanwhile wait in the kernel's backlog.
//!
//! No systemd runs as process 1 here: `socket_harness.py` does what it does
//! for a `.socket` unit (holds the socket, starts the service with it as fd
//! 3, restarts it with SIGTERM, a wait, and a new start).

use crate::helpers::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

const HARNESS: &str = include_str!("socket_harness.py");

/// The harness, its stdin (commands) and its stdout (events), line by line.
struct Harness {
    child: Child,
    commands: ChildStdin,
    events: mpsc::Receiver<String>,
}

impl Harness {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Harness {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(HARNESS)
            .arg(env!("CARGO_BIN_EXE_clawrelay"))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the harness");
        let commands = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Harness {
            child,
            commands,
            events,
        }
    }

    /// The next event line that starts with `word`; its rest.
    fn expect(&self, word: &str) -> String {
        loop {
            let line = self
                .events
                .recv_timeout(PATIENCE)
                .unwrap_or_else(|e| panic!("the harness printed no `{word}` line: {e}"));
            if let Some(rest) = line.strip_prefix(&format!("{word} ")) {
                return rest.to_owned();
            }
        }
    }

    fn send(&mut self, command: &str) {
        writeln!(self.commands, "{command}").unwrap();
        self.commands.flush().unwrap();
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the senders saw.
#[derive(Default)]
struct Tally {
    /// Requests answered 2xx, by idempotency key.
    stored: Vec<String>,
    /// Connections refused.
    refused: u64,
    /// Requests sent again after their connection closed unanswered (the
    /// old process closing its idle keep-alive connections as it drains).
    retried: u64,
    /// Answers other than 2xx, and requests that never got one.
    errors: Vec<String>,
}

/// One sender: a message of user `user` every 60 ms (under the default
/// per-user rate), each with its idempotency key, until `stop`; a request
/// whose connection closed without an answer is sent again with the same
/// key.
async fn sender(
    http: reqwest::Client,
    base: String,
    app: String,
    user: String,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    tally: Arc<Mutex<Tally>>,
) {
    let mut i = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::SeqCst) && i < 5_000 {
        tick.tick().await;
        let key = format!("{user}-{i}");
        i += 1;
        let mut tries = 0;
        loop {
            tries += 1;
            let sent = http
                .post(format!("{base}/inbound"))
                .bearer_auth(&app)
                .header("Idempotency-Key", &key)
                .json(&json!({ "from": user, "text": key }))
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    answered.fetch_add(1, Ordering::SeqCst);
                    tally.lock().unwrap().stored.push(key);
                    break;
                }
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    tally
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("{key}: {status} {body}"));
                    break;
                }
                Err(e) if e.is_connect() => {
                    tally.lock().unwrap().refused += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) if tries < 20 => {
                    let _ = e;
                    tally.lock().unwrap().retried += 1;
                }
                Err(e) => {
                    tally.lock().unwrap().errors.push(format!("{key}: {e}"));
                    break;
                }
            }
        }
    }
}

/// Eight users send steadily through a restart of the relay on the socket
/// the harness holds: no connection is refused, every message is answered
/// 2xx (a request cut by the drain is sent again with its key), and each is
/// stored once. The relay is configured on a port that is taken: it never
/// binds it, the passed socket wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_the_systemd_socket_refuses_no_connection_and_stores_each_message_once() {
    if sqlite_only("runs the relay binary on a SQLite file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port().to_string();
    let mut harness = Harness::start(
        &["serve", "--port", &taken_port, "--db", db.to_str().unwrap()],
        &[("ADMIN_TOKEN", ADMIN), ("LOG_LEVEL", "warn")],
    );
    let port = harness.expect("port");
    let first = harness.expect("started");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    wait_ready(&http, &base).await;
    let app = post_json(
        &http,
        &format!("{base}/apps"),
        ADMIN,
        json!({ "name": "site" }),
    )
    .await;
    let app = app["token"].as_str().unwrap().to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let senders: Vec<_> = (0..8)
        .map(|u| {
            tokio::spawn(sender(
                http.clone(),
                base.clone(),
                app.clone(),
                format!("user{u}"),
                stop.clone(),
                answered.clone(),
                tally.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = answered.load(Ordering::SeqCst);
    harness.send("restart");
    let harness = tokio::task::spawn_blocking(move || {
        let status = harness.expect("stopped");
        let second = harness.expect("started");
        (harness, status, second)
    });
    let (mut harness, first_status, second) = harness.await.unwrap();
    assert_eq!(
        first_status, "0",
        "the first relay stops cleanly on SIGTERM"
    );
    assert_ne!(first, second, "the relay was restarted");
    let at_restart = answered.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    for s in senders {
        s.await.unwrap();
    }
    let after = answered.load(Ordering::SeqCst);
    harness.send("stop");
    let status = tokio::task::spawn_blocking(move || harness.expect("stopped"))
        .await
        .unwrap();
    assert_eq!(status, "0", "the second relay stops cleanly");
    drop(taken);

    let tally = std::mem::take(&mut *tally.lock().unwrap());
    println!(
        "restart under load: {} messages sent and answered ({before} before the restart, \
         {} while it ran, {} after), {} refused, {} sent again after a closed connection, \
         {} errors",
        tally.stored.len(),
        at_restart - before,
        after - at_restart,
        tally.refused,
        tally.retried,
        tally.errors.len()
    );
    assert_eq!(tally.refused, 0, "connections refused during the restart");
    assert!(
        tally.errors.is_empty(),
        "{} errors, the first: {:?}",
        tally.errors.len(),
        &tally.errors[..tally.errors.len().min(5)]
    );
    assert!(before > 0 && after > at_restart, "both relays served");
    let pool = open_ro(&db).await;
    let (rows, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT text) FROM messages WHERE direction = 'inbound'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rows, tally.stored.len() as i64, "each message stored once");
    assert_eq!(distinct, rows);
    let mut stored: Vec<String> =
        sqlx::query_scalar("SELECT text FROM messages WHERE direction = 'inbound' ORDER BY text")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut sent = tally.stored.clone();
    sent.sort();
    stored.sort();
    assert_eq!(stored, sent, "what was answered is what is stored");
}

/// Without LISTEN_FDS the relay binds its configured address, and a
/// LISTEN_PID that is not its own (the variables were meant for another
/// process) is ignored as systemd's protocol says.
#[test]
fn listen_fds_for_another_process_are_ignored() {
    if sqlite_only("runs the relay binary on a SQLite file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut relay = start_binary(
        &dir.path().join("relay.db"),
        &[("LISTEN_FDS", "1"), ("LISTEN_PID", "1")],
    );
    let base = relay.base.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        wait_ready(&http, &base).await;
        let health: Value = get_json(&http, &format!("{base}/health"), ADMIN).await;
        assert!(health.is_object());
    });
    let _ = relay.child.kill();
    let _ = relay.child.wait();
}
