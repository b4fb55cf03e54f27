//! WebSocket agents, live app streams (WebSocket and SSE), streamed replies:
//! pushed at once, flow-controlled, nothing lost when sockets die.

use crate::helpers::*;
use crate::ws_client::{Frame, Sse, Ws};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_socket_gets_a_message_pushed_the_moment_it_is_posted() {
    let app = spawn_app().await;
    let (_, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let mut agent = Ws::agent(&app, &client, 10).await;

    let posted = Instant::now();
    let m = app.inbound(&web, "alice", "hello").await;
    let event = agent.event().await;
    let latency = posted.elapsed();
    assert_eq!(event["event"], "message");
    assert_eq!(event["payload"]["id"], m["id"]);
    assert_eq!(event["payload"]["attempt"], 1);
    assert_eq!(event["seq"], 1);
    // Pushed, not found by a later look: the session's only other wake-ups
    // are its pings (every 20 s) and lease ends (none here). The bound is
    // loose because a busy test machine can be slow; the benchmark measures.
    assert!(
        latency < Duration::from_secs(10),
        "pushed after {latency:?}"
    );
    println!("inbound → pushed to the agent socket: {latency:?}");

    let r = agent.request("ack", json!({"ids": [m["id"]]})).await;
    assert_eq!(r["ok"], true);
    assert_eq!(r["payload"]["acked"], json!([m["id"]]));
    // Acked: not delivered again, over HTTP either.
    assert!(app.poll(&client, "").await.is_empty());
}

/// What an app's streams show, in order, for a message the agent answers
/// with [`stream_a_reply`]: the message, then the reply's events.
pub(crate) const STREAMED_REPLY: [&str; 7] = [
    "message",
    "typing",
    "reply.delta",
    "reply.delta",
    "reply.delta",
    "progress",
    "message",
];

/// The agent answers conversation `conv` (with user alice) as a streamed
/// reply: typing, "Once upon a time." in three deltas of reply r1, a
/// `tool_start` progress event, then the whole reply sent. Every request
/// is answered ok.
pub(crate) async fn stream_a_reply(agent: &mut Ws, conv: &Value) {
    let ok = |what: &str, r: Value| assert_eq!(r["ok"], true, "{what}: {r}");
    ok(
        "typing",
        agent
            .request("typing", json!({"conversationId": conv}))
            .await,
    );
    for piece in ["Once ", "upon ", "a time."] {
        let r = agent
            .request(
                "reply.delta",
                json!({"conversationId": conv, "replyId": "r1", "text": piece}),
            )
            .await;
        ok("reply.delta", r);
    }
    let r = agent
        .request(
            "progress",
            json!({"conversationId": conv, "kind": "tool_start", "data": {"name": "exec"}}),
        )
        .await;
    ok("progress", r);
    let sent = agent
        .request("send", json!({"conversationId": conv, "to": "alice", "text": "Once upon a time.", "replyId": "r1"}))
        .await;
    ok("send", sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_reply_reaches_websocket_and_sse_apps_in_order_and_the_final_message_once() {
    let app = spawn_app().await;
    let (_, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let mut agent = Ws::agent(&app, &client, 10).await;
    let (mut watcher, hello) = Ws::app(&app, &web, None).await;
    assert_eq!(hello["role"], "app");
    let mut sse = Sse::open(&app, &web, "", None).await;

    let m = app.inbound(&web, "alice", "tell me a story").await;
    let pushed = agent.event().await["payload"].clone();
    let conv = pushed["conversationId"].clone();
    stream_a_reply(&mut agent, &conv).await;
    let expected = STREAMED_REPLY;
    let mut ws_events = Vec::new();
    for _ in 0..expected.len() {
        ws_events.push(watcher.event().await);
    }
    let mut sse_events = Vec::new();
    for _ in 0..expected.len() {
        sse_events.push(sse.event().await);
    }
    let names: Vec<_> = ws_events
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, expected);
    let sse_names: Vec<_> = sse_events.iter().map(|e| e.event.clone()).collect();
    assert_eq!(sse_names, expected);

    assert_eq!(ws_events[0]["payload"]["message"]["id"], m["id"]);
    let deltas: String = ws_events[2..5]
        .iter()
        .map(|e| e["payload"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, "Once upon a time.");
    assert_eq!(ws_events[2]["payload"]["replyId"], "r1");
    assert_eq!(ws_events[5]["payload"]["kind"], "tool_start");
    let last = &ws_events[6]["payload"];
    assert_eq!(last["message"]["text"], "Once upon a time.");
    assert_eq!(last["message"]["replyId"], "r1");
    assert_eq!(last["message"]["direction"], "outbound");
    // Stored events carry the cursor, SSE as the event id too.
    assert_eq!(sse_events[6].id.as_deref(), last["cursor"].as_str());
    assert_eq!(sse_events[6].data["message"]["id"], last["message"]["id"]);
    assert_eq!(sse_events[0].data["message"]["id"], m["id"]);
    // Nothing more: the final message came once.
    assert!(watcher.quiet_for(300).await);
}

/// An agent answering many conversations at once, streaming: each answer a
/// `reply.delta` then a `send`, all sent without waiting for responses. The
/// requests' reads and the session's own (a claim after each `send`) share
/// the reader pool; every request is answered and every reply stored (the
/// session once waited on a claim while its requests, not driven meanwhile,
/// held every reader connection: a deadlock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_streaming_many_answers_at_once_gets_every_request_answered() {
    const USERS: usize = 48;
    let app = spawn_app().await;
    let (_, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let mut agent = Ws::agent(&app, &client, 100).await;
    for u in 0..USERS {
        app.inbound(&web, &format!("u{u}"), "hello").await;
    }
    let mut requests = Vec::new();
    for _ in 0..USERS {
        let m = agent.event().await["payload"].clone();
        let (conv, to) = (m["conversationId"].clone(), m["from"].clone());
        let reply = format!("r-{}", m["id"].as_str().unwrap());
        requests.push((
            "reply.delta",
            json!({"conversationId": conv, "replyId": reply, "text": "hi "}),
        ));
        requests.push((
            "send",
            json!({"conversationId": conv, "to": to, "text": "hi there", "replyId": reply}),
        ));
    }
    let answers = agent.pipeline(&requests).await;
    assert!(answers.iter().all(|a| a["ok"] == true), "{answers:?}");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM messages WHERE direction = 'outbound'")
            .await,
        USERS as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_bounds_unacked_pushes() {
    let app = spawn_app().await;
    let (_, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let mut agent = Ws::agent(&app, &client, 2).await;
    for i in 0..5 {
        app.inbound(&web, &format!("user{i}"), "hi").await;
    }
    let first = agent.event().await["payload"].clone();
    let _second = agent.event().await;
    assert!(
        agent.quiet_for(400).await,
        "a third message while two are unacked"
    );

    agent.request("ack", json!({"ids": [first["id"]]})).await;
    let third = agent.event().await;
    assert_eq!(third["event"], "message");
    assert!(agent.quiet_for(300).await);
}

/// A socket with room to spare claims again only for new work, not after
/// each of its answers; a conversation's next message, made ready by the
/// answer to the one before, is new work: it is pushed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversations_next_message_follows_the_answer_to_the_one_before() {
    let app = spawn_app().await;
    let (_, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let mut agent = Ws::agent(&app, &client, 10).await;
    app.inbound(&web, "alice", "one").await;
    app.inbound(&web, "alice", "two").await;
    let one = agent.event().await["payload"].clone();
    assert_eq!(one["text"], "one");
    assert!(agent.quiet_for(300).await, "two pushed before one's answer");
    for round in ["two", "three"] {
        if round == "three" {
            app.inbound(&web, "alice", "three").await;
        }
        let answered = agent
            .request(
                "send",
                json!({"conversationId": one["conversationId"], "to": "alice", "text": "ok"}),
            )
            .await;
        assert_eq!(answered["ok"], true, "{answered}");
        let next = agent.event().await;
        assert_eq!(next["payload"]["text"], round, "{next}");
    }
    assert!(agent.quiet_for(300).await);
}

/// An admin command run beside the server (here `client create`, `client
/// list`) leaves the claims of the server's sockets alone: a message pushed
/// to a WebSocket agent and under work is not handed out again. (Every
/// admin command once released all socket-held claims, as a server does at
/// its start: a message under work went to a second agent.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_beside_the_server_leave_socket_claims_alone() {
    if sqlite_only("a second process on the SQLite file") {
        return;
    }
    let app = spawn_app().await;
    let (_, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let mut agent = Ws::agent(&app, &client, 10).await;
    let m = app.inbound(&web, "alice", "work").await;
    assert_eq!(agent.event().await["payload"]["id"], m["id"]);
    app.cli(&["client", "create", "--name", "another"]);
    app.cli(&["client", "list"]);
    // The same session would get it again (attempt 2) if its claim ended.
    app.inbound(&web, "bob", "nudge").await;
    let next = agent.event().await;
    assert_eq!(next["payload"]["from"], "bob", "{next}");
    assert!(agent.quiet_for(500).await, "a message was pushed twice");
    let db = app.db().await;
    let owned: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM deliveries d JOIN messages m ON m.seq = d.message_seq
         WHERE m.id = ? AND d.lease_owner IS NOT NULL AND d.attempts = 1",
    )
    .bind(m["id"].as_str().unwrap())
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(owned, 1, "the socket's claim was released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agents_message_goes_at_once_to_its_reconnection_and_never_twice_after_ack() {
    let app = spawn_app().await;
    let (_, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let mut agent = Ws::agent(&app, &client, 10).await;
    let m = app.inbound(&web, "alice", "work").await;
    assert_eq!(agent.event().await["payload"]["id"], m["id"]);
    drop(agent); // killed mid-delivery: no ack, no close handshake

    // Well before the 300 s lease would end, the reconnected agent has it again.
    let mut again = Ws::agent(&app, &client, 10).await;
    let redelivered = again.event().await["payload"].clone();
    assert_eq!(redelivered["id"], m["id"]);
    assert_eq!(redelivered["attempt"], 2);
    again
        .request(
            "send",
            json!({"conversationId": m["conversationId"], "to": "alice", "text": "done"}),
        )
        .await;
    drop(again);
    let mut third = Ws::agent(&app, &client, 10).await;
    assert!(
        third.quiet_for(500).await,
        "nothing redelivered after the ack"
    );
    assert!(app.poll(&client, "").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agents_conversations_go_to_another_agent() {
    let app = spawn_with(|c| {
        c.clients.stale_after_secs = 1;
        c.clients.disconnected_after_secs = 2;
    })
    .await;
    let (a, a_token) = app.create_client("a").await;
    let (_, b_token) = app.create_client("b").await;
    let (_, web) = app.create_app("web").await;
    let mut agent_a = Ws::agent(&app, &a_token, 10).await;
    let m = app.inbound(&web, "alice", "help").await;
    assert_eq!(m["clientId"], a.as_str());
    assert_eq!(agent_a.event().await["payload"]["id"], m["id"]);
    drop(agent_a);

    let mut agent_b = Ws::agent(&app, &b_token, 10).await;
    let moved = agent_b.event().await["payload"].clone();
    assert_eq!(moved["id"], m["id"]);
    let r = agent_b
        .request(
            "send",
            json!({"conversationId": moved["conversationId"], "to": "alice", "text": "b answers"}),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let out = app.get("/outbox", &web).await.ok();
    assert_eq!(out["messages"][0]["text"], "b answers");
}

/// A backlog longer than what one write carries (64 frames) and than one
/// read of the store (100 messages) arrives whole, in order, each message
/// once, with the connection's event numbers one after the other; and the
/// stream goes on live after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_backlog_streams_whole_and_in_order_then_live() {
    const BACKLOG: usize = 150;
    let app = spawn_app().await;
    let (_, web) = app.create_app("web").await;
    let mut ids = Vec::new();
    for i in 0..BACKLOG {
        let m = app
            .inbound(&web, &format!("u{}", i % 7), &format!("m{i}"))
            .await;
        ids.push(m["id"].clone());
    }
    let (mut watcher, _) = Ws::app(&app, &web, Some("0")).await;
    let mut seqs = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let e = watcher.event().await;
        assert_eq!(e["event"], "message", "{e}");
        assert_eq!(&e["payload"]["message"]["id"], id, "message {i}: {e}");
        seqs.push(e["seq"].as_u64().unwrap());
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let live = app.inbound(&web, "u0", "live").await;
    let e = watcher.event().await;
    assert_eq!(e["payload"]["message"]["id"], live["id"], "{e}");
    assert!(watcher.quiet_for(200).await, "nothing seen twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_reconnecting_with_its_cursor_gets_exactly_what_it_missed_across_a_restart() {
    let mut app = spawn_app().await;
    let (_, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&client, "").await;

    let (mut watcher, _) = Ws::app(&app, &web, Some("0")).await;
    let seen = app.inbound(&web, "alice", "before").await;
    let e = watcher.event().await;
    assert_eq!(e["payload"]["message"]["id"], seen["id"]);
    let cursor = e["payload"]["cursor"].as_str().unwrap().to_owned();
    drop(watcher);

    // Missed while away: a reply, a new user message; then the relay restarts.
    let q = app.poll(&client, "").await.remove(0);
    app.send(&client, &q, "reply while away").await;
    app.inbound(&web, "bob", "also while away").await;
    app.restart().await;
    let after_restart = app.inbound(&web, "carol", "after the restart").await;

    let (mut back, _) = Ws::app(&app, &web, Some(&cursor)).await;
    let mut texts = Vec::new();
    for _ in 0..3 {
        texts.push(back.event().await["payload"]["message"]["text"].clone());
    }
    assert_eq!(
        texts,
        vec![
            json!("reply while away"),
            json!("also while away"),
            json!("after the restart")
        ]
    );
    assert!(back.quiet_for(300).await, "nothing seen twice");
    let _ = after_restart;

    // SSE resumes the same way from Last-Event-ID.
    let mut sse = Sse::open(&app, &web, "", Some(&cursor)).await;
    let mut sse_texts = Vec::new();
    for _ in 0..3 {
        sse_texts.push(sse.event().await.data["message"]["text"].clone());
    }
    assert_eq!(sse_texts, texts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_pollers_and_websocket_agents_never_share_a_delivery() {
    let app = spawn_app().await;
    let (_, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&client, "").await;
    const N: usize = 120;
    for i in 0..N {
        app.inbound(&web, &format!("user{i}"), "x").await;
    }

    let mut tasks = Vec::new();
    for _ in 0..2 {
        let mut ws = Ws::agent(&app, &client, 5).await;
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while !ws.quiet_for(700).await {
                let e = ws.event().await;
                let id = e["payload"]["id"].clone();
                ws.request("ack", json!({"ids": [id]})).await;
                got.push(id.as_str().unwrap().to_owned());
            }
            got
        }));
    }
    for _ in 0..4 {
        let http = app.http.clone();
        let base = app.base.clone();
        let token = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let mut empty = 0;
            while empty < 3 {
                let r: Value = http
                    .get(format!("{base}/poll?max=3"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let ids: Vec<Value> = r["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["id"].clone())
                    .collect();
                if ids.is_empty() {
                    empty += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                http.post(format!("{base}/ack"))
                    .bearer_auth(&token)
                    .json(&json!({"ids": ids}))
                    .send()
                    .await
                    .unwrap();
                got.extend(ids.iter().map(|i| i.as_str().unwrap().to_owned()));
            }
            got
        }));
    }
    let mut count: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        for id in t.await.unwrap() {
            *count.entry(id).or_default() += 1;
        }
    }
    assert_eq!(count.len(), N, "every message delivered");
    assert!(
        count.values().all(|n| *n == 1),
        "a message reached two holders"
    );
}

async fn first_frame_refusal(app: &TestApp, text: &str) -> (Value, Option<u16>) {
    let mut ws = Ws::open(app).await;
    ws.send_text(text).await;
    let err = match ws.frame().await {
        Frame::Json(v) => v,
        other => panic!("expected an error frame, got {other:?}"),
    };
    (err, ws.closed().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_first_frames_get_an_error_and_a_close_code() {
    let app = spawn_with(|c| c.ws.connect_timeout_secs = 1).await;
    let (_, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let connect = |role: &str, token: &str| {
        json!({"type":"req","id":1,"method":"connect","params":{"role":role,"token":token}})
            .to_string()
    };

    let cases = [
        ("not json", "{".to_owned(), "invalid_json", 4000),
        (
            "not connect",
            json!({"type":"req","id":1,"method":"ack","params":{}}).to_string(),
            "connect_required",
            4000,
        ),
        (
            "bad role",
            json!({"type":"req","id":1,"method":"connect","params":{"role":"admin"}}).to_string(),
            "invalid_params",
            4000,
        ),
        (
            "wrong token",
            connect("agent", "cli_0123456789abcdef0123456789abcdef.00"),
            "unauthorized",
            4001,
        ),
        (
            "no token",
            json!({"type":"req","id":1,"method":"connect","params":{"role":"agent"}}).to_string(),
            "unauthorized",
            4001,
        ),
        (
            "app token as agent",
            connect("agent", &web),
            "forbidden",
            4003,
        ),
        (
            "client token as app",
            connect("app", &client),
            "forbidden",
            4003,
        ),
    ];
    for (what, frame, code, close) in cases {
        let (err, closed) = first_frame_refusal(&app, &frame).await;
        assert_eq!(err["ok"], false, "{what}");
        assert_eq!(err["error"]["code"], code, "{what}: {err}");
        assert_eq!(closed, Some(close), "{what}");
    }

    // Silence instead of connect.
    let mut ws = Ws::open(&app).await;
    assert_eq!(ws.closed().await, Some(4008));

    // The Authorization header of the upgrade works in place of a token param.
    let url = format!("{}/ws", app.base.replacen("http", "ws", 1));
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {client}").parse().unwrap());
    let (mut stream, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    use futures_util::{SinkExt, StreamExt};
    stream
        .send(tokio_tungstenite::tungstenite::Message::Text(
            json!({"type":"req","id":1,"method":"connect","params":{"role":"agent"}})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let hello = stream.next().await.unwrap().unwrap();
    let hello: Value = serde_json::from_str(hello.to_text().unwrap()).unwrap();
    assert_eq!(hello["ok"], true, "{hello}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_after_connect_get_errors_and_the_connection_survives() {
    let app = spawn_app().await;
    let (_, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let mut agent = Ws::agent(&app, &client, 10).await;

    let frames = [
        ("{".to_owned(), "invalid_json"),
        ("[]".to_owned(), "invalid_frame"),
        (json!({"type":"req","method":"ack"}).to_string(), "invalid_frame"),
        (json!({"type":"req","id":"x","method":"fly"}).to_string(), "unknown_method"),
        (json!({"type":"req","id":"x","method":"ack","params":{"ids":"no"}}).to_string(), "invalid_params"),
        (json!({"type":"req","id":"x","method":"ack","params":{"ids":["nope"]}}).to_string(), "invalid_ids"),
        (
            json!({"type":"req","id":"x","method":"send","params":{"conversationId":"conv_0123456789abcdef0123456789abcdef","to":"a","text":"t"}}).to_string(),
            "conversation_not_found",
        ),
        (
            json!({"type":"req","id":"x","method":"reply.delta","params":{"conversationId":"conv_0123456789abcdef0123456789abcdef","replyId":"r","text":"t"}}).to_string(),
            "conversation_not_found",
        ),
        (
            json!({"type":"req","id":"x","method":"progress","params":{"conversationId":"conv_0123456789abcdef0123456789abcdef","kind":"Bad Kind"}}).to_string(),
            "invalid_kind",
        ),
    ];
    for (frame, code) in frames {
        agent.send_text(&frame).await;
        match agent.frame().await {
            Frame::Json(v) => {
                assert_eq!(v["type"], "res", "{frame}");
                assert_eq!(v["ok"], false, "{frame}");
                assert_eq!(v["error"]["code"], code, "{frame}: {v}");
                assert!(!v["error"]["message"].as_str().unwrap().is_empty());
            }
            other => panic!("{frame}: {other:?}"),
        }
    }
    agent.send_binary(vec![1, 2, 3]).await;
    match agent.frame().await {
        Frame::Json(v) => assert_eq!(v["error"]["code"], "invalid_frame"),
        other => panic!("binary: {other:?}"),
    }
    // Still alive and working.
    assert_eq!(agent.request("ping", json!({})).await["ok"], true);
    let m = app.inbound(&web, "alice", "still there?").await;
    assert_eq!(agent.event().await["payload"]["id"], m["id"]);

    // An app's methods are its own.
    let (mut watcher, _) = Ws::app(&app, &web, None).await;
    let r = watcher.request("ack", json!({"ids": []})).await;
    assert_eq!(r["error"]["code"], "unknown_method");
    let r = watcher
        .request("inbound", json!({"from": "zoe", "text": "via socket"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["payload"]["message"]["from"], "zoe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_limit_closes_with_1009() {
    let app = spawn_with(|c| c.ws.max_frame_bytes = 4096).await;
    let (_, client) = app.create_client("agent").await;
    let mut agent = Ws::agent(&app, &client, 10).await;
    agent.send_text(&"x".repeat(10_000)).await;
    assert_eq!(agent.closed().await, Some(1009));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_not_buffered_without_bound() {
    let app = spawn_with(|c| {
        c.ws.outgoing_buffer = 4;
        c.ws.send_timeout_secs = 1;
    })
    .await;
    let (_, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let mut agent = Ws::agent(&app, &client, 10).await;
    let (mut sleepy, _) = Ws::app(&app, &web, None).await;
    app.inbound(&web, "alice", "write a lot").await;
    let conv = agent.event().await["payload"]["conversationId"].clone();

    // The watcher never reads while 400 × 60 KB of deltas stream past it.
    let piece = "z".repeat(60_000);
    const SENT: usize = 400;
    for i in 0..SENT {
        let r = agent
            .request(
                "reply.delta",
                json!({"conversationId": conv, "replyId": "big", "text": piece}),
            )
            .await;
        assert_eq!(r["ok"], true, "delta {i}");
    }

    let mut received = 0;
    let end = loop {
        match sleepy.frame().await {
            Frame::Json(v) if v["event"] == "reply.delta" => received += 1,
            Frame::Json(_) => {}
            Frame::Closed(code) => break code,
        }
    };
    eprintln!("slow consumer: received {received} of {SENT} deltas, close code {end:?}");
    assert!(
        received < SENT,
        "all {received} deltas were buffered for a reader that never read"
    );
    if let Some(code) = end {
        assert_eq!(code, 4029);
    }
    // The relay itself is fine.
    let (_, hello) = Ws::app(&app, &web, None).await;
    assert_eq!(hello["role"], "app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sockets_with_1001() {
    let mut app = spawn_app().await;
    let (_, client) = app.create_client("agent").await;
    let mut agent = Ws::agent(&app, &client, 10).await;
    app.stop().await;
    assert_eq!(agent.closed().await, Some(1001));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_refused_with_503() {
    let app = spawn_with(|c| c.ws.max_connections = 1).await;
    let (_, client) = app.create_client("agent").await;
    let _first = Ws::agent(&app, &client, 10).await;
    let url = format!("{}/ws", app.base.replacen("http", "ws", 1));
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("expected a 503 refusal, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_answers_no_ping_is_closed_after_the_idle_timeout() {
    let app = spawn_with(|c| {
        c.ws.ping_interval_secs = 1;
        c.ws.idle_timeout_secs = 2;
    })
    .await;
    let (_, client) = app.create_client("agent").await;
    let mut agent = Ws::agent(&app, &client, 10).await;
    // Not reading means not answering the server's pings.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(agent.closed().await, Some(4008));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_are_told_when_a_conversation_expires() {
    let app = spawn_with(|c| c.conversations.ttl_secs = 1).await;
    let (_, web) = app.create_app("web").await;
    let (mut watcher, _) = Ws::app(&app, &web, None).await;
    let m = app.inbound(&web, "alice", "hi").await;
    assert_eq!(watcher.event().await["event"], "message");
    // The maintenance task (every second here) marks it expired.
    let e = watcher.event().await;
    assert_eq!(e["event"], "conversation.expired");
    assert_eq!(e["payload"]["conversationId"], m["conversationId"]);
    assert_eq!(e["payload"]["userId"], "alice");
}

/// A message stored while no agent is connected says so (`clientId` null);
/// when an agent connects and takes it, the app's streams hear of it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_are_told_when_an_agent_takes_a_waiting_conversation() {
    let app = spawn_app().await;
    let (_, web) = app.create_app("web").await;
    let mut sse = Sse::open(&app, &web, "", None).await;
    let m = app.inbound(&web, "alice", "anyone there?").await;
    assert_eq!(m["clientId"], Value::Null, "{m}");
    assert_eq!(sse.event().await.event, "message");

    let (_, client) = app.create_client("late agent").await;
    let taken = app.poll(&client, "").await;
    assert_eq!(taken.len(), 1);
    let e = sse.event().await;
    assert_eq!(e.event, "conversation.assigned");
    assert_eq!(e.data["conversationId"], m["conversationId"]);
    assert_eq!(e.data["userId"], "alice");

    // A conversation that has its agent already is not announced again.
    app.send(&client, &taken[0], "here now").await;
    assert_eq!(sse.event().await.data["message"]["text"], "here now");
    let next = app.inbound(&web, "alice", "second").await;
    assert_ne!(next["clientId"], Value::Null, "{next}");
    assert_eq!(sse.event().await.data["message"]["text"], "second");
    assert_eq!(app.poll(&client, "").await.len(), 1);
    app.inbound(&web, "alice", "third").await;
    let e = sse.event().await;
    assert_eq!(
        (e.event.as_str(), &e.data["message"]["text"]),
        ("message", &json!("third"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_can_follow_one_conversation() {
    let app = spawn_app().await;
    let (_, web) = app.create_app("web").await;
    let (_, other_web) = app.create_app("other").await;
    let alice = app.inbound(&web, "alice", "one").await;
    app.inbound(&web, "bob", "not alice").await;
    app.inbound(&web, "alice", "two").await;
    let conv = alice["conversationId"].as_str().unwrap();

    let mut sse = Sse::open(&app, &web, &format!("?after=0&conversationId={conv}"), None).await;
    assert_eq!(sse.event().await.data["message"]["text"], "one");
    assert_eq!(sse.event().await.data["message"]["text"], "two");

    // Another app's conversation is not found.
    let r = app
        .get(&format!("/events?conversationId={conv}"), &other_web)
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (404, "conversation_not_found")
    );
}

/// An agent may send requests without waiting for each answer: requests
/// about different conversations run side by side (their sends share
/// commits), those about one conversation run in the order they came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_agent_requests_keep_each_conversations_order() {
    let app = spawn_app().await;
    let (_, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let mut agent = Ws::agent(&app, &client, 50).await;
    let (mut watcher, _) = Ws::app(&app, &web, None).await;

    let mut pushed = Vec::new();
    for u in 0..8 {
        app.inbound(&web, &format!("user{u}"), "hi").await;
        pushed.push(agent.event().await["payload"].clone());
    }
    let first = &pushed[0];
    let conv0 = first["conversationId"].clone();
    let mut requests: Vec<(&str, Value)> = Vec::new();
    for part in 1..=10 {
        // One streamed reply in the middle: its delta before its final send.
        if part == 5 {
            requests.push((
                "reply.delta",
                json!({"conversationId": conv0, "replyId": "r5", "text": "par"}),
            ));
        }
        let mut send =
            json!({"conversationId": conv0, "to": first["from"], "text": format!("part {part}")});
        if part == 5 {
            send["replyId"] = json!("r5");
        }
        requests.push(("send", send));
        // Requests about the other conversations in between.
        if let Some(other) = pushed.get(part) {
            requests.push((
                "send",
                json!({"conversationId": other["conversationId"], "to": other["from"], "text": "answer"}),
            ));
        }
    }
    requests.push(("ping", json!({})));
    let answers = agent.pipeline(&requests).await;
    for (answer, (method, _)) in answers.iter().zip(&requests) {
        assert_eq!(answer["ok"], true, "{method}: {answer}");
    }

    // Stored in the order sent.
    let stored = app
        .get(
            &format!("/conversations/{}", conv0.as_str().unwrap()),
            ADMIN,
        )
        .await
        .ok();
    let texts: Vec<&str> = stored["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "outbound")
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (1..=10).map(|p| format!("part {p}")).collect();
    assert_eq!(texts, expected);

    // The app saw conversation 0 in the same order, the delta before its send.
    let mut seen = Vec::new();
    while seen.len() < 11 {
        let e = watcher.event().await;
        let p = &e["payload"];
        let of_conv0 = p["conversationId"] == conv0 || p["message"]["conversationId"] == conv0;
        match e["event"].as_str().unwrap() {
            "reply.delta" if of_conv0 => seen.push("delta".to_owned()),
            "message" if of_conv0 && p["message"]["direction"] == "outbound" => {
                seen.push(p["message"]["text"].as_str().unwrap().to_owned())
            }
            _ => {}
        }
    }
    let mut want: Vec<String> = expected.clone();
    want.insert(4, "delta".to_owned());
    assert_eq!(seen, want);
}

/// A live event goes after every stored message that was there before it,
/// also when a stream replays a backlog of more than one page right after a
/// restart (the relay knows the newest stored message from the database,
/// not only from what it announced since it started).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_event_follows_the_backlog_a_stream_replays_after_a_restart() {
    const BACKLOG: usize = 150;
    let mut app = spawn_app().await;
    let (_, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let first = app.inbound(&web, "alice", "message 0").await;
    for i in 1..BACKLOG {
        app.inbound(&web, "alice", &format!("message {i}")).await;
    }
    app.restart().await;

    let mut agent = Ws::agent(&app, &client, 1).await;
    let pushed = agent.event().await["payload"].clone();
    assert_eq!(pushed["conversationId"], first["conversationId"]);
    let (mut watcher, _) = Ws::app(&app, &web, Some("0")).await;
    let r = agent
        .request(
            "typing",
            json!({"conversationId": pushed["conversationId"]}),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");

    let mut stored_before = 0;
    loop {
        let e = watcher.event().await;
        match e["event"].as_str().unwrap() {
            "message" => stored_before += 1,
            "typing" => break,
            other => panic!("unexpected event {other}: {e}"),
        }
    }
    assert_eq!(
        stored_before, BACKLOG,
        "typing came in the middle of the backlog"
    );
}
