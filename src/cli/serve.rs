//! `clawrelay serve`, and opening the database for the admin commands.

use crate::app::App;
use crate::config::Config;
use crate::relay::Relay;
use crate::shutdown::ShutdownTrigger;
use crate::store::{now_ms, Store};
use std::path::PathBuf;

pub(super) async fn serve(config: Config, demo: bool) -> Result<(), String> {
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
    // PostgreSQL database share their work (`crate::cluster`).
    let _file_lock = match config.storage.postgres_url() {
        Some(_) => None,
        None => {
            crate::store::check_path(&config.storage.path, true)
                .map_err(|e| format!("cannot open database {db}: {e}"))?;
            Some(lock_database(&config.storage.path)?)
        }
    };
    let console = config.console.enabled;
    let mut app = App::build(config)
        .await
        .map_err(|e| format!("cannot open database {db}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let shown = match local.ip().is_unspecified() {
        true => std::net::SocketAddr::from(([127, 0, 0, 1], local.port())),
        false => local,
    };
    if let Some(token) = app.generated_admin_token() {
        // Shown once: only its hash is stored.
        let console = if console {
            format!("It also logs in to the admin console: http://{shown}/admin\n\n")
        } else {
            String::new()
        };
        // Written, not println!'d: a reader that stops at the token (a
        // script piping stdout) closes the pipe, and the relay must not end
        // on a failed write (println! panics on it).
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(
            format!("clawrelay generated an admin token (shown only now, store it safely):\n\n    {token}\n\n{console}")
                .as_bytes(),
        );
        let _ = out.flush();
    }
    if demo {
        let setup = app.start_demo().await.map_err(|e| e.to_string())?;
        println!(
            "clawrelay demo: open http://{shown}/chat and log in\n\n    name:     {}\n    password: {}\n\n\
             (the password is new at each --demo start; a built-in echo agent answers every message)\n",
            crate::demo::ACCOUNT,
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
pub(super) async fn open_store(config: &Config, create: bool) -> Result<Store, String> {
    let db = config.storage.describe();
    if config.storage.postgres_url().is_none() {
        crate::store::check_path(&config.storage.path, create)
            .map_err(|e| format!("cannot open database {db}: {e}"))?;
    }
    eprintln!("clawrelay: database {db}");
    crate::app::open_store(&config.storage, create)
        .await
        .map_err(|e| format!("cannot open database {db}: {e}"))
}

pub(super) async fn open(config: &Config, create: bool) -> Result<Relay, String> {
    let store = open_store(config, create).await?;
    Relay::new(store, config, now_ms())
        .await
        .map_err(|e| e.to_string())
}
