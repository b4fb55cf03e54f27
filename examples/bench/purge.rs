//! Retention under load: a database holding `messages` messages in
//! conversations expired long ago, purged by the relay's background task
//! while a writer posts messages; reports how long the purge took and the
//! longest a write waited meanwhile.

use super::relay::{percentile, RelayProc, ADMIN};
use serde::Serialize;
use serde_json::json;
use sqlx::{Connection, Executor};
use std::time::{Duration, Instant};

const PER_CONVERSATION: i64 = 10;

#[derive(Debug, Serialize)]
pub struct PurgeReport {
    pub messages: i64,
    pub preload_secs: f64,
    pub purge_secs: f64,
    pub messages_per_sec: f64,
    pub writes: usize,
    pub write_p50_ms: f64,
    pub write_p99_ms: f64,
    pub write_max_ms: f64,
}

async fn purged_messages(http: &reqwest::Client, base: &str) -> f64 {
    let Ok(r) = http
        .get(format!("{base}/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
    else {
        return 0.0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("clawrelay_purged_total{kind=\"messages\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub async fn run(bin: &std::path::Path, messages: i64) -> PurgeReport {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("purge.db");
    let t = Instant::now();
    let store = clawrelay::store::Store::open(&db, clawrelay::store::Synchronous::Normal)
        .await
        .expect("db");
    store.close().await;
    let conversations = messages / PER_CONVERSATION;
    let long_ago = clawrelay::store::now_ms() - 60 * 86_400_000;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open");
    conn.execute("PRAGMA synchronous = OFF").await.unwrap();
    conn.execute("BEGIN").await.unwrap();
    let app = "app_0000000000000000000000000000beef";
    sqlx::query("INSERT INTO apps (id, name, token_hash, created_at) VALUES (?, 'old', 'x', 0)")
        .bind(app)
        .execute(&mut conn)
        .await
        .unwrap();
    for sql in [
        "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?1)
         INSERT INTO conversations (seq, id, app_id, user_id, created_at, updated_at, expired_at)
         SELECT i + 1, printf('conv_%032x', i), ?2, 'u' || i, ?3, ?3, ?3 FROM k",
        "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?1 * 10)
         INSERT INTO messages (seq, id, conversation_id, app_id, direction, sender, recipient, text, created_at)
         SELECT i + 1, printf('msg_%032x', i), printf('conv_%032x', i / 10), ?2,
                CASE WHEN i % 2 = 0 THEN 'inbound' ELSE 'outbound' END, 'u', 'a', 'old message', ?3 FROM k",
        "INSERT INTO deliveries (message_seq, conversation_id, state, attempts, visible_at, created_at, updated_at)
         SELECT seq, conversation_id, 'acked', 1, ?3, ?3, ?3 FROM messages WHERE direction = 'inbound' AND ?1 = ?1 AND ?2 = ?2",
    ] {
        sqlx::query(sql).bind(conversations).bind(app).bind(long_ago).execute(&mut conn).await.expect("preload");
    }
    conn.execute("COMMIT").await.unwrap();
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        .await
        .unwrap();
    conn.close().await.unwrap();
    let preload_secs = t.elapsed().as_secs_f64();

    // The purge starts with the first cleanup tick, a second after start.
    let relay = RelayProc::start_with(
        bin,
        &db,
        "full",
        dir.path(),
        "[conversations]\ncleanup_interval_secs = 1\n",
    )
    .await;
    let http = reqwest::Client::new();
    let base = relay.base.clone();
    let web = relay.app_token("probe").await;

    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let mut writes = Vec::new();
    let mut i = 0u64;
    let mut done_at = None;
    while Instant::now() < deadline {
        i += 1;
        let t = Instant::now();
        let r = http
            .post(format!("{base}/inbound"))
            .bearer_auth(&web)
            .json(&json!({"from": format!("w{}", i % 500), "text": "written during the purge"}))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "a write failed during the purge: {}",
            r.status()
        );
        writes.push(t.elapsed().as_secs_f64() * 1000.0);
        if i.is_multiple_of(50) && purged_messages(&http, &base).await >= messages as f64 {
            done_at = Some(started.elapsed());
            break;
        }
    }
    relay.stop().await;
    let purge_secs = done_at.map(|d| d.as_secs_f64()).unwrap_or(f64::NAN);
    writes.sort_by(f64::total_cmp);
    PurgeReport {
        messages,
        preload_secs,
        purge_secs,
        messages_per_sec: messages as f64 / purge_secs,
        writes: writes.len(),
        write_p50_ms: percentile(&writes, 0.5),
        write_p99_ms: percentile(&writes, 0.99),
        write_max_ms: writes.last().copied().unwrap_or(0.0),
    }
}
