//! Concurrent pollers never share a delivery.

use crate::helpers::*;
use std::collections::HashMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_pollers_get_each_delivery_exactly_once() {
    let app = spawn_app().await;
    let (_, client) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&client, "").await;

    const MESSAGES: usize = 200;
    let mut expected = Vec::new();
    for i in 0..MESSAGES {
        let m = app
            .inbound(&web, &format!("user{i}"), &format!("m{i}"))
            .await;
        expected.push(m["id"].as_str().unwrap().to_owned());
    }

    let mut pollers = Vec::new();
    for _ in 0..32 {
        let http = app.http.clone();
        let url = format!("{}/poll?max=3", app.base);
        let token = client.clone();
        pollers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            // Poll until an empty answer: every message is claimed by then.
            loop {
                let r: serde_json::Value = http
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let batch = r["messages"].as_array().unwrap().clone();
                if batch.is_empty() {
                    return got;
                }
                got.extend(
                    batch
                        .into_iter()
                        .map(|m| m["id"].as_str().unwrap().to_owned()),
                );
            }
        }));
    }
    let mut times_delivered: HashMap<String, usize> = HashMap::new();
    for p in pollers {
        for id in p.await.unwrap() {
            *times_delivered.entry(id).or_default() += 1;
        }
    }
    assert_eq!(times_delivered.len(), MESSAGES, "every message delivered");
    assert!(
        times_delivered.values().all(|n| *n == 1),
        "no message delivered twice"
    );
    for id in &expected {
        assert!(times_delivered.contains_key(id));
    }
}
