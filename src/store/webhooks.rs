//! Webhook endpoints, their events and per-endpoint delivery queue (see the
//! migration `0007_webhooks.sql` for the model).

use super::postgres::error as pg_error;
use super::tx::PgTx;
use super::{Reader, StoreResult, Tx};
use crate::ids::{AppId, ConversationId, EventId, WebhookId};
use crate::model::{WebhookAttempt, WebhookInfo};
use rusqlite::OptionalExtension;
use std::sync::Arc;

/// Attempts kept per endpoint for the admin API.
const KEPT_ATTEMPTS: i64 = 100;

pub struct NewWebhook<'a> {
    pub id: &'a WebhookId,
    pub app_id: &'a AppId,
    pub url: &'a str,
    pub events: &'a str,
    pub secret: &'a [u8],
    pub now: i64,
}

pub fn insert(tx: &Tx, w: NewWebhook<'_>) -> StoreResult<()> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            pg.execute(pgsql::webhooks::insert(
                w.id.as_str(),
                w.app_id.as_str(),
                w.url,
                w.events,
                w.secret,
                w.now,
            ))?;
            return Ok(());
        }
    };
    tx.prepare_cached(
        "INSERT INTO webhooks (id, app_id, url, events, enabled, secret, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?6)",
    )?
    .execute((w.id, w.app_id, w.url, w.events, w.secret, w.now))?;
    Ok(())
}

/// What `PATCH /webhooks/{id}` changes; None keeps the value.
pub struct Change<'a> {
    pub url: Option<&'a str>,
    pub events: Option<&'a str>,
    pub enabled: Option<bool>,
}

/// Applies `change`. Enabling clears the failure record and makes the
/// endpoint's pending events due now. Returns false for no such endpoint.
pub fn update(tx: &Tx, id: &WebhookId, change: Change<'_>, now: i64) -> StoreResult<bool> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let n = pg.execute(pgsql::webhooks::update(
                id.as_str(),
                change.url,
                change.events,
                change.enabled.map(i64::from),
                now,
            ))?;
            if n == 1 && change.enabled == Some(true) {
                pg.execute(pgsql::webhooks::due_now(id.as_str(), now))?;
            }
            return Ok(n == 1);
        }
    };
    let n = tx
        .prepare_cached(
            "UPDATE webhooks SET url = COALESCE(?2, url), events = COALESCE(?3, events),
                 enabled = COALESCE(?4, enabled),
                 failures = CASE WHEN ?4 = 1 THEN 0 ELSE failures END,
                 failing_since = CASE WHEN ?4 = 1 THEN NULL ELSE failing_since END,
                 disabled_reason = CASE WHEN ?4 IS NOT NULL THEN NULL ELSE disabled_reason END,
                 updated_at = ?5
             WHERE id = ?1",
        )?
        .execute((id, change.url, change.events, change.enabled, now))?;
    if n == 1 && change.enabled == Some(true) {
        tx.prepare_cached(
            "UPDATE webhook_deliveries SET next_at = ?2 WHERE webhook_id = ?1 AND state = 'pending'",
        )?
        .execute((id, now))?;
    }
    Ok(n == 1)
}

/// Deletes an endpoint with its queue and attempts. False for no such one.
pub fn delete(tx: &Tx, id: &WebhookId) -> StoreResult<bool> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            pg.execute(pgsql::webhooks::delete_deliveries(id.as_str()))?;
            pg.execute(pgsql::webhooks::delete_attempts(id.as_str()))?;
            let n = pg.execute(pgsql::webhooks::delete(id.as_str()))?;
            return Ok(n == 1);
        }
    };
    tx.prepare_cached("DELETE FROM webhook_deliveries WHERE webhook_id = ?")?
        .execute([id])?;
    tx.prepare_cached("DELETE FROM webhook_attempts WHERE webhook_id = ?")?
        .execute([id])?;
    let n = tx
        .prepare_cached("DELETE FROM webhooks WHERE id = ?")?
        .execute([id])?;
    Ok(n == 1)
}

/// Replaces the secret; the current one keeps signing until `old_until`.
pub fn rotate_secret(
    tx: &Tx,
    id: &WebhookId,
    sealed: &[u8],
    old_until: i64,
    now: i64,
) -> StoreResult<bool> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let n = pg.execute(pgsql::webhooks::rotate_secret(
                id.as_str(),
                sealed,
                old_until,
                now,
            ))?;
            return Ok(n == 1);
        }
    };
    let n = tx
        .prepare_cached(
            "UPDATE webhooks SET old_secret = secret, old_secret_until = ?3, secret = ?2, updated_at = ?4
             WHERE id = ?1",
        )?
        .execute((id, sealed, old_until, now))?;
    Ok(n == 1)
}

/// An event a transaction queued, with what sending it takes: the
/// dispatcher is handed it after the commit instead of reading it back.
#[derive(Clone, Debug)]
pub struct Queued {
    pub seq: i64,
    pub id: EventId,
    pub conversation_id: ConversationId,
    pub body: Arc<str>,
    /// The endpoints it is queued for.
    pub endpoints: Vec<WebhookId>,
}

/// Records an event of `app` for every endpoint of the app that subscribes
/// to `kind`, in the caller's transaction. `payload` is only built when
/// there is one. Returns the event when an endpoint got it.
pub fn record_event(
    tx: &Tx,
    app: &AppId,
    kind: &str,
    conversation: &ConversationId,
    payload: impl FnOnce() -> String,
    now: i64,
) -> StoreResult<Option<Queued>> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let subscribed = pg.fetch_one(pgsql::webhooks::subscribed(app.as_str(), kind))?;
            if !subscribed {
                return Ok(None);
            }
            let (id, body): (_, Arc<str>) = (EventId::generate(), payload().into());
            let seq = pg.fetch_one(pgsql::webhooks::insert_event(
                id.as_str(),
                app.as_str(),
                kind,
                conversation.as_str(),
                &body,
                now,
            ))?;
            let endpoints = pg.fetch_all(pgsql::webhooks::queue_event(
                seq,
                conversation.as_str(),
                now,
                app.as_str(),
                kind,
            ))?;
            return Ok(Some(Queued {
                seq,
                id,
                conversation_id: conversation.clone(),
                body,
                endpoints: endpoints.into_iter().map(WebhookId::from_db).collect(),
            }));
        }
    };
    // The endpoints first, then one plain insert each: an INSERT ... SELECT
    // ... RETURNING would scan the app's endpoints a second time and gather
    // its rows in a temporary table.
    let endpoints = tx
        .prepare_cached(
            "SELECT id FROM webhooks
             WHERE app_id = ?1 AND instr(' ' || events || ' ', ' ' || ?2 || ' ') > 0
             ORDER BY seq",
        )?
        .query_map((app, kind), |r| r.get::<_, String>(0))?
        .map(|r| r.map(WebhookId::from_db))
        .collect::<Result<Vec<_>, _>>()?;
    if endpoints.is_empty() {
        return Ok(None);
    }
    let (id, body): (_, Arc<str>) = (EventId::generate(), payload().into());
    tx.prepare_cached(
        "INSERT INTO webhook_events (id, app_id, type, conversation_id, payload, created_at)
         VALUES (?, ?, ?, ?, ?, ?)",
    )?
    .execute((&id, app, kind, conversation, &*body, now))?;
    let seq = tx.last_insert_rowid();
    let mut queue = tx.prepare_cached(
        "INSERT INTO webhook_deliveries (webhook_id, event_seq, conversation_id, state, attempts, next_at, updated_at)
         VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4)",
    )?;
    for endpoint in &endpoints {
        queue.execute((endpoint, seq, conversation, now))?;
    }
    Ok(Some(Queued {
        seq,
        id,
        conversation_id: conversation.clone(),
        body,
        endpoints,
    }))
}

/// How one attempt went, as the dispatcher reports it.
pub struct Outcome {
    pub webhook_id: WebhookId,
    pub event_seq: i64,
    pub at: i64,
    pub status: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub response: Option<String>,
}

impl Outcome {
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Attempts made so far of an endpoint's event.
pub fn attempts_of(tx: &Tx, id: &WebhookId, event_seq: i64) -> StoreResult<i64> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let n = pg.fetch_optional(pgsql::webhooks::attempts_of(id.as_str(), event_seq))?;
            return Ok(n.unwrap_or(0));
        }
    };
    let n = tx
        .prepare_cached(
            "SELECT attempts FROM webhook_deliveries WHERE webhook_id = ? AND event_seq = ?",
        )?
        .query_row((id, event_seq), |r| r.get(0))
        .optional()?;
    Ok(n.unwrap_or(0))
}

/// What a failed attempt does next.
pub struct Retry {
    /// When to try again.
    pub next_at: i64,
    /// Events older than this are given up instead.
    pub give_up_before: i64,
    /// Disable the endpoint at this many failures in a row (0: never).
    pub disable_after: i64,
}

/// What recording an attempt changed.
#[derive(Debug, Default)]
pub struct Recorded {
    pub gave_up: bool,
    pub disabled: bool,
}

/// Keeps the endpoint's latest `KEPT_ATTEMPTS` attempts (run once per batch
/// of records, not per attempt).
pub fn trim_attempts(tx: &Tx, id: &WebhookId) -> StoreResult<()> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            pg.execute(pgsql::webhooks::trim_attempts(id.as_str(), KEPT_ATTEMPTS))?;
            return Ok(());
        }
    };
    tx.prepare_cached(
        "DELETE FROM webhook_attempts WHERE webhook_id = ?1 AND seq <=
             (SELECT seq FROM webhook_attempts WHERE webhook_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
    )?
    .execute((id, KEPT_ATTEMPTS))?;
    Ok(())
}

/// Records an attempt and its consequences: delivered, or retried later,
/// or given up; the endpoint's failure run; disabling it past the limit.
/// `retry` is asked, for a failed attempt only, what happens next given the
/// attempts made before it. A delivered attempt ends the endpoint's failure
/// run when `ends_failures` (false: the caller knows there is none, as
/// after another delivered attempt of the same batch). The attempts kept
/// are trimmed by [`trim_attempts`].
pub fn record_attempt(
    outer: &Tx,
    o: &Outcome,
    ends_failures: bool,
    retry: impl FnOnce(i64) -> Retry,
) -> StoreResult<Recorded> {
    let retry =
        || -> StoreResult<Retry> { Ok(retry(attempts_of(outer, &o.webhook_id, o.event_seq)?)) };
    let tx = match outer {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => return record_attempt_postgres(pg, o, ends_failures, retry),
    };
    tx.prepare_cached(
        "INSERT INTO webhook_attempts (webhook_id, event_seq, at, status, latency_ms, error, response)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute((
        &o.webhook_id,
        o.event_seq,
        o.at,
        o.status,
        o.latency_ms,
        &o.error,
        &o.response,
    ))?;
    let mut recorded = Recorded::default();
    if o.delivered() {
        tx.prepare_cached(
            "UPDATE webhook_deliveries SET state = 'delivered', attempts = attempts + 1, updated_at = ?3
             WHERE webhook_id = ?1 AND event_seq = ?2 AND state = 'pending'",
        )?
        .execute((&o.webhook_id, o.event_seq, o.at))?;
        if ends_failures {
            tx.prepare_cached(
                "UPDATE webhooks SET failures = 0, failing_since = NULL WHERE id = ?1 AND failures > 0",
            )?
            .execute([&o.webhook_id])?;
        }
        return Ok(recorded);
    }
    let retry = &retry()?;
    let state: Option<String> = tx
        .prepare_cached(
            "UPDATE webhook_deliveries
             SET attempts = attempts + 1, next_at = ?3, updated_at = ?4,
                 state = CASE WHEN (SELECT created_at FROM webhook_events WHERE seq = ?2) < ?5
                              THEN 'failed' ELSE 'pending' END
             WHERE webhook_id = ?1 AND event_seq = ?2 AND state = 'pending'
             RETURNING state",
        )?
        .query_row(
            (
                &o.webhook_id,
                o.event_seq,
                retry.next_at,
                o.at,
                retry.give_up_before,
            ),
            |r| r.get(0),
        )
        .optional()?;
    recorded.gave_up = state.as_deref() == Some("failed");
    let reason = disabled_reason(o, retry);
    let disabled: Option<i64> = tx
        .prepare_cached(
            "UPDATE webhooks SET failures = failures + 1, failing_since = COALESCE(failing_since, ?2),
                 enabled = CASE WHEN ?3 > 0 AND failures + 1 >= ?3 THEN 0 ELSE enabled END,
                 disabled_reason = CASE WHEN ?3 > 0 AND failures + 1 >= ?3 AND enabled = 1
                                        THEN ?4 ELSE disabled_reason END
             WHERE id = ?1 RETURNING enabled",
        )?
        .query_row(
            (&o.webhook_id, o.at, retry.disable_after, reason),
            |r| r.get(0),
        )
        .optional()?;
    recorded.disabled = disabled == Some(0);
    Ok(recorded)
}

/// Why an endpoint is disabled after `retry.disable_after` failures.
fn disabled_reason(o: &Outcome, retry: &Retry) -> String {
    format!(
        "disabled after {} failed attempts in a row; last: {}",
        retry.disable_after,
        o.error
            .clone()
            .or_else(|| o.status.map(|s| format!("HTTP {s}")))
            .unwrap_or_default()
    )
}

fn record_attempt_postgres(
    pg: &PgTx,
    o: &Outcome,
    ends_failures: bool,
    retry: impl FnOnce() -> StoreResult<Retry>,
) -> StoreResult<Recorded> {
    let webhook = o.webhook_id.as_str();
    pg.execute(pgsql::webhooks::insert_attempt(
        webhook,
        o.event_seq,
        o.at,
        o.status.map(i64::from),
        o.latency_ms,
        o.error.as_deref(),
        o.response.as_deref(),
    ))?;
    let mut recorded = Recorded::default();
    if o.delivered() {
        pg.execute(pgsql::webhooks::mark_delivered(webhook, o.event_seq, o.at))?;
        if ends_failures {
            pg.execute(pgsql::webhooks::clear_failures(webhook))?;
        }
        return Ok(recorded);
    }
    let retry = &retry()?;
    let state = pg.fetch_optional(pgsql::webhooks::mark_failed_attempt(
        webhook,
        o.event_seq,
        retry.next_at,
        o.at,
        retry.give_up_before,
    ))?;
    recorded.gave_up = state.as_deref() == Some("failed");
    let disabled = pg.fetch_optional(pgsql::webhooks::count_failure(
        webhook,
        o.at,
        retry.disable_after,
        &disabled_reason(o, retry),
    ))?;
    recorded.disabled = disabled == Some(0);
    Ok(recorded)
}

/// Which events a replay sends again.
pub enum ReplayRange<'a> {
    One(&'a EventId),
    /// Events created in `[since, until)`.
    Between {
        since: i64,
        until: i64,
    },
}

/// Makes the endpoint's events in `range` pending and due now, with a fresh
/// attempt count. Returns how many.
pub fn replay(tx: &Tx, id: &WebhookId, range: ReplayRange<'_>, now: i64) -> StoreResult<usize> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let n = match range {
                ReplayRange::One(event) => pg.execute(pgsql::webhooks::replay_one(
                    id.as_str(),
                    event.as_str(),
                    now,
                ))?,
                ReplayRange::Between { since, until } => pg.execute(
                    pgsql::webhooks::replay_between(id.as_str(), since, until, now),
                )?,
            };
            return Ok(n as usize);
        }
    };
    let n = match range {
        ReplayRange::One(event) => tx
            .prepare_cached(
                "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_at = ?3, updated_at = ?3
                 WHERE webhook_id = ?1 AND event_seq = (SELECT seq FROM webhook_events WHERE id = ?2)",
            )?
            .execute((id, event, now))?,
        ReplayRange::Between { since, until } => tx
            .prepare_cached(
                "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_at = ?4, updated_at = ?4
                 WHERE webhook_id = ?1 AND event_seq IN
                     (SELECT seq FROM webhook_events WHERE created_at >= ?2 AND created_at < ?3)",
            )?
            .execute((id, since, until, now))?,
    };
    Ok(n)
}

/// Deletes up to `limit` events created before `before`, with their queue
/// rows. Returns how many events.
pub fn purge_events(tx: &Tx, before: i64, limit: i64) -> StoreResult<i64> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let seqs = pg.fetch_one(pgsql::webhooks::old_events(before, limit))?;
            pg.execute(pgsql::webhooks::delete_deliveries_of_events(&seqs))?;
            let n = pg.execute(pgsql::webhooks::delete_events(&seqs))?;
            return Ok(n as i64);
        }
    };
    tx.prepare_cached(
        "DELETE FROM webhook_deliveries WHERE event_seq IN
             (SELECT seq FROM webhook_events WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)",
    )?
    .execute((before, limit))?;
    let n = tx
        .prepare_cached(
            "DELETE FROM webhook_events WHERE seq IN
                 (SELECT seq FROM webhook_events WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)",
        )?
        .execute((before, limit))?;
    Ok(n as i64)
}

/// Events a purge with this cutoff would remove.
pub async fn count_old_events(db: &Reader, before: i64) -> StoreResult<i64> {
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            return pgsql::webhooks::count_events_before(before)
                .fetch_one(pool)
                .await
                .map_err(pg_error);
        }
    };
    let n = sqlx::query_scalar!(
        r#"SELECT COUNT(*) AS "n!: i64" FROM webhook_events WHERE created_at < ?"#,
        before
    )
    .fetch_one(ex)
    .await?;
    Ok(n)
}

/// An endpoint as the dispatcher needs it.
pub struct Endpoint {
    pub id: WebhookId,
    pub url: String,
    pub secret: Vec<u8>,
    pub old_secret: Option<Vec<u8>>,
    pub old_secret_until: Option<i64>,
}

/// Enabled endpoints of apps that are not revoked.
pub async fn enabled(db: &Reader) -> StoreResult<Vec<Endpoint>> {
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            let rows = pgsql::webhooks::enabled()
                .fetch_all(pool)
                .await
                .map_err(pg_error)?;
            return Ok(rows
                .into_iter()
                .map(|(id, url, secret, old_secret, old_secret_until)| Endpoint {
                    id: WebhookId::from_db(id),
                    url,
                    secret,
                    old_secret,
                    old_secret_until,
                })
                .collect());
        }
    };
    let rows = sqlx::query!(
        r#"SELECT w.id, w.url, w.secret, w.old_secret, w.old_secret_until
           FROM webhooks w JOIN apps a ON a.id = w.app_id
           WHERE w.enabled = 1 AND a.revoked_at IS NULL
           ORDER BY w.seq"#
    )
    .fetch_all(ex)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Endpoint {
            id: WebhookId::from_db(r.id),
            url: r.url,
            secret: r.secret,
            old_secret: r.old_secret,
            old_secret_until: r.old_secret_until,
        })
        .collect())
}

/// A queued event of an endpoint (without its body).
pub struct Pending {
    pub event_seq: i64,
    pub conversation_id: ConversationId,
    pub next_at: i64,
}

/// The endpoint's first `limit` pending events, oldest first.
pub async fn pending(db: &Reader, webhook: &WebhookId, limit: i64) -> StoreResult<Vec<Pending>> {
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            let rows = pgsql::webhooks::pending(webhook.as_str(), limit)
                .fetch_all(pool)
                .await
                .map_err(pg_error)?;
            return Ok(rows
                .into_iter()
                .map(|(event_seq, conversation, next_at)| Pending {
                    event_seq,
                    conversation_id: ConversationId::from_db(conversation),
                    next_at,
                })
                .collect());
        }
    };
    let rows = sqlx::query!(
        r#"SELECT event_seq, conversation_id, next_at FROM webhook_deliveries
           WHERE webhook_id = ?1 AND state = 'pending'
           ORDER BY event_seq LIMIT ?2"#,
        webhook,
        limit
    )
    .fetch_all(ex)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Pending {
            event_seq: r.event_seq,
            conversation_id: ConversationId::from_db(r.conversation_id),
            next_at: r.next_at,
        })
        .collect())
}

/// An event's id (the `webhook-id`) and body.
pub async fn event(db: &Reader, seq: i64) -> StoreResult<Option<(EventId, String)>> {
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            let row = pgsql::webhooks::event(seq)
                .fetch_optional(pool)
                .await
                .map_err(pg_error)?;
            return Ok(row.map(|(id, payload)| (EventId::from_db(id), payload)));
        }
    };
    let row = sqlx::query!("SELECT id, payload FROM webhook_events WHERE seq = ?", seq)
        .fetch_optional(ex)
        .await?;
    Ok(row.map(|r| (EventId::from_db(r.id), r.payload)))
}

/// An endpoint as listed (the row type both backends read, defined with the
/// PostgreSQL statements).
type InfoRow = pgsql::webhooks::Info;

impl From<InfoRow> for WebhookInfo {
    fn from(r: InfoRow) -> WebhookInfo {
        WebhookInfo {
            webhook_id: WebhookId::from_db(r.id),
            app_id: AppId::from_db(r.app_id),
            url: r.url,
            events: r.events.split_whitespace().map(str::to_owned).collect(),
            enabled: r.enabled,
            failures: r.failures,
            failing_since: r.failing_since,
            disabled_reason: r.disabled_reason,
            backlog: r.backlog,
            old_secret_until: r.old_secret_until,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Endpoints of `app` (or of every app), or the one with `id`, oldest first.
pub async fn list(
    db: &Reader,
    app: Option<&AppId>,
    id: Option<&WebhookId>,
) -> StoreResult<Vec<WebhookInfo>> {
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            let rows = pgsql::webhooks::list(app.map(AppId::as_str), id.map(WebhookId::as_str))
                .fetch_all(pool)
                .await
                .map_err(pg_error)?;
            return Ok(rows.into_iter().map(WebhookInfo::from).collect());
        }
    };
    let rows = sqlx::query_as!(
        InfoRow,
        r#"SELECT id, app_id, url, events, enabled AS "enabled!: bool", failures, failing_since,
                  disabled_reason, old_secret_until, created_at, updated_at,
                  (SELECT COUNT(*) FROM webhook_deliveries d
                   WHERE d.webhook_id = w.id AND d.state = 'pending') AS "backlog!: i64"
           FROM webhooks w WHERE (?1 IS NULL OR app_id = ?1) AND (?2 IS NULL OR id = ?2)
           ORDER BY seq"#,
        app,
        id
    )
    .fetch_all(ex)
    .await?;
    Ok(rows.into_iter().map(WebhookInfo::from).collect())
}

/// The endpoint's newest attempts, newest first.
pub async fn attempts(db: &Reader, id: &WebhookId, limit: i64) -> StoreResult<Vec<WebhookAttempt>> {
    let rows = match db {
        Reader::Sqlite(ex) => {
            sqlx::query_as!(
                AttemptRow,
                r#"SELECT e.id AS "event_id!", e.type AS "event_type!", a.at, a.status,
                          a.latency_ms, a.error, a.response
                   FROM webhook_attempts a JOIN webhook_events e ON e.seq = a.event_seq
                   WHERE a.webhook_id = ?1 ORDER BY a.seq DESC LIMIT ?2"#,
                id,
                limit
            )
            .fetch_all(ex)
            .await?
        }
        Reader::Postgres(pool) => pgsql::webhooks::attempts(id.as_str(), limit)
            .fetch_all(pool)
            .await
            .map_err(pg_error)?,
    };
    Ok(rows
        .into_iter()
        .map(|r| WebhookAttempt {
            event_id: EventId::from_db(r.event_id),
            event_type: r.event_type,
            at: r.at,
            status: r.status,
            latency_ms: r.latency_ms,
            error: r.error,
            response: r.response,
        })
        .collect())
}

/// An attempt as listed (the row type both backends read, defined with the
/// PostgreSQL statements).
type AttemptRow = pgsql::webhooks::Attempt;

/// Every endpoint: its pending events and when the oldest of them happened
/// (None: nothing pending).
pub async fn backlog(db: &Reader) -> StoreResult<Vec<(WebhookId, i64, Option<i64>)>> {
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            let rows = pgsql::webhooks::backlog()
                .fetch_all(pool)
                .await
                .map_err(pg_error)?;
            return Ok(rows
                .into_iter()
                .map(|(id, pending, oldest)| (WebhookId::from_db(id), pending, oldest))
                .collect());
        }
    };
    let rows = sqlx::query!(
        r#"SELECT w.id AS "id!", COUNT(e.seq) AS "pending!: i64", MIN(e.created_at) AS "oldest: i64"
           FROM webhooks w
           LEFT JOIN webhook_deliveries d ON d.webhook_id = w.id AND d.state = 'pending'
           LEFT JOIN webhook_events e ON e.seq = d.event_seq
           GROUP BY w.id"#
    )
    .fetch_all(ex)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (WebhookId::from_db(r.id), r.pending, r.oldest))
        .collect())
}
