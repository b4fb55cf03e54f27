//! The queue at scale: a database preloaded with N pending deliveries spread
//! over 100 clients (a share of them leased and unacked), then claim + ack for
//! a bounded time by one client, reporting claim latency percentiles, and the
//! time from process start to ready.

use super::relay::{percentile, RelayProc, ADMIN};
use serde::Serialize;
use serde_json::Value;
use sqlx::{Connection, Executor};
use std::path::Path;
use std::time::{Duration, Instant};

const CLIENTS: i64 = 100;
/// Deliveries claimed at a time: one, so that even the smallest queue gives
/// hundreds of claims to take a p99 from.
const CLAIM: usize = 1;
const APP: &str = "app_0000000000000000000000000000beef";

#[derive(Debug, Serialize)]
pub struct QueueReport {
    pub pending: i64,
    pub leased_share: f64,
    pub preload_secs: f64,
    pub ready_ms: f64,
    pub claims: usize,
    pub claim_p50_ms: f64,
    pub claim_p99_ms: f64,
    pub claim_max_ms: f64,
    /// Median of `GET /conversations?userId=` (admin history of one user).
    pub history_by_user_ms: f64,
    /// Median of `GET /conversations?appId=&limit=50` (the app's newest page).
    pub history_by_app_ms: f64,
    /// Median of `GET /health`.
    pub health_ms: f64,
}

/// The median time of `runs` GETs of `path` with the admin token.
async fn median_get(http: &reqwest::Client, base: &str, path: &str, runs: usize) -> f64 {
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let r = http
            .get(format!("{base}{path}"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("get");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        let _ = r.bytes().await;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    percentile(&times, 0.5)
}

/// Fills a fresh database with `n` deliveries; returns the clients' tokens.
async fn preload(db: &Path, n: i64, leased: f64) -> Vec<String> {
    let store = clawrelay::store::Store::open(db, clawrelay::store::Synchronous::Normal)
        .await
        .expect("create db");
    store.close().await;
    let mut tokens = Vec::new();
    let mut hashes = Vec::new();
    for k in 0..CLIENTS {
        let (token, hash) = clawrelay::auth::issue_token(&format!("cli_{k:032x}"))
            .await
            .expect("token");
        tokens.push(token);
        hashes.push(hash);
    }
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open");
    let now = clawrelay::store::now_ms();
    let leased_every = if leased > 0.0 {
        (1.0 / leased).round() as i64
    } else {
        i64::MAX
    };
    conn.execute("PRAGMA synchronous = OFF")
        .await
        .expect("pragma");
    conn.execute("BEGIN").await.expect("begin");
    sqlx::query("INSERT INTO apps (id, name, token_hash, created_at) VALUES (?, 'bench', 'x', 0)")
        .bind(APP)
        .execute(&mut conn)
        .await
        .expect("app");
    for (k, hash) in hashes.iter().enumerate() {
        sqlx::query("INSERT INTO clients (id, name, token_hash, created_at, last_seen_at) VALUES (?, ?, ?, 0, ?)")
            .bind(format!("cli_{k:032x}"))
            .bind(format!("c{k}"))
            .bind(hash)
            .bind(now)
            .execute(&mut conn)
            .await
            .expect("client");
    }
    for sql in [
        "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?1)
         INSERT INTO conversations (seq, id, app_id, user_id, client_id, created_at, updated_at)
         SELECT i + 1, printf('conv_%032x', i), ?2, 'u' || i, printf('cli_%032x', i % 100), ?3, ?3 FROM k",
        "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?1)
         INSERT INTO messages (seq, id, conversation_id, app_id, client_id, direction, sender, recipient, text, created_at)
         SELECT i + 1, printf('msg_%032x', i), printf('conv_%032x', i), ?2, printf('cli_%032x', i % 100),
                'inbound', 'u' || i, '', 'hello', ?3 FROM k",
    ] {
        sqlx::query(sql).bind(n).bind(APP).bind(now).execute(&mut conn).await.expect("preload");
    }
    // Pending rows are due now, oldest first; of each client's rows (every
    // 100th, as clients take turns) every `leased_every`-th one is leased
    // (claimed once, unacked, its lease ending in an hour).
    sqlx::query(
        "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?1)
         INSERT INTO deliveries (message_seq, conversation_id, client_id, state, attempts, visible_at, created_at, updated_at)
         SELECT i + 1, printf('conv_%032x', i), printf('cli_%032x', i % 100), 'ready',
                CASE WHEN (i / 100) % ?2 = 0 THEN 1 ELSE 0 END,
                CASE WHEN (i / 100) % ?2 = 0 THEN ?3 + 3600000 ELSE ?3 - ?1 + i END, ?3, ?3 FROM k",
    )
    .bind(n)
    .bind(leased_every)
    .bind(now)
    .execute(&mut conn)
    .await
    .expect("deliveries");
    conn.execute("COMMIT").await.expect("commit");
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        .await
        .expect("checkpoint");
    conn.close().await.expect("close");
    tokens
}

pub async fn run(bin: &Path, n: i64, leased: f64, duration: Duration) -> QueueReport {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("queue.db");
    let t = Instant::now();
    let tokens = preload(&db, n, leased).await;
    // The preloaded messages are indexed for search before the relay starts
    // (closing a store indexes what waits), as a relay indexes its messages
    // while it stores them: else the relay indexes a million of them in its
    // commits while the claims are timed.
    clawrelay::store::Store::open(&db, clawrelay::store::Synchronous::Normal)
        .await
        .expect("open the preloaded database")
        .close()
        .await;
    // The preload wrote without syncing: put it on disk now, or the kernel
    // writes a gigabyte back while the claims are timed.
    std::fs::File::open(&db)
        .and_then(|f| f.sync_all())
        .expect("sync the preloaded database");
    let preload_secs = t.elapsed().as_secs_f64();

    let relay = RelayProc::start(bin, &db, "full", dir.path()).await;
    let http = reqwest::Client::new();
    let base = relay.base.clone();
    // Every client's token verified once (argon2) before measuring, with a
    // request that claims nothing.
    for token in &tokens {
        let _ = http
            .get(format!("{base}/conversations/conv_{:032x}", u64::MAX))
            .bearer_auth(token)
            .send()
            .await;
    }
    // Claim + ack, the clients taking turns, until time is up or every
    // client's queue is empty. Each client's first claim warms the pages of
    // its part of the queue and is not counted (a database of a million
    // rows is cold in the relay's cache after the preload).
    let mut claims = Vec::new();
    let mut warm = vec![false; tokens.len()];
    let mut empty_in_a_row = 0;
    let deadline = Instant::now() + duration;
    'outer: while Instant::now() < deadline {
        for (k, token) in tokens.iter().enumerate() {
            if Instant::now() >= deadline || empty_in_a_row >= tokens.len() {
                break 'outer;
            }
            let t = Instant::now();
            let r: Value = http
                .get(format!("{base}/poll?max={CLAIM}"))
                .bearer_auth(token)
                .send()
                .await
                .expect("poll")
                .json()
                .await
                .expect("json");
            let ids: Vec<Value> = r["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| m["id"].clone())
                .collect();
            if ids.is_empty() {
                empty_in_a_row += 1;
                continue;
            }
            if std::mem::replace(&mut warm[k], true) {
                claims.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            empty_in_a_row = 0;
            http.post(format!("{base}/ack"))
                .bearer_auth(token)
                .json(&serde_json::json!({ "ids": ids }))
                .send()
                .await
                .expect("ack");
        }
    }
    let user = format!("/conversations?userId=u{}", n / 2);
    let history_by_user_ms = median_get(&http, &base, &user, 21).await;
    let by_app = format!("/conversations?appId={APP}&limit=50");
    let history_by_app_ms = median_get(&http, &base, &by_app, 21).await;
    let health_ms = median_get(&http, &base, "/health", 21).await;
    let ready_ms = relay.ready_after.as_secs_f64() * 1000.0;
    relay.stop().await;
    claims.sort_by(f64::total_cmp);
    QueueReport {
        pending: n,
        leased_share: leased,
        preload_secs,
        ready_ms,
        claims: claims.len(),
        claim_p50_ms: percentile(&claims, 0.50),
        claim_p99_ms: percentile(&claims, 0.99),
        claim_max_ms: claims.last().copied().unwrap_or(0.0),
        history_by_user_ms,
        history_by_app_ms,
        health_ms,
    }
}
