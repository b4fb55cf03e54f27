//! A delivery that is never acked dies after max_attempts leases; it stays
//! visible to admins and can be requeued. The conversation moves on.

use crate::helpers::*;
use serde_json::Value;

async fn next_delivery(app: &TestApp, token: &str) -> Value {
    eventually("a delivery", || async {
        app.poll(token, "?wait=2").await.into_iter().next()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_deliveries_die_after_max_attempts_and_can_be_requeued() {
    let app = spawn_with(|c| {
        c.delivery.lease_secs = 1;
        c.delivery.max_attempts = 2;
    })
    .await;
    let (_, agent) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&agent, "").await;
    let first = app.inbound(&web, "alice", "poison").await;
    let second = app.inbound(&web, "alice", "after the poison").await;

    let d1 = next_delivery(&app, &agent).await;
    assert_eq!(
        (d1["id"].clone(), d1["attempt"].clone()),
        (first["id"].clone(), 1.into())
    );
    let d2 = next_delivery(&app, &agent).await;
    assert_eq!(
        (d2["id"].clone(), d2["attempt"].clone()),
        (first["id"].clone(), 2.into())
    );

    // Third time round the first message is dead and the second one flows.
    let d3 = next_delivery(&app, &agent).await;
    assert_eq!(
        (d3["id"].clone(), d3["attempt"].clone()),
        (second["id"].clone(), 1.into())
    );

    let dead = app.get("/deliveries?state=dead", ADMIN).await.ok();
    let dead = dead["deliveries"].as_array().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["messageId"], first["id"]);
    assert_eq!(dead[0]["attempts"], 2);
    assert_eq!(dead[0]["message"]["text"], "poison");

    let id = first["id"].as_str().unwrap();
    app.post(&format!("/deliveries/{id}/requeue"), ADMIN, Value::Null)
        .await
        .ok();
    let again = app
        .post(&format!("/deliveries/{id}/requeue"), ADMIN, Value::Null)
        .await;
    assert_eq!(
        (again.status.as_u16(), again.error_code()),
        (409, "delivery_not_dead")
    );
    assert!(
        app.get("/deliveries?state=dead", ADMIN).await.ok()["deliveries"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // The requeued message waits behind the one in flight, then comes with a fresh count.
    app.send(&agent, &d3, "answer to the second").await;
    let d4 = next_delivery(&app, &agent).await;
    assert_eq!(
        (d4["id"].clone(), d4["attempt"].clone()),
        (first["id"].clone(), 1.into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeueing_an_unknown_message_is_404() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/deliveries/msg_0123456789abcdef0123456789abcdef/requeue",
            ADMIN,
            Value::Null,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (404, "message_not_found")
    );
}
