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
    if sqlite_only("writes a future migration into the SQLite file") {
        return;
    }
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

/// A backup into a folder that does not exist names the folder and what to
/// do, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_into_a_missing_folder_names_it() {
    if sqlite_only("clawrelay backup is SQLite's; PostgreSQL's is pg_dump") {
        return;
    }
    let app = spawn_app().await;
    let dest = tempfile::tempdir().unwrap();
    let missing = dest.path().join("no-such-dir");
    let copy = missing.join("x.db");
    let db = app.config.storage.path.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking({
        let copy = copy.clone();
        move || clawrelay(&["backup", copy.to_str().unwrap(), "--db", &db])
    })
    .await
    .unwrap();
    let line = failure(&out);
    assert!(
        line.contains(&format!("folder {} does not exist", missing.display()))
            && line.contains("mkdir -p"),
        "{line}"
    );
    assert!(!missing.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_copies_a_live_database_consistently() {
    if sqlite_only("clawrelay backup is SQLite's; PostgreSQL's is pg_dump") {
        return;
    }
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

/// Runs clawrelay as the unprivileged user `nobody` (the tests run as root in
/// CI, and root ignores file modes); None when that is not possible here.
fn as_nobody(args: &[&str]) -> Option<Output> {
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_clawrelay"))
        .args(args)
        .env("ADMIN_TOKEN", ADMIN)
        .output()
        .ok()
        .filter(|o| !String::from_utf8_lossy(&o.stderr).contains("setpriv:"))
}

#[test]
fn admin_commands_refuse_a_database_that_does_not_exist_and_name_the_one_they_use() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("typo.db");
    let db_s = db.to_str().unwrap();
    let line = failure(&clawrelay(&["client", "list", "--db", db_s]));
    assert!(
        line.contains("no database at") && line.contains("typo.db"),
        "{line}"
    );
    assert!(line.contains("--create"), "{line}");
    assert!(!db.exists(), "a mistyped --db made a database");

    let out = clawrelay(&["client", "create", "--name", "a", "--db", db_s, "--create"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("database {db_s}")));
    let out = clawrelay(&["client", "list", "--db", db_s]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_missing_directory_is_named_with_what_to_do() {
    let line = failure(&clawrelay(&[
        "serve",
        "--port",
        &free_port(),
        "--db",
        "/no/such/dir/relay.db",
    ]));
    assert!(line.contains("/no/such/dir"), "{line}");
    assert!(line.contains("create it"), "{line}");
}

#[test]
fn an_unwritable_directory_or_read_only_database_says_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let db = dir.path().join("relay.db");
    let db_s = db.to_str().unwrap();
    let out = clawrelay(&["client", "list", "--db", db_s, "--create"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Owned by root, mode 0644, in a 0755 directory: read-only for nobody.
    let Some(out) = as_nobody(&["client", "list", "--db", db_s]) else {
        panic!("setpriv could not run clawrelay as nobody");
    };
    let line = failure(&out);
    assert!(line.contains("cannot be opened for writing"), "{line}");
    let other = dir.path().join("new.db");
    let out = as_nobody(&[
        "serve",
        "--port",
        &free_port(),
        "--db",
        other.to_str().unwrap(),
    ])
    .unwrap();
    let line = failure(&out);
    assert!(line.contains("is not writable"), "{line}");
}

#[test]
fn a_port_in_use_creates_no_database() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    failure(&clawrelay(&[
        "serve",
        "--port",
        &port,
        "--db",
        db.to_str().unwrap(),
    ]));
    assert!(!db.exists(), "a failed start created the database");
}

#[test]
fn a_second_server_on_the_same_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let port = free_port();
    let mut first = Command::new(env!("CARGO_BIN_EXE_clawrelay"))
        .args(["serve", "--port", &port, "--db", db.to_str().unwrap()])
        .env("ADMIN_TOKEN", ADMIN)
        .env("LOG_LEVEL", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err() {
        assert!(
            started.elapsed() < PATIENCE,
            "the first server never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = clawrelay(&[
        "serve",
        "--port",
        &free_port(),
        "--db",
        db.to_str().unwrap(),
    ]);
    let _ = first.kill();
    let _ = first.wait();
    let line = failure(&second);
    assert!(line.contains("already running"), "{line}");
}

#[test]
fn a_mistyped_log_level_is_refused() {
    let line = failure(&clawrelay(&["--log-level", "inof", "config", "check"]));
    assert!(line.contains("inof"), "{line}");
}

#[test]
fn config_check_prints_toml_ignores_other_clawrelay_variables_and_shows_port() {
    let out = Command::new(env!("CARGO_BIN_EXE_clawrelay"))
        .args(["config", "check"])
        .env("CLAWRELAY_URL", "http://elsewhere")
        .env("CLAWRELAY_DELIVERY__LEASE_SECS", "77")
        .env("PORT", "9999")
        .env("ADMIN_TOKEN", "secret-value")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("CLAWRELAY_URL"), "{stderr}");
    let parsed: toml::Table = toml::from_str(&stdout).expect("TOML");
    assert_eq!(parsed["delivery"]["lease_secs"].as_integer(), Some(77));
    assert_eq!(parsed["server"]["port"].as_integer(), Some(9999));
    assert!(
        stdout.contains("ADMIN_TOKEN") && !stdout.contains("secret-value"),
        "{stdout}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_clawrelay"))
        .args(["config", "check"])
        .env("CLAWRELAY_SERVER__PORT", "many")
        .output()
        .unwrap();
    let line = failure(&out);
    assert!(line.contains("CLAWRELAY_SERVER__PORT"), "{line}");
}

/// A server starting while an admin command runs both open a new database
/// at once: both find no migration applied. Neither fails; the schema is
/// applied once.
#[test]
fn processes_opening_a_new_database_at_once_all_succeed() {
    if sqlite_only("about migrating a new SQLite file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for round in 0..5 {
        let db = dir.path().join(format!("new-{round}.db"));
        let db = db.to_str().unwrap().to_owned();
        let children: Vec<_> = (0..4)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_clawrelay"))
                    .args(["migrate", "--db", &db])
                    .env("LOG_LEVEL", "warn")
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("run clawrelay")
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
