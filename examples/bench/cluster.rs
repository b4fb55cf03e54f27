//! Scale-out: the round-trip loads on SQLite (one relay), on PostgreSQL
//! with one relay, and on PostgreSQL with three relays sharing the
//! database (agents and users spread over them, the app reading through the
//! first). Each run gets a fresh throwaway cluster (scripts/pg.sh, default
//! settings, fsync on) or a fresh SQLite file. Relay CPU is the relays'
//! sum; database CPU is PostgreSQL's processes' (on this same machine).

use super::pgqueue::Cluster;
use super::relay::{cpu_secs_of, RelayProc};
use super::roundtrip::{self, Load, Report};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct Row {
    pub setup: String,
    pub relays: usize,
    #[serde(flatten)]
    pub report: Report,
    /// PostgreSQL's CPU per round trip (none on SQLite).
    pub db_cpu_ms_per_round_trip: Option<f64>,
}

/// User + system CPU seconds of every PostgreSQL process now.
fn postgres_cpu_secs() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(cpu_secs_of)
        .sum()
}

pub async fn run(bin: &Path, loads: &[(usize, usize)], load: &Load) -> Vec<Row> {
    let mut rows = Vec::new();
    for &(agents, users) in loads {
        let load = Load {
            agents,
            users,
            ..load.clone()
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let relay = RelayProc::start(bin, &dir.path().join("bench.db"), "full", dir.path()).await;
        let report = roundtrip::run(&relay, &load, "full").await;
        relay.stop().await;
        rows.push(Row {
            setup: "SQLite".into(),
            relays: 1,
            report,
            db_cpu_ms_per_round_trip: None,
        });
        for n in [1, 3] {
            let dir = tempfile::tempdir().expect("temp dir");
            // Directly under the temp root: as root, the cluster runs as
            // `postgres`, which must reach its directory.
            let pg_dir = std::env::temp_dir().join(format!(
                "clawrelay-bench-pg-{}-{n}-{agents}x{users}",
                std::process::id()
            ));
            let (cluster, url) = Cluster::start(&pg_dir);
            let mut relays = Vec::new();
            for _ in 0..n {
                relays.push(RelayProc::start_postgres(bin, &url, dir.path()).await);
            }
            let db0 = postgres_cpu_secs();
            let report = roundtrip::run_on(&relays, &load, "full").await;
            // The window's share of the database's CPU, as near as the
            // run's edges allow (warm-up excluded by scaling).
            let db_cpu = postgres_cpu_secs() - db0;
            let total_secs = load.warmup.as_secs_f64() + report.seconds;
            let db_ms = if report.round_trips > 0 {
                Some(db_cpu * (report.seconds / total_secs) * 1000.0 / report.round_trips as f64)
            } else {
                None
            };
            for r in relays {
                r.stop().await;
            }
            drop(cluster);
            rows.push(Row {
                setup: "PostgreSQL".into(),
                relays: n,
                report,
                db_cpu_ms_per_round_trip: db_ms,
            });
        }
    }
    rows
}

pub fn print(rows: &[Row]) {
    println!(
        "| setup | relays | agents × users | round trips/s | p50 ms | p99 ms | relay CPU ms/rt | db CPU ms/rt | errors |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let p = &r.report;
        println!(
            "| {} | {} | {} × {} | {:.0} | {:.2} | {:.2} | {:.3} | {} | {} |",
            r.setup,
            r.relays,
            p.agents,
            p.users,
            p.round_trips_per_sec,
            p.p50_ms,
            p.p99_ms,
            p.relay_cpu_ms_per_round_trip,
            r.db_cpu_ms_per_round_trip
                .map(|v| format!("{v:.3}"))
                .unwrap_or_else(|| "–".into()),
            p.errors
        );
    }
}
