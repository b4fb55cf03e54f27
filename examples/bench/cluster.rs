//! Scale-out: the round-trip loads on SQLite (one relay), on PostgreSQL
//! with one relay, and on PostgreSQL with three relays sharing the
//! database (agents and users spread over them, the app reading through the
//! first); optionally again with each relay held to a share of a core (a
//! host that size, simulated with a cgroup), and SQLite run by another
//! binary (an earlier commit, for comparison in the same run). Each run gets
//! a fresh throwaway cluster (scripts/pg.sh, default settings, fsync on,
//! pg_stat_statements loaded) or a fresh SQLite file. Relay CPU is the
//! relays' sum; database CPU and statements are PostgreSQL's over the
//! measured window (see `pgstats`), per round trip.

use super::pgqueue::Cluster;
use super::pgstats::{PgNumbers, Probe, SERVER_OPTIONS};
use super::relay::RelayProc;
use super::roundtrip::{self, Load, Report};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct Row {
    pub setup: String,
    pub relays: usize,
    /// Cores each relay was held to (None: not held).
    pub held_cores: Option<f64>,
    #[serde(flatten)]
    pub report: Report,
    /// PostgreSQL's CPU per round trip (none on SQLite).
    pub db_cpu_ms_per_round_trip: Option<f64>,
    /// Top-level statements PostgreSQL ran per round trip.
    pub statements_per_round_trip: Option<f64>,
}

/// What to run besides SQLite and PostgreSQL with one and three relays.
pub struct Options<'a> {
    /// Which of SQLite (`sqlite`), one and three relays on PostgreSQL
    /// (`pg1`, `pg3`), and one beside an idle one (`pg1s`), to run.
    pub setups: &'a [String],
    /// Also run one and three relays held to this many cores each.
    pub hold: Option<f64>,
    /// Also run SQLite with this relay binary (an earlier version).
    pub sqlite_baseline: Option<&'a Path>,
}

pub async fn run(
    bin: &Path,
    loads: &[(usize, usize)],
    load: &Load,
    opts: &Options<'_>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for &(agents, users) in loads {
        let load = Load {
            agents,
            users,
            ..load.clone()
        };
        let wanted = |name: &str| opts.setups.iter().any(|s| s == name);
        let mut sqlite = Vec::new();
        if wanted("sqlite") {
            sqlite.push((bin, "SQLite".to_owned()));
        }
        if let Some(base) = opts.sqlite_baseline {
            sqlite.push((base, format!("SQLite ({})", base.display())));
        }
        for (relay_bin, setup) in sqlite {
            let dir = tempfile::tempdir().expect("temp dir");
            let relay =
                RelayProc::start(relay_bin, &dir.path().join("bench.db"), "full", dir.path()).await;
            let report = roundtrip::run(&relay, &load, "full").await;
            relay.stop().await;
            rows.push(Row {
                setup,
                relays: 1,
                held_cores: None,
                report,
                db_cpu_ms_per_round_trip: None,
                statements_per_round_trip: None,
            });
        }
        let mut setups = Vec::new();
        for (name, n, idle) in [("pg1", 1, 0), ("pg1s", 1, 1), ("pg3", 3, 0)] {
            if wanted(name) {
                setups.push((n, idle, None));
            }
        }
        if let Some(cores) = opts.hold {
            setups.push((1, 0, Some(cores)));
            setups.push((3, 0, Some(cores)));
        }
        for (n, idle, held) in setups {
            rows.push(postgres(bin, n, idle, held, &load).await);
        }
    }
    rows
}

/// `n` relays on a fresh PostgreSQL, each held to `held` cores if given,
/// beside `idle` more that take no load (standbys).
async fn postgres(bin: &Path, n: usize, idle: usize, held: Option<f64>, load: &Load) -> Row {
    let dir = tempfile::tempdir().expect("temp dir");
    // Directly under the temp root: as root, the cluster runs as `postgres`,
    // which must reach its directory.
    let pg_dir = std::env::temp_dir().join(format!(
        "clawrelay-bench-pg-{}-{n}-{}x{}",
        std::process::id(),
        load.agents,
        load.users
    ));
    // BENCH_PG_OPTIONS adds settings (to profile: "-c pg_stat_statements.track=all").
    let extra = std::env::var("BENCH_PG_OPTIONS").unwrap_or_default();
    std::env::set_var("PG_SERVER_OPTIONS", format!("{SERVER_OPTIONS} {extra}"));
    let (cluster, url) = Cluster::start(&pg_dir);
    let mut relays = Vec::new();
    for _ in 0..n {
        relays.push(RelayProc::start_postgres(bin, &url, dir.path()).await);
    }
    let mut standbys = Vec::new();
    for _ in 0..idle {
        standbys.push(RelayProc::start_postgres(bin, &url, dir.path()).await);
    }
    let holds: Vec<_> = match held {
        Some(cores) => relays.iter().map(|r| r.hold_cpu(cores)).collect(),
        None => Vec::new(),
    };
    let probe = Probe::connect(&url).await;
    let report = roundtrip::run_on(&relays, load, "full", Some(&probe)).await;
    for r in relays.into_iter().chain(standbys) {
        r.stop().await;
    }
    drop(holds);
    drop(cluster);
    let per = |x: f64| (report.round_trips > 0).then(|| x / report.round_trips as f64);
    let (db_cpu, statements) = match &report.pg {
        Some(PgNumbers {
            cpu_secs,
            statements,
            ..
        }) => (per(cpu_secs * 1000.0), per(*statements as f64)),
        None => (None, None),
    };
    Row {
        setup: match idle {
            0 => "PostgreSQL".into(),
            n => format!("PostgreSQL, {n} idle beside"),
        },
        relays: n,
        held_cores: held,
        report,
        db_cpu_ms_per_round_trip: db_cpu,
        statements_per_round_trip: statements,
    }
}

pub fn print(rows: &[Row]) {
    println!(
        "| setup | relays | held to | agents × users | round trips/s | p50 ms | p99 ms | relay CPU ms/rt | db CPU ms/rt | statements/rt | errors |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    let opt = |v: Option<f64>, digits: usize| {
        v.map(|v| format!("{v:.digits$}"))
            .unwrap_or_else(|| "–".into())
    };
    for r in rows {
        let p = &r.report;
        println!(
            "| {} | {} | {} | {} × {} | {:.0} | {:.2} | {:.2} | {:.3} | {} | {} | {} |",
            r.setup,
            r.relays,
            r.held_cores
                .map(|c| format!("{c} core"))
                .unwrap_or_else(|| "–".into()),
            p.agents,
            p.users,
            p.round_trips_per_sec,
            p.p50_ms,
            p.p99_ms,
            p.relay_cpu_ms_per_round_trip,
            opt(r.db_cpu_ms_per_round_trip, 3),
            opt(r.statements_per_round_trip, 2),
            p.errors
        );
    }
    for r in rows {
        let Some(pg) = &r.report.pg else { continue };
        println!(
            "\nPostgreSQL, {} relay(s){}, {} × {}: the statements run most often in the window",
            r.relays,
            r.held_cores
                .map(|c| format!(" held to {c} core"))
                .unwrap_or_default(),
            r.report.agents,
            r.report.users
        );
        let rt = r.report.round_trips.max(1) as f64;
        println!("| calls/rt | ms total | statement |\n|---:|---:|---|");
        for (calls, ms, query) in &pg.top {
            println!(
                "| {:.3} | {:.1} | `{}` |",
                *calls as f64 / rt,
                ms,
                query.replace('|', "\\|")
            );
        }
        println!("\n| table | inserted/rt | updated/rt | of which HOT | deleted/rt | dead rows at the end |\n|---|---:|---:|---:|---:|---:|");
        for (t, ins, upd, hot, del, dead) in &pg.tables {
            println!(
                "| {t} | {:.2} | {:.2} | {:.0} % | {:.2} | {dead} |",
                *ins as f64 / rt,
                *upd as f64 / rt,
                if *upd > 0 {
                    *hot as f64 * 100.0 / *upd as f64
                } else {
                    0.0
                },
                *del as f64 / rt
            );
        }
    }
}
