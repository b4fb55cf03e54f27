//! Configuration: typed sections read from a TOML file, then overridden by
//! `CLAWRELAY_<SECTION>__<KEY>` environment variables, then by command-line
//! flags and their own environment variables (see `main.rs`).
//! Every key has a default, so no file is needed; `config.example.toml`
//! documents each one. Unknown keys and out-of-range values are errors that
//! name the key.

use crate::store::Synchronous;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: Server,
    pub storage: Storage,
    pub delivery: Delivery,
    pub clients: Clients,
    pub conversations: Conversations,
    pub inbound: Inbound,
    pub limits: Limits,
    pub auth: Auth,
    pub tasks: Tasks,
    pub ws: Ws,
    pub sse: Sse,
    pub idempotency: Idempotency,
    pub metrics: MetricsListener,
    pub rate_limits: RateLimits,
    pub webhooks: Webhooks,
    pub sessions: Sessions,
    pub webchat: Webchat,
    pub console: Console,
    pub attachments: Attachments,
    pub openai: OpenAi,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    pub bind: String,
    pub port: u16,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` name the client.
    pub trusted_proxies: Vec<String>,
    /// Not read from the file: `--admin-token` / `ADMIN_TOKEN` only.
    #[serde(skip)]
    pub admin_token: Option<Secret>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            bind: "127.0.0.1".to_owned(),
            port: 9876,
            trusted_proxies: Vec::new(),
            admin_token: None,
        }
    }
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    pub path: PathBuf,
    /// A PostgreSQL URL: when set, the relay keeps its data there instead of
    /// in the SQLite file `path`. Empty in a file (`url = ""`): none.
    #[serde(deserialize_with = "empty_is_none", serialize_with = "none_is_empty")]
    pub url: Option<String>,
    /// Connections to PostgreSQL this relay opens at most.
    pub max_connections: u32,
    pub synchronous: Synchronous,
    /// The write-ahead log is checkpointed and truncated past this size.
    pub wal_limit_mb: u64,
}

/// An empty string (a key documented but not set) reads as None.
fn empty_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v: Option<String> = Option::deserialize(d)?;
    Ok(v.filter(|s| !s.is_empty()))
}

/// None is written as an empty string (TOML has no null).
fn none_is_empty<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.as_deref().unwrap_or(""))
}

/// Debug shows the URL without its password.
impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("path", &self.path)
            .field("url", &self.url.as_deref().map(redact_url))
            .field("max_connections", &self.max_connections)
            .field("synchronous", &self.synchronous)
            .field("wal_limit_mb", &self.wal_limit_mb)
            .finish()
    }
}

impl Storage {
    /// The PostgreSQL URL, if PostgreSQL is selected.
    pub fn postgres_url(&self) -> Option<&str> {
        self.url.as_deref().filter(|u| !u.is_empty())
    }

    /// The database as messages name it: the SQLite file, or the
    /// PostgreSQL URL without its password.
    pub fn describe(&self) -> String {
        match self.postgres_url() {
            Some(url) => redact_url(url),
            None => {
                let path = &self.path;
                std::path::absolute(path)
                    .unwrap_or_else(|_| path.clone())
                    .display()
                    .to_string()
            }
        }
    }

    pub fn options(&self) -> crate::store::Options {
        crate::store::Options {
            synchronous: self.synchronous,
            wal_limit: self.wal_limit_mb << 20,
        }
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            path: PathBuf::from("clawrelay.db"),
            url: None,
            max_connections: 16,
            synchronous: Synchronous::Full,
            wal_limit_mb: 64,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Delivery {
    pub lease_secs: u64,
    /// The longest an agent's activity (or explicit renewals) keeps one
    /// claim alive, from the claim.
    pub max_lease_secs: u64,
    pub max_attempts: u32,
    pub long_poll_max_secs: u64,
    pub max_pending: u64,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            lease_secs: 300,
            max_lease_secs: 3600,
            max_attempts: 5,
            long_poll_max_secs: 60,
            max_pending: 100_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Clients {
    pub stale_after_secs: u64,
    pub disconnected_after_secs: u64,
}

impl Default for Clients {
    fn default() -> Self {
        Clients {
            stale_after_secs: 30,
            disconnected_after_secs: 300,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Conversations {
    pub ttl_secs: u64,
    pub retention_secs: u64,
    pub cleanup_interval_secs: u64,
}

impl Default for Conversations {
    fn default() -> Self {
        Conversations {
            ttl_secs: 86_400,
            retention_secs: 30 * 86_400,
            cleanup_interval_secs: 300,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Idempotency {
    pub ttl_secs: u64,
}

impl Default for Idempotency {
    fn default() -> Self {
        Idempotency { ttl_secs: 86_400 }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Inbound {
    pub public: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_text_bytes: usize,
    pub max_body_bytes: usize,
    pub request_timeout_secs: u64,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub header_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_text_bytes: 65_536,
            max_body_bytes: 1_048_576,
            request_timeout_secs: 30,
            max_connections: 8192,
            max_connections_per_ip: 256,
            header_timeout_secs: 10,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    pub cache_ttl_secs: u64,
}

impl Default for Auth {
    fn default() -> Self {
        Auth { cache_ttl_secs: 10 }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tasks {
    pub maintenance_interval_secs: u64,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks {
            maintenance_interval_secs: 5,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ws {
    pub max_connections: usize,
    pub ping_interval_secs: u64,
    pub idle_timeout_secs: u64,
    pub connect_timeout_secs: u64,
    pub max_frame_bytes: usize,
    pub send_timeout_secs: u64,
    pub outgoing_buffer: usize,
}

impl Default for Ws {
    fn default() -> Self {
        Ws {
            max_connections: 1024,
            ping_interval_secs: 20,
            idle_timeout_secs: 60,
            connect_timeout_secs: 10,
            max_frame_bytes: 1_048_576,
            send_timeout_secs: 10,
            outgoing_buffer: 256,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sse {
    pub keepalive_secs: u64,
}

impl Default for Sse {
    fn default() -> Self {
        Sse { keepalive_secs: 15 }
    }
}

/// `[openai]`: the OpenAI-compatible door (`/v1/chat/completions`,
/// `/v1/models`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAi {
    /// Serve the two endpoints.
    pub enabled: bool,
    /// How long a request waits for the agent's answer, in seconds; past
    /// it the request ends (504, or an error event in a stream) and the
    /// answer is still stored when it comes.
    pub reply_timeout_secs: u64,
    /// `/v1/models` lists each agent's name beside `clawrelay`; false:
    /// only `clawrelay` (a `model` naming an agent still picks it).
    pub list_agents: bool,
}

impl Default for OpenAi {
    fn default() -> Self {
        OpenAi {
            enabled: true,
            reply_timeout_secs: 300,
            list_agents: true,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsListener {
    /// `host:port` of a separate listener serving `/metrics` without a token;
    /// empty: none (`GET /metrics` on the main port needs the admin token).
    pub bind: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    pub app_per_sec: u32,
    pub app_burst: u32,
    pub user_per_sec: u32,
    pub user_burst: u32,
    pub agent_per_sec: u32,
    pub agent_burst: u32,
    pub failed_auth_per_min: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            app_per_sec: 500,
            app_burst: 1000,
            user_per_sec: 20,
            user_burst: 40,
            agent_per_sec: 1000,
            agent_burst: 2000,
            failed_auth_per_min: 20,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Webhooks {
    /// The key that encrypts endpoint secrets at rest; empty: the database
    /// path with `.webhook-key` appended.
    pub key_file: PathBuf,
    /// Allow endpoints on private, loopback and link-local addresses.
    pub allow_private: bool,
    /// Networks (CIDR) allowed even though they are private.
    pub allowed_networks: Vec<String>,
    pub timeout_secs: u64,
    /// Attempts in flight at once per endpoint (different conversations).
    pub max_in_flight: usize,
    pub retry_initial_ms: u64,
    pub retry_max_secs: u64,
    pub retry_horizon_secs: u64,
    pub disable_after_failures: u32,
    pub rotation_grace_secs: u64,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks {
            key_file: PathBuf::new(),
            allow_private: false,
            allowed_networks: Vec::new(),
            timeout_secs: 10,
            max_in_flight: 16,
            retry_initial_ms: 5000,
            retry_max_secs: 3600,
            retry_horizon_secs: 86_400,
            disable_after_failures: 100,
            rotation_grace_secs: 86_400,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sessions {
    /// A user session's lifetime when `POST /sessions` asks for none, and a
    /// login's.
    pub ttl_secs: u64,
    /// The longest lifetime `POST /sessions` or a refresh may ask for.
    pub max_ttl_secs: u64,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            ttl_secs: 3600,
            max_ttl_secs: 86_400,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Attachments {
    /// The largest upload, in bytes; a bigger one is refused with 413.
    pub max_bytes: u64,
    /// The most attachments one message may carry.
    pub max_per_message: usize,
    /// The bytes of live attachments one app (with its users' uploads) or
    /// one agent may hold, in MiB; 0: no quota.
    pub quota_mb: u64,
    /// How long an upload no message references is kept, in seconds.
    pub unreferenced_ttl_secs: u64,
}

impl Default for Attachments {
    fn default() -> Self {
        Attachments {
            max_bytes: 10 << 20,
            max_per_message: 10,
            quota_mb: 1024,
            unreferenced_ttl_secs: 86_400,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Webchat {
    /// Serve the chat page at `/chat` (and `/`).
    pub enabled: bool,
    /// The page's title.
    pub title: String,
    /// Mark the login cookie `Secure` even when the request did not come
    /// over https through a trusted proxy (`X-Forwarded-Proto: https`).
    pub secure_cookie: bool,
    /// Who may show the page in a frame (CSP `frame-ancestors` sources,
    /// e.g. "https://www.example.com"); empty: nobody.
    pub frame_ancestors: Vec<String>,
    /// The app whose accounts anyone may create with `POST /signup`; empty:
    /// no sign-up (accounts come from `clawrelay user create`).
    pub signup_app: String,
}

impl Default for Webchat {
    fn default() -> Self {
        Webchat {
            enabled: false,
            title: "clawrelay".to_owned(),
            secure_cookie: false,
            frame_ancestors: Vec::new(),
            signup_app: String::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Console {
    /// Serve the admin console at `/admin`.
    pub enabled: bool,
    /// How long a console login lasts without activity (minutes; the page
    /// extends it while it is used).
    pub session_minutes: u64,
    /// Mark the console's cookie `Secure` even when the request did not come
    /// over https through a trusted proxy.
    pub secure_cookie: bool,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            enabled: true,
            session_minutes: 30,
            secure_cookie: false,
        }
    }
}

impl Console {
    /// A console session's lifetime, in ms.
    pub fn session_ms(&self) -> i64 {
        i64::try_from(self.session_minutes).map_or(i64::MAX, |m| m.saturating_mul(60_000))
    }
}

impl Config {
    /// Where the key that encrypts webhook secrets lives.
    pub fn webhook_key_file(&self) -> PathBuf {
        if self.webhooks.key_file.as_os_str().is_empty() {
            let mut path = self.storage.path.clone().into_os_string();
            path.push(".webhook-key");
            PathBuf::from(path)
        } else {
            self.webhooks.key_file.clone()
        }
    }
}

/// A database URL fit to show: its password (in the authority or as a
/// `password` parameter) replaced by `***`. What does not parse as a URL is
/// not shown at all.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return "(a URL that does not parse)".to_owned();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// A secret string whose `Debug` prints nothing.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("invalid environment variable {var}: {message}")]
    Env { var: String, message: String },
}

/// The prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "CLAWRELAY_";

impl Config {
    /// Reads `path` (all keys optional) or, with no path, the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::iter::empty())
    }

    /// Reads `path`, then applies `CLAWRELAY_<SECTION>__<KEY>=value`
    /// variables from `env` (a value is read as TOML: `60`, `true`,
    /// `"text"`, or else taken as a plain string).
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = match path {
            None => toml::Table::new(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                // Parsed typed first, for errors that point at a line and key.
                toml::from_str::<Config>(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_owned(),
                    message: match e.span() {
                        Some(span) => format!("{}{}", key_at(&text, span.start), e.message()),
                        None => e.message().to_owned(),
                    },
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_owned(),
                    message: e.message().to_owned(),
                })?
            }
        };
        // A relative [storage] path in a file is relative to that file, not
        // to wherever the command happens to run.
        for (section, key) in [("storage", "path"), ("webhooks", "key_file")] {
            if let (Some(path), Some(toml::Value::Table(t))) = (path, table.get_mut(section)) {
                if let Some(toml::Value::String(file)) = t.get_mut(key) {
                    let dir = path.parent().unwrap_or(Path::new(""));
                    if !file.is_empty()
                        && Path::new(file.as_str()).is_relative()
                        && !dir.as_os_str().is_empty()
                    {
                        *file = dir.join(file.as_str()).to_string_lossy().into_owned();
                    }
                }
            }
        }
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(var, _)| env_key(var).is_some())
            .collect();
        let base = table.clone();
        for (var, value) in &env {
            apply_env(&mut table, var, value)?;
        }
        let config: Result<Config, _> = toml::Value::Table(table).try_into();
        config.map_err(|e: toml::de::Error| {
            // Name the variable: the first that fails on its own.
            let culprit = env
                .iter()
                .find(|(var, value)| {
                    let mut one = base.clone();
                    apply_env(&mut one, var, value).is_err()
                        || toml::Value::Table(one).try_into::<Config>().is_err()
                })
                .map(|(var, _)| var.clone())
                .unwrap_or_else(|| "CLAWRELAY_*".into());
            ConfigError::Env {
                var: culprit,
                message: e.message().to_owned(),
            }
        })
    }

    /// The `CLAWRELAY_…` variables of `env` that are not configuration
    /// (`CLAWRELAY_<SECTION>__<KEY>`) and so are ignored: for a warning.
    pub fn ignored_env_vars(env: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
        env.into_iter()
            .map(|(var, _)| var)
            .filter(|var| var.starts_with(ENV_PREFIX) && env_key(var).is_none())
            .collect()
    }

    /// The configuration as TOML, as `config check` prints it (a database
    /// password is not shown).
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        shown.storage.url = self.storage.url.as_deref().map(redact_url);
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }

    /// Checks ranges and relations between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError::Invalid(msg));
        if self.server.bind.parse::<std::net::IpAddr>().is_err() {
            return bad(format!(
                "server.bind: `{}` is not an IP address",
                self.server.bind
            ));
        }
        if let Some(url) = self.storage.postgres_url() {
            let scheme = url::Url::parse(url).map(|u| u.scheme().to_owned());
            if !matches!(scheme.as_deref(), Ok("postgres" | "postgresql")) {
                return bad(format!(
                    "storage.url: `{}` is not a PostgreSQL URL; expected postgres://user:password@host:port/database (or leave it out to use the SQLite file storage.path)",
                    redact_url(url)
                ));
            }
        }
        if !(1..=1000).contains(&self.storage.max_connections) {
            return bad("storage.max_connections must be between 1 and 1000".into());
        }
        if !(1..=1 << 20).contains(&self.storage.wal_limit_mb) {
            return bad("storage.wal_limit_mb must be between 1 and 1048576".into());
        }
        if self.delivery.lease_secs == 0 {
            return bad("delivery.lease_secs must be at least 1".into());
        }
        if self.delivery.max_lease_secs < self.delivery.lease_secs {
            return bad(format!(
                "delivery.max_lease_secs ({}) must be at least delivery.lease_secs ({})",
                self.delivery.max_lease_secs, self.delivery.lease_secs
            ));
        }
        if self.delivery.max_attempts == 0 {
            return bad("delivery.max_attempts must be at least 1".into());
        }
        if self.delivery.max_pending == 0 {
            return bad("delivery.max_pending must be at least 1".into());
        }
        if self.limits.max_connections == 0 {
            return bad("limits.max_connections must be at least 1".into());
        }
        if self.limits.header_timeout_secs == 0 {
            return bad("limits.header_timeout_secs must be at least 1".into());
        }
        if let Err(e) = crate::proxy::TrustedProxies::parse(&self.server.trusted_proxies) {
            return bad(format!("server.trusted_proxies: {e}"));
        }
        if self.limits.request_timeout_secs == 0 {
            return bad("limits.request_timeout_secs must be at least 1".into());
        }
        if self.clients.stale_after_secs == 0 {
            return bad("clients.stale_after_secs must be at least 1".into());
        }
        if self.clients.disconnected_after_secs < self.clients.stale_after_secs {
            return bad(
                "clients.disconnected_after_secs must not be less than clients.stale_after_secs"
                    .into(),
            );
        }
        if self.conversations.ttl_secs == 0 {
            return bad("conversations.ttl_secs must be at least 1".into());
        }
        if self.conversations.cleanup_interval_secs == 0 {
            return bad("conversations.cleanup_interval_secs must be at least 1".into());
        }
        if self.idempotency.ttl_secs == 0 {
            return bad("idempotency.ttl_secs must be at least 1".into());
        }
        if self.limits.max_text_bytes == 0 {
            return bad("limits.max_text_bytes must be at least 1".into());
        }
        if self.limits.max_body_bytes < 1024 {
            return bad("limits.max_body_bytes must be at least 1024".into());
        }
        if self.tasks.maintenance_interval_secs == 0 {
            return bad("tasks.maintenance_interval_secs must be at least 1".into());
        }
        let ws = &self.ws;
        if ws.max_connections == 0 {
            return bad("ws.max_connections must be at least 1".into());
        }
        if ws.ping_interval_secs == 0 || ws.connect_timeout_secs == 0 || ws.send_timeout_secs == 0 {
            return bad("ws.ping_interval_secs, ws.connect_timeout_secs and ws.send_timeout_secs must be at least 1".into());
        }
        if ws.idle_timeout_secs <= ws.ping_interval_secs {
            return bad("ws.idle_timeout_secs must be more than ws.ping_interval_secs".into());
        }
        if ws.max_frame_bytes < 1024 {
            return bad("ws.max_frame_bytes must be at least 1024".into());
        }
        if ws.outgoing_buffer == 0 {
            return bad("ws.outgoing_buffer must be at least 1".into());
        }
        if !self.metrics.bind.is_empty()
            && self.metrics.bind.parse::<std::net::SocketAddr>().is_err()
        {
            return bad(format!(
                "metrics.bind: `{}` is not host:port",
                self.metrics.bind
            ));
        }
        if self.sse.keepalive_secs == 0 {
            return bad("sse.keepalive_secs must be at least 1".into());
        }
        if !(1..=86_400).contains(&self.openai.reply_timeout_secs) {
            return bad("openai.reply_timeout_secs must be between 1 and 86400".into());
        }
        let sessions = &self.sessions;
        if sessions.ttl_secs == 0 || sessions.ttl_secs > sessions.max_ttl_secs {
            return bad(
                "sessions.ttl_secs must be at least 1 and at most sessions.max_ttl_secs".into(),
            );
        }
        if sessions.max_ttl_secs > 90 * 86_400 {
            return bad("sessions.max_ttl_secs must be at most 7776000 (90 days)".into());
        }
        for source in &self.webchat.frame_ancestors {
            let ok = !source.is_empty()
                && source
                    .chars()
                    .all(|c| c.is_ascii_graphic() && !matches!(c, ';' | ',' | '\'' | '"'));
            if !ok && source != "'self'" {
                return bad(format!(
                    "webchat.frame_ancestors: `{source}` is not a CSP source (e.g. https://www.example.com or 'self')"
                ));
            }
        }
        if !self.webchat.signup_app.is_empty()
            && crate::ids::AppId::parse_any(&self.webchat.signup_app).is_none()
        {
            return bad(format!(
                "webchat.signup_app: `{}` is not an app id (app_…)",
                self.webchat.signup_app
            ));
        }
        if !(1..=1440).contains(&self.console.session_minutes) {
            return bad("console.session_minutes must be 1 to 1440 (a day)".into());
        }
        if self.webchat.title.len() > 200 {
            return bad("webchat.title must be at most 200 bytes".into());
        }
        let at = &self.attachments;
        if at.max_bytes == 0 || at.max_bytes > 1 << 30 {
            return bad(
                "attachments.max_bytes must be at least 1 and at most 1073741824 (1 GiB)".into(),
            );
        }
        if at.max_per_message > 100 {
            return bad("attachments.max_per_message must be at most 100".into());
        }
        if at.unreferenced_ttl_secs == 0 {
            return bad("attachments.unreferenced_ttl_secs must be at least 1".into());
        }
        let wh = &self.webhooks;
        if let Err(e) = crate::webhook::target::Policy::new(wh.allow_private, &wh.allowed_networks)
        {
            return bad(format!("webhooks.allowed_networks: {e}"));
        }
        if wh.timeout_secs == 0 || wh.max_in_flight == 0 || wh.retry_initial_ms == 0 {
            return bad("webhooks.timeout_secs, webhooks.max_in_flight and webhooks.retry_initial_ms must be at least 1".into());
        }
        if wh.timeout_secs > 3600 || wh.retry_initial_ms > 86_400_000 {
            return bad("webhooks.timeout_secs must be at most 3600 and webhooks.retry_initial_ms at most 86400000".into());
        }
        let day = 86_400;
        if wh.retry_max_secs > 7 * day
            || wh.retry_horizon_secs > 90 * day
            || wh.rotation_grace_secs > 30 * day
        {
            return bad("webhooks.retry_max_secs must be at most 604800 (7 days), webhooks.retry_horizon_secs at most 7776000 (90 days), webhooks.rotation_grace_secs at most 2592000 (30 days)".into());
        }
        if wh.retry_max_secs.saturating_mul(1000) < wh.retry_initial_ms {
            return bad(
                "webhooks.retry_max_secs must not be less than webhooks.retry_initial_ms".into(),
            );
        }
        Ok(())
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.delivery.lease_secs)
    }
}

/// The section and key a `CLAWRELAY_<SECTION>__<KEY>` variable names; None
/// for any other variable (`CLAWRELAY_URL` of some other tool, say).
fn env_key(var: &str) -> Option<(String, String)> {
    let (section, key) = var.strip_prefix(ENV_PREFIX)?.split_once("__")?;
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    (ok(section) && ok(key)).then(|| (section.to_ascii_lowercase(), key.to_ascii_lowercase()))
}

/// Sets the key `var` names to `value` (read as TOML: `60`, `true`,
/// `"text"`, `["a", "b"]`, or else taken as a plain string).
fn apply_env(table: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let Some((section, key)) = env_key(var) else {
        return Ok(());
    };
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or(toml::Value::String(value.to_owned()));
    let entry = table
        .entry(section.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(entry) = entry else {
        return Err(ConfigError::Env {
            var: var.to_owned(),
            message: format!("[{section}] is not a section"),
        });
    };
    entry.insert(key, parsed);
    Ok(())
}

/// "line N, [section] key: " for the line an error points at, so the message
/// names the key even when the parser's own message does not.
fn key_at(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    let section = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .unwrap_or("");
    match line.split_once('=') {
        Some((key, _)) => format!("line {line_no}, {section} {}: ", key.trim()),
        None => format!("line {line_no}: "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        toml::from_str::<Config>(text).map_err(|e| e.message().to_owned())
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let c = Config::default();
        assert_eq!((c.server.bind.as_str(), c.server.port), ("127.0.0.1", 9876));
        assert_eq!(c.storage.path, PathBuf::from("clawrelay.db"));
        assert_eq!(c.storage.synchronous, Synchronous::Full);
        assert_eq!(c.delivery.lease_secs, 300);
        assert_eq!(c.delivery.max_attempts, 5);
        assert_eq!(c.delivery.long_poll_max_secs, 60);
        assert_eq!(c.clients.stale_after_secs, 30);
        assert_eq!(c.clients.disconnected_after_secs, 300);
        assert_eq!(c.conversations.ttl_secs, 86_400);
        assert!(!c.inbound.public);
        assert_eq!(c.limits.max_text_bytes, 65_536);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn webhook_timings_are_bounded() {
        let mut c = Config::default();
        c.webhooks.retry_max_secs = u64::MAX;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("webhooks.retry_max_secs"), "{e}");
        let mut c = Config::default();
        c.webhooks.allowed_networks = vec!["not a network".into()];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("webhooks.allowed_networks"), "{e}");
    }

    #[test]
    fn the_example_file_is_the_defaults() {
        let example = include_str!("../config.example.toml");
        let c = parse(example).expect("config.example.toml parses");
        let d = Config::default();
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
    }

    #[test]
    fn environment_variables_override_the_file() {
        let env = [
            ("CLAWRELAY_DELIVERY__LEASE_SECS".to_owned(), "42".to_owned()),
            ("CLAWRELAY_INBOUND__PUBLIC".to_owned(), "true".to_owned()),
            (
                "CLAWRELAY_STORAGE__PATH".to_owned(),
                "/var/lib/x.db".to_owned(),
            ),
            ("UNRELATED".to_owned(), "1".to_owned()),
        ];
        let c = Config::load_with_env(None, env).unwrap();
        assert_eq!(c.delivery.lease_secs, 42);
        assert!(c.inbound.public);
        assert_eq!(c.storage.path, PathBuf::from("/var/lib/x.db"));
        assert_eq!(c.delivery.max_attempts, 5);
    }

    #[test]
    fn bad_environment_variables_are_named() {
        let e = Config::load_with_env(
            None,
            [("CLAWRELAY_DELIVERY__LEASE_SEC".to_owned(), "4".to_owned())],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("lease_sec"), "{e}");
        assert!(e.contains("CLAWRELAY_DELIVERY__LEASE_SEC"), "{e}");
        // Among several variables, the one at fault is named.
        let e = Config::load_with_env(
            None,
            [
                ("CLAWRELAY_DELIVERY__LEASE_SECS".to_owned(), "4".to_owned()),
                ("CLAWRELAY_SERVER__PORT".to_owned(), "many".to_owned()),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("CLAWRELAY_SERVER__PORT"), "{e}");
    }

    #[test]
    fn other_clawrelay_variables_are_ignored_and_reported() {
        let env = [
            ("CLAWRELAY_URL".to_owned(), "http://x".to_owned()),
            ("CLAWRELAY_DELIVERY__LEASE_SECS".to_owned(), "7".to_owned()),
        ];
        let c = Config::load_with_env(None, env.clone()).unwrap();
        assert_eq!(c.delivery.lease_secs, 7);
        assert_eq!(
            Config::ignored_env_vars(env),
            vec!["CLAWRELAY_URL".to_owned()]
        );
    }

    #[test]
    fn every_key_is_documented_in_the_example_file() {
        let example: toml::Table = toml::from_str(include_str!("../config.example.toml")).unwrap();
        let defaults: toml::Table = toml::from_str(&Config::default().to_toml()).unwrap();
        for (section, keys) in &defaults {
            let keys = keys.as_table().unwrap();
            let documented = example
                .get(section)
                .and_then(|s| s.as_table())
                .unwrap_or_else(|| panic!("[{section}] is missing from config.example.toml"));
            for key in keys.keys() {
                assert!(
                    documented.contains_key(key),
                    "[{section}] {key} is missing from config.example.toml"
                );
            }
        }
    }

    #[test]
    fn a_relative_database_path_in_a_file_is_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relay.toml");
        std::fs::write(&file, "[storage]\npath = \"data/relay.db\"\n").unwrap();
        let c = Config::load(Some(&file)).unwrap();
        assert_eq!(c.storage.path, dir.path().join("data/relay.db"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = parse("[delivery]\nlease_sec = 3\n").unwrap_err();
        assert!(e.contains("lease_sec"), "{e}");
    }

    #[test]
    fn a_wrong_type_names_its_section_and_key() {
        let dir = std::env::temp_dir().join(format!("clawrelay-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "[server]\nbind = \"127.0.0.1\"\nport = \"many\"\n").unwrap();
        let e = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(e.contains("line 3, [server] port: "), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn wrong_types_are_errors() {
        assert!(parse("[server]\nport = \"x\"\n").is_err());
        assert!(parse("[storage]\nsynchronous = \"sometimes\"\n").is_err());
    }

    #[test]
    fn out_of_range_values_name_the_key() {
        let mut c = Config::default();
        c.delivery.max_attempts = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("delivery.max_attempts"));
        let mut c = Config::default();
        c.clients.disconnected_after_secs = 1;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("disconnected_after_secs"));
    }
}
