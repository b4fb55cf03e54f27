//! The window of the messages committed last (`store::recent`, SQLite),
//! which app streams and outbox polls that keep up read instead of the
//! database: wherever it answers, it answers what the database holds.

use crate::helpers::*;
use crate::ws_client::Ws;
use clawrelay::ids::{AppId, ClientId, ConversationId, UserId};
use clawrelay::model::Direction;
use clawrelay::store::messages::{self, Inserted, NewMessage};
use clawrelay::store::{
    apps, clients, conversations, retention, Store, StoreError, StoreResult, Synchronous, Tx,
};
use serde_json::{json, Value};

struct Setup {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    store: Store,
    app: AppId,
    agent: ClientId,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    let store = Store::open(&path, Synchronous::Normal).await.unwrap();
    let (app, agent) = (AppId::generate(), ClientId::generate());
    let (a, g) = (app.clone(), agent.clone());
    store
        .write(move |tx| {
            clients::insert(tx, &g, "agent", "h", 1)?;
            apps::insert(tx, &a, "site", "h", 1)
        })
        .await
        .unwrap();
    Setup {
        _dir: dir,
        path,
        store,
        app,
        agent,
    }
}

impl Setup {
    async fn conversation(&self, user: &str) -> ConversationId {
        let (a, g, u) = (
            self.app.clone(),
            self.agent.clone(),
            UserId::parse(user).unwrap(),
        );
        self.store
            .write(move |tx| conversations::create(tx, &a, &u, Some(&g), 1))
            .await
            .unwrap()
    }

    /// Stores `count` messages in `c` through `store`, side by side (so
    /// that they share transactions); `fate` says what else each operation
    /// does after storing its message.
    async fn messages(
        &self,
        store: &Store,
        c: &ConversationId,
        count: usize,
        fate: fn(usize, &Tx, &Inserted) -> StoreResult<()>,
    ) {
        let mut ops = Vec::new();
        for i in 0..count {
            let (store, c, a, g) = (
                store.clone(),
                c.clone(),
                self.app.clone(),
                self.agent.clone(),
            );
            ops.push(tokio::spawn(async move {
                store
                    .write(move |tx| {
                        let stored = store_one(tx, &c, &a, &g, &format!("m{i}"))?;
                        fate(i, tx, &stored)
                    })
                    .await
            }));
        }
        for op in ops {
            let _ = op.await.unwrap();
        }
    }

    /// Checks the window against the database at every cursor; returns at
    /// how many cursors the window answered.
    async fn agrees(&self) -> usize {
        let recent = self.store.recent().expect("a SQLite store");
        let top = messages::last_seq(self.store.reader()).await.unwrap();
        let mut answered = 0;
        for after in 0..=top + 1 {
            for (c, outbound) in [(None, false), (None, true)] {
                let Some(window) = recent.after(&self.app, c, outbound, after, 10_000) else {
                    continue;
                };
                answered += 1;
                let stored = if outbound {
                    messages::outbox(self.store.reader(), &self.app, after, 10_000).await
                } else {
                    messages::stream(self.store.reader(), &self.app, c, after, 10_000).await
                }
                .unwrap();
                let json = |page: &[(i64, std::sync::Arc<clawrelay::model::SharedMessage>)]| {
                    page.iter()
                        .map(|(seq, m)| (*seq, serde_json::to_value(m).unwrap()))
                        .collect::<Vec<_>>()
                };
                assert_eq!(
                    json(&window.messages),
                    json(&stored.messages),
                    "after {after}, replies only: {outbound}"
                );
            }
        }
        answered
    }
}

fn store_one(
    tx: &Tx,
    c: &ConversationId,
    a: &AppId,
    g: &ClientId,
    text: &str,
) -> StoreResult<Inserted> {
    let outbound = text.len().is_multiple_of(2);
    messages::insert(
        tx,
        NewMessage {
            conversation_id: c,
            app_id: a,
            client_id: Some(g),
            direction: if outbound {
                Direction::Outbound
            } else {
                Direction::Inbound
            },
            from: if outbound { "agent" } else { "u" },
            to: if outbound { "u" } else { "agent" },
            text,
            reply_id: outbound.then_some("r1"),
            in_reply_to: None,
            attachments: &[],
            stopped: false,
            now: 1,
        },
    )
}

/// Operations rolled back, messages deleted in the transaction that stored
/// them, messages stored by another process, a retention purge: after each,
/// the window answers only what the database holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_of_committed_messages_answers_what_the_database_holds() {
    let s = setup().await;
    let first = s.conversation("u").await;

    // A third of the operations are rolled back: their messages never were.
    s.messages(&s.store, &first, 60, |i, _, _| match i % 3 {
        1 => Err(StoreError::Other("rolled back".to_owned())),
        _ => Ok(()),
    })
    .await;
    let answered = s.agrees().await;
    assert!(answered > 40, "the window answered at {answered} cursors");

    // Some operations delete the message they stored.
    s.messages(&s.store, &first, 30, |i, tx, stored| match (i % 3, tx) {
        (2, Tx::Sqlite(conn)) => {
            conn.execute("DELETE FROM messages WHERE seq = ?1", [stored.seq])?;
            Ok(())
        }
        _ => Ok(()),
    })
    .await;
    s.agrees().await;

    // Another process (an admin command) stores messages in between.
    s.messages(&s.store, &first, 5, |_, _, _| Ok(())).await;
    let before_outside = messages::last_seq(s.store.reader()).await.unwrap();
    let outside = Store::open(&s.path, Synchronous::Normal).await.unwrap();
    s.messages(&outside, &first, 3, |_, _, _| Ok(())).await;
    outside.close().await;
    s.messages(&s.store, &first, 3, |_, _, _| Ok(())).await;
    s.agrees().await;
    let recent = s.store.recent().unwrap();
    assert!(
        recent
            .after(&s.app, None, false, before_outside, 100)
            .is_none(),
        "the window spans messages it did not see"
    );

    // The retention purge deletes an expired conversation's messages.
    let second = s.conversation("v").await;
    s.messages(&s.store, &second, 10, |_, _, _| Ok(())).await;
    let c = first.clone();
    s.store
        .write(move |tx| {
            let Tx::Sqlite(conn) = tx else { unreachable!() };
            conn.execute(
                "UPDATE conversations SET expired_at = 1 WHERE id = ?1",
                [c.as_str()],
            )?;
            retention::purge_conversations(tx, 2, 100)
        })
        .await
        .unwrap();
    s.agrees().await;

    // And the window fills again with what follows.
    s.messages(&s.store, &second, 20, |_, _, _| Ok(())).await;
    let top = messages::last_seq(s.store.reader()).await.unwrap();
    assert!(recent.after(&s.app, None, false, top - 20, 100).is_some());
    s.agrees().await;
    s.store.close().await;
}

/// What an app's stream and its outbox carry, read from the window, is
/// what the conversation's history (read from the database) holds,
/// attachments included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_and_polled_messages_are_the_stored_ones() {
    let app = spawn_app().await;
    let (_, agent) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let (mut stream, _) = Ws::app(&app, &web, None).await;
    let file = app
        .upload(
            &web,
            "/attachments?filename=notes.txt",
            b"some notes".to_vec(),
            &[("content-type", "text/plain")],
        )
        .await
        .ok();
    let asked = app
        .post(
            "/inbound",
            &web,
            json!({"from": "alice", "text": "read this", "attachments": [file["id"]]}),
        )
        .await
        .ok();
    let m = app.poll(&agent, "").await.remove(0);
    app.post(
        "/send",
        &agent,
        json!({"to": "alice", "text": "**read**", "conversationId": m["conversationId"]}),
    )
    .await
    .ok();

    let history = app
        .get(
            &format!(
                "/conversations/{}",
                asked["conversationId"].as_str().unwrap()
            ),
            ADMIN,
        )
        .await
        .ok();
    let stored: Vec<Value> = history["messages"].as_array().unwrap().clone();
    assert_eq!(stored.len(), 2, "{history}");
    assert_eq!(stored[0]["attachments"][0]["id"], file["id"]);
    let mut streamed = Vec::new();
    while streamed.len() < stored.len() {
        let event = stream.event().await;
        if event["event"] == "message" {
            streamed.push(event["payload"]["message"].clone());
        }
    }
    assert_eq!(streamed, stored);
    let outbox = app.get("/outbox?after=0", &web).await.ok();
    assert_eq!(outbox["messages"][0], stored[1], "{outbox}");
}
