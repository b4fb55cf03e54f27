//! Prometheus metrics: what happened shows up, on the main port with the
//! admin token and on a separate listener without one.
//!
//! Counters are process-wide and tests run in parallel, so counter checks
//! compare two scrapes with ≥; per-client gauges are exact.

use crate::helpers::*;
use reqwest::Method;

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(app: &TestApp) -> String {
    let res = app
        .http
        .get(format!("{}/metrics", app.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    res.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_relay_does_shows_in_its_metrics() {
    let app = spawn_app().await;
    let (client_id, agent) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&agent, "").await;
    let before = scrape(&app).await;

    for u in ["a", "b", "c"] {
        app.inbound(&web, u, "hi").await;
    }
    let queued = scrape(&app).await;
    assert_eq!(
        value(
            &queued,
            &format!("clawrelay_queue_depth{{client=\"{client_id}\"}}")
        ),
        3.0
    );
    let m = app.poll(&agent, "?max=10").await;
    app.send(&agent, &m[0], "one").await;
    app.ack(&agent, &[&m[1], &m[2]]).await;
    let after = scrape(&app).await;

    let grew = |series: &str, by: f64| {
        let (a, b) = (value(&before, series), value(&after, series));
        assert!(b - a >= by, "{series}: {a} -> {b}");
    };
    grew("clawrelay_messages_total{direction=\"inbound\"}", 3.0);
    grew("clawrelay_messages_total{direction=\"outbound\"}", 1.0);
    grew("clawrelay_deliveries_claimed_total", 3.0);
    grew("clawrelay_deliveries_acked_total", 3.0);
    assert_eq!(
        value(
            &after,
            &format!("clawrelay_queue_depth{{client=\"{client_id}\"}}")
        ),
        0.0
    );
    assert!(after.contains("clawrelay_http_request_duration_seconds_bucket{method=\"POST\",route=\"/inbound\",status=\"200\""));
    assert!(after.contains("clawrelay_db_commit_seconds_count{durability=\"full\"}"));
    if app.on_sqlite() {
        // Each durable commit waited for a sync of the log.
        grew("clawrelay_db_log_sync_seconds_count", 3.0);
    }
    assert!(after.contains("clawrelay_db_batch_operations_bucket"));
    assert!(after.contains("clawrelay_connected_agents"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_metrics_listener_needs_no_token() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = spawn_with(|c| c.metrics.bind = format!("127.0.0.1:{port}")).await;
    let body = eventually("the metrics listener", || async {
        let r = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .ok()?;
        (r.status() == 200).then_some(r)
    })
    .await
    .text()
    .await
    .unwrap();
    assert!(body.contains("clawrelay_active_conversations"));
    // On the main port it still needs the admin token.
    assert_eq!(
        app.request(Method::GET, "/metrics", None, None)
            .await
            .status,
        401
    );
}
