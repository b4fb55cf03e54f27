//! Search of history: each message's terms (`crate::search`) indexed in
//! the transaction that stores it (SQLite: the FTS5 table `message_search`,
//! rowid = the message's seq; PostgreSQL: the tsvector `messages.search`,
//! written by the insert itself), and the conversations whose messages
//! match a search. Messages stored before search existed are indexed
//! afterwards, a batch at a time ([`backfill`]).

use super::postgres::error as pg_error;
use super::{settings, Reader, StoreResult, Tx};
use crate::ids::{AppId, ClientId, ConversationId};
use crate::search::Query;

/// Where the messages stored before search existed still wait to be
/// indexed: every message below this seq (the setting is gone once done).
const BACKFILL_BELOW: &str = "search_backfill_below";

thread_local! {
    /// Terms of the messages the writer's current transaction stored, kept
    /// until just before it commits ([`index_sqlite`]).
    static DEFERRED: std::cell::RefCell<Vec<(i64, String)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Indexes message `seq` (SQLite; PostgreSQL's insert writes the terms
/// itself), in the transaction that stores it, at its end: the writer calls
/// [`flush_deferred`] before it commits. FTS5 writes its pending terms out
/// as a new segment at every savepoint it takes part in, and every operation
/// of a shared transaction runs in one: indexing as each message is stored
/// wrote one small segment per message (and merged them again), indexing at
/// the end writes one per transaction.
pub fn index_sqlite(seq: i64, text: &str) {
    let terms = crate::search::fts5_terms(text);
    if !terms.is_empty() {
        DEFERRED.with(|d| d.borrow_mut().push((seq, terms)));
    }
}

/// How many terms rows wait (where an operation's savepoint begins).
pub(super) fn deferred_mark() -> usize {
    DEFERRED.with(|d| d.borrow().len())
}

/// The operation since `mark` was rolled back: its rows are dropped.
pub(super) fn deferred_rollback(mark: usize) {
    DEFERRED.with(|d| d.borrow_mut().truncate(mark));
}

/// Writes the waiting rows, in the transaction about to commit; a message
/// deleted since (in the same transaction) is left out.
pub(super) fn flush_deferred(conn: &rusqlite::Connection) -> StoreResult<()> {
    let rows = DEFERRED.with(|d| std::mem::take(&mut *d.borrow_mut()));
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO message_search (rowid, terms)
         SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM messages WHERE seq = ?1)",
    )?;
    for (seq, terms) in rows {
        insert.execute((seq, terms))?;
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
        Tx::Sqlite(_) => {
            for (seq, text) in &rows {
                index_sqlite(*seq, text);
            }
        }
    }
    settings::set(tx, BACKFILL_BELOW, &lowest.to_string())?;
    Ok(rows.len() as u64)
}
