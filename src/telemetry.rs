//! Logging: `tracing` to stderr, filtered by `--log-level` / `LOG_LEVEL`
//! (a level like `info`, or a full filter like `clawrelay=debug,tower_http=info`).

use tracing_subscriber::EnvFilter;

pub fn init(level: &str) -> Result<(), String> {
    let filter =
        EnvFilter::try_new(level).map_err(|e| format!("invalid log level `{level}`: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|e| e.to_string())
}
