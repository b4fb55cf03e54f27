//! Search of history (`GET /conversations?q=`): words and Chinese words
//! (two characters and more, no spaces around them) are found in any
//! message, on both backends alike; filters, scopes and paging as for the
//! list; the retention purge takes a message out of the index; messages
//! stored before search existed are indexed after a start.

use super::helpers::*;
use serde_json::Value;

/// The ids of the conversations a search as `token` finds, in order.
async fn found(app: &TestApp, token: &str, query: &str) -> Vec<String> {
    let body = app
        .get(&format!("/conversations?{query}"), token)
        .await
        .ok();
    body["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

fn q(words: &str) -> String {
    format!("q={}", urlencoding(words))
}

fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_words_and_chinese_words_in_any_message() {
    let app = spawn_app().await;
    let (_, agent) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let (_, other) = app.create_app("other").await;
    app.poll(&agent, "").await;
    let conv = |m: &Value| m["conversationId"].as_str().unwrap().to_owned();
    let alice = conv(
        &app.inbound(&web, "alice", "I want a REFUND for order 42, please")
            .await,
    );
    let bob = conv(&app.inbound(&web, "bob", "Where is my parcel?").await);
    let carol = conv(&app.inbound(&web, "carol", "您好，我想申请退款，谢谢").await);
    let dave = conv(&app.inbound(&web, "dave", "退货和款项的问题").await);
    let erin = conv(&app.inbound(&web, "erin", "Refunds are slow").await);
    let _zed = conv(&app.inbound(&other, "zed", "refund me too").await);
    // The agent answers bob with the word: his conversation's match is now
    // the newest.
    let mut claimed = app.poll(&agent, "?max=10").await;
    let to_bob = claimed
        .iter()
        .position(|m| m["from"] == "bob")
        .expect("bob's message");
    let m = claimed.remove(to_bob);
    app.send(&agent, &m, "A refund is on its way.").await;

    // Words, any case, in inbound and outbound messages; newest match first.
    assert_eq!(
        found(&app, &web, &q("refund")).await,
        [bob.as_str(), alice.as_str()]
    );
    assert_eq!(found(&app, &web, &q("Refund 42")).await, [alice.as_str()]);
    assert_eq!(
        found(&app, &web, &q("refund parcel")).await,
        Vec::<String>::new()
    );
    assert_eq!(found(&app, &web, &q("refunds")).await, [erin.as_str()]);
    // Chinese: a two-character word inside a sentence; never its characters apart.
    assert_eq!(found(&app, &web, &q("退款")).await, [carol.as_str()]);
    assert_eq!(found(&app, &web, &q("申请退款")).await, [carol.as_str()]);
    assert_eq!(found(&app, &web, &q("款项")).await, [dave.as_str()]);
    assert_eq!(found(&app, &web, &q("退款 谢谢")).await, [carol.as_str()]);

    // The match: the latest matching message, with its words in the snippet.
    let body = app
        .get(&format!("/conversations?{}", q("退款")), &web)
        .await
        .ok();
    let hit = &body["conversations"][0];
    assert_eq!(hit["userId"], "carol");
    assert!(
        hit["match"]["snippet"].as_str().unwrap().contains("退款"),
        "{hit}"
    );
    assert!(hit["match"]["messageId"]
        .as_str()
        .unwrap()
        .starts_with("msg_"));
    let body = app
        .get(&format!("/conversations?{}", q("refund")), &web)
        .await
        .ok();
    assert_eq!(
        body["conversations"][0]["match"]["snippet"],
        "A refund is on its way."
    );
    // Without q, no match field.
    let plain = app.get("/conversations", &web).await.ok();
    assert!(plain["conversations"][0].get("match").is_none());

    // Scopes and filters as for the list.
    assert_eq!(
        found(&app, &other, &q("refund")).await.len(),
        1,
        "only its own app's"
    );
    assert_eq!(found(&app, ADMIN, &q("refund")).await.len(), 3);
    assert_eq!(
        found(&app, &web, &format!("{}&userId=alice", q("refund"))).await,
        [alice.as_str()]
    );
    let (alice_session, _) = app.open_session(&web, "alice").await;
    assert_eq!(
        found(&app, &alice_session, &q("refund")).await,
        [alice.as_str()]
    );
    assert_eq!(
        found(&app, &web, &format!("{}&state=expired", q("refund")))
            .await
            .len(),
        0
    );

    // Paging: one at a time, by the latest match.
    let first = app
        .get(&format!("/conversations?{}&limit=1", q("refund")), &web)
        .await
        .ok();
    assert_eq!(first["conversations"][0]["id"], bob.as_str());
    let cursor = first["nextCursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = app
        .get(
            &format!("/conversations?{}&limit=1&cursor={cursor}", q("refund")),
            &web,
        )
        .await
        .ok();
    assert_eq!(second["conversations"][0]["id"], alice.as_str());

    // Nothing to search for.
    let r = app
        .get(&format!("/conversations?{}", q(" ,.; ")), &web)
        .await;
    assert_eq!((r.status.as_u16(), r.error_code()), (422, "invalid_query"));

    // A run of letters too long for an index (PostgreSQL refuses lexemes
    // over 2 KiB) is stored like any message, its other words found.
    let long = app
        .post(
            "/inbound",
            &web,
            serde_json::json!({ "from": "frank", "text": format!("{} warranty", "z".repeat(3000)) }),
        )
        .await;
    assert_eq!(long.status, 200, "{:?}", long.body);
    assert_eq!(found(&app, &web, &q("warranty")).await.len(), 1);

    // The CLI finds the same.
    let out: Value =
        serde_json::from_str(&app.cli(&["conversation", "list", "--q", "退款"])).unwrap();
    assert_eq!(out["conversations"][0]["id"], carol.as_str(), "{out}");
    assert!(out["conversations"][0]["match"]["snippet"]
        .as_str()
        .unwrap()
        .contains("退款"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_messages_leave_the_index() {
    let app = spawn_with(|c| {
        c.conversations.ttl_secs = 1;
        c.conversations.retention_secs = 1;
        c.conversations.cleanup_interval_secs = 1;
    })
    .await;
    let (_, web) = app.create_app("web").await;
    let old = app.inbound(&web, "alice", "an old refund").await;
    assert_eq!(found(&app, &web, &q("refund")).await.len(), 1);
    let old_conv = old["conversationId"].as_str().unwrap().to_owned();
    eventually("the old conversation to be purged", || async {
        let r = app.get(&format!("/conversations/{old_conv}"), ADMIN).await;
        (r.status == 404).then_some(())
    })
    .await;
    app.inbound(&web, "bob", "a fresh refund").await;
    let hits = found(&app, &web, &q("refund")).await;
    assert_eq!(hits.len(), 1, "{hits:?}");
    if app.on_sqlite() {
        // The purged message's terms went with it.
        assert_eq!(app.scalar("SELECT COUNT(*) FROM message_search").await, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_stored_before_search_existed_are_indexed_after_a_start() {
    let mut app = spawn_app().await;
    let (_, web) = app.create_app("web").await;
    for i in 0..1200 {
        app.inbound(
            &web,
            &format!("u{}", i % 7),
            &format!("message {i} about 退款"),
        )
        .await;
    }
    // As a database migrated to search finds them: none indexed, all below
    // the mark.
    app.stop().await;
    let mark = "INSERT INTO settings (key, value)
                SELECT 'search_backfill_below', CAST(max(seq) + 1 AS TEXT) FROM messages";
    match app.config.storage.url.clone() {
        Some(url) => {
            use sqlx::Connection;
            let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query("UPDATE messages SET search = NULL")
                .execute(&mut db)
                .await
                .unwrap();
            sqlx::query(mark).execute(&mut db).await.unwrap();
        }
        None => {
            use sqlx::Connection;
            let url = format!("sqlite://{}", app.config.storage.path.display());
            let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("DELETE FROM message_search")
                .execute(&mut db)
                .await
                .unwrap();
            sqlx::query(mark).execute(&mut db).await.unwrap();
        }
    }
    app.restart().await;
    let all = eventually("every earlier message to be indexed", || async {
        let body = app
            .get(&format!("/conversations?{}&limit=100", q("退款")), &web)
            .await
            .ok();
        let n = body["conversations"].as_array().unwrap().len();
        let left = app
            .scalar("SELECT COUNT(*) FROM settings WHERE key = 'search_backfill_below'")
            .await;
        (n == 7 && left == 0).then_some(n)
    })
    .await;
    assert_eq!(all, 7);
    let indexed = if app.on_sqlite() {
        "SELECT COUNT(*) FROM message_search"
    } else {
        "SELECT COUNT(*) FROM messages WHERE search IS NOT NULL"
    };
    assert_eq!(app.scalar(indexed).await, 1200);
}

/// An app, an agent and a conversation of user "u" between them, written
/// directly to `store`.
async fn agent_and_conversation(
    store: &clawrelay::store::Store,
) -> (
    clawrelay::ids::AppId,
    clawrelay::ids::ClientId,
    clawrelay::ids::ConversationId,
) {
    use clawrelay::ids::{AppId, ClientId, UserId};
    use clawrelay::store::{apps, clients, conversations};
    let (app, agent) = (AppId::generate(), ClientId::generate());
    let (a, g) = (app.clone(), agent.clone());
    let conversation = store
        .write(move |tx| {
            clients::insert(tx, &g, "agent", "h", 1)?;
            apps::insert(tx, &a, "site", "h", 1)?;
            conversations::create(tx, &a, &UserId::parse("u").unwrap(), Some(&g), 1)
        })
        .await
        .unwrap();
    (app, agent, conversation)
}

/// On SQLite a message's terms are written after the transaction that
/// stores it, in batches (FTS5 writes a segment for every transaction that
/// indexes, and merges them again): of operations committed together, those
/// that succeed are found, one rolled back leaves no terms, and a message
/// stored and deleted in one transaction leaves none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terms_are_written_for_the_operations_that_commit() {
    use clawrelay::store::messages;
    use clawrelay::store::{Store, StoreError, Synchronous, Tx};
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    let store = Store::open(&path, Synchronous::Normal).await.unwrap();
    let (app, agent, conversation) = agent_and_conversation(&store).await;
    let mut ops = Vec::new();
    for i in 0..90 {
        let (store, c, a, g) = (
            store.clone(),
            conversation.clone(),
            app.clone(),
            agent.clone(),
        );
        ops.push(tokio::spawn(async move {
            store
                .write(move |tx| {
                    let text = format!("word{i} shared");
                    let stored = messages::insert(tx, agent_message(&c, &a, &g, "u", &text))?;
                    match (i % 3, tx) {
                        (1, _) => Err(StoreError::Other("rolled back".to_owned())),
                        (2, Tx::Sqlite(conn)) => {
                            conn.execute("DELETE FROM messages WHERE seq = ?1", [stored.seq])
                                .map_err(StoreError::from)?;
                            Ok(())
                        }
                        _ => Ok(()),
                    }
                })
                .await
                .is_ok()
        }));
    }
    for (i, op) in ops.into_iter().enumerate() {
        assert_eq!(op.await.unwrap(), i % 3 != 1, "operation {i}");
    }
    let stats = store.writer_stats().unwrap();
    println!(
        "{} operations in {} commits",
        stats.operations.load(std::sync::atomic::Ordering::Relaxed),
        stats.commits.load(std::sync::atomic::Ordering::Relaxed)
    );
    store.close().await;
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let found = |word: String| {
        sqlx::query_scalar::<_, i64>(
            "SELECT m.seq FROM message_search s JOIN messages m ON m.seq = s.rowid
             WHERE message_search MATCH ?1",
        )
        .bind(word)
    };
    let shared = found("shared".to_owned()).fetch_all(&mut db).await.unwrap();
    assert_eq!(shared.len(), 30, "the 30 messages kept");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM message_search")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(rows, 30, "no terms of a message rolled back or deleted");
    for i in 0..90 {
        let hits = found(format!("word{i}")).fetch_all(&mut db).await.unwrap();
        assert_eq!(hits.len(), usize::from(i % 3 == 0), "word{i}");
    }
}

/// On SQLite messages wait to be indexed until 512 do (or a search, the
/// maintenance tick or the store's close indexes them). A crash while they
/// wait loses none from the index: the next catch-up finds them above the
/// recorded mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_waiting_for_the_index_survive_a_crash() {
    use clawrelay::ids::ConversationId;
    use clawrelay::store::messages;
    use clawrelay::store::{Reader, Store, Synchronous};
    let pool = |store: &Store| match store.reader() {
        Reader::Sqlite(pool) => pool.clone(),
        Reader::Postgres(_) => unreachable!("a SQLite store"),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    let store = Store::open(&path, Synchronous::Full).await.unwrap();
    let (app, agent, conversation) = agent_and_conversation(&store).await;
    let store_messages = |store: Store, c: ConversationId, range: std::ops::Range<usize>| {
        let (app, agent) = (app.clone(), agent.clone());
        async move {
            let mut ops = Vec::new();
            for i in range {
                let (store, c, a, g) = (store.clone(), c.clone(), app.clone(), agent.clone());
                ops.push(tokio::spawn(async move {
                    store
                        .write(move |tx| {
                            let text = format!("word{i} kept");
                            messages::insert(tx, agent_message(&c, &a, &g, "u", &text))
                        })
                        .await
                        .unwrap();
                }));
            }
            for op in ops {
                op.await.unwrap();
            }
        }
    };
    let indexed = |store: Store| async move {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM message_search")
            .fetch_one(&pool(&store))
            .await
            .unwrap()
    };

    store_messages(store.clone(), conversation.clone(), 0..100).await;
    assert_eq!(indexed(store.clone()).await, 0, "100 messages wait");
    // A crash: the store goes without its close (which indexes what waits).
    drop(store);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let store = Store::open(&path, Synchronous::Full).await.unwrap();
    assert_eq!(indexed(store.clone()).await, 0, "they still wait");
    store.catch_up_search().await.unwrap();
    assert_eq!(indexed(store.clone()).await, 100, "the catch-up found them");

    store_messages(store.clone(), conversation.clone(), 100..700).await;
    let by_writer = indexed(store.clone()).await;
    assert!(
        by_writer >= 100 + 512,
        "the writer indexed once 512 waited ({by_writer})"
    );
    store.close().await;
    let store = Store::open(&path, Synchronous::Full).await.unwrap();
    assert_eq!(
        indexed(store.clone()).await,
        700,
        "the close indexed the rest"
    );
    let kept: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM message_search WHERE message_search MATCH 'kept'")
            .fetch_one(&pool(&store))
            .await
            .unwrap();
    assert_eq!(kept, 700);
    store.close().await;
}
