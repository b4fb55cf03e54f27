//! Rate limits: 429 with Retry-After per app user, per agent, and per IP on
//! failed authentications; what is refused writes nothing.

use crate::helpers::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_over_their_rate_gets_429_with_retry_after() {
    let app = spawn_with(|c| {
        c.rate_limits.user_per_sec = 1;
        c.rate_limits.user_burst = 2;
    })
    .await;
    let (_, web) = app.create_app("web").await;
    app.inbound(&web, "chatty", "1").await;
    app.inbound(&web, "chatty", "2").await;
    let before = app.row_counts().await;
    let res = app
        .http
        .post(format!("{}/inbound", app.base))
        .bearer_auth(&web)
        .json(&json!({"from": "chatty", "text": "3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(app.row_counts().await, before);
    // Another user of the same app is not affected.
    app.inbound(&web, "quiet", "hello").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_over_its_rate_gets_429() {
    let app = spawn_with(|c| {
        c.rate_limits.agent_per_sec = 1;
        c.rate_limits.agent_burst = 1;
    })
    .await;
    let (_, agent) = app.create_client("agent").await;
    assert_eq!(app.get("/poll", &agent).await.status, 200);
    let r = app.get("/poll", &agent).await;
    assert_eq!((r.status.as_u16(), r.error_code()), (429, "rate_limited"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_keeps_failing_gets_429_but_its_valid_tokens_still_work() {
    let app = spawn_with(|c| c.rate_limits.failed_auth_per_min = 3).await;
    let (_, agent) = app.create_client("agent").await;
    let wrong = "cli_0123456789abcdef0123456789abcdef.nope";
    for _ in 0..3 {
        assert_eq!(app.get("/poll", wrong).await.status, 401);
    }
    // The fourth failure exhausts the bucket; from then on its failures get 429.
    app.get("/poll", wrong).await;
    let r = app.get("/poll", wrong).await;
    assert_eq!((r.status.as_u16(), r.error_code()), (429, "rate_limited"));
    // Another id from the same address, wrong too: blocked by the address.
    let r = app
        .get("/poll", "cli_fedcba9876543210fedcba9876543210.nope")
        .await;
    assert_eq!(r.status, 429);
    // A token that verifies is never refused for its neighbours' failures
    // (behind a proxy every client shares one address).
    let r = app.get("/poll?wait=0", &agent).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_count_per_forwarded_client_only_behind_a_trusted_proxy() {
    let app = spawn_with(|c| {
        c.rate_limits.failed_auth_per_min = 2;
        c.server.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    // Each request names a different id, so only the address can block.
    let wrong = |i: u32| format!("cli_{i:032x}.nope");
    let poll = |xff: &'static str, token: String| {
        let app = &app;
        async move {
            app.http
                .get(format!("{}/poll?wait=0", app.base))
                .bearer_auth(token)
                .header("X-Forwarded-For", xff)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for i in 0..4 {
        poll("198.51.100.1", wrong(i)).await;
    }
    assert_eq!(poll("198.51.100.1", wrong(10)).await, 429);
    // Another client behind the same proxy is not blocked.
    assert_eq!(poll("198.51.100.2", wrong(11)).await, 401);

    // Without trust, the header is ignored: the peer itself is counted.
    let app = spawn_with(|c| c.rate_limits.failed_auth_per_min = 2).await;
    for i in 0..4 {
        let _ = app
            .http
            .get(format!("{}/poll?wait=0", app.base))
            .bearer_auth(wrong(i))
            .header("X-Forwarded-For", format!("198.51.100.{i}"))
            .send()
            .await
            .unwrap();
    }
    let r = app.get("/poll?wait=0", &wrong(20)).await;
    assert_eq!(
        r.status, 429,
        "spoofed X-Forwarded-For must not dodge the limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_until_one_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    let app = spawn_with(|c| c.limits.max_connections = 2).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let request = b"GET /health HTTP/1.1\r\nHost: relay\r\n\r\n";

    // Two kept-alive connections, each proven accepted by an answer.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        c.write_all(request).await.unwrap();
        let mut buf = [0u8; 512];
        let n = c.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(c);
    }

    // A third waits: the relay does not accept it while both are open.
    let mut third = TcpStream::connect(&addr).await.unwrap();
    third
        .write_all(b"GET /health HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let early =
        tokio::time::timeout(std::time::Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "answered over the connection cap");

    // One closes; the third is served.
    drop(held.pop());
    let n = tokio::time::timeout(PATIENCE, third.read(&mut buf))
        .await
        .expect("served once a slot frees")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}
