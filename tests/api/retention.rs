//! Retention: old expired conversations go with their messages and
//! deliveries; old idempotency keys are forgotten; `clawrelay purge`.

use crate::helpers::*;
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

async fn count(app: &TestApp, table: &str) -> i64 {
    app.scalar(&format!("SELECT COUNT(*) FROM {table}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_conversations_are_purged_after_the_retention() {
    let app = spawn_with(|c| {
        c.conversations.ttl_secs = 1;
        c.conversations.retention_secs = 1;
        c.conversations.cleanup_interval_secs = 1;
    })
    .await;
    let (_, agent) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&agent, "").await;
    let old = app.inbound(&web, "alice", "old news").await;
    let m = app.poll(&agent, "").await.remove(0);
    app.send(&agent, &m, "old answer").await;
    let old_conv = old["conversationId"].as_str().unwrap().to_owned();

    eventually("the old conversation to be purged", || async {
        let r = app.get(&format!("/conversations/{old_conv}"), ADMIN).await;
        (r.status == 404).then_some(())
    })
    .await;
    // Its messages and deliveries went with it; a fresh one is untouched.
    let fresh = app.inbound(&web, "bob", "fresh").await;
    assert_eq!(count(&app, "messages").await, 1);
    assert_eq!(count(&app, "deliveries").await, 1);
    let r = app
        .get(
            &format!(
                "/conversations/{}",
                fresh["conversationId"].as_str().unwrap()
            ),
            ADMIN,
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_idempotency_key_is_forgotten() {
    let app = spawn_with(|c| {
        c.idempotency.ttl_secs = 1;
        c.conversations.cleanup_interval_secs = 1;
    })
    .await;
    let (_, web) = app.create_app("web").await;
    let send = |text: &'static str| {
        app.request_with(
            Method::POST,
            "/inbound",
            Some(&web),
            Some(json!({"from": "al", "text": text})),
            &[("Idempotency-Key", "k")],
        )
    };
    let first = send("one").await.ok();
    assert_eq!(send("two").await.status, 409);
    eventually("the key to be forgotten", || async {
        let r = send("two").await;
        (r.status == 200).then_some(r.body)
    })
    .await;
    assert_eq!(count(&app, "messages").await, 2);
    let _ = first;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_dry_run_counts_and_purge_deletes() {
    let mut app = spawn_with(|c| {
        c.conversations.ttl_secs = 1;
        c.conversations.retention_secs = 1;
        c.conversations.cleanup_interval_secs = 3600;
    })
    .await;
    let (_, web) = app.create_app("web").await;
    for u in ["a", "b", "c"] {
        app.inbound(&web, u, "hello").await;
    }
    // The maintenance tick marks them expired; then the retention passes.
    eventually("the conversations to expire", || async {
        let r = app.get("/conversations?state=expired", ADMIN).await.ok();
        (r["conversations"].as_array().unwrap().len() == 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    app.stop().await;

    // The database: the SQLite file, or the PostgreSQL URL.
    let (db_flag, db) = match &app.config.storage.url {
        Some(url) => ("--database-url", url.clone()),
        None => ("--db", app.config.storage.path.to_str().unwrap().to_owned()),
    };
    // The CLI reads its own configuration: the same retention as the server's.
    let config = app.config.storage.path.with_extension("toml");
    std::fs::write(
        &config,
        "[conversations]\nttl_secs = 1\nretention_secs = 1\n",
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_clawrelay"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let preview = run(&["purge", "--dry-run", db_flag, &db, "--config", &config]);
    assert!(
        preview.starts_with("would delete: 3 conversations, 3 messages, 3 deliveries"),
        "{preview}"
    );
    let done = run(&["purge", db_flag, &db, "--config", &config]);
    assert!(
        done.starts_with("deleted: 3 conversations, 3 messages, 3 deliveries"),
        "{done}"
    );
    let after = run(&["purge", "--dry-run", db_flag, &db, "--config", &config]);
    assert!(
        after.starts_with("would delete: 0 conversations, 0 messages, 0 deliveries"),
        "{after}"
    );
}
