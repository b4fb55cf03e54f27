//! Bad input gets a 4xx that says what is wrong, and writes nothing.

use crate::helpers::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_input_gets_its_4xx_and_leaves_the_db_unchanged() {
    let app = spawn_with(|c| {
        c.limits.max_text_bytes = 64;
        c.limits.max_body_bytes = 4096;
    })
    .await;
    let (_, agent) = app.create_client("agent").await;
    let (_, other_agent) = app.create_client("other").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&agent, "").await;
    app.inbound(&web, "alice", "hi").await;
    let m = app.poll(&agent, "").await.remove(0);
    let conv = m["conversationId"].as_str().unwrap().to_owned();
    app.poll(&other_agent, "").await;

    let long_text = "x".repeat(65);
    let huge_body = format!(r#"{{"from":"alice","text":"{}"}}"#, "y".repeat(5000));
    let cases: Vec<(&str, Method, String, &str, String, u16, &str)> = vec![
        ("broken json", Method::POST, "/inbound".into(), &web, "{".into(), 400, "invalid_json"),
        ("empty body", Method::POST, "/inbound".into(), &web, "".into(), 400, "invalid_json"),
        ("not an object", Method::POST, "/inbound".into(), &web, "[1,2]".into(), 422, "invalid_field"),
        ("missing text and attachments", Method::POST, "/inbound".into(), &web, json!({"from": "alice"}).to_string(), 422, "empty_text"),
        ("text not a string", Method::POST, "/inbound".into(), &web, json!({"from": "alice", "text": 5}).to_string(), 422, "invalid_field"),
        ("empty from", Method::POST, "/inbound".into(), &web, json!({"from": "", "text": "hi"}).to_string(), 422, "invalid_from"),
        ("control chars in from", Method::POST, "/inbound".into(), &web, json!({"from": "a\u{0}b", "text": "hi"}).to_string(), 422, "invalid_from"),
        ("empty text", Method::POST, "/inbound".into(), &web, json!({"from": "alice", "text": ""}).to_string(), 422, "empty_text"),
        ("blank text", Method::POST, "/inbound".into(), &web, json!({"from": "alice", "text": "  \n "}).to_string(), 422, "empty_text"),
        ("text over the limit", Method::POST, "/inbound".into(), &web, json!({"from": "alice", "text": long_text}).to_string(), 413, "text_too_large"),
        ("body over the limit", Method::POST, "/inbound".into(), &web, huge_body, 413, "body_too_large"),
        ("send to unknown conversation", Method::POST, "/send".into(), &agent, json!({"to": "alice", "text": "x", "conversationId": "conv_0123456789abcdef0123456789abcdef"}).to_string(), 404, "conversation_not_found"),
        ("send with malformed conversation id", Method::POST, "/send".into(), &agent, json!({"to": "alice", "text": "x", "conversationId": "nope"}).to_string(), 404, "conversation_not_found"),
        ("send without conversationId", Method::POST, "/send".into(), &agent, json!({"to": "alice", "text": "x"}).to_string(), 422, "invalid_field"),
        ("send to the wrong user", Method::POST, "/send".into(), &agent, json!({"to": "mallory", "text": "x", "conversationId": conv}).to_string(), 422, "wrong_recipient"),
        ("send into another client's conversation", Method::POST, "/send".into(), &other_agent, json!({"to": "alice", "text": "x", "conversationId": conv}).to_string(), 404, "conversation_not_found"),
        ("send empty text", Method::POST, "/send".into(), &agent, json!({"to": "alice", "text": "", "conversationId": conv}).to_string(), 422, "empty_text"),
        ("ack nothing", Method::POST, "/ack".into(), &agent, json!({"ids": []}).to_string(), 422, "invalid_ids"),
        ("ack a malformed id", Method::POST, "/ack".into(), &agent, json!({"ids": ["x"]}).to_string(), 422, "invalid_ids"),
        ("ack ids not a list", Method::POST, "/ack".into(), &agent, json!({"ids": "x"}).to_string(), 422, "invalid_field"),
        ("poll max 0", Method::GET, "/poll?max=0".into(), &agent, "".into(), 422, "invalid_max"),
        ("poll max not a number", Method::GET, "/poll?max=abc".into(), &agent, "".into(), 400, "invalid_query"),
        ("poll negative wait", Method::GET, "/poll?wait=-1".into(), &agent, "".into(), 400, "invalid_query"),
        ("outbox bad cursor", Method::GET, "/outbox?after=abc".into(), &web, "".into(), 400, "invalid_cursor"),
        ("outbox limit 0", Method::GET, "/outbox?limit=0".into(), &web, "".into(), 422, "invalid_limit"),
        ("client without name", Method::POST, "/clients".into(), ADMIN, json!({}).to_string(), 422, "invalid_field"),
        ("client with empty name", Method::POST, "/clients".into(), ADMIN, json!({"name": " "}).to_string(), 422, "invalid_name"),
        ("app with a huge name", Method::POST, "/apps".into(), ADMIN, json!({"name": "n".repeat(200)}).to_string(), 422, "invalid_name"),
        ("conversations bad state", Method::GET, "/conversations?state=bogus".into(), ADMIN, "".into(), 400, "invalid_query"),
        ("conversations bad client id", Method::GET, "/conversations?clientId=xyz".into(), ADMIN, "".into(), 422, "invalid_client_id"),
        ("deliveries bad state", Method::GET, "/deliveries?state=nope".into(), ADMIN, "".into(), 400, "invalid_query"),
        ("revoke a malformed client id", Method::DELETE, "/clients/cli_bad".into(), ADMIN, "".into(), 404, "client_not_found"),
        ("revoke an unknown client", Method::DELETE, "/clients/cli_0123456789abcdef0123456789abcdef".into(), ADMIN, "".into(), 404, "client_not_found"),
        ("unknown conversation", Method::GET, "/conversations/conv_x".into(), ADMIN, "".into(), 404, "conversation_not_found"),
        ("unknown route", Method::GET, "/nope".into(), ADMIN, "".into(), 404, "no_route"),
        ("wrong method", Method::PUT, "/inbound".into(), &web, "{}".into(), 405, "method_not_allowed"),
    ];

    for (what, method, path, token, body, status, code) in cases {
        let before = app.row_counts().await;
        let r = app.raw(method, &path, Some(token), body).await;
        assert_eq!(r.status.as_u16(), status, "{what}: {}", r.body);
        assert_eq!(r.error_code(), code, "{what}: {}", r.body);
        assert!(
            !r.body["error"]["message"].as_str().unwrap_or("").is_empty(),
            "{what}: the error says what is wrong"
        );
        assert_eq!(app.row_counts().await, before, "{what}: nothing written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_idempotency_key_is_400_and_writes_nothing() {
    let app = spawn_app().await;
    let (_, web) = app.create_app("web").await;
    let before = app.row_counts().await;
    let r = app
        .request_with(
            Method::POST,
            "/inbound",
            Some(&web),
            Some(json!({"from": "alice", "text": "x"})),
            &[("Idempotency-Key", "has space")],
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (400, "invalid_idempotency_key")
    );
    assert_eq!(app.row_counts().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_client_queue_refuses_new_messages_with_503_and_stores_nothing() {
    let app = spawn_with(|c| c.delivery.max_pending = 2).await;
    let (_, agent) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&agent, "").await;
    app.inbound(&web, "a", "1").await;
    app.inbound(&web, "b", "2").await;
    let before = app.row_counts().await;
    let r = app
        .post("/inbound", &web, json!({"from": "c", "text": "3"}))
        .await;
    assert_eq!((r.status.as_u16(), r.error_code()), (503, "queue_full"));
    let r = app
        .post("/inbound", &web, json!({"from": "a", "text": "again"}))
        .await;
    assert_eq!((r.status.as_u16(), r.error_code()), (503, "queue_full"));
    assert_eq!(app.row_counts().await, before);
    // Once the agent catches up, messages flow again.
    let m = app.poll(&agent, "?max=10").await;
    app.ack(&agent, &m.iter().collect::<Vec<_>>()).await;
    app.inbound(&web, "c", "3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_are_not_cut_by_the_request_timeout() {
    let app = spawn_with(|c| c.limits.request_timeout_secs = 1).await;
    let (_, agent) = app.create_client("agent").await;
    let started = std::time::Instant::now();
    assert!(app.poll(&agent, "?wait=2").await.is_empty());
    assert!(started.elapsed() >= std::time::Duration::from_millis(1900));
}
