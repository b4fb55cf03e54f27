//! A conversation idle longer than ttl_secs expires; the next message opens a
//! new one and the old one stays readable.

use crate::helpers::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_ttl_the_next_message_opens_a_new_conversation() {
    let app = spawn_with(|c| c.conversations.ttl_secs = 1).await;
    let (_, agent) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&agent, "").await;

    let old = app.inbound(&web, "alice", "before").await;
    let same = app.inbound(&web, "alice", "still before").await;
    assert_eq!(same["conversationId"], old["conversationId"]);

    tokio::time::sleep(Duration::from_millis(1300)).await;
    let new = app.inbound(&web, "alice", "after").await;
    assert_ne!(new["conversationId"], old["conversationId"]);

    let old_id = old["conversationId"].as_str().unwrap();
    let expired = app.get("/conversations?state=expired", ADMIN).await.ok();
    let expired = expired["conversations"].as_array().unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["id"], old_id);
    assert!(expired[0]["expiredAt"].is_i64());
    let active = app.get("/conversations?state=active", ADMIN).await.ok();
    assert_eq!(active["conversations"][0]["id"], new["conversationId"]);

    let history = app
        .get(&format!("/conversations/{old_id}"), ADMIN)
        .await
        .ok();
    assert_eq!(history["state"], "expired");
    assert_eq!(history["messages"].as_array().unwrap().len(), 2);
}
