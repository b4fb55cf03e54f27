//! The `clawrelay` command: parse the command line, load the configuration,
//! then either serve or run one admin command against the database file.

use clap::{Parser, Subcommand};
use clawrelay::app::App;
use clawrelay::config::{Config, Secret};
use clawrelay::ids::{AppId, ClientId, EventId, WebhookId};
use clawrelay::relay::webhooks::Replay;
use clawrelay::relay::Relay;
use clawrelay::shutdown::ShutdownTrigger;
use clawrelay::store::{now_ms, Store};
use clawrelay::telemetry;
use clawrelay::webhook::vault::Vault;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "clawrelay",
    version,
    about = "A durable message relay between apps and AI agents"
)]
struct Cli {
    /// A TOML configuration file (see config.example.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The SQLite database file (overrides [storage] path).
    #[arg(long, global = true, value_name = "PATH")]
    db: Option<PathBuf>,
    /// A PostgreSQL database to use instead of the SQLite file
    /// (postgres://user:password@host:port/database; overrides [storage] url).
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    database_url: Option<String>,
    /// Log filter: a level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long, global = true, env = "LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Admin commands: create the database if there is none at the path
    /// (without it they refuse, so a mistyped --db never makes an empty one).
    #[arg(long, global = true)]
    create: bool,
    /// Log format: human-readable text, or one JSON object per line for log shippers.
    #[arg(long, global = true, env = "LOG_FORMAT", value_enum, default_value_t = telemetry::LogFormat::Text)]
    log_format: telemetry::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    Serve {
        /// Address to listen on (overrides [server] bind).
        #[arg(long)]
        bind: Option<String>,
        /// Port to listen on (overrides [server] port).
        #[arg(long, env = "PORT")]
        port: Option<u16>,
        /// The admin token. Without it the first start generates one and prints it once.
        #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Serve unauthenticated /inbound and /outbox (sets [inbound] public = true).
        #[arg(long)]
        public_inbound: bool,
        /// A first look: the web chat on, a demo app and account (its
        /// password printed), and a built-in echo agent that answers. Refused
        /// on a database with apps or clients of its own.
        #[arg(long)]
        demo: bool,
    },
    /// Manage clients (agent instances).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage apps (the user-facing side).
    #[command(subcommand)]
    App(AppCommand),
    /// Manage apps' webhook endpoints.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Manage built-in accounts (web chat logins).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage the generated admin token.
    #[command(subcommand)]
    AdminToken(AdminTokenCommand),
    /// Write a consistent, verified copy of the database to PATH (a new
    /// file), while the relay keeps running. (On PostgreSQL: use pg_dump.)
    Backup { path: PathBuf },
    /// Create the database's schema, or bring it up to this version's, and
    /// exit (the server does the same when it starts).
    Migrate,
    /// Check or print the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Delete what is older than the retention now (the server also does it
    /// every [conversations] cleanup_interval_secs).
    Purge {
        /// Only count what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Create a client and print its token (shown only this once).
    Create {
        #[arg(long)]
        name: String,
    },
    /// List clients.
    List,
    /// Revoke a client; its open conversations move to other clients.
    Revoke { id: String },
    /// Replace a client's token and print the new one.
    Rotate { id: String },
}

#[derive(Subcommand)]
enum AppCommand {
    /// Create an app and print its token (shown only this once).
    Create {
        #[arg(long)]
        name: String,
    },
    /// List apps.
    List,
    /// Revoke an app's token.
    Revoke { id: String },
    /// Replace an app's token and print the new one.
    Rotate { id: String },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account of an app; prints a generated password (shown only
    /// this once) unless --password-stdin.
    Create {
        #[arg(long)]
        app: String,
        /// The login name, also the user id its messages carry.
        #[arg(long)]
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts (of one app with --app).
    List {
        #[arg(long)]
        app: Option<String>,
    },
    /// Disable an account: it cannot log in, its sessions end.
    Disable { name: String },
    /// Enable a disabled account.
    Enable { name: String },
    /// Set a new password (generated and printed, or --password-stdin); the
    /// account's sessions end.
    ResetPassword {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
enum WebhookCommand {
    /// Create an endpoint for an app and print its secret (shown only this once).
    Create {
        #[arg(long)]
        app: String,
        #[arg(long)]
        url: String,
        /// Event types, comma-separated (default: all of message,
        /// conversation.expired, delivery.dead).
        #[arg(long, value_delimiter = ',')]
        events: Option<Vec<String>>,
    },
    /// List endpoints (of one app with --app).
    List {
        #[arg(long)]
        app: Option<String>,
    },
    /// Change an endpoint's URL, events, or enabled state.
    Update {
        id: String,
        #[arg(long)]
        url: Option<String>,
        #[arg(long, value_delimiter = ',')]
        events: Option<Vec<String>>,
        /// Resume delivery (clears the failure record).
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Stop delivery; events keep queuing for when it is enabled.
        #[arg(long)]
        disable: bool,
    },
    /// Delete an endpoint and its queue.
    Delete { id: String },
    /// Replace the secret and print the new one; the old one keeps signing
    /// for the grace period.
    Rotate {
        id: String,
        /// Seconds the old secret stays valid (default [webhooks] rotation_grace_secs).
        #[arg(long)]
        grace_secs: Option<u64>,
    },
    /// Show the endpoint's recent attempts, newest first.
    Attempts {
        id: String,
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Send events again: one (--event) or those since a time (--since, Unix ms).
    Replay {
        id: String,
        #[arg(long, conflicts_with = "since", required_unless_present = "since")]
        event: Option<String>,
        #[arg(long)]
        since: Option<i64>,
        #[arg(long, requires = "since")]
        until: Option<i64>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Read the file and the environment, validate, print the result.
    Check,
    /// Print the documented example configuration (all defaults).
    Default,
}

#[derive(Subcommand)]
enum AdminTokenCommand {
    /// Generate a new admin token, store its hash, print it once.
    Reset,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(message),
    }
}

fn fail(message: String) -> ExitCode {
    eprintln!("clawrelay: {message}");
    ExitCode::FAILURE
}

async fn run(cli: Cli) -> Result<(), String> {
    telemetry::check_filter(&cli.log_level)?;
    if let Command::Config(ConfigCommand::Default) = cli.command {
        print!("{}", include_str!("../config.example.toml"));
        return Ok(());
    }
    for var in Config::ignored_env_vars(std::env::vars()) {
        eprintln!(
            "clawrelay: warning: ignoring environment variable {var}: configuration variables are CLAWRELAY_<SECTION>__<KEY>"
        );
    }
    let mut config = Config::load_with_env(cli.config.as_deref(), std::env::vars())
        .map_err(|e| e.to_string())?;
    if let Some(url) = cli.database_url.filter(|u| !u.is_empty()) {
        config.storage.url = Some(url);
    }
    if let Some(db) = cli.db {
        if config.storage.postgres_url().is_some() {
            return Err(format!(
                "both a SQLite file (--db {}) and a PostgreSQL database ({}, from --database-url, DATABASE_URL or [storage] url) are given; choose one",
                db.display(),
                config.storage.describe()
            ));
        }
        config.storage.path = db;
    }
    match cli.command {
        Command::Serve {
            bind,
            port,
            admin_token,
            public_inbound,
            demo,
        } => {
            if let Some(bind) = bind {
                config.server.bind = bind;
            }
            if let Some(port) = port {
                config.server.port = port;
            }
            if public_inbound {
                config.inbound.public = true;
            }
            if demo {
                config.webchat.enabled = true;
            }
            config.server.admin_token = admin_token.filter(|t| !t.is_empty()).map(Secret::new);
            config.validate().map_err(|e| e.to_string())?;
            telemetry::init(&cli.log_level, cli.log_format)?;
            serve(config, demo).await
        }
        cmd @ (Command::Client(_) | Command::App(_) | Command::Webhook(_) | Command::User(_)) => {
            config.validate().map_err(|e| e.to_string())?;
            let relay = open(&config, cli.create).await?;
            let out = match cmd {
                Command::Client(cmd) => client_command(&relay, cmd).await,
                Command::App(cmd) => app_command(&relay, cmd).await,
                Command::Webhook(cmd) => webhook_command(&relay, cmd).await,
                Command::User(cmd) => user_command(&relay, cmd).await,
                _ => unreachable!("the arm matches these four commands only"),
            };
            relay.store.close().await;
            out
        }
        Command::Backup { .. } if config.storage.postgres_url().is_some() => Err(format!(
            "the relay's database is PostgreSQL ({}): back it up with pg_dump, e.g. \
             pg_dump --format=custom --file=clawrelay.dump \"$DATABASE_URL\", and restore with pg_restore (see README: Backup and restore)",
            config.storage.describe()
        )),
        Command::Migrate => {
            config.validate().map_err(|e| e.to_string())?;
            let store = open_store(&config, true).await?;
            store.close().await;
            println!("database {} is migrated", config.storage.describe());
            Ok(())
        }
        Command::Backup { path } => {
            let db = config.storage.path.display().to_string();
            clawrelay::store::backup::check_destination(&path)
                .map_err(|e| format!("backup failed: {e}"))?;
            let store = open_store(&config, false).await?;
            let out = store.backup_to(&path).await;
            store.close().await;
            let bytes = out.map_err(|e| format!("backup failed: {e}"))?;
            println!(
                "backup of {db} written to {} ({bytes} bytes), integrity check ok",
                path.display()
            );
            // Webhook secrets open only with their key: it goes along.
            let key = config.webhook_key_file();
            let mut dest = path.clone().into_os_string();
            dest.push(".webhook-key");
            let dest = PathBuf::from(dest);
            let copied = Vault::new(key.clone()).copy_to(&dest).map_err(|e| {
                format!(
                    "the database was backed up, but copying the webhook key {} to {} failed: {e}; copy it by hand",
                    key.display(),
                    dest.display()
                )
            })?;
            if copied {
                println!("webhook key {} copied to {}", key.display(), dest.display());
            }
            Ok(())
        }
        Command::Config(_) => {
            // What `serve` would take from its own variables, too.
            if let Some(port) = std::env::var("PORT").ok().filter(|p| !p.is_empty()) {
                config.server.port = port.parse().map_err(|_| {
                    format!("invalid environment variable PORT: `{port}` is not a port")
                })?;
            }
            config.validate().map_err(|e| e.to_string())?;
            println!("# configuration ok");
            if std::env::var("PORT").is_ok_and(|p| !p.is_empty()) {
                println!("# [server] port from PORT");
            }
            match std::env::var("ADMIN_TOKEN") {
                Ok(t) if !t.is_empty() => println!("# admin token: set by ADMIN_TOKEN (not shown)"),
                _ => {
                    println!("# admin token: none configured; the database's generated one is used")
                }
            }
            print!("{}", config.to_toml());
            Ok(())
        }
        Command::Purge { dry_run } => {
            config.validate().map_err(|e| e.to_string())?;
            let relay = open(&config, cli.create).await?;
            let out = if dry_run {
                relay.purge_preview().await
            } else {
                relay.purge(None).await
            };
            relay.store.close().await;
            let p = out.map_err(|e| e.to_string())?;
            let verb = if dry_run { "would delete" } else { "deleted" };
            println!(
                "{verb}: {} conversations, {} messages, {} deliveries, {} dead deliveries, {} idempotency keys, {} webhook events, {} ended sessions",
                p.conversations, p.messages, p.deliveries, p.dead_deliveries, p.idempotency_keys, p.webhook_events, p.sessions
            );
            Ok(())
        }
        Command::AdminToken(AdminTokenCommand::Reset) => {
            config.validate().map_err(|e| e.to_string())?;
            let relay = open(&config, cli.create).await?;
            let out = relay.reset_admin_token().await.map_err(|e| e.to_string());
            relay.store.close().await;
            println!("admin token: {}", out?);
            println!("(a configured --admin-token / ADMIN_TOKEN still takes precedence)");
            Ok(())
        }
    }
}

async fn serve(config: Config, demo: bool) -> Result<(), String> {
    let configured = format!("{}:{}", config.server.bind, config.server.port);
    let db = config.storage.describe();
    // The port first: a start that cannot listen leaves no new database behind.
    let (listener, activated) = match systemd_listener()? {
        Some(listener) => (listener, true),
        None => {
            let listener = tokio::net::TcpListener::bind(&configured)
                .await
                .map_err(|e| format!("cannot listen on {configured}: {e}"))?;
            (listener, false)
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or(configured.clone());
    if activated {
        tracing::info!(
            %addr,
            "listening on the socket systemd passed (LISTEN_FDS); [server] bind and port ({configured}) are not used"
        );
    }
    // Held while the server runs: one server per SQLite file. Relays on one
    // PostgreSQL database share their work (`clawrelay::cluster`).
    let _file_lock = match config.storage.postgres_url() {
        Some(_) => None,
        None => {
            clawrelay::store::check_path(&config.storage.path, true)
                .map_err(|e| format!("cannot open database {db}: {e}"))?;
            Some(lock_database(&config.storage.path)?)
        }
    };
    let mut app = App::build(config)
        .await
        .map_err(|e| format!("cannot open database {db}: {e}"))?;
    if let Some(token) = app.generated_admin_token() {
        // Shown once: only its hash is stored.
        println!("clawrelay generated an admin token (shown only now, store it safely):\n\n    {token}\n");
    }
    if demo {
        let setup = app.start_demo().await.map_err(|e| e.to_string())?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let shown = match local.ip().is_unspecified() {
            true => std::net::SocketAddr::from(([127, 0, 0, 1], local.port())),
            false => local,
        };
        println!(
            "clawrelay demo: open http://{shown}/chat and log in\n\n    name:     {}\n    password: {}\n\n\
             (the password is new at each --demo start; a built-in echo agent answers every message)\n",
            clawrelay::demo::ACCOUNT,
            setup.password
        );
        if !local.ip().is_loopback() {
            println!(
                "clawrelay demo: warning: listening on {local}, reachable from other hosts; --bind 127.0.0.1 keeps the demo to this one\n"
            );
        }
    }
    tracing::info!(%addr, %db, "clawrelay listening");
    tokio::spawn(stop_on_signal(app.shutdown_trigger()));
    app.serve(listener)
        .await
        .map_err(|e| format!("server error: {e}"))
}

/// The listening socket systemd passes when the service is started by
/// socket activation (`LISTEN_FDS`, `LISTEN_PID`): it wins over `[server]
/// bind` and `port`. The socket stays open in systemd while the relay
/// restarts, so connections wait in its backlog instead of being refused.
fn systemd_listener() -> Result<Option<tokio::net::TcpListener>, String> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    if fds.len() > 1 {
        return Err(format!(
            "systemd passed {} sockets (LISTEN_FDS); clawrelay listens on one: give its .socket unit a single ListenStream",
            fds.len()
        ));
    }
    let listener = fds
        .take_tcp_listener(0)
        .map_err(|e| format!("the socket systemd passed (LISTEN_FDS) is not a TCP listening socket: {e}; give the .socket unit a ListenStream address"))?;
    let Some(listener) = listener else {
        return Ok(None);
    };
    listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
        .map(Some)
        .map_err(|e| format!("cannot use the socket systemd passed (LISTEN_FDS): {e}"))
}

async fn stop_on_signal(trigger: ShutdownTrigger) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
    trigger.trigger();
}

/// Holds an exclusive lock on `<db>.lock` for as long as the server runs: a
/// second server on the same database would split the wake-ups between the
/// two processes (a long poll on one is not woken by a message posted to the
/// other). Admin commands do not take it; they work beside a running server.
fn lock_database(db: &std::path::Path) -> Result<std::fs::File, String> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot create lock file {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another clawrelay server is already running on database {} (it holds {}); stop it first, or give this one another --db",
            db.display(),
            path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(format!("cannot lock {}: {e}", path.display()))
        }
    }
}

/// Opens the database an admin command works on: an existing one only,
/// unless `create`; says which one it is on stderr.
async fn open_store(config: &Config, create: bool) -> Result<Store, String> {
    let db = config.storage.describe();
    if config.storage.postgres_url().is_none() {
        clawrelay::store::check_path(&config.storage.path, create)
            .map_err(|e| format!("cannot open database {db}: {e}"))?;
    }
    eprintln!("clawrelay: database {db}");
    clawrelay::app::open_store(&config.storage, create)
        .await
        .map_err(|e| format!("cannot open database {db}: {e}"))
}

async fn open(config: &Config, create: bool) -> Result<Relay, String> {
    let store = open_store(config, create).await?;
    Relay::new(store, config, now_ms())
        .await
        .map_err(|e| e.to_string())
}

fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("clawrelay: {e}"),
    }
}

async fn client_command(relay: &Relay, cmd: ClientCommand) -> Result<(), String> {
    let id = |s: &str| ClientId::parse(s).ok_or_else(|| format!("`{s}` is not a client id"));
    match cmd {
        ClientCommand::Create { name } => print_json(
            &relay
                .create_client(&name)
                .await
                .map_err(|e| e.to_string())?,
        ),
        ClientCommand::List => print_json(&relay.list_clients().await.map_err(|e| e.to_string())?),
        ClientCommand::Revoke { id: raw } => {
            relay
                .revoke_client(&id(&raw)?)
                .await
                .map_err(|e| e.to_string())?;
            println!("revoked {raw}");
        }
        ClientCommand::Rotate { id: raw } => print_json(
            &relay
                .rotate_client_token(&id(&raw)?)
                .await
                .map_err(|e| e.to_string())?,
        ),
    }
    Ok(())
}

async fn app_command(relay: &Relay, cmd: AppCommand) -> Result<(), String> {
    let id = |s: &str| AppId::parse(s).ok_or_else(|| format!("`{s}` is not an app id"));
    match cmd {
        AppCommand::Create { name } => {
            print_json(&relay.create_app(&name).await.map_err(|e| e.to_string())?)
        }
        AppCommand::List => print_json(&relay.list_apps().await.map_err(|e| e.to_string())?),
        AppCommand::Revoke { id: raw } => {
            relay
                .revoke_app(&id(&raw)?)
                .await
                .map_err(|e| e.to_string())?;
            println!("revoked {raw}");
        }
        AppCommand::Rotate { id: raw } => print_json(
            &relay
                .rotate_app_token(&id(&raw)?)
                .await
                .map_err(|e| e.to_string())?,
        ),
    }
    Ok(())
}

/// A password from the first line of standard input, or a generated one
/// (then printed).
fn password(from_stdin: bool) -> Result<(String, bool), String> {
    if !from_stdin {
        return Ok((clawrelay::relay::sessions::generate_password(), true));
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err("--password-stdin: standard input held no password".into());
    }
    Ok((password, false))
}

async fn user_command(relay: &Relay, cmd: UserCommand) -> Result<(), String> {
    let e = |e: clawrelay::error::Error| e.to_string();
    match cmd {
        UserCommand::Create {
            app,
            name,
            password_stdin,
        } => {
            let app = AppId::parse_any(&app).ok_or_else(|| format!("`{app}` is not an app id"))?;
            let (password, generated) = password(password_stdin)?;
            let account = relay
                .create_account(&app, &name, password.clone())
                .await
                .map_err(e)?;
            let mut shown = serde_json::to_value(&account).map_err(|e| e.to_string())?;
            if generated {
                shown["password"] = password.into();
            }
            print_json(&shown);
        }
        UserCommand::List { app } => {
            let app = app
                .map(|a| AppId::parse_any(&a).ok_or_else(|| format!("`{a}` is not an app id")))
                .transpose()?;
            print_json(&relay.accounts(app.as_ref()).await.map_err(e)?);
        }
        UserCommand::Disable { name } => {
            relay.set_account_disabled(&name, true).await.map_err(e)?;
            println!("disabled {name}; its sessions have ended");
        }
        UserCommand::Enable { name } => {
            relay.set_account_disabled(&name, false).await.map_err(e)?;
            println!("enabled {name}");
        }
        UserCommand::ResetPassword {
            name,
            password_stdin,
        } => {
            let (password, generated) = password(password_stdin)?;
            relay
                .set_account_password(&name, password.clone())
                .await
                .map_err(e)?;
            if generated {
                print_json(&serde_json::json!({ "name": name, "password": password }));
            } else {
                println!("password of {name} set; its sessions have ended");
            }
        }
    }
    Ok(())
}

async fn webhook_command(relay: &Relay, cmd: WebhookCommand) -> Result<(), String> {
    let id = |s: &str| WebhookId::parse(s).ok_or_else(|| format!("`{s}` is not a webhook id"));
    let app_id = |s: &str| AppId::parse_any(s).ok_or_else(|| format!("`{s}` is not an app id"));
    let e = |e: clawrelay::error::Error| e.to_string();
    match cmd {
        WebhookCommand::Create { app, url, events } => print_json(
            &relay
                .create_webhook(&app_id(&app)?, &url, events)
                .await
                .map_err(e)?,
        ),
        WebhookCommand::List { app } => {
            let app = app.as_deref().map(app_id).transpose()?;
            print_json(&relay.list_webhooks(app.as_ref()).await.map_err(e)?)
        }
        WebhookCommand::Update {
            id: raw,
            url,
            events,
            enable,
            disable,
        } => {
            let enabled = match (enable, disable) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            print_json(
                &relay
                    .update_webhook(&id(&raw)?, url, events, enabled)
                    .await
                    .map_err(e)?,
            )
        }
        WebhookCommand::Delete { id: raw } => {
            relay.delete_webhook(&id(&raw)?).await.map_err(e)?;
            println!("deleted {raw}");
        }
        WebhookCommand::Rotate {
            id: raw,
            grace_secs,
        } => print_json(
            &relay
                .rotate_webhook_secret(&id(&raw)?, grace_secs)
                .await
                .map_err(e)?,
        ),
        WebhookCommand::Attempts { id: raw, limit } => print_json(
            &relay
                .webhook_attempts(&id(&raw)?, limit.clamp(1, 100))
                .await
                .map_err(e)?,
        ),
        WebhookCommand::Replay {
            id: raw,
            event,
            since,
            until,
        } => {
            let replay = match (event, since) {
                (Some(ev), _) => Replay::One(
                    EventId::parse(&ev).ok_or_else(|| format!("`{ev}` is not an event id"))?,
                ),
                (None, Some(since)) => Replay::Between { since, until },
                (None, None) => return Err("give --event or --since".into()),
            };
            let n = relay.replay_webhook(&id(&raw)?, replay).await.map_err(e)?;
            println!("{n} events queued again for {raw}");
        }
    }
    Ok(())
}
