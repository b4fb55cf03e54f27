//! Nothing acknowledged is lost: across a graceful restart, across a lease
//! that ends unacked, and across kill -9 of the real binary.

use crate::helpers::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_everything_and_unacked_claims_come_back_after_the_lease() {
    let mut app = spawn_with(|c| c.delivery.lease_secs = 1).await;
    let (_, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&client, "").await;
    for user in ["u1", "u2", "u3"] {
        app.inbound(&web, user, &format!("from {user}")).await;
    }
    let claimed = app.poll(&client, "?max=10").await;
    assert_eq!(claimed.len(), 3);
    app.send(&client, &claimed[0], "answered before the restart")
        .await;

    app.restart().await;

    // Tokens, conversations and messages survived.
    let list = app.get("/conversations", ADMIN).await.ok();
    assert_eq!(list["conversations"].as_array().unwrap().len(), 3);
    let out = app.get("/outbox", &web).await.ok();
    assert_eq!(out["messages"][0]["text"], "answered before the restart");

    // The two unacked claims are delivered again once their lease ends.
    let mut again: Vec<Value> = Vec::new();
    while again.len() < 2 {
        let got = tokio::time::timeout(PATIENCE, app.poll(&client, "?wait=5&max=10"))
            .await
            .expect("redelivery in time");
        again.extend(got);
    }
    let texts: BTreeSet<_> = again
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        texts,
        BTreeSet::from(["from u2".to_owned(), "from u3".to_owned()])
    );
    assert!(again.iter().all(|m| m["attempt"] == 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_right_after_2xx_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let http = reqwest::Client::new();

    let mut relay = start_binary(&db, &[]);
    wait_ready(&http, &relay.base).await;
    let post = |path: &str, token: &str, body: Value| {
        http.post(format!("{}{path}", relay.base))
            .bearer_auth(token.to_owned())
            .json(&body)
            .send()
    };
    let web: Value = post("/apps", ADMIN, json!({"name": "web"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let web = web["token"].as_str().unwrap().to_owned();
    let agent: Value = post("/clients", ADMIN, json!({"name": "agent"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let agent = agent["token"].as_str().unwrap().to_owned();

    let mut acknowledged = BTreeSet::new();
    for i in 0..40 {
        let r = post(
            "/inbound",
            &web,
            json!({"from": format!("user{i}"), "text": format!("m{i}")}),
        )
        .await
        .unwrap();
        assert!(r.status().is_success());
        let m: Value = r.json().await.unwrap();
        acknowledged.insert(m["id"].as_str().unwrap().to_owned());
    }
    // SIGKILL: no shutdown path runs.
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();

    let mut relay = start_binary(&db, &[]);
    wait_ready(&http, &relay.base).await;
    let mut delivered = BTreeSet::new();
    for _ in 0..10 {
        let r: Value = http
            .get(format!("{}/poll?max=100", relay.base))
            .bearer_auth(&agent)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for m in r["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("poll answered {r}"))
        {
            delivered.insert(m["id"].as_str().unwrap().to_owned());
        }
        if delivered.len() >= acknowledged.len() {
            break;
        }
    }
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
    assert_eq!(delivered, acknowledged);

    // And the file is intact.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(check, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_leaves_one_self_contained_file_that_is_a_valid_backup() {
    if sqlite_only("about the SQLite file and its write-ahead log") {
        return;
    }
    let mut app = spawn_app().await;
    let (_, web) = app.create_app("web").await;
    let m = app.inbound(&web, "alice", "keep me").await;
    app.stop().await;

    let db = app.config.storage.path.clone();
    assert!(
        !db.with_extension("db-wal").exists(),
        "the WAL was folded into the main file"
    );

    // Copy the lone file elsewhere and serve from the copy: everything is there.
    let backup_dir = tempfile::tempdir().unwrap();
    let backup = backup_dir.path().join("backup.db");
    std::fs::copy(&db, &backup).unwrap();
    let restored = spawn_with(|c| c.storage.path = backup.clone()).await;
    let conv = m["conversationId"].as_str().unwrap();
    let got = restored
        .get(&format!("/conversations/{conv}"), ADMIN)
        .await
        .ok();
    assert_eq!(got["messages"][0]["text"], "keep me");
}

/// Writes without pause, with readers busy all along, keep the write-ahead
/// log near `[storage] wal_limit_mb`: SQLite alone would let it grow for as
/// long as the writes go on (to gigabytes), since it only starts the log over
/// when a checkpoint caught up with it and no reader uses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_ahead_log_stays_bounded_under_continuous_writes() {
    if sqlite_only("about SQLite's write-ahead log") {
        return;
    }
    let app = spawn_with(|c| c.storage.wal_limit_mb = 1).await;
    let (_, _client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let wal = {
        let mut p = app.config.storage.path.clone().into_os_string();
        p.push("-wal");
        std::path::PathBuf::from(p)
    };
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));

    // The largest the log gets, looked at every few milliseconds.
    let watcher = {
        let (wal, writing) = (wal.clone(), writing.clone());
        tokio::spawn(async move {
            let mut largest = 0u64;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                largest = largest.max(size);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            largest
        })
    };
    // Readers all along, as an admin reading history would be.
    let reader = {
        let (http, base, writing) = (app.http.clone(), app.base.clone(), writing.clone());
        tokio::spawn(async move {
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = http
                    .get(format!("{base}/conversations?limit=50"))
                    .bearer_auth(ADMIN)
                    .send()
                    .await;
            }
        })
    };
    let mut writers = Vec::new();
    for w in 0..16 {
        let (http, base, web) = (app.http.clone(), app.base.clone(), web.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..250 {
                let res = http
                    .post(format!("{base}/inbound"))
                    .bearer_auth(&web)
                    .json(&json!({ "from": format!("user{w}-{}", i % 10), "text": format!("message {i} {}", "x".repeat(200)) }))
                    .send()
                    .await
                    .expect("posted");
                assert_eq!(res.status(), 200, "{:?}", res.text().await);
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    let largest = watcher.await.unwrap();
    reader.await.unwrap();

    // 4000 messages wrote well over 20 MiB of log pages.
    let limit = 1u64 << 20;
    assert!(
        largest < 3 * limit,
        "the -wal file reached {largest} bytes, limit {limit}"
    );
    let metrics = app.metrics().await;
    assert!(metrics.contains("clawrelay_wal_bytes "), "{metrics}");
    assert!(metrics.contains("clawrelay_wal_truncations_total{outcome=\"done\"}"));
    let db = app.db().await;
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(stored, 4000);
}
