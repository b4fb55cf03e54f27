//! Every endpoint × no token, wrong token, and each role: missing or wrong
//! credentials are 401, a valid token of the wrong role is 403, the right role
//! gets through (2xx, or 404 for the unknown ids used here).

use crate::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    Admin,
    Client,
    App,
    /// A user session (of user "alice" of the app).
    User,
}

const CLIENT_ID: &str = "cli_0123456789abcdef0123456789abcdef";
const APP_ID: &str = "app_0123456789abcdef0123456789abcdef";
const CONV_ID: &str = "conv_0123456789abcdef0123456789abcdef";
const MSG_ID: &str = "msg_0123456789abcdef0123456789abcdef";
const HOOK_ID: &str = "wh_0123456789abcdef0123456789abcdef";

fn endpoints() -> Vec<(Method, String, Option<Value>, &'static [Role])> {
    use Role::*;
    vec![
        (
            Method::POST,
            "/clients".into(),
            Some(json!({"name": "x"})),
            &[Admin],
        ),
        (Method::GET, "/clients".into(), None, &[Admin]),
        (
            Method::DELETE,
            format!("/clients/{CLIENT_ID}"),
            None,
            &[Admin],
        ),
        (
            Method::POST,
            format!("/clients/{CLIENT_ID}/token"),
            None,
            &[Admin],
        ),
        (
            Method::POST,
            "/apps".into(),
            Some(json!({"name": "x"})),
            &[Admin],
        ),
        (Method::GET, "/apps".into(), None, &[Admin]),
        (Method::DELETE, format!("/apps/{APP_ID}"), None, &[Admin]),
        (
            Method::POST,
            format!("/apps/{APP_ID}/token"),
            None,
            &[Admin],
        ),
        (
            Method::POST,
            format!("/apps/{APP_ID}/webhooks"),
            Some(json!({"url": "https://93.184.216.34/"})),
            &[Admin],
        ),
        (
            Method::GET,
            format!("/apps/{APP_ID}/webhooks"),
            None,
            &[Admin],
        ),
        (Method::GET, format!("/webhooks/{HOOK_ID}"), None, &[Admin]),
        (
            Method::PATCH,
            format!("/webhooks/{HOOK_ID}"),
            Some(json!({"enabled": true})),
            &[Admin],
        ),
        (
            Method::DELETE,
            format!("/webhooks/{HOOK_ID}"),
            None,
            &[Admin],
        ),
        (
            Method::POST,
            format!("/webhooks/{HOOK_ID}/secret"),
            Some(json!({})),
            &[Admin],
        ),
        (
            Method::GET,
            format!("/webhooks/{HOOK_ID}/attempts"),
            None,
            &[Admin],
        ),
        (
            Method::POST,
            format!("/webhooks/{HOOK_ID}/replay"),
            Some(json!({"since": 0})),
            &[Admin],
        ),
        (
            Method::GET,
            "/conversations".into(),
            None,
            &[Admin, App, User],
        ),
        (
            Method::POST,
            "/conversations".into(),
            Some(json!({"appId": APP_ID, "userId": "alice"})),
            &[Admin, App, User],
        ),
        (Method::GET, "/deliveries?state=dead".into(), None, &[Admin]),
        (Method::GET, "/stats".into(), None, &[Admin]),
        (Method::GET, "/metrics".into(), None, &[Admin]),
        (
            Method::POST,
            format!("/deliveries/{MSG_ID}/requeue"),
            None,
            &[Admin],
        ),
        (
            Method::GET,
            format!("/conversations/{CONV_ID}"),
            None,
            &[Admin, Client, App, User],
        ),
        (
            Method::POST,
            "/attachments".into(),
            Some(json!({"a": "file"})),
            &[Client, App, User],
        ),
        (
            Method::GET,
            "/attachments/att_0123456789abcdef0123456789abcdef".into(),
            None,
            &[Admin, Client, App, User],
        ),
        (Method::GET, "/poll".into(), None, &[Client]),
        (
            Method::POST,
            "/send".into(),
            Some(json!({"to": "alice", "text": "x", "conversationId": CONV_ID})),
            &[Client],
        ),
        (
            Method::POST,
            "/ack".into(),
            Some(json!({"ids": [MSG_ID]})),
            &[Client],
        ),
        (
            Method::POST,
            "/renew".into(),
            Some(json!({"conversationId": CONV_ID})),
            &[Client],
        ),
        (
            Method::POST,
            "/inbound".into(),
            Some(json!({"from": "alice", "text": "x"})),
            &[App, User],
        ),
        (Method::GET, "/outbox".into(), None, &[App, User]),
        (
            Method::POST,
            "/sessions".into(),
            Some(json!({"userId": "alice"})),
            &[App],
        ),
        (Method::GET, "/session".into(), None, &[User]),
        (
            Method::POST,
            "/sessions/refresh".into(),
            Some(json!({})),
            &[User],
        ),
        // Last: it ends the user's session.
        (Method::POST, "/logout".into(), None, &[User]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_checks_credentials_and_role() {
    let app = spawn_app().await;
    let (client_id, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let user = app
        .post("/sessions", &web, json!({"userId": "alice"}))
        .await
        .ok()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrong_secret = format!("{client_id}.{}", "0".repeat(64));
    let wrong_session = format!("{}.{}", user.split_once('.').unwrap().0, "0".repeat(64));
    let tokens = [
        (Role::Admin, ADMIN.to_owned()),
        (Role::Client, client),
        (Role::App, web),
        (Role::User, user),
    ];

    for (method, path, body, allowed) in endpoints() {
        let none = app.request(method.clone(), &path, None, body.clone()).await;
        assert_eq!(
            none.status, 401,
            "{method} {path} without a token: {}",
            none.body
        );
        assert_eq!(none.error_code(), "unauthorized");
        for wrong in [
            "not-a-token",
            wrong_secret.as_str(),
            wrong_session.as_str(),
            "app_zz.zz",
            "ses_zz.zz",
        ] {
            let r = app
                .request(method.clone(), &path, Some(wrong), body.clone())
                .await;
            assert_eq!(
                r.status, 401,
                "{method} {path} with wrong token {wrong}: {}",
                r.body
            );
        }
        for (role, token) in &tokens {
            let r = app
                .request(method.clone(), &path, Some(token), body.clone())
                .await;
            if allowed.contains(role) {
                assert!(
                    r.status.is_success() || r.status == 404,
                    "{method} {path} as {role:?}: {} {}",
                    r.status,
                    r.body
                );
            } else {
                assert_eq!(r.status, 403, "{method} {path} as {role:?}: {}", r.body);
                assert_eq!(r.error_code(), "forbidden");
            }
        }
    }
}

/// An id given where its token belongs (the id alone, without the dot and
/// the secret part) gets a 401 that says what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_without_its_secret_part_is_told_so() {
    let app = spawn_app().await;
    let (client_id, _) = app.create_client("gateway").await;
    let (app_id, _) = app.create_app("web").await;
    for (id, path, kind) in [
        (&client_id, "/poll?wait=0", "client id"),
        (&app_id, "/outbox", "app id"),
    ] {
        let r = app.request(Method::GET, path, Some(id), None).await;
        assert_eq!(r.status, 401, "{id}");
        assert_eq!(r.body["error"]["code"], "unauthorized");
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(kind) && message.contains("without its secret part"),
            "{message}"
        );
    }
    // A wrong secret is still only "invalid token".
    let r = app
        .request(
            Method::GET,
            "/poll?wait=0",
            Some(&format!("{client_id}.wrong")),
            None,
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["message"], "invalid token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_needs_no_token() {
    let app = spawn_app().await;
    assert_eq!(
        app.request(Method::GET, "/health", None, None).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_principals_conversation_is_404() {
    let app = spawn_app().await;
    let (_, a) = app.create_client("a").await;
    let (_, b) = app.create_client("b").await;
    let (_, web) = app.create_app("web").await;
    let (_, other_web) = app.create_app("other").await;
    app.poll(&a, "").await;
    let m = app.inbound(&web, "alice", "secret").await;
    let path = format!("/conversations/{}", m["conversationId"].as_str().unwrap());
    assert_eq!(app.get(&path, &a).await.status, 200);
    assert_eq!(app.get(&path, &web).await.status, 200);
    assert_eq!(app.get(&path, &b).await.status, 404);
    assert_eq!(app.get(&path, &other_web).await.status, 404);
    // b cannot answer in a's conversation either.
    let r = app
        .post(
            "/send",
            &b,
            json!({"to": "alice", "text": "x", "conversationId": m["conversationId"]}),
        )
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_stored_only_as_argon2id_hashes() {
    let app = spawn_app().await;
    let (_, client) = app.create_client("a").await;
    let (_, web) = app.create_app("w").await;
    let hashes = app
        .texts("SELECT token_hash FROM clients UNION ALL SELECT token_hash FROM apps WHERE token_hash IS NOT NULL")
        .await;
    assert_eq!(hashes.len(), 2);
    assert!(hashes.iter().all(|h| h.starts_with("$argon2id$")));
    if !app.on_sqlite() {
        return;
    }
    let file = std::fs::read(&app.config.storage.path).unwrap();
    let wal = std::fs::read(app.config.storage.path.with_extension("db-wal")).unwrap_or_default();
    for secret in [&client, &web] {
        let secret_part = secret.split_once('.').unwrap().1.as_bytes();
        for bytes in [&file, &wal] {
            assert!(
                !bytes.windows(secret_part.len()).any(|w| w == secret_part),
                "a token is in the db in clear"
            );
        }
    }
}
