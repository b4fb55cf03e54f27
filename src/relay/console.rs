//! What the admin console (`/admin`) needs beyond the admin API: its logins
//! (a console session: the admin, for a while, in an HttpOnly cookie) and
//! the overview of the relay's state on its first screen.

use super::Relay;
use crate::auth::issue_token;
use crate::error::Error;
use crate::ids::{ClientId, ConsoleSessionId, WebhookId};
use crate::model::ClientState;
use crate::store::{console, deliveries, now_ms, webhooks};
use serde::Serialize;

/// A console login just made: the token goes in the cookie, never in a body.
pub struct ConsoleLogin {
    pub token: String,
    pub expires_at: i64,
}

/// The relay at a glance.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    pub version: &'static str,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Agents (clients not revoked), with their queues.
    pub agents: Vec<AgentQueue>,
    /// Agents by state: how many are connected, stale, gone (disconnected)
    /// and registered (never seen).
    pub connected: usize,
    pub stale: usize,
    pub gone: usize,
    pub registered: usize,
    /// Conversations not expired.
    pub active_conversations: i64,
    /// Dead letters kept (deliveries that ran out of attempts).
    pub dead_letters: i64,
    /// Webhook endpoints with events waiting.
    pub webhook_backlog: Vec<WebhookBacklog>,
    /// Messages this relay stored per minute over the last hour, oldest
    /// first; the last is the minute under way (its own counters, since it
    /// started: another relay of a cluster counts its own).
    pub messages_per_minute: Vec<u64>,
    /// The database's size in bytes, and its write-ahead log's (SQLite;
    /// 0 on PostgreSQL).
    pub database_bytes: u64,
    pub wal_bytes: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentQueue {
    #[schema(value_type = String)]
    pub client_id: ClientId,
    pub name: String,
    pub state: ClientState,
    /// Deliveries assigned and not yet acked or dead.
    pub pending: i64,
    /// When the oldest of them that is due became due (Unix ms).
    pub oldest_pending_at: Option<i64>,
    pub last_seen_at: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookBacklog {
    #[schema(value_type = String)]
    pub webhook_id: WebhookId,
    pub pending: i64,
    /// When the oldest waiting event happened (Unix ms).
    pub oldest_at: Option<i64>,
}

impl Relay {
    /// Opens a console session lasting `ttl_ms`.
    pub async fn open_console_session(&self, ttl_ms: i64) -> Result<ConsoleLogin, Error> {
        let id = ConsoleSessionId::generate();
        let (token, hash) = issue_token(id.as_str()).await?;
        let now = now_ms();
        let expires_at = now + ttl_ms;
        self.store
            .write(move |tx| console::insert(tx, &id, &hash, now, expires_at))
            .await?;
        Ok(ConsoleLogin { token, expires_at })
    }

    /// Moves a live console session's end to `ttl_ms` from now (at most 12
    /// hours after its login: then the admin logs in again).
    pub async fn refresh_console_session(
        &self,
        id: &ConsoleSessionId,
        ttl_ms: i64,
    ) -> Result<i64, Error> {
        let (id, now) = (id.clone(), now_ms());
        self.store
            .write(move |tx| console::refresh(tx, &id, now, now + ttl_ms))
            .await?
            .ok_or(Error::Unauthorized("the console session has ended"))
    }

    /// When a live console session ends.
    pub async fn console_session_expiry(&self, id: &ConsoleSessionId) -> Result<i64, Error> {
        console::credential(self.store.reader(), id, now_ms())
            .await?
            .map(|(_, expires_at)| expires_at)
            .ok_or(Error::Unauthorized("the console session has ended"))
    }

    /// Ends a console session (logout).
    pub async fn close_console_session(&self, id: &ConsoleSessionId) -> Result<(), Error> {
        let id = id.clone();
        self.store.write(move |tx| console::delete(tx, &id)).await?;
        Ok(())
    }

    pub async fn overview(&self) -> Result<Overview, Error> {
        let now = now_ms();
        let reader = self.store.reader();
        let mut agents = Vec::new();
        let (mut connected, mut stale, mut gone, mut registered) = (0, 0, 0, 0);
        for c in self.list_clients().await? {
            match c.state {
                ClientState::Revoked => continue,
                ClientState::Connected => connected += 1,
                ClientState::Stale => stale += 1,
                ClientState::Disconnected => gone += 1,
                ClientState::Registered => registered += 1,
            }
            let oldest_pending_at = if c.pending > 0 {
                deliveries::oldest_due(reader, &c.client_id, now).await?
            } else {
                None
            };
            agents.push(AgentQueue {
                client_id: c.client_id,
                name: c.name,
                state: c.state,
                pending: c.pending,
                oldest_pending_at,
                last_seen_at: c.last_seen_at,
            });
        }
        let webhook_backlog = webhooks::backlog(reader)
            .await?
            .into_iter()
            .filter(|(_, pending, _)| *pending > 0)
            .map(|(webhook_id, pending, oldest_at)| WebhookBacklog {
                webhook_id,
                pending,
                oldest_at,
            })
            .collect();
        Ok(Overview {
            version: env!("CARGO_PKG_VERSION"),
            backend: if self.store.path().is_some() {
                "sqlite"
            } else {
                "postgres"
            },
            agents,
            connected,
            stale,
            gone,
            registered,
            active_conversations: self.active_conversations(),
            dead_letters: deliveries::count_dead(reader).await?,
            webhook_backlog,
            messages_per_minute: crate::metrics::get().per_minute.last_hour(),
            database_bytes: self.store.database_size().await?,
            wal_bytes: self.store.wal_size(),
        })
    }
}
