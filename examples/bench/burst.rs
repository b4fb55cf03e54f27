//! Memory after a connection burst: the relay's resident memory before,
//! with N app WebSockets open, and after they all closed.

use super::relay::RelayProc;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Serialize)]
pub struct BurstReport {
    pub sockets: usize,
    pub rss_before_mib: f64,
    pub rss_open_mib: f64,
    pub rss_after_mib: f64,
    pub kib_per_socket: f64,
}

pub async fn run(bin: &Path, sockets: usize, rounds: usize) -> BurstReport {
    let dir = tempfile::tempdir().expect("temp dir");
    let relay = RelayProc::start(bin, &dir.path().join("burst.db"), "full", dir.path()).await;
    let token = relay.app_token("burst").await;
    let url = format!("{}/ws", relay.base.replacen("http", "ws", 1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before_mib = relay.rss_mib();
    let mut rss_open_mib: f64 = 0.0;
    for _ in 0..rounds {
        let mut open = Vec::with_capacity(sockets);
        for _ in 0..sockets {
            let (mut ws, _) = tokio_tungstenite::connect_async(&url)
                .await
                .expect("websocket");
            let connect = json!({"type": "req", "id": 0, "method": "connect",
                "params": {"role": "app", "token": token}});
            ws.send(tokio_tungstenite::tungstenite::Message::Text(
                connect.to_string().into(),
            ))
            .await
            .expect("connect");
            let _ = ws.next().await;
            open.push(ws);
        }
        rss_open_mib = rss_open_mib.max(relay.rss_mib());
        for mut ws in open {
            let _ = ws.close(None).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let rss_after_mib = relay.rss_mib();
    relay.stop().await;
    BurstReport {
        sockets,
        rss_before_mib,
        rss_open_mib,
        rss_after_mib,
        kib_per_socket: (rss_open_mib - rss_before_mib) * 1024.0 / sockets as f64,
    }
}
