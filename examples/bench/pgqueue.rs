//! The queue at scale on PostgreSQL, at the storage layer: a throwaway cluster (scripts/pg.sh) preloaded
//! with N pending deliveries spread over 100 clients as `queue` spreads
//! them (a share leased and unacked), then for a bounded time the clients
//! take turns at a claim (the relay's batched claim statement, through its
//! batcher) and an ack transaction (lock the conversation, ack, promote,
//! commit: a `Store::write` as the domain's `/ack` makes it). Reports the
//! latency of both. No HTTP: compare with `queue` for the storage's share
//! only.

use super::relay::percentile;
use clawrelay::ids::{ClientId, MessageId};
use clawrelay::store::postgres::engine::{Claim, Engine, Rules};
use clawrelay::store::{deliveries, Reader, Store, StoreError};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CLIENTS: i64 = 100;

#[derive(Debug, Serialize)]
pub struct PgQueueReport {
    pub pending: i64,
    pub leased_share: f64,
    pub preload_secs: f64,
    pub claims: usize,
    pub claim_p50_ms: f64,
    pub claim_p99_ms: f64,
    pub claim_max_ms: f64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
}

/// A throwaway cluster, removed on drop.
pub struct Cluster(PathBuf);

impl Cluster {
    pub fn start(dir: &Path) -> (Cluster, String) {
        let out = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh"))
            .arg("start")
            .arg(dir)
            .output()
            .expect("scripts/pg.sh");
        assert!(
            out.status.success(),
            "scripts/pg.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        (Cluster(dir.to_owned()), url)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh"))
            .arg("stop")
            .arg(&self.0)
            .status();
    }
}

fn pool(store: &Store) -> &sqlx::PgPool {
    match store.reader() {
        Reader::Postgres(pool) => pool,
        Reader::Sqlite(_) => unreachable!("the store was opened on PostgreSQL"),
    }
}

async fn preload(store: &Store, n: i64, leased: f64) {
    let db = pool(store);
    let now = clawrelay::store::now_ms();
    let leased_every = if leased > 0.0 {
        (1.0 / leased).round() as i64
    } else {
        i64::MAX
    };
    sqlx::query(
        "INSERT INTO apps (id, name, token_hash, created_at) VALUES ('app_bench', 'bench', 'x', 0)",
    )
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO clients (id, name, token_hash, created_at, last_seen_at)
         SELECT 'cli_' || k, 'c' || k, 'x', 0, $1 FROM generate_series(0, 99) k",
    )
    .bind(now)
    .execute(db)
    .await
    .unwrap();
    for sql in [
        "INSERT INTO conversations (id, app_id, user_id, client_id, created_at, updated_at)
         SELECT 'conv_' || i, 'app_bench', 'u' || i, 'cli_' || (i % 100), $2, $2
         FROM generate_series(0, $1 - 1) i",
        "INSERT INTO messages (seq, id, conversation_id, app_id, client_id, direction, sender, recipient, text, created_at, pos)
         SELECT i + 1, 'msg_' || i, 'conv_' || i, 'app_bench', 'cli_' || (i % 100), 'inbound', 'u' || i, '', 'hello', $2, i + 1
         FROM generate_series(0, $1 - 1) i",
    ] {
        sqlx::query(sql).bind(n).bind(now).execute(db).await.unwrap();
    }
    // One statement: the open-delivery counts are added up once for it.
    sqlx::query(
        "INSERT INTO deliveries (message_seq, conversation_id, client_id, state, attempts, visible_at, created_at, updated_at)
         SELECT i + 1, 'conv_' || i, 'cli_' || (i % 100), 'ready',
                CASE WHEN (i / 100) % $2 = 0 THEN 1 ELSE 0 END,
                CASE WHEN (i / 100) % $2 = 0 THEN $3 + 3600000 ELSE $3 - $1 + i END, $3, $3
         FROM generate_series(0, $1 - 1) i",
    )
    .bind(n)
    .bind(leased_every)
    .bind(now)
    .execute(db)
    .await
    .unwrap();
    sqlx::query("VACUUM ANALYZE").execute(db).await.unwrap();
}

pub async fn run(n: i64, leased: f64, duration: Duration) -> PgQueueReport {
    let dir = tempfile::tempdir().expect("temp dir");
    // As root the server runs as `postgres`, which must reach the directory.
    let pgdir = std::env::temp_dir().join(format!(
        "clawrelay-bench-pg-{}",
        dir.path().file_name().unwrap().to_string_lossy()
    ));
    let (_cluster, url) = Cluster::start(&pgdir);
    let store = Store::connect_postgres(&url, 4).await.expect("connect");
    let t = Instant::now();
    preload(&store, n, leased).await;
    let preload_secs = t.elapsed().as_secs_f64();
    // Claims as the relay makes them: through its batched claim statement.
    let pg = store.postgres().expect("a PostgreSQL store");
    let engine = Engine::start(
        pg.pool().clone(),
        pg.notices().clone(),
        Default::default(),
        Rules {
            ttl_ms: 86_400_000,
            max_pending: 1 << 40,
            lease_ms: 60_000,
            max_attempts: 5,
        },
    );

    let clients: Vec<ClientId> = (0..CLIENTS)
        .map(|k| ClientId::from_db(format!("cli_{k}")))
        .collect();
    let (mut claims, mut acks) = (Vec::new(), Vec::new());
    let mut empty_in_a_row = 0;
    let deadline = Instant::now() + duration;
    'outer: while Instant::now() < deadline {
        for client in &clients {
            if Instant::now() >= deadline || empty_in_a_row >= clients.len() {
                break 'outer;
            }
            let now = clawrelay::store::now_ms();
            let t = Instant::now();
            let claimed = engine
                .claim(Claim {
                    client: client.clone(),
                    max: 10,
                    owner: None,
                })
                .await
                .unwrap();
            let seqs: Vec<i64> = claimed
                .messages
                .iter()
                .filter_map(|m| m.id.as_str().strip_prefix("msg_")?.parse::<i64>().ok())
                .map(|i| i + 1)
                .collect();
            if seqs.is_empty() {
                empty_in_a_row += 1;
                continue;
            }
            claims.push(t.elapsed().as_secs_f64() * 1000.0);
            empty_in_a_row = 0;
            let t = Instant::now();
            let who = client.clone();
            store
                .write(move |tx| {
                    for seq in &seqs {
                        let id = MessageId::from_db(format!("msg_{}", seq - 1));
                        if let Some(conversation) = deliveries::ack(tx, &who, &id, now)? {
                            deliveries::promote_next(tx, &conversation, now)?;
                        }
                    }
                    Ok::<_, StoreError>(())
                })
                .await
                .unwrap();
            acks.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    store.close().await;
    claims.sort_by(f64::total_cmp);
    acks.sort_by(f64::total_cmp);
    PgQueueReport {
        pending: n,
        leased_share: leased,
        preload_secs,
        claims: claims.len(),
        claim_p50_ms: percentile(&claims, 0.5),
        claim_p99_ms: percentile(&claims, 0.99),
        claim_max_ms: claims.last().copied().unwrap_or(0.0),
        ack_p50_ms: percentile(&acks, 0.5),
        ack_p99_ms: percentile(&acks, 0.99),
    }
}
