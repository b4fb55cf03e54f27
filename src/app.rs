//! The application: `App::build` opens and migrates the store and wires the
//! domain, never binds; `App::serve` runs the HTTP server and the background
//! tasks on a listener it is given until shutdown, then drains. Tests and
//! `main` use the same path (tests bind port 0).

use crate::auth::Auth;
use crate::config::{Config, Storage};
use crate::error::Error;
use crate::relay::Relay;
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::store::{now_ms, Store, StoreError};
use crate::{http, tasks};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What every handler can reach: one shared allocation, so that handing it
/// to a request (axum clones the state for every extractor that takes it)
/// is one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct Shared {
    pub relay: Arc<Relay>,
    pub auth: Arc<Auth>,
    pub config: Arc<Config>,
    /// Resolves when the server is shutting down: long polls return early.
    pub shutdown: Shutdown,
    /// One permit per open WebSocket (`[ws] max_connections`).
    pub ws_slots: Arc<Semaphore>,
    pub limits: Arc<crate::limits::Limiters>,
    /// Whose forwarding headers name the client (`[server] trusted_proxies`).
    pub proxies: crate::proxy::TrustedProxies,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Setup(#[from] Error),
}

/// Opens the configured database: PostgreSQL when `[storage] url` is set,
/// else the SQLite file `[storage] path`. `create`: a PostgreSQL database
/// without the schema gets it (the SQLite file's existence is the caller's
/// to check, see `store::check_path`).
pub async fn open_store(storage: &Storage, create: bool) -> Result<Store, StoreError> {
    match storage.postgres_url() {
        Some(url) => Store::connect_postgres_with(url, storage.max_connections, create).await,
        None => Store::open(&storage.path, storage.options()).await,
    }
}

pub struct App {
    state: AppState,
    trigger: ShutdownTrigger,
    generated_admin_token: Option<String>,
    /// `serve --demo`: the built-in echo agent's client.
    demo: Option<crate::ids::ClientId>,
}

impl App {
    pub async fn build(config: Config) -> Result<App, StartError> {
        let store = open_store(&config.storage, true).await?;
        let (auth, generated_admin_token) = Auth::new(
            store.clone(),
            config.server.admin_token.as_ref().map(|s| s.expose()),
            Duration::from_secs(config.auth.cache_ttl_secs),
        )
        .await?;
        let started_at = now_ms();
        let relay = Relay::new(store, &config, started_at).await?;
        relay.release_previous_sockets(started_at).await?;
        // No upload of a previous run is still going.
        let dropped = relay.drop_staged_uploads().await?;
        if dropped > 0 {
            tracing::info!(
                uploads = dropped,
                "deleted what unfinished uploads of the last run stored"
            );
        }
        let (trigger, shutdown) = ShutdownTrigger::new();
        let ws_slots = Arc::new(Semaphore::new(config.ws.max_connections));
        let limits = Arc::new(crate::limits::Limiters::new(&config.rate_limits));
        let proxies = crate::proxy::TrustedProxies::parse(&config.server.trusted_proxies)
            .map_err(|e| Error::Internal(format!("server.trusted_proxies: {e}")))?;
        Ok(App {
            state: AppState(Arc::new(Shared {
                relay: Arc::new(relay),
                auth: Arc::new(auth),
                config: Arc::new(config),
                shutdown,
                ws_slots,
                limits,
                proxies,
            })),
            trigger,
            generated_admin_token,
            demo: None,
        })
    }

    /// Sets up `serve --demo` on the database (see [`crate::demo`]); `serve`
    /// then runs the echo agent.
    pub async fn start_demo(&mut self) -> Result<crate::demo::Demo, Error> {
        let demo = crate::demo::prepare(&self.state.relay).await?;
        self.demo = Some(demo.client.clone());
        Ok(demo)
    }

    /// The admin token this start generated (first start, none configured).
    pub fn generated_admin_token(&self) -> Option<&str> {
        self.generated_admin_token.as_deref()
    }

    /// A handle that stops `serve`.
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        self.trigger.clone()
    }

    /// Serves until the trigger fires: then stops accepting, finishes
    /// in-flight requests (long polls return at once), stops the background
    /// tasks and closes the database.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        let state = self.state;
        // Relays sharing a PostgreSQL database: joined before the tasks, so
        // that a relay starting alone leads them from its first tick.
        let cluster = match &state.relay.cluster {
            Some(c) => Some(
                crate::cluster::start(state.relay.clone(), c.clone(), state.shutdown.clone()).await,
            ),
            None => None,
        };
        let interval = Duration::from_secs(state.config.tasks.maintenance_interval_secs);
        let maintenance = tokio::spawn(tasks::maintenance(
            state.relay.clone(),
            state.limits.clone(),
            interval,
            state.shutdown.clone(),
        ));
        let credentials = tokio::spawn(tasks::credentials(
            state.relay.clone(),
            state.auth.clone(),
            Duration::from_secs(state.config.auth.cache_ttl_secs.max(1)),
            state.shutdown.clone(),
        ));
        let retention = tokio::spawn(tasks::retention(
            state.relay.clone(),
            Duration::from_secs(state.config.conversations.cleanup_interval_secs),
            state.shutdown.clone(),
        ));
        tokio::spawn(tasks::search_backfill(
            state.relay.clone(),
            state.shutdown.clone(),
        ));
        let webhooks = tokio::spawn(crate::webhook::dispatch::run(
            state.relay.clone(),
            state.shutdown.clone(),
        ));
        let demo = self.demo.map(|client| {
            tokio::spawn(crate::demo::echo_agent(
                state.relay.clone(),
                client,
                state.shutdown.clone(),
            ))
        });
        let metrics_listener = if state.config.metrics.bind.is_empty() {
            None
        } else {
            let addr = state.config.metrics.bind.clone();
            let listener = TcpListener::bind(&addr).await?;
            let router = http::health::metrics_only(state.relay.clone());
            let stop = state.shutdown.clone();
            tracing::info!(%addr, "metrics listening");
            Some(tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(stop.wait())
                    .await
            }))
        };
        let router = http::router(state.clone());
        let limits = &state.config.limits;
        let listener = crate::listener::CappedListener::new(
            listener,
            limits.max_connections,
            limits.max_connections_per_ip,
            state.proxies.clone(),
        );
        crate::server::serve(
            listener,
            router,
            Duration::from_secs(limits.header_timeout_secs),
            state.shutdown.clone().wait(),
        )
        .await;
        let _ = maintenance.await;
        if let Some(m) = metrics_listener {
            let _ = m.await;
        }
        let _ = retention.await;
        let _ = credentials.await;
        let _ = webhooks.await;
        if let Some(d) = demo {
            let _ = d.await;
        }
        if let Some(c) = cluster {
            let _ = c.await;
        }
        // WebSocket sessions outlive the HTTP server (they are upgraded
        // connections): wait for each to close with 1001 and release its
        // deliveries before the store closes.
        let all = state.config.ws.max_connections as u32;
        let _ =
            tokio::time::timeout(Duration::from_secs(10), state.ws_slots.acquire_many(all)).await;
        state.relay.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}
