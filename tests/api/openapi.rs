//! The OpenAPI document covers the whole HTTP API: every route the server
//! serves is documented, and every documented operation is served.

use crate::helpers::*;
use reqwest::Method;
use serde_json::Value;
use std::collections::BTreeSet;

/// Every route of the router (src/http). A new route goes here and into the
/// document; this test fails until both agree. (The web chat page, the
/// admin console's page and their assets, src/webchat and src/console, are
/// not API operations.)
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/stats"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("POST", "/clients"),
    ("GET", "/clients"),
    ("DELETE", "/clients/{id}"),
    ("POST", "/clients/{id}/token"),
    ("POST", "/apps"),
    ("GET", "/apps"),
    ("DELETE", "/apps/{id}"),
    ("POST", "/apps/{id}/token"),
    ("GET", "/deliveries"),
    ("POST", "/deliveries/{id}/requeue"),
    ("POST", "/apps/{id}/webhooks"),
    ("GET", "/apps/{id}/webhooks"),
    ("GET", "/webhooks/{id}"),
    ("PATCH", "/webhooks/{id}"),
    ("DELETE", "/webhooks/{id}"),
    ("POST", "/webhooks/{id}/secret"),
    ("GET", "/webhooks/{id}/attempts"),
    ("POST", "/webhooks/{id}/replay"),
    ("GET", "/conversations"),
    ("POST", "/conversations"),
    ("GET", "/conversations/{id}"),
    ("GET", "/conversations/{id}/messages"),
    ("POST", "/conversations/{id}/stop"),
    ("POST", "/accounts"),
    ("GET", "/accounts"),
    ("PATCH", "/accounts/{name}"),
    ("POST", "/accounts/{name}/password"),
    ("POST", "/admin/login"),
    ("GET", "/admin/session"),
    ("POST", "/admin/session/refresh"),
    ("POST", "/admin/logout"),
    ("GET", "/admin/overview"),
    ("GET", "/poll"),
    ("POST", "/send"),
    ("POST", "/ack"),
    ("POST", "/renew"),
    ("POST", "/inbound"),
    ("GET", "/outbox"),
    ("GET", "/events"),
    ("GET", "/ws"),
    ("POST", "/sessions"),
    ("POST", "/sessions/refresh"),
    ("GET", "/session"),
    ("POST", "/login"),
    ("POST", "/logout"),
    ("POST", "/signup"),
    ("POST", "/attachments"),
    ("GET", "/attachments/{id}"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
];

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_in_the_openapi_document_and_every_operation_is_served() {
    let app = spawn_app().await;
    let doc = app
        .request(Method::GET, "/openapi.json", None, None)
        .await
        .ok();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let documented = operations(&doc);
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let missing: Vec<_> = routes.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the OpenAPI document: {missing:?}"
    );
    let extra: Vec<_> = documented.difference(&routes).collect();
    assert!(
        extra.is_empty(),
        "documented operations this test does not know: {extra:?}"
    );

    // Each documented operation exists on the server: never "no such endpoint"
    // and never "method not allowed" (streams are probed without waiting).
    for (method, path) in &documented {
        if path == "/events" || path == "/ws" {
            continue;
        }
        let concrete = path.replace("{id}", "x_0123456789abcdef0123456789abcdef");
        let r = app
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                &concrete,
                Some(ADMIN),
                None,
            )
            .await;
        assert_ne!(
            r.error_code(),
            "no_route",
            "{method} {path} is documented but not served"
        );
        assert_ne!(
            r.status.as_u16(),
            405,
            "{method} {path} is documented but not served"
        );
    }
    let r = app
        .http
        .get(format!("{}/ws", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "GET /ws without an upgrade");

    // Every operation that takes a token says so.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let public = op["tags"][0] == "public";
            assert_eq!(
                op["security"].is_null(),
                public,
                "{method} {path}: security vs tag"
            );
        }
    }
}
