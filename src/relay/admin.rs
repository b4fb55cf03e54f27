//! Administration: credentials of clients and apps, and the listings an
//! operator reads (conversations, deliveries). Used by the HTTP admin API and
//! by the CLI, which runs the same code on the database file.

use super::delivery::move_all_from;
use super::{Relay, Wake};
use crate::auth::{issue_admin_token, issue_token};
use crate::error::Error;
use crate::ids::{AppId, ClientId, ConversationId, MessageId};
use crate::model::{
    AppInfo, ClientInfo, ClientState, Conversation, ConversationState, Delivery, DeliveryState,
    IssuedApp, IssuedClient,
};
use crate::store::{
    apps, clients, conversations, deliveries, messages, now_ms, settings, webhooks,
};

/// A name for a client or an app: 1 to 128 printable characters.
fn check_name(name: &str) -> Result<String, Error> {
    let name = name.trim();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "invalid_name",
            "`name` must be 1 to 128 bytes of printable text",
        ));
    }
    Ok(name.to_owned())
}

/// Conversation listing filter (`GET /conversations`).
pub struct ConversationFilter {
    pub app: Option<AppId>,
    pub user: Option<String>,
    pub client: Option<ClientId>,
    pub state: Option<ConversationState>,
    pub before: Option<i64>,
    pub limit: i64,
}

/// Delivery listing filter (`GET /deliveries`).
pub struct DeliveryFilter {
    pub state: Option<DeliveryState>,
    pub client: Option<ClientId>,
    pub conversation: Option<ConversationId>,
    pub before: Option<i64>,
    pub limit: i64,
}

/// A page of a listing; `next` is the cursor of the following page, if any.
/// Where a search matched a conversation: its latest matching message.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchMatch {
    #[schema(value_type = String)]
    pub message_id: crate::ids::MessageId,
    /// Up to 160 characters of its text around the words searched for.
    pub snippet: String,
    pub timestamp: i64,
}

pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<i64>,
}

fn page<T>(rows: Vec<(i64, T)>, limit: i64) -> Page<T> {
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|(seq, _)| *seq))
        .flatten();
    Page {
        items: rows.into_iter().map(|(_, t)| t).collect(),
        next,
    }
}

impl Relay {
    /// Sets the scrape-time gauges and renders every metric.
    pub async fn render_metrics(&self) -> Result<String, Error> {
        let m = crate::metrics::get();
        let now = now_ms();
        m.queue_depth.reset();
        m.oldest_pending_seconds.reset();
        for c in clients::list(self.store.reader()).await? {
            if c.revoked_at.is_some() {
                continue;
            }
            m.queue_depth
                .with_label_values(&[c.id.as_str()])
                .set(c.pending);
            let oldest = deliveries::oldest_due(self.store.reader(), &c.id, now).await?;
            let age = oldest.map(|at| (now - at).max(0) / 1000).unwrap_or(0);
            m.oldest_pending_seconds
                .with_label_values(&[c.id.as_str()])
                .set(age);
        }
        m.connected_agents
            .set(self.hub.live_clients(now).len() as i64);
        m.active_conversations.set(self.active_conversations());
        m.leader.set(i64::from(self.leads()));
        m.wal_bytes.set(self.store.wal_size() as i64);
        m.webhook_backlog.reset();
        m.webhook_lag_seconds.reset();
        for (id, pending, oldest) in webhooks::backlog(self.store.reader()).await? {
            m.webhook_backlog
                .with_label_values(&[id.as_str()])
                .set(pending);
            // An endpoint with nothing pending reads 0, as an idle agent's
            // queue does.
            let lag = oldest.map_or(0, |at| (now - at).max(0) / 1000);
            m.webhook_lag_seconds
                .with_label_values(&[id.as_str()])
                .set(lag);
        }
        Ok(crate::metrics::render())
    }

    pub async fn create_client(&self, name: &str) -> Result<IssuedClient, Error> {
        let name = check_name(name)?;
        let id = ClientId::generate();
        let (token, hash) = issue_token(id.as_str()).await?;
        let (id2, name2) = (id.clone(), name.clone());
        self.store
            .write(move |tx| clients::insert(tx, &id2, &name2, &hash, now_ms()))
            .await?;
        Ok(IssuedClient {
            client_id: id,
            token,
            name,
        })
    }

    pub async fn list_clients(&self) -> Result<Vec<ClientInfo>, Error> {
        let now = now_ms();
        let rows = clients::list(self.store.reader()).await?;
        Ok(rows
            .into_iter()
            .map(|r| ClientInfo {
                state: if r.revoked_at.is_some() {
                    ClientState::Revoked
                } else {
                    self.hub.state(&r.id, now)
                },
                client_id: r.id,
                name: r.name,
                pending: r.pending,
                last_seen_at: r.last_seen_at,
                created_at: r.created_at,
                revoked_at: r.revoked_at,
            })
            .collect())
    }

    /// Revokes a client; its open conversations move to live clients (or wait
    /// unassigned) in the same transaction.
    pub async fn revoke_client(&self, id: &ClientId) -> Result<(), Error> {
        let now = now_ms();
        let live = self.hub.live_clients(now);
        let id2 = id.clone();
        let receivers = self
            .store
            .write(move |tx| {
                if !clients::revoke(tx, &id2, now)? {
                    return Err(Error::not_found(
                        "client_not_found",
                        format!("no active client {id2}"),
                    ));
                }
                Ok(move_all_from(tx, &id2, &live, now)?)
            })
            .await?;
        self.hub.forget_client(id);
        self.hub.credentials_changed(id.as_str(), now);
        if receivers.is_empty() {
            self.wake(Wake::AnyClient);
        }
        for c in receivers {
            self.wake(Wake::Client(c));
        }
        Ok(())
    }

    /// Replaces a client's token; the old one stops working.
    pub async fn rotate_client_token(&self, id: &ClientId) -> Result<IssuedClient, Error> {
        let (token, hash) = issue_token(id.as_str()).await?;
        let id2 = id.clone();
        let now = now_ms();
        let name = self
            .store
            .write(move |tx| clients::set_token(tx, &id2, &hash, now))
            .await?
            .ok_or_else(|| {
                Error::not_found("client_not_found", format!("no active client {id}"))
            })?;
        self.hub.credentials_changed(id.as_str(), now);
        Ok(IssuedClient {
            client_id: id.clone(),
            token,
            name,
        })
    }

    pub async fn create_app(&self, name: &str) -> Result<IssuedApp, Error> {
        let name = check_name(name)?;
        let id = AppId::generate();
        let (token, hash) = issue_token(id.as_str()).await?;
        let (id2, name2) = (id.clone(), name.clone());
        self.store
            .write(move |tx| apps::insert(tx, &id2, &name2, &hash, now_ms()))
            .await?;
        Ok(IssuedApp {
            app_id: id,
            token,
            name,
        })
    }

    pub async fn list_apps(&self) -> Result<Vec<AppInfo>, Error> {
        let rows = apps::list(self.store.reader()).await?;
        Ok(rows
            .into_iter()
            .map(|r| AppInfo {
                app_id: r.id,
                name: r.name,
                public: r.public,
                created_at: r.created_at,
                revoked_at: r.revoked_at,
            })
            .collect())
    }

    /// Revokes an app's token. Its conversations and history stay.
    pub async fn revoke_app(&self, id: &AppId) -> Result<(), Error> {
        let id2 = id.clone();
        let now = now_ms();
        let done = self
            .store
            .write(move |tx| apps::revoke(tx, &id2, now))
            .await?;
        if !done {
            return Err(Error::not_found(
                "app_not_found",
                format!("no active app {id}"),
            ));
        }
        self.hub.credentials_changed(id.as_str(), now);
        // A revoked app's endpoints receive nothing more.
        self.webhooks.changed();
        Ok(())
    }

    pub async fn rotate_app_token(&self, id: &AppId) -> Result<IssuedApp, Error> {
        let (token, hash) = issue_token(id.as_str()).await?;
        let id2 = id.clone();
        let now = now_ms();
        let name = self
            .store
            .write(move |tx| apps::set_token(tx, &id2, &hash, now))
            .await?
            .ok_or_else(|| Error::not_found("app_not_found", format!("no active app {id}")))?;
        self.hub.credentials_changed(id.as_str(), now);
        Ok(IssuedApp {
            app_id: id.clone(),
            token,
            name,
        })
    }

    /// Whether `principal`'s stored credential is still the `version` a
    /// session was opened with (not revoked, not rotated since).
    pub async fn credential_current(
        &self,
        principal: &crate::auth::Principal,
        version: i64,
    ) -> Result<bool, Error> {
        use crate::auth::Principal;
        let reader = self.store.reader();
        let stored = match principal {
            Principal::Admin => return Ok(true),
            Principal::Client(id) => clients::credential(reader, id).await?,
            Principal::App(id) if *id == AppId::public() => return Ok(true),
            Principal::App(id) => apps::credential(reader, id).await?,
            Principal::User(s) => {
                return Ok(
                    crate::store::sessions::credential(reader, &s.session, now_ms())
                        .await?
                        .is_some_and(|c| c.version == version),
                )
            }
        };
        Ok(stored.is_some_and(|c| c.version == version))
    }

    /// Starts watching the credential a session was opened with, then checks
    /// that it is still current: a revocation between the verification and
    /// now is caught by the check, one after it by the watch. Unauthorized
    /// when it was revoked or rotated meanwhile (a stale cached verification).
    pub async fn watch_session(
        &self,
        principal: &crate::auth::Principal,
        version: i64,
    ) -> Result<crate::hub::CredentialWatch, Error> {
        let watch = self.hub.watch_credentials(version);
        if !self.credential_current(principal, version).await? {
            return Err(Error::Unauthorized("the token was revoked"));
        }
        Ok(watch)
    }

    /// Announces the clients and apps whose token another process (the admin
    /// CLI) revoked or rotated after `since` to this process's sessions, and
    /// returns their ids and the newest change seen (`since` if none).
    pub async fn credentials_changed_since(&self, since: i64) -> Result<(Vec<String>, i64), Error> {
        let changed = clients::credentials_changed_since(self.store.reader(), since).await?;
        let newest = changed.iter().map(|(_, at)| *at).max().unwrap_or(since);
        for (key, at) in &changed {
            self.hub.credentials_changed(key, *at);
        }
        Ok((changed.into_iter().map(|(key, _)| key).collect(), newest))
    }

    /// Replaces the generated admin token (when none is configured); returns the new one.
    pub async fn reset_admin_token(&self) -> Result<String, Error> {
        let (token, hash) = issue_admin_token().await?;
        // The console's logins were made with the old token: they end.
        self.store
            .write(move |tx| {
                settings::set(tx, settings::ADMIN_TOKEN_HASH, &hash)?;
                settings::set(tx, settings::CONSOLE_ADMIN, &hash)?;
                crate::store::console::delete_all(tx)
            })
            .await?;
        Ok(token)
    }

    pub async fn list_conversations(
        &self,
        f: ConversationFilter,
    ) -> Result<Page<Conversation>, Error> {
        let rows = conversations::list(
            self.store.reader(),
            conversations::Filter {
                app: f.app.as_ref(),
                user: f.user.as_deref(),
                client: f.client.as_ref(),
                state: f.state,
                before: f.before,
                limit: f.limit,
            },
            self.rules.idle_cutoff(now_ms()),
        )
        .await?;
        Ok(page(rows, f.limit))
    }

    /// The conversations with a message that matches search `q` (see
    /// `crate::search`), newest match first, each with that match; the
    /// filters as for a list, the cursor the latest match's position.
    pub async fn search_conversations(
        &self,
        f: ConversationFilter,
        q: &str,
    ) -> Result<Page<(Conversation, SearchMatch)>, Error> {
        let query =
            crate::search::Query::parse(q).map_err(|m| Error::invalid("invalid_query", m))?;
        // Every stored message is found, also those the writer has not
        // indexed yet.
        self.store.catch_up_search().await?;
        let db = self.store.reader();
        let cutoff = self.rules.idle_cutoff(now_ms());
        let hits = crate::store::search::hits(
            db,
            &query,
            crate::store::search::Filter {
                app: f.app.as_ref(),
                user: f.user.as_deref(),
                client: f.client.as_ref(),
                active: f.state.map(|s| s == ConversationState::Active),
                before: f.before.unwrap_or(i64::MAX),
                limit: f.limit,
            },
            cutoff,
        )
        .await?;
        let mut rows = Vec::with_capacity(hits.len());
        for (id, at) in hits {
            // Gone meanwhile (the purge): left out.
            let (Some(c), Some(m)) = (
                conversations::get(db, &id, cutoff).await?,
                messages::by_seq(db, at).await?,
            ) else {
                continue;
            };
            let found = SearchMatch {
                snippet: query.snippet(&m.text),
                message_id: m.id,
                timestamp: m.timestamp,
            };
            rows.push((at, (c, found)));
        }
        Ok(page(rows, f.limit))
    }

    /// Indexes up to `batch` of the messages stored before search existed;
    /// answers how many (0: all are).
    pub async fn backfill_search(&self, batch: i64) -> Result<u64, Error> {
        Ok(self
            .store
            .write(move |tx| crate::store::search::backfill(tx, batch))
            .await?)
    }

    /// A title for each listed conversation: the first words of its first
    /// message ("" when it has none yet, or only files).
    pub async fn conversation_titles<'a>(
        &self,
        conversations: impl IntoIterator<Item = &'a Conversation>,
    ) -> Result<std::collections::HashMap<ConversationId, String>, Error> {
        let ids: Vec<ConversationId> = conversations.into_iter().map(|c| c.id.clone()).collect();
        let texts = crate::store::messages::first_texts(self.store.reader(), &ids).await?;
        Ok(texts
            .into_iter()
            .map(|(id, text)| (id, title_of(&text)))
            .collect())
    }

    pub async fn list_deliveries(&self, f: DeliveryFilter) -> Result<Page<Delivery>, Error> {
        let rows = deliveries::list(
            self.store.reader(),
            deliveries::Filter {
                state: f.state,
                client: f.client.as_ref(),
                conversation: f.conversation.as_ref(),
                before: f.before,
                limit: f.limit,
            },
            now_ms(),
        )
        .await?;
        Ok(page(rows, f.limit))
    }

    /// Puts a dead delivery back in its conversation's queue with a fresh
    /// attempt count.
    pub async fn requeue(&self, id: &MessageId) -> Result<(), Error> {
        let id2 = id.clone();
        let wake = self
            .store
            .write(move |tx| {
                let now = now_ms();
                let seq = messages::seq_of(tx, &id2)?.ok_or_else(|| {
                    Error::not_found("message_not_found", format!("no message {id2}"))
                })?;
                let (conversation, ready) =
                    deliveries::requeue(tx, seq, now)?.ok_or_else(|| Error::Conflict {
                        code: "delivery_not_dead",
                        message: format!("the delivery of {id2} is not dead"),
                    })?;
                let owner = conversations::owners(tx, &conversation)?.and_then(|o| o.client_id);
                Ok::<_, Error>(match (ready, owner) {
                    (false, _) => Wake::Nobody,
                    (true, Some(c)) => Wake::Client(c),
                    (true, None) => Wake::AnyClient,
                })
            })
            .await?;
        self.wake(wake);
        Ok(())
    }
}

/// Most characters of a conversation's title.
const TITLE_CHARS: usize = 60;

/// The first words of `text`, on one line, at most [`TITLE_CHARS`]
/// characters (cut at a word, with "…", when longer).
pub fn title_of(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let line = words.join(" ");
    if line.chars().count() <= TITLE_CHARS {
        return line;
    }
    let mut out = String::new();
    for word in words {
        let next = if out.is_empty() {
            word.chars().count()
        } else {
            out.chars().count() + 1 + word.chars().count()
        };
        if next > TITLE_CHARS {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.is_empty() {
        // One long word (or a script without spaces): cut it.
        out = line.chars().take(TITLE_CHARS).collect();
    }
    out.push('…');
    out
}

#[cfg(test)]
mod title_tests {
    use super::title_of;

    #[test]
    fn titles_are_the_first_words_on_one_line() {
        assert_eq!(title_of("  Hello\n  world "), "Hello world");
        assert_eq!(title_of(""), "");
        let long = "word ".repeat(30);
        let t = title_of(&long);
        assert!(t.ends_with('…') && t.chars().count() <= 61, "{t}");
        assert!(!t.contains("wor…"), "cut at a word: {t}");
        let chinese = "我想申请退款因为商品有质量问题".repeat(5);
        assert_eq!(title_of(&chinese).chars().count(), 61);
    }
}
