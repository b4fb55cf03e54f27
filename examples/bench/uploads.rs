//! What large uploads cost other writers: WRITERS concurrent `/inbound`
//! loops run for DURATION seconds alone, then as long again while UPLOADERS
//! upload 10 MiB files back to back (each a different file, so nothing is
//! deduplicated); reports the /inbound latencies of both phases and the
//! upload throughput.

use super::relay::{percentile, RelayProc};
use serde::Serialize;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
pub struct Phase {
    pub inbound: usize,
    pub inbound_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct UploadsReport {
    pub writers: usize,
    pub uploaders: usize,
    pub upload_mib: usize,
    pub alone: Phase,
    pub while_uploading: Phase,
    pub uploads: usize,
    pub upload_mib_per_sec: f64,
    pub upload_p50_secs: f64,
}

async fn writers(base: &str, token: &str, n: usize, secs: u64) -> Phase {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..n)
        .map(|w| {
            let (base, token) = (base.to_owned(), token.to_owned());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut took = Vec::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    i += 1;
                    let t = Instant::now();
                    let r = http
                        .post(format!("{base}/inbound"))
                        .bearer_auth(&token)
                        .json(
                            &json!({"from": format!("w{w}-{}", i % 50), "text": "a small message"}),
                        )
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "/inbound: {}", r.status());
                    took.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                took
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_by(f64::total_cmp);
    Phase {
        inbound: all.len(),
        inbound_per_sec: all.len() as f64 / secs as f64,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
        max_ms: all.last().copied().unwrap_or(0.0),
    }
}

pub async fn run(
    bin: &std::path::Path,
    writer_count: usize,
    uploaders: usize,
    mib: usize,
    secs: u64,
) -> UploadsReport {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("uploads.db");
    let extra = format!(
        "[attachments]\nmax_bytes = {}\nquota_mb = 0\n",
        (mib + 1) << 20
    );
    let relay = RelayProc::start_with(bin, &db, "full", dir.path(), &extra).await;
    let base = relay.base.clone();
    let token = relay.app_token("bench").await;

    let alone = writers(&base, &token, writer_count, secs).await;

    let stop = Arc::new(AtomicBool::new(false));
    let upload_tasks: Vec<_> = (0..uploaders)
        .map(|u| {
            let (base, token, stop) = (base.clone(), token.clone(), stop.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut file: Vec<u8> = (0..mib << 20).map(|i| (i * 31 % 251) as u8).collect();
                let mut took = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    // A different file each time: nothing is deduplicated.
                    file[..8].copy_from_slice(&(n * 1000 + u as u64).to_le_bytes());
                    let t = Instant::now();
                    let r = http
                        .post(format!("{base}/attachments?filename=big.bin"))
                        .bearer_auth(&token)
                        .body(file.clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(
                        r.status(),
                        201,
                        "upload: {}",
                        r.text().await.unwrap_or_default()
                    );
                    took.push(t.elapsed().as_secs_f64());
                }
                took
            })
        })
        .collect();
    let started = Instant::now();
    let while_uploading = writers(&base, &token, writer_count, secs).await;
    stop.store(true, Ordering::Relaxed);
    let mut uploads = Vec::new();
    for t in upload_tasks {
        uploads.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    relay.stop().await;
    uploads.sort_by(f64::total_cmp);
    UploadsReport {
        writers: writer_count,
        uploaders,
        upload_mib: mib,
        alone,
        while_uploading,
        uploads: uploads.len(),
        upload_mib_per_sec: (uploads.len() * mib) as f64 / elapsed,
        upload_p50_secs: percentile(&uploads, 0.5),
    }
}
