//! clawrelay's load benchmark. It starts a release relay (or targets the one
//! given), drives the real protocol and prints numbers: a table and JSON. It
//! never passes or fails on timing; it reports.
//!
//!   cargo build --release
//!   cargo run --release --example bench -- roundtrip --agents 4 --users 64
//!   cargo run --release --example bench -- presets          # 1×1, 4×64, 4×256 × full, normal
//!   cargo run --release --example bench -- queue            # 1k, 100k, 1M pending deliveries
//!   cargo run --release --example bench -- uploads          # /inbound latency while 10 MiB uploads run
//!   cargo run --release --example bench -- pg-queue         # claim latency on PostgreSQL (storage only)
//!   cargo run --release --example bench -- cluster          # SQLite vs 1 and 3 relays on PostgreSQL
//!   cargo run --release --example bench -- soak --minutes 30 # a mixed load, watched minute by minute
//!   cargo run --release --example bench -- webchat          # the chat page's weight, the Markdown renderer's cost
//!   cargo run --release --example bench -- openai           # /v1/chat/completions next to /inbound + the app stream

// A measuring tool: a failed setup step (no relay, no JSON) ends the run loudly.
#![allow(clippy::unwrap_used)]

mod burst;
mod cluster;
mod nexus;
mod pgqueue;
mod pgstats;
mod purge;
mod queue;
mod relay;
mod roundtrip;
mod search;
mod soak;
mod uploads;
mod webchat;

use clap::{Parser, Subcommand};
use relay::RelayProc;
use roundtrip::{Load, Report, Transport};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "clawrelay load benchmark: prints numbers, asserts nothing")]
struct Cli {
    /// The relay binary to start (default: target/<profile>/clawrelay next to this benchmark).
    #[arg(long, global = true)]
    relay: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The web chat page's weight (gzipped) and the Markdown renderer's cost
    /// per KiB (no relay needed).
    Webchat,
    /// One round-trip load: K agents, N users.
    Roundtrip {
        #[arg(long, default_value_t = 4)]
        agents: usize,
        #[arg(long, default_value_t = 64)]
        users: usize,
        #[arg(long, value_enum, default_value_t = Transport::Poll)]
        transport: Transport,
        #[arg(long, default_value = "full")]
        synchronous: String,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 3)]
        warmup: u64,
    },
    /// The same load against openclaw-nexus (in-memory, installed from npm
    /// into .cache/nexus) and clawrelay (full durability, WebSocket and
    /// long-poll), ROUNDS times in alternation on fresh processes; prints
    /// every run, the medians and clawrelay's ratios to nexus.
    Compare {
        #[arg(long, default_value_t = 4)]
        agents: usize,
        #[arg(long, default_value_t = 64)]
        users: usize,
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 3)]
        warmup: u64,
    },
    /// The OpenAI-compatible door next to the app API, same load, same run:
    /// agents stream (a delta, then the reply); users either post to
    /// /inbound and read the app's WebSocket stream (ws-stream) or ask
    /// through /v1/chat/completions with `stream: true` (openai), ROUNDS
    /// times in alternation on fresh relays. Prints time to first token and
    /// relay CPU per round trip.
    Openai {
        #[arg(long, default_value_t = 4)]
        agents: usize,
        #[arg(long, default_value_t = 64)]
        users: usize,
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 3)]
        warmup: u64,
    },
    /// The presets: 1×1, 4×64, 4×256, each with synchronous = full and normal.
    Presets {
        #[arg(long, value_enum, default_value_t = Transport::Poll)]
        transport: Transport,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 3)]
        warmup: u64,
    },
    /// Memory after connection bursts: RSS before, with SOCKETS app
    /// WebSockets open, and after they closed (ROUNDS bursts).
    Burst {
        #[arg(long, default_value_t = 1024)]
        sockets: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Retention under load: purge MESSAGES old messages while writing.
    Purge {
        #[arg(long, default_value_t = 1_000_000)]
        messages: i64,
    },
    /// Search of history at scale: MESSAGES messages, searched through the
    /// relay; what the index costs a write.
    Search {
        #[arg(long, default_value_t = 1_000_000)]
        messages: i64,
    },
    /// What large uploads cost other writers: /inbound latency alone, then
    /// while UPLOADERS upload MIB-sized files back to back.
    Uploads {
        #[arg(long, default_value_t = 8)]
        writers: usize,
        #[arg(long, default_value_t = 2)]
        uploaders: usize,
        #[arg(long, default_value_t = 10)]
        mib: usize,
        #[arg(long, default_value_t = 10)]
        duration: u64,
    },
    /// The queue at scale: claim latency with 1k, 100k, 1M pending deliveries.
    Queue {
        #[arg(long, value_delimiter = ',', default_value = "1000,100000,1000000")]
        sizes: Vec<i64>,
        /// Share of the pending deliveries that are leased and unacked.
        #[arg(long, default_value_t = 0.2)]
        leased: f64,
        #[arg(long, default_value_t = 5)]
        duration: u64,
    },
    /// Scale-out: round trips on SQLite, on PostgreSQL with one relay and
    /// with three relays sharing the database (fresh each run).
    Cluster {
        /// Loads, AGENTSxUSERS.
        #[arg(long, value_delimiter = ',', default_value = "4x64,16x256")]
        loads: Vec<String>,
        #[arg(long, value_enum, default_value_t = Transport::Poll)]
        transport: Transport,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 3)]
        warmup: u64,
        /// Also run one and three relays each held to this many cores (a
        /// cgroup v1 `cpu` quota: hosts of that size), e.g. 0.25.
        #[arg(long)]
        hold: Option<f64>,
        /// Also run SQLite with this relay binary (an earlier version), in
        /// the same run.
        #[arg(long)]
        sqlite_baseline: Option<PathBuf>,
        /// Which setups to run: sqlite, pg1 (one relay on PostgreSQL), pg1s (one
        /// relay with load and one idle beside it, a standby), pg3.
        #[arg(long, value_delimiter = ',', default_value = "sqlite,pg1,pg3")]
        setups: Vec<String>,
    },
    /// The long run: a mixed load (WebSocket and long-poll agents; WebSocket,
    /// SSE and webhook apps; uploads; the retention purge; agents created,
    /// revoked and rotated through the CLI) for MINUTES, with the relay's
    /// RSS, fds, threads, database and WAL size, p99 and errors per minute,
    /// their slopes, and every message sent checked against its answers.
    Soak {
        #[arg(long, default_value_t = 30)]
        minutes: u64,
        /// Users of each of the three apps.
        #[arg(long, default_value_t = 12)]
        users: usize,
    },
    /// The queue at scale on PostgreSQL, at the storage layer: claim and ack
    /// transactions with 1k, 100k, 1M pending deliveries (a throwaway
    /// cluster from scripts/pg.sh).
    PgQueue {
        #[arg(long, value_delimiter = ',', default_value = "1000,100000,1000000")]
        sizes: Vec<i64>,
        #[arg(long, default_value_t = 0.2)]
        leased: f64,
        #[arg(long, default_value_t = 5)]
        duration: u64,
    },
}

async fn one(bin: &std::path::Path, load: &Load, sync: &str) -> Report {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bench.db");
    let relay = RelayProc::start(bin, &db, sync, dir.path()).await;
    let report = roundtrip::run(&relay, load, sync).await;
    relay.stop().await;
    // BENCH_KEEP=1 keeps the run's database, to look at what the relay stored.
    if std::env::var_os("BENCH_KEEP").is_some() {
        println!("kept {} (window {:?})", db.display(), report.window);
        std::mem::forget(dir);
    }
    report
}

fn print_roundtrips(reports: &[Report]) {
    println!(
        "{:>7} {:>5} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>11} {:>8} {:>9} {:>8}",
        "agents",
        "users",
        "sync",
        "rt/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "errors",
        "cpu ms/rt",
        "rss MiB",
        "commits/s",
        "ops/com"
    );
    for r in reports {
        println!(
            "{:>7} {:>5} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>11.3} {:>8.1} {:>9.0} {:>8.1}",
            r.agents,
            r.users,
            r.synchronous,
            r.round_trips_per_sec,
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
            r.p999_ms,
            r.max_ms,
            r.errors + r.cross_talk,
            r.relay_cpu_ms_per_round_trip,
            r.relay_peak_rss_mib,
            r.commits_per_sec,
            r.operations_per_commit
        );
    }
    for r in reports.iter().filter(|r| r.lag_p50_ms.is_some()) {
        println!(
            "  webhook lag (reply committed → received) of {}×{}: p50 {:.0} ms, p99 {:.0} ms",
            r.agents,
            r.users,
            r.lag_p50_ms.unwrap_or(0.0),
            r.lag_p99_ms.unwrap_or(0.0)
        );
    }
    for r in reports.iter().filter(|r| !r.stages.is_empty()) {
        let stages: Vec<String> = r
            .stages
            .iter()
            .map(|s| format!("{} {:.1}/{:.1}", s.stage, s.p50_ms, s.p99_ms))
            .collect();
        println!(
            "  stages of {}×{} {} (p50/p99 ms): {}",
            r.agents,
            r.users,
            r.synchronous,
            stages.join(", ")
        );
    }
    for r in reports {
        let slowest: Vec<String> = r
            .slowest
            .iter()
            .map(|(at, ms)| format!("{ms:.0} ms at {at:.1} s"))
            .collect();
        println!(
            "  slowest of {}×{} {}: {}",
            r.agents,
            r.users,
            r.synchronous,
            slowest.join(", ")
        );
    }
}

/// A row of the comparison: its label and how to read it off a report.
type Metric = (&'static str, fn(&Report) -> f64);

/// The median of metric `f` over the runs named `name` (0 when none).
fn median_of(runs: &[(&str, Report)], name: &str, f: fn(&Report) -> f64) -> f64 {
    let mut v: Vec<f64> = runs
        .iter()
        .filter(|(n, _)| *n == name)
        .map(|(_, r)| f(r))
        .collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Medians per relay and clawrelay's ratios to nexus.
fn compare_summary(runs: &[(&str, Report)]) {
    let median = |name: &str, f: fn(&Report) -> f64| median_of(runs, name, f);
    let metrics: [Metric; 6] = [
        ("round trips/s", |r| r.round_trips_per_sec),
        ("relay CPU ms / round trip", |r| {
            r.relay_cpu_ms_per_round_trip
        }),
        ("p50 ms", |r| r.p50_ms),
        ("p99 ms", |r| r.p99_ms),
        ("max ms", |r| r.max_ms),
        ("peak RSS MiB", |r| r.relay_peak_rss_mib),
    ];
    println!(
        "\nmedians of {} rounds",
        runs.iter().filter(|(n, _)| *n == "nexus").count()
    );
    println!(
        "{:<28} {:>10} {:>16} {:>16}",
        "", "nexus", "clawrelay ws", "clawrelay poll"
    );
    for (label, f) in metrics {
        let n = median("nexus", f);
        let ratio = |x: f64| {
            if n > 0.0 {
                format!("{x:.3} ({:.2}×)", x / n)
            } else {
                format!("{x:.3}")
            }
        };
        println!(
            "{:<28} {:>10.3} {:>16} {:>16}",
            label,
            n,
            ratio(median("ws", f)),
            ratio(median("poll", f))
        );
    }
    let errors: u64 = runs.iter().map(|(_, r)| r.errors + r.cross_talk).sum();
    println!("errors and cross-talk in all runs: {errors}");
}

/// Medians of the two paths of `bench openai`, and the door's ratio.
fn openai_summary(runs: &[(&str, Report)]) {
    let median = |name: &str, f: fn(&Report) -> f64| median_of(runs, name, f);
    let metrics: [Metric; 7] = [
        ("round trips/s", |r| r.round_trips_per_sec),
        ("relay CPU ms / round trip", |r| {
            r.relay_cpu_ms_per_round_trip
        }),
        ("first token p50 ms", |r| r.ttft_p50_ms.unwrap_or(0.0)),
        ("first token p99 ms", |r| r.ttft_p99_ms.unwrap_or(0.0)),
        ("whole answer p50 ms", |r| r.p50_ms),
        ("whole answer p99 ms", |r| r.p99_ms),
        ("peak RSS MiB", |r| r.relay_peak_rss_mib),
    ];
    let (a, b) = ("inbound + stream", "chat completions");
    println!(
        "\nmedians of {} rounds",
        runs.iter().filter(|(n, _)| *n == a).count()
    );
    println!("{:<28} {:>18} {:>24}", "", a, b);
    for (label, f) in metrics {
        let (x, y) = (median(a, f), median(b, f));
        let ratio = if x > 0.0 {
            format!("{y:.3} ({:.2}×)", y / x)
        } else {
            format!("{y:.3}")
        };
        println!("{label:<28} {x:>18.3} {ratio:>24}");
    }
    let errors: u64 = runs.iter().map(|(_, r)| r.errors + r.cross_talk).sum();
    println!("errors and cross-talk in all runs: {errors}");
}

fn write_json(path: &Option<PathBuf>, value: serde_json::Value) {
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_string_pretty(&value).unwrap_or_default())
            .expect("write json");
        println!("wrote {}", p.display());
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let bin = cli.relay.clone().unwrap_or_else(relay::default_binary);
    match cli.command {
        Command::Roundtrip {
            agents,
            users,
            transport,
            synchronous,
            duration,
            warmup,
        } => {
            let load = Load {
                agents,
                users,
                transport,
                warmup: Duration::from_secs(warmup),
                duration: Duration::from_secs(duration),
            };
            let r = one(&bin, &load, &synchronous).await;
            print_roundtrips(std::slice::from_ref(&r));
            write_json(&cli.json, serde_json::json!({ "roundtrip": r }));
        }
        Command::Compare {
            agents,
            users,
            rounds,
            duration,
            warmup,
        } => {
            let load = |transport| Load {
                agents,
                users,
                transport,
                warmup: Duration::from_secs(warmup),
                duration: Duration::from_secs(duration),
            };
            let mut runs: Vec<(&str, Report)> = Vec::new();
            for round in 1..=rounds {
                println!("round {round} of {rounds}");
                let proc = nexus::NexusProc::start(users).await;
                let r = nexus::run(&proc, &load(Transport::Ws)).await;
                proc.stop();
                print_roundtrips(std::slice::from_ref(&r));
                runs.push(("nexus", r));
                for (name, transport) in [("ws", Transport::Ws), ("poll", Transport::Poll)] {
                    let r = one(&bin, &load(transport), "full").await;
                    print_roundtrips(std::slice::from_ref(&r));
                    runs.push((name, r));
                }
            }
            compare_summary(&runs);
            let all: Vec<_> = runs
                .iter()
                .map(|(name, r)| serde_json::json!({ "relay": name, "report": r }))
                .collect();
            write_json(&cli.json, serde_json::json!({ "compare": all }));
        }
        Command::Openai {
            agents,
            users,
            rounds,
            duration,
            warmup,
        } => {
            let load = |transport| Load {
                agents,
                users,
                transport,
                warmup: Duration::from_secs(warmup),
                duration: Duration::from_secs(duration),
            };
            let mut runs: Vec<(&str, Report)> = Vec::new();
            for round in 1..=rounds {
                println!("round {round} of {rounds}");
                for (name, transport) in [
                    ("inbound + stream", Transport::WsStream),
                    ("chat completions", Transport::Openai),
                ] {
                    let r = one(&bin, &load(transport), "full").await;
                    print_roundtrips(std::slice::from_ref(&r));
                    runs.push((name, r));
                }
            }
            openai_summary(&runs);
            let all: Vec<_> = runs
                .iter()
                .map(|(name, r)| serde_json::json!({ "path": name, "report": r }))
                .collect();
            write_json(&cli.json, serde_json::json!({ "openai": all }));
        }
        Command::Presets {
            transport,
            duration,
            warmup,
        } => {
            let scratch = tempfile::tempdir().expect("temp dir");
            let fsync = relay::fsync_median_ms(scratch.path());
            println!("disk fsync median (4 KiB write + fdatasync): {fsync:.3} ms");
            let mut reports = Vec::new();
            for (agents, users) in [(1, 1), (4, 64), (4, 256)] {
                for sync in ["full", "normal"] {
                    let load = Load {
                        agents,
                        users,
                        transport,
                        warmup: Duration::from_secs(warmup),
                        duration: Duration::from_secs(duration),
                    };
                    let r = one(&bin, &load, sync).await;
                    print_roundtrips(std::slice::from_ref(&r));
                    reports.push(r);
                }
            }
            println!();
            print_roundtrips(&reports);
            let find = |a, u, s: &str| {
                reports
                    .iter()
                    .find(|r| r.agents == a && r.users == u && r.synchronous == s)
            };
            if let (Some(full), Some(normal)) = (find(4, 64, "full"), find(4, 64, "normal")) {
                println!(
                    "\ngroup commit: 4×64 full/normal = {:.2} (target ≥ 0.90)",
                    full.round_trips_per_sec / normal.round_trips_per_sec
                );
                println!(
                    "cpu: 4×64 full = {:.3} ms/round trip, p99 {:.2} ms (their targets are nexus's: `bench compare`)",
                    full.relay_cpu_ms_per_round_trip, full.p99_ms
                );
            }
            if let Some(r) = find(1, 1, "full") {
                println!("latency: 1×1 full p50 = {:.2} ms, fsync median {fsync:.2} ms, difference {:.2} ms (target ≤ 1)", r.p50_ms, r.p50_ms - fsync);
            }
            if let Some(r) = find(4, 256, "full") {
                println!(
                    "memory: 4×256 full peak RSS = {:.1} MiB (target ≤ 64)",
                    r.relay_peak_rss_mib
                );
            }
            write_json(
                &cli.json,
                serde_json::json!({ "fsyncMedianMs": fsync, "roundtrips": reports }),
            );
        }
        Command::Webchat => {
            let r = webchat::run();
            write_json(&cli.json, serde_json::json!({ "webchat": r }));
        }
        Command::Burst { sockets, rounds } => {
            let r = burst::run(&bin, sockets, rounds).await;
            println!(
                "{} WebSockets × {rounds} bursts: RSS {:.1} MiB before, {:.1} MiB with them open ({:.0} KiB per socket), {:.1} MiB after they closed",
                r.sockets, r.rss_before_mib, r.rss_open_mib, r.kib_per_socket, r.rss_after_mib
            );
            write_json(&cli.json, serde_json::json!({ "burst": r }));
        }
        Command::Uploads {
            writers,
            uploaders,
            mib,
            duration,
        } => {
            let r = uploads::run(&bin, writers, uploaders, mib, duration).await;
            for (name, p) in [("alone", &r.alone), ("while uploading", &r.while_uploading)] {
                println!(
                    "{writers} /inbound writers {name:>15}: {:>6} writes, {:>7.0}/s, p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
                    p.inbound, p.inbound_per_sec, p.p50_ms, p.p99_ms, p.max_ms
                );
            }
            println!(
                "{uploaders} uploaders of {mib} MiB files: {} uploads, {:.1} MiB/s, p50 {:.2} s per upload",
                r.uploads, r.upload_mib_per_sec, r.upload_p50_secs
            );
            write_json(&cli.json, serde_json::json!({ "uploads": r }));
        }
        Command::Search { messages } => {
            let r = search::run(&bin, messages).await;
            println!(
                "{} messages ({:.0} MiB, preload {:.1} s): storing a message {:.1} µs, its terms into the index {:.1} µs more ({:.0} %)",
                r.messages, r.database_mib, r.preload_secs, r.insert_us, r.index_us, 100.0 * r.index_us / r.insert_us
            );
            println!(
                "search: one word p50 {:.2} ms p99 {:.2} ms; two words p50 {:.2} ms p99 {:.2} ms; a Chinese word p50 {:.2} ms p99 {:.2} ms",
                r.one_word_p50_ms, r.one_word_p99_ms, r.two_words_p50_ms, r.two_words_p99_ms, r.chinese_p50_ms, r.chinese_p99_ms
            );
            write_json(&cli.json, serde_json::json!({ "search": r }));
        }
        Command::Purge { messages } => {
            let r = purge::run(&bin, messages).await;
            println!(
                "purged {} messages in {:.1} s ({:.0}/s; preload {:.1} s); {} writes meanwhile: p50 {:.2} ms, p99 {:.2} ms, longest {:.1} ms",
                r.messages, r.purge_secs, r.messages_per_sec, r.preload_secs, r.writes, r.write_p50_ms, r.write_p99_ms, r.write_max_ms
            );
            write_json(&cli.json, serde_json::json!({ "purge": r }));
        }
        Command::Queue {
            sizes,
            leased,
            duration,
        } => {
            let mut reports = Vec::new();
            println!(
                "{:>9} {:>8} {:>10} {:>9} {:>7} {:>9} {:>9} {:>9} {:>11} {:>11} {:>10}",
                "pending",
                "leased",
                "preload s",
                "ready ms",
                "claims",
                "p50 ms",
                "p99 ms",
                "max ms",
                "?userId ms",
                "?appId ms",
                "health ms"
            );
            for n in sizes {
                let r = queue::run(&bin, n, leased, Duration::from_secs(duration)).await;
                println!(
                    "{:>9} {:>8.2} {:>10.1} {:>9.0} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>11.3} {:>11.3} {:>10.3}",
                    r.pending,
                    r.leased_share,
                    r.preload_secs,
                    r.ready_ms,
                    r.claims,
                    r.claim_p50_ms,
                    r.claim_p99_ms,
                    r.claim_max_ms,
                    r.history_by_user_ms,
                    r.history_by_app_ms,
                    r.health_ms
                );
                reports.push(r);
            }
            if let (Some(small), Some(big)) = (reports.first(), reports.last()) {
                println!(
                    "\nflat at scale: claim p99 at {} = {:.2} × p99 at {} (target ≤ 2); ready in {:.0} ms with {} rows (target < 2000)",
                    big.pending,
                    big.claim_p99_ms / small.claim_p99_ms.max(1e-9),
                    small.pending,
                    big.ready_ms,
                    big.pending
                );
            }
            write_json(&cli.json, serde_json::json!({ "queue": reports }));
        }
        Command::Cluster {
            loads,
            transport,
            duration,
            warmup,
            hold,
            sqlite_baseline,
            setups,
        } => {
            let parsed: Vec<(usize, usize)> = loads
                .iter()
                .map(|l| {
                    let (a, u) = l
                        .split_once('x')
                        .expect("a load is AGENTSxUSERS, e.g. 4x64");
                    (a.parse().expect("agents"), u.parse().expect("users"))
                })
                .collect();
            let load = Load {
                agents: 0,
                users: 0,
                transport,
                warmup: Duration::from_secs(warmup),
                duration: Duration::from_secs(duration),
            };
            let options = cluster::Options {
                setups: &setups,
                hold,
                sqlite_baseline: sqlite_baseline.as_deref(),
            };
            let rows = cluster::run(&bin, &parsed, &load, &options).await;
            cluster::print(&rows);
            write_json(&cli.json, serde_json::json!({ "cluster": rows }));
        }
        Command::Soak { minutes, users } => {
            let r = soak::run(&bin, minutes, users).await;
            println!("\nslopes per minute (least squares, minute 2 on):");
            for (name, per_min) in &r.slopes {
                println!("  {name:<16} {per_min:+.4}");
            }
            println!(
                "messages sent {}, answered {}, lost {}, answered twice {}; errors {}; {} uploads; {} CLI commands beside the relay",
                r.sent, r.answered, r.lost, r.duplicated, r.errors, r.uploads, r.cli_commands
            );
            for e in &r.first_errors {
                println!("  error: {e}");
            }
            for d in &r.first_duplicates {
                println!("  answered twice: {d}");
            }
            write_json(&cli.json, serde_json::json!({ "soak": r }));
        }
        Command::PgQueue {
            sizes,
            leased,
            duration,
        } => {
            println!(
                "{:>9} {:>8} {:>10} {:>7} {:>9} {:>9} {:>9} {:>11} {:>11}",
                "pending",
                "leased",
                "preload s",
                "claims",
                "p50 ms",
                "p99 ms",
                "max ms",
                "ack p50 ms",
                "ack p99 ms"
            );
            let mut reports = Vec::new();
            for n in sizes {
                let r = pgqueue::run(n, leased, Duration::from_secs(duration)).await;
                println!(
                    "{:>9} {:>8.2} {:>10.1} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>11.3} {:>11.3}",
                    r.pending,
                    r.leased_share,
                    r.preload_secs,
                    r.claims,
                    r.claim_p50_ms,
                    r.claim_p99_ms,
                    r.claim_max_ms,
                    r.ack_p50_ms,
                    r.ack_p99_ms
                );
                reports.push(r);
            }
            write_json(&cli.json, serde_json::json!({ "pg_queue": reports }));
        }
    }
}
