//! Search of history at scale: a SQLite database of `messages` messages
//! (English sentences and Chinese ones, a rare word in about one message in
//! 200), searched through the relay (`GET /conversations?q=`): p50 and p99
//! of a one-word, a two-word and a Chinese two-character search. And what
//! the index costs a write, measured in the same run as the preload: the
//! time per message of storing it, then of computing its terms and writing
//! them into the index, the two steps an inbound write takes.

use super::relay::{percentile, RelayProc, ADMIN};
use serde::Serialize;
use sqlx::{Connection, Executor};
use std::time::Instant;

const PER_CONVERSATION: i64 = 10;
const QUERIES: usize = 200;

const WORDS: [&str; 40] = [
    "the", "order", "my", "is", "please", "when", "will", "it", "arrive", "thanks", "hello",
    "account", "password", "cannot", "login", "price", "delivery", "address", "change", "help",
    "card", "payment", "failed", "again", "today", "tomorrow", "week", "support", "agent", "reply",
    "question", "about", "invoice", "shipping", "size", "color", "return", "package", "late",
    "status",
];
const CHINESE: [&str; 8] = [
    "您好，请问我的订单什么时候发货",
    "我想修改收货地址",
    "付款失败了怎么办",
    "请帮我查一下物流信息",
    "这个商品有其他颜色吗",
    "谢谢你的帮助",
    "发票怎么开",
    "账号登录不了",
];
/// Rare words: each in about one message in 200.
const RARE: [&str; 4] = ["refund", "warranty", "coupon", "broken"];
const RARE_CHINESE: [&str; 2] = ["我要申请退款", "商品质量问题"];

#[derive(Debug, Serialize)]
pub struct SearchReport {
    pub messages: i64,
    pub preload_secs: f64,
    /// Storing a message (its row alone), µs per message.
    pub insert_us: f64,
    /// Computing its terms and writing them into the index, µs per message.
    pub index_us: f64,
    pub one_word_p50_ms: f64,
    pub one_word_p99_ms: f64,
    pub two_words_p50_ms: f64,
    pub two_words_p99_ms: f64,
    pub chinese_p50_ms: f64,
    pub chinese_p99_ms: f64,
    pub database_mib: f64,
}

/// A deterministic text for message `i`.
fn text_of(i: i64, seed: &mut u64) -> String {
    let mut next = || {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 33) as usize
    };
    if i % 5 == 0 {
        let mut s = CHINESE[next() % CHINESE.len()].to_owned();
        if next() % 100 == 0 {
            s.push('，');
            s.push_str(RARE_CHINESE[next() % RARE_CHINESE.len()]);
        }
        return s;
    }
    let n = 6 + next() % 14;
    let mut words: Vec<&str> = (0..n).map(|_| WORDS[next() % WORDS.len()]).collect();
    if next() % 200 == 0 {
        let at = next() % words.len();
        words[at] = RARE[next() % RARE.len()];
    }
    words.join(" ")
}

async fn timed(http: &reqwest::Client, base: &str, queries: &[String]) -> Vec<f64> {
    let mut times = Vec::with_capacity(queries.len());
    for q in queries {
        let t = Instant::now();
        let r = http
            .get(format!("{base}/conversations"))
            .query(&[("q", q.as_str()), ("limit", "20")])
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("search");
        assert!(r.status().is_success(), "search {q}: {}", r.status());
        let _ = r.bytes().await;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    times
}

pub async fn run(bin: &std::path::Path, messages: i64) -> SearchReport {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("search.db");
    let t = Instant::now();
    let store = clawrelay::store::Store::open(&db, clawrelay::store::Synchronous::Normal)
        .await
        .expect("db");
    store.close().await;
    let now = clawrelay::store::now_ms();
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open");
    conn.execute("PRAGMA synchronous = OFF").await.unwrap();
    conn.execute("BEGIN").await.unwrap();
    let app = "app_0000000000000000000000000000beef";
    sqlx::query("INSERT INTO apps (id, name, token_hash, created_at) VALUES (?, 'bench', 'x', 0)")
        .bind(app)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?1)
         INSERT INTO conversations (seq, id, app_id, user_id, created_at, updated_at)
         SELECT i + 1, printf('conv_%032x', i), ?2, 'u' || i, ?3, ?3 FROM k",
    )
    .bind(messages / PER_CONVERSATION)
    .bind(app)
    .bind(now)
    .execute(&mut conn)
    .await
    .unwrap();
    let mut seed = 42u64;
    let texts: Vec<String> = (0..messages).map(|i| text_of(i, &mut seed)).collect();
    // The two steps of a write, timed apart: the message, then its terms.
    let started = Instant::now();
    for (i, text) in texts.iter().enumerate() {
        let i = i as i64;
        sqlx::query(
            "INSERT INTO messages (seq, id, conversation_id, app_id, direction, sender, recipient, text, created_at)
             VALUES (?1, printf('msg_%032x', ?1), printf('conv_%032x', ?2), ?3, 'inbound', 'u', 'a', ?4, ?5)",
        )
        .bind(i + 1)
        .bind(i / PER_CONVERSATION)
        .bind(app)
        .bind(text)
        .bind(now - messages + i)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let insert_us = started.elapsed().as_secs_f64() * 1e6 / messages as f64;
    let started = Instant::now();
    for (i, text) in texts.iter().enumerate() {
        sqlx::query("INSERT INTO message_search (rowid, terms) VALUES (?1, ?2)")
            .bind(i as i64 + 1)
            .bind(clawrelay::search::fts5_terms(text))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let index_us = started.elapsed().as_secs_f64() * 1e6 / messages as f64;
    // Nothing from before to index.
    conn.execute("DELETE FROM settings WHERE key = 'search_backfill_below'")
        .await
        .unwrap();
    conn.execute("COMMIT").await.unwrap();
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        .await
        .unwrap();
    conn.close().await.unwrap();
    let preload_secs = t.elapsed().as_secs_f64();
    let database_mib = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0;

    let relay = RelayProc::start(bin, &db, "full", dir.path()).await;
    let http = reqwest::Client::new();
    let base = relay.base.clone();
    let pick = |list: &[&str], n: usize| -> Vec<String> {
        (0..n).map(|i| list[i % list.len()].to_owned()).collect()
    };
    let one = pick(&RARE, QUERIES);
    let two: Vec<String> = (0..QUERIES)
        .map(|i| format!("{} {}", RARE[i % RARE.len()], WORDS[(i * 7) % WORDS.len()]))
        .collect();
    let chinese = pick(&["退款", "质量", "申请退款"], QUERIES);
    // Warm the caches.
    timed(&http, &base, &one[..20]).await;
    let one = timed(&http, &base, &one).await;
    let two = timed(&http, &base, &two).await;
    let chinese = timed(&http, &base, &chinese).await;
    relay.stop().await;
    SearchReport {
        messages,
        preload_secs,
        insert_us,
        index_us,
        one_word_p50_ms: percentile(&one, 0.5),
        one_word_p99_ms: percentile(&one, 0.99),
        two_words_p50_ms: percentile(&two, 0.5),
        two_words_p99_ms: percentile(&two, 0.99),
        chinese_p50_ms: percentile(&chinese, 0.5),
        chinese_p99_ms: percentile(&chinese, 0.99),
        database_mib,
    }
}
