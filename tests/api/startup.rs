//! Startup failures say what is wrong in one line and exit non-zero, with no
//! panic trace; the backup command writes a verified copy of a live database.

use crate::helpers::*;
use serde_json::json;
use std::process::{Command, Output};

fn clawrelay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clawrelay"))
        .args(args)
        .env("ADMIN_TOKEN", ADMIN)
        .env("LOG_LEVEL", "warn")
        .output()
        .expect("run clawrelay")
}

/// The one line of a failed start, after checking it is one line and no panic.
fn failure(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failed start");
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert!(!stderr.contains("panicked"), "a panic: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "more than one line: {stderr}");
    stderr
}

fn free_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port().to_string())
        .expect("port")
}

#[test]
fn a_db_path_that_cannot_be_created_is_one_line() {
    let out = clawrelay(&[
        "serve",
        "--port",
        &free_port(),
        "--db",
        "/proc/no-such-dir/relay.db",
    ]);
    let line = failure(&out);
    assert!(
        line.contains("cannot open database /proc/no-such-dir/relay.db"),
        "{line}"
    );
}

#[test]
fn a_file_that_is_not_a_database_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("notes.txt");
    std::fs::write(
        &db,
        "these are not the pages you are looking for ".repeat(200),
    )
    .unwrap();
    let line = failure(&clawrelay(&[
        "serve",
        "--port",
        &free_port(),
        "--db",
        db.to_str().unwrap(),
    ]));
    assert!(line.contains("not a clawrelay database"), "{line}");
}

#[tokio::test]
async fn a_database_from_a_newer_clawrelay_is_one_line() {
    let mut app = spawn_app().await;
    let db = app.config.storage.path.clone();
    app.stop().await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from the future', 1, x'00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let line = failure(&clawrelay(&[
        "serve",
        "--port",
        &free_port(),
        "--db",
        db.to_str().unwrap(),
    ]));
    assert!(line.contains("newer clawrelay"), "{line}");
}

#[test]
fn a_port_in_use_is_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let line = failure(&clawrelay(&[
        "serve",
        "--port",
        &port,
        "--db",
        db.to_str().unwrap(),
    ]));
    assert!(
        line.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{line}"
    );
}

#[test]
fn invalid_configuration_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[delivery]\nlease_sec = 5\n", "lease_sec"),
        ("[server]\nport = \"many\"\n", "[server] port"),
        ("[delivery]\nmax_attempts = 0\n", "delivery.max_attempts"),
        ("[storage]\nsynchronous = \"sometimes\"\n", "sometimes"),
    ];
    for (i, (text, named)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let line = failure(&clawrelay(&[
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--port",
            &free_port(),
        ]));
        assert!(line.contains(named), "{text:?}: {line}");
    }
    let line = failure(&clawrelay(&["serve", "--config", "/no/such/file.toml"]));
    assert!(
        line.contains("cannot read config file /no/such/file.toml"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_answers_when_the_database_does() {
    let app = spawn_app().await;
    let r = app
        .request(reqwest::Method::GET, "/ready", None, None)
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body.clone()),
        (200, json!({"ok": true}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_copies_a_live_database_consistently() {
    let app = spawn_app().await;
    let (_, web) = app.create_app("web").await;
    // Writes go on while the backup runs.
    let writer = {
        let (http, base, web) = (app.http.clone(), app.base.clone(), web.clone());
        tokio::spawn(async move {
            for i in 0..200 {
                let body = json!({"from": format!("u{i}"), "text": "during the backup"});
                http.post(format!("{base}/inbound"))
                    .bearer_auth(&web)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
            }
        })
    };
    let dest = tempfile::tempdir().unwrap();
    let copy = dest.path().join("copy.db");
    let db = app.config.storage.path.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking({
        let copy = copy.clone();
        move || clawrelay(&["backup", copy.to_str().unwrap(), "--db", &db])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("integrity check ok"));
    writer.await.unwrap();

    // The copy is a working database, consistent: every message has its delivery.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", copy.display()))
        .await
        .unwrap();
    let (messages, deliveries): (i64, i64) =
        sqlx::query_as("SELECT (SELECT COUNT(*) FROM messages), (SELECT COUNT(*) FROM deliveries)")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(messages, deliveries);
    pool.close().await;

    // A second backup to the same file is refused, not overwritten.
    let db = app.config.storage.path.to_str().unwrap().to_owned();
    let again = clawrelay(&["backup", copy.to_str().unwrap(), "--db", &db]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}
