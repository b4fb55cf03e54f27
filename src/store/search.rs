//! Search of history: each message's terms (`crate::search`) indexed
//! (SQLite: the FTS5 table `message_search`, rowid = the message's seq;
//! PostgreSQL: the tsvector `messages.search`, written by the insert
//! itself), and the conversations whose messages match a search. Messages
//! stored before search existed are indexed afterwards, a batch at a time
//! ([`backfill`]).
//!
//! On SQLite a message is indexed after the transaction that stores it, in
//! batches ([`catch_up`]): every message above the seq recorded in
//! `search_indexed_through` waits. FTS5 writes what a transaction indexed
//! as a new segment and merges the segments again and again: indexing in
//! every transaction (a dozen messages each at 4 × 64) cost 15 % of the
//! relay's CPU per round trip. The writer indexes once 512 messages wait, the
//! maintenance tick indexes what waits, a search first indexes everything
//! (so it never misses a stored message), and the store indexes the rest
//! before it closes. A crash leaves the waiting messages above the mark, and
//! the next catch-up finds them: nothing is lost from the index, since the
//! mark moves in the transaction that indexes.

use super::postgres::error as pg_error;
use super::{settings, Reader, StoreResult, Tx};
use crate::ids::{AppId, ClientId, ConversationId};
use crate::search::Query;
use std::cell::Cell;

/// Where the messages stored before search existed still wait to be
/// indexed: every message below this seq (the setting is gone once done).
const BACKFILL_BELOW: &str = "search_backfill_below";
/// SQLite: every message at or below this seq is indexed (or has no terms).
const INDEXED_THROUGH: &str = "search_indexed_through";
/// The writer indexes in a transaction once this many messages wait.
const CATCH_UP_AFTER: i64 = 512;
/// The most messages one transaction indexes.
pub const CATCH_UP_BATCH: i64 = 2048;

thread_local! {
    /// The highest seq the writer has stored (SQLite).
    static STORED: Cell<i64> = const { Cell::new(0) };
    /// What the writer last read or wrote of `search_indexed_through`: never
    /// above the mark (it only grows), so a catch-up is never skipped for it
    /// being stale, only looked at once more.
    static THROUGH: Cell<i64> = const { Cell::new(0) };
}

/// What was rolled back may have moved the mark: it is read again.
pub(super) fn forget_mark() {
    THROUGH.with(|t| t.set(0));
}

/// Notes that message `seq` was stored (SQLite; PostgreSQL's insert writes
/// the terms itself): a later transaction indexes it ([`catch_up`]).
pub fn note_stored(seq: i64) {
    STORED.with(|s| s.set(s.get().max(seq)));
}

/// The writer, before it commits: indexes the waiting messages in this
/// transaction once [`CATCH_UP_AFTER`] wait.
pub(super) fn catch_up_if_due(tx: &Tx) -> StoreResult<()> {
    let stored = STORED.with(Cell::get);
    if stored - THROUGH.with(Cell::get) < CATCH_UP_AFTER {
        return Ok(());
    }
    let through = mark(tx)?;
    THROUGH.with(|t| t.set(through));
    if stored - through < CATCH_UP_AFTER {
        return Ok(());
    }
    catch_up_from(tx, through, CATCH_UP_BATCH).map(|_| ())
}

/// Indexes up to `batch` of the messages stored since the last indexed
/// (SQLite; nothing to do on PostgreSQL). Answers how many it looked at:
/// fewer than `batch` means none waits now.
pub fn catch_up(tx: &Tx, batch: i64) -> StoreResult<u64> {
    if let Tx::Postgres(_) = tx {
        return Ok(0);
    }
    let through = mark(tx)?;
    catch_up_from(tx, through, batch)
}

/// Whether stored messages wait to be indexed (SQLite): one look on the
/// calling thread, so that a search or a tick with nothing to index makes
/// no write.
pub(super) fn waiting(conns: &super::hot::Connections) -> StoreResult<bool> {
    conns.read(|conn| {
        conn.prepare_cached(
            "SELECT coalesce((SELECT max(seq) FROM messages), 0)
                  > coalesce((SELECT CAST(value AS INTEGER) FROM settings WHERE key = ?1), 0)",
        )?
        .query_row([INDEXED_THROUGH], |r| r.get(0))
    })
}

fn mark(tx: &Tx) -> StoreResult<i64> {
    Ok(settings::get_in(tx, INDEXED_THROUGH)?
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0))
}

fn catch_up_from(tx: &Tx, through: i64, batch: i64) -> StoreResult<u64> {
    let conn = tx.sqlite()?;
    let rows: Vec<(i64, String)> = conn
        .prepare_cached("SELECT seq, text FROM messages WHERE seq > ?1 ORDER BY seq LIMIT ?2")?
        .query_map((through, batch), |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let Some(last) = rows.last().map(|(seq, _)| *seq) else {
        THROUGH.with(|t| t.set(through));
        return Ok(0);
    };
    index_rows(conn, &rows)?;
    settings::set(tx, INDEXED_THROUGH, &last.to_string())?;
    THROUGH.with(|t| t.set(last));
    Ok(rows.len() as u64)
}

/// Writes the terms of `rows` (seq, text) into the FTS5 index.
fn index_rows(conn: &rusqlite::Connection, rows: &[(i64, String)]) -> StoreResult<()> {
    let mut insert =
        conn.prepare_cached("INSERT INTO message_search (rowid, terms) VALUES (?1, ?2)")?;
    for (seq, text) in rows {
        let terms = crate::search::fts5_terms(text);
        if !terms.is_empty() {
            insert.execute((seq, terms))?;
        }
    }
    Ok(())
}

/// What a search is narrowed to, as `conversations::Filter`.
pub struct Filter<'a> {
    pub app: Option<&'a AppId>,
    pub user: Option<&'a str>,
    pub client: Option<&'a ClientId>,
    pub active: Option<bool>,
    /// Only conversations whose latest match is below this position.
    pub before: i64,
    pub limit: i64,
}

/// The conversations with a message matching `query`, each with the cursor
/// position of its latest match, newest match first.
pub async fn hits(
    db: &Reader,
    query: &Query,
    f: Filter<'_>,
    idle_cutoff: i64,
) -> StoreResult<Vec<(ConversationId, i64)>> {
    let rows: Vec<(String, i64)> = match db {
        Reader::Postgres(pool) => pgsql::search::hits(
            &query.tsquery(),
            f.app.map(AppId::as_str),
            f.user,
            f.client.map(ClientId::as_str),
            f.active,
            idle_cutoff,
            f.before,
            f.limit,
        )
        .fetch_all(pool)
        .await
        .map_err(pg_error)?,
        Reader::Sqlite(pool) => {
            // A runtime statement: sqlx's offline checks do not describe
            // FTS5's MATCH.
            sqlx::query_as(
                "SELECT m.conversation_id, max(m.seq) AS hit
                 FROM message_search s
                 JOIN messages m ON m.seq = s.rowid
                 JOIN conversations c ON c.id = m.conversation_id
                 WHERE message_search MATCH ?1
                   AND (?2 IS NULL OR c.app_id = ?2)
                   AND (?3 IS NULL OR c.user_id = ?3)
                   AND (?4 IS NULL OR c.client_id = ?4)
                   AND (?5 IS NULL OR (c.expired_at IS NULL AND c.updated_at > ?6) = ?5)
                 GROUP BY m.conversation_id HAVING max(m.seq) < ?7
                 ORDER BY hit DESC LIMIT ?8",
            )
            .bind(query.fts5())
            .bind(f.app.map(AppId::as_str))
            .bind(f.user)
            .bind(f.client.map(ClientId::as_str))
            .bind(f.active)
            .bind(idle_cutoff)
            .bind(f.before)
            .bind(f.limit)
            .fetch_all(pool)
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(c, hit)| (ConversationId::from_db(c), hit))
        .collect())
}

/// Indexes up to `batch` of the messages stored before search existed
/// (the newest first); answers how many it indexed (0: none is left).
pub fn backfill(tx: &Tx, batch: i64) -> StoreResult<u64> {
    let below = match settings::get_in(tx, BACKFILL_BELOW)? {
        Some(v) => v.parse::<i64>().unwrap_or(0),
        None => return Ok(0),
    };
    let rows: Vec<(i64, String)> = match tx {
        Tx::Postgres(pg) => pg.fetch_all(pgsql::search::unindexed(below, batch))?,
        Tx::Sqlite(conn) => conn
            .prepare_cached(
                "SELECT seq, text FROM messages WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2",
            )?
            .query_map((below, batch), |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?,
    };
    let Some(lowest) = rows.last().map(|(seq, _)| *seq) else {
        settings::remove(tx, BACKFILL_BELOW)?;
        return Ok(0);
    };
    match tx {
        Tx::Postgres(pg) => {
            let seqs: Vec<i64> = rows.iter().map(|(s, _)| *s).collect();
            let terms: Vec<Option<String>> = rows
                .iter()
                .map(|(_, t)| crate::search::tsvector(t))
                .collect();
            pg.execute(pgsql::search::index(&seqs, &terms))?;
        }
        Tx::Sqlite(conn) => index_rows(conn, &rows)?,
    }
    settings::set(tx, BACKFILL_BELOW, &lowest.to_string())?;
    Ok(rows.len() as u64)
}
