//! Webhook endpoints, events and their delivery queue
//! (`src/store/webhooks.rs`).

use crate::{Row, Rows, Statement};

pub fn insert(id: &str, app: &str, url: &str, events: &str, secret: &[u8], now: i64) -> Statement {
    sqlx::query!(
        "INSERT INTO webhooks (id, app_id, url, events, enabled, secret, created_at, updated_at)
         VALUES ($1, $2, $3, $4, 1, $5, $6, $6)",
        id,
        app,
        url,
        events,
        secret,
        now
    )
}

/// Changes what is given; enabling (`enabled` 1) clears the failure record,
/// and any change of `enabled` clears the reason it was disabled.
pub fn update(
    id: &str,
    url: Option<&str>,
    events: Option<&str>,
    enabled: Option<i64>,
    now: i64,
) -> Statement {
    sqlx::query!(
        "UPDATE webhooks SET url = COALESCE($2, url), events = COALESCE($3, events),
             enabled = COALESCE($4, enabled),
             failures = CASE WHEN $4 = 1 THEN 0 ELSE failures END,
             failing_since = CASE WHEN $4 = 1 THEN NULL ELSE failing_since END,
             disabled_reason = CASE WHEN $4 IS NOT NULL THEN NULL ELSE disabled_reason END,
             updated_at = $5
         WHERE id = $1",
        id,
        url,
        events,
        enabled,
        now
    )
}

/// Makes the endpoint's pending events due at `now`.
pub fn due_now(id: &str, now: i64) -> Statement {
    sqlx::query!(
        "UPDATE webhook_deliveries SET next_at = $2 WHERE webhook_id = $1 AND state = 'pending'",
        id,
        now
    )
}

pub fn delete_deliveries(id: &str) -> Statement {
    sqlx::query!("DELETE FROM webhook_deliveries WHERE webhook_id = $1", id)
}

pub fn delete_attempts(id: &str) -> Statement {
    sqlx::query!("DELETE FROM webhook_attempts WHERE webhook_id = $1", id)
}

pub fn delete(id: &str) -> Statement {
    sqlx::query!("DELETE FROM webhooks WHERE id = $1", id)
}

/// Seals a new secret; the old one is still accepted until `old_until`.
pub fn rotate_secret(id: &str, sealed: &[u8], old_until: i64, now: i64) -> Statement {
    sqlx::query!(
        "UPDATE webhooks
         SET old_secret = secret, old_secret_until = $3, secret = $2, updated_at = $4
         WHERE id = $1",
        id,
        sealed,
        old_until,
        now
    )
}

/// Whether an endpoint of `app` subscribes to events of `kind`.
pub fn subscribed(app: &str, kind: &str) -> Rows<impl Row<bool>> {
    sqlx::query!(
        r#"SELECT EXISTS (SELECT 1 FROM webhooks
                          WHERE app_id = $1
                            AND position(' ' || $2 || ' ' IN ' ' || events || ' ') > 0)
               AS "subscribed!""#,
        app,
        kind
    )
    .map(|r| r.subscribed)
}

/// Records an event; returns its number.
pub fn insert_event(
    id: &str,
    app: &str,
    kind: &str,
    conversation: &str,
    payload: &str,
    now: i64,
) -> Rows<impl Row<i64>> {
    sqlx::query!(
        "INSERT INTO webhook_events (id, app_id, type, conversation_id, payload, created_at)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
        id,
        app,
        kind,
        conversation,
        payload,
        now
    )
    .map(|r| r.seq)
}

/// Queues event `seq` for every endpoint of `app` subscribed to `kind`;
/// returns those endpoints.
pub fn queue_event(
    seq: i64,
    conversation: &str,
    now: i64,
    app: &str,
    kind: &str,
) -> Rows<impl Row<String>> {
    sqlx::query!(
        "INSERT INTO webhook_deliveries
            (webhook_id, event_seq, conversation_id, state, attempts, next_at, updated_at)
         SELECT id, $1, $2, 'pending', 0, $3, $3 FROM webhooks
         WHERE app_id = $4 AND position(' ' || $5 || ' ' IN ' ' || events || ' ') > 0
         RETURNING webhook_id",
        seq,
        conversation,
        now,
        app,
        kind
    )
    .map(|r| r.webhook_id)
}

pub fn attempts_of(id: &str, event_seq: i64) -> Rows<impl Row<i64>> {
    sqlx::query!(
        "SELECT attempts FROM webhook_deliveries WHERE webhook_id = $1 AND event_seq = $2",
        id,
        event_seq
    )
    .map(|r| r.attempts)
}

#[allow(clippy::too_many_arguments)]
pub fn insert_attempt(
    id: &str,
    event_seq: i64,
    at: i64,
    status: Option<i64>,
    latency_ms: i64,
    error: Option<&str>,
    response: Option<&str>,
) -> Statement {
    sqlx::query!(
        "INSERT INTO webhook_attempts (webhook_id, event_seq, at, status, latency_ms, error, response)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        id,
        event_seq,
        at,
        status,
        latency_ms,
        error,
        response
    )
}

/// Keeps the endpoint's newest `kept` attempts.
pub fn trim_attempts(id: &str, kept: i64) -> Statement {
    sqlx::query!(
        "DELETE FROM webhook_attempts WHERE webhook_id = $1 AND seq <=
             (SELECT seq FROM webhook_attempts WHERE webhook_id = $1
              ORDER BY seq DESC LIMIT 1 OFFSET $2)",
        id,
        kept
    )
}

pub fn mark_delivered(id: &str, event_seq: i64, at: i64) -> Statement {
    sqlx::query!(
        "UPDATE webhook_deliveries SET state = 'delivered', attempts = attempts + 1, updated_at = $3
         WHERE webhook_id = $1 AND event_seq = $2 AND state = 'pending'",
        id,
        event_seq,
        at
    )
}

pub fn clear_failures(id: &str) -> Statement {
    sqlx::query!(
        "UPDATE webhooks SET failures = 0, failing_since = NULL WHERE id = $1 AND failures > 0",
        id
    )
}

/// Counts a failed attempt: due again at `next_at`, or failed for good
/// when the event happened before `give_up_before`. Returns the state.
pub fn mark_failed_attempt(
    id: &str,
    event_seq: i64,
    next_at: i64,
    at: i64,
    give_up_before: i64,
) -> Rows<impl Row<String>> {
    sqlx::query!(
        "UPDATE webhook_deliveries
         SET attempts = attempts + 1, next_at = $3, updated_at = $4,
             state = CASE WHEN (SELECT created_at FROM webhook_events WHERE seq = $2) < $5
                          THEN 'failed' ELSE 'pending' END
         WHERE webhook_id = $1 AND event_seq = $2 AND state = 'pending'
         RETURNING state",
        id,
        event_seq,
        next_at,
        at,
        give_up_before
    )
    .map(|r| r.state)
}

/// Counts a failure of the endpoint, disabling it (for `reason`) at
/// `disable_after` in a row (0: never). Returns `enabled`.
pub fn count_failure(id: &str, at: i64, disable_after: i64, reason: &str) -> Rows<impl Row<i64>> {
    sqlx::query!(
        "UPDATE webhooks SET failures = failures + 1, failing_since = COALESCE(failing_since, $2),
             enabled = CASE WHEN $3::bigint > 0 AND failures + 1 >= $3 THEN 0 ELSE enabled END,
             disabled_reason = CASE WHEN $3 > 0 AND failures + 1 >= $3 AND enabled = 1
                                    THEN $4 ELSE disabled_reason END
         WHERE id = $1 RETURNING enabled",
        id,
        at,
        disable_after,
        reason
    )
    .map(|r| r.enabled)
}

pub fn replay_one(id: &str, event: &str, now: i64) -> Statement {
    sqlx::query!(
        "UPDATE webhook_deliveries
         SET state = 'pending', attempts = 0, next_at = $3, updated_at = $3
         WHERE webhook_id = $1
           AND event_seq = (SELECT seq FROM webhook_events WHERE id = $2)",
        id,
        event,
        now
    )
}

/// Replays the events created in `[since, until)`.
pub fn replay_between(id: &str, since: i64, until: i64, now: i64) -> Statement {
    sqlx::query!(
        "UPDATE webhook_deliveries
         SET state = 'pending', attempts = 0, next_at = $4, updated_at = $4
         WHERE webhook_id = $1 AND event_seq IN
             (SELECT seq FROM webhook_events
              WHERE created_at >= $2 AND created_at < $3)",
        id,
        since,
        until,
        now
    )
}

/// The numbers of up to `limit` events created before `before`, oldest
/// first.
pub fn old_events(before: i64, limit: i64) -> Rows<impl Row<Vec<i64>>> {
    sqlx::query!(
        r#"SELECT COALESCE(array_agg(seq), '{}') AS "seqs!" FROM
               (SELECT seq FROM webhook_events WHERE created_at < $1
                ORDER BY created_at LIMIT $2) old"#,
        before,
        limit
    )
    .map(|r| r.seqs)
}

pub fn delete_deliveries_of_events(seqs: &[i64]) -> Statement {
    sqlx::query!(
        "DELETE FROM webhook_deliveries WHERE event_seq = ANY($1)",
        seqs
    )
}

pub fn delete_events(seqs: &[i64]) -> Statement {
    sqlx::query!("DELETE FROM webhook_events WHERE seq = ANY($1)", seqs)
}

pub fn count_events_before(before: i64) -> Rows<impl Row<i64>> {
    sqlx::query!(
        r#"SELECT COUNT(*) AS "n!" FROM webhook_events WHERE created_at < $1"#,
        before
    )
    .map(|r| r.n)
}

/// Enabled endpoints of apps that are not revoked: id, url, secret, old
/// secret and until when it is accepted.
#[allow(clippy::type_complexity)]
pub fn enabled() -> Rows<impl Row<(String, String, Vec<u8>, Option<Vec<u8>>, Option<i64>)>> {
    sqlx::query!(
        "SELECT w.id, w.url, w.secret, w.old_secret, w.old_secret_until
         FROM webhooks w JOIN apps a ON a.id = w.app_id
         WHERE w.enabled = 1 AND a.revoked_at IS NULL
         ORDER BY w.seq"
    )
    .map(|r| (r.id, r.url, r.secret, r.old_secret, r.old_secret_until))
}

/// The endpoint's first `limit` pending events: number, conversation, when
/// due.
pub fn pending(webhook: &str, limit: i64) -> Rows<impl Row<(i64, String, i64)>> {
    sqlx::query!(
        "SELECT event_seq, conversation_id, next_at FROM webhook_deliveries
         WHERE webhook_id = $1 AND state = 'pending'
         ORDER BY event_seq LIMIT $2",
        webhook,
        limit
    )
    .map(|r| (r.event_seq, r.conversation_id, r.next_at))
}

/// An event's id and body.
pub fn event(seq: i64) -> Rows<impl Row<(String, String)>> {
    sqlx::query!("SELECT id, payload FROM webhook_events WHERE seq = $1", seq)
        .map(|r| (r.id, r.payload))
}

/// An endpoint as the admin API shows it.
pub struct Info {
    pub id: String,
    pub app_id: String,
    pub url: String,
    pub events: String,
    pub enabled: bool,
    pub failures: i64,
    pub failing_since: Option<i64>,
    pub disabled_reason: Option<String>,
    pub backlog: i64,
    pub old_secret_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

pub fn list(app: Option<&str>, id: Option<&str>) -> Rows<impl Row<Info>> {
    sqlx::query_as!(
        Info,
        r#"SELECT id, app_id, url, events, enabled = 1 AS "enabled!", failures, failing_since,
                  disabled_reason, old_secret_until, created_at, updated_at,
                  (SELECT COUNT(*) FROM webhook_deliveries d
                   WHERE d.webhook_id = w.id AND d.state = 'pending') AS "backlog!"
           FROM webhooks w
           WHERE ($1::text IS NULL OR app_id = $1) AND ($2::text IS NULL OR id = $2)
           ORDER BY seq"#,
        app,
        id
    )
}

/// An attempt as the admin API shows it.
pub struct Attempt {
    pub event_id: String,
    pub event_type: String,
    pub at: i64,
    pub status: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub response: Option<String>,
}

/// The endpoint's newest `limit` attempts, newest first.
pub fn attempts(id: &str, limit: i64) -> Rows<impl Row<Attempt>> {
    sqlx::query_as!(
        Attempt,
        "SELECT e.id AS event_id, e.type AS event_type, a.at, a.status, a.latency_ms,
                a.error, a.response
         FROM webhook_attempts a JOIN webhook_events e ON e.seq = a.event_seq
         WHERE a.webhook_id = $1 ORDER BY a.seq DESC LIMIT $2",
        id,
        limit
    )
}

/// Per endpoint: pending events and when the oldest of them happened.
/// Every endpoint, its pending events and when the oldest of them happened
/// (none: nothing pending).
pub fn backlog() -> Rows<impl Row<(String, i64, Option<i64>)>> {
    sqlx::query!(
        r#"SELECT w.id, count(e.seq) AS "pending!", min(e.created_at) AS oldest
           FROM webhooks w
           LEFT JOIN webhook_deliveries d ON d.webhook_id = w.id AND d.state = 'pending'
           LEFT JOIN webhook_events e ON e.seq = d.event_seq
           GROUP BY w.id"#
    )
    .map(|r| (r.id, r.pending, r.oldest))
}
