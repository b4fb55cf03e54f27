//! Assignment (seed §4.3–4.4): least-loaded, sticky, moved away from a
//! disconnected or revoked client, waiting when no client is connected.

use crate::helpers::*;
use serde_json::Value;
use std::collections::HashMap;

async fn pending_by_client(app: &TestApp) -> HashMap<String, i64> {
    let list = app.get("/clients", ADMIN).await.ok();
    list["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["clientId"].as_str().unwrap().to_owned(),
                c["pending"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_conversations_go_to_the_least_loaded_connected_client() {
    let app = spawn_app().await;
    let (a, a_token) = app.create_client("a").await;
    let (b, b_token) = app.create_client("b").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&a_token, "").await;
    app.poll(&b_token, "").await;

    for i in 0..10 {
        app.inbound(&web, &format!("user{i}"), "hello").await;
    }
    let pending = pending_by_client(&app).await;
    assert_eq!(pending[&a], 5);
    assert_eq!(pending[&b], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_sticks_to_its_client() {
    let app = spawn_app().await;
    let (_, a_token) = app.create_client("a").await;
    let (_, b_token) = app.create_client("b").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&a_token, "").await;
    app.poll(&b_token, "").await;

    let first = app.inbound(&web, "alice", "1").await;
    let owner = first["clientId"].clone();
    for i in 0..6 {
        // Other users load both clients; alice stays where she is.
        app.inbound(&web, &format!("other{i}"), "x").await;
        let next = app.inbound(&web, "alice", &format!("alice {i}")).await;
        assert_eq!(next["clientId"], owner);
        assert_eq!(next["conversationId"], first["conversationId"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_client_connected_messages_wait_and_the_first_poller_gets_them() {
    let app = spawn_app().await;
    let (_, web) = app.create_app("web").await;
    let (_, agent) = app.create_client("late").await;
    let m = app.inbound(&web, "alice", "anyone there?").await;
    assert_eq!(m["clientId"], Value::Null);

    let got = app.poll(&agent, "").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["id"], m["id"]);
    // From now on the conversation is this client's.
    let next = app.inbound(&web, "alice", "thanks").await;
    assert!(next["clientId"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_clients_conversations_move_to_a_live_client() {
    let app = spawn_with(|c| {
        c.clients.stale_after_secs = 1;
        c.clients.disconnected_after_secs = 2;
    })
    .await;
    let (a, a_token) = app.create_client("a").await;
    let (b, b_token) = app.create_client("b").await;
    let (_, web) = app.create_app("web").await;

    // Only a is connected: alice's conversation is a's; a claims and goes silent.
    app.poll(&a_token, "").await;
    let m = app.inbound(&web, "alice", "help").await;
    assert_eq!(m["clientId"], a.as_str());
    assert_eq!(app.poll(&a_token, "").await.len(), 1);

    // b keeps long-polling; once a counts as disconnected, b gets alice's message.
    let moved = eventually("alice's message moves to b", || async {
        let got = app.poll(&b_token, "?wait=1").await;
        got.into_iter().next()
    })
    .await;
    assert_eq!(moved["id"], m["id"]);
    assert_eq!(moved["attempt"], 2);

    // The conversation now belongs to b.
    let next = app.inbound(&web, "alice", "still there?").await;
    assert_eq!(next["clientId"], b.as_str());
    assert_eq!(next["conversationId"], m["conversationId"]);
    app.send(&b_token, &moved, "b here").await;
    // a, back from the dead, has nothing of alice's any more.
    assert!(app.poll(&a_token, "").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_client_moves_its_work_and_kills_its_token() {
    let app = spawn_app().await;
    let (a, a_token) = app.create_client("a").await;
    let (b, b_token) = app.create_client("b").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&a_token, "").await;
    let m = app.inbound(&web, "alice", "hi").await;
    assert_eq!(m["clientId"], a.as_str());
    app.poll(&b_token, "").await;

    let r = app
        .request(
            reqwest::Method::DELETE,
            &format!("/clients/{a}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(app.get("/poll", &a_token).await.status, 401);

    let got = app.poll(&b_token, "").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["id"], m["id"]);
    assert_eq!(got[0]["clientId"], b.as_str());
    let clients = app.get("/clients", ADMIN).await.ok();
    let revoked = clients["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["clientId"] == a.as_str())
        .unwrap()
        .clone();
    assert_eq!(revoked["state"], "revoked");
    assert_eq!(revoked["pending"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_replaces_the_old_one() {
    let app = spawn_app().await;
    let (a, old) = app.create_client("a").await;
    assert_eq!(app.get("/poll", &old).await.status, 200);
    let rotated = app
        .post(&format!("/clients/{a}/token"), ADMIN, serde_json::json!({}))
        .await
        .ok();
    let new = rotated["token"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(app.get("/poll", &old).await.status, 401);
    assert_eq!(app.get("/poll", new).await.status, 200);
}
