//! The seed's §8 flow, end to end, plus long polling and public inbound.

use crate::helpers::*;
use crate::ws_client::Ws;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_flow_register_poll_inbound_reply_outbox_second_turn() {
    let app = spawn_app().await;
    let (client_id, client) = app.create_client("my-openclaw").await;
    let (app_id, web) = app.create_app("website").await;

    // The plugin starts polling: connected, nothing yet.
    assert!(app.poll(&client, "").await.is_empty());

    let first = app.inbound(&web, "alice", "Hello!").await;
    let conversation = first["conversationId"].as_str().unwrap().to_owned();
    assert_eq!(first["from"], "alice");
    assert_eq!(first["clientId"], client_id.as_str());
    assert_eq!(first["appId"], app_id.as_str());

    let got = app.poll(&client, "").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["id"], first["id"]);
    assert_eq!(got[0]["text"], "Hello!");
    assert_eq!(got[0]["attempt"], 1);

    let sent = app.send(&client, &got[0], "Hi Alice!").await;
    assert_eq!(sent["ok"], true);
    assert_eq!(sent["message"]["to"], "alice");
    assert_eq!(sent["message"]["conversationId"], conversation.as_str());

    let outbox = app.get("/outbox", &web).await.ok();
    let replies = outbox["messages"].as_array().unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0]["text"], "Hi Alice!");
    let cursor = outbox["cursor"].as_str().unwrap().to_owned();

    // Second turn: same conversation, same client, full history readable.
    let second = app.inbound(&web, "alice", "How are you?").await;
    assert_eq!(second["conversationId"], conversation.as_str());
    let got = app.poll(&client, "").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["text"], "How are you?");
    let history = app
        .get(&format!("/conversations/{conversation}"), &client)
        .await
        .ok();
    let texts: Vec<_> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].clone())
        .collect();
    assert_eq!(
        texts,
        vec![json!("Hello!"), json!("Hi Alice!"), json!("How are you?")]
    );
    app.send(&client, &got[0], "Great, thanks!").await;

    // The outbox resumes after the cursor: only the new reply.
    let outbox = app.get(&format!("/outbox?after={cursor}"), &web).await.ok();
    let replies = outbox["messages"].as_array().unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0]["text"], "Great, thanks!");

    // Nothing is redelivered: the replies acked both messages.
    assert!(app.poll(&client, "").await.is_empty());

    let list = app.get("/conversations?userId=alice", ADMIN).await.ok();
    let convs = list["conversations"].as_array().unwrap();
    assert_eq!(convs.len(), 1);
    assert_eq!(convs[0]["id"], conversation.as_str());
    assert_eq!(convs[0]["messageCount"], 4);
    assert_eq!(convs[0]["state"], "active");

    let health = app.request(Method::GET, "/health", None, None).await.ok();
    assert_eq!(health["ok"], true);
    assert_eq!(health["clients"], 1);
    assert_eq!(health["conversations"], 1);
}

/// The ids of a `GET /conversations` page, newest first.
async fn listed(app: &TestApp, query: &str) -> Vec<String> {
    let page = app.get(&format!("/conversations{query}"), ADMIN).await.ok();
    page["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Each filter of the conversation listing can lead (the store has one
/// statement per leading filter); the others still apply to what it finds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conversation_listing_filters_by_user_client_and_app() {
    let app = spawn_app().await;
    let (first_id, first) = app.create_client("first").await;
    let (second_id, second) = app.create_client("second").await;
    let (shop_id, shop) = app.create_app("shop").await;
    let (blog_id, blog) = app.create_app("blog").await;

    // Only the first client is connected: alice's conversation is its.
    app.poll(&first, "").await;
    let alice = app.inbound(&shop, "alice", "hi").await["conversationId"].clone();
    // The second has less work now: bob's is the second's.
    app.poll(&second, "").await;
    let bob = app.inbound(&blog, "bob", "hi").await["conversationId"].clone();
    // The first answers alice, so has less work again: carol's is its.
    let got = app.poll(&first, "").await;
    app.send(&first, &got[0], "hello").await;
    let carol = app.inbound(&shop, "carol", "hi").await["conversationId"].clone();
    let ids = [alice, bob, carol].map(|c| c.as_str().unwrap().to_owned());
    let [alice, bob, carol] = [0, 1, 2].map(|i| ids[i].as_str());

    assert_eq!(listed(&app, "").await, [carol, bob, alice]);
    assert_eq!(listed(&app, "?userId=bob").await, [bob]);
    assert_eq!(
        listed(&app, &format!("?clientId={first_id}")).await,
        [carol, alice]
    );
    assert_eq!(listed(&app, &format!("?clientId={second_id}")).await, [bob]);
    assert_eq!(
        listed(&app, &format!("?appId={shop_id}")).await,
        [carol, alice]
    );
    assert_eq!(
        listed(&app, &format!("?appId={blog_id}&userId=bob")).await,
        [bob]
    );
    assert!(listed(&app, &format!("?appId={blog_id}&userId=alice"))
        .await
        .is_empty());
    assert!(
        listed(&app, &format!("?clientId={second_id}&appId={shop_id}"))
            .await
            .is_empty()
    );
    assert_eq!(
        listed(&app, &format!("?clientId={first_id}&userId=carol")).await,
        [carol]
    );
    assert_eq!(listed(&app, "?state=active&limit=2").await, [carol, bob]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_as_soon_as_a_message_arrives() {
    let app = spawn_app().await;
    let (_, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&client, "").await;

    let started = Instant::now();
    let poller = {
        let http = app.http.clone();
        let url = format!("{}/poll?wait=8", app.base);
        let client = client.clone();
        tokio::spawn(async move {
            let res = http.get(url).bearer_auth(client).send().await.unwrap();
            (
                res.json::<serde_json::Value>().await.unwrap(),
                Instant::now(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent_at = Instant::now();
    app.inbound(&web, "bob", "ping").await;
    let (body, answered_at) = poller.await.unwrap();
    assert_eq!(body["messages"][0]["text"], "ping");
    assert!(answered_at >= sent_at);
    // Woken by the message, not by the 8 s timeout.
    assert!(answered_at.duration_since(started) < Duration::from_secs(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_with_nothing_to_deliver_answers_empty_after_wait() {
    let app = spawn_app().await;
    let (_, client) = app.create_client("agent").await;
    let started = Instant::now();
    assert!(app.poll(&client, "?wait=1").await.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_long_poll_answers_when_the_reply_is_sent() {
    let app = spawn_app().await;
    let (_, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&client, "").await;
    app.inbound(&web, "carol", "question").await;
    let msg = app.poll(&client, "").await.remove(0);

    let waiter = {
        let http = app.http.clone();
        let url = format!("{}/outbox?after=0&wait=8", app.base);
        let web = web.clone();
        tokio::spawn(async move {
            let res = http.get(url).bearer_auth(web).send().await.unwrap();
            res.json::<serde_json::Value>().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    app.send(&client, &msg, "answer").await;
    let body = waiter.await.unwrap();
    assert_eq!(body["messages"][0]["text"], "answer");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_inbound_serves_the_seed_unauthenticated_and_hides_app_conversations() {
    let app = spawn_with(|c| c.inbound.public = true).await;
    let (_, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&client, "").await;

    let public = app
        .request(
            Method::POST,
            "/inbound",
            None,
            Some(json!({"from": "guest", "text": "hi"})),
        )
        .await
        .ok();
    assert_eq!(public["appId"], "app_public");
    app.inbound(&web, "guest", "hi from the app").await;

    let got = app.poll(&client, "?max=10").await;
    assert_eq!(got.len(), 2);
    for m in &got {
        app.send(&client, m, &format!("re: {}", m["text"].as_str().unwrap()))
            .await;
    }
    let public_out = app.request(Method::GET, "/outbox", None, None).await.ok();
    let texts: Vec<_> = public_out["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].clone())
        .collect();
    assert_eq!(texts, vec![json!("re: hi")]);
    let app_out = app.get("/outbox", &web).await.ok();
    let texts: Vec<_> = app_out["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].clone())
        .collect();
    assert_eq!(texts, vec![json!("re: hi from the app")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_public_inbound_an_unauthenticated_inbound_is_401() {
    let app = spawn_app().await;
    let r = app
        .request(
            Method::POST,
            "/inbound",
            None,
            Some(json!({"from": "guest", "text": "hi"})),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error_code(), "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_one_conversation_are_delivered_one_at_a_time_in_order() {
    let app = spawn_app().await;
    let (_, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&client, "").await;
    for text in ["one", "two", "three"] {
        app.inbound(&web, "dave", text).await;
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        let got = app.poll(&client, "?max=10").await;
        assert_eq!(
            got.len(),
            1,
            "one message of a conversation in flight at a time"
        );
        seen.push(got[0]["text"].clone());
        app.ack(&client, &[&got[0]]).await;
    }
    assert_eq!(seen, vec![json!("one"), json!("two"), json!("three")]);
}

/// `"ack": false` stores an interim notice ("working on it") and leaves the
/// delivery held, over HTTP and over the agent WebSocket; the answer then
/// acks it as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interim_notice_leaves_the_delivery_held_until_the_answer() {
    let app = spawn_app().await;
    let (_, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let state_of = |id: Value| {
        let app = &app;
        async move {
            let d = app.get("/deliveries", ADMIN).await.ok();
            d["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["messageId"] == id)
                .map(|x| x["state"].as_str().unwrap().to_owned())
                .unwrap()
        }
    };

    // HTTP.
    let m = app.inbound(&web, "alice", "a long question").await;
    let got = app.poll(&client, "").await;
    assert_eq!(got.len(), 1);
    let notice = app
        .post(
            "/send",
            &client,
            json!({ "to": "alice", "text": "working on it", "conversationId": m["conversationId"], "ack": false }),
        )
        .await
        .ok();
    assert_eq!(notice["message"]["text"], "working on it");
    assert_eq!(state_of(m["id"].clone()).await, "leased");
    app.send(&client, &got[0], "the answer").await;
    assert_eq!(state_of(m["id"].clone()).await, "acked");

    // WebSocket.
    let mut agent = Ws::agent(&app, &client, 10).await;
    let m = app.inbound(&web, "bob", "another one").await;
    let pushed = agent.event().await;
    assert_eq!(pushed["payload"]["id"], m["id"]);
    let send = |text: &str, ack: bool| json!({ "conversationId": m["conversationId"], "to": "bob", "text": text, "ack": ack });
    let r = agent.request("send", send("one moment", false)).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(state_of(m["id"].clone()).await, "leased");
    let r = agent.request("send", send("the answer", true)).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(state_of(m["id"].clone()).await, "acked");

    // The outbox holds all four, in order.
    let outbox = app.get("/outbox", &web).await.ok();
    let texts: Vec<_> = outbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        texts,
        ["working on it", "the answer", "one moment", "the answer"]
    );
}
