//! The hot operations, a batch of requests per statement
//! (`src/store/postgres/engine.rs`; the functions are in
//! `migrations/postgres/0003_engine.sql`). Element `i` of every array is
//! request `i`; each answers a row per request, numbered from 1.

use crate::{Row, Rows};

/// What `relay_inbound` answers for one request: all `None` but `n` when
/// the general path must take it.
pub struct Inbound {
    pub n: i32,
    pub seq: Option<i64>,
    pub pos: Option<i64>,
    pub conversation: Option<String>,
    pub client: Option<String>,
    pub ready: Option<bool>,
}

/// Inbound messages `id[i]` of users `user[i]` of apps `app[i]`.
#[allow(clippy::too_many_arguments)]
pub fn inbound(
    app: &[&str],
    user: &[&str],
    text: &[&str],
    key: &[Option<&str>],
    id: &[&str],
    now: &[i64],
    ttl_ms: i64,
    max_pending: i64,
    kept: &[&str],
    search: &[Option<String>],
) -> Rows<impl Row<Inbound>> {
    sqlx::query_as!(
        Inbound,
        r#"SELECT n AS "n!", mseq AS seq, mpos AS pos, conv AS conversation, agent AS client, ready
           FROM relay_inbound($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::bigint[], $7, $8, $9::text[], $10::text[])"#,
        app as &[&str],
        user as &[&str],
        text as &[&str],
        key as &[Option<&str>],
        id as &[&str],
        now,
        ttl_ms,
        max_pending,
        kept as &[&str],
        search as &[Option<String>],
    )
}

/// A claimed message, or (`seq` None) a claim that got nothing.
pub struct Claimed {
    pub n: i32,
    pub seq: Option<i64>,
    pub id: Option<String>,
    pub conversation_id: Option<String>,
    pub client_id: Option<String>,
    pub app_id: Option<String>,
    pub sender: Option<String>,
    pub recipient: Option<String>,
    pub text: Option<String>,
    pub created_at: Option<i64>,
    pub attempts: Option<i64>,
    pub attachments: Option<String>,
    pub exhausted: Option<bool>,
    pub next_due: Option<i64>,
}

/// Claims of up to `max[i]` messages for clients `client[i]` (WebSocket
/// sessions `owner[i]`), leased until `until`.
pub fn claim(
    client: &[&str],
    max: &[i32],
    owner: &[Option<&str>],
    now: i64,
    until: i64,
    max_attempts: i64,
) -> Rows<impl Row<Claimed>> {
    sqlx::query_as!(
        Claimed,
        r#"SELECT n AS "n!", mseq AS seq, msg_id AS id, conv AS conversation_id,
                  agent AS client_id, app AS app_id, sender, recipient, body AS text,
                  created AS created_at, attempt AS attempts, files AS attachments,
                  exhausted, next_due
           FROM relay_claim($1::text[], $2::int[], $3::text[], $4, $5, $6)"#,
        client as &[&str],
        max,
        owner as &[Option<&str>],
        now,
        until,
        max_attempts,
    )
}

/// What `relay_send` answers for one reply: all `None` but `n` when the
/// general path must take it.
pub struct Sent {
    pub n: i32,
    pub seq: Option<i64>,
    pub pos: Option<i64>,
    pub app_id: Option<String>,
    pub acked: Option<i64>,
    pub promoted: Option<bool>,
    pub promoted_to: Option<String>,
    pub hooked: Option<bool>,
}

/// Replies `id[i]` of clients `client[i]` in conversations `conversation[i]`.
#[allow(clippy::too_many_arguments)]
pub fn send(
    client: &[&str],
    conversation: &[&str],
    to: &[&str],
    text: &[&str],
    reply_id: &[Option<&str>],
    key: &[Option<&str>],
    id: &[&str],
    ack: &[bool],
    payload: &[Option<&str>],
    event: &[&str],
    now: &[i64],
    ttl_ms: i64,
    search: &[Option<String>],
) -> Rows<impl Row<Sent>> {
    sqlx::query_as!(
        Sent,
        r#"SELECT n AS "n!", mseq AS seq, mpos AS pos, app AS app_id, acked, promoted,
                  promoted_to, hooked
           FROM relay_send($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                           $6::text[], $7::text[], $8::boolean[], $9::text[], $10::text[],
                           $11::bigint[], $12, $13::text[])"#,
        client as &[&str],
        conversation as &[&str],
        to as &[&str],
        text as &[&str],
        reply_id as &[Option<&str>],
        key as &[Option<&str>],
        id as &[&str],
        ack,
        payload as &[Option<&str>],
        event as &[&str],
        now,
        ttl_ms,
        search as &[Option<String>],
    )
}

/// Folds the per-session open-delivery counts into `clients.pending`;
/// returns how many clients changed.
pub fn fold_pending() -> Rows<impl Row<i64>> {
    sqlx::query!(r#"SELECT fold_client_pending() AS "changed!""#).map(|r| r.changed)
}
