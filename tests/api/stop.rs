//! Stop (`POST /conversations/{id}/stop`): what no agent claimed is
//! withdrawn, what an agent works on is cancelled (a `cancel` event on its
//! socket, `cancelled` in its poll) and never delivered again, the reply
//! being streamed is stored as far as it got, marked stopped, and the
//! agent's late pieces and answer are refused until it claims new work
//! there.

use super::helpers::*;
use super::ws_client::Ws;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A relay whose claims last 2 s: a cancelled turn would be redelivered
/// soon after, were it not ended.
async fn relay() -> TestApp {
    spawn_with(|c| {
        c.delivery.lease_secs = 2;
    })
    .await
}

fn stop_path(m: &Value) -> String {
    format!(
        "/conversations/{}/stop",
        m["conversationId"].as_str().expect("a conversation")
    )
}

/// The next event of `kind`, skipping others (deltas, typing).
async fn next_event(ws: &mut Ws, kind: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = ws
            .event_within(left)
            .await
            .unwrap_or_else(|| panic!("no `{kind}` event within 10 s"));
        if e["event"] == kind {
            return e["payload"].clone();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_cancels_the_agents_turn_and_keeps_what_it_streamed() {
    let app = relay().await;
    let (_, agent_token) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let mut agent = Ws::agent(&app, &agent_token, 10).await;
    let (mut stream, _) = Ws::app(&app, &web, Some("0")).await;
    let m = app.inbound(&web, "alice", "tell me a long story").await;
    let pushed = next_event(&mut agent, "message").await;
    assert_eq!(pushed["id"], m["id"]);
    let conversation = pushed["conversationId"].clone();
    for piece in ["Once upon ", "a time"] {
        let r = agent
            .request(
                "reply.delta",
                json!({ "conversationId": conversation, "replyId": "r1", "text": piece }),
            )
            .await;
        assert_eq!(r["ok"], true, "{r}");
    }

    let stopped = app.post(&stop_path(&m), &web, json!({})).await.ok();
    assert_eq!(stopped["stopped"], true, "{stopped}");
    assert_eq!(stopped["cancelled"], json!([m["id"]]));
    assert_eq!(stopped["withdrawn"], json!([]));
    let kept = &stopped["message"];
    assert_eq!(
        kept["text"], "Once upon a time",
        "what was streamed: {stopped}"
    );
    assert_eq!(kept["stopped"], true);
    assert_eq!(kept["direction"], "outbound");
    assert_eq!(kept["replyId"], "r1");

    // The agent hears of it, with the reply it was writing.
    let cancel = next_event(&mut agent, "cancel").await;
    assert_eq!(cancel["conversationId"], conversation);
    assert_eq!(cancel["messageIds"], json!([m["id"]]));
    assert_eq!(cancel["replyId"], "r1");
    // Its late piece and its answer are refused, and not shown.
    let late = agent
        .request(
            "reply.delta",
            json!({ "conversationId": conversation, "replyId": "r1", "text": " and more" }),
        )
        .await;
    assert_eq!(late["error"]["code"], "reply_stopped", "{late}");
    let answer = agent
        .request(
            "send",
            json!({ "conversationId": conversation, "to": "alice", "text": "Once upon a time, the end.",
                    "replyId": "r1" }),
        )
        .await;
    assert_eq!(answer["error"]["code"], "reply_stopped", "{answer}");

    // The app's stream: the pieces, the stopped reply, the stop.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen
        .iter()
        .any(|(k, _): &(String, Value)| k == "reply.stopped")
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = stream
            .event_within(left)
            .await
            .unwrap_or_else(|| panic!("the stream ended early: {seen:?}"));
        let kind = match e["event"].as_str().unwrap() {
            "message" => format!(
                "message:{}",
                e["payload"]["message"]["direction"].as_str().unwrap()
            ),
            k => k.to_owned(),
        };
        seen.push((kind, e["payload"].clone()));
    }
    let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "message:inbound",
            "reply.delta",
            "reply.delta",
            "message:outbound",
            "reply.stopped"
        ],
        "{seen:?}"
    );
    let (_, stop_event) = &seen[4];
    assert_eq!(stop_event["cancelled"], json!([m["id"]]));
    assert_eq!(stop_event["messageId"], kept["id"]);
    let (_, stored) = &seen[3];
    assert_eq!(stored["message"]["stopped"], true);
    assert_eq!(stored["message"]["text"], "Once upon a time");
    assert!(
        stream.quiet_for(300).await,
        "the refused piece never reached the stream"
    );

    // Ended for good: past two leases it is not delivered again.
    assert!(
        agent.quiet_for(4500).await,
        "a cancelled turn is never redelivered"
    );
    let deliveries = app
        .get(
            &format!(
                "/deliveries?conversationId={}",
                conversation.as_str().unwrap()
            ),
            ADMIN,
        )
        .await
        .ok();
    assert_eq!(
        deliveries["deliveries"][0]["state"], "acked",
        "{deliveries}"
    );
    assert_eq!(deliveries["deliveries"][0]["attempts"], 1, "{deliveries}");
    let history = app
        .get(
            &format!("/conversations/{}", conversation.as_str().unwrap()),
            &web,
        )
        .await
        .ok();
    let texts: Vec<(&str, bool)> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["text"].as_str().unwrap(), m["stopped"] == true))
        .collect();
    assert_eq!(
        texts,
        [("tell me a long story", false), ("Once upon a time", true)]
    );

    // A new message is a new turn: its reply streams and is stored.
    let again = app.inbound(&web, "alice", "a short one then").await;
    let pushed = next_event(&mut agent, "message").await;
    assert_eq!(pushed["id"], again["id"]);
    let r = agent
        .request(
            "reply.delta",
            json!({ "conversationId": conversation, "replyId": "r2", "text": "Fine." }),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let r = agent
        .request(
            "send",
            json!({ "conversationId": conversation, "to": "alice", "text": "Fine.", "replyId": "r2" }),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["payload"]["message"].get("stopped").is_none(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_withdraws_what_no_agent_claimed_and_a_polling_agent_hears_of_the_rest() {
    let app = relay().await;
    let (_, agent_token) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&agent_token, "").await;
    let first = app.inbound(&web, "bob", "one").await;
    let second = app.inbound(&web, "bob", "two").await;
    let claimed = app.poll(&agent_token, "").await;
    assert_eq!(claimed.len(), 1, "the second waits behind the first");
    assert_eq!(claimed[0]["id"], first["id"]);

    // Who may stop: the user's session, not another user's, not the agent.
    let (bob, _) = app.open_session(&web, "bob").await;
    let (carol, _) = app.open_session(&web, "carol").await;
    let r = app.post(&stop_path(&first), &carol, json!({})).await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    let r = app.post(&stop_path(&first), &agent_token, json!({})).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = app
        .post("/conversations/conv_nothing/stop", &bob, json!({}))
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);

    // A long poll waiting meanwhile returns at once with the notice.
    let poller = {
        let (base, token) = (app.base.clone(), agent_token.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let body: Value = reqwest::Client::new()
                .get(format!("{base}/poll?wait=20"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (started.elapsed(), body)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = app.post(&stop_path(&first), &bob, json!({})).await.ok();
    assert_eq!(stopped["stopped"], true);
    assert_eq!(stopped["cancelled"], json!([first["id"]]));
    assert_eq!(stopped["withdrawn"], json!([second["id"]]));
    assert_eq!(stopped["message"], Value::Null, "nothing was streamed");
    let (waited, polled) = poller.await.unwrap();
    assert!(
        waited < Duration::from_secs(10),
        "woken by the stop: {waited:?}"
    );
    assert_eq!(polled["messages"], json!([]));
    assert_eq!(
        polled["cancelled"],
        json!([{ "conversationId": first["conversationId"], "messageIds": [first["id"]] }])
    );

    // Its answer is refused.
    let late = app
        .post(
            "/send",
            &agent_token,
            json!({ "to": "bob", "text": "one: done", "conversationId": first["conversationId"] }),
        )
        .await;
    assert_eq!(late.status, 409, "{:?}", late.body);
    assert_eq!(late.error_code(), "reply_stopped");
    // A second stop finds nothing in progress.
    let again = app.post(&stop_path(&first), &web, json!({})).await.ok();
    assert_eq!(again["stopped"], false, "{again}");

    // Neither message comes back, past the lease.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = app.poll(&agent_token, "").await;
    assert!(later.is_empty(), "nothing redelivered: {later:?}");
    let outbox = app.get("/outbox", &web).await.ok();
    assert_eq!(outbox["messages"], json!([]), "no reply stored");
}

/// A chat completion waiting on a turn the user stops ends with what was
/// written: the part streamed, or nothing when nothing was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_whose_turn_is_stopped_ends_with_what_was_written() {
    let app = relay().await;
    let (_, agent_token) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let mut agent = Ws::agent(&app, &agent_token, 10).await;
    let ask = |question: &'static str| {
        let (base, token) = (app.base.clone(), web.clone());
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(token)
                .json(&json!({ "model": "clawrelay", "user": "ann",
                               "messages": [{ "role": "user", "content": question }] }))
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        })
    };

    let asked = ask("write me an essay");
    let pushed = next_event(&mut agent, "message").await;
    let r = agent
        .request(
            "reply.delta",
            json!({ "conversationId": pushed["conversationId"], "replyId": "e1", "text": "Essays are" }),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    app.post(&stop_path(&pushed), &web, json!({})).await.ok();
    let (status, body) = asked.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"], "Essays are",
        "{body}"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");

    let asked = ask("never mind");
    let pushed = next_event(&mut agent, "message").await;
    let stopped = app.post(&stop_path(&pushed), &web, json!({})).await.ok();
    assert_eq!(stopped["message"], Value::Null);
    let (status, body) = asked.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "", "{body}");
}
