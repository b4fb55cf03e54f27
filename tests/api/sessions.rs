//! User sessions and built-in accounts: a session speaks for its user only,
//! ends with logout, expiry, its app or its account; a login's cookie is
//! HttpOnly and SameSite=Strict and needs the CSRF token for changes; logins
//! are throttled; secrets are stored only as argon2id hashes.

use crate::helpers::*;
use crate::ws_client::{Sse, Ws};
use reqwest::Method;
use serde_json::{json, Value};

/// Creates an account with `password` through the CLI.
fn account(app: &TestApp, app_id: &str, name: &str, password: &str) {
    let (ok, out, err) = app.cli_with_stdin(
        &[
            "user",
            "create",
            "--app",
            app_id,
            "--name",
            name,
            "--password-stdin",
        ],
        &format!("{password}\n"),
    );
    assert!(ok, "user create: {err}");
    assert!(
        !out.contains(password),
        "the CLI printed the password it was given"
    );
}

/// A login attempt's answer.
async fn try_login(app: &TestApp, name: &str, password: &str) -> Reply {
    app.request(
        Method::POST,
        "/login",
        None,
        Some(json!({ "name": name, "password": password })),
    )
    .await
}

/// Waits until the session behind `cookie` no longer works.
async fn ended(app: &TestApp, cookie: &str, what: &str) {
    eventually(what, || async {
        let r = with_cookie(app, Method::GET, "/session", cookie, &[], None).await;
        (r.status == 401).then_some(())
    })
    .await;
}

/// A login: (cookie header value for later requests, body, Set-Cookie).
async fn login(app: &TestApp, name: &str, password: &str) -> (String, Value, String) {
    let r = try_login(app, name, password).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let set_cookie = set_cookie_of(&r);
    let pair = set_cookie.split(';').next().unwrap().to_owned();
    (pair, r.body, set_cookie)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_speaks_and_reads_for_its_own_user_only() {
    let app = spawn_app().await;
    let (_, agent) = app.create_client("agent").await;
    let (app_id, web) = app.create_app("web").await;
    let (_, other) = app.create_app("other").await;
    app.poll(&agent, "").await;
    // alice and bob of `web`, and another alice of `other`.
    let bob_msg = app.inbound(&web, "bob", "bob's secret").await;
    let other_alice = app.inbound(&other, "alice", "other app's alice").await;
    let (alice, opened) = app.open_session(&web, "alice").await;
    assert_eq!(opened["userId"], "alice");
    assert_eq!(opened["appId"], app_id.as_str());
    assert!(opened["expiresAt"].as_i64().unwrap() > 0);

    // Posting: as alice without `from`, never as anyone else.
    let mine = app
        .post("/inbound", &alice, json!({ "text": "hi from alice" }))
        .await
        .ok();
    assert_eq!(mine["from"], "alice");
    assert_eq!(mine["appId"], app_id.as_str());
    let r = app
        .post(
            "/inbound",
            &alice,
            json!({ "from": "bob", "text": "as bob" }),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);

    // Replies to alice and to bob.
    let delivered = app.poll(&agent, "?wait=5").await;
    for m in &delivered {
        app.send(
            &agent,
            m,
            &format!("reply to {}", m["from"].as_str().unwrap()),
        )
        .await;
    }

    // Reading: her conversations only.
    let outbox = app.get("/outbox", &alice).await.ok();
    let texts: Vec<&str> = outbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["reply to alice"]);
    let path = |m: &Value| format!("/conversations/{}", m["conversationId"].as_str().unwrap());
    assert_eq!(app.get(&path(&mine), &alice).await.status, 200);
    assert_eq!(app.get(&path(&bob_msg), &alice).await.status, 404);
    assert_eq!(app.get(&path(&other_alice), &alice).await.status, 404);
    let r = app
        .get(
            &format!(
                "/events?conversationId={}",
                bob_msg["conversationId"].as_str().unwrap()
            ),
            &alice,
        )
        .await;
    assert_eq!(r.status, 404);

    // Her stream, over SSE and WebSocket: her messages, her live events.
    let mut sse = Sse::open(&app, &alice, "?after=0", None).await;
    let first = sse.event().await;
    let second = sse.event().await;
    assert_eq!(first.data["message"]["text"], "hi from alice");
    assert_eq!(second.data["message"]["text"], "reply to alice");
    let (mut ws, hello) = Ws::app(&app, &alice, Some("0")).await;
    assert_eq!(hello["userId"], "alice");
    for want in ["hi from alice", "reply to alice"] {
        let e = ws.event().await;
        assert_eq!(e["payload"]["message"]["text"], want, "{e}");
    }
    // A delta to bob's conversation, then one to alice's: she sees hers only.
    let mut agent_ws = Ws::agent(&app, &agent, 10).await;
    app.inbound(&web, "bob", "bob again").await;
    let again = app
        .post("/inbound", &alice, json!({ "text": "alice again" }))
        .await
        .ok();
    let bob_conv = bob_msg["conversationId"].clone();
    for (conv, text) in [
        (&bob_conv, "for bob"),
        (&again["conversationId"], "for alice"),
    ] {
        let r = agent_ws
            .request(
                "reply.delta",
                json!({"conversationId": conv, "replyId": "r1", "text": text}),
            )
            .await;
        assert_eq!(r["ok"], true, "{r}");
    }
    let e = sse.event().await;
    assert_eq!(e.data["message"]["text"], "alice again");
    let e = sse.event().await;
    assert_eq!(
        (e.event.as_str(), &e.data["text"]),
        ("reply.delta", &json!("for alice"))
    );
    let e = ws.event().await;
    assert_eq!(e["payload"]["message"]["text"], "alice again");
    let e = ws.event().await;
    assert_eq!(e["event"], "reply.delta");
    assert_eq!(e["payload"]["text"], "for alice");
    assert!(ws.quiet_for(300).await);
    // Over the socket, too, she posts as herself only.
    let r = ws.request("inbound", json!({"text": "via socket"})).await;
    assert_eq!(r["payload"]["message"]["from"], "alice", "{r}");
    let r = ws
        .request("inbound", json!({"from": "bob", "text": "as bob"}))
        .await;
    assert_eq!(r["error"]["code"], "forbidden", "{r}");

    // Sessions take an app token (none: 401, also for the public app); a
    // bad user id or lifetime is a 422.
    let r = app
        .request(
            Method::POST,
            "/sessions",
            None,
            Some(json!({ "userId": "x" })),
        )
        .await;
    assert_eq!(r.status, 401);
    let r = app
        .post("/sessions", &web, json!({ "userId": "", "ttlSecs": 60 }))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (422, "invalid_user_id")
    );
    let r = app
        .post(
            "/sessions",
            &web,
            json!({ "userId": "x", "ttlSecs": 100_000_000u64 }),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.error_code()), (422, "invalid_ttl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_with_its_expiry_logout_or_app_and_its_streams_close() {
    let app = spawn_app().await;
    let (app_id, web) = app.create_app("web").await;

    // Expiry, and a refresh that moves it.
    let short = app
        .post(
            "/sessions",
            &web,
            json!({ "userId": "alice", "ttlSecs": 2 }),
        )
        .await
        .ok();
    let short_token = short["token"].as_str().unwrap();
    let first = short["expiresAt"].as_i64().unwrap();
    let refreshed = app
        .post("/sessions/refresh", short_token, json!({ "ttlSecs": 3 }))
        .await
        .ok();
    assert!(refreshed["expiresAt"].as_i64().unwrap() > first);
    assert_eq!(refreshed["csrfToken"], Value::Null);
    assert_eq!(app.get("/session", short_token).await.status, 200);
    let mut expiring = Sse::open(&app, short_token, "", None).await;
    eventually("the session expires", || async {
        (app.get("/session", short_token).await.status == 401).then_some(())
    })
    .await;
    let r = app.post("/sessions/refresh", short_token, json!({})).await;
    assert_eq!(r.status, 401);
    assert!(expiring.ended().await, "the stream outlived the session");

    // Logout: the token stops working, the open stream closes.
    let (token, _) = app.open_session(&web, "bob").await;
    let mut sse = Sse::open(&app, &token, "", None).await;
    let r = app
        .request(Method::POST, "/logout", Some(&token), None)
        .await;
    assert_eq!(r.status, 204);
    assert!(sse.ended().await, "the stream outlived the logout");
    assert_eq!(app.get("/outbox", &token).await.status, 401);

    // Revoking the app ends its sessions and their streams.
    let (token, _) = app.open_session(&web, "carol").await;
    let mut sse = Sse::open(&app, &token, "", None).await;
    let r = app
        .request(
            Method::DELETE,
            &format!("/apps/{app_id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    assert!(sse.ended().await, "the stream outlived its app");
    let r = app
        .post("/inbound", &token, json!({ "text": "still?" }))
        .await;
    assert_eq!(r.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_sets_a_strict_http_only_cookie_and_changes_need_the_csrf_token() {
    let app = spawn_with(|c| c.server.trusted_proxies = vec!["127.0.0.1".into()]).await;
    let (app_id, _) = app.create_app("web").await;
    account(&app, &app_id, "alice", "correct horse battery");

    let r = try_login(&app, "alice", "wrong password").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["message"], "wrong name or password");
    let r = try_login(&app, "nobody", "correct horse battery").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["message"], "wrong name or password");

    let (cookie, body, set_cookie) = login(&app, "alice", "correct horse battery").await;
    assert!(cookie.starts_with("clawrelay_session=ses_"), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=3600"] {
        assert!(
            set_cookie.contains(attribute),
            "{set_cookie} lacks {attribute}"
        );
    }
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    assert_eq!(body["userId"], "alice");
    assert!(
        body.get("token").is_none(),
        "the token is in the body: {body}"
    );
    let csrf = body["csrfToken"].as_str().unwrap().to_owned();

    // Reads need only the cookie; GET /session gives the CSRF token again.
    let me = with_cookie(&app, Method::GET, "/session", &cookie, &[], None)
        .await
        .ok();
    assert_eq!(me["csrfToken"], csrf.as_str());
    assert_eq!(
        with_cookie(&app, Method::GET, "/outbox", &cookie, &[], None)
            .await
            .status,
        200
    );
    // A change needs the CSRF token; a cross-site request is refused.
    let post = json!({ "text": "hello" });
    for headers in [
        vec![],
        vec![("x-csrf-token", "0123456789abcdef0123456789abcdef")],
        vec![
            ("x-csrf-token", csrf.as_str()),
            ("sec-fetch-site", "cross-site"),
        ],
    ] {
        let r = with_cookie(
            &app,
            Method::POST,
            "/inbound",
            &cookie,
            &headers,
            Some(post.clone()),
        )
        .await;
        assert_eq!(r.status, 403, "{headers:?}: {}", r.body);
    }
    let sent = with_cookie(
        &app,
        Method::POST,
        "/inbound",
        &cookie,
        &[("x-csrf-token", &csrf), ("sec-fetch-site", "same-origin")],
        Some(post),
    )
    .await
    .ok();
    assert_eq!(sent["from"], "alice");
    // A login cookie cannot reach admin or agent routes.
    for path in ["/clients", "/poll", "/deliveries"] {
        let r = with_cookie(&app, Method::GET, path, &cookie, &[], None).await;
        assert_eq!(r.status, 403, "{path}: {}", r.body);
    }

    // Over https (a trusted proxy says so), the cookie is Secure.
    let body = json!({"name": "alice", "password": "correct horse battery"});
    let headers = [("x-forwarded-proto", "https")];
    let r = app
        .request_with(Method::POST, "/login", None, Some(body), &headers)
        .await;
    assert!(set_cookie_of(&r).contains("; Secure"));

    // Logout clears the cookie and ends the session.
    let csrf_header = [("x-csrf-token", csrf.as_str())];
    let r = with_cookie(&app, Method::POST, "/logout", &cookie, &csrf_header, None).await;
    assert_eq!(r.status, 204);
    assert!(set_cookie_of(&r).contains("Max-Age=0"));
    let r = with_cookie(&app, Method::GET, "/session", &cookie, &[], None).await;
    assert_eq!(r.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_throttled_by_address_and_account() {
    let app = spawn_with(|c| c.rate_limits.failed_auth_per_min = 3).await;
    let (app_id, _) = app.create_app("web").await;
    account(&app, &app_id, "alice", "correct horse battery");
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = try_login(&app, "alice", "guess guess").await;
        statuses.push(r.status.as_u16());
    }
    // Over the limit (3 a minute), failures are answered 429.
    assert_eq!(&statuses[..3], [401, 401, 401], "{statuses:?}");
    assert_eq!(statuses[5], 429, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| [401, 429].contains(s)),
        "{statuses:?}"
    );
    // The right password still gets through (one at a time).
    let r = try_login(&app, "alice", "correct horse battery").await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_managed_by_the_cli_and_their_sessions_end_with_them() {
    let app = spawn_app().await;
    let (app_id, _) = app.create_app("web").await;
    // A generated password, printed once.
    let created: Value =
        serde_json::from_str(&app.cli(&["user", "create", "--app", &app_id, "--name", "dora"]))
            .unwrap();
    let password = created["password"].as_str().unwrap().to_owned();
    assert!(password.len() >= 16);
    let (cookie, _, _) = login(&app, "dora", &password).await;
    // The name is taken; a short password is refused; an unknown app too.
    let (ok, _, err) = app.cli_with_stdin(
        &[
            "user",
            "create",
            "--app",
            &app_id,
            "--name",
            "dora",
            "--password-stdin",
        ],
        "another password\n",
    );
    assert!(
        !ok && err.contains("already an account named `dora`"),
        "{err}"
    );
    let (ok, _, err) = app.cli_with_stdin(
        &[
            "user",
            "create",
            "--app",
            &app_id,
            "--name",
            "eve",
            "--password-stdin",
        ],
        "short\n",
    );
    assert!(!ok && err.contains("8 characters"), "{err}");
    let listed: Value = serde_json::from_str(&app.cli(&["user", "list"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["name"], "dora");
    assert!(!listed.to_string().contains("argon2"), "{listed}");

    // Disabling ends the running session (through the CLI: another process).
    app.cli(&["user", "disable", "dora"]);
    ended(&app, &cookie, "the disabled account's session ends").await;
    let r = try_login(&app, "dora", &password).await;
    assert_eq!(r.status, 401);
    app.cli(&["user", "enable", "dora"]);
    let (cookie, _, _) = login(&app, "dora", &password).await;

    // A new password: the old one and the old session stop working.
    let (ok, _, err) = app.cli_with_stdin(
        &["user", "reset-password", "dora", "--password-stdin"],
        "a brand new password\n",
    );
    assert!(ok, "{err}");
    ended(&app, &cookie, "the old session ends").await;
    let r = try_login(&app, "dora", &password).await;
    assert_eq!(r.status, 401);
    login(&app, "dora", "a brand new password").await;

    // Secrets at rest: argon2id hashes only, never the token or password.
    let (_, web) = app.create_app("web2").await;
    let (token, _) = app.open_session(&web, "frank").await;
    let hashes = app
        .texts("SELECT token_hash FROM sessions UNION ALL SELECT password_hash FROM accounts")
        .await;
    assert!(hashes.len() >= 4);
    assert!(
        hashes.iter().all(|h| h.starts_with("$argon2id$")),
        "{hashes:?}"
    );
    if !app.on_sqlite() {
        return;
    }
    let file = std::fs::read(&app.config.storage.path).unwrap();
    let wal = std::fs::read(app.config.storage.path.with_extension("db-wal")).unwrap_or_default();
    let secret = token.split_once('.').unwrap().1;
    for needle in [secret, "a brand new password", password.as_str()] {
        for bytes in [&file, &wal] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "a secret is in the database in clear"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_is_off_unless_configured() {
    let app = spawn_app().await;
    let body = json!({"name": "gus", "password": "long enough password"});
    let r = app
        .request(Method::POST, "/signup", None, Some(body.clone()))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (404, "signup_disabled")
    );

    let mut app = app;
    let (app_id, _) = app.create_app("web").await;
    app.config.webchat.signup_app = app_id.clone();
    app.restart().await;
    let r = app
        .request(Method::POST, "/signup", None, Some(body.clone()))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["userId"], "gus");
    assert_eq!(r.body["appId"], app_id.as_str());
    let r = app.request(Method::POST, "/signup", None, Some(body)).await;
    assert_eq!((r.status.as_u16(), r.error_code()), (409, "name_taken"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_page_is_served_only_when_enabled_with_a_strict_policy() {
    let app = spawn_app().await;
    let r = app.request(Method::GET, "/chat", None, None).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (404, "webchat_disabled")
    );

    let app = spawn_with(|c| {
        c.webchat.enabled = true;
        c.webchat.title = "<Acme>".into();
        c.webchat.frame_ancestors = vec!["https://www.example.com".into()];
    })
    .await;
    let res = app
        .http
        .get(format!("{}/chat", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(
        csp.contains("frame-ancestors https://www.example.com"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = res.text().await.unwrap();
    assert!(html.contains("<title>&lt;Acme&gt;</title>"), "{html}");
    assert!(!html.contains("<script>"), "inline script in the page");
    for (path, kind) in [
        ("/chat/chat.js", "text/javascript"),
        ("/chat/chat.css", "text/css"),
        ("/chat/favicon.svg", "image/svg+xml"),
    ] {
        let res = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
    }
    let res = app.http.get(format!("{}/", app.base)).send().await.unwrap();
    assert_eq!(res.url().path(), "/chat", "/ leads to the chat");
}
