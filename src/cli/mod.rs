//! The `clawrelay` command line: `main.rs` parses it and calls [`main`],
//! which loads the configuration and either serves ([`serve`]) or runs one
//! admin command against the database ([`admin`]). The admin commands are a
//! thin front end over the relay's admin operations (`relay::admin`), as
//! the HTTP admin API is.

mod admin;
mod serve;

use crate::config::{Config, Secret};
use crate::telemetry;
use crate::webhook::vault::Vault;
use admin::{
    app_command, client_command, conversation_command, delivery_command, user_command,
    webhook_command, AppCommand, ClientCommand, ConversationCommand, DeliveryCommand, UserCommand,
    WebhookCommand,
};
use clap::{Parser, Subcommand};
use serve::{open, open_store, serve};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "clawrelay",
    version,
    about = "A durable message relay between apps and AI agents"
)]
pub struct Cli {
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
    /// Read conversations and their messages.
    #[command(subcommand)]
    Conversation(ConversationCommand),
    /// Read deliveries; requeue dead letters.
    #[command(subcommand)]
    Delivery(DeliveryCommand),
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

/// Runs the command `cli` names; its failure is printed, and the exit code
/// says it.
pub fn main(cli: Cli) -> ExitCode {
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
        print!("{}", include_str!("../../config.example.toml"));
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
        cmd @ (Command::Client(_)
        | Command::App(_)
        | Command::Webhook(_)
        | Command::User(_)
        | Command::Conversation(_)
        | Command::Delivery(_)) => {
            config.validate().map_err(|e| e.to_string())?;
            let relay = open(&config, cli.create).await?;
            let out = match cmd {
                Command::Client(cmd) => client_command(&relay, cmd).await,
                Command::App(cmd) => app_command(&relay, cmd).await,
                Command::Webhook(cmd) => webhook_command(&relay, cmd).await,
                Command::User(cmd) => user_command(&relay, cmd).await,
                Command::Conversation(cmd) => conversation_command(&relay, cmd).await,
                Command::Delivery(cmd) => delivery_command(&relay, cmd).await,
                _ => unreachable!("the arm matches these six commands only"),
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
            crate::store::backup::check_destination(&path)
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
