//! The admin operations an operator's console needs, over HTTP and in the
//! CLI: built-in accounts (`/accounts`), and conversations, deliveries and
//! requeue from the command line.

use super::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

async fn login(app: &TestApp, name: &str, password: &str) -> Reply {
    app.request(
        Method::POST,
        "/login",
        None,
        Some(json!({ "name": name, "password": password })),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_managed_over_http() {
    let app = spawn_app().await;
    let (app_id, web) = app.create_app("web").await;

    // Created with a generated password, shown once; it logs in.
    let made = app
        .post(
            "/accounts",
            ADMIN,
            json!({ "appId": app_id, "name": "dora" }),
        )
        .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let password = made.body["password"]
        .as_str()
        .expect("a generated password")
        .to_owned();
    assert_eq!(made.body["name"], "dora");
    assert_eq!(made.body["appId"], app_id.as_str());
    assert_eq!(login(&app, "dora", &password).await.status, 200);
    // Given a password, none is shown.
    let given = app
        .post(
            "/accounts",
            ADMIN,
            json!({ "appId": app_id, "name": "eve", "password": "correct horse" }),
        )
        .await;
    assert_eq!(given.status, 201, "{:?}", given.body);
    assert!(given.body.get("password").is_none(), "{:?}", given.body);

    // The usual errors.
    let twice = app
        .post(
            "/accounts",
            ADMIN,
            json!({ "appId": app_id, "name": "dora" }),
        )
        .await;
    assert_eq!(
        (twice.status.as_u16(), twice.error_code()),
        (409, "name_taken")
    );
    let nowhere = app
        .post(
            "/accounts",
            ADMIN,
            json!({ "appId": "app_00000000000000000000000000000000", "name": "zed" }),
        )
        .await;
    assert_eq!(
        (nowhere.status.as_u16(), nowhere.error_code()),
        (404, "app_not_found")
    );
    let short = app
        .post(
            "/accounts",
            ADMIN,
            json!({ "appId": app_id, "name": "zed", "password": "short" }),
        )
        .await;
    assert_eq!(short.status, 422, "{:?}", short.body);
    let not_admin = app.get("/accounts", &web).await;
    assert_eq!(not_admin.status, 403, "{:?}", not_admin.body);

    // Listed by app, never with a password or its hash.
    let list = app
        .get(&format!("/accounts?appId={app_id}"), ADMIN)
        .await
        .ok();
    let names: Vec<&str> = list["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dora", "eve"]);
    assert!(!list.to_string().contains("password"), "{list}");

    // Disabled: no login; enabled again: login.
    let r = app
        .request(
            Method::PATCH,
            "/accounts/dora",
            Some(ADMIN),
            Some(json!({ "disabled": true })),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(login(&app, "dora", &password).await.status, 401);
    let r = app
        .request(
            Method::PATCH,
            "/accounts/dora",
            Some(ADMIN),
            Some(json!({ "disabled": false })),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(login(&app, "dora", &password).await.status, 200);
    let r = app
        .request(
            Method::PATCH,
            "/accounts/nobody",
            Some(ADMIN),
            Some(json!({ "disabled": true })),
        )
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);

    // A new password: given (not shown back), or generated (shown once).
    let set = app
        .post(
            "/accounts/dora/password",
            ADMIN,
            json!({ "password": "a new password" }),
        )
        .await
        .ok();
    assert!(set.get("password").is_none(), "{set}");
    assert_eq!(login(&app, "dora", &password).await.status, 401);
    assert_eq!(login(&app, "dora", "a new password").await.status, 200);
    let reset = app
        .request(Method::POST, "/accounts/dora/password", Some(ADMIN), None)
        .await
        .ok();
    let generated = reset["password"].as_str().expect("a generated password");
    assert_eq!(login(&app, "dora", generated).await.status, 200);
    assert_eq!(login(&app, "dora", "a new password").await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_conversations_and_deliveries_and_requeues_dead_letters() {
    let app = spawn_with(|c| {
        c.delivery.max_attempts = 1;
        c.delivery.lease_secs = 1;
    })
    .await;
    let (_, agent) = app.create_client("agent").await;
    let (app_id, web) = app.create_app("web").await;
    app.poll(&agent, "").await;
    let m = app.inbound(&web, "quinn", "please refund my order").await;
    let conversation = m["conversationId"].as_str().unwrap().to_owned();
    // Claimed and never answered: after its one lease it is dead.
    assert_eq!(app.poll(&agent, "").await.len(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(app.poll(&agent, "").await.is_empty());

    let listed: Value =
        serde_json::from_str(&app.cli(&["conversation", "list", "--user", "quinn"])).unwrap();
    let ids: Vec<&str> = listed["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [conversation.as_str()], "{listed}");
    let by_app: Value = serde_json::from_str(&app.cli(&[
        "conversation",
        "list",
        "--app",
        &app_id,
        "--state",
        "active",
    ]))
    .unwrap();
    assert_eq!(by_app["conversations"].as_array().unwrap().len(), 1);
    let shown: Value =
        serde_json::from_str(&app.cli(&["conversation", "show", &conversation])).unwrap();
    assert_eq!(shown["messages"][0]["text"], "please refund my order");

    let dead: Value =
        serde_json::from_str(&app.cli(&["delivery", "list", "--state", "dead"])).unwrap();
    assert_eq!(dead["deliveries"][0]["messageId"], m["id"], "{dead}");
    let out = app.cli(&["delivery", "requeue", m["id"].as_str().unwrap()]);
    assert!(out.contains("requeued"), "{out}");
    // The running relay hands it out again.
    let again = eventually("the requeued message to be claimable", || async {
        let got = app.poll(&agent, "").await;
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(again[0]["id"], m["id"]);

    // Bad flags say what they take.
    let (ok, _, err) = app.cli_with_stdin(&["delivery", "list", "--state", "gone"], "");
    assert!(
        !ok && err.contains("pending, leased, queued, acked, dead"),
        "{err}"
    );
    let (ok, _, err) = app.cli_with_stdin(&["conversation", "show", "nope"], "");
    assert!(!ok && err.contains("is not a conversation id"), "{err}");
}
