//! Several active conversations per user: `POST /conversations` opens one
//! beside the others; a message names its conversation (`conversationId`)
//! or continues the user's most recently active one; each conversation is
//! delivered, answered and expired on its own.

use crate::helpers::*;
use crate::ws_client::Ws;
use serde_json::{json, Value};

async fn inbound_to(app: &TestApp, token: &str, from: &str, text: &str, conv: &Value) -> Reply {
    app.post(
        "/inbound",
        token,
        json!({"from": from, "text": text, "conversationId": conv}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_holds_several_conversations_that_stay_apart() {
    let app = spawn_app().await;
    let (_, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    assert!(app.poll(&client, "").await.is_empty()); // connected

    let first = app.inbound(&web, "alice", "one").await;
    let a = first["conversationId"].clone();
    let r = app
        .post("/conversations", &web, json!({"userId": "alice"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let b = r.body["id"].clone();
    assert_ne!(a, b);
    assert_eq!(r.body["userId"], "alice");
    assert_eq!(r.body["state"], "active");
    assert_eq!(r.body["messageCount"], 0);

    // (Apart in time: "most recently active" goes by the millisecond.)
    let tick = || tokio::time::sleep(std::time::Duration::from_millis(5));
    tick().await;
    let two = inbound_to(&app, &web, "alice", "two", &b).await.ok();
    assert_eq!(two["conversationId"], b);
    // Without a conversation: the most recently active one (b, just now).
    tick().await;
    let three = app.inbound(&web, "alice", "three").await;
    assert_eq!(three["conversationId"], b);
    tick().await;
    let again = inbound_to(&app, &web, "alice", "one again", &a).await.ok();
    assert_eq!(again["conversationId"], a);
    tick().await;
    let four = app.inbound(&web, "alice", "four").await;
    assert_eq!(four["conversationId"], a);

    // One delivery per conversation at a time, and the two at once.
    let taken = app.poll(&client, "?max=10").await;
    let mut texts: Vec<_> = taken.iter().map(|m| m["text"].clone()).collect();
    texts.sort_by_key(|t| t.to_string());
    assert_eq!(texts, [json!("one"), json!("two")]);
    for m in &taken {
        app.send(&client, m, &format!("re: {}", m["text"].as_str().unwrap()))
            .await;
    }
    let next = app.poll(&client, "?max=10").await;
    let mut texts: Vec<_> = next.iter().map(|m| m["text"].clone()).collect();
    texts.sort_by_key(|t| t.to_string());
    assert_eq!(texts, [json!("one again"), json!("three")]);

    // Each conversation holds its own messages.
    let a_msgs = app
        .get(&format!("/conversations/{}", a.as_str().unwrap()), &web)
        .await
        .ok();
    let a_texts: Vec<_> = a_msgs["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(a_texts, ["one", "one again", "four", "re: one"]);
    let list = app
        .get("/conversations?userId=alice&state=active", ADMIN)
        .await
        .ok();
    assert_eq!(list["conversations"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_that_is_not_the_users_is_not_found() {
    let app = spawn_app().await;
    let (_, web) = app.create_app("web").await;
    let (_, other) = app.create_app("other").await;
    let bobs = app.inbound(&web, "bob", "mine").await["conversationId"].clone();
    let before = app.row_counts().await;
    for (token, from, conv) in [
        (&web, "alice", bobs.clone()),
        (&other, "bob", bobs.clone()),
        (
            &web,
            "alice",
            json!("conv_00000000000000000000000000000000"),
        ),
        (&web, "alice", json!("not an id")),
    ] {
        let r = inbound_to(&app, token, from, "hi", &conv).await;
        assert_eq!(
            (r.status.as_u16(), r.error_code()),
            (404, "conversation_not_found"),
            "{conv}: {}",
            r.body
        );
    }
    assert_eq!(
        app.row_counts().await,
        before,
        "a refused message wrote nothing"
    );

    // A session is its user: it cannot post into bob's conversation either,
    // nor open one for him.
    let (session, _) = app.open_session(&web, "alice").await;
    let r = app
        .post(
            "/inbound",
            &session,
            json!({"text": "hi", "conversationId": bobs}),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (404, "conversation_not_found")
    );
    let r = app
        .post("/conversations", &session, json!({"userId": "bob"}))
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_open_a_conversation_for_whom() {
    let app = spawn_app().await;
    let (app_id, web) = app.create_app("web").await;
    let (_, client) = app.create_client("agent").await;

    // A session opens its own, with an empty body.
    let (session, _) = app.open_session(&web, "carol").await;
    let r = app.post("/conversations", &session, json!({})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["userId"], "carol");
    assert_eq!(r.body["appId"], app_id.as_str());
    let conv = r.body["id"].clone();
    let sent = app
        .post(
            "/inbound",
            &session,
            json!({"text": "hello", "conversationId": conv}),
        )
        .await
        .ok();
    assert_eq!(sent["conversationId"], conv);

    // The admin names the app and the user.
    let r = app
        .post(
            "/conversations",
            ADMIN,
            json!({"appId": app_id, "userId": "dave"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["userId"], "dave");
    for (body, code) in [
        (json!({"userId": "dave"}), "invalid_app_id"),
        (json!({"appId": app_id}), "invalid_user_id"),
        (json!({"appId": app_id, "userId": ""}), "invalid_user_id"),
    ] {
        let r = app.post("/conversations", ADMIN, body.clone()).await;
        assert_eq!((r.status.as_u16(), r.error_code()), (422, code), "{body}");
    }
    let r = app
        .post(
            "/conversations",
            ADMIN,
            json!({"appId": "app_00000000000000000000000000000000", "userId": "dave"}),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.error_code()), (404, "app_not_found"));

    // An app for its users only; an agent not at all.
    let r = app.post("/conversations", &web, json!({})).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (422, "invalid_user_id")
    );
    let r = app
        .post(
            "/conversations",
            &web,
            json!({"userId": "erin", "appId": "app_00000000000000000000000000000000"}),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.error_code()), (404, "app_not_found"));
    let r = app
        .post("/conversations", &client, json!({"userId": "erin"}))
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_conversation_refuses_messages_and_the_rest_go_on() {
    let app = spawn_with(|c| c.conversations.ttl_secs = 1).await;
    let (_, web) = app.create_app("web").await;
    let old = app.inbound(&web, "alice", "old").await["conversationId"].clone();
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let r = inbound_to(&app, &web, "alice", "late", &old).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (409, "conversation_expired"),
        "{}",
        r.body
    );
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("POST /conversations"));
    // Without a conversation: a new one, as before.
    let fresh = app.inbound(&web, "alice", "fresh").await;
    assert_ne!(fresh["conversationId"], old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_inbound_names_its_conversation_too() {
    let app = spawn_app().await;
    let (_, web) = app.create_app("web").await;
    let opened = app
        .post("/conversations", &web, json!({"userId": "alice"}))
        .await
        .ok();
    app.inbound(&web, "alice", "elsewhere").await;
    let (mut ws, _) = Ws::app(&app, &web, None).await;
    let r = ws
        .request(
            "inbound",
            json!({"from": "alice", "text": "here", "conversationId": opened["id"]}),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["payload"]["message"]["conversationId"], opened["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_lists_its_own_conversations_with_their_titles() {
    let app = spawn_app().await;
    let (_, web) = app.create_app("web").await;
    let (_, other) = app.create_app("other").await;
    let (_, client) = app.create_client("agent").await;
    let a = app
        .inbound(&web, "alice", "I want a refund\nfor my order 42, please")
        .await["conversationId"]
        .clone();
    let b = app
        .post("/conversations", &web, json!({"userId": "alice"}))
        .await
        .ok()["id"]
        .clone();
    app.inbound(&web, "bob", "bob's").await;
    app.inbound(&other, "alice", "another app's alice").await;

    let (session, _) = app.open_session(&web, "alice").await;
    let list = app.get("/conversations", &session).await.ok();
    let got: Vec<(Value, Value)> = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].clone(), c["title"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            (b.clone(), json!("")),
            (a.clone(), json!("I want a refund for my order 42, please"))
        ],
        "newest first, alice's of this app only"
    );
    let active = app
        .get("/conversations?state=active&limit=1", &session)
        .await
        .ok();
    assert_eq!(active["conversations"][0]["id"], b);
    assert!(active["nextCursor"].is_string());

    for (token, query, status) in [
        (&session, "?userId=bob", 403),
        (&session, "?appId=app_00000000000000000000000000000000", 404),
        (&web, "?appId=app_00000000000000000000000000000000", 404),
        (&client, "", 403),
    ] {
        let r = app.get(&format!("/conversations{query}"), token).await;
        assert_eq!(r.status, status, "{query}: {}", r.body);
    }
    // An app sees its users', with the same titles.
    let mine = app.get("/conversations?userId=bob", &web).await.ok();
    assert_eq!(mine["conversations"][0]["title"], "bob's");
    assert_eq!(mine["conversations"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_by_page_latest_first_for_whoever_may_read_it() {
    let app = spawn_app().await;
    let (_, agent) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let first = app.inbound(&web, "ann", "m00").await;
    let conv = first["conversationId"].clone();
    for i in 1..25 {
        assert_eq!(
            inbound_to(&app, &web, "ann", &format!("m{i:02}"), &conv)
                .await
                .status,
            200
        );
    }
    // The agent answers the first one, in Markdown.
    let m = app.poll(&agent, "").await.remove(0);
    app.send(&agent, &m, "**yes**").await;
    let texts = |page: &Value| -> Vec<String> {
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .collect()
    };
    let path = format!("/conversations/{}/messages", conv.as_str().unwrap());
    // The latest 10, oldest first, and where the page before starts.
    let page = app.get(&format!("{path}?limit=10"), &web).await.ok();
    let want: Vec<String> = (15..25).map(|i| format!("m{i:02}")).collect();
    let mut latest = want.clone();
    latest.remove(0);
    latest.push("**yes**".into());
    assert_eq!(texts(&page), latest);
    let before = page["before"].as_str().unwrap().to_owned();
    let page = app
        .get(&format!("{path}?limit=10&before={before}"), &web)
        .await
        .ok();
    let want: Vec<String> = (6..16).map(|i| format!("m{i:02}")).collect();
    assert_eq!(texts(&page), want);
    let before = page["before"].as_str().unwrap().to_owned();
    let page = app
        .get(&format!("{path}?limit=10&before={before}"), &web)
        .await
        .ok();
    let want: Vec<String> = (0..6).map(|i| format!("m{i:02}")).collect();
    assert_eq!(texts(&page), want);
    assert!(page["before"].is_null(), "{page}");
    // The app's read has no rendering; the user's own session's has `html`
    // on the agent's message.
    let page = app.get(&format!("{path}?limit=1"), &web).await.ok();
    assert!(page["messages"][0].get("html").is_none());
    let (ann, _) = app.open_session(&web, "ann").await;
    let page = app.get(&format!("{path}?limit=1"), &ann).await.ok();
    assert_eq!(page["messages"][0]["html"], "<p><strong>yes</strong></p>\n");
    // Another user's session, another app: not found. A bad page: 400/422.
    let (bob, _) = app.open_session(&web, "bob").await;
    assert_eq!(app.get(&path, &bob).await.status, 404);
    let (_, other) = app.create_app("other").await;
    assert_eq!(app.get(&path, &other).await.status, 404);
    assert_eq!(app.get(&format!("{path}?limit=0"), &web).await.status, 422);
    assert_eq!(app.get(&format!("{path}?before=x"), &web).await.status, 400);
    // The list says where a stream started now would begin.
    let list = app.get("/conversations", &ann).await.ok();
    let at: i64 = list["streamCursor"].as_str().unwrap().parse().unwrap();
    assert!(at > 0, "{list}");
}
