//! The admin console's login (`/admin/login`, `/admin/session`,
//! `/admin/session/refresh`, `/admin/logout`), its cookie on the admin API
//! (CSRF, cross-site, logout, expiry, off by config), and the overview. The
//! page itself is driven in a real browser by `e2e/console/run.sh`.

use super::helpers::*;
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

/// Logs in with `token`; answers the reply and, on success, the cookie
/// (`name=value`) and the CSRF token.
async fn login(app: &TestApp, token: &str) -> (Reply, String, String) {
    let r = app
        .request(
            Method::POST,
            "/admin/login",
            None,
            Some(json!({ "token": token })),
        )
        .await;
    if r.status != 200 {
        return (r, String::new(), String::new());
    }
    let cookie = set_cookie_of(&r).split(';').next().unwrap().to_owned();
    let csrf = r.body["csrfToken"].as_str().unwrap().to_owned();
    (r, cookie, csrf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_logs_in_and_the_cookie_is_the_admins_with_its_csrf_token() {
    let app = spawn_app().await;
    let (_, agent) = app.create_client("agent").await;

    // Wrong tokens, and tokens that are not the admin's, open nothing.
    for token in ["not-the-token", agent.as_str(), ""] {
        let (r, _, _) = login(&app, token).await;
        assert_eq!(r.status, 401, "{token}: {}", r.body);
        assert!(r.headers.get("set-cookie").is_none());
    }
    let (r, cookie, csrf) = login(&app, ADMIN).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let set = set_cookie_of(&r);
    assert!(set.starts_with("clawrelay_console=cns_"), "{set}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=1800"] {
        assert!(set.contains(flag), "{flag} missing: {set}");
    }
    assert!(!set.contains("Secure"), "{set}");
    assert!(
        !set.contains(ADMIN),
        "the admin token itself is in the cookie"
    );
    assert!(r.body.get("token").is_none(), "{}", r.body);
    let expires = r.body["expiresAt"].as_i64().unwrap();
    let left = r.body["expiresIn"].as_i64().unwrap();
    assert!((29 * 60_000..=30 * 60_000).contains(&left), "{}", r.body);
    let now = chrono_now_ms();
    assert!((now + 29 * 60_000..=now + 31 * 60_000).contains(&expires));

    // Reads with the cookie; GET /admin/session gives a reloaded page its
    // CSRF token.
    let r = with_cookie(&app, Method::GET, "/clients", &cookie, &[], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = with_cookie(&app, Method::GET, "/admin/session", &cookie, &[], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["csrfToken"], csrf.as_str());

    // Changes need the CSRF token, and nothing cross-site is taken.
    let body = Some(json!({ "name": "from-console" }));
    let r = with_cookie(&app, Method::POST, "/clients", &cookie, &[], body.clone()).await;
    assert_eq!((r.status.as_u16(), r.error_code()), (403, "forbidden"));
    let wrong = [("x-csrf-token", "0123456789abcdef0123456789abcdef")];
    let r = with_cookie(
        &app,
        Method::POST,
        "/clients",
        &cookie,
        &wrong,
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 403);
    let cross = [
        ("x-csrf-token", csrf.as_str()),
        ("sec-fetch-site", "cross-site"),
    ];
    let r = with_cookie(
        &app,
        Method::POST,
        "/clients",
        &cookie,
        &cross,
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = with_cookie(&app, Method::GET, "/clients", &cookie, &cross[1..], None).await;
    assert_eq!(r.status, 403, "a cross-site read with the cookie");
    let names = |r: &Reply| -> Vec<String> {
        r.body["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&app.get("/clients", ADMIN).await), ["agent"]);
    let good = [("x-csrf-token", csrf.as_str())];
    let r = with_cookie(&app, Method::POST, "/clients", &cookie, &good, body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The admin token's callers are unchanged.
    assert_eq!(app.get("/clients", ADMIN).await.status, 200);

    // A chat session's cookie beside the console's: the console's is the
    // one meant when its CSRF token comes along.
    let (app_id, _) = app.create_app("web").await;
    app.post(
        "/accounts",
        ADMIN,
        json!({ "appId": app_id, "name": "ann", "password": "ann-password" }),
    )
    .await;
    let r = app
        .request(
            Method::POST,
            "/login",
            None,
            Some(json!({ "name": "ann", "password": "ann-password" })),
        )
        .await;
    let chat = set_cookie_of(&r).split(';').next().unwrap().to_owned();
    let both = format!("{chat}; {cookie}");
    let r = with_cookie(&app, Method::GET, "/clients", &both, &good, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = with_cookie(&app, Method::GET, "/session", &both, &[], None).await;
    assert_eq!(r.body["userId"], "ann", "{}", r.body);
    // A console page reloaded there has no CSRF token yet: its own
    // endpoint reads its own cookie.
    let r = with_cookie(&app, Method::GET, "/admin/session", &both, &[], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["csrfToken"], csrf.as_str());
    // The console's cookie says nothing for the user side.
    let r = with_cookie(&app, Method::GET, "/session", &cookie, &[], None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    // Its token is no bearer token.
    let token = cookie.trim_start_matches("clawrelay_console=");
    let r = app
        .request(Method::GET, "/clients", Some(token), None)
        .await;
    assert_eq!(r.status, 401, "{}", r.body);

    // Logout: the cookie is cleared and worth nothing after.
    let r = with_cookie(&app, Method::POST, "/admin/logout", &cookie, &[], None).await;
    assert_eq!(r.status, 403, "logout is a change: it needs the CSRF token");
    let r = with_cookie(&app, Method::POST, "/admin/logout", &cookie, &good, None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(set_cookie_of(&r).contains("Max-Age=0"));
    let r = with_cookie(&app, Method::GET, "/clients", &cookie, &[], None).await;
    assert_eq!(r.status, 401);
    let r = with_cookie(&app, Method::GET, "/admin/session", &cookie, &[], None).await;
    assert_eq!(r.status, 401);
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_login_lasts_its_minutes_and_a_refresh_moves_them() {
    let app = spawn_with(|c| c.console.session_minutes = 1).await;
    let (r, cookie, csrf) = login(&app, ADMIN).await;
    assert!(set_cookie_of(&r).contains("Max-Age=60"));
    let first = r.body["expiresAt"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let good = [("x-csrf-token", csrf.as_str())];
    let r = with_cookie(
        &app,
        Method::POST,
        "/admin/session/refresh",
        &cookie,
        &good,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["expiresAt"].as_i64().unwrap() > first);
    assert!(set_cookie_of(&r).contains("Max-Age=60"));
    // The console's own endpoints read the cookie, not a bearer token.
    let r = app
        .request(Method::GET, "/admin/session", Some(ADMIN), None)
        .await;
    assert_eq!(r.status, 403);
    // A cookie that never was a console login is refused.
    let forged = "clawrelay_console=cns_0193f0c2a1b27c4d9e8f7a6b5c4d3e2f.00";
    let r = with_cookie(&app, Method::GET, "/clients", forged, &[], None).await;
    assert_eq!(r.status, 401);
    let admin_in_cookie = format!("clawrelay_console={ADMIN}");
    let r = with_cookie(&app, Method::GET, "/clients", &admin_in_cookie, &[], None).await;
    assert_eq!(r.status, 401, "the admin token itself is no console login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_is_secure_behind_https_or_when_configured() {
    let app = spawn_with(|c| c.server.trusted_proxies = vec!["127.0.0.1".into()]).await;
    let over_https = app
        .request_with(
            Method::POST,
            "/admin/login",
            None,
            Some(json!({ "token": ADMIN })),
            &[("x-forwarded-proto", "https")],
        )
        .await;
    assert_eq!(over_https.status, 200);
    assert!(set_cookie_of(&over_https).ends_with("; Secure"));
    let (plain, _, _) = login(&app, ADMIN).await;
    assert!(!set_cookie_of(&plain).contains("Secure"));
    let app = spawn_with(|c| c.console.secure_cookie = true).await;
    let (r, _, _) = login(&app, ADMIN).await;
    assert!(set_cookie_of(&r).ends_with("; Secure"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_console_logins_are_limited_like_the_others() {
    let app = spawn_with(|c| c.rate_limits.failed_auth_per_min = 3).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(login(&app, "guess").await.0.status.as_u16());
    }
    assert_eq!(&statuses[..3], [401, 401, 401], "{statuses:?}");
    assert_eq!(statuses[5], 429, "{statuses:?}");
    // The right token still gets through.
    assert_eq!(login(&app, ADMIN).await.0.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_can_be_turned_off() {
    let app = spawn_app().await;
    let (_, cookie, _) = login(&app, ADMIN).await;
    drop(app);
    let app = spawn_with(|c| c.console.enabled = false).await;
    for path in ["/admin", "/admin/console.js", "/admin/js/ui.js"] {
        let r = app.request(Method::GET, path, None, None).await;
        assert_eq!(
            (r.status.as_u16(), r.error_code()),
            (404, "console_disabled")
        );
    }
    let (r, _, _) = login(&app, ADMIN).await;
    assert_eq!(r.status, 404);
    // A console cookie is no credential while the console is off.
    let r = with_cookie(&app, Method::GET, "/clients", &cookie, &[], None).await;
    assert_eq!(r.status, 401);
    // The admin API itself is unchanged.
    assert_eq!(app.get("/clients", ADMIN).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_under_the_strict_policy() {
    let app = spawn_app().await;
    let r = app
        .http
        .get(format!("{}/admin", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let headers = r.headers().clone();
    let csp = headers["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    for part in [
        "default-src 'none'",
        "script-src 'self';",
        "style-src 'self';",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ] {
        assert!(csp.contains(part), "{part} missing: {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    let page = r.text().await.unwrap();
    assert!(page.contains("/admin/console.js"));
    for module in [
        "ui",
        "overview",
        "agents",
        "apps",
        "conversations",
        "deliveries",
    ] {
        let r = app
            .request(Method::GET, &format!("/admin/js/{module}.js"), None, None)
            .await;
        assert_eq!(r.status, 200, "{module}");
    }
    let r = app
        .request(Method::GET, "/admin/js/nothing.js", None, None)
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_counts_agents_queues_dead_letters_and_messages() {
    let app = spawn_with(|c| {
        c.delivery.lease_secs = 1;
        c.delivery.max_lease_secs = 1;
        c.delivery.max_attempts = 1;
    })
    .await;
    let (agent_id, agent) = app.create_client("gateway").await;
    app.create_client("never-seen").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&agent, "").await;
    app.inbound(&web, "alice", "one").await;
    app.inbound(&web, "bob", "two").await;
    // Taken, not acked: each dies at the next claim after its lease.
    assert_eq!(app.poll(&agent, "").await.len(), 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.poll(&agent, "").await;
    app.inbound(&web, "carol", "three").await;

    let o = app.get("/admin/overview", ADMIN).await;
    assert_eq!(o.status, 200, "{}", o.body);
    let o = o.body;
    assert_eq!(o["deadLetters"], 2, "{o}");
    assert_eq!(
        (o["connected"].as_i64(), o["registered"].as_i64()),
        (Some(1), Some(1)),
        "{o}"
    );
    let agents = o["agents"].as_array().unwrap();
    let gateway = agents
        .iter()
        .find(|a| a["clientId"] == agent_id.as_str())
        .unwrap();
    assert_eq!(gateway["pending"], 1, "{o}");
    assert!(gateway["oldestPendingAt"].as_i64().is_some(), "{o}");
    let minutes = o["messagesPerMinute"].as_array().unwrap();
    assert_eq!(minutes.len(), 60);
    // This relay's counters (the process may have stored more in other
    // tests, never less).
    let total: u64 = minutes.iter().map(|n| n.as_u64().unwrap()).sum();
    assert!(total >= 3, "{o}");
    assert_eq!(o["version"], env!("CARGO_PKG_VERSION"));
    assert!(o["databaseBytes"].as_u64().unwrap() > 0, "{o}");
    // The admin's only.
    assert_eq!(app.get("/admin/overview", &agent).await.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resetting_the_admin_token_ends_the_console_logins() {
    let app = spawn_with(|c| c.auth.cache_ttl_secs = 1).await;
    let (_, cookie, _) = login(&app, ADMIN).await;
    let r = with_cookie(&app, Method::GET, "/clients", &cookie, &[], None).await;
    assert_eq!(r.status, 200);
    // Other commands leave it alone.
    app.cli(&["client", "list"]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = with_cookie(&app, Method::GET, "/clients", &cookie, &[], None).await;
    assert_eq!(r.status, 200);
    app.cli(&["admin-token", "reset"]);
    // The running relay sees it when its cached verification ages out.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = with_cookie(&app, Method::GET, "/clients", &cookie, &[], None).await;
    assert_eq!(r.status, 401, "{}", r.body);
}
