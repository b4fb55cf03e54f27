//! The PostgreSQL backend's foundations against a real PostgreSQL 15: a
//! throwaway cluster per test (scripts/pg.sh: initdb + pg_ctl on a temp
//! directory and a free loopback port, removed afterwards).

use super::helpers::{spawn_app, TestApp};
use clawrelay::ids::ClientId;
use clawrelay::store::postgres::{cursor, leader::Leadership, presence, PgStore};
use sqlx::{PgPool, Row};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A running throwaway cluster; stopped and deleted on drop.
pub(crate) struct Cluster {
    dir: PathBuf,
    pub(crate) url: String,
}

impl Cluster {
    pub(crate) fn start() -> Cluster {
        static N: AtomicU32 = AtomicU32::new(0);
        // Directly under the temp root: as root the server runs as the
        // `postgres` user, which must reach the directory.
        let dir = std::env::temp_dir().join(format!(
            "clawrelay-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh");
        let out = Command::new("bash")
            .args([script, "start"])
            .arg(&dir)
            .output()
            .expect("bash runs scripts/pg.sh");
        assert!(
            out.status.success(),
            "scripts/pg.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        Cluster { dir, url }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The server's log says what PostgreSQL saw (deadlocks, say).
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- PostgreSQL's log, last lines ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh");
        let _ = Command::new("bash")
            .args([script, "stop"])
            .arg(&self.dir)
            .status();
    }
}

/// Columns per table (and view) of the public schema.
async fn pg_columns(pool: &PgPool) -> BTreeMap<String, BTreeSet<String>> {
    let rows = sqlx::query(
        "SELECT table_name::text, column_name::text FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut tables: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in rows {
        tables
            .entry(r.get(0))
            .or_default()
            .insert(r.get::<String, _>(1));
    }
    tables
}

async fn sqlite_columns(app: &TestApp) -> BTreeMap<String, BTreeSet<String>> {
    let db = app.db().await;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')
         AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let mut tables = BTreeMap::new();
    for name in names {
        let cols: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?)")
            .bind(&name)
            .fetch_all(&db)
            .await
            .unwrap();
        tables.insert(name, cols.into_iter().collect());
    }
    tables
}

/// Both backends store the same tables, columns and indexes: a migration
/// added to one and not the other fails here. PostgreSQL's only extras are
/// what several writers need (the global cursor `messages.pos`, liveness
/// across relays, open-delivery counts per session). The search index is
/// each backend's own: SQLite's FTS5 table (and its shadow tables), a
/// tsvector column on PostgreSQL.
#[tokio::test]
async fn postgres_schema_matches_sqlite() {
    let pg = Cluster::start();
    let store = PgStore::connect(&pg.url, 4).await.unwrap();
    let app = spawn_app().await;

    let mut expected = sqlite_columns(&app).await;
    expected.retain(|table, _| !table.starts_with("message_search"));
    let messages = expected
        .get_mut("messages")
        .expect("SQLite has a messages table");
    messages.insert("pos".into());
    messages.insert("search".into());
    let mut actual = pg_columns(store.pool()).await;
    // Liveness across relays; one SQLite relay knows its connections.
    assert_eq!(
        actual.remove("client_presence"),
        Some(BTreeSet::from([
            "client_id".into(),
            "relay_id".into(),
            "seen_at".into()
        ]))
    );
    // Open-delivery counts no two writers share, and the cursor's base:
    // what several writers need.
    assert_eq!(
        actual.remove("client_pending"),
        Some(BTreeSet::from([
            "client_id".into(),
            "backend".into(),
            "n".into()
        ]))
    );
    assert_eq!(
        actual.remove("cursor_base"),
        Some(BTreeSet::from(["one".into(), "base".into()]))
    );
    assert_eq!(
        actual.remove("relays"),
        Some(BTreeSet::from(["id".into(), "seen_at".into()]))
    );
    assert_eq!(actual, expected);

    let sqlite_indexes: BTreeSet<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(&app.db().await)
    .await
    .unwrap()
    .into_iter()
    .collect();
    // Primary keys and UNIQUE columns are indexes of their own in both;
    // only the named ones are compared.
    let mut pg_indexes: BTreeSet<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public'
         AND indexname NOT LIKE '%_pkey' AND indexname NOT LIKE '%_key'",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert!(pg_indexes.remove("client_presence_seen"));
    // The search index: the GIN index of the tsvector column (SQLite's is
    // the FTS5 table).
    assert!(pg_indexes.remove("messages_search"));
    // On PostgreSQL a conversation's activity is not indexed, so that the
    // update each message makes stays on its page (see migration 0003).
    let mut sqlite_indexes = sqlite_indexes;
    assert!(sqlite_indexes.remove("conversations_idle"));
    // On SQLite a delivery no longer names its conversation with a foreign
    // key (migration 0019: the key was redundant, its index a write per
    // message). PostgreSQL dropped the key in its 0003 and keeps the index,
    // which its queries by conversation and state read.
    assert!(pg_indexes.remove("deliveries_by_conversation"));
    assert_eq!(pg_indexes, sqlite_indexes);
    // Nor in any other index (migration 0010): one that names it makes
    // every message's update of its conversation write to all of them.
    let with_activity: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes
         WHERE schemaname = 'public' AND tablename = 'conversations'
           AND indexdef LIKE '%updated_at%'",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(with_activity, Vec::<String>::new());

    // Migrating again (a second relay starting) changes nothing.
    let again = PgStore::connect(&pg.url, 2).await.unwrap();
    again.ping().await.unwrap();
    let public: i64 = sqlx::query_scalar("SELECT count(*) FROM apps WHERE id = 'app_public'")
        .fetch_one(again.pool())
        .await
        .unwrap();
    assert_eq!(public, 1);
    store.close().await;
    again.close().await;
}

/// The open-delivery trigger counts open deliveries as SQLite's three do
/// (in rows per database session, added up by `client_pending`).
#[tokio::test]
async fn postgres_pending_counter_follows_deliveries() {
    let pg = Cluster::start();
    let store = PgStore::connect(&pg.url, 4).await.unwrap();
    let db = store.pool();
    setup_conversation(db).await;
    sqlx::query(
        "INSERT INTO clients (id, name, token_hash, created_at) VALUES ('cli_b', 'b', 'x', 0)",
    )
    .execute(db)
    .await
    .unwrap();
    let pending = |id: &'static str| async move {
        sqlx::query_scalar::<_, i64>("SELECT client_pending($1)")
            .bind(id)
            .fetch_one(db)
            .await
            .unwrap()
    };
    let enqueue = |seq: i64, state: &'static str| async move {
        sqlx::query(
            "INSERT INTO deliveries (message_seq, conversation_id, client_id, state, visible_at, created_at, updated_at)
             VALUES ($1, 'conv_1', 'cli_a', $2, 0, 0, 0)",
        )
        .bind(seq)
        .bind(state)
        .execute(db)
        .await
        .unwrap();
    };
    let seqs = insert_messages(db, 3).await;
    for (i, seq) in seqs.iter().enumerate() {
        enqueue(*seq, if i == 0 { "ready" } else { "queued" }).await;
    }
    assert_eq!(pending("cli_a").await, 3);
    let set = |sql: &'static str, seq: i64| async move {
        sqlx::query(sql).bind(seq).execute(db).await.unwrap();
    };
    set(
        "UPDATE deliveries SET state = 'acked' WHERE message_seq = $1",
        seqs[0],
    )
    .await;
    set(
        "UPDATE deliveries SET state = 'ready' WHERE message_seq = $1",
        seqs[1],
    )
    .await;
    assert_eq!(pending("cli_a").await, 2);
    set(
        "UPDATE deliveries SET client_id = 'cli_b' WHERE message_seq = $1",
        seqs[2],
    )
    .await;
    assert_eq!((pending("cli_a").await, pending("cli_b").await), (1, 1));
    set(
        "UPDATE deliveries SET attempts = 5 WHERE message_seq = $1",
        seqs[2],
    )
    .await;
    assert_eq!(pending("cli_b").await, 1);
    set("DELETE FROM deliveries WHERE message_seq = $1", seqs[2]).await;
    set("DELETE FROM deliveries WHERE message_seq = $1", seqs[0]).await;
    assert_eq!((pending("cli_a").await, pending("cli_b").await), (1, 0));
    // One statement changing several rows in different ways is counted
    // once (migration 0010), with the same result.
    for seq in insert_messages(db, 2).await {
        enqueue(seq, "queued").await;
    }
    assert_eq!(pending("cli_a").await, 3);
    set(
        "UPDATE deliveries SET client_id = 'cli_b',
                state = CASE WHEN message_seq = $1 THEN 'acked' ELSE state END
         WHERE client_id = 'cli_a' AND state IN ('ready', 'queued')",
        seqs[1],
    )
    .await;
    assert_eq!((pending("cli_a").await, pending("cli_b").await), (0, 2));
    set(
        "UPDATE deliveries SET attempts = attempts + 1 WHERE message_seq <> $1",
        seqs[1],
    )
    .await;
    assert_eq!((pending("cli_a").await, pending("cli_b").await), (0, 2));
    // The leader folds the per-session counts into clients.pending: the
    // sums stay, the per-session rows go.
    assert_eq!(store.fold_pending().await.unwrap(), 1);
    assert_eq!((pending("cli_a").await, pending("cli_b").await), (0, 2));
    let (folded, rows): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT pending FROM clients WHERE id = 'cli_b'), (SELECT count(*) FROM client_pending)",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!((folded, rows), (2, 0));
    store.close().await;
}

async fn setup_conversation(db: &PgPool) {
    sqlx::query(
        "INSERT INTO clients (id, name, token_hash, created_at) VALUES ('cli_a', 'a', 'x', 0)",
    )
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO conversations (id, app_id, user_id, client_id, created_at, updated_at)
         VALUES ('conv_1', 'app_public', 'u1', 'cli_a', 0, 0)",
    )
    .execute(db)
    .await
    .unwrap();
}

const INSERT_MESSAGE: &str = "INSERT INTO messages
    (id, conversation_id, app_id, direction, sender, recipient, text, created_at)
    VALUES ($1, 'conv_1', 'app_public', 'inbound', 'u1', 'agent', 't', 0) RETURNING seq";

async fn insert_messages(db: &PgPool, n: usize) -> Vec<i64> {
    let mut seqs = Vec::new();
    for _ in 0..n {
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        seqs.push(
            sqlx::query_scalar(INSERT_MESSAGE)
                .bind(id)
                .fetch_one(db)
                .await
                .unwrap(),
        );
    }
    seqs
}

/// The cursor read as the relay reads it: positions after `after` that a
/// statement starting now can read (`readable_pos()`), in order.
async fn read_cursor(db: &PgPool, after: i64) -> Vec<(i64, i64)> {
    sqlx::query_as::<_, (i64, i64)>(
        "SELECT pos, seq FROM messages
         WHERE app_id = 'app_public' AND pos > $1 AND pos < readable_pos() ORDER BY pos",
    )
    .bind(after)
    .fetch_all(db)
    .await
    .unwrap()
}

/// Messages committed out of order (relay A stores first, relay B second, B
/// commits first) are still read by cursor without a gap: B's message is
/// not readable while A's transaction runs, so no reader passes it before
/// A's is there; then both are, A's first. Positions stored by the stamps
/// of earlier versions stay below every new one.
#[tokio::test]
async fn postgres_cursor_follows_commit_order() {
    let pg = Cluster::start();
    let store = PgStore::connect(&pg.url, 8).await.unwrap();
    let db = store.pool();
    setup_conversation(db).await;

    let mut a = db.begin().await.unwrap();
    let seq_a: i64 = sqlx::query_scalar(INSERT_MESSAGE)
        .bind("msg_a")
        .fetch_one(&mut *a)
        .await
        .unwrap();
    let seq_b = insert_messages(db, 1).await[0];
    assert!(
        seq_a < seq_b,
        "the dangerous case: the later message commits first"
    );
    // B committed, but A's transaction (older) still runs: nothing is
    // readable yet, so no reader can move past A's place.
    assert!(read_cursor(db, 0).await.is_empty());
    let readable: i64 = sqlx::query_scalar("SELECT readable_pos()")
        .fetch_one(db)
        .await
        .unwrap();
    let pos_b: i64 = sqlx::query_scalar("SELECT pos FROM messages WHERE seq = $1")
        .bind(seq_b)
        .fetch_one(db)
        .await
        .unwrap();
    assert!(
        readable <= pos_b,
        "B's message is beyond the readable position"
    );

    a.commit().await.unwrap();
    let both = read_cursor(db, 0).await;
    assert_eq!(
        both.iter().map(|r| r.1).collect::<Vec<_>>(),
        vec![seq_a, seq_b],
        "A's message first: its transaction is the older"
    );
    // A reader that had read up to A's message finds B's after it.
    assert_eq!(
        read_cursor(db, both[0].0)
            .await
            .iter()
            .map(|r| r.1)
            .collect::<Vec<_>>(),
        vec![seq_b]
    );
    // Three messages in one transaction: positions in the order stored.
    let mut tx = db.begin().await.unwrap();
    for n in 0..3 {
        sqlx::query(INSERT_MESSAGE)
            .bind(format!("msg_t{n}"))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM messages WHERE pos > $1 AND pos < readable_pos() ORDER BY pos",
    )
    .bind(both[1].0)
    .fetch_all(db)
    .await
    .unwrap();
    assert_eq!(ids, ["msg_t0", "msg_t1", "msg_t2"]);
    store.close().await;
}

/// Cursors apps hold from before this version (positions the stamps gave)
/// keep working: the migration numbers what no stamp reached, and every new
/// position is above the old ones, also after a restore into a cluster
/// whose transaction ids are lower than the positions stored.
#[tokio::test]
async fn postgres_cursor_keeps_positions_of_earlier_versions() {
    let pg = Cluster::start();
    let db = PgPool::connect(&pg.url).await.unwrap();
    // The schema as the previous version left it, with stamped and
    // unstamped messages.
    let mut before = sqlx::migrate!("./migrations/postgres");
    before.migrations = std::borrow::Cow::Owned(
        before
            .migrations
            .iter()
            .filter(|m| m.version < 3)
            .cloned()
            .collect(),
    );
    before.run(&db).await.unwrap();
    setup_conversation(&db).await;
    let old_seqs = insert_messages(&db, 3).await;
    sqlx::query("UPDATE messages SET pos = 5000000000 + seq WHERE seq = $1 OR seq = $2")
        .bind(old_seqs[0])
        .bind(old_seqs[1])
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("SELECT setval('messages_pos', 5000000000 + $1)")
        .bind(old_seqs[1])
        .execute(&db)
        .await
        .unwrap();
    let held_cursor = 5_000_000_000 + old_seqs[0];

    // This version migrates: the unstamped one gets the next old position,
    // and positions jump above them all (the base is raised: this cluster's
    // transaction ids are far below 5e9 >> 20).
    let store = PgStore::connect(&pg.url, 4).await.unwrap();
    let base: i64 = sqlx::query_scalar("SELECT base FROM cursor_base")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(base > 0, "the base rose above the stored positions");
    let new = insert_messages(store.pool(), 1).await[0];
    let after_held = read_cursor(store.pool(), held_cursor).await;
    assert_eq!(
        after_held.iter().map(|r| r.1).collect::<Vec<_>>(),
        vec![old_seqs[1], old_seqs[2], new],
        "the held cursor resumes with the old messages after it, then the new one"
    );
    assert!(after_held.windows(2).all(|w| w[0].0 < w[1].0));
    store.close().await;
}

/// Several writers committing in random order, and a reader tailing the
/// cursor meanwhile: the reader sees every message exactly once, positions
/// only grow, and each writer's order is kept.
#[tokio::test]
async fn postgres_cursor_under_concurrent_writers() {
    const WRITERS: usize = 6;
    const EACH: usize = 60;
    let pg = Cluster::start();
    let store = PgStore::connect(&pg.url, 16).await.unwrap();
    let db = store.pool().clone();
    setup_conversation(&db).await;

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let db = db.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..EACH {
                let mut tx = db.begin().await.unwrap();
                let _: i64 = sqlx::query_scalar(INSERT_MESSAGE)
                    .bind(format!("msg_{w}_{i}"))
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
                // Hold the transaction open a varying while, so that commits
                // land out of the order the transactions began in.
                tokio::time::sleep(Duration::from_micros(((w * 7 + i * 13) % 5) as u64 * 300))
                    .await;
                tx.commit().await.unwrap();
            }
        }));
    }
    let reader = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut seen: Vec<(i64, String)> = Vec::new();
            let mut after = 0i64;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while seen.len() < WRITERS * EACH && tokio::time::Instant::now() < deadline {
                let rows = sqlx::query_as::<_, (i64, String)>(
                    "SELECT pos, id FROM messages
                     WHERE pos > $1 AND pos < readable_pos() ORDER BY pos LIMIT 50",
                )
                .bind(after)
                .fetch_all(&db)
                .await
                .unwrap();
                if let Some(last) = rows.last() {
                    after = last.0;
                }
                seen.extend(rows);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    let seen = reader.await.unwrap();
    assert_eq!(seen.len(), WRITERS * EACH, "the reader missed messages");
    let ids: BTreeSet<&String> = seen.iter().map(|r| &r.1).collect();
    assert_eq!(ids.len(), WRITERS * EACH, "the reader saw a message twice");
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    for w in 0..WRITERS {
        let mine: Vec<usize> = seen
            .iter()
            .filter_map(|r| r.1.strip_prefix(&format!("msg_{w}_")))
            .map(|i| i.parse().unwrap())
            .collect();
        assert_eq!(mine, (0..EACH).collect::<Vec<_>>());
    }
    store.close().await;
}

/// One relay leads the background tasks; when its session dies (its process
/// killed: PostgreSQL ends the session), another relay takes over.
#[tokio::test]
async fn postgres_leadership_moves_when_the_leader_dies() {
    let pg = Cluster::start();
    let relay_a = PgStore::connect(&pg.url, 4).await.unwrap();
    let relay_b = PgStore::connect(&pg.url, 4).await.unwrap();
    let key = clawrelay::store::postgres::leader::keys::MAINTENANCE;

    let mut lead = Leadership::try_acquire(relay_a.pool(), key)
        .await
        .unwrap()
        .expect("the first relay leads");
    assert!(lead.still_held().await);
    assert!(Leadership::try_acquire(relay_b.pool(), key)
        .await
        .unwrap()
        .is_none());

    // The leader's session ends as it would when its relay is killed: the
    // session holding the lock, found from outside.
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND objsubid = 1
           AND (classid::bigint << 32) | objid::bigint = $1",
    )
    .bind(key)
    .fetch_all(relay_b.pool())
    .await
    .unwrap();
    assert_eq!(ended, vec![true], "one session held the lock");
    let mut next = super::helpers::eventually("relay B takes the lead", || async {
        Leadership::try_acquire(relay_b.pool(), key).await.unwrap()
    })
    .await;
    assert!(!lead.still_held().await, "the old leader knows it lost");
    assert!(next.still_held().await);

    // A leader that steps down hands over at once.
    next.release().await;
    let again = Leadership::try_acquire(relay_a.pool(), key).await.unwrap();
    assert!(again.is_some());
    relay_a.close().await;
    relay_b.close().await;
}

/// Waits until `rx` shows at least `pos`; answers how long that took.
async fn woken(rx: &mut tokio::sync::watch::Receiver<i64>, pos: i64, limit: Duration) -> Duration {
    let started = std::time::Instant::now();
    tokio::time::timeout(limit, rx.wait_for(|seen| *seen >= pos))
        .await
        .unwrap_or_else(|_| panic!("position {pos} not seen within {limit:?}"))
        .unwrap();
    started.elapsed()
}

/// Stores a message as the relay does: its transaction notifies the other
/// relays of it when it commits. Returns its position.
async fn store_and_notify(db: &PgPool) -> i64 {
    let mut tx = db.begin().await.unwrap();
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let pos: i64 = sqlx::query_scalar(
        "INSERT INTO messages (id, conversation_id, app_id, direction, sender, recipient, text, created_at)
         VALUES ($1, 'conv_1', 'app_public', 'inbound', 'u1', 'agent', 't', 0) RETURNING pos",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(cursor::CHANNEL)
        .bind(clawrelay::store::postgres::wakeups::notice(
            pos,
            &["app_public".to_owned()],
            "rly_test",
        ))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    pos
}

/// A message stored through relay A wakes relay B by NOTIFY, well before
/// B's periodic check; when B's listening connection dies, B subscribes
/// again and reads what it missed; and a position nobody notified (a lost
/// notification) is found by the periodic check.
#[tokio::test]
async fn postgres_wakeups_cross_relays() {
    let pg = Cluster::start();
    let a = PgStore::connect(&pg.url, 4).await.unwrap();
    let b = PgStore::connect(&pg.url, 4).await.unwrap();
    setup_conversation(a.pool()).await;
    let mut last = 0;
    for _ in 0..3 {
        last = store_and_notify(a.pool()).await;
    }

    // B checks only every 30 s: anything sooner came by NOTIFY.
    let mut rx =
        clawrelay::store::postgres::wakeups::listen(b.pool().clone(), Duration::from_secs(30))
            .await
            .unwrap()
            .positions;
    assert_eq!(
        *rx.borrow(),
        last,
        "starts from the database's highest position"
    );
    let mut took = Vec::new();
    for _ in 0..20 {
        let pos = store_and_notify(a.pool()).await;
        took.push(woken(&mut rx, pos, Duration::from_secs(10)).await);
    }
    took.sort();
    println!(
        "a message stored through relay A → relay B's wake-up over NOTIFY, 20 messages: p50 {:?}, max {:?}",
        took[10], took[19]
    );

    // B's listening connection dies; A stores a message meanwhile (that
    // notification is lost). B subscribes again and reads the highest
    // position.
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'",
    )
    .fetch_one(a.pool())
    .await
    .unwrap();
    assert_eq!(ended, 1, "one relay listens");
    let lost = insert_messages(a.pool(), 1).await[0];
    let lost_pos: i64 = sqlx::query_scalar("SELECT pos FROM messages WHERE seq = $1")
        .bind(lost)
        .fetch_one(a.pool())
        .await
        .unwrap();
    let after_loss = woken(&mut rx, lost_pos, Duration::from_secs(10)).await;
    println!(
        "after its listening connection died, relay B saw the next message after {after_loss:?}"
    );

    // A message stored without a notification is found by the periodic
    // check, and only by it (once B's first seconds, when it looks often,
    // are over).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut quick =
        clawrelay::store::postgres::wakeups::listen(b.pool().clone(), Duration::from_millis(300))
            .await
            .unwrap()
            .positions;
    let silent = insert_messages(a.pool(), 1).await[0];
    let silent_pos: i64 = sqlx::query_scalar("SELECT pos FROM messages WHERE seq = $1")
        .bind(silent)
        .fetch_one(a.pool())
        .await
        .unwrap();
    woken(&mut quick, silent_pos, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        *rx.borrow(),
        lost_pos,
        "no notification, no wake-up before the 30 s check"
    );
    drop((rx, quick));
    a.close().await;
    b.close().await;
}

/// An agent seen by any relay counts for all of them: three relays, agent x
/// seen by relay A and B, agent y by B. Relay C reads the newest time any
/// relay saw each; a late refresh never moves a row back; when B dies (it
/// stops refreshing, nothing deletes its rows) its agents age out; a revoked
/// agent and an agent deleted meanwhile never count.
#[tokio::test]
async fn postgres_presence_spans_relays() {
    let pg = Cluster::start();
    let a = PgStore::connect(&pg.url, 2).await.unwrap();
    let b = PgStore::connect(&pg.url, 2).await.unwrap();
    let c = PgStore::connect(&pg.url, 2).await.unwrap();
    for (id, revoked) in [("cli_x", None), ("cli_y", None), ("cli_z", Some(5))] {
        sqlx::query(
            "INSERT INTO clients (id, name, token_hash, created_at, revoked_at)
             VALUES ($1, $1, 'h', 0, $2)",
        )
        .bind(id)
        .bind(revoked)
        .execute(a.pool())
        .await
        .unwrap();
    }
    let id = |s: &str| ClientId::from_db(s.into());
    let (x, y, z) = (id("cli_x"), id("cli_y"), id("cli_z"));
    let t = 1_000_000;
    presence::seen(
        a.pool(),
        "relay-a",
        &[(x.clone(), t), (z.clone(), t), (id("cli_deleted"), t)],
    )
    .await
    .unwrap();
    presence::seen(b.pool(), "relay-b", &[(x.clone(), t - 100), (y.clone(), t)])
        .await
        .unwrap();
    // An older refresh (a slow relay) never moves a row back.
    presence::seen(a.pool(), "relay-a", &[(x.clone(), t - 500)])
        .await
        .unwrap();

    let stale = 30_000;
    let now = t + 1_000;
    assert_eq!(
        presence::recent(c.pool(), now - stale).await.unwrap(),
        [(x.clone(), t), (y.clone(), t)],
        "the newest time per agent; not the revoked z, not an unknown id"
    );
    presence::seen(b.pool(), "relay-b", &[(y.clone(), t + 200)])
        .await
        .unwrap();
    assert_eq!(
        presence::recent(c.pool(), now - stale).await.unwrap(),
        [(x.clone(), t), (y.clone(), t + 200)]
    );

    // B dies: nothing refreshes or deletes its rows. Past the stale window
    // nobody counts; A, still refreshing its revoked z, changes nothing.
    b.close().await;
    let later = t + stale + 1_000;
    presence::seen(a.pool(), "relay-a", &[(z.clone(), later)])
        .await
        .unwrap();
    assert!(presence::recent(c.pool(), later - stale)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        presence::prune(c.pool(), later - stale).await.unwrap(),
        3,
        "A's row of x, B's two rows"
    );
    assert_eq!(
        presence::relay_gone(a.pool(), "relay-a").await.unwrap(),
        1,
        "A's row of z"
    );
    a.close().await;
    c.close().await;
}
