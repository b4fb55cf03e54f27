//! A relay under test: started as a child process on a free port against a
//! temporary database, with its CPU time and peak RSS read from /proc.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN: &str = "bench-admin-token";

/// Where a started relay keeps its data.
enum Database<'a> {
    File(&'a Path),
    Url(&'a str),
}

pub struct RelayProc {
    child: Child,
    pub base: String,
    pub ready_after: Duration,
}

impl RelayProc {
    /// Starts `bin` on `db` with `[storage] synchronous = sync`; waits for /health.
    pub async fn start(bin: &Path, db: &Path, sync: &str, dir: &Path) -> RelayProc {
        Self::start_with(bin, db, sync, dir, "").await
    }

    /// Like `start`, with more configuration (TOML sections) appended.
    pub async fn start_with(
        bin: &Path,
        db: &Path,
        sync: &str,
        dir: &Path,
        extra: &str,
    ) -> RelayProc {
        Self::start_on(bin, Database::File(db), sync, dir, extra).await
    }

    /// Starts `bin` on a PostgreSQL database (several may share it).
    pub async fn start_postgres(bin: &Path, url: &str, dir: &Path) -> RelayProc {
        Self::start_on(bin, Database::Url(url), "full", dir, "").await
    }

    async fn start_on(
        bin: &Path,
        db: Database<'_>,
        sync: &str,
        dir: &Path,
        extra: &str,
    ) -> RelayProc {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let config = dir.join(format!("relay-{port}.toml"));
        std::fs::write(
            &config,
            format!(
                "[storage]\nsynchronous = \"{sync}\"\n[delivery]\nlong_poll_max_secs = 30\n[ws]\nmax_connections = 4096\n\
                 [limits]\nmax_connections_per_ip = 0\n\
                 [rate_limits]\napp_per_sec = 0\nuser_per_sec = 0\nagent_per_sec = 0\nfailed_auth_per_min = 0\n\
                 [webhooks]\nallowed_networks = [\"127.0.0.1/32\"]\n{extra}"
            ),
        )
        .expect("write relay config");
        let log = std::fs::File::create(dir.join(format!("relay-{port}.log"))).expect("relay log");
        let started = Instant::now();
        let mut child = Command::new(bin)
            .args(["serve", "--port", &port.to_string(), "--config"])
            .arg(&config)
            .args(match db {
                Database::File(path) => [std::ffi::OsStr::new("--db"), path.as_os_str()],
                Database::Url(url) => [
                    std::ffi::OsStr::new("--database-url"),
                    std::ffi::OsStr::new(url),
                ],
            })
            .env("ADMIN_TOKEN", ADMIN)
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (build it: cargo build --release)",
                    bin.display()
                )
            });
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let health = format!("{base}/health");
        await_ready(
            &mut child,
            "the relay",
            &dir.join(format!("relay-{port}.log")),
            Duration::from_secs(120),
            async || matches!(http.get(&health).send().await, Ok(r) if r.status().is_success()),
        )
        .await;
        RelayProc {
            ready_after: started.elapsed(),
            child,
            base,
        }
    }

    /// Creates an app through the admin API; returns its token.
    pub async fn app_token(&self, name: &str) -> String {
        let app: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/apps", self.base))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .expect("create app")
            .json()
            .await
            .expect("app json");
        app["token"].as_str().expect("token").to_owned()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU seconds the relay has used.
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs_of(self.pid())
    }

    /// Holds the relay to `cores` of CPU, as if it ran on a host that size:
    /// a cgroup (v1 `cpu` controller, `cfs_quota_us` of a 100 ms period) of
    /// its own, removed when the returned hold is dropped after the relay
    /// stopped.
    pub fn hold_cpu(&self, cores: f64) -> CpuHold {
        let dir = PathBuf::from(format!(
            "/sys/fs/cgroup/cpu/clawrelay-bench-{}-{}",
            std::process::id(),
            self.pid()
        ));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("create {} (cgroup v1 cpu controller): {e}", dir.display()));
        std::fs::write(dir.join("cpu.cfs_period_us"), "100000").expect("cpu.cfs_period_us");
        std::fs::write(
            dir.join("cpu.cfs_quota_us"),
            ((cores * 100_000.0) as u64).to_string(),
        )
        .expect("cpu.cfs_quota_us");
        std::fs::write(dir.join("cgroup.procs"), self.pid().to_string()).expect("cgroup.procs");
        CpuHold(dir)
    }

    /// Peak resident set size, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        status_mib_of(self.pid(), "VmHWM:")
    }

    /// Resident set size now, in MiB.
    pub fn rss_mib(&self) -> f64 {
        status_mib_of(self.pid(), "VmRSS:")
    }

    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU seconds process `pid` has used.
/// Polls `ready` until it holds; panics with the process's log if the
/// process exits first, or if `limit` passes.
pub async fn await_ready(
    child: &mut Child,
    what: &str,
    log: &Path,
    limit: Duration,
    mut ready: impl AsyncFnMut() -> bool,
) {
    let started = Instant::now();
    while !ready().await {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} exited at start ({status}):\n{log}");
        }
        assert!(started.elapsed() < limit, "{what} did not become ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn cpu_secs_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clock_ticks()
}

/// A `/proc/<pid>/status` field in kB (VmHWM:, VmRSS:), in MiB.
pub fn status_mib_of(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// The relay binary built next to this example (target/<profile>/clawrelay).
pub fn default_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    profile_dir.join("clawrelay")
}

/// The median time of a 4 KiB write + fdatasync on the disk of `dir`, in ms.
pub fn fsync_median_ms(dir: &Path) -> f64 {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).expect("probe file");
    let block = vec![7u8; 4096];
    let mut times: Vec<f64> = (0..200)
        .map(|_| {
            let t = Instant::now();
            file.write_all(&block).expect("write");
            file.sync_data().expect("fdatasync");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    let _ = std::fs::remove_file(&path);
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Percentile `q` (0..1) of sorted samples.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// A relay's CPU limit (see [`RelayProc::hold_cpu`]).
pub struct CpuHold(PathBuf);

impl Drop for CpuHold {
    fn drop(&mut self) {
        // Empty once its process ended; retried briefly while it exits.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
