//! What PostgreSQL did over a measured window: its CPU (every `postgres`
//! process's user and system time from `/proc`, with what exited backends
//! left in the postmaster's children's time) and its statements
//! (`pg_stat_statements`, top-level statements only: a batched statement
//! counts once; BEGIN, COMMIT, LISTEN and the background tasks' statements
//! count too).
//!
//! The cluster must load the extension at start:
//! [`SERVER_OPTIONS`] in `PG_SERVER_OPTIONS` for `scripts/pg.sh`.

use serde::Serialize;
use sqlx::PgPool;

/// Server settings the probe needs (`scripts/pg.sh`'s `PG_SERVER_OPTIONS`).
pub const SERVER_OPTIONS: &str = "-c shared_preload_libraries=pg_stat_statements \
     -c pg_stat_statements.track=top -c pg_stat_statements.max=1000";

/// PostgreSQL's share of a window.
#[derive(Debug, Serialize, Clone)]
pub struct PgNumbers {
    pub cpu_secs: f64,
    pub statements: i64,
    /// The statements run most often: (calls, total ms, the statement).
    pub top: Vec<(i64, f64, String)>,
    /// Row changes per table over the window.
    pub tables: Vec<TableChanges>,
}

/// (table, inserted, updated, of which HOT, deleted, dead rows at the end).
pub type TableChanges = (String, i64, i64, i64, i64, i64);

pub struct Probe {
    pool: PgPool,
    cpu0: std::sync::Mutex<f64>,
    tables0: std::sync::Mutex<Vec<TableChanges>>,
}

const TABLES: &str =
    "SELECT relname::text, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, n_dead_tup
     FROM pg_stat_user_tables WHERE n_tup_ins + n_tup_upd + n_tup_del > 0 ORDER BY relname";

impl Probe {
    pub async fn connect(url: &str) -> Probe {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .expect("connect to PostgreSQL");
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&pool)
            .await
            .expect("pg_stat_statements (is it in shared_preload_libraries?)");
        Probe {
            pool,
            cpu0: std::sync::Mutex::new(0.0),
            tables0: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The window begins.
    pub async fn start(&self) {
        sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(&self.pool)
            .await
            .expect("reset pg_stat_statements");
        *self.tables0.lock().unwrap() = self.tables().await;
        *self.cpu0.lock().unwrap() = postgres_cpu_secs();
    }

    async fn tables(&self) -> Vec<TableChanges> {
        // Table statistics reach the view within the stats interval.
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&self.pool)
            .await
            .ok();
        sqlx::query_as(TABLES)
            .fetch_all(&self.pool)
            .await
            .expect("read pg_stat_user_tables")
    }

    /// The window ended: what PostgreSQL did in it.
    pub async fn finish(&self) -> PgNumbers {
        let cpu_secs = postgres_cpu_secs() - *self.cpu0.lock().unwrap();
        let rows: Vec<(i64, f64, String)> = sqlx::query_as(
            "SELECT calls, total_exec_time, query FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND query NOT LIKE '%pg_stat_statements%'
             ORDER BY CASE WHEN $1 THEN total_exec_time ELSE calls END DESC",
        )
        .bind(std::env::var("BENCH_PG_BY_TIME").is_ok())
        .fetch_all(&self.pool)
        .await
        .expect("read pg_stat_statements");
        let statements = rows.iter().map(|r| r.0).sum();
        let top = rows
            .into_iter()
            .take(
                std::env::var("BENCH_PG_TOP")
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(12),
            )
            .map(|(calls, ms, query)| {
                let query: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
                (calls, ms, query.chars().take(110).collect())
            })
            .collect();
        // Statistics are flushed by backends at most every 500 ms.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let before = self.tables0.lock().unwrap().clone();
        let tables = self
            .tables()
            .await
            .into_iter()
            .map(|(t, i, u, h, d, dead)| {
                let b = before.iter().find(|b| b.0 == t);
                let (bi, bu, bh, bd) = b.map(|b| (b.1, b.2, b.3, b.4)).unwrap_or_default();
                (t, i - bi, u - bu, h - bh, d - bd, dead)
            })
            .collect();
        PgNumbers {
            cpu_secs,
            statements,
            top,
            tables,
        }
    }
}

/// User + system CPU seconds of every PostgreSQL process now, with those of
/// the postmaster's exited children.
pub fn postgres_cpu_secs() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut total = 0.0;
    for pid in dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        if !std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "postgres")
        {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // utime, stime, cutime, cstime (children: only the postmaster has
        // them, its exited backends).
        total += (ticks(11) + ticks(12) + ticks(13) + ticks(14)) / super::relay::clock_ticks();
    }
    total
}
