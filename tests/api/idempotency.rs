//! `Idempotency-Key`: a retry from the same principal returns the first
//! result and stores nothing new, also across a restart.

use crate::helpers::*;
use reqwest::Method;
use serde_json::json;

async fn inbound_with_key(app: &TestApp, token: &str, key: &str, from: &str, text: &str) -> Reply {
    app.request_with(
        Method::POST,
        "/inbound",
        Some(token),
        Some(json!({"from": from, "text": text})),
        &[("Idempotency-Key", key)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_retry_returns_the_first_message_and_stores_nothing_new() {
    let mut app = spawn_app().await;
    let (_, agent) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&agent, "").await;

    let first = inbound_with_key(&app, &web, "k-1", "alice", "hello")
        .await
        .ok();
    let before = app.row_counts().await;
    let retry = inbound_with_key(&app, &web, "k-1", "alice", "hello")
        .await
        .ok();
    assert_eq!(retry, first);
    assert_eq!(app.row_counts().await, before);

    app.restart().await;
    let after_restart = inbound_with_key(&app, &web, "k-1", "alice", "hello")
        .await
        .ok();
    assert_eq!(after_restart, first);
    assert_eq!(app.row_counts().await, before);

    // Delivered once.
    assert_eq!(app.poll(&agent, "?max=10").await.len(), 1);
    assert!(app.poll(&agent, "?max=10").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_for_a_different_request_is_a_conflict() {
    let app = spawn_app().await;
    let (_, web) = app.create_app("web").await;
    inbound_with_key(&app, &web, "k-2", "alice", "hello")
        .await
        .ok();
    let before = app.row_counts().await;
    let r = inbound_with_key(&app, &web, "k-2", "alice", "something else").await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (409, "idempotency_key_reused")
    );
    assert_eq!(app.row_counts().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_scoped_per_principal() {
    let app = spawn_app().await;
    let (_, web1) = app.create_app("one").await;
    let (_, web2) = app.create_app("two").await;
    let a = inbound_with_key(&app, &web1, "same-key", "alice", "hello")
        .await
        .ok();
    let b = inbound_with_key(&app, &web2, "same-key", "alice", "hello")
        .await
        .ok();
    assert_ne!(a["id"], b["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_retry_returns_the_first_reply() {
    let app = spawn_app().await;
    let (_, agent) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&agent, "").await;
    app.inbound(&web, "alice", "q").await;
    let m = app.poll(&agent, "").await.remove(0);
    let body = json!({"to": "alice", "text": "a", "conversationId": m["conversationId"]});
    let send = |body| {
        app.request_with(
            Method::POST,
            "/send",
            Some(&agent),
            Some(body),
            &[("Idempotency-Key", "s-1")],
        )
    };
    let first = send(body.clone()).await.ok();
    let before = app.row_counts().await;
    let retry = send(body).await.ok();
    assert_eq!(retry, first);
    assert_eq!(app.row_counts().await, before);
    let out = app.get("/outbox", &web).await.ok();
    assert_eq!(out["messages"].as_array().unwrap().len(), 1);
}
