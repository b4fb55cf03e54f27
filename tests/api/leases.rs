//! Leases that follow the work: an agent's activity on a conversation
//! (typing, reply deltas, progress) or an explicit renewal keeps its claims
//! there alive, up to `[delivery] max_lease_secs` from the claim; a silent
//! agent still loses its claim when its lease ends; a renewal never revives
//! a delivery that was answered.

use super::helpers::*;
use super::ws_client::Ws;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A relay whose claims last 3 s, renewable up to `max_lease_secs`.
async fn relay(max_lease_secs: u64) -> TestApp {
    spawn_with(|c| {
        c.delivery.lease_secs = 3;
        c.delivery.max_lease_secs = max_lease_secs;
    })
    .await
}

/// A turn of 15 s (five leases) with progress every 2 s is delivered once
/// and answered once: the progress renews the claim each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_keeps_a_long_turn_with_its_agent() {
    let app = relay(60).await;
    let (_, agent_token) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let mut agent = Ws::agent(&app, &agent_token, 10).await;
    let m = app.inbound(&web, "alice", "a long job").await;
    let pushed = agent.event().await["payload"].clone();
    assert_eq!(pushed["id"], m["id"]);
    assert_eq!(pushed["attempt"], 1);
    let claimed_until = pushed["leaseUntil"].as_i64().expect("the claim's end");
    assert!(claimed_until > pushed["timestamp"].as_i64().unwrap());

    let started = Instant::now();
    let mut step = 0;
    while started.elapsed() < Duration::from_secs(15) {
        let r = agent
            .request(
                "progress",
                json!({ "conversationId": pushed["conversationId"], "kind": "tool_start",
                        "data": { "step": step } }),
            )
            .await;
        assert_eq!(r["ok"], true, "{r}");
        step += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let r = agent
        .request(
            "send",
            json!({ "conversationId": pushed["conversationId"], "to": "alice", "text": "done" }),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert!(
        agent.quiet_for(500).await,
        "the message was never pushed again while its turn ran"
    );
    let outbox = app.get("/outbox", &web).await.ok();
    let replies = outbox["messages"].as_array().unwrap();
    assert_eq!(replies.len(), 1, "answered once: {outbox}");
    let delivery = only_delivery(&app, &pushed).await;
    assert_eq!(delivery["state"], "acked");
    assert_eq!(delivery["attempts"], 1, "claimed once");
}

/// An agent that says nothing loses its claim when the lease ends: the
/// message is delivered again (attempt 2) about 3 s after the claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_loses_its_claim_on_time() {
    let app = relay(60).await;
    let (_, agent_token) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&agent_token, "").await;
    let m = app.inbound(&web, "bob", "hello?").await;
    let first = app.poll(&agent_token, "").await;
    let claimed = Instant::now();
    assert_eq!(first[0]["id"], m["id"]);
    let again = app.poll(&agent_token, "?wait=10").await;
    let after = claimed.elapsed();
    assert_eq!(again[0]["id"], m["id"]);
    assert_eq!(again[0]["attempt"], 2);
    assert!(
        after > Duration::from_millis(2500) && after < Duration::from_millis(5000),
        "delivered again {after:?} after the claim (lease 3 s)"
    );
}

/// Activity renews a claim only up to max_lease_secs from the claim: with
/// progress every second and a cap of 6 s, the message comes again at 6 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_end_at_max_lease_secs() {
    let app = relay(6).await;
    let (_, agent_token) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let mut agent = Ws::agent(&app, &agent_token, 10).await;
    let m = app.inbound(&web, "carol", "loop forever").await;
    let pushed = agent.event().await["payload"].clone();
    let claimed = Instant::now();
    assert_eq!(pushed["id"], m["id"]);
    let again = loop {
        assert!(
            claimed.elapsed() < Duration::from_secs(12),
            "not delivered again past the cap"
        );
        let r = agent
            .request(
                "typing",
                json!({ "conversationId": pushed["conversationId"] }),
            )
            .await;
        assert_eq!(r["ok"], true, "{r}");
        if !agent.quiet_for(1000).await {
            break agent.event().await["payload"].clone();
        }
    };
    let after = claimed.elapsed();
    assert_eq!(again["id"], m["id"]);
    assert_eq!(again["attempt"], 2);
    assert!(
        after > Duration::from_millis(5500) && after < Duration::from_millis(8000),
        "delivered again {after:?} after the claim (cap 6 s, lease 3 s)"
    );
}

/// An agent that works silently renews explicitly (`POST /renew`): its
/// claim outlives two leases; once answered, a renewal renews nothing (an
/// acked delivery is never revived); another agent's conversation is not
/// found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_renewal_keeps_a_silent_turn_and_never_revives() {
    let app = relay(60).await;
    let (_, agent_token) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&agent_token, "").await;
    let m = app.inbound(&web, "dave", "think hard").await;
    let claimed = app.poll(&agent_token, "").await;
    assert_eq!(claimed[0]["id"], m["id"]);
    let conversation = claimed[0]["conversationId"].clone();
    let renew = |conversation: Value| {
        let (app, token) = (&app, &agent_token);
        async move {
            app.post("/renew", token, json!({ "conversationId": conversation }))
                .await
        }
    };
    let mut until = claimed[0]["leaseUntil"].as_i64().unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(7) {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let r = renew(conversation.clone()).await.ok();
        assert_eq!(r["renewed"], 1, "{r}");
        let now = r["leaseUntil"].as_i64().unwrap();
        assert!(now > until, "the claim's end moves on");
        until = now;
        assert!(
            app.poll(&agent_token, "").await.is_empty(),
            "not due again while renewed"
        );
    }
    app.send(&agent_token, &claimed[0], "thought it through")
        .await;
    let r = renew(conversation.clone()).await.ok();
    assert_eq!(r["renewed"], 0, "an answered delivery is not renewed: {r}");
    assert!(r["leaseUntil"].is_null());
    assert_eq!(only_delivery(&app, &claimed[0]).await["state"], "acked");

    // Another agent holds no claim there: not found, as for /send.
    let (_, other_token) = app.create_client("other").await;
    let r = app
        .post(
            "/renew",
            &other_token,
            json!({ "conversationId": conversation }),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "conversation_not_found");
}

/// The one delivery of `message`'s conversation, as the admin lists it.
async fn only_delivery(app: &TestApp, message: &Value) -> Value {
    let list = app
        .get(
            &format!(
                "/deliveries?conversationId={}",
                message["conversationId"].as_str().unwrap()
            ),
            ADMIN,
        )
        .await
        .ok();
    let deliveries = list["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1, "{list}");
    deliveries[0].clone()
}
