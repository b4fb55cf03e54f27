//! Logging: `tracing` to stderr, filtered by `--log-level` / `LOG_LEVEL`
//! (a level like `info`, or a full filter like `clawrelay=debug,tower_http=info`),
//! as text or, with `--log-format json`, one JSON object per line. Text is
//! coloured only on a terminal (journald and `docker logs` get plain text).

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a filter: every directive is a level, or `target=level`. (A bare
/// word that is not a level would be taken as a target name: a mistyped
/// `inof` would silently switch every log line off.)
pub fn check_filter(filter: &str) -> Result<(), String> {
    let is_level = |s: &str| LEVELS.contains(&s.trim().to_ascii_lowercase().as_str());
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = match directive.rsplit_once('=') {
            Some((_, level)) => level,
            None => directive,
        };
        if !is_level(level) {
            return Err(format!(
                "invalid log level `{filter}`: `{level}` is not one of {} (per target: target=level)",
                LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(level: &str, format: LogFormat) -> Result<(), String> {
    check_filter(level)?;
    let filter =
        EnvFilter::try_new(level).map_err(|e| format!("invalid log level `{level}`: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    }
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::check_filter;

    #[test]
    fn mistyped_levels_are_refused_and_filters_pass() {
        assert!(check_filter("info").is_ok());
        assert!(check_filter("WARN").is_ok());
        assert!(check_filter("clawrelay=debug,tower_http=info").is_ok());
        let e = check_filter("inof").unwrap_err();
        assert!(e.contains("`inof`"), "{e}");
        assert!(check_filter("clawrelay=verbose").is_err());
    }
}
